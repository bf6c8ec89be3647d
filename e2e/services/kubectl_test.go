package services

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	jsonpatch "github.com/evanphx/json-patch/v5"
	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"

	"github.com/dualstack-webhook/dualstack-webhook/e2e/framework"
)

// kubectl runs the kubectl of the assets folder (the machine's own may be too
// old for the apiserver) against the suite's cluster.
func kubectl(t *testing.T, stdin string, args ...string) (stdout, stderr string, err error) {
	t.Helper()
	env := need(t)
	bin, berr := framework.Binary("kubectl")
	if berr != nil {
		if env.Existing {
			bin, berr = exec.LookPath("kubectl")
		}
		if berr != nil {
			t.Fatalf("kubectl: %v", berr)
		}
	}
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	cmd := exec.CommandContext(ctx, bin, append([]string{"--kubeconfig", env.Kubeconfig}, args...)...)
	cmd.Stdin = strings.NewReader(stdin)
	var out, errb bytes.Buffer
	cmd.Stdout, cmd.Stderr = &out, &errb
	err = cmd.Run()
	return out.String(), errb.String(), err
}

const dualManifest = `apiVersion: v1
kind: Service
metadata:
  name: %s
  labels:
    app: MyApp
spec:
  ipFamilyPolicy: PreferDualStack
  selector:
    app: MyApp
  ports:
  - protocol: TCP
    port: 80
`

// TestServerDryRunApply: `kubectl apply --dry-run=server` shows what the
// webhook and apiserver would do, and stores nothing — neither a new Service,
// nor a change to an existing one, nor webhook state.
func TestServerDryRunApply(t *testing.T) {
	needDualStack(t)
	env := need(t)
	ns := newNamespace(t, withWebhook, "dryrun", nil, nil)
	ctx := context.Background()

	t.Run("new Service", func(t *testing.T) {
		stateBefore := settledState(t)
		out, errOut, err := kubectl(t, fmt.Sprintf(dualManifest, "dry-new"), "apply", "-n", ns, "--dry-run=server", "-o", "json", "-f", "-")
		if err != nil {
			t.Fatalf("kubectl apply --dry-run=server: %v\n%s", err, errOut)
		}
		var shown corev1.Service
		if err := json.Unmarshal([]byte(out), &shown); err != nil {
			t.Fatalf("decode kubectl output: %v\n%s", err, out)
		}
		if len(shown.Spec.ClusterIPs) != 2 || len(shown.Spec.IPFamilies) != 2 {
			t.Errorf("dry-run answer: clusterIPs %v ipFamilies %v, want two of each", shown.Spec.ClusterIPs, shown.Spec.IPFamilies)
		}
		if _, err := env.Client.CoreV1().Services(ns).Get(ctx, "dry-new", metav1.GetOptions{}); !apierrors.IsNotFound(err) {
			t.Errorf("after a dry run, get = %v, want NotFound", err)
		}
		checkStateUnchanged(t, stateBefore)
	})
	t.Run("existing Service", func(t *testing.T) {
		before := mustCreate(t, ns, svc("dry-existing"))
		// The real create above may reserve addresses; only the dry run
		// must leave the state alone. Wait for the webhook's writes of that
		// create to settle before taking the snapshot.
		stateBefore := settledState(t)
		_, errOut, err := kubectl(t, fmt.Sprintf(dualManifest, "dry-existing"), "apply", "-n", ns, "--dry-run=server", "-f", "-")
		if err != nil {
			t.Fatalf("kubectl apply --dry-run=server: %v\n%s", err, errOut)
		}
		after := get(t, ns, "dry-existing")
		if after.ResourceVersion != before.ResourceVersion ||
			fmt.Sprint(after.Spec.ClusterIPs, after.Spec.IPFamilies, *after.Spec.IPFamilyPolicy) !=
				fmt.Sprint(before.Spec.ClusterIPs, before.Spec.IPFamilies, *before.Spec.IPFamilyPolicy) {
			t.Errorf("dry run changed the Service: before rv=%s %v %v, after rv=%s %v %v",
				before.ResourceVersion, before.Spec.ClusterIPs, before.Spec.IPFamilies,
				after.ResourceVersion, after.Spec.ClusterIPs, after.Spec.IPFamilies)
		}
		checkStateUnchanged(t, stateBefore)
	})
}

// settledState returns the state snapshot once two reads 500ms apart agree
// (pending reservations of earlier creates come and go shortly after them).
func settledState(t *testing.T) string {
	t.Helper()
	prev := stateObjects(t)
	for i := 0; i < 20; i++ {
		time.Sleep(500 * time.Millisecond)
		cur := stateObjects(t)
		if cur == prev {
			return cur
		}
		prev = cur
	}
	t.Fatalf("webhook state still changing after 10s: %s", prev)
	return ""
}

// checkStateUnchanged compares the webhook's state with a snapshot taken
// before a dry run, after giving a wrongly persisted write time to show.
func checkStateUnchanged(t *testing.T, before string) {
	t.Helper()
	time.Sleep(time.Second)
	if after := stateObjects(t); after != before {
		t.Errorf("webhook state changed by a dry run:\nbefore: %s\nafter:  %s", before, after)
	}
}

// stateObjects summarises the webhook's state namespace (local suite only;
// "" on an existing cluster, where the chart decides the namespace).
func stateObjects(t *testing.T) string {
	env := need(t)
	if env.Existing {
		return ""
	}
	cms, err := env.Client.CoreV1().ConfigMaps(stateNamespace).List(context.Background(), metav1.ListOptions{})
	if err != nil {
		t.Fatalf("list state ConfigMaps: %v", err)
	}
	var names []string
	for _, cm := range cms.Items {
		// Names only: the reconciler keeps updating earlier tests'
		// reservations (pending -> confirmed); a dry run that persisted
		// anything would add an address.
		names = append(names, cm.Name)
	}
	return strings.Join(names, ",")
}

const legacyManifest = `apiVersion: v1
kind: Service
metadata:
  name: legacy
spec:
  ipFamily: IPv6
  selector:
    app: MyApp
  ports:
  - protocol: TCP
    port: 80
`

// TestLegacyIPFamily documents why `convert` exists: a 1.37 apiserver refuses
// the pre-1.20 spec.ipFamily field under kubectl's strict field validation
// before any admission webhook sees it, while the same Service handed to
// /mutate as an AdmissionReview is rewritten to ipFamilies/ipFamilyPolicy.
func TestLegacyIPFamily(t *testing.T) {
	ns := newNamespace(t, withWebhook, "legacy", nil, nil)
	t.Run("kubectl apply is rejected by strict decoding", func(t *testing.T) {
		_, errOut, err := kubectl(t, legacyManifest, "apply", "-n", ns, "-f", "-")
		if err == nil {
			t.Fatalf("kubectl apply of spec.ipFamily succeeded; want a strict decoding error")
		}
		if !strings.Contains(errOut, `strict decoding error: unknown field "spec.ipFamily"`) {
			t.Errorf("kubectl stderr = %q, want the strict decoding error on spec.ipFamily", errOut)
		}
		if _, err := client(t).CoreV1().Services(ns).Get(context.Background(), "legacy", metav1.GetOptions{}); !apierrors.IsNotFound(err) {
			t.Errorf("get after the rejected apply = %v, want NotFound", err)
		}
	})
	for _, version := range []string{"admission.k8s.io/v1", "admission.k8s.io/v1beta1"} {
		t.Run("POST /mutate "+version, func(t *testing.T) {
			env := needLocal(t)
			w := s.webhooks[instDefault]
			obj := map[string]any{
				"apiVersion": "v1", "kind": "Service",
				"metadata": map[string]any{"name": "legacy", "namespace": ns},
				"spec": map[string]any{
					"ipFamily": "IPv6",
					"selector": map[string]any{"app": "MyApp"},
					"ports":    []any{map[string]any{"protocol": "TCP", "port": 80}},
				},
			}
			raw, _ := json.Marshal(obj)
			review := map[string]any{
				"apiVersion": version, "kind": "AdmissionReview",
				"request": map[string]any{
					"uid":       "e2e-legacy-1",
					"kind":      map[string]any{"group": "", "version": "v1", "kind": "Service"},
					"resource":  map[string]any{"group": "", "version": "v1", "resource": "services"},
					"name":      "legacy",
					"namespace": ns,
					"operation": "CREATE",
					"userInfo":  map[string]any{"username": "e2e"},
					"object":    json.RawMessage(raw),
					"dryRun":    false,
				},
			}
			body, _ := json.Marshal(review)
			code, resp, err := w.Post("/mutate", "application/json", body)
			if err != nil {
				t.Fatalf("POST /mutate: %v", err)
			}
			if code != 200 {
				t.Fatalf("POST /mutate: HTTP %d: %s", code, resp)
			}
			var out struct {
				APIVersion string `json:"apiVersion"`
				Response   struct {
					UID       string `json:"uid"`
					Allowed   bool   `json:"allowed"`
					PatchType string `json:"patchType"`
					Patch     []byte `json:"patch"`
					Status    *metav1.Status
				} `json:"response"`
			}
			if err := json.Unmarshal(resp, &out); err != nil {
				t.Fatalf("decode answer: %v\n%s", err, resp)
			}
			if out.APIVersion != version || out.Response.UID != "e2e-legacy-1" {
				t.Errorf("answer apiVersion %q uid %q, want %q and the request's uid", out.APIVersion, out.Response.UID, version)
			}
			if !out.Response.Allowed || out.Response.PatchType != "JSONPatch" {
				t.Fatalf("answer allowed=%v patchType=%q status=%+v, want an allowed JSONPatch", out.Response.Allowed, out.Response.PatchType, out.Response.Status)
			}
			var ops []struct{ Op, Path string }
			_ = json.Unmarshal(out.Response.Patch, &ops)
			removes := false
			for _, op := range ops {
				removes = removes || (op.Op == "remove" && op.Path == "/spec/ipFamily")
			}
			if !removes {
				t.Errorf("patch %s does not remove /spec/ipFamily", out.Response.Patch)
			}
			p, err := jsonpatch.DecodePatch(out.Response.Patch)
			if err != nil {
				t.Fatalf("decode patch %s: %v", out.Response.Patch, err)
			}
			patched, err := p.Apply(raw)
			if err != nil {
				t.Fatalf("apply patch %s: %v", out.Response.Patch, err)
			}
			var sv corev1.Service
			if err := json.Unmarshal(patched, &sv); err != nil {
				t.Fatal(err)
			}
			if len(sv.Spec.IPFamilies) == 0 || sv.Spec.IPFamilies[0] != corev1.IPv6Protocol || sv.Spec.IPFamilyPolicy == nil {
				t.Errorf("patched spec: ipFamilies %v ipFamilyPolicy %v, want [IPv6 ...] and a policy (patch %s)",
					sv.Spec.IPFamilies, deref(sv.Spec.IPFamilyPolicy), out.Response.Patch)
			}
			if bytes.Contains(patched, []byte(`"ipFamily"`)) {
				t.Errorf("patched object still has ipFamily: %s", patched)
			}
			// Keep the exchange for the record: it is the reference curl example.
			_ = os.WriteFile(filepath.Join(env.Artifacts, "legacy-"+strings.ReplaceAll(version, "/", "_")+".json"),
				append(append(body, '\n'), resp...), 0o644)
		})
	}
}

// TestHealthAndMetrics: the probes answer on the TLS listener and /metrics on
// the plain metrics listener.
func TestHealthAndMetrics(t *testing.T) {
	needLocal(t)
	w := s.webhooks[instDefault]
	for _, path := range []string{"/healthz", "/readyz"} {
		if code, body, err := w.Get(path); err != nil || code != 200 {
			t.Errorf("GET %s = %d %q %v, want 200", path, code, body, err)
		}
	}
	code, body, err := w.Metrics()
	if err != nil || code != 200 {
		t.Fatalf("GET /metrics = %d %v, want 200", code, err)
	}
	if !bytes.Contains(body, []byte("# TYPE")) {
		t.Errorf("/metrics does not look like Prometheus text: %.200s", body)
	}
}
