package reconcile

import (
	"testing"

	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/api/equality"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	"k8s.io/apimachinery/pkg/labels"
	"k8s.io/client-go/tools/cache"
)

// TestSlimServiceListers: a cache of SlimServices reads back as Services
// with what was kept, per family layout; the labels lister matches
// selectors, the reconciler's lister leaves labels out and refuses a
// selector it could not honour.
func TestSlimServiceListers(t *testing.T) {
	idx := cache.NewIndexer(cache.MetaNamespaceKeyFunc, cache.Indexers{})
	want := map[string]*corev1.Service{}
	for name, ips := range map[string][]string{
		"v4": {"10.96.0.10"}, "v6": {"fd00:10:96::10"},
		"v4v6": {"10.96.0.11", "fd00:10:96::11"}, "v6v4": {"fd00:10:96::12", "10.96.0.12"},
	} {
		s := svc("demo", name, "u-"+name, ips...)
		s.ResourceVersion = "5"
		s.Labels = map[string]string{"family": name, "tier": "web"}
		want[name] = s.DeepCopy()
		s.Annotations = map[string]string{"a": "dropped"}
		s.Spec.Ports = []corev1.ServicePort{{Port: 80}}
		if err := idx.Add(NewSlimService(s)); err != nil {
			t.Fatal(err)
		}
	}
	// A plain Service in the same cache reads as it is.
	plain := svc("other", "plain", "u-p", "10.96.0.20")
	if err := idx.Add(plain); err != nil {
		t.Fatal(err)
	}

	withLabels := NewSlimServiceLister(idx, true)
	for name, w := range want {
		got, err := withLabels.Services("demo").Get(name)
		if err != nil || !equality.Semantic.DeepEqual(got, w) {
			t.Errorf("Get(demo/%s) = %+v, %v; want %+v", name, got, err, w)
		}
	}
	if _, err := withLabels.Services("other").Get("v4"); !apierrors.IsNotFound(err) {
		t.Errorf("Get(other/v4) = %v, want NotFound", err)
	}
	if got, err := withLabels.Services("other").Get("plain"); err != nil || got != plain {
		t.Errorf("Get(other/plain) = %+v, %v", got, err)
	}
	sel := labels.SelectorFromSet(labels.Set{"family": "v6v4"})
	if l, err := withLabels.List(sel); err != nil || len(l) != 1 || l[0].Name != "v6v4" {
		t.Errorf("List(%s) = %v, %v", sel, l, err)
	}
	if l, err := withLabels.Services("demo").List(labels.Everything()); err != nil || len(l) != 4 {
		t.Errorf("Services(demo).List = %d Services, %v; want 4", len(l), err)
	}

	bare := NewSlimServiceLister(idx, false)
	l, err := bare.List(labels.Everything())
	if err != nil || len(l) != 5 {
		t.Fatalf("List without labels = %d Services, %v; want 5", len(l), err)
	}
	for _, s := range l {
		if s.Namespace == "demo" && s.Labels != nil {
			t.Errorf("%s listed with labels %v by the lister without", s.Name, s.Labels)
		}
		if w := want[s.Name]; w != nil && (!equality.Semantic.DeepEqual(s.Spec, w.Spec) || s.UID != w.UID || s.ResourceVersion != "5") {
			t.Errorf("%s listed as %+v, want %+v", s.Name, s, w)
		}
	}
	if _, err := bare.List(sel); err == nil {
		t.Error("the lister without labels took a label selector")
	}
}

// TestServiceEventsOnSlimServices: the reconciler's handler reads
// SlimServices (what the informer caches): an update that keeps what the
// Service holds touches nothing, a change of its addresses or its UID does.
func TestServiceEventsOnSlimServices(t *testing.T) {
	r := &Reconciler{dirty: map[string]struct{}{}, touched: make(chan struct{}, 1)}
	r.active.Store(true)
	h := ServiceEvents(r)
	a := svc("demo", "web", "u1", "fd00:10:96::5", "10.96.0.5")
	relabelled := a.DeepCopy()
	relabelled.Labels = map[string]string{"tier": "api"}
	moved := svc("demo", "web", "u1", "fd00:10:96::6", "10.96.0.5")
	recreated := svc("demo", "web", "u2", "fd00:10:96::5", "10.96.0.5")
	for _, tc := range []struct {
		name  string
		cur   *corev1.Service
		touch bool
	}{{"labels only", relabelled, false}, {"address moved", moved, true}, {"re-created", recreated, true}} {
		h.OnUpdate(NewSlimService(a), NewSlimService(tc.cur))
		if got := len(r.takeDirty()) == 1; got != tc.touch {
			t.Errorf("%s: touched %v, want %v", tc.name, got, tc.touch)
		}
	}
}
