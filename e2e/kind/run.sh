#!/usr/bin/env bash
# Runs the end-to-end Service suite (e2e/services) against a kind cluster with
# the webhook installed the way users install it: cert-manager, the project's
# image (`make image`: an OCI archive built without a container engine, loaded
# with `kind load image-archive`), the Helm chart.
#
#   make e2e-kind IP_FAMILY=dual        # or ipv4, ipv6
#   e2e/kind/run.sh ipv6
#
# Needs Docker (or another engine kind supports), kind, and network access to
# the cert-manager release manifest; kubectl and helm default to the ones
# e2e/bin/install.sh builds (.k8s-bin/current), else PATH. It cannot run on the
# project's CI machines, which have no container engine: CI runs the same suite
# against a local kube-apiserver instead (`make e2e`).
#
# Environment:
#   KIND_CLUSTER_NAME     cluster name (default dsw-e2e-<family>)
#   KEEP_CLUSTER=true     keep the cluster afterwards (default: delete it)
#   REUSE_CLUSTER=true    use an existing cluster of that name instead of creating one
#   IMAGE                 image name to build and load (default dualstack-webhook:e2e)
#   CERT_MANAGER_VERSION  cert-manager release (default v1.21.2)
#   E2E_PACKAGES          Go packages of the e2e module to run (default ./services/)
#   GO_TEST_FLAGS         extra `go test` flags (default -count=1 -v -timeout 30m)
#   KIND, KUBECTL, HELM, DOCKER  commands to use
set -euo pipefail

ip_family=${1:-${IP_FAMILY:-dual}}
case "$ip_family" in
ipv4 | ipv6 | dual) ;;
*)
	echo "run.sh: IP family must be ipv4, ipv6 or dual, not '$ip_family'" >&2
	exit 2
	;;
esac

here=$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)
root=$(cd "$here/../.." && pwd)
cluster=${KIND_CLUSTER_NAME:-dsw-e2e-$ip_family}
image=${IMAGE:-dualstack-webhook:e2e}
image_repo=${image%:*}
image_tag=${image##*:}
cert_manager_version=${CERT_MANAGER_VERSION:-v1.21.2}
packages=${E2E_PACKAGES:-./services/}
read -r -a go_test_flags <<<"${GO_TEST_FLAGS:--count=1 -v -timeout 30m}"
release=dualstack-webhook
release_ns=dualstack-webhook-system
artifacts="$root/e2e/_artifacts/kind-$cluster-$(date +%Y%m%d-%H%M%S)"
kubeconfig="$artifacts/kubeconfig"

# Tools: the pinned builds of e2e/bin/install.sh when present.
bindir="$root/.k8s-bin/current"
tool() { # tool ENVVAR NAME
	local override=${!1:-}
	if [[ -n "$override" ]]; then
		echo "$override"
	elif [[ -x "$bindir/$2" ]]; then
		echo "$bindir/$2"
	else
		echo "$2"
	fi
}
KIND=${KIND:-kind}
DOCKER=${DOCKER:-docker}
KUBECTL=$(tool KUBECTL kubectl)
HELM=$(tool HELM helm)

for cmd in "$KIND" "$DOCKER" "$KUBECTL" "$HELM" go; do
	if ! command -v "$cmd" >/dev/null 2>&1; then
		echo "run.sh: '$cmd' not found; this script needs a container engine, kind, kubectl, helm and go" >&2
		exit 1
	fi
done
if ! "$DOCKER" info >/dev/null 2>&1; then
	echo "run.sh: '$DOCKER info' failed: no container engine reachable (expected on CI machines; use 'make e2e' there)" >&2
	exit 1
fi

mkdir -p "$artifacts"
t_all=$SECONDS
phase_start=$SECONDS
phase() {
	echo "==> [$((SECONDS - t_all))s] $*"
	phase_start=$SECONDS
}
phase_done() { echo "    done in $((SECONDS - phase_start))s"; }

k() { "$KUBECTL" --kubeconfig "$kubeconfig" "$@"; }

created=false
cleanup() {
	local status=$?
	if [[ -f "$kubeconfig" ]]; then
		echo "==> collecting logs into $artifacts"
		k get all,certificates,issuers,mutatingwebhookconfigurations,validatingwebhookconfigurations -A \
			>"$artifacts/objects.txt" 2>&1 || true
		k -n "$release_ns" describe pods >"$artifacts/webhook-pods.txt" 2>&1 || true
		k -n "$release_ns" logs -l "app.kubernetes.io/name=dualstack-webhook" --all-containers --prefix --tail=-1 \
			>"$artifacts/webhook.log" 2>&1 || true
		k -n cert-manager logs -l app.kubernetes.io/instance=cert-manager --all-containers --prefix --tail=2000 \
			>"$artifacts/cert-manager.log" 2>&1 || true
	fi
	if [[ "$created" == true && "${KEEP_CLUSTER:-false}" != true ]]; then
		echo "==> deleting kind cluster $cluster (KEEP_CLUSTER=true keeps it)"
		"$KIND" delete cluster --name "$cluster" || true
	fi
	echo "==> e2e-kind ($ip_family) finished with status $status after $((SECONDS - t_all))s; artifacts: $artifacts"
	exit "$status"
}
trap cleanup EXIT

phase "kind cluster $cluster ($ip_family)"
if [[ "${REUSE_CLUSTER:-false}" == true ]] && "$KIND" get clusters 2>/dev/null | grep -qx "$cluster"; then
	"$KIND" get kubeconfig --name "$cluster" >"$kubeconfig"
else
	"$KIND" delete cluster --name "$cluster" >/dev/null 2>&1 || true
	created=true
	"$KIND" create cluster --name "$cluster" --config "$here/$ip_family.yaml" --kubeconfig "$kubeconfig" --wait 180s
fi
k get nodes -o wide
phase_done

phase "cert-manager $cert_manager_version"
k apply --server-side -f "https://github.com/cert-manager/cert-manager/releases/download/$cert_manager_version/cert-manager.yaml"
k -n cert-manager wait deployment --all --for=condition=Available --timeout=300s
# Available is not enough: cert-manager's own webhook must serve before
# Issuers can be created. Poll with a server-side dry run of one.
issuer='{"apiVersion":"cert-manager.io/v1","kind":"Issuer","metadata":{"name":"probe","namespace":"default"},"spec":{"selfSigned":{}}}'
for i in $(seq 1 60); do
	if echo "$issuer" | k apply --dry-run=server -f - >/dev/null 2>&1; then
		break
	fi
	if [[ $i -eq 60 ]]; then
		echo "run.sh: cert-manager webhook not serving after 120s" >&2
		exit 1
	fi
	sleep 2
done
phase_done

phase "image $image (make image: bin/dualstack-webhook.oci.tar)"
make -C "$root" --no-print-directory image IMAGE="$image"
"$KIND" load image-archive "$root/bin/dualstack-webhook.oci.tar" --name "$cluster"
phase_done

chart="$root/charts/dualstack-webhook"
if [[ ! -f "$chart/Chart.yaml" ]]; then
	echo "run.sh: no chart at $chart: nothing installs the webhook, so the suite cannot run" >&2
	exit 1
fi
phase "helm install $release from charts/dualstack-webhook"
"$HELM" upgrade --install "$release" "$chart" \
	--kubeconfig "$kubeconfig" \
	--namespace "$release_ns" --create-namespace \
	--set image.repository="$image_repo" \
	--set image.tag="$image_tag" \
	--set image.pullPolicy=IfNotPresent \
	--wait --timeout 5m
k -n "$release_ns" get pods -o wide
phase_done

phase "e2e suite $packages against the cluster"
(
	cd "$root/e2e"
	E2E_USE_EXISTING_CLUSTER=true KUBECONFIG="$kubeconfig" E2E_REQUIRED=1 \
		go test "${go_test_flags[@]}" "$packages"
)
phase_done
