// Package admissionpolicy proves, against real kube-apiservers, that the
// MutatingAdmissionPolicy printed by `dualstack-webhook render-policy` stores
// the same Services as the webhook's /default: for every CREATE cell of the
// grid (e2e/grid, policy/testdata/create_grid.json), on each of the four
// cluster shapes, with each configured default (none, SingleStack,
// PreferDualStack, RequireDualStack) given by flag and by Namespace
// annotation, and with an invalid annotation, the stored dual-stack fields or
// the error are the same. Both run in the same apiserver, in namespaces
// selected by label, so one control plane per shape serves both paths.
//
// It also checks that breaking any one of the policy's CEL expressions is
// noticed (the comparison is not vacuous), and measures Service creates with
// no defaulting, with the policy and with the webhook (BenchmarkDefaulting,
// `make bench-defaulting`).
package admissionpolicy
