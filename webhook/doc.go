// Package webhook is the HTTP side of dualstack-webhook: the chi router,
// the AdmissionReview codec (admission.k8s.io/v1 and v1beta1, answered in the
// version asked), request limits, the pre-policy filters (skip labels,
// default/kubernetes, per-namespace default policy), the minimal JSONPatch
// built from a policy.Decision, the mapping of errors to responses, health,
// metrics and the server's lifecycle (TLS, timeouts, graceful shutdown), and
// the admission side of pinning: /mutate reserves clusterIPs through the
// Allocator seam (package alloc) and writes clusterIP and clusterIPs, /validate
// checks the final addresses and guards the pools ConfigMap (pin.go).
//
// It holds no dual-stack rules: those live in package policy, which this
// package calls through the Evaluator seam so that the HTTP layer can be
// tested and fuzzed on its own.
package webhook
