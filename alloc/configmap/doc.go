// Package configmap is the alloc.Store for clusters: ONE ConfigMap PER
// RESERVED IP in the webhook's namespace, the way the apiserver keeps one
// IPAddress object per allocated clusterIP (KEP-1880).
//
//	ip-10-96-0-12            labels: dualstack-webhook.io/pool=web
//	ip-fd00-10-96--c                 dualstack-webhook.io/family=IPv6
//	...                              dualstack-webhook.io/state=bound
//	                                 app.kubernetes.io/managed-by=dualstack-webhook
//	                         data:   ip, pool, namespace, name, generateName,
//	                                 uid, requestUID, state, created, updated, expires
//
// Why per IP: uniqueness is the apiserver's (Create = reserve, AlreadyExists =
// taken), there is no hot object that every replica rewrites, each object is
// a few hundred bytes at any scale (the 1 MiB limit never matters), and
// `kubectl get cm -l dualstack-webhook.io/pool -L dualstack-webhook.io/state`
// shows who holds what.
//
// Writes go to the apiserver: Create = reserve, Update with resourceVersion =
// confirm/release (Conflict = someone changed it), Delete with a
// resourceVersion precondition = free. Reads come from a namespace-scoped,
// label-selected informer, and every read first waits until the informer has
// delivered this store's own completed writes that can change its answer
// (Get: writes of that address; ByOwner: writes giving that owner an address
// or taking one from it; List and Taken: all): otherwise a replica would
// decide on a cache that does not yet show what it just reserved (the CAPI
// in-cluster IPAM lesson). Because a watch delivers events in resourceVersion
// order, seeing our own write also means having seen every earlier write of
// the other replicas. TakenNow, the allocator's candidate view, waits for
// nothing: a candidate is only a guess that Create (AlreadyExists) settles,
// and the allocator keeps its own recent writes aside itself.
//
// Rate limits: client-go defaults to 5 QPS / burst 10, which caps an
// allocator at about 5 reservations per second. Build the client with
// RaiseRateLimits (or NewForConfig, which does it), or set rest.Config's QPS
// and Burst yourself before creating the clientset.
package configmap
