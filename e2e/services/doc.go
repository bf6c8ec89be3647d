// Package services is the end-to-end suite of the webhook on v1/Service
// through a real kube-apiserver: the dual-stack examples of the Kubernetes
// docs, defaulting by flag and by Namespace annotation, the skip label,
// rejections with the apiserver's own messages, single ↔ dual updates,
// server-side dry-run, strict field validation of the legacy spec.ipFamily,
// and a differential test against the apiserver alone.
//
// It runs against a local etcd + kube-apiserver with webhook host processes
// (the default, CI), or against an existing cluster with the chart installed
// (E2E_USE_EXISTING_CLUSTER=true, KUBECONFIG), which is how e2e/kind/run.sh
// uses it. Tests that need a local webhook process (flags, direct HTTP) skip on
// an existing cluster.
package services
