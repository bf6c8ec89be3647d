// Package pinning is the end-to-end proof that dualstack-webhook pins
// clusterIPs from its own allocator through a real kube-apiserver + etcd
// (issue 5, items 7–9): the seed examples come back with addresses from the
// KEP-3070 static band, lowest first; requested, held and out-of-range
// addresses; dry run; generateName; a Service rejected by a later webhook;
// delete + re-create (sticky); single ↔ dual upgrades; the pools ConfigMap
// guard; and three replicas behind one registration creating hundreds of
// Services concurrently, losing one replica and all of their state, without a
// duplicate address or an apiserver "already allocated" error.
//
// Everything lives in the _test.go files; `make e2e` runs it, and
// `E2E_PINNING_BENCH=1 go test -run TestPinningBenchmark -v ./pinning`
// (`make bench`) measures Service creates/s with and without the webhook.
// See docs/pinning-e2e.md.
package pinning
