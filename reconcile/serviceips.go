package reconcile

import (
	"net/netip"
	"slices"
	"sync"

	corev1 "k8s.io/api/core/v1"
	"k8s.io/client-go/tools/cache"
)

// ServiceIPs maps every address a cached Service holds to that Service's
// key ("namespace/name"), for Holder. It is kept by the Service informer's
// event handler (Handler) instead of an informer index: client-go's index
// keeps a string set per address (~200 bytes; 6 MiB of every replica's
// heap at 20,000 Services); here an address costs one map slot, and the
// key string is shared by the Service's addresses.
//
// Unlike the reconciler's view (heldIPs), default/kubernetes is included
// (its address must never be handed out); ExternalName Services hold
// nothing, and unparseable addresses are skipped.
//
// The map follows the cache through the handler, so it lags the cache by
// the handler's queue: readiness must wait for the handler registration's
// HasSynced, not only the informer's.
type ServiceIPs struct {
	mu   sync.RWMutex
	byIP map[netip.Addr]string
	// more holds the further claimants of an address byIP already maps,
	// in the order seen. Two Services hold one address only while the
	// events disagree (after a relist, the new holder's add may be
	// delivered before the old one's delete); like client-go's index, the
	// address stays held until the last claimant lets go. Almost always
	// empty.
	more map[netip.Addr][]string
}

// NewServiceIPs returns an empty map; register Handler on the Service
// informer to fill it.
func NewServiceIPs() *ServiceIPs {
	return &ServiceIPs{byIP: map[netip.Addr]string{}, more: map[netip.Addr][]string{}}
}

// Holder returns the key of a Service holding ip.
func (m *ServiceIPs) Holder(ip netip.Addr) (string, bool) {
	m.mu.RLock()
	defer m.mu.RUnlock()
	k, ok := m.byIP[ip]
	return k, ok
}

// Len is the number of addresses held.
func (m *ServiceIPs) Len() int {
	m.mu.RLock()
	defer m.mu.RUnlock()
	return len(m.byIP)
}

// Handler is the Service informer's event handler that keeps m.
func (m *ServiceIPs) Handler() cache.ResourceEventHandler {
	return cache.ResourceEventHandlerFuncs{
		AddFunc:    func(obj any) { m.Update(nil, obj) },
		UpdateFunc: m.Update,
		DeleteFunc: func(obj any) {
			if t, ok := obj.(cache.DeletedFinalStateUnknown); ok && t.Obj == nil {
				m.Forget(t.Key)
				return
			}
			m.Update(obj, nil)
		},
	}
}

// Forget drops every address held by the Service key ("namespace/name"):
// for a tombstone that carries no object (client-go sends one when its own
// store has lost it), so nothing says which addresses it held. A scan, but
// a rare one.
func (m *ServiceIPs) Forget(key string) {
	m.mu.Lock()
	defer m.mu.Unlock()
	var ips []netip.Addr
	for ip, k := range m.byIP {
		if k == key {
			ips = append(ips, ip)
		}
	}
	for ip, ks := range m.more {
		if slices.Contains(ks, key) {
			ips = append(ips, ip)
		}
	}
	m.release(ips, key)
}

// Update applies one event: old is the Service as the cache had it before
// (nil on add), cur as it has it now (nil on delete). Either may be a
// tombstone (cache.DeletedFinalStateUnknown); anything but a Service is
// ignored.
func (m *ServiceIPs) Update(old, cur any) {
	ons, oname, gone, wasService := held(old)
	ns, name, holds, isService := held(cur)
	if len(gone) == 0 && len(holds) == 0 {
		return
	}
	var key string
	if isService {
		key = ns + "/" + name
	} else {
		key = ons + "/" + oname
	}
	m.mu.Lock()
	defer m.mu.Unlock()
	if wasService && isService && (ons != ns || oname != name) {
		// Not what an informer delivers; handled all the same.
		m.release(gone, ons+"/"+oname)
		gone = nil
	}
	for _, ip := range gone {
		if !slices.Contains(holds, ip) {
			m.drop(ip, key)
		}
	}
	for _, ip := range holds {
		key = m.add(ip, key)
	}
}

func (m *ServiceIPs) release(ips []netip.Addr, key string) {
	for _, ip := range ips {
		m.drop(ip, key)
	}
}

// add records that the Service key holds ip. It returns the key string to
// use for the Service's next address: the one already stored for it, so
// that a Service's addresses share one string.
func (m *ServiceIPs) add(ip netip.Addr, key string) string {
	cur, ok := m.byIP[ip]
	switch {
	case !ok:
		m.byIP[ip] = key
	case cur == key:
		return cur
	case !slices.Contains(m.more[ip], key):
		m.more[ip] = append(m.more[ip], key)
	}
	return key
}

// drop records that the Service key no longer holds ip.
func (m *ServiceIPs) drop(ip netip.Addr, key string) {
	others := m.more[ip]
	if cur, ok := m.byIP[ip]; ok && cur == key {
		if len(others) == 0 {
			delete(m.byIP, ip)
			return
		}
		m.byIP[ip] = others[0]
		others = others[1:]
	} else if i := slices.Index(others, key); i >= 0 {
		others = slices.Delete(slices.Clone(others), i, i+1)
	} else {
		return
	}
	if len(others) == 0 {
		delete(m.more, ip)
	} else {
		m.more[ip] = others
	}
}

// held reads what obj holds for ServiceIPs: obj is a Service, a
// SlimService or a tombstone of either (ok false for anything else); ips
// are its valid clusterIPs (clusterIP alone when clusterIPs is empty), none
// for an ExternalName Service.
func held(obj any) (namespace, name string, ips []netip.Addr, ok bool) {
	if t, isTomb := obj.(cache.DeletedFinalStateUnknown); isTomb {
		obj = t.Obj
	}
	var typ corev1.ServiceType
	var clusterIP string
	var clusterIPs []string
	switch o := obj.(type) {
	case *corev1.Service:
		namespace, name, typ, clusterIP, clusterIPs = o.Namespace, o.Name, o.Spec.Type, o.Spec.ClusterIP, o.Spec.ClusterIPs
	case *SlimService:
		namespace, name, typ, clusterIP, clusterIPs = o.namespace, o.name, o.typ, o.clusterIP, o.clusterIPs
	default:
		return "", "", nil, false
	}
	if typ == corev1.ServiceTypeExternalName {
		return namespace, name, nil, true
	}
	if len(clusterIPs) == 0 && clusterIP != "" {
		clusterIPs = []string{clusterIP}
	}
	ips = make([]netip.Addr, 0, len(clusterIPs))
	for _, v := range clusterIPs {
		if a, err := netip.ParseAddr(v); err == nil {
			ips = append(ips, a)
		}
	}
	return namespace, name, ips, true
}
