// Package existing proves the existing-cluster mode of the suites (the one
// e2e/kind/run.sh uses, where no container engine is at hand to try kind
// itself): it starts a local control plane, installs the webhook the way the
// chart registers it (every namespace but the system ones, skip label honoured
// by selectors), then runs the services suite as a separate `go test` with
// E2E_USE_EXISTING_CLUSTER=true and that cluster's KUBECONFIG.
package existing
