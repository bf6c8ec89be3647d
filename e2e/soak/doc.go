// Package soak runs the pinning webhook for a while under churn and checks
// that nothing accumulates: three replicas behind one registration (the
// pinning suite's set-up, from e2e/framework) on a real kube-apiserver +
// etcd, Services created, upgraded to dual-stack, downgraded back and
// deleted without pause, while each replica's RSS and goroutines are
// sampled. After the warm-up both must stay flat (±10 %), the reconciler
// must catch up, and the state must hold no duplicate, no leak and exactly
// one reservation per live pool address plus the sticky ones.
//
// `make e2e` runs the 2-minute version; `make soak` runs 15 minutes
// (E2E_SOAK_DURATION). Figures: docs/soak.md.
package soak
