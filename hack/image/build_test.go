package main

import (
	"archive/tar"
	"bytes"
	"compress/gzip"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"io"
	"os"
	"path/filepath"
	"sort"
	"strings"
	"testing"
	"time"

	v1 "github.com/google/go-containerregistry/pkg/v1"
)

func testSpec(t *testing.T) Spec {
	t.Helper()
	dir := t.TempDir()
	bins := map[string]string{}
	for _, arch := range []string{"arm64", "amd64"} {
		f := filepath.Join(dir, arch)
		if err := os.WriteFile(f, []byte("\x7fELF fake "+arch), 0o755); err != nil {
			t.Fatal(err)
		}
		bins["linux/"+arch] = f
	}
	return Spec{
		Name: "example.com/dsw:v1", Binaries: bins, Path: "/usr/local/bin/dsw",
		Cmd: []string{"serve"}, User: "65532:65532", Epoch: time.Unix(1700000000, 0).UTC(),
		Labels:     map[string]string{"org.opencontainers.image.revision": "abc"},
		WithPasswd: true, CreatedBy: "test",
	}
}

func archive(t *testing.T, s Spec) []byte {
	t.Helper()
	idx, err := BuildIndex(s)
	if err != nil {
		t.Fatal(err)
	}
	var buf bytes.Buffer
	if err := WriteArchive(&buf, idx, s.Name, s.Epoch); err != nil {
		t.Fatal(err)
	}
	return buf.Bytes()
}

func TestReproducible(t *testing.T) {
	s := testSpec(t)
	a, b := archive(t, s), archive(t, s)
	if !bytes.Equal(a, b) {
		t.Fatal("two builds of the same spec differ")
	}
	s.Epoch = s.Epoch.Add(time.Second)
	if bytes.Equal(a, archive(t, s)) {
		t.Fatal("a different epoch gave the same archive: timestamps are not taken from the epoch")
	}
}

// readArchive returns the archive's files, checking that entries are sorted,
// stamped with the epoch, and that every blob's name is its digest.
func readArchive(t *testing.T, b []byte, epoch time.Time) map[string][]byte {
	t.Helper()
	files := map[string][]byte{}
	var names []string
	tr := tar.NewReader(bytes.NewReader(b))
	for {
		h, err := tr.Next()
		if err == io.EOF {
			break
		}
		if err != nil {
			t.Fatal(err)
		}
		names = append(names, h.Name)
		if !h.ModTime.Equal(epoch) {
			t.Errorf("%s: mtime %v, want the epoch %v", h.Name, h.ModTime, epoch)
		}
		body, _ := io.ReadAll(tr)
		files[h.Name] = body
		if hexd, ok := strings.CutPrefix(h.Name, "blobs/sha256/"); ok && hexd != "" {
			sum := sha256.Sum256(body)
			if hex.EncodeToString(sum[:]) != hexd {
				t.Errorf("blob %s does not hash to its name", h.Name)
			}
		}
	}
	if !sort.StringsAreSorted(names) {
		t.Errorf("tar entries not sorted: %v", names)
	}
	return files
}

func blob(t *testing.T, files map[string][]byte, d v1.Hash) []byte {
	t.Helper()
	b, ok := files["blobs/sha256/"+d.Hex]
	if !ok {
		t.Fatalf("blob %s referenced but missing", d)
	}
	return b
}

func TestArchiveLayout(t *testing.T) {
	s := testSpec(t)
	files := readArchive(t, archive(t, s), s.Epoch)
	if string(files["oci-layout"]) != `{"imageLayoutVersion":"1.0.0"}` {
		t.Errorf("oci-layout = %q", files["oci-layout"])
	}
	var top v1.IndexManifest
	if err := json.Unmarshal(files["index.json"], &top); err != nil {
		t.Fatal(err)
	}
	if len(top.Manifests) != 1 {
		t.Fatalf("index.json has %d manifests, want 1 (the image index)", len(top.Manifests))
	}
	d := top.Manifests[0]
	if got := d.Annotations["io.containerd.image.name"]; got != s.Name {
		t.Errorf("containerd name annotation %q, want %q", got, s.Name)
	}
	if got := d.Annotations["org.opencontainers.image.ref.name"]; got != "v1" {
		t.Errorf("ref.name annotation %q, want the tag v1", got)
	}
	var idx v1.IndexManifest
	if err := json.Unmarshal(blob(t, files, d.Digest), &idx); err != nil {
		t.Fatal(err)
	}
	var plats []string
	for _, m := range idx.Manifests {
		plats = append(plats, m.Platform.OS+"/"+m.Platform.Architecture)
		var man v1.Manifest
		if err := json.Unmarshal(blob(t, files, m.Digest), &man); err != nil {
			t.Fatal(err)
		}
		var cf v1.ConfigFile
		if err := json.Unmarshal(blob(t, files, man.Config.Digest), &cf); err != nil {
			t.Fatal(err)
		}
		if cf.Config.User != "65532:65532" {
			t.Errorf("%s: user %q, want 65532:65532", m.Platform.Architecture, cf.Config.User)
		}
		if cf.Architecture != m.Platform.Architecture || cf.OS != "linux" {
			t.Errorf("config platform %s/%s under index entry %s", cf.OS, cf.Architecture, m.Platform.Architecture)
		}
		if strings.Join(cf.Config.Entrypoint, " ") != "/usr/local/bin/dsw" || strings.Join(cf.Config.Cmd, " ") != "serve" {
			t.Errorf("entrypoint %v cmd %v", cf.Config.Entrypoint, cf.Config.Cmd)
		}
		if cf.Config.Labels["org.opencontainers.image.revision"] != "abc" {
			t.Errorf("labels %v", cf.Config.Labels)
		}
		if !cf.Created.Time.Equal(s.Epoch) {
			t.Errorf("created %v, want the epoch", cf.Created)
		}
		if len(man.Layers) != 1 {
			t.Fatalf("%d layers, want 1", len(man.Layers))
		}
		checkLayer(t, blob(t, files, man.Layers[0].Digest), m.Platform.Architecture, s.Epoch)
	}
	if strings.Join(plats, ",") != "linux/amd64,linux/arm64" {
		t.Errorf("platforms %v, want linux/amd64,linux/arm64 in that order", plats)
	}
}

// checkLayer: the binary of the right platform, passwd naming 65532, nothing
// else — in particular no shell.
func checkLayer(t *testing.T, gz []byte, arch string, epoch time.Time) {
	t.Helper()
	l, err := gzipReader(gz)
	if err != nil {
		t.Fatal(err)
	}
	var names []string
	tr := tar.NewReader(l)
	for {
		h, err := tr.Next()
		if err == io.EOF {
			break
		}
		if err != nil {
			t.Fatal(err)
		}
		names = append(names, h.Name)
		body, _ := io.ReadAll(tr)
		if h.Uid != 0 || h.Gid != 0 || !h.ModTime.Equal(epoch) {
			t.Errorf("%s: owner %d:%d mtime %v", h.Name, h.Uid, h.Gid, h.ModTime)
		}
		switch h.Name {
		case "usr/local/bin/dsw":
			if string(body) != "\x7fELF fake "+arch || h.Mode != 0o755 {
				t.Errorf("binary of %s: %q mode %o", arch, body, h.Mode)
			}
		case "etc/passwd":
			if !strings.Contains(string(body), "nonroot:x:65532:65532:") {
				t.Errorf("passwd %q", body)
			}
		}
	}
	want := "etc/ etc/group etc/passwd tmp/ usr/ usr/local/ usr/local/bin/ usr/local/bin/dsw"
	if got := strings.Join(names, " "); got != want {
		t.Errorf("layer entries\n got %s\nwant %s", got, want)
	}
}

func TestValidate(t *testing.T) {
	for _, tc := range []struct {
		name   string
		mutate func(*Spec)
		want   string
	}{
		{"no name", func(s *Spec) { s.Name = "" }, "-name"},
		{"no binaries", func(s *Spec) { s.Binaries = nil }, "-binary"},
		{"relative path", func(s *Spec) { s.Path = "bin/x" }, "-path"},
		{"root path", func(s *Spec) { s.Path = "/" }, "-path"},
		{"bad platform", func(s *Spec) { s.Binaries = map[string]string{"amd64": "x"} }, "os/arch"},
		{"bad user", func(s *Spec) { s.User = "65532" }, "uid:gid"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			s := testSpec(t)
			tc.mutate(&s)
			err := s.Validate()
			if err == nil || !strings.Contains(err.Error(), tc.want) {
				t.Errorf("Validate() = %v, want an error mentioning %q", err, tc.want)
			}
		})
	}
}

func gzipReader(b []byte) (io.Reader, error) { return gzip.NewReader(bytes.NewReader(b)) }

func TestFullReference(t *testing.T) {
	for in, want := range map[string]string{
		"dsw:e2e":                          "docker.io/library/dsw:e2e",
		"team/dsw:1":                       "docker.io/team/dsw:1",
		"ghcr.io/dualstack-webhook/dsw:v1": "ghcr.io/dualstack-webhook/dsw:v1",
		"localhost/x/pause:e2e":            "localhost/x/pause:e2e",
		"registry:5000/dsw:v1":             "registry:5000/dsw:v1",
	} {
		if got := FullReference(in); got != want {
			t.Errorf("FullReference(%q) = %q, want %q", in, got, want)
		}
	}
}
