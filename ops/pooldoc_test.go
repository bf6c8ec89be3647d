package ops

import (
	"flag"
	"os"
	"path/filepath"
	"strings"
	"testing"

	corev1 "k8s.io/api/core/v1"

	"github.com/dualstack-webhook/dualstack-webhook/alloc"
)

var update = flag.Bool("update", false, "rewrite testdata/pooldoc/*.golden.yaml from the current output")

// TestEditDocumentGolden edits a commented pools.yaml the way each scenario
// does and compares the text with a golden file: every comment and the key
// order of the input must be there, and the result must decode to what
// ApplyTo gives (EditDocument checks that itself; a golden that drifted
// would show here).
func TestEditDocumentGolden(t *testing.T) {
	for _, tc := range []struct {
		name string
		edit PoolEdit
		src  string // default pools.yaml
	}{
		// The first edit of a document without pools writes the implicit
		// static band out before adding (extend on a cluster without pools).
		{"materialize", PoolEdit{Materialize: &alloc.PoolSpec{Name: alloc.StaticBandPool, Addresses: alloc.FamilyAddresses{IPv4: []string{"10.96.0.1-10.96.1.0"}}}, DefaultPool: alloc.StaticBandPool,
			Pool: "extend-10-1-0-0-24", Add: alloc.FamilyAddresses{IPv4: []string{"10.1.0.1-10.1.0.16"}}}, "empty.yaml"},
		{"extend-ipv4", PoolEdit{Pool: "extend-10-1-0-0-24", Add: alloc.FamilyAddresses{IPv4: []string{"10.1.0.1-10.1.0.16"}}}, ""},
		{"add-to-existing-ipv6", PoolEdit{Pool: "databases", Add: alloc.FamilyAddresses{IPv6: []string{"fd00:10:96::300-fd00:10:96::3ff"}}}, ""},
		{"replace-primary", PoolEdit{Pool: "primary-10-100-0-0-20", Add: alloc.FamilyAddresses{IPv4: []string{"10.100.0.1-10.100.0.16"}}, Drain: []string{"general"}, DefaultPool: "primary-10-100-0-0-20"}, ""},
		{"prune-old-range", PoolEdit{RemoveWithin: "10.96.0.0/16"}, ""},
		{"dual-to-single-ipv6", PoolEdit{RemoveFamily: corev1.IPv6Protocol}, ""},
		{"dual-to-single-ipv4", PoolEdit{RemoveFamily: corev1.IPv4Protocol}, ""},
	} {
		t.Run(tc.name, func(t *testing.T) {
			if tc.src == "" {
				tc.src = "pools.yaml"
			}
			src, err := os.ReadFile(filepath.Join("testdata/pooldoc", tc.src))
			if err != nil {
				t.Fatal(err)
			}
			got, changed, err := EditDocument(string(src), &tc.edit)
			if err != nil || !changed {
				t.Fatalf("changed=%v err=%v", changed, err)
			}
			golden := filepath.Join("testdata/pooldoc", tc.name+".golden.yaml")
			if *update {
				if err := os.WriteFile(golden, []byte(got), 0o644); err != nil {
					t.Fatal(err)
				}
			}
			want, err := os.ReadFile(golden)
			if err != nil {
				t.Fatal(err)
			}
			if got != string(want) {
				t.Errorf("%s differs (go test ./ops -run TestEditDocumentGolden -update rewrites it):\n%s", golden, got)
			}
			// Applying the edit again changes nothing (a re-run of apply).
			again, changed, err := EditDocument(got, &tc.edit)
			if err != nil || changed || again != got {
				t.Errorf("second edit: changed=%v err=%v", changed, err)
			}
		})
	}
}

// TestEditDocumentKeepsComments checks the property the goldens show, for
// every edit: each comment of the input that belongs to a kept node is in the
// output, in the same order.
func TestEditDocumentKeepsComments(t *testing.T) {
	src := `# head
apiVersion: dualstack-webhook.io/v1alpha1 # version
kind: PoolConfig
pools:
  - name: a # pool a
    addresses:
      ipv4: [10.0.0.1-10.0.0.16] # a's band
  # b follows
  - name: b
    addresses:
      ipv6:
        - 2000::1-2000::10 # b's band
# tail
`
	got, changed, err := EditDocument(src, &PoolEdit{Pool: "a", Add: alloc.FamilyAddresses{IPv6: []string{"2000::20-2000::30"}}, Drain: []string{"b"}, DefaultPool: "a"})
	if err != nil || !changed {
		t.Fatalf("changed=%v err=%v", changed, err)
	}
	last := -1
	for _, c := range []string{"# head", "# version", "# pool a", "# a's band", "# b follows", "# b's band", "# tail"} {
		i := strings.Index(got, c)
		if i < 0 || i < last {
			t.Errorf("comment %q lost or moved:\n%s", c, got)
		}
		last = i
	}
	for _, k := range []string{"apiVersion:", "kind:", "pools:", "defaultPool: a"} {
		i := strings.Index(got, k)
		if i < 0 {
			t.Errorf("%q missing:\n%s", k, got)
		}
	}
	if strings.Index(got, "apiVersion:") > strings.Index(got, "kind:") {
		t.Errorf("key order changed:\n%s", got)
	}
}

// TestEditDocumentFromNothing: without a document the edit writes a fresh
// one (there is nothing to keep).
func TestEditDocumentFromNothing(t *testing.T) {
	got, changed, err := EditDocument("", &PoolEdit{Pool: "p", Add: alloc.FamilyAddresses{IPv4: []string{"10.0.0.1-10.0.0.16"}}})
	if err != nil || !changed {
		t.Fatalf("changed=%v err=%v", changed, err)
	}
	c, err := alloc.ParseConfig([]byte(got))
	if err != nil || len(c.Pools) != 1 || c.Pools[0].Addresses.IPv4[0] != "10.0.0.1-10.0.0.16" {
		t.Errorf("%v %+v\n%s", err, c, got)
	}
	if _, _, err := EditDocument("kind: [", &PoolEdit{Pool: "p"}); err == nil {
		t.Error("broken document accepted")
	}
}
