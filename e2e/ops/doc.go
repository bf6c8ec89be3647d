// Package ops runs the operator commands (status, plan, apply) as the built
// binary against a real kube-apiserver + etcd, with kube-controller-manager
// where a scenario needs its service-cidr controller (a new ServiceCIDR only
// becomes Ready, and a deleted one only goes away, through it).
//
// The pinning webhook is not registered: apply's writes are checked against
// the apiserver's own allocation (explicit clusterIPs are allocated by the
// apiserver itself), which is what apply must get right with or without it.
package ops
