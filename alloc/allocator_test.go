package alloc_test

import (
	"context"
	"errors"
	"fmt"
	"net/netip"
	"strings"
	"sync"
	"testing"
	"time"

	corev1 "k8s.io/api/core/v1"
	clocktesting "k8s.io/utils/clock/testing"

	"github.com/dualstack-webhook/dualstack-webhook/alloc"
	"github.com/dualstack-webhook/dualstack-webhook/alloc/memory"
)

var (
	v4 = corev1.IPv4Protocol
	v6 = corev1.IPv6Protocol
	// orders are the family lists every table runs: single-stack of each
	// family and both dual-stack orders.
	orders = map[string][]corev1.IPFamily{"IPv4": {v4}, "IPv6": {v6}, "IPv4,IPv6": {v4, v6}, "IPv6,IPv4": {v6, v4}}
	cidrs  = []netip.Prefix{netip.MustParsePrefix("10.96.0.0/16"), netip.MustParsePrefix("fd00:10:96::/108")}
	bg     = context.Background()
)

const poolsDoc = `apiVersion: dualstack-webhook.io/v1alpha1
kind: PoolConfig
defaultPool: small
pools:
- name: small
  addresses:
    ipv4: ["10.96.0.10-10.96.0.13"]
    ipv6: ["fd00:10:96::10-fd00:10:96::13"]
- name: v4only
  addresses: {ipv4: ["10.96.0.20-10.96.0.29"]}
- name: drained
  state: draining
  addresses: {ipv4: ["10.96.0.30-10.96.0.39"], ipv6: ["fd00:10:96::30-fd00:10:96::39"]}
- name: hashed
  strategy: hash
  addresses: {ipv4: ["10.96.2.0/24"], ipv6: ["fd00:10:96::2:0/120"]}
`

type fixture struct {
	a     *alloc.Allocator
	store *memory.Store
	clock *clocktesting.FakePassiveClock
	pools *alloc.Pools
	live  map[netip.Addr]string // the External holder set
	mu    sync.Mutex
}

func newFixture(t *testing.T, opts alloc.Options) *fixture {
	t.Helper()
	pools := compiledPools(t)
	f := &fixture{store: memory.New(), clock: clocktesting.NewFakePassiveClock(time.Date(2026, 11, 23, 12, 0, 0, 0, time.UTC)), pools: pools, live: map[netip.Addr]string{}}
	opts.Clock = f.clock
	opts.External = func(ip netip.Addr) (string, bool) {
		f.mu.Lock()
		defer f.mu.Unlock()
		o, ok := f.live[ip]
		return o, ok
	}
	var err error
	if f.a, err = alloc.New(f.store, pools, opts); err != nil {
		t.Fatal(err)
	}
	return f
}

// compiledPools is poolsDoc compiled for the test's ServiceCIDRs.
func compiledPools(t *testing.T) *alloc.Pools {
	t.Helper()
	c, err := alloc.ParseConfig([]byte(poolsDoc))
	if err != nil {
		t.Fatal(err)
	}
	pools, err := alloc.Compile(c, cidrs)
	if err != nil {
		t.Fatal(err)
	}
	return pools
}

func owner(name string) alloc.Owner {
	return alloc.Owner{Namespace: "apps", Name: name, RequestUID: "req-" + name}
}

func annotated(pool string) map[string]string { return map[string]string{alloc.PoolAnnotation: pool} }

func (f *fixture) reserve(t *testing.T, name, pool string, fams []corev1.IPFamily) []netip.Addr {
	t.Helper()
	res, err := f.a.Reserve(bg, alloc.Request{Owner: owner(name), Annotations: annotated(pool), Families: fams})
	if err != nil {
		t.Fatalf("Reserve(%s): %v", name, err)
	}
	return res.IPs
}

func (f *fixture) state(t *testing.T, ip netip.Addr) (alloc.Reservation, bool) {
	t.Helper()
	r, ok, err := f.store.Get(bg, ip)
	if err != nil {
		t.Fatal(err)
	}
	return r, ok
}

func TestReserveFamiliesAndIdempotency(t *testing.T) {
	for name, fams := range orders {
		t.Run(name, func(t *testing.T) {
			f := newFixture(t, alloc.Options{})
			ips := f.reserve(t, "web", "small", fams)
			pool, _ := f.pools.Get("small")
			if len(ips) != len(fams) {
				t.Fatalf("IPs %v for families %v", ips, fams)
			}
			for i, ip := range ips {
				if alloc.FamilyOf(ip) != fams[i] || !pool.Addresses.Contains(ip) {
					t.Errorf("IPs[%d] = %s: want a %s address of pool small", i, ip, fams[i])
				}
				// lowest strategy: the first address of the family.
				if want := pool.Addresses.Ranges(fams[i])[0].From; ip != want {
					t.Errorf("IPs[%d] = %s, want lowest %s", i, ip, want)
				}
				r, ok := f.state(t, ip)
				if !ok || r.State != alloc.StatePending || r.Pool != "small" || r.Owner.Name != "web" || !r.Expires.Equal(f.clock.Now().Add(alloc.DefaultPendingGrace)) {
					t.Errorf("reservation of %s = %+v", ip, r)
				}
			}
			// Re-invocation of the webhook / a retried request: same answer,
			// nothing new written.
			n := f.store.Len()
			again := f.reserve(t, "web", "small", fams)
			if fmt.Sprint(again) != fmt.Sprint(ips) || f.store.Len() != n {
				t.Errorf("second Reserve = %v (%d records), want %v (%d)", again, f.store.Len(), ips, n)
			}
			// The next Service gets the next addresses.
			other := f.reserve(t, "db", "small", fams)
			for i := range other {
				if other[i] != ips[i].Next() {
					t.Errorf("next Service got %s, want %s", other[i], ips[i].Next())
				}
			}
		})
	}
}

func TestPoolWithoutFamilyLeavesItToTheAPIServer(t *testing.T) {
	for name, fams := range orders {
		t.Run(name, func(t *testing.T) {
			f := newFixture(t, alloc.Options{})
			ips := f.reserve(t, "web", "v4only", fams)
			for i, fam := range fams {
				if fam == v4 && !ips[i].Is4() {
					t.Errorf("IPv4 slot = %s", ips[i])
				}
				if fam == v6 && ips[i].IsValid() {
					t.Errorf("IPv6 slot = %s, want unpinned (invalid)", ips[i])
				}
			}
		})
	}
}

// TestDualStackAllOrNothing: when the second family fails, the first is
// rolled back, in both orders, whichever family is the exhausted one.
func TestDualStackAllOrNothing(t *testing.T) {
	for name, fams := range map[string][]corev1.IPFamily{"IPv4,IPv6": {v4, v6}, "IPv6,IPv4": {v6, v4}} {
		for _, full := range []corev1.IPFamily{v4, v6} {
			t.Run(fmt.Sprintf("%s with %s exhausted", name, full), func(t *testing.T) {
				f := newFixture(t, alloc.Options{})
				for i := range 4 { // pool small has 4 addresses per family
					f.reserve(t, fmt.Sprintf("fill-%d", i), "small", []corev1.IPFamily{full})
				}
				before := f.store.Len()
				_, err := f.a.Reserve(bg, alloc.Request{Owner: owner("web"), Annotations: annotated("small"), Families: fams})
				if !errors.Is(err, alloc.ErrFull) {
					t.Fatalf("Reserve = %v, want ErrFull", err)
				}
				if !strings.Contains(err.Error(), `pool "small"`) || !strings.Contains(err.Error(), string(full)) {
					t.Errorf("error %q should name the pool and the family", err)
				}
				if f.store.Len() != before {
					t.Errorf("%d reservations after a failed dual-stack Reserve, want %d (no half pair)", f.store.Len(), before)
				}
			})
		}
	}
}

func TestRequestedIPs(t *testing.T) {
	tests := map[string]struct {
		ip        string
		setup     func(f *fixture)
		wantErr   func(error) bool
		recorded  bool
		errSubstr string
	}{
		"IPv4 free in a pool is reserved":       {ip: "10.96.0.25", recorded: true},
		"IPv6 free in a pool is reserved":       {ip: "fd00:10:96::2:7", recorded: true},
		"IPv4 free outside pools is unrecorded": {ip: "10.96.9.9"},
		"IPv6 free outside pools is unrecorded": {ip: "fd00:10:96::9:9"},
		"IPv4 in a draining pool is accepted":   {ip: "10.96.0.31", recorded: true},
		"IPv4 outside every ServiceCIDR": {ip: "10.97.0.5", wantErr: func(err error) bool {
			var e *alloc.ErrNotInServiceCIDR
			return errors.As(err, &e) && e.IP == netip.MustParseAddr("10.97.0.5")
		}, errSubstr: "not inside any ServiceCIDR"},
		"IPv6 outside every ServiceCIDR": {ip: "fd00:10:97::5", wantErr: func(err error) bool {
			var e *alloc.ErrNotInServiceCIDR
			return errors.As(err, &e)
		}},
		"IPv4 held by another Service": {ip: "10.96.0.10", setup: func(f *fixture) {
			_, _ = f.a.Reserve(bg, alloc.Request{Owner: alloc.Owner{Namespace: "other", Name: "holder"}, Families: []corev1.IPFamily{v4}})
		}, wantErr: func(err error) bool {
			var e *alloc.ErrHeld
			return errors.As(err, &e) && e.Owner == "other/holder"
		}, errSubstr: "held by other/holder"},
		"IPv6 held by a live Service we did not pin": {ip: "fd00:10:96::9:9", setup: func(f *fixture) {
			f.live[netip.MustParseAddr("fd00:10:96::9:9")] = "kube-system/dns"
		}, wantErr: func(err error) bool {
			var e *alloc.ErrHeld
			return errors.As(err, &e) && e.State == "live"
		}, errSubstr: "held by kube-system/dns"},
		"IPv4 held live by the requester itself (UPDATE)": {ip: "10.96.9.9", setup: func(f *fixture) {
			f.live[netip.MustParseAddr("10.96.9.9")] = "apps/web"
		}},
	}
	for name, tc := range tests {
		t.Run(name, func(t *testing.T) {
			f := newFixture(t, alloc.Options{})
			if tc.setup != nil {
				tc.setup(f)
			}
			ip := netip.MustParseAddr(tc.ip)
			checkErr := f.a.Check(bg, ip, alloc.Request{Owner: owner("web")})
			before := f.store.Len()
			_, err := f.a.Reserve(bg, alloc.Request{Owner: owner("web"), Requested: []netip.Addr{ip}})
			if tc.wantErr != nil {
				if !tc.wantErr(err) || !tc.wantErr(checkErr) {
					t.Fatalf("Reserve = %v, Check = %v: not the expected error", err, checkErr)
				}
				if !strings.Contains(err.Error(), tc.errSubstr) {
					t.Errorf("error %q does not say %q", err, tc.errSubstr)
				}
				if f.store.Len() != before {
					t.Error("a refused request left a record")
				}
				return
			}
			if err != nil || checkErr != nil {
				t.Fatalf("Reserve = %v, Check = %v", err, checkErr)
			}
			r, ok := f.state(t, ip)
			if ok != tc.recorded {
				t.Fatalf("recorded = %v, want %v", ok, tc.recorded)
			}
			if ok && (r.Owner.Name != "web" || r.State != alloc.StatePending) {
				t.Errorf("record = %+v", r)
			}
			// The webhook's own output comes back (re-invocation): still fine.
			if _, err := f.a.Reserve(bg, alloc.Request{Owner: owner("web"), Requested: []netip.Addr{ip}}); err != nil {
				t.Errorf("re-invocation: %v", err)
			}
		})
	}
}

// TestUpgradeRollsBackRequestedPrimary: UPDATE single → dual keeps the
// given primary and pins the secondary; if the secondary fails, the primary
// record made by this call is removed again.
func TestUpgradeRollsBackRequestedPrimary(t *testing.T) {
	for name, tc := range map[string]struct {
		primary string
		second  corev1.IPFamily
	}{"IPv4,IPv6": {"10.96.0.21", v6}, "IPv6,IPv4": {"fd00:10:96::2:5", v4}} {
		t.Run(name, func(t *testing.T) {
			f := newFixture(t, alloc.Options{})
			for i := range 4 {
				f.reserve(t, fmt.Sprintf("fill-%d", i), "small", []corev1.IPFamily{tc.second})
			}
			before := f.store.Len()
			primary := netip.MustParseAddr(tc.primary)
			_, err := f.a.Reserve(bg, alloc.Request{Owner: owner("web"), Annotations: annotated("small"), Requested: []netip.Addr{primary}, Families: []corev1.IPFamily{tc.second}})
			if !errors.Is(err, alloc.ErrFull) {
				t.Fatalf("Reserve = %v, want ErrFull", err)
			}
			if _, ok := f.state(t, primary); ok || f.store.Len() != before {
				t.Errorf("requested primary %s still recorded after rollback", primary)
			}
		})
	}
}

// TestStickiness: release keeps the address for the same namespace/name for
// the retention period (injected clock, no sleeping), then Collect frees it.
func TestStickiness(t *testing.T) {
	for name, fams := range orders {
		t.Run(name, func(t *testing.T) {
			f := newFixture(t, alloc.Options{Retention: time.Hour})
			ips := f.reserve(t, "web", "small", fams)
			for _, ip := range ips {
				if _, err := f.a.Confirm(bg, ip, alloc.Owner{Namespace: "apps", Name: "web", UID: "uid-1"}); err != nil {
					t.Fatal(err)
				}
				if r, _ := f.state(t, ip); r.State != alloc.StateBound || r.Owner.UID != "uid-1" || !r.Expires.IsZero() {
					t.Fatalf("after Confirm: %+v", r)
				}
				if err := f.a.Release(bg, ip, alloc.Owner{Namespace: "apps", Name: "other"}); err == nil {
					t.Error("Release by another owner succeeded")
				}
				if err := f.a.Release(bg, ip, alloc.Owner{Namespace: "apps", Name: "web", UID: "uid-1"}); err != nil {
					t.Fatal(err)
				}
				if r, _ := f.state(t, ip); r.State != alloc.StateSticky || !r.Expires.Equal(f.clock.Now().Add(time.Hour)) || r.Owner.UID != "" {
					t.Fatalf("after Release: %+v", r)
				}
			}
			// Someone else gets other addresses while the sticky ones live.
			f.clock.SetTime(f.clock.Now().Add(59 * time.Minute))
			others := f.reserve(t, "intruder", "small", fams)
			for i := range others {
				if others[i] == ips[i] {
					t.Errorf("sticky %s handed to another Service", ips[i])
				}
				// Bound, so that only the sticky ones expire below.
				if _, err := f.a.Confirm(bg, others[i], alloc.Owner{Namespace: "apps", Name: "intruder", UID: "u-i"}); err != nil {
					t.Fatal(err)
				}
			}
			if freed, _ := f.a.Collect(bg); len(freed) != 0 {
				t.Errorf("Collect before retention freed %v", freed)
			}
			// Re-create before expiry: the same addresses come back.
			back := f.reserve(t, "web", "small", fams)
			if fmt.Sprint(back) != fmt.Sprint(ips) {
				t.Errorf("re-created Service got %v, want its sticky %v", back, ips)
			}
			for _, ip := range back {
				if r, _ := f.state(t, ip); r.State != alloc.StatePending || r.Owner.RequestUID != "req-web" {
					t.Errorf("re-claimed record %+v", r)
				}
				_, _ = f.a.Confirm(bg, ip, alloc.Owner{Namespace: "apps", Name: "web", UID: "uid-2"})
				_ = f.a.Release(bg, ip, alloc.Owner{Namespace: "apps", Name: "web", UID: "uid-2"})
			}
			// Past retention: Collect frees them and lowest hands them out again.
			f.clock.SetTime(f.clock.Now().Add(time.Hour))
			freed, err := f.a.Collect(bg)
			if err != nil || len(freed) != len(ips) {
				t.Fatalf("Collect freed %d (%v), want %d", len(freed), err, len(ips))
			}
			next := f.reserve(t, "newcomer", "small", fams)
			if fmt.Sprint(next) != fmt.Sprint(ips) {
				t.Errorf("after retention the lowest free are %v, want the freed %v", next, ips)
			}
		})
	}
}

func TestPendingGrace(t *testing.T) {
	for name, fams := range orders {
		t.Run(name, func(t *testing.T) {
			f := newFixture(t, alloc.Options{PendingGrace: time.Minute})
			ips := f.reserve(t, "never", "small", fams)
			live := f.reserve(t, "slow", "small", fams)
			for _, ip := range live {
				f.live[ip] = "apps/slow" // created, not yet confirmed by the reconciler
			}
			f.clock.SetTime(f.clock.Now().Add(30 * time.Second))
			if freed, _ := f.a.Collect(bg); len(freed) != 0 {
				t.Fatalf("Collect within grace freed %v", freed)
			}
			f.clock.SetTime(f.clock.Now().Add(time.Minute))
			freed, err := f.a.Collect(bg)
			if err != nil || len(freed) != len(ips) {
				t.Fatalf("Collect freed %v (%v), want %v", freed, err, ips)
			}
			for _, ip := range ips {
				if _, ok := f.state(t, ip); ok {
					t.Errorf("%s still reserved", ip)
				}
			}
			for _, ip := range live {
				if _, ok := f.state(t, ip); !ok {
					t.Errorf("%s held by a live Service was collected", ip)
				}
			}
		})
	}
}

func TestGenerateNameOwner(t *testing.T) {
	for name, fams := range orders {
		t.Run(name, func(t *testing.T) {
			f := newFixture(t, alloc.Options{})
			gen := alloc.Owner{Namespace: "apps", GenerateName: "job-", RequestUID: "r-1"}
			res, err := f.a.Reserve(bg, alloc.Request{Owner: gen, Families: fams})
			if err != nil {
				t.Fatal(err)
			}
			again, _ := f.a.Reserve(bg, alloc.Request{Owner: gen, Families: fams})
			if fmt.Sprint(again.IPs) != fmt.Sprint(res.IPs) {
				t.Errorf("same request uid got %v then %v", res.IPs, again.IPs)
			}
			other, _ := f.a.Reserve(bg, alloc.Request{Owner: alloc.Owner{Namespace: "apps", GenerateName: "job-", RequestUID: "r-2"}, Families: fams})
			if fmt.Sprint(other.IPs) == fmt.Sprint(res.IPs) {
				t.Errorf("two requests share %v", res.IPs)
			}
			// The webhook's own output comes back: on re-invocation (new
			// request UID, still no name) and at /validate (name generated).
			reinvoked := alloc.Owner{Namespace: "apps", GenerateName: "job-", RequestUID: "r-1-again"}
			if _, err := f.a.Reserve(bg, alloc.Request{Owner: reinvoked, Requested: res.IPs}); err != nil {
				t.Errorf("re-invocation with the pinned IPs: %v", err)
			}
			named := alloc.Owner{Namespace: "apps", Name: "job-x7k2p", GenerateName: "job-", RequestUID: "r-1-validate"}
			for _, ip := range res.IPs {
				if err := f.a.Check(bg, ip, alloc.Request{Owner: named}); err != nil {
					t.Errorf("/validate of the generated Service: %v", err)
				}
				var held *alloc.ErrHeld
				if err := f.a.Check(bg, ip, alloc.Request{Owner: alloc.Owner{Namespace: "apps", Name: "cron-1", GenerateName: "cron-", RequestUID: "x"}}); !errors.As(err, &held) {
					t.Errorf("another generateName prefix may use %s: %v", ip, err)
				}
			}
			// The reconciler sees job-x7k2p with the first IPs: bound to its real name.
			if _, err := f.a.Confirm(bg, res.IPs[0], alloc.Owner{Namespace: "apps", Name: "job-x7k2p", UID: "u"}); err != nil {
				t.Fatal(err)
			}
			if r, _ := f.state(t, res.IPs[0]); r.Owner.Name != "job-x7k2p" || r.State != alloc.StateBound {
				t.Errorf("after Confirm: %+v", r)
			}
			// A nameless pending owner has no name to stick to: release frees.
			last := res.IPs[len(res.IPs)-1]
			if len(res.IPs) > 1 {
				if err := f.a.Release(bg, last, gen); err != nil {
					t.Fatal(err)
				}
				if _, ok := f.state(t, last); ok {
					t.Errorf("%s kept after releasing a nameless owner", last)
				}
			}
		})
	}
}

func TestDrainingPool(t *testing.T) {
	for name, fams := range orders {
		t.Run(name, func(t *testing.T) {
			f := newFixture(t, alloc.Options{})
			// Addresses the pool had before it was drained (imported as bound).
			var kept []netip.Addr
			for _, fam := range fams {
				ip := netip.MustParseAddr(map[corev1.IPFamily]string{v4: "10.96.0.33", v6: "fd00:10:96::33"}[fam])
				if _, err := f.a.Confirm(bg, ip, alloc.Owner{Namespace: "apps", Name: "old", UID: "u"}); err != nil {
					t.Fatal(err)
				}
				_ = f.a.Release(bg, ip, alloc.Owner{Namespace: "apps", Name: "old", UID: "u"})
				kept = append(kept, ip)
			}
			_, err := f.a.Reserve(bg, alloc.Request{Owner: owner("new"), Annotations: annotated("drained"), Families: fams})
			if !errors.Is(err, alloc.ErrDraining) || !strings.Contains(err.Error(), `"drained"`) {
				t.Fatalf("new Service in a draining pool: %v, want ErrDraining naming the pool", err)
			}
			back := f.reserve(t, "old", "drained", fams)
			if fmt.Sprint(back) != fmt.Sprint(kept) {
				t.Errorf("existing holder got %v, want its %v back", back, kept)
			}
		})
	}
}

func TestUnknownPoolAnnotation(t *testing.T) {
	f := newFixture(t, alloc.Options{})
	for name, fams := range orders {
		t.Run(name, func(t *testing.T) {
			_, err := f.a.Reserve(bg, alloc.Request{Owner: owner("web"), Annotations: annotated("nope"), Families: fams})
			if !errors.Is(err, alloc.ErrUnknownPool) {
				t.Fatalf("err = %v, want ErrUnknownPool", err)
			}
		})
	}
}

// TestDryRun: the same answer as a real call, nothing persisted.
func TestDryRun(t *testing.T) {
	for name, fams := range orders {
		for _, pool := range []string{"small", "hashed"} {
			t.Run(name+"/"+pool, func(t *testing.T) {
				f := newFixture(t, alloc.Options{})
				f.reserve(t, "first", pool, fams)
				n := f.store.Len()
				req := alloc.Request{Owner: owner("web"), Annotations: annotated(pool), Families: fams, DryRun: true}
				dry, err := f.a.Reserve(bg, req)
				if err != nil {
					t.Fatal(err)
				}
				if f.store.Len() != n {
					t.Fatalf("dry run wrote %d records", f.store.Len()-n)
				}
				req.DryRun = false
				real, err := f.a.Reserve(bg, req)
				if err != nil {
					t.Fatal(err)
				}
				if fmt.Sprint(dry.IPs) != fmt.Sprint(real.IPs) {
					t.Errorf("dry run said %v, real run gave %v", dry.IPs, real.IPs)
				}
			})
		}
	}
}

func TestConfirmImportsAndFree(t *testing.T) {
	for name, addr := range map[string]string{"IPv4": "10.96.0.12", "IPv6": "fd00:10:96::12"} {
		t.Run(name, func(t *testing.T) {
			f := newFixture(t, alloc.Options{})
			ip := netip.MustParseAddr(addr)
			r, err := f.a.Confirm(bg, ip, alloc.Owner{Namespace: "apps", Name: "legacy", UID: "u"})
			if err != nil || r.State != alloc.StateBound || r.Pool != "small" {
				t.Fatalf("Confirm import = %+v, %v", r, err)
			}
			if _, err := f.a.Reserve(bg, alloc.Request{Owner: owner("web"), Requested: []netip.Addr{ip}}); err == nil {
				t.Error("an imported address was handed to another Service")
			}
			if err := f.a.Free(bg, ip); err != nil {
				t.Fatal(err)
			}
			if _, ok := f.state(t, ip); ok {
				t.Error("still reserved after Free")
			}
			if err := f.a.Free(bg, ip); err != nil {
				t.Errorf("second Free = %v, want no-op", err)
			}
			outside := netip.MustParseAddr(map[string]string{"IPv4": "10.96.9.9", "IPv6": "fd00:10:96::9:9"}[name])
			if r, err := f.a.Confirm(bg, outside, alloc.Owner{Namespace: "apps", Name: "x", UID: "u"}); err != nil || r.IP.IsValid() {
				t.Errorf("Confirm outside pools = %+v, %v; want nothing recorded", r, err)
			}
		})
	}
}

// TestConcurrentReserveMemory: many goroutines on one Allocator never share
// an address (run with -race).
func TestConcurrentReserveMemory(t *testing.T) {
	for name, fams := range orders {
		t.Run(name, func(t *testing.T) {
			f := newFixture(t, alloc.Options{})
			var mu sync.Mutex
			seen := map[netip.Addr]string{}
			var wg sync.WaitGroup
			for w := range 8 {
				wg.Go(func() {
					for i := range 25 {
						n := fmt.Sprintf("w%d-%d", w, i)
						res, err := f.a.Reserve(bg, alloc.Request{Owner: owner(n), Annotations: annotated("hashed"), Families: fams})
						if err != nil {
							t.Error(err)
							return
						}
						mu.Lock()
						for _, ip := range res.IPs {
							if prev, dup := seen[ip]; dup {
								t.Errorf("%s handed to %s and %s", ip, prev, n)
							}
							seen[ip] = n
						}
						mu.Unlock()
					}
				})
			}
			wg.Wait()
			if len(seen) != 200*len(fams) {
				t.Errorf("%d addresses handed out, want %d", len(seen), 200*len(fams))
			}
		})
	}
}

func TestApplyConfig(t *testing.T) {
	for name, fams := range orders {
		t.Run(name, func(t *testing.T) {
			f := newFixture(t, alloc.Options{})
			ips := f.reserve(t, "web", "small", fams)
			c, err := alloc.ParseConfig([]byte(strings.Replace(poolsDoc, `"10.96.0.10-10.96.0.13"`, `"10.96.0.11-10.96.0.13"`, 1)))
			if err != nil {
				t.Fatal(err)
			}
			c2, _ := alloc.ParseConfig([]byte(strings.Replace(strings.Replace(poolsDoc, `"10.96.0.10-10.96.0.13"`, `"10.96.0.10-10.96.0.19"`, 1),
				`"fd00:10:96::10-fd00:10:96::13"`, `"fd00:10:96::10-fd00:10:96::19"`, 1)))
			shrinks := false
			for _, ip := range ips {
				shrinks = shrinks || ip.Is4()
			}
			err = f.a.ApplyConfig(bg, c, cidrs)
			if shrinks && err == nil {
				t.Fatal("ApplyConfig dropped 10.96.0.10, which is in use")
			}
			if !shrinks && err != nil {
				t.Fatalf("ApplyConfig of an edit that keeps every used address: %v", err)
			}
			if shrinks && f.a.Pools() != f.pools {
				t.Error("a refused config replaced the pools in force")
			}
			if err := f.a.ApplyConfig(bg, c2, cidrs); err != nil {
				t.Fatalf("growing the pool: %v", err)
			}
			if p, _ := f.a.Pools().Get("small"); p.Addresses.Size(v4).Int64() != 10 {
				t.Errorf("grown pool not in force: %v", p.Addresses.Ranges(v4))
			}
		})
	}
}

// TestConfirmExternalOverridesALaggingCache: a requested address the
// caches still show held (a Service deleted a moment ago) is re-checked
// against the source of truth; a confirmation error keeps the denial.
func TestConfirmExternalOverridesALaggingCache(t *testing.T) {
	ip := netip.MustParseAddr("10.96.9.9") // outside every pool
	truth := map[netip.Addr]string{}
	var fail error
	f := newFixture(t, alloc.Options{ConfirmExternal: func(_ context.Context, a netip.Addr) (string, bool, error) {
		if fail != nil {
			return "", false, fail
		}
		o, ok := truth[a]
		return o, ok, nil
	}})
	f.live[ip] = "old/deleted" // the cache lags the delete
	req := alloc.Request{Owner: owner("new"), Requested: []netip.Addr{ip}}
	if _, err := f.a.Reserve(bg, req); err != nil {
		t.Fatalf("a freed address was refused on a stale cache: %v", err)
	}
	truth[ip] = "other/holder" // really held
	var held *alloc.ErrHeld
	if _, err := f.a.Reserve(bg, req); !errors.As(err, &held) || held.Owner != "other/holder" {
		t.Fatalf("err = %v, want held by other/holder (the live answer)", err)
	}
	delete(truth, ip)
	fail = errors.New("apiserver unreachable")
	if _, err := f.a.Reserve(bg, req); !errors.As(err, &held) || held.Owner != "old/deleted" {
		t.Fatalf("err = %v, want the cache's denial when the confirmation fails", err)
	}
}

// TestStickyAddressStillAllocatedUpstreamIsNotHandedBack: the apiserver
// refuses to allocate an address it still records (an IPAddress object
// leaked for the deleted Service), so a re-created Service gets another
// one; a cache that merely lags the delete keeps stickiness.
func TestStickyAddressStillAllocatedUpstreamIsNotHandedBack(t *testing.T) {
	upstream := map[netip.Addr]bool{}
	f := newFixture(t, alloc.Options{Retention: time.Hour, ConfirmExternal: func(_ context.Context, a netip.Addr) (string, bool, error) {
		return "apps/web", upstream[a], nil
	}})
	ips := f.reserve(t, "web", "small", []corev1.IPFamily{corev1.IPv4Protocol})
	s := ips[0]
	if _, err := f.a.Confirm(bg, s, alloc.Owner{Namespace: "apps", Name: "web", UID: "u1"}); err != nil {
		t.Fatal(err)
	}
	if err := f.a.Release(bg, s, alloc.Owner{Namespace: "apps", Name: "web", UID: "u1"}); err != nil {
		t.Fatal(err)
	}
	f.live[s] = "apps/web" // the caches still show it held by the name

	// Only the cache lags: the sticky address comes back.
	if got := f.reserve(t, "web", "small", []corev1.IPFamily{corev1.IPv4Protocol}); got[0] != s {
		t.Fatalf("re-create behind a lagging cache got %s, want the sticky %s", got[0], s)
	}
	// Back to sticky, now with the apiserver still recording the address.
	if err := f.a.Release(bg, s, alloc.Owner{Namespace: "apps", Name: "web"}); err != nil {
		t.Fatal(err)
	}
	upstream[s] = true
	got := f.reserve(t, "web", "small", []corev1.IPFamily{corev1.IPv4Protocol})
	if got[0] == s {
		t.Fatalf("re-create got %s, which the apiserver still records as allocated", s)
	}
	if r, ok := f.state(t, s); !ok || r.State != alloc.StateSticky {
		t.Errorf("the leaked address' reservation is %+v (present %v), want it left sticky", r, ok)
	}
}

const accessDoc = `apiVersion: dualstack-webhook.io/v1alpha1
kind: PoolConfig
defaultPool: general
pools:
- name: general
  addresses: {ipv4: ["10.96.0.10-10.96.0.19"], ipv6: ["fd00:10:96::10-fd00:10:96::19"]}
- name: payments
  namespaces: [payments]
  namespaceSelector: {matchLabels: {team: payments}}
  addresses: {ipv4: ["10.96.0.200-10.96.0.250"], ipv6: ["fd00:10:96::200-fd00:10:96::250"]}
- name: shared
  namespaces: [infra]
  allowExplicitFrom: any
  addresses: {ipv4: ["10.96.0.100-10.96.0.110"], ipv6: ["fd00:10:96::100-fd00:10:96::110"]}
`

// TestPoolAccess: a restricted pool serves only its Services, whether it is
// named by annotation or one of its addresses is asked for; the default pool
// stays open, allowExplicitFrom any opens explicit requests, a holder keeps
// its address, and a denial never writes a record or names the holder.
func TestPoolAccess(t *testing.T) {
	c, err := alloc.ParseConfig([]byte(accessDoc))
	if err != nil {
		t.Fatal(err)
	}
	pools, err := alloc.Compile(c, cidrs)
	if err != nil {
		t.Fatal(err)
	}
	// first[f] is the first address of a pool in family f.
	first := map[string]map[corev1.IPFamily]string{
		"payments": {v4: "10.96.0.200", v6: "fd00:10:96::200"},
		"shared":   {v4: "10.96.0.100", v6: "fd00:10:96::100"},
		"general":  {v4: "10.96.0.10", v6: "fd00:10:96::10"},
	}
	onPayments := map[string]string{alloc.PoolAnnotation: "payments"}
	shop := alloc.Owner{Namespace: "shop", Name: "web"}
	for oname, fams := range orders {
		requested := func(pool string) []netip.Addr {
			var out []netip.Addr
			for _, f := range fams {
				out = append(out, netip.MustParseAddr(first[pool][f]))
			}
			return out
		}
		t.Run(oname, func(t *testing.T) {
			newAlloc := func() (*alloc.Allocator, *memory.Store) {
				st := memory.New()
				a, err := alloc.New(st, pools, alloc.Options{})
				if err != nil {
					t.Fatal(err)
				}
				return a, st
			}
			denied := func(t *testing.T, st *memory.Store, err error, parts ...string) {
				t.Helper()
				var access *alloc.ErrPoolAccess
				if !errors.As(err, &access) {
					t.Fatalf("err = %v, want *alloc.ErrPoolAccess", err)
				}
				for _, p := range parts {
					if !strings.Contains(err.Error(), p) {
						t.Errorf("error %q does not say %q", err, p)
					}
				}
				if st.Len() != 0 {
					t.Errorf("a denied request left %d records", st.Len())
				}
			}

			t.Run("annotation from another namespace is denied", func(t *testing.T) {
				a, st := newAlloc()
				_, err := a.Reserve(bg, alloc.Request{Owner: shop, Annotations: onPayments, Families: fams})
				denied(t, st, err, `pool "payments" serves only namespaces [payments] or namespaces matching team=payments; shop/web is not one of them`)
			})
			t.Run("annotation from a listed namespace", func(t *testing.T) {
				a, _ := newAlloc()
				res, err := a.Reserve(bg, alloc.Request{Owner: alloc.Owner{Namespace: "payments", Name: "api"}, Annotations: onPayments, Families: fams})
				if err != nil || fmt.Sprint(res.IPs) != fmt.Sprint(requested("payments")) {
					t.Fatalf("Reserve = %v, %v; want %v", res.IPs, err, requested("payments"))
				}
			})
			t.Run("annotation from a namespace matching the selector", func(t *testing.T) {
				a, _ := newAlloc()
				res, err := a.Reserve(bg, alloc.Request{Owner: alloc.Owner{Namespace: "billing", Name: "api"}, NamespaceLabels: map[string]string{"team": "payments"}, Annotations: onPayments, Families: fams})
				if err != nil || res.Pool != "payments" {
					t.Fatalf("Reserve = %+v, %v; want pool payments", res, err)
				}
			})
			t.Run("default pool is open", func(t *testing.T) {
				a, _ := newAlloc()
				res, err := a.Reserve(bg, alloc.Request{Owner: shop, Annotations: map[string]string{alloc.PoolAnnotation: "general"}, Families: fams})
				if err != nil || fmt.Sprint(res.IPs) != fmt.Sprint(requested("general")) {
					t.Fatalf("Reserve = %v, %v; want %v", res.IPs, err, requested("general"))
				}
			})
			t.Run("explicit address from another namespace is denied", func(t *testing.T) {
				a, st := newAlloc()
				want := requested("payments")
				_, err := a.Reserve(bg, alloc.Request{Owner: shop, Requested: want})
				denied(t, st, err, fmt.Sprintf(`IP %s belongs to pool "payments", which serves only namespaces [payments] or namespaces matching team=payments; shop/web is not one of them`, want[0]))
				denied(t, st, a.Check(bg, want[len(want)-1], alloc.Request{Owner: shop}), "shop/web is not one of them")
			})
			t.Run("explicit address held by the pool's Service: the outsider learns no holder", func(t *testing.T) {
				a, st := newAlloc()
				if _, err := a.Reserve(bg, alloc.Request{Owner: alloc.Owner{Namespace: "payments", Name: "api"}, Families: fams}); err != nil {
					t.Fatal(err)
				}
				n := st.Len()
				_, err := a.Reserve(bg, alloc.Request{Owner: shop, Requested: requested("payments")})
				var access *alloc.ErrPoolAccess
				if !errors.As(err, &access) || strings.Contains(err.Error(), "payments/api") || st.Len() != n {
					t.Fatalf("err = %v (records %d, want %d): want *ErrPoolAccess without the holder's name", err, st.Len(), n)
				}
			})
			t.Run("allowExplicitFrom any admits explicit requests, not the annotation", func(t *testing.T) {
				a, st := newAlloc()
				if _, err := a.Reserve(bg, alloc.Request{Owner: shop, Requested: requested("shared")}); err != nil {
					t.Fatalf("explicit request of a shared address: %v", err)
				}
				if err := a.Check(bg, requested("shared")[0], alloc.Request{Owner: shop}); err != nil {
					t.Fatalf("Check: %v", err)
				}
				n := st.Len()
				_, err := a.Reserve(bg, alloc.Request{Owner: alloc.Owner{Namespace: "shop", Name: "other"}, Annotations: map[string]string{alloc.PoolAnnotation: "shared"}, Families: fams})
				var access *alloc.ErrPoolAccess
				if !errors.As(err, &access) || st.Len() != n {
					t.Fatalf("annotation of the shared pool from shop: %v, want *ErrPoolAccess", err)
				}
			})
			t.Run("a holder outside the pool keeps its address", func(t *testing.T) {
				// shop/web was created while the webhook was down; the
				// reconciler recorded what the live Service holds.
				a, _ := newAlloc()
				for _, ip := range requested("payments") {
					if _, err := a.Confirm(bg, ip, alloc.Owner{Namespace: "shop", Name: "web", UID: "u1"}); err != nil {
						t.Fatal(err)
					}
				}
				if _, err := a.Reserve(bg, alloc.Request{Owner: shop, Requested: requested("payments")}); err != nil {
					t.Fatalf("UPDATE of the holder: %v", err)
				}
				if err := a.Check(bg, requested("payments")[0], alloc.Request{Owner: shop}); err != nil {
					t.Fatalf("Check of the holder: %v", err)
				}
			})
		})
	}
}

// staleStore is another replica's view: Get answers from a copy taken
// before a release, GetLive from the store itself.
// staleAllocator is an allocator over the test pools on an empty staleStore.
func staleAllocator(t *testing.T, opts alloc.Options) (*staleStore, *alloc.Allocator) {
	t.Helper()
	st := &staleStore{Store: memory.New(), stale: map[netip.Addr]alloc.Reservation{}}
	a, err := alloc.New(st, compiledPools(t), opts)
	if err != nil {
		t.Fatal(err)
	}
	return st, a
}

type staleStore struct {
	*memory.Store
	stale   map[netip.Addr]alloc.Reservation
	byOwner func(key string) []alloc.Reservation // when set, ByOwner's stale answer
}

func (s *staleStore) ByOwner(ctx context.Context, key string) ([]alloc.Reservation, error) {
	if s.byOwner != nil {
		return s.byOwner(key), nil
	}
	return s.Store.ByOwner(ctx, key)
}

func (s *staleStore) Get(ctx context.Context, ip netip.Addr) (alloc.Reservation, bool, error) {
	if r, ok := s.stale[ip]; ok {
		return r, true, nil
	}
	return s.Store.Get(ctx, ip)
}

func (s *staleStore) GetLive(ctx context.Context, ip netip.Addr) (alloc.Reservation, bool, error) {
	return s.Store.Get(ctx, ip)
}

// cacheOnly hides GetLive: a store that cannot confirm.
type cacheOnly struct{ alloc.Store }

// TestRequestedAddressReleasedElsewhereIsGranted: a cache that has not seen
// another replica free an address (the soak: a downgraded secondary freed
// by the leader, asked for 54 ms later and refused by /validate as "held
// by" its old owner) does not refuse it when the store can read live; a
// store that cannot, or an address still held, is refused as before.
func TestRequestedAddressReleasedElsewhereIsGranted(t *testing.T) {
	for _, addr := range []string{"10.96.0.10", "fd00:10:96::10"} {
		t.Run(addr, func(t *testing.T) {
			ip := netip.MustParseAddr(addr)
			st, a := staleAllocator(t, alloc.Options{})
			old := alloc.Owner{Namespace: "apps", Name: "old"}
			if _, err := a.Reserve(bg, alloc.Request{Owner: old, Requested: []netip.Addr{ip}}); err != nil {
				t.Fatal(err)
			}
			bound, err := a.Confirm(bg, ip, alloc.Owner{Namespace: "apps", Name: "old", UID: "u1"})
			if err != nil || bound.State != alloc.StateBound {
				t.Fatalf("confirm: %+v, %v", bound, err)
			}
			// Still held: refused, with or without the live read.
			var held *alloc.ErrHeld
			if err := a.Check(bg, ip, alloc.Request{Owner: owner("web")}); !errors.As(err, &held) {
				t.Fatalf("held address: Check = %v, want ErrHeld", err)
			}
			st.stale[ip] = bound
			if err := st.Store.Delete(bg, bound); err != nil { // freed by the leader
				t.Fatal(err)
			}
			blind, err := alloc.New(cacheOnly{st}, compiledPools(t), alloc.Options{})
			if err != nil {
				t.Fatal(err)
			}
			if err := blind.Check(bg, ip, alloc.Request{Owner: owner("web")}); !errors.As(err, &held) {
				t.Fatalf("without a live read: Check = %v, want the cached ErrHeld", err)
			}
			if err := a.Check(bg, ip, alloc.Request{Owner: owner("web")}); err != nil {
				t.Fatalf("Check of an address freed elsewhere = %v, want granted", err)
			}
			if _, err := a.Reserve(bg, alloc.Request{Owner: owner("web"), Requested: []netip.Addr{ip}}); err != nil {
				t.Fatalf("Reserve of an address freed elsewhere = %v, want granted", err)
			}
			if r, ok, _ := st.Store.Get(bg, ip); !ok || r.Owner.Name != "web" || r.State != alloc.StatePending {
				t.Fatalf("reservation after Reserve: %+v (present %v), want pending for apps/web", r, ok)
			}
		})
	}
}

// TestStaleOwnClaimIsNotHandedBack: a replica's cache still shows this
// Service's pending claim, but it was collected and the address bound to
// another Service (the 15-min soak: a create pinned an address /validate
// then found bound elsewhere). The claim is re-read before it is handed
// back, and another address is allocated.
func TestStaleOwnClaimIsNotHandedBack(t *testing.T) {
	for name, fams := range orders {
		t.Run(name, func(t *testing.T) {
			st, a := staleAllocator(t, alloc.Options{})
			web := owner("web")
			first, err := a.Reserve(bg, alloc.Request{Owner: web, Families: fams})
			if err != nil {
				t.Fatal(err)
			}
			// The leader collects the claims and another Service gets them.
			for _, ip := range first.IPs {
				r, _, _ := st.Store.Get(bg, ip)
				if err := st.Store.Delete(bg, r); err != nil {
					t.Fatal(err)
				}
				if _, err := a.Confirm(bg, ip, alloc.Owner{Namespace: "apps", Name: "other", UID: "u2"}); err != nil {
					t.Fatal(err)
				}
				st.stale[ip] = r // what the lagging cache still shows
			}
			// The stale cache's ByOwner still lists web's claims.
			st.byOwner = func(key string) []alloc.Reservation {
				var out []alloc.Reservation
				for _, r := range st.stale {
					if r.Owner.Key() == key {
						out = append(out, r)
					}
				}
				return out
			}
			again, err := a.Reserve(bg, alloc.Request{Owner: web, Families: fams})
			if err != nil {
				t.Fatal(err)
			}
			for i, ip := range again.IPs {
				if ip == first.IPs[i] {
					t.Errorf("%s handed back to apps/web, but it is bound to apps/other", ip)
				}
			}
		})
	}
}

// TestBoundClaimHandedBackIsMadePending: an admission that gets back an
// address still bound to its Service (upgraded again before the downgrade
// was processed) re-claims it with a write, pending for a fresh grace, so
// that the reconciler's free of the downgraded address, judged on the bound
// record, conflicts instead of deleting a claim in use. The write starts
// from the live record: a cache showing an older version of the bound
// record costs no conflict. Both the webhook's pick and a requested address.
func TestBoundClaimHandedBackIsMadePending(t *testing.T) {
	for name, fams := range orders {
		for _, requested := range []bool{false, true} {
			t.Run(fmt.Sprintf("%s/requested=%v", name, requested), func(t *testing.T) {
				clk := clocktesting.NewFakeClock(time.Date(2026, 12, 4, 13, 0, 0, 0, time.UTC))
				st, a := staleAllocator(t, alloc.Options{Clock: clk, PendingGrace: time.Minute})
				web := owner("web")
				first, err := a.Reserve(bg, alloc.Request{Owner: web, Families: fams})
				if err != nil {
					t.Fatal(err)
				}
				var cached []alloc.Reservation
				for _, ip := range first.IPs {
					old, err := a.Confirm(bg, ip, alloc.Owner{Namespace: "apps", Name: "web", UID: "u1"})
					if err != nil {
						t.Fatal(err)
					}
					// A later write the cache has not seen yet.
					if _, err := a.Confirm(bg, ip, alloc.Owner{Namespace: "apps", Name: "web", UID: "u2"}); err != nil {
						t.Fatal(err)
					}
					st.stale[ip] = old
					cached = append(cached, old)
				}
				st.byOwner = func(string) []alloc.Reservation { return cached }

				clk.Step(10 * time.Second)
				req := alloc.Request{Owner: web, Families: fams}
				if requested {
					req = alloc.Request{Owner: web, Requested: first.IPs}
				}
				if _, err := a.Reserve(bg, req); err != nil {
					t.Fatalf("Reserve = %v", err)
				}
				for _, ip := range first.IPs {
					r, ok, _ := st.Store.Get(bg, ip)
					if !ok || r.State != alloc.StatePending || r.Owner.Name != "web" || !r.Expires.Equal(clk.Now().Add(time.Minute)) {
						t.Errorf("%s after the hand-back: %+v (present %v), want pending for apps/web until %s", ip, r, ok, clk.Now().Add(time.Minute))
					}
				}
				// Dry run (the /validate path) writes nothing.
				before, _, _ := st.Store.Get(bg, first.IPs[0])
				if _, err := a.Reserve(bg, alloc.Request{Owner: web, Requested: first.IPs[:1], DryRun: true}); err != nil {
					t.Fatal(err)
				}
				if after, _, _ := st.Store.Get(bg, first.IPs[0]); after.Version != before.Version {
					t.Errorf("dry run wrote %s: version %s → %s", first.IPs[0], before.Version, after.Version)
				}
			})
		}
	}
}
