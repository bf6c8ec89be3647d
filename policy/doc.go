// Package policy is the pure dual-stack rule book of kube-apiserver for
// v1/Service, plus the webhook's own defaulting. It has no I/O, no clock and
// no logger so that every rule can be table-tested and fuzzed.
package policy
