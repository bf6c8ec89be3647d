// Package alloc decides which clusterIP a Service gets and remembers it.
//
// It is split so that the decision stays pure and the persistence stays dumb:
//
//	ipmath.go     Range, IPSet (interval B-trees over 128-bit offsets), KEP-3070 static band
//	pool.go       the pools.yaml document, its compilation and validation, pool selection
//	strategy.go   Next: pool addresses + taken set + strategy (+ owner key) → candidate
//	reservation.go Reservation, Owner, states pending → bound → sticky → freed
//	index.go      Index: the in-memory view a Store keeps (by IP, by owner, taken sets)
//	store.go      Store: the small persistence interface (memory and configmap backends)
//	allocator.go  Allocator: reserve / requested IPs / confirm / release / free / collect
//
// A pool may be an IPv6 /64: nothing in this package materialises one bit or
// one object per address of a pool. Pools and taken addresses are sets of
// inclusive intervals, so "first free address at or after X" costs a binary
// search, whatever the size of the pool.
//
//	Service ns/name ──Select──▶ Pool ──Next(pool, taken, strategy, key)──▶ candidate
//	                                                       │
//	                         Store.Create(candidate) ◀─────┘  AlreadyExists → next candidate
//
// Uniqueness is the Store's job (for the configmap backend: the apiserver's
// AlreadyExists/Conflict on one ConfigMap per reserved IP); the Allocator only
// retries a bounded number of times with the lost candidates excluded.
package alloc
