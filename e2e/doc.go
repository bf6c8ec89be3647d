// Package e2e holds the end-to-end suites: against a real kube-apiserver + etcd
// built from Go modules (CI), or against an existing cluster such as kind
// (KUBECONFIG). It is its own module so that envtest and friends stay out of
// the webhook's go.mod.
package e2e
