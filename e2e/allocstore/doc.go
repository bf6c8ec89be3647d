// Package allocstore runs the allocator's ConfigMap store against a real
// kube-apiserver + etcd (envtest with the binaries of e2e/bin/install.sh):
// the alloc/storetest contract, several allocators sharing one apiserver
// (zero duplicates), and the reservations-per-second benchmarks beside the
// apiserver's own Service create rate.
//
// Without the binaries the tests skip with the reason, unless E2E_REQUIRED
// is set (make test sets it), in which case they fail.
package allocstore
