// Package framework is the harness of the end-to-end suites: it starts etcd +
// kube-apiserver (+ optionally kube-controller-manager) on loopback through
// controller-runtime's envtest, builds and runs the dualstack-webhook binary as
// a host process with a serving certificate it mints, registers it by `url:`
// with a caBundle scoped to labelled test namespaces, and tears it all down,
// keeping the logs under e2e/_artifacts/ when something failed.
//
// It can also point the same suites at an existing cluster (KUBECONFIG, with
// E2E_USE_EXISTING_CLUSTER=true) where the chart installed the webhook, which
// is how the kind script runs them.
//
// Binaries come from e2e/bin/install.sh; the harness finds them through
// KUBEBUILDER_ASSETS or <repo>/.k8s-bin/current. Under `make test`
// E2E_REQUIRED=1 turns missing binaries into a failure instead of a skip.
package framework
