// Package faults is the fault suite: three dualstack-webhook replicas
// (host processes) behind one registration on a real kube-apiserver +
// etcd, a steady create/update/delete load, and one fault per row — the
// apiserver restarted (SIGTERM, SIGKILL), etcd restarted, one replica cut
// off from the apiserver (dropped, black-holed) or slowed beyond the
// webhook's timeoutSeconds while it keeps receiving admissions, the pools
// ConfigMap deleted and replaced with garbage, one replica's clock jumping
// an hour ahead. Each row reports requests failed (and with what message),
// recovery time, duplicates, and leaked or lost reservations, and fails
// when its guarantee breaks.
//
// `make test` runs the pools and clock rows (TestPoolsAndClock, about a
// minute); `make faults` runs every row (E2E_FAULTS=1). Figures:
// docs/faults.md.
package faults
