package reconcile

import (
	"errors"

	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/labels"
	"k8s.io/apimachinery/pkg/runtime"
	"k8s.io/apimachinery/pkg/runtime/schema"
	"k8s.io/apimachinery/pkg/types"
	corev1listers "k8s.io/client-go/listers/core/v1"
	"k8s.io/client-go/tools/cache"
)

// SlimService is what the Service informer caches of a Service: its
// identity, labels (pool serviceSelectors), type and clusterIPs. Every
// replica caches every Service of the cluster, and a corev1.Service is a
// 640-byte object (its labels a map of ~300 bytes more) of which these
// fields are a fifth. Read it back with Service or through
// NewSlimServiceLister. Nothing modifies one.
type SlimService struct {
	name, namespace, rv string
	uid                 types.UID
	typ                 corev1.ServiceType
	clusterIP           string
	clusterIPs          []string
	labels              []string // key, value, key, value, …
}

// NewSlimService keeps of s what SlimService says, sharing its strings.
func NewSlimService(s *corev1.Service) *SlimService {
	c := &SlimService{name: s.Name, namespace: s.Namespace, rv: s.ResourceVersion, uid: s.UID,
		typ: s.Spec.Type, clusterIP: s.Spec.ClusterIP, clusterIPs: s.Spec.ClusterIPs}
	if len(c.clusterIPs) > 0 && c.clusterIPs[0] == c.clusterIP {
		c.clusterIP = c.clusterIPs[0] // one string for both
	}
	if len(s.Labels) > 0 {
		c.labels = make([]string, 0, 2*len(s.Labels))
		for k, v := range s.Labels {
			c.labels = append(c.labels, k, v)
		}
	}
	return c
}

// Service returns the Service as a corev1.Service with the fields kept;
// withLabels: with its labels (a map built on each call).
func (c *SlimService) Service(withLabels bool) *corev1.Service {
	s := &corev1.Service{
		ObjectMeta: metav1.ObjectMeta{Name: c.name, Namespace: c.namespace, UID: c.uid, ResourceVersion: c.rv},
		Spec:       corev1.ServiceSpec{Type: c.typ, ClusterIP: c.clusterIP, ClusterIPs: c.clusterIPs},
	}
	if withLabels && len(c.labels) > 0 {
		s.Labels = make(map[string]string, len(c.labels)/2)
		for i := 0; i+1 < len(c.labels); i += 2 {
			s.Labels[c.labels[i]] = c.labels[i+1]
		}
	}
	return s
}

// GetObjectKind, DeepCopyObject: a SlimService is a runtime.Object.
func (c *SlimService) GetObjectKind() schema.ObjectKind { return schema.EmptyObjectKind }
func (c *SlimService) DeepCopyObject() runtime.Object   { x := *c; return &x }

// GetObjectMeta makes a SlimService a metav1.ObjectMetaAccessor, which is
// how the informer reads its key and resourceVersion.
func (c *SlimService) GetObjectMeta() metav1.Object {
	return &metav1.ObjectMeta{Name: c.name, Namespace: c.namespace, UID: c.uid, ResourceVersion: c.rv}
}

// asService reads a Service from an informer object: a *corev1.Service,
// a *SlimService (without labels) or a tombstone of either; nil otherwise.
func asService(obj any) *corev1.Service {
	if t, ok := obj.(cache.DeletedFinalStateUnknown); ok {
		obj = t.Obj
	}
	switch o := obj.(type) {
	case *corev1.Service:
		return o
	case *SlimService:
		return o.Service(false)
	}
	return nil
}

// NewSlimServiceLister lists and gets the Services of a cache of
// SlimServices (plain Services are returned as they are). Without labels
// (withLabels false) every read skips building the labels map, and List
// takes only the everything selector: the reconciler's view, which never
// reads labels and lists every Service on each full sync.
func NewSlimServiceLister(idx cache.Indexer, withLabels bool) corev1listers.ServiceLister {
	return slimLister{idx: idx, labels: withLabels}
}

type slimLister struct {
	idx    cache.Indexer
	labels bool
	ns     string // "": every namespace
}

var errSelectorWithoutLabels = errors.New("a Service lister without labels lists with the everything selector only")

func (l slimLister) service(obj any) *corev1.Service {
	switch o := obj.(type) {
	case *corev1.Service:
		return o
	case *SlimService:
		return o.Service(l.labels)
	}
	return nil
}

func (l slimLister) List(sel labels.Selector) ([]*corev1.Service, error) {
	if !l.labels && !sel.Empty() {
		return nil, errSelectorWithoutLabels
	}
	objs := l.idx.List()
	out := make([]*corev1.Service, 0, len(objs))
	for _, o := range objs {
		s := l.service(o)
		if s == nil || (l.ns != "" && s.Namespace != l.ns) || !sel.Matches(labels.Set(s.Labels)) {
			continue
		}
		out = append(out, s)
	}
	return out, nil
}

// slims lists every Service of the cache as a SlimService, without copies
// of those that are.
func (l slimLister) slims() []*SlimService {
	objs := l.idx.List()
	out := make([]*SlimService, 0, len(objs))
	for _, o := range objs {
		switch o := o.(type) {
		case *SlimService:
			if l.ns == "" || o.namespace == l.ns {
				out = append(out, o)
			}
		case *corev1.Service:
			if l.ns == "" || o.Namespace == l.ns {
				out = append(out, NewSlimService(o))
			}
		}
	}
	return out
}

func (l slimLister) Services(namespace string) corev1listers.ServiceNamespaceLister {
	l.ns = namespace
	return l
}

func (l slimLister) Get(name string) (*corev1.Service, error) {
	obj, ok, err := l.idx.GetByKey(l.ns + "/" + name)
	if err != nil {
		return nil, err
	}
	s := l.service(obj)
	if !ok || s == nil {
		return nil, apierrors.NewNotFound(corev1.Resource("services"), name)
	}
	return s, nil
}
