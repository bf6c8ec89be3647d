# dualstack-webhook — `make help` lists the targets.
SHELL := /usr/bin/env bash
GO ?= go
BIN := bin/dualstack-webhook

.PHONY: help build test unit bench vet fmt-check

help: ## list targets
	@grep -hE '^[a-zA-Z0-9_-]+:.*## ' $(MAKEFILE_LIST) | awk -F':.*## ' '{printf "  %-14s %s\n", $$1, $$2}'

build: ## build bin/dualstack-webhook
	$(GO) build -o $(BIN) .

unit: ## unit tests of the main module (race detector on)
	$(GO) test -race -count=1 ./...

vet: ## go vet + gofmt check
	$(GO) vet ./...
	@out=$$(gofmt -l $$(git ls-files '*.go')); if [ -n "$$out" ]; then echo "gofmt needed: $$out"; exit 1; fi

test: vet unit ## everything CI runs

bench: ## benchmarks (figures are ratios against a baseline measured in the same run)
	$(GO) test -run '^$$' -bench . -benchmem ./...
