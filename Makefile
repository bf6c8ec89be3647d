# dualstack-webhook — `make help` lists the targets.
SHELL := /usr/bin/env bash
GO ?= go
BIN := bin/dualstack-webhook

.PHONY: help build test unit bench vet fmt-check dev image

help: ## list targets
	@grep -hE '^[a-zA-Z0-9_-]+:.*## ' $(MAKEFILE_LIST) | awk -F':.*## ' '{printf "  %-14s %s\n", $$1, $$2}'

build: ## build bin/dualstack-webhook
	$(GO) build -o $(BIN) .

unit: ## unit tests of the main module (race detector on) and of the image builder
	$(GO) test -race -count=1 ./...
	cd hack/image && $(GO) test -count=1 ./...

vet: ## go vet + gofmt check
	$(GO) vet ./...
	@out=$$(gofmt -l $$(git ls-files '*.go')); if [ -n "$$out" ]; then echo "gofmt needed: $$out"; exit 1; fi

# Phases of `make test`, run in order, each timed (append a phase here).
TEST_PHASES := vet unit chart tools e2e e2e-node

test: ## everything CI runs: vet, unit, chart, e2e, e2e-node (root; each installs its binaries first), each phase timed
	@for phase in $(TEST_PHASES); do \
		start=$$(date +%s); \
		echo "==> make $$phase"; \
		$(MAKE) --no-print-directory $$phase || { echo "==> make $$phase FAILED after $$(( $$(date +%s) - start ))s"; exit 1; }; \
		echo "==> make $$phase: $$(( $$(date +%s) - start ))s"; \
	done

# The image: OCI labels name the commit; every timestamp is the commit time, so
# the same commit gives the same digest (SOURCE_DATE_EPOCH overrides).
VERSION ?= $(shell git describe --tags --always --dirty 2>/dev/null || echo dev)
REVISION ?= $(shell git rev-parse HEAD 2>/dev/null || echo unknown)
IMAGE_REPO ?= ghcr.io/dualstack-webhook/dualstack-webhook
IMAGE ?= $(IMAGE_REPO):$(VERSION)
IMAGE_ARCHIVE := bin/dualstack-webhook.oci.tar
IMAGE_PLATFORMS := amd64 arm64

image: ## bin/dualstack-webhook.oci.tar: OCI image (linux/amd64+arm64) of the static binary, no container engine, reproducible
	@set -e; epoch=$${SOURCE_DATE_EPOCH:-$$(git log -1 --format=%ct)}; bins=(); \
	for arch in $(IMAGE_PLATFORMS); do \
		CGO_ENABLED=0 GOOS=linux GOARCH=$$arch $(GO) build -trimpath -buildvcs=false -ldflags "-s -w" \
			-o bin/linux-$$arch/dualstack-webhook . ; \
		bins+=(-binary linux/$$arch=$(CURDIR)/bin/linux-$$arch/dualstack-webhook); \
	done; \
	cd hack/image && $(GO) run . -out $(CURDIR)/$(IMAGE_ARCHIVE) -name $(IMAGE) -epoch $$epoch \
		-path /usr/local/bin/dualstack-webhook -cmd serve -user 65532:65532 -port 8443/tcp -port 8080/tcp "$${bins[@]}" \
		-label org.opencontainers.image.source=https://github.com/dualstack-webhook/dualstack-webhook \
		-label org.opencontainers.image.revision=$(REVISION) \
		-label org.opencontainers.image.version=$(VERSION) \
		-label org.opencontainers.image.title=dualstack-webhook

dev: ## run the webhook on the embedded default (no cluster, self-signed TLS): go run . serve --dev
	$(GO) run . serve --dev

bench: ## benchmarks (figures are ratios against a baseline measured in the same run)
	$(GO) test -run '^$$' -bench . -benchmem ./...
	@# allocator: ConfigMap reservations/s beside Service creates/s on a real apiserver
	$(MAKE) --no-print-directory e2e-bin
	cd e2e && E2E_REQUIRED=1 $(E2E_ENV) $(GO) test -run '^$$' -bench . -benchtime 2s ./allocstore
	@# pinning: Service creates/s with 3 pinning replicas vs no webhook, admission p50/p99 (docs/pinning-e2e.md)
	$(MAKE) --no-print-directory bench-pinning
	@# defaulting: Service creates with no defaulting vs the MutatingAdmissionPolicy vs the defaulting webhook
	$(MAKE) --no-print-directory bench-defaulting

# --- end-to-end tier (e2e/: its own Go module) ---
K8S_BIN_DIR = $(shell e2e/bin/install.sh --print-dir)
EXTRA_BIN_DIR = $(shell e2e/bin/install.sh --print-extra-dir)
E2E_ENV = KUBEBUILDER_ASSETS=$(K8S_BIN_DIR) E2E_WEBHOOK_BIN=$(CURDIR)/$(BIN)
IP_FAMILY ?= dual

.PHONY: e2e-bin e2e grid e2e-kind chart tools pinning ops-e2e bench-defaulting bench-pinning bench-scale e2e-node soak faults

chart: e2e-bin ## helm lint --strict, golden helm template (go test ./charts -update rewrites), invariants; helm required
	E2E_REQUIRED=1 HELM=$(K8S_BIN_DIR)/helm $(GO) test -count=1 ./charts

tools: e2e-bin ## convert through the real tools: kustomize build (KRM exec function), helm 3 and helm 4 (plugin) post-renderers; required
	set -o pipefail && E2E_REQUIRED=1 KUSTOMIZE=$(EXTRA_BIN_DIR)/kustomize HELM=$(K8S_BIN_DIR)/helm HELM4=$(EXTRA_BIN_DIR)/helm4 \
		$(GO) test -count=1 -run '^(TestKustomizeBuild|TestHelmPostRenderer|TestBinary)$$' -v ./convert 2>&1 | grep -vE '^=== (RUN|PAUSE|CONT)'

e2e-bin: ## build etcd, kube-apiserver, kubectl, kube-controller-manager, helm (+ kustomize, helm4) into .k8s-bin/ (cold ~7 min; warm: no-op)
	e2e/bin/install.sh

e2e: e2e-bin build ## e2e suites against a real kube-apiserver + etcd (fail, never skip, without binaries)
	cd e2e && $(GO) vet ./...
	@mkdir -p e2e/_artifacts
	@# -v for the per-test timings and the differential summary; the full log
	@# (with === RUN lines) stays in e2e/_artifacts/go-test.log.
	cd e2e && set -o pipefail && E2E_REQUIRED=1 $(E2E_ENV) $(GO) test -count=1 -timeout 30m -v ./... 2>&1 \
		| tee $(CURDIR)/e2e/_artifacts/go-test.log | grep --line-buffered -vE '^=== (RUN|PAUSE|CONT)'


pinning: e2e-bin build ## only the pinning e2e suite (contract cases + the 3-replica proof); `make e2e` runs it too
	cd e2e && E2E_REQUIRED=1 $(E2E_ENV) $(GO) test -count=1 -timeout 15m -v ./pinning

SOAK_DURATION ?= 15m

soak: e2e-bin build ## 15 min (SOAK_DURATION) of create/upgrade/downgrade/delete churn across 3 replicas: RSS and goroutines flat, reconciler caught up, nothing duplicated or leaked (docs/soak.md; `make e2e` runs 2 min)
	cd e2e && set -o pipefail && E2E_REQUIRED=1 E2E_SOAK_DURATION=$(SOAK_DURATION) $(E2E_ENV) $(GO) test -count=1 -timeout 60m -run '^TestSoak$$' -v ./soak 2>&1 \
		| grep --line-buffered -vE '^=== (RUN|PAUSE|CONT)'

faults: e2e-bin build ## every row of the fault suite (apiserver/etcd restarts, a replica cut off or slowed, pools ConfigMap deleted/garbage, clock jump; docs/faults.md); `make e2e` runs only the pools+clock row
	@mkdir -p e2e/_artifacts
	cd e2e && set -o pipefail && E2E_REQUIRED=1 E2E_FAULTS=1 $(E2E_ENV) $(GO) test -count=1 -timeout 30m -v ./faults 2>&1 \
		| tee $(CURDIR)/e2e/_artifacts/faults-go-test.log | grep --line-buffered -vE '^=== (RUN|PAUSE|CONT)'

ops-e2e: e2e-bin build ## only the status/plan/apply e2e suite (docs/operations.md); `make e2e` runs it too
	cd e2e && E2E_REQUIRED=1 $(E2E_ENV) $(GO) test -count=1 -timeout 15m -v ./ops

bench-pinning: e2e-bin build ## 3 pinning replicas vs no webhook, same run: creates/s, /mutate p50/p99, replica CPU per create, duplicates; ends with a `bench-pinning: key=value` line (docs/pinning-e2e.md)
	@mkdir -p e2e/_artifacts
	@rm -f e2e/_artifacts/pinning-bench-latest.txt
	cd e2e && set -o pipefail && E2E_REQUIRED=1 E2E_PINNING_BENCH=1 $(E2E_ENV) $(GO) test -count=1 -timeout 20m -run '^TestPinningBenchmark$$' -v ./pinning 2>&1 \
		> $(CURDIR)/e2e/_artifacts/pinning-bench-go-test.log || { tail -50 $(CURDIR)/e2e/_artifacts/pinning-bench-go-test.log; exit 1; }
	@cat e2e/_artifacts/pinning-bench-latest.txt

bench-defaulting: e2e-bin build ## Service creates/s and p50/p99: no defaulting vs MutatingAdmissionPolicy vs defaulting webhook (docs/defaulting-policy.md)
	cd e2e && E2E_REQUIRED=1 $(E2E_ENV) $(GO) test -count=1 -run '^$$' -bench '^BenchmarkDefaulting$$' -benchtime 400x ./admissionpolicy

# bench-scale: BENCH_SCALE_SERVICES pinned Services (issue goal: 20000; at that
# size 15 minutes on 2 quiet cores, an hour on a loaded machine). Prints the
# table, then one line of figures; the allocation decision at 100k
# reservations in an IPv6 /64 comes from BenchmarkNext in alloc.
# BENCH_SCALE_GOMEMLIMIT is the replicas' GOMEMLIMIT: by default what the
# chart derives from its default memory limit (85 % of 256Mi); empty: none.
BENCH_SCALE_SERVICES ?= 2000
BENCH_SCALE_GOMEMLIMIT ?= 222822KiB
bench-scale: e2e-bin build ## replica memory, restart, state rebuild, status and /mutate latency at BENCH_SCALE_SERVICES pinned Services (docs/allocator.md)
	@mkdir -p e2e/_artifacts
	set -o pipefail && $(GO) test -run '^$$' -bench '^BenchmarkNext$$/IPv6_/64' -benchtime 20000x ./alloc | tee e2e/_artifacts/bench-scale-next.txt
	cd e2e && set -o pipefail && E2E_REQUIRED=1 E2E_SCALE_BENCH=1 E2E_SCALE_SERVICES=$(BENCH_SCALE_SERVICES) E2E_SCALE_GOMEMLIMIT=$(BENCH_SCALE_GOMEMLIMIT) $(E2E_ENV) \
		$(GO) test -count=1 -timeout 180m -run '^TestScale$$' -v ./pinning 2>&1 | tee $(CURDIR)/e2e/_artifacts/bench-scale-go-test.log \
		| grep --line-buffered -vE '^=== (RUN|PAUSE|CONT)|^bench-scale: services='
	@line=$$(grep -h '^bench-scale: services=' e2e/_artifacts/bench-scale-go-test.log | tail -1); \
	decide=$$(awk '/^BenchmarkNext/ { for (i = 1; i < NF; i++) if ($$(i+1) == "ns/op" && $$i > m) m = $$i } END { printf "%.2f", m / 1000 }' e2e/_artifacts/bench-scale-next.txt); \
	echo "$$line decide_us_max_ipv6_64=$$decide"

grid: e2e-bin ## regenerate policy/testdata/*_grid.json from real apiservers (no webhook)
	cd e2e && $(E2E_ENV) $(GO) test -count=1 -timeout 30m -run 'Grid' ./grid -update -v

e2e-node: e2e-bin image ## the chart's Pods from `make image` on a real node from parts (root: containerd, runc, CNI, kubelet, kube-proxy; e2e/node)
	e2e/bin/install.sh --node
	cd e2e && $(GO) vet -tags e2enode ./node/...
	@mkdir -p e2e/_artifacts
	set -o pipefail; $(E2E_ENV) e2e/node/run.sh $(CURDIR)/$(IMAGE_ARCHIVE) $(IMAGE) -count=1 -timeout 30m -v 2>&1 \
		| tee $(CURDIR)/e2e/_artifacts/node-go-test.log | grep --line-buffered -vE '^=== (RUN|PAUSE|CONT)'

e2e-kind: ## e2e suite against a kind cluster (needs Docker): make e2e-kind IP_FAMILY=ipv4|ipv6|dual
	e2e/kind/run.sh $(IP_FAMILY)
