// Package ops holds the operator commands of dualstack-webhook: status (what
// each pool has left, and which Services live outside every pool), plan and
// apply (the four ServiceCIDR reconfiguration scenarios of the Kubernetes
// task "Reconfigure the default Service CIDR": extend, single-to-dual,
// dual-to-single, replace-primary).
//
// The split mirrors the rest of the project: the decisions are pure
// functions over a Snapshot of the cluster (ComputeStatus, BuildPlan), table
// tested without an apiserver; Load reads the Snapshot; Apply executes a
// Plan one object at a time, checking the live object before every write so
// that a re-run after an interruption continues where the last one stopped
// (docs/operations.md).
package ops
