package kubectlplugin

import (
	"archive/tar"
	"compress/gzip"
	"crypto/sha256"
	"encoding/hex"
	"io"
	"os"
	"os/exec"
	"path"
	"path/filepath"
	"runtime"
	"strings"
	"testing"

	"sigs.k8s.io/yaml"

	"github.com/dualstack-webhook/dualstack-webhook/e2e/framework"
)

// krewManifest is the part of krew's Plugin manifest (v1alpha2) that krew
// reads to install a plugin.
type krewManifest struct {
	APIVersion string `json:"apiVersion"`
	Kind       string `json:"kind"`
	Metadata   struct {
		Name string `json:"name"`
	} `json:"metadata"`
	Spec struct {
		Version          string `json:"version"`
		Homepage         string `json:"homepage"`
		ShortDescription string `json:"shortDescription"`
		Description      string `json:"description"`
		Platforms        []struct {
			Selector struct {
				MatchLabels map[string]string `json:"matchLabels"`
			} `json:"selector"`
			URI    string `json:"uri"`
			SHA256 string `json:"sha256"`
			Bin    string `json:"bin"`
			Files  []struct {
				From string `json:"from"`
				To   string `json:"to"`
			} `json:"files"`
		} `json:"platforms"`
	} `json:"spec"`
}

// installWithKrewManifest builds the plugin archive and manifest with
// plugins/krew/release.sh for this platform and installs the plugin the way
// `kubectl krew install --manifest --archive` does: the platform chosen by
// its selector, the archive checked against the manifest's sha256, the
// listed files extracted, and bin linked as kubectl-<name> into a folder
// that is returned for $PATH.
func installWithKrewManifest(t *testing.T) string {
	t.Helper()
	root, err := framework.RepoRoot()
	if err != nil {
		t.Fatal(err)
	}
	out := t.TempDir()
	const version = "v0.0.0-e2e"
	cmd := exec.Command(filepath.Join(root, "plugins", "krew", "release.sh"), version, "https://downloads.invalid/"+version, out)
	cmd.Dir = root
	cmd.Env = append(os.Environ(), "PLATFORMS="+runtime.GOOS+"/"+runtime.GOARCH)
	if b, err := cmd.CombinedOutput(); err != nil {
		t.Fatalf("release.sh: %v\n%s", err, b)
	}
	raw, err := os.ReadFile(filepath.Join(out, "dualstack.yaml"))
	if err != nil {
		t.Fatal(err)
	}
	var m krewManifest
	if err := yaml.UnmarshalStrict(raw, &m); err != nil {
		t.Fatalf("manifest: %v\n%s", err, raw)
	}
	if m.APIVersion != "krew.googlecontainertools.github.com/v1alpha2" || m.Kind != "Plugin" ||
		m.Metadata.Name != "dualstack" || m.Spec.Version != version || m.Spec.ShortDescription == "" || m.Spec.Description == "" ||
		!strings.HasPrefix(m.Spec.Homepage, "https://") {
		t.Fatalf("manifest header wrong:\n%s", raw)
	}
	if len(m.Spec.Platforms) != 1 {
		t.Fatalf("want the one platform asked for, got %d:\n%s", len(m.Spec.Platforms), raw)
	}
	p := m.Spec.Platforms[0]
	if l := p.Selector.MatchLabels; l["os"] != runtime.GOOS || l["arch"] != runtime.GOARCH {
		t.Fatalf("selector %v does not match %s/%s", l, runtime.GOOS, runtime.GOARCH)
	}
	archive := filepath.Join(out, path.Base(p.URI))
	if !strings.HasPrefix(p.URI, "https://downloads.invalid/"+version+"/") {
		t.Errorf("uri %q not under the given base", p.URI)
	}
	data, err := os.ReadFile(archive)
	if err != nil {
		t.Fatalf("the uri's archive was not built: %v", err)
	}
	if sum := sha256.Sum256(data); hex.EncodeToString(sum[:]) != p.SHA256 {
		t.Fatalf("sha256 of %s is %x, the manifest says %s", archive, sum, p.SHA256)
	}

	// Extract what files lists, as krew does, into the plugin's folder.
	pluginDir := t.TempDir()
	want := map[string]string{}
	for _, f := range p.Files {
		want[f.From] = f.To
	}
	f, err := os.Open(archive)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	gz, err := gzip.NewReader(f)
	if err != nil {
		t.Fatal(err)
	}
	tr := tar.NewReader(gz)
	for {
		h, err := tr.Next()
		if err == io.EOF {
			break
		}
		if err != nil {
			t.Fatal(err)
		}
		to, ok := want[h.Name]
		if !ok {
			continue
		}
		delete(want, h.Name)
		dst := filepath.Join(pluginDir, to, filepath.Base(h.Name))
		w, err := os.OpenFile(dst, os.O_CREATE|os.O_WRONLY|os.O_TRUNC, os.FileMode(h.Mode)&0o755)
		if err != nil {
			t.Fatal(err)
		}
		if _, err := io.Copy(w, tr); err != nil {
			t.Fatal(err)
		}
		if err := w.Close(); err != nil {
			t.Fatal(err)
		}
	}
	if len(want) > 0 {
		t.Fatalf("files %v listed in the manifest are not in the archive", want)
	}
	pathDir := t.TempDir()
	if err := os.Symlink(filepath.Join(pluginDir, p.Bin), filepath.Join(pathDir, "kubectl-"+m.Metadata.Name)); err != nil {
		t.Fatal(err)
	}
	return pathDir
}
