package ops

import (
	"context"
	"encoding/json"
	"fmt"
	"hash/fnv"

	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/client-go/kubernetes"

	"github.com/dualstack-webhook/dualstack-webhook/alloc/configmap"
)

// The journal makes re-creation resumable: before apply deletes a Service
// it writes the Service it is about to create into a ConfigMap in the
// webhook's namespace, and removes that ConfigMap once the Service exists
// again. A run interrupted between delete and create leaves the ConfigMap,
// and the next run (plan included) re-creates the Service from it. Only
// Services in flight have one, so there is at most one per run.
const (
	// LabelOps marks journal ConfigMaps; its value is the operation.
	LabelOps = "dualstack-webhook.io/ops"
	// journalKey holds the Service to create, as JSON.
	journalKey = "service.json"
	opRecreate = "recreate"
)

// JournalEntry is a Service deleted for re-creation and not re-created yet.
type JournalEntry struct {
	// ConfigMap is the journal object's name.
	ConfigMap string
	// Service is what will be created.
	Service *corev1.Service
}

// Key is the Service's namespace/name.
func (j JournalEntry) Key() string { return j.Service.Namespace + "/" + j.Service.Name }

// journalName is deterministic per Service, so writing it twice is an
// update, never a second entry.
func journalName(namespace, name string) string {
	h := fnv.New64a()
	_, _ = h.Write([]byte(namespace + "/" + name))
	return fmt.Sprintf("dsw-recreate-%016x", h.Sum64())
}

func journalSelector() string {
	return configmap.LabelManagedBy + "=" + configmap.ManagedBy + "," + LabelOps + "=" + opRecreate
}

func loadJournal(ctx context.Context, c kubernetes.Interface, namespace string) ([]JournalEntry, error) {
	l, err := c.CoreV1().ConfigMaps(namespace).List(ctx, metav1.ListOptions{LabelSelector: journalSelector()})
	if err != nil {
		return nil, fmt.Errorf("reading the apply journal in %s: %w", namespace, err)
	}
	var out []JournalEntry
	for _, cm := range l.Items {
		svc := &corev1.Service{}
		if err := json.Unmarshal([]byte(cm.Data[journalKey]), svc); err != nil || svc.Name == "" {
			return nil, fmt.Errorf("journal ConfigMap %s/%s is unreadable (%v): re-create its Service by hand from it, then delete it", namespace, cm.Name, err)
		}
		out = append(out, JournalEntry{ConfigMap: cm.Name, Service: svc})
	}
	return out, nil
}

// writeJournal records svc (create or overwrite).
func writeJournal(ctx context.Context, c kubernetes.Interface, namespace string, svc *corev1.Service) error {
	b, err := json.Marshal(svc)
	if err != nil {
		return err
	}
	cm := &corev1.ConfigMap{
		ObjectMeta: metav1.ObjectMeta{
			Name: journalName(svc.Namespace, svc.Name), Namespace: namespace,
			Labels: map[string]string{configmap.LabelManagedBy: configmap.ManagedBy, LabelOps: opRecreate},
			Annotations: map[string]string{
				"dualstack-webhook.io/service": svc.Namespace + "/" + svc.Name,
			},
		},
		Data: map[string]string{journalKey: string(b)},
	}
	_, err = c.CoreV1().ConfigMaps(namespace).Create(ctx, cm, metav1.CreateOptions{})
	if apierrors.IsAlreadyExists(err) {
		_, err = c.CoreV1().ConfigMaps(namespace).Update(ctx, cm, metav1.UpdateOptions{})
	}
	if err != nil {
		return fmt.Errorf("writing journal ConfigMap %s/%s: %w", namespace, cm.Name, err)
	}
	return nil
}

// deleteJournal removes every journal entry of the Service: the one this
// tool names, and any other entry naming the Service (written by an older run
// or by hand), so that a finished Service is never re-created again.
func deleteJournal(ctx context.Context, c kubernetes.Interface, namespace, svcNamespace, svcName string) error {
	names := []string{journalName(svcNamespace, svcName)}
	js, err := loadJournal(ctx, c, namespace)
	if err != nil {
		return err
	}
	for _, j := range js {
		if j.Key() == svcNamespace+"/"+svcName && j.ConfigMap != names[0] {
			names = append(names, j.ConfigMap)
		}
	}
	for _, n := range names {
		err := c.CoreV1().ConfigMaps(namespace).Delete(ctx, n, metav1.DeleteOptions{})
		if err != nil && !apierrors.IsNotFound(err) {
			return fmt.Errorf("removing journal ConfigMap %s/%s of %s/%s: %w", namespace, n, svcNamespace, svcName, err)
		}
	}
	return nil
}

// Recreated is the Service to create in place of live with clusterIPs ips
// ("" entries: left to the allocator; a secondary cannot be requested
// without the primary, so a leading "" leaves every address to it). Every
// user-set field is kept: labels, annotations, owner references, the whole
// spec (ports, node ports, selector, policies…); server-set fields (UID,
// resourceVersion, timestamps, managedFields, status) and finalizers (their
// controllers add them again) are dropped.
func Recreated(live *corev1.Service, ips []string) *corev1.Service {
	out := &corev1.Service{
		TypeMeta: metav1.TypeMeta{APIVersion: "v1", Kind: "Service"},
		ObjectMeta: metav1.ObjectMeta{
			Name: live.Name, Namespace: live.Namespace,
			Labels: live.Labels, Annotations: live.Annotations,
			OwnerReferences: live.OwnerReferences,
		},
		Spec: *live.Spec.DeepCopy(),
	}
	out = out.DeepCopy()
	var keep []string
	if len(ips) > 0 && ips[0] != "" {
		for _, ip := range ips {
			if ip == "" {
				break
			}
			keep = append(keep, ip)
		}
	}
	if len(keep) == 0 {
		out.Spec.ClusterIP, out.Spec.ClusterIPs = "", nil
	} else {
		out.Spec.ClusterIP, out.Spec.ClusterIPs = keep[0], keep
	}
	return out
}
