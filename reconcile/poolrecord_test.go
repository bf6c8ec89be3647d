package reconcile

import (
	"context"
	"errors"
	"net/netip"
	"strings"
	"sync"
	"testing"

	"github.com/dualstack-webhook/dualstack-webhook/alloc"
	"github.com/dualstack-webhook/dualstack-webhook/alloc/memory"
	"github.com/prometheus/client_golang/prometheus"
	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/apimachinery/pkg/runtime/schema"
	"k8s.io/client-go/kubernetes/fake"
	corev1listers "k8s.io/client-go/listers/core/v1"
	k8stesting "k8s.io/client-go/testing"
	"k8s.io/client-go/tools/cache"
	"k8s.io/client-go/tools/record"
)

// memRecord is a PoolRecord in memory that counts its writes.
type memRecord struct {
	mu     sync.Mutex
	doc    string
	ok     bool
	writes int
}

func (r *memRecord) Get(context.Context) (string, bool, error) {
	r.mu.Lock()
	defer r.mu.Unlock()
	return r.doc, r.ok, nil
}

func (r *memRecord) Put(_ context.Context, doc string) error {
	r.mu.Lock()
	defer r.mu.Unlock()
	if r.ok && r.doc == doc {
		return nil
	}
	r.doc, r.ok = doc, true
	r.writes++
	return nil
}

// TestPoolWatcherStartsFromTheRecord: a replica started while the pools
// ConfigMap is absent or garbage pins from the last document applied from
// it (recorded by the replicas that applied it), flags it stale and says
// why once; without a record it starts as before (static band).
func TestPoolWatcherStartsFromTheRecord(t *testing.T) {
	for name, c := range poolShapes {
		t.Run(name, func(t *testing.T) {
			cidrs, err := alloc.ParseServiceCIDRs(c.cidrs)
			if err != nil {
				t.Fatal(err)
			}
			ctx := context.Background()
			doc := strings.Replace(poolsDoc, `{ipv4: ["10.96.0.16/28"]}`, c.pool, 1)
			cms := cache.NewIndexer(cache.MetaNamespaceKeyFunc, cache.Indexers{cache.NamespaceIndex: cache.MetaNamespaceIndexFunc})
			cm := &corev1.ConfigMap{ObjectMeta: metav1.ObjectMeta{Namespace: "dsw", Name: "pools"}}
			set := func(doc string) {
				cm = cm.DeepCopy()
				cm.Data = map[string]string{alloc.ConfigMapKey: doc}
				_ = cms.Update(cm)
			}
			rec := &memRecord{}
			type replica struct {
				w      *PoolWatcher
				a      *alloc.Allocator
				m      *PoolMetrics
				events *record.FakeRecorder
			}
			// start is a replica starting now, with its own metrics and
			// Events, on a store holding nothing.
			start := func(r PoolRecord) replica {
				t.Helper()
				m, err := NewPoolMetrics(prometheus.NewRegistry())
				if err != nil {
					t.Fatal(err)
				}
				ev := record.NewFakeRecorder(10)
				w := &PoolWatcher{StaticCIDRs: cidrs, ConfigMaps: corev1listers.NewConfigMapLister(cms), Namespace: "dsw", Name: "pools",
					Recorder: ev, Metrics: m, Record: r}
				pools, err := w.Initial(ctx)
				if err != nil {
					t.Fatal(err)
				}
				a, err := alloc.New(memory.New(), pools, alloc.Options{})
				if err != nil {
					t.Fatal(err)
				}
				return replica{w, a, m, ev}
			}
			fam := alloc.FamilyOf(cidrs[0].Addr())
			first := func(r replica) string {
				t.Helper()
				res, err := r.a.Reserve(ctx, alloc.Request{Owner: alloc.Owner{Namespace: "d", Name: "s"}, Families: []corev1.IPFamily{fam}})
				if err != nil {
					t.Fatal(err)
				}
				return res.IPs[0].String()
			}
			// want checks a started replica: its pools, stale flag, the
			// rejection counted and published (reason "" for none).
			want := func(what string, r replica, pool string, stale float64, reason string) {
				t.Helper()
				if _, ok := r.a.Pools().Get(pool); !ok {
					t.Errorf("%s: pools in force %v, want %s", what, r.a.Pools().List, pool)
				}
				if got := metricValue(t, r.m.Stale); got != stale {
					t.Errorf("%s: pools_stale = %g, want %g", what, got, stale)
				}
				events := 0
				if reason != "" {
					events = 1
					if got := metricValue(t, r.m.Rejected.WithLabelValues(reason)); got != 1 {
						t.Errorf("%s: pools_rejected_total{reason=%q} = %g, want 1", what, reason, got)
					}
				}
				for i := range events {
					select {
					case e := <-r.events.Events:
						if !strings.HasPrefix(e, "Warning "+ReasonPoolsNotApplied+" pools not applied ("+reason+")") {
							t.Errorf("%s: event %q", what, e)
						}
					default:
						t.Errorf("%s: Event %d missing", what, i+1)
					}
				}
				select {
				case e := <-r.events.Events:
					t.Errorf("%s: unexpected Event %q", what, e)
				default:
				}
			}

			// No ConfigMap, no record (a fresh install): the static band,
			// nothing stale, nothing recorded.
			fresh := start(rec)
			want("fresh install", fresh, alloc.StaticBandPool, 0, "")
			if rec.ok {
				t.Fatalf("the absent ConfigMap was recorded: %q", rec.doc)
			}
			// The ConfigMap applied by a running replica: recorded once,
			// however often the watcher runs again.
			set(doc)
			for range 3 {
				if err := fresh.w.Apply(ctx, fresh.a); err != nil {
					t.Fatal(err)
				}
			}
			if !rec.ok || rec.doc != doc || rec.writes != 1 {
				t.Fatalf("record %q (ok %v, %d writes), want the applied document written once", rec.doc, rec.ok, rec.writes)
			}
			// A replica started while it is valid: applied, nothing written.
			valid := start(rec)
			want("started with a valid ConfigMap", valid, "web", 0, "")
			if got := first(valid); got != c.first {
				t.Fatalf("started with a valid ConfigMap: %s, want %s", got, c.first)
			}

			// Deleted, then a replica starts: the recorded pools, stale,
			// reported once however often the watcher runs.
			_ = cms.Delete(cm)
			del := start(rec)
			for range 3 {
				if err := del.w.Apply(ctx, del.a); !errors.Is(err, ErrPoolsDeleted) {
					t.Fatalf("started after the delete: Apply = %v, want ErrPoolsDeleted", err)
				}
			}
			want("started after the delete", del, "web", 1, "deleted")
			if got := first(del); got != c.first {
				t.Errorf("started after the delete: %s, want %s from the recorded pool", got, c.first)
			}

			// Garbage, then a replica starts: the same, reason invalid.
			set("{{{ not a pools document")
			bad := start(rec)
			for range 2 {
				if err := bad.w.Apply(ctx, bad.a); err == nil {
					t.Fatal("garbage applied")
				}
			}
			want("started with garbage", bad, "web", 1, "invalid")
			if got := first(bad); got != c.first {
				t.Errorf("started with garbage: %s, want %s from the recorded pool", got, c.first)
			}
			if rec.doc != doc || rec.writes != 1 {
				t.Errorf("garbage or absence touched the record: %q, %d writes", rec.doc, rec.writes)
			}
			// Fixed: the replica that started from the record applies
			// it, no longer stale, and writes nothing (same document).
			set(doc)
			if err := bad.w.Apply(ctx, bad.a); err != nil {
				t.Fatal(err)
			}
			want("fixed", bad, "web", 0, "")
			if rec.writes != 1 {
				t.Errorf("the same document written again: %d writes", rec.writes)
			}

			// Garbage and no record: as before, the static band, stale.
			set("{{{ not a pools document")
			norec := start(&memRecord{})
			want("garbage without a record", norec, alloc.StaticBandPool, 1, "invalid")

			// Back to the static band on purpose: a document without
			// pools, applied and recorded; deleted afterwards, a new
			// replica starts on the static band (stale: the ConfigMap is
			// gone, but that is what was last applied).
			empty := "apiVersion: dualstack-webhook.io/v1alpha1\nkind: PoolConfig\n"
			set(empty)
			norec.w.Record = rec // (a replica holding no address: nothing to orphan)
			if err := norec.w.Apply(ctx, norec.a); err != nil {
				t.Fatalf("the document without pools: %v", err)
			}
			if rec.doc != empty {
				t.Fatalf("record %q, want the document without pools", rec.doc)
			}
			_ = cms.Delete(cm)
			back := start(rec)
			want("started after a return to the static band and a delete", back, alloc.StaticBandPool, 1, "deleted")
			if _, ok := back.a.Pools().Get("web"); ok {
				t.Error("pool web came back from an old record")
			}
		})
	}
}

// TestConfigMapRecord: the record ConfigMap is created once, rewritten only
// when the document differs, over the version read (a conflict re-reads
// and, when the other writer wrote the same document, stops), and an
// unusable record is ignored at start.
func TestConfigMapRecord(t *testing.T) {
	ctx := context.Background()
	cs := fake.NewClientset()
	r := &ConfigMapRecord{Client: cs.CoreV1(), Namespace: "dsw", Pools: "pools"}
	if _, ok, err := r.Get(ctx); ok || err != nil {
		t.Fatalf("Get before any write: ok %v err %v", ok, err)
	}
	writes := func() int {
		n := 0
		for _, a := range cs.Actions() {
			if a.GetVerb() == "create" || a.GetVerb() == "update" {
				n++
			}
		}
		return n
	}
	for range 2 {
		if err := r.Put(ctx, poolsDoc); err != nil {
			t.Fatal(err)
		}
	}
	if n := writes(); n != 1 {
		t.Errorf("the same document twice: %d writes, want 1", n)
	}
	cm, err := cs.CoreV1().ConfigMaps("dsw").Get(ctx, "pools-applied", metav1.GetOptions{})
	if err != nil {
		t.Fatal(err)
	}
	if cm.Data[alloc.ConfigMapKey] != poolsDoc || cm.Annotations[AnnotationRecordOf] != "pools" || cm.Labels["dualstack-webhook.io/family"] != "" || cm.Labels["dualstack-webhook.io/pools"] != "" {
		t.Errorf("record %+v", cm)
	}

	// Another replica writes between our read and our write: our update
	// conflicts; re-read, it already holds what we want, nothing more.
	other := strings.Replace(poolsDoc, "10.96.0.16/28", "10.96.0.32/28", 1)
	raced := false
	cs.PrependReactor("update", "configmaps", func(a k8stesting.Action) (bool, runtime.Object, error) {
		if raced {
			return false, nil, nil
		}
		raced = true
		cur, _ := cs.Tracker().Get(schema.GroupVersionResource{Version: "v1", Resource: "configmaps"}, "dsw", "pools-applied")
		cur = cur.DeepCopyObject()
		cur.(*corev1.ConfigMap).Data[alloc.ConfigMapKey] = other
		_ = cs.Tracker().Update(schema.GroupVersionResource{Version: "v1", Resource: "configmaps"}, cur, "dsw")
		return true, nil, apierrors.NewConflict(schema.GroupResource{Resource: "configmaps"}, "pools-applied", errors.New("the object has been modified"))
	})
	before := writes()
	if err := r.Put(ctx, other); err != nil {
		t.Fatalf("Put after a conflict: %v", err)
	}
	if n := writes() - before; n != 1 {
		t.Errorf("after the conflict: %d more writes, want 1 (the conflicting one, then a read showing it done)", n)
	}
	if doc, ok, err := r.Get(ctx); !ok || err != nil || doc != other {
		t.Errorf("record after the race: %q ok %v err %v", doc, ok, err)
	}

	// A record that does not parse is ignored at start: the static band.
	cm, _ = cs.CoreV1().ConfigMaps("dsw").Get(ctx, "pools-applied", metav1.GetOptions{})
	cm.Data[alloc.ConfigMapKey] = "{{{"
	if _, err := cs.CoreV1().ConfigMaps("dsw").Update(ctx, cm, metav1.UpdateOptions{}); err != nil {
		t.Fatal(err)
	}
	cms := cache.NewIndexer(cache.MetaNamespaceKeyFunc, cache.Indexers{cache.NamespaceIndex: cache.MetaNamespaceIndexFunc})
	w := &PoolWatcher{StaticCIDRs: []netip.Prefix{netip.MustParsePrefix("10.96.0.0/16")}, ConfigMaps: corev1listers.NewConfigMapLister(cms),
		Namespace: "dsw", Name: "pools", Record: r}
	p, err := w.Initial(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if _, ok := p.Get(alloc.StaticBandPool); !ok {
		t.Errorf("an unusable record: pools %v, want the static band", p.List)
	}
}
