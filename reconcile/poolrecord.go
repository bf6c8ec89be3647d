package reconcile

import (
	"context"
	"fmt"

	"github.com/dualstack-webhook/dualstack-webhook/alloc"
	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	typedcorev1 "k8s.io/client-go/kubernetes/typed/core/v1"
)

// PoolRecord keeps the last pools document applied from the pools
// ConfigMap (PoolWatcher.Record).
type PoolRecord interface {
	// Get returns the recorded document; ok is false when there is none.
	Get(ctx context.Context) (doc string, ok bool, err error)
	// Put records doc. Writing what is already recorded writes nothing.
	Put(ctx context.Context, doc string) error
}

// RecordName is the name of the record ConfigMap of the pools ConfigMap
// named pools.
func RecordName(pools string) string { return alloc.AppliedConfigMapName(pools) }

// Labels and annotations of the record ConfigMap. It carries neither the
// pools guard's label (it is not edited by people) nor a reservation's
// family label (the state store must not read it).
const (
	// AnnotationRecordOf names the pools ConfigMap the record belongs to.
	AnnotationRecordOf = "dualstack-webhook.io/applied-pools-of"
	labelManagedBy     = "app.kubernetes.io/managed-by"
	managedBy          = "dualstack-webhook"
)

// ConfigMapRecord is a PoolRecord in a ConfigMap (RecordName of the pools
// ConfigMap, key pools.yaml, in the webhook's namespace).
//
// Every replica's pool watcher writes it when it applies a document, so
// writers race. Put writes only when the content differs, and only over
// the version it read (resourceVersion; a conflict re-reads), so replicas
// that applied the same document converge on one write and the others
// read it and stop. A replica whose informer lags may briefly write an
// older document over a newer one; it writes the newer one as soon as it
// applies it, so the record ends as the last document every replica
// applied.
type ConfigMapRecord struct {
	Client    typedcorev1.ConfigMapsGetter
	Namespace string
	// Pools is the pools ConfigMap's name; the record is RecordName(Pools).
	Pools string
}

var _ PoolRecord = (*ConfigMapRecord)(nil)

// Get implements PoolRecord.
func (r *ConfigMapRecord) Get(ctx context.Context) (string, bool, error) {
	cm, err := r.Client.ConfigMaps(r.Namespace).Get(ctx, RecordName(r.Pools), metav1.GetOptions{})
	if apierrors.IsNotFound(err) {
		return "", false, nil
	}
	if err != nil {
		return "", false, fmt.Errorf("reading ConfigMap %s/%s: %w", r.Namespace, RecordName(r.Pools), err)
	}
	return cm.Data[alloc.ConfigMapKey], true, nil
}

// putAttempts bounds Put's read-compare-write loop; each lost race means
// another replica wrote meanwhile, so a few are plenty.
const putAttempts = 5

// Put implements PoolRecord.
func (r *ConfigMapRecord) Put(ctx context.Context, doc string) error {
	cms := r.Client.ConfigMaps(r.Namespace)
	name := RecordName(r.Pools)
	var err error
	for range putAttempts {
		var cm *corev1.ConfigMap
		cm, err = cms.Get(ctx, name, metav1.GetOptions{})
		switch {
		case apierrors.IsNotFound(err):
			cm = &corev1.ConfigMap{
				ObjectMeta: metav1.ObjectMeta{Namespace: r.Namespace, Name: name,
					Labels:      map[string]string{labelManagedBy: managedBy},
					Annotations: map[string]string{AnnotationRecordOf: r.Pools}},
				Data: map[string]string{alloc.ConfigMapKey: doc},
			}
			if _, err = cms.Create(ctx, cm, metav1.CreateOptions{}); err == nil || !apierrors.IsAlreadyExists(err) {
				return wrapRecord(err, r.Namespace, name)
			}
			continue
		case err != nil:
			return wrapRecord(err, r.Namespace, name)
		}
		if old, ok := cm.Data[alloc.ConfigMapKey]; ok && old == doc {
			return nil
		}
		cm = cm.DeepCopy()
		if cm.Data == nil {
			cm.Data = map[string]string{}
		}
		cm.Data[alloc.ConfigMapKey] = doc
		// Update carries the resourceVersion read above: a concurrent
		// write makes it fail with Conflict instead of being overwritten.
		if _, err = cms.Update(ctx, cm, metav1.UpdateOptions{}); err == nil || !apierrors.IsConflict(err) {
			return wrapRecord(err, r.Namespace, name)
		}
	}
	return wrapRecord(fmt.Errorf("still racing other writers after %d attempts: %w", putAttempts, err), r.Namespace, name)
}

func wrapRecord(err error, ns, name string) error {
	if err == nil {
		return nil
	}
	return fmt.Errorf("writing ConfigMap %s/%s: %w", ns, name, err)
}
