package framework

import (
	"context"
	"fmt"
	"net/netip"
	"sort"
	"strings"

	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/kubernetes"

	"github.com/dualstack-webhook/dualstack-webhook/alloc/configmap"
)

// Reservation is one of the webhook's state ConfigMaps as a human reads it.
type Reservation struct {
	CM        string // ConfigMap name
	IP        netip.Addr
	Pool      string
	Family    string // label
	State     string // label: pending, bound or sticky
	Namespace string
	Name      string
	GenName   string
	UID       string
}

func (r Reservation) String() string {
	owner := r.Namespace + "/" + r.Name
	if r.Name == "" {
		owner = r.Namespace + "/" + r.GenName + "*"
	}
	return fmt.Sprintf("%s %s (pool %s, %s, %s)", r.CM, r.IP, r.Pool, r.State, owner)
}

// Owner is namespace/name of the reservation's Service.
func (r Reservation) Owner() string { return r.Namespace + "/" + r.Name }

func reservationFrom(cm *corev1.ConfigMap) Reservation {
	a, _ := netip.ParseAddr(cm.Data["ip"])
	return Reservation{
		CM: cm.Name, IP: a, Pool: cm.Labels[configmap.LabelPool], Family: cm.Labels[configmap.LabelFamily],
		State: cm.Labels[configmap.LabelState], Namespace: cm.Data["namespace"], Name: cm.Data["name"],
		GenName: cm.Data["generateName"], UID: cm.Data["uid"],
	}
}

// Reservations lists the state ConfigMaps of stateNS by the allocator's labels.
func Reservations(ctx context.Context, c kubernetes.Interface, stateNS string) ([]Reservation, error) {
	list, err := c.CoreV1().ConfigMaps(stateNS).List(ctx, metav1.ListOptions{LabelSelector: configmap.Selector})
	if err != nil {
		return nil, fmt.Errorf("list reservation ConfigMaps in %s: %w", stateNS, err)
	}
	out := make([]Reservation, 0, len(list.Items))
	for i := range list.Items {
		out = append(out, reservationFrom(&list.Items[i]))
	}
	return out, nil
}

// ReservationOf returns the reservation of ip in stateNS, if there is one.
func ReservationOf(ctx context.Context, c kubernetes.Interface, stateNS string, ip netip.Addr) (Reservation, bool, error) {
	cm, err := c.CoreV1().ConfigMaps(stateNS).Get(ctx, configmap.Name(ip), metav1.GetOptions{})
	if apierrors.IsNotFound(err) {
		return Reservation{}, false, nil
	}
	if err != nil {
		return Reservation{}, false, fmt.Errorf("get reservation of %s: %w", ip, err)
	}
	return reservationFrom(cm), true, nil
}

// Snapshot is what the allocator's invariants are checked on: every
// Service's addresses, the apiserver's IPAddress objects and the webhook's
// reservations.
type Snapshot struct {
	// Services maps namespace/name to the Service's clusterIPs.
	Services map[string][]netip.Addr
	// IPAddresses maps an address to the namespace/name of its parentRef.
	IPAddresses map[netip.Addr]string
	// Reservations are the state ConfigMaps.
	Reservations []Reservation
}

// InPool says whether an address belongs to the webhook's pools (addresses
// outside them are not the webhook's to record).
type InPool func(netip.Addr) bool

// Findings are the invariants a snapshot breaks; empty means consistent.
type Findings struct {
	// Duplicates: an address held by two Services (or twice by one).
	Duplicates []string
	// IPAddress: a Service address without an IPAddress object naming it,
	// or an IPAddress naming another Service.
	IPAddress []string
	// Unreserved: a pool address of a live Service without a reservation
	// bound to that Service (only when requireBound).
	Unreserved []string
	// Orphans: a reservation whose Service does not hold its address
	// (a leak: the address is lost to every other Service).
	Orphans []string
	// Malformed: a reservation whose ConfigMap name is not its address's.
	Malformed []string
}

// Empty reports a consistent snapshot.
func (f Findings) Empty() bool {
	return len(f.Duplicates)+len(f.IPAddress)+len(f.Unreserved)+len(f.Orphans)+len(f.Malformed) == 0
}

func (f Findings) String() string {
	var b strings.Builder
	for _, part := range []struct {
		name string
		list []string
	}{{"duplicate addresses", f.Duplicates}, {"IPAddress mismatches", f.IPAddress}, {"unreserved pool addresses", f.Unreserved},
		{"orphan reservations", f.Orphans}, {"malformed reservations", f.Malformed}} {
		if len(part.list) == 0 {
			continue
		}
		fmt.Fprintf(&b, "%d %s:", len(part.list), part.name)
		for i, s := range part.list {
			if i == 10 {
				fmt.Fprintf(&b, " … (%d more)", len(part.list)-10)
				break
			}
			b.WriteString(" [" + s + "]")
		}
		b.WriteString("; ")
	}
	return strings.TrimSuffix(b.String(), "; ")
}

// Check verifies a snapshot: no address held twice, every Service address
// backed by the apiserver's IPAddress object for that Service, every
// reservation naming a Service that holds its address (sticky ones
// excepted: their Service was deleted on purpose) and, with requireBound,
// every pool address of a live Service reserved and bound to it.
func Check(s Snapshot, pool InPool, requireBound bool) Findings {
	var f Findings
	holder := map[netip.Addr]string{}
	keys := make([]string, 0, len(s.Services))
	for k := range s.Services {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	for _, k := range keys {
		for _, ip := range s.Services[k] {
			if prev, ok := holder[ip]; ok {
				f.Duplicates = append(f.Duplicates, fmt.Sprintf("%s held by %s and %s", ip, prev, k))
				continue
			}
			holder[ip] = k
			switch parent, ok := s.IPAddresses[ip]; {
			case !ok:
				f.IPAddress = append(f.IPAddress, fmt.Sprintf("%s of %s has no IPAddress object", ip, k))
			case parent != k:
				f.IPAddress = append(f.IPAddress, fmt.Sprintf("%s of %s: IPAddress names %s", ip, k, parent))
			}
		}
	}
	reserved := map[netip.Addr]Reservation{}
	for _, r := range s.Reservations {
		if want := configmap.Name(r.IP); r.CM != want {
			f.Malformed = append(f.Malformed, fmt.Sprintf("%s holds address %s (want name %s)", r.CM, r.IP, want))
			continue
		}
		reserved[r.IP] = r
		if r.State == "sticky" {
			continue
		}
		if h, ok := holder[r.IP]; !ok || h != r.Owner() {
			f.Orphans = append(f.Orphans, fmt.Sprintf("%s, but the address is held by %q", r, h))
		}
	}
	if requireBound {
		for _, k := range keys {
			for _, ip := range s.Services[k] {
				if !pool(ip) {
					continue
				}
				r, ok := reserved[ip]
				if !ok {
					f.Unreserved = append(f.Unreserved, fmt.Sprintf("%s of %s has no reservation", ip, k))
				} else if r.State != "bound" || r.Owner() != k {
					f.Unreserved = append(f.Unreserved, fmt.Sprintf("%s of %s: %s", ip, k, r))
				}
			}
		}
	}
	return f
}

// TakeSnapshot reads every Service, IPAddress and reservation of stateNS.
func TakeSnapshot(ctx context.Context, c kubernetes.Interface, stateNS string) (Snapshot, error) {
	s := Snapshot{Services: map[string][]netip.Addr{}, IPAddresses: map[netip.Addr]string{}}
	svcs, err := c.CoreV1().Services("").List(ctx, metav1.ListOptions{})
	if err != nil {
		return s, err
	}
	for _, sv := range svcs.Items {
		k := sv.Namespace + "/" + sv.Name
		for _, ip := range sv.Spec.ClusterIPs {
			if a, err := netip.ParseAddr(ip); err == nil {
				s.Services[k] = append(s.Services[k], a)
			}
		}
	}
	ips, err := c.NetworkingV1().IPAddresses().List(ctx, metav1.ListOptions{})
	if err != nil {
		return s, err
	}
	for _, ip := range ips.Items {
		a, err := netip.ParseAddr(ip.Name)
		if err != nil {
			continue
		}
		parent := ""
		if p := ip.Spec.ParentRef; p != nil {
			parent = p.Namespace + "/" + p.Name
		}
		s.IPAddresses[a] = parent
	}
	s.Reservations, err = Reservations(ctx, c, stateNS)
	return s, err
}
