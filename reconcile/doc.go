// Package reconcile keeps the allocator's state true to the cluster after
// admission, because admission alone cannot: a CREATE the webhook pinned may
// still be refused by the apiserver or a later webhook, a generateName
// Service has no name yet, deletes and downgrades are only final once the
// apiserver has accepted them, and Services created while the webhook was
// down or excluded hold addresses it never recorded.
//
//	live Services (informer) ──┐
//	reservations (alloc.Store) ├─▶ Reconciler.Sync ──▶ Confirm / Release / Free / Collect
//	pools + ServiceCIDRs ──────┘          │
//	                                      └──▶ Events on the Service, metrics
//
// Sync is a full, idempotent comparison of the two sides, run by one replica
// at a time (leader election on a Lease) at start, periodically, at the next
// expiry and when state is deleted; a Service watch event runs SyncServices,
// the same comparison for that Service alone. What every replica needs for admission lives here too:
// Holder (addresses held by live Services and IPAddress objects, fed to
// alloc.Options.External so they are never handed out) and PoolWatcher
// (re-applies the pools ConfigMap and the ServiceCIDRs to the allocator).
package reconcile
