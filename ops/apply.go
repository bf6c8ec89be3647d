package ops

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/netip"
	"slices"
	"strings"
	"time"

	corev1 "k8s.io/api/core/v1"
	networkingv1 "k8s.io/api/networking/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/apimachinery/pkg/util/wait"
	"k8s.io/client-go/kubernetes"

	"github.com/dualstack-webhook/dualstack-webhook/alloc"
	"github.com/dualstack-webhook/dualstack-webhook/alloc/configmap"
)

// Applier executes a Plan against the cluster. Every step first reads the
// live object and does nothing when it already has the wanted state, so a
// re-run after an interruption (or a second run) continues where the first
// stopped; re-creation is journalled (journal.go).
type Applier struct {
	Client         kubernetes.Interface
	Namespace      string
	PoolsConfigMap string
	// Out receives one progress line per step and per Service.
	Out io.Writer
	// Confirm performs the writes; false only prints what would be done.
	Confirm bool
	// Timeout bounds each wait (ServiceCIDR Ready, a Service's deletion).
	Timeout time.Duration
}

// Outcome is what apply did to one Service.
type Outcome struct {
	Service       string   `json:"service"`
	Change        string   `json:"change"`
	Result        string   `json:"result"` // done, already-done, skipped, would, failed
	ClusterIPs    []string `json:"clusterIPs,omitempty"`
	NewClusterIPs []string `json:"newClusterIPs,omitempty"`
	OffsetKept    *bool    `json:"offsetKept,omitempty"`
	Note          string   `json:"note,omitempty"`
}

// Apply runs the plan's steps in order, then its Service changes one at a
// time. It stops at the first error; what was done stays done and the next
// run skips it.
func (a *Applier) Apply(ctx context.Context, p *Plan) ([]Outcome, error) {
	if a.Timeout <= 0 {
		a.Timeout = 2 * time.Minute
	}
	mode := ""
	if !a.Confirm {
		mode = "(dry run) would "
	}
	var out []Outcome
	for i, st := range p.Steps {
		fmt.Fprintf(a.Out, "[step %d/%d] %s%s\n", i+1, len(p.Steps), mode, st.Description)
		if st.Action == ActServices {
			// One Service at a time, in plan order.
			o, err := a.services(ctx, p, mode)
			out = append(out, o...)
			if err != nil {
				return out, err
			}
			continue
		}
		if !a.Confirm {
			continue
		}
		if len(st.Unused) > 0 {
			wait, err := a.stillUsed(ctx, st)
			if err != nil {
				return out, fmt.Errorf("step %d (%s): %w", i+1, st.Action, err)
			}
			if wait != "" {
				fmt.Fprintf(a.Out, "           not yet: %s; run apply again once it is gone\n", wait)
				continue
			}
		}
		msg, err := a.step(ctx, p, st)
		if err != nil {
			return out, fmt.Errorf("step %d (%s): %w", i+1, st.Action, err)
		}
		fmt.Fprintf(a.Out, "           %s\n", msg)
	}
	return out, nil
}

func (a *Applier) services(ctx context.Context, p *Plan, mode string) ([]Outcome, error) {
	var out []Outcome
	todo := 0
	for _, c := range p.Services {
		if c.Change != RecreateManually {
			todo++
		}
	}
	n := 0
	for _, c := range p.Services {
		o := Outcome{Service: c.Key(), Change: string(c.Change), ClusterIPs: c.ClusterIPs, NewClusterIPs: c.NewClusterIPs, OffsetKept: c.OffsetKept, Note: c.Note}
		if c.Change == RecreateManually {
			o.Result = "skipped"
			fmt.Fprintf(a.Out, "[service -] %s: not touched: %s\n", c.Key(), c.Note)
			out = append(out, o)
			continue
		}
		n++
		prefix := fmt.Sprintf("[service %d/%d] %s: ", n, todo, c.Key())
		if !a.Confirm {
			o.Result = "would"
			fmt.Fprintf(a.Out, "%s%s%s\n", prefix, mode, describe(c))
			out = append(out, o)
			continue
		}
		var err error
		switch c.Change {
		case Upgrade:
			err = a.upgrade(ctx, c, &o)
		case Downgrade:
			err = a.downgrade(ctx, c, &o)
		case Recreate:
			err = a.recreate(ctx, p, c, &o)
		default:
			err = fmt.Errorf("unknown change %q", c.Change)
		}
		if err != nil {
			o.Result = "failed"
			out = append(out, o)
			fmt.Fprintf(a.Out, "%sFAILED: %v\n", prefix, err)
			return out, fmt.Errorf("%s: %w (re-run apply to continue)", c.Key(), err)
		}
		line := o.Result
		if len(o.NewClusterIPs) > 0 {
			line += fmt.Sprintf(" %v -> %v", o.ClusterIPs, o.NewClusterIPs)
		}
		if o.Note != "" {
			line += " (" + o.Note + ")"
		}
		fmt.Fprintf(a.Out, "%s%s\n", prefix, line)
		out = append(out, o)
	}
	return out, nil
}

func describe(c ServiceChange) string {
	switch c.Change {
	case Upgrade:
		return fmt.Sprintf("patch ipFamilyPolicy: PreferDualStack (ipFamilies %v)", c.IPFamilies)
	case Downgrade:
		return fmt.Sprintf("patch to SingleStack %v, clusterIPs %v -> %v", c.IPFamilies, c.ClusterIPs, c.NewClusterIPs)
	case Recreate:
		s := fmt.Sprintf("re-create with clusterIPs %v -> %v", c.ClusterIPs, c.NewClusterIPs)
		if c.Note != "" {
			s += " (" + c.Note + ")"
		}
		return s
	}
	return string(c.Change)
}

func (a *Applier) step(ctx context.Context, p *Plan, st Step) (string, error) {
	switch st.Action {
	case ActCreateServiceCIDR:
		return a.createServiceCIDR(ctx, st.ServiceCIDR)
	case ActWaitReady:
		return a.waitReady(ctx, st.ServiceCIDR.Name)
	case ActEditPools:
		return a.editPools(ctx, st.Pools)
	case ActCheckFamily:
		return a.checkFamily(ctx, st.Family)
	case ActDeleteServiceCIDR:
		return a.deleteServiceCIDR(ctx, st.ServiceCIDR.Name)
	case ActPrunePools:
		return a.prunePools(ctx, p, st.Pools)
	}
	return "", fmt.Errorf("unknown step %q", st.Action)
}

func (a *Applier) createServiceCIDR(ctx context.Context, spec *ServiceCIDRSpec) (string, error) {
	c := a.Client.NetworkingV1().ServiceCIDRs()
	cur, err := c.Get(ctx, spec.Name, metav1.GetOptions{})
	if err == nil {
		if slices.Equal(cur.Spec.CIDRs, spec.CIDRs) {
			return "already exists", nil
		}
		return "", fmt.Errorf("ServiceCIDR %s exists with %v, not %v", spec.Name, cur.Spec.CIDRs, spec.CIDRs)
	}
	if !apierrors.IsNotFound(err) {
		return "", err
	}
	obj := &networkingv1.ServiceCIDR{
		ObjectMeta: metav1.ObjectMeta{Name: spec.Name, Labels: map[string]string{"app.kubernetes.io/managed-by": "dualstack-webhook"}},
		Spec:       networkingv1.ServiceCIDRSpec{CIDRs: spec.CIDRs},
	}
	if _, err := c.Create(ctx, obj, metav1.CreateOptions{}); err != nil && !apierrors.IsAlreadyExists(err) {
		return "", err
	}
	return "created", nil
}

func ready(sc *networkingv1.ServiceCIDR) (bool, string) {
	for _, c := range sc.Status.Conditions {
		if c.Type == networkingv1.ServiceCIDRConditionReady {
			return c.Status == metav1.ConditionTrue, c.Reason + ": " + c.Message
		}
	}
	return false, "no Ready condition yet"
}

func (a *Applier) waitReady(ctx context.Context, name string) (string, error) {
	last := ""
	err := wait.PollUntilContextTimeout(ctx, 200*time.Millisecond, a.Timeout, true, func(ctx context.Context) (bool, error) {
		sc, err := a.Client.NetworkingV1().ServiceCIDRs().Get(ctx, name, metav1.GetOptions{})
		if err != nil {
			last = err.Error()
			return false, nil
		}
		ok, why := ready(sc)
		last = why
		return ok, nil
	})
	if err != nil {
		return "", fmt.Errorf("ServiceCIDR %s not Ready after %s (%s): kube-controller-manager's service-cidr controller sets Ready; is it running?", name, a.Timeout, last)
	}
	return "Ready", nil
}

func (a *Applier) editPools(ctx context.Context, e *PoolEdit) (string, error) {
	cms := a.Client.CoreV1().ConfigMaps(a.Namespace)
	cm, err := cms.Get(ctx, a.PoolsConfigMap, metav1.GetOptions{})
	if apierrors.IsNotFound(err) {
		cm = nil
	} else if err != nil {
		return "", err
	}
	src, err := poolsBase(ctx, a.Client, a.Namespace, a.PoolsConfigMap, cm)
	if err != nil {
		return "", err
	}
	doc, changed, err := EditDocument(src, e)
	if err != nil {
		if cm != nil {
			return "", fmt.Errorf("ConfigMap %s/%s: %w", cm.Namespace, cm.Name, err)
		}
		return "", err
	}
	if !changed {
		return "pools already edited", nil
	}
	next, err := alloc.ParseConfig([]byte(doc))
	if err != nil {
		return "", err
	}
	// Check again against the live ServiceCIDRs and reservations: the
	// document may have changed since the plan was made.
	snap, err := Load(ctx, a.Client, a.Namespace, a.PoolsConfigMap)
	if err != nil {
		return "", err
	}
	compiled, err := alloc.Compile(next, snap.Prefixes())
	if err != nil {
		return "", fmt.Errorf("new pool document: %w", err)
	}
	if err := alloc.ValidateChange(compiled, snap.Reservations); err != nil {
		return "", fmt.Errorf("new pool document: %w", err)
	}
	if cm == nil {
		cm = &corev1.ConfigMap{ObjectMeta: metav1.ObjectMeta{Name: a.PoolsConfigMap, Namespace: a.Namespace},
			Data: map[string]string{alloc.ConfigMapKey: doc}}
		if _, err := cms.Create(ctx, cm, metav1.CreateOptions{}); err != nil {
			return "", err
		}
		return "pools ConfigMap created", nil
	}
	cm = cm.DeepCopy()
	if cm.Data == nil {
		cm.Data = map[string]string{}
	}
	cm.Data[alloc.ConfigMapKey] = doc
	// resourceVersion from the read: a concurrent edit fails with Conflict
	// instead of being overwritten; the re-run re-reads it.
	if _, err := cms.Update(ctx, cm, metav1.UpdateOptions{}); err != nil {
		return "", err
	}
	return "pools ConfigMap updated", nil
}

// checkFamily asks the apiserver, by a server-side dry-run create, whether a
// PreferDualStack Service gets family f: only a kube-apiserver whose
// --service-cluster-ip-range lists f allocates it, whatever ServiceCIDRs exist.
func (a *Applier) checkFamily(ctx context.Context, f corev1.IPFamily) (string, error) {
	pol := corev1.IPFamilyPolicyPreferDualStack
	svc := &corev1.Service{
		ObjectMeta: metav1.ObjectMeta{Name: "dualstack-webhook-family-check", Namespace: "default"},
		Spec:       corev1.ServiceSpec{IPFamilyPolicy: &pol, Ports: []corev1.ServicePort{{Port: 80}}},
	}
	got, err := a.Client.CoreV1().Services("default").Create(ctx, svc, metav1.CreateOptions{DryRun: []string{metav1.DryRunAll}})
	if err != nil {
		return "", fmt.Errorf("dry-run create of a PreferDualStack Service: %w", err)
	}
	if !slices.Contains(got.Spec.IPFamilies, f) {
		return "", fmt.Errorf("kube-apiserver gives a PreferDualStack Service only %v: add the %s range to its --service-cluster-ip-range first (Services were not touched)", got.Spec.IPFamilies, f)
	}
	return fmt.Sprintf("kube-apiserver serves %v", got.Spec.IPFamilies), nil
}

func (a *Applier) deleteServiceCIDR(ctx context.Context, name string) (string, error) {
	c := a.Client.NetworkingV1().ServiceCIDRs()
	cur, err := c.Get(ctx, name, metav1.GetOptions{})
	if apierrors.IsNotFound(err) {
		return "already deleted", nil
	}
	if err != nil {
		return "", err
	}
	if cur.DeletionTimestamp != nil {
		return "already Terminating", nil
	}
	uid := cur.UID
	if err := c.Delete(ctx, name, metav1.DeleteOptions{Preconditions: &metav1.Preconditions{UID: &uid}}); err != nil && !apierrors.IsNotFound(err) {
		return "", err
	}
	return "deletion requested (Terminating until no address remains in it)", nil
}

// stillUsed says what keeps a gated step from running: a Service with an
// address in one of st.Unused, or, before a ServiceCIDR is deleted, a pool
// entry inside the ranges it takes away (the document would be invalid the
// moment the range is gone). "" means the step may run.
func (a *Applier) stillUsed(ctx context.Context, st Step) (string, error) {
	var ranges []netip.Prefix
	for _, u := range st.Unused {
		q, err := netip.ParsePrefix(u)
		if err != nil {
			return "", fmt.Errorf("plan: %w", err)
		}
		ranges = append(ranges, q)
	}
	in := func(ip netip.Addr) bool {
		return slices.ContainsFunc(ranges, func(q netip.Prefix) bool { return q.Contains(ip) })
	}
	svcs, err := a.Client.CoreV1().Services("").List(ctx, metav1.ListOptions{})
	if err != nil {
		return "", err
	}
	for i := range svcs.Items {
		for _, ip := range clusterIPs(&svcs.Items[i]) {
			if in(ip) {
				return fmt.Sprintf("Service %s holds %s", key(&svcs.Items[i]), ip), nil
			}
		}
	}
	if st.Action != ActDeleteServiceCIDR {
		return "", nil
	}
	cm, err := a.Client.CoreV1().ConfigMaps(a.Namespace).Get(ctx, a.PoolsConfigMap, metav1.GetOptions{})
	if apierrors.IsNotFound(err) {
		return "", nil
	}
	if err != nil {
		return "", err
	}
	cfg, err := alloc.ConfigFromConfigMap(cm)
	if err != nil {
		return "", err
	}
	for _, pl := range cfg.Pools {
		for _, e := range slices.Concat(pl.Addresses.IPv4, pl.Addresses.IPv6) {
			if r, err := alloc.ParseRange(e); err == nil && (in(r.From) || in(r.To)) {
				return fmt.Sprintf("pool %s still lists %s", pl.Name, e), nil
			}
		}
	}
	return "", nil
}

func (a *Applier) getService(ctx context.Context, ns, name string) (*corev1.Service, error) {
	return a.Client.CoreV1().Services(ns).Get(ctx, name, metav1.GetOptions{})
}

func (a *Applier) patch(ctx context.Context, svc *corev1.Service, spec map[string]any) (*corev1.Service, error) {
	body, err := json.Marshal(map[string]any{
		// The resourceVersion makes the merge patch conditional: a Service
		// changed since it was read is not patched blindly (Conflict).
		"metadata": map[string]any{"resourceVersion": svc.ResourceVersion},
		"spec":     spec,
	})
	if err != nil {
		return nil, err
	}
	return a.Client.CoreV1().Services(svc.Namespace).Patch(ctx, svc.Name, types.MergePatchType, body, metav1.PatchOptions{})
}

func (a *Applier) upgrade(ctx context.Context, c ServiceChange, o *Outcome) error {
	svc, err := a.getService(ctx, c.Namespace, c.Name)
	if apierrors.IsNotFound(err) {
		o.Result, o.Note = "skipped", "Service is gone"
		return nil
	}
	if err != nil {
		return err
	}
	o.ClusterIPs = svc.Spec.ClusterIPs
	if svc.Spec.IPFamilyPolicy != nil && *svc.Spec.IPFamilyPolicy != corev1.IPFamilyPolicySingleStack {
		o.Result, o.NewClusterIPs = "already-done", svc.Spec.ClusterIPs
		return nil
	}
	got, err := a.patch(ctx, svc, map[string]any{"ipFamilyPolicy": corev1.IPFamilyPolicyPreferDualStack})
	if err != nil {
		return err
	}
	o.Result, o.NewClusterIPs = "done", got.Spec.ClusterIPs
	if len(got.Spec.IPFamilies) < 2 {
		o.Note = fmt.Sprintf("still single-stack %v: the apiserver does not serve the other family", got.Spec.IPFamilies)
	}
	return nil
}

func (a *Applier) downgrade(ctx context.Context, c ServiceChange, o *Outcome) error {
	svc, err := a.getService(ctx, c.Namespace, c.Name)
	if apierrors.IsNotFound(err) {
		o.Result, o.Note = "skipped", "Service is gone"
		return nil
	}
	if err != nil {
		return err
	}
	o.ClusterIPs = svc.Spec.ClusterIPs
	if slices.Equal(familiesOf(svc), c.IPFamilies) {
		o.Result, o.NewClusterIPs = "already-done", svc.Spec.ClusterIPs
		// A run interrupted after the patch left the reservation behind.
		return a.freeDropped(ctx, svc)
	}
	if len(svc.Spec.IPFamilies) == 0 || string(svc.Spec.IPFamilies[0]) != c.IPFamilies[0] {
		o.Result, o.Note = "skipped", fmt.Sprintf("its primary family is now %v: re-create it by hand", svc.Spec.IPFamilies)
		return nil
	}
	spec := map[string]any{
		"ipFamilyPolicy": corev1.IPFamilyPolicySingleStack,
		"ipFamilies":     c.IPFamilies,
	}
	if len(svc.Spec.ClusterIPs) > 0 {
		spec["clusterIPs"] = svc.Spec.ClusterIPs[:1]
	}
	got, err := a.patch(ctx, svc, spec)
	if err != nil {
		return err
	}
	o.Result, o.NewClusterIPs = "done", got.Spec.ClusterIPs
	return a.freeDropped(ctx, got)
}

// freeDropped deletes the pinning webhook's reservations naming svc for an
// address of a family svc no longer has. The webhook keeps them sticky to
// the name for its retention period, in case the Service comes back with
// that family; after a downgrade they would only keep the removed family in
// the pools. Each is deleted with its resourceVersion as precondition, so a
// reservation the webhook changed meanwhile is left alone.
func (a *Applier) freeDropped(ctx context.Context, svc *corev1.Service) error {
	cms := a.Client.CoreV1().ConfigMaps(a.Namespace)
	l, err := cms.List(ctx, metav1.ListOptions{LabelSelector: configmap.Selector})
	if err != nil {
		return fmt.Errorf("reading reservations: %w", err)
	}
	for _, cm := range l.Items {
		if cm.Data["namespace"] != svc.Namespace || cm.Data["name"] != svc.Name {
			continue
		}
		f := corev1.IPFamily(cm.Labels[configmap.LabelFamily])
		if f == "" || slices.Contains(svc.Spec.IPFamilies, f) {
			continue
		}
		rv := cm.ResourceVersion
		err := cms.Delete(ctx, cm.Name, metav1.DeleteOptions{Preconditions: &metav1.Preconditions{ResourceVersion: &rv}})
		if err != nil && !apierrors.IsNotFound(err) && !apierrors.IsConflict(err) {
			return fmt.Errorf("freeing reservation %s of the dropped %s address: %w", cm.Name, f, err)
		}
	}
	return nil
}

// recreate moves one Service out of the old range: journal, delete (UID
// precondition), wait until gone, create, drop the journal. Each stage is
// recognised from the live state on a re-run.
func (a *Applier) recreate(ctx context.Context, p *Plan, c ServiceChange, o *Outcome) error {
	old, err := netip.ParsePrefix(p.OldCIDR)
	if err != nil {
		return fmt.Errorf("plan has no old range: %w", err)
	}
	svcs := a.Client.CoreV1().Services(c.Namespace)
	live, err := svcs.Get(ctx, c.Name, metav1.GetOptions{})
	if err != nil && !apierrors.IsNotFound(err) {
		return err
	}
	var target *corev1.Service
	if live != nil && err == nil {
		if !slices.ContainsFunc(clusterIPs(live), old.Contains) {
			o.Result, o.NewClusterIPs = "already-done", live.Spec.ClusterIPs
			return deleteJournal(ctx, a.Client, a.Namespace, c.Namespace, c.Name)
		}
		o.ClusterIPs = live.Spec.ClusterIPs
		target = Recreated(live, c.NewClusterIPs)
		if err := writeJournal(ctx, a.Client, a.Namespace, target); err != nil {
			return err
		}
		uid := live.UID
		if err := svcs.Delete(ctx, c.Name, metav1.DeleteOptions{Preconditions: &metav1.Preconditions{UID: &uid}}); err != nil && !apierrors.IsNotFound(err) {
			return fmt.Errorf("deleting: %w", err)
		}
		if err := wait.PollUntilContextTimeout(ctx, 100*time.Millisecond, a.Timeout, true, func(ctx context.Context) (bool, error) {
			cur, err := svcs.Get(ctx, c.Name, metav1.GetOptions{})
			if apierrors.IsNotFound(err) {
				return true, nil
			}
			return err == nil && cur.UID != uid, nil
		}); err != nil {
			return fmt.Errorf("waiting for the deletion (finalizers %v?): %w", live.Finalizers, err)
		}
	} else {
		js, err := loadJournal(ctx, a.Client, a.Namespace)
		if err != nil {
			return err
		}
		for _, j := range js {
			if j.Key() == c.Key() {
				target = j.Service
			}
		}
		if target == nil {
			o.Result, o.Note = "skipped", "Service is gone and no journal entry exists"
			return nil
		}
		o.Note = "resumed from the journal"
	}
	created, err := a.createServed(ctx, target)
	if err != nil && len(target.Spec.ClusterIPs) > 0 && isAddressRefusal(err) {
		// Someone took the address since the plan: let the allocator
		// choose rather than leave the Service deleted.
		why := err.Error()
		target = Recreated(target, nil)
		created, err = svcs.Create(ctx, target, metav1.CreateOptions{})
		kept := false
		o.OffsetKept, o.Note = &kept, "offset not kept: "+why
	}
	if err != nil {
		return fmt.Errorf("creating (journal %s/%s keeps it for the next run): %w", a.Namespace, journalName(c.Namespace, c.Name), err)
	}
	o.Result, o.NewClusterIPs = "done", created.Spec.ClusterIPs
	if err := a.freeOld(ctx, old, c, o.ClusterIPs, created); err != nil {
		return err
	}
	return deleteJournal(ctx, a.Client, a.Namespace, c.Namespace, c.Name)
}

// createServed creates svc. The ServiceCIDR of a requested address being
// Ready in the API does not mean kube-apiserver allocates from it yet: its
// allocators follow ServiceCIDRs through an informer and a work queue, and
// until then a request for the address is refused as "the provided network
// does not match the current range" (or "allocator not ready"). While every
// requested address lies in a Ready ServiceCIDR, that refusal is the
// apiserver catching up: the create is retried until it accepts or refuses
// for another reason, within the timeout.
func (a *Applier) createServed(ctx context.Context, svc *corev1.Service) (*corev1.Service, error) {
	svcs := a.Client.CoreV1().Services(svc.Namespace)
	var (
		created *corev1.Service
		err     error
	)
	perr := wait.PollUntilContextTimeout(ctx, 200*time.Millisecond, a.Timeout, true, func(ctx context.Context) (bool, error) {
		created, err = svcs.Create(ctx, svc, metav1.CreateOptions{})
		if err == nil || !isNotServedYet(err) {
			return true, nil
		}
		served, lerr := a.inReadyServiceCIDRs(ctx, svc.Spec.ClusterIPs)
		return lerr != nil || !served, nil
	})
	if err == nil && perr != nil {
		err = perr
	}
	return created, err
}

func isNotServedYet(err error) bool {
	msg := err.Error()
	return apierrors.IsInvalid(err) && (strings.Contains(msg, "does not match the current range") || strings.Contains(msg, "allocator not ready"))
}

// inReadyServiceCIDRs reports whether each address lies in a ServiceCIDR
// that is Ready and not being deleted.
func (a *Applier) inReadyServiceCIDRs(ctx context.Context, ips []string) (bool, error) {
	l, err := a.Client.NetworkingV1().ServiceCIDRs().List(ctx, metav1.ListOptions{})
	if err != nil {
		return false, err
	}
	for _, s := range ips {
		ip, err := netip.ParseAddr(s)
		if err != nil {
			return false, nil
		}
		in := false
		for i := range l.Items {
			sc := &l.Items[i]
			if ok, _ := ready(sc); !ok || sc.DeletionTimestamp != nil {
				continue
			}
			for _, c := range sc.Spec.CIDRs {
				if p, err := netip.ParsePrefix(c); err == nil && p.Contains(ip) {
					in = true
				}
			}
		}
		if !in {
			return false, nil
		}
	}
	return len(ips) > 0, nil
}

// freeOld deletes the pinning webhook's reservations of the Service's old
// addresses in the replaced range. The webhook would keep them sticky to the
// Service's name for its retention period, for a re-create that has now
// happened elsewhere; meanwhile they would block pruning the old range from
// the pools. Only reservations naming this Service are touched, each with
// its resourceVersion as precondition.
func (a *Applier) freeOld(ctx context.Context, old netip.Prefix, c ServiceChange, oldIPs []string, created *corev1.Service) error {
	cms := a.Client.CoreV1().ConfigMaps(a.Namespace)
	for _, s := range oldIPs {
		ip, err := netip.ParseAddr(s)
		if err != nil || !old.Contains(ip) || slices.Contains(created.Spec.ClusterIPs, s) {
			continue
		}
		// A Conflict means the webhook's reconciler changed the record
		// meanwhile (bound → sticky after the delete): read it again.
		for attempt := 0; ; attempt++ {
			cm, err := cms.Get(ctx, configmap.Name(ip), metav1.GetOptions{})
			if apierrors.IsNotFound(err) {
				break
			}
			if err != nil {
				return err
			}
			if cm.Labels[configmap.LabelManagedBy] != configmap.ManagedBy || cm.Data["namespace"] != c.Namespace || cm.Data["name"] != c.Name {
				break
			}
			rv := cm.ResourceVersion
			err = cms.Delete(ctx, cm.Name, metav1.DeleteOptions{Preconditions: &metav1.Preconditions{ResourceVersion: &rv}})
			if err == nil || apierrors.IsNotFound(err) {
				break
			}
			if !apierrors.IsConflict(err) || attempt >= 4 {
				return fmt.Errorf("freeing the reservation of the old address %s: %w", ip, err)
			}
		}
	}
	return nil
}

// isAddressRefusal recognises the apiserver's (or the webhook's) refusal of
// a requested clusterIP: already allocated, held, outside a ready range.
func isAddressRefusal(err error) bool {
	var st apierrors.APIStatus
	if !errors.As(err, &st) {
		return false
	}
	msg := strings.ToLower(err.Error())
	return apierrors.IsInvalid(err) && (strings.Contains(msg, "allocate") || strings.Contains(msg, "held by") || strings.Contains(msg, "clusterip")) ||
		strings.Contains(msg, "held by") || strings.Contains(msg, "already allocated")
}

// prunePools drops the old range from the pools once no ServiceCIDR lists it
// any more: a pool outside every ServiceCIDR makes the whole document
// invalid. While Services remain in the range (default/kubernetes does until
// kube-apiserver is reconfigured) the ServiceCIDR stays Terminating, and this
// step says so and leaves the pools alone for a later run.
func (a *Applier) prunePools(ctx context.Context, p *Plan, e *PoolEdit) (string, error) {
	old, err := netip.ParsePrefix(p.OldCIDR)
	if err != nil {
		return "", fmt.Errorf("plan has no old range: %w", err)
	}
	svcs, err := a.Client.CoreV1().Services("").List(ctx, metav1.ListOptions{})
	if err != nil {
		return "", err
	}
	for i := range svcs.Items {
		if slices.ContainsFunc(clusterIPs(&svcs.Items[i]), old.Contains) {
			return fmt.Sprintf("not yet: %s still holds an address in %s; run apply again once it has moved (pools keep %s draining meanwhile)", key(&svcs.Items[i]), old, old), nil
		}
	}
	// No address left: the service-cidr controller removes the finalizer
	// after its grace period; wait for that, then prune.
	listed := ""
	err = wait.PollUntilContextTimeout(ctx, 500*time.Millisecond, a.Timeout, true, func(ctx context.Context) (bool, error) {
		l, err := a.Client.NetworkingV1().ServiceCIDRs().List(ctx, metav1.ListOptions{})
		if err != nil {
			return false, nil
		}
		listed = ""
		for _, sc := range l.Items {
			if slices.Contains(sc.Spec.CIDRs, old.String()) {
				listed = sc.Name
			}
		}
		return listed == "", nil
	})
	if err != nil {
		return fmt.Sprintf("not yet: ServiceCIDR %s still lists %s (is kube-controller-manager running?); run apply again later", listed, old), nil
	}
	return a.editPools(ctx, e)
}
