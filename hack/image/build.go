package main

import (
	"archive/tar"
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"os"
	"path"
	"sort"
	"strings"
	"time"

	v1 "github.com/google/go-containerregistry/pkg/v1"
	"github.com/google/go-containerregistry/pkg/v1/empty"
	"github.com/google/go-containerregistry/pkg/v1/mutate"
	"github.com/google/go-containerregistry/pkg/v1/tarball"
	"github.com/google/go-containerregistry/pkg/v1/types"
)

// Spec describes the image to build. Binaries maps "os/arch" to the file of
// that platform's binary.
type Spec struct {
	Name       string // full reference the archive names the image by, e.g. ghcr.io/x/y:1.0
	Binaries   map[string]string
	Path       string // where the binary lives in the image, e.g. /usr/local/bin/x
	Cmd        []string
	User       string // uid:gid
	Labels     map[string]string
	Ports      []string // e.g. 8443/tcp
	Epoch      time.Time
	CreatedBy  string // history note
	WithPasswd bool   // add /etc/passwd and /etc/group naming root and nonroot (65532)
}

// Validate reports the first problem with the spec, phrased for a flag user.
func (s Spec) Validate() error {
	switch {
	case s.Name == "":
		return errors.New("-name is required")
	case len(s.Binaries) == 0:
		return errors.New("at least one -binary os/arch=FILE is required")
	case !path.IsAbs(s.Path) || path.Clean(s.Path) != s.Path || s.Path == "/":
		return fmt.Errorf("-path %q must be a clean absolute file path", s.Path)
	}
	for p := range s.Binaries {
		if _, err := parsePlatform(p); err != nil {
			return err
		}
	}
	if s.User != "" {
		if _, _, ok := strings.Cut(s.User, ":"); !ok {
			return fmt.Errorf("-user %q must be uid:gid", s.User)
		}
	}
	return nil
}

func parsePlatform(p string) (v1.Platform, error) {
	osName, arch, ok := strings.Cut(p, "/")
	if !ok || osName == "" || arch == "" || strings.Contains(arch, "/") {
		return v1.Platform{}, fmt.Errorf("platform %q must be os/arch, e.g. linux/amd64", p)
	}
	return v1.Platform{OS: osName, Architecture: arch}, nil
}

// BuildIndex builds the OCI image index with one image per platform, sorted
// by platform so that the index digest does not depend on flag order.
func BuildIndex(s Spec) (v1.ImageIndex, error) {
	if err := s.Validate(); err != nil {
		return nil, err
	}
	platforms := make([]string, 0, len(s.Binaries))
	for p := range s.Binaries {
		platforms = append(platforms, p)
	}
	sort.Strings(platforms)

	idx := mutate.IndexMediaType(empty.Index, types.OCIImageIndex)
	for _, p := range platforms {
		plat, _ := parsePlatform(p) // validated above
		bin, err := os.ReadFile(s.Binaries[p])
		if err != nil {
			return nil, fmt.Errorf("binary for %s: %w", p, err)
		}
		img, err := buildImage(s, plat, bin)
		if err != nil {
			return nil, fmt.Errorf("image for %s: %w", p, err)
		}
		idx = mutate.AppendManifests(idx, mutate.IndexAddendum{
			Add:        img,
			Descriptor: v1.Descriptor{Platform: &plat},
		})
	}
	return idx, nil
}

func buildImage(s Spec, plat v1.Platform, bin []byte) (v1.Image, error) {
	layerTar, err := rootfsTar(s, bin)
	if err != nil {
		return nil, err
	}
	layer, err := tarball.LayerFromOpener(func() (io.ReadCloser, error) {
		return io.NopCloser(bytes.NewReader(layerTar)), nil
	}, tarball.WithMediaType(types.OCILayer))
	if err != nil {
		return nil, err
	}
	base := mutate.ConfigMediaType(mutate.MediaType(empty.Image, types.OCIManifestSchema1), types.OCIConfigJSON)
	img, err := mutate.Append(base, mutate.Addendum{
		Layer:     layer,
		MediaType: types.OCILayer,
		History:   v1.History{Created: v1.Time{Time: s.Epoch}, CreatedBy: s.CreatedBy},
	})
	if err != nil {
		return nil, err
	}
	cf, err := img.ConfigFile()
	if err != nil {
		return nil, err
	}
	cf = cf.DeepCopy()
	cf.OS, cf.Architecture, cf.Variant = plat.OS, plat.Architecture, plat.Variant
	cf.Created = v1.Time{Time: s.Epoch}
	cf.Config.User = s.User
	cf.Config.Entrypoint = []string{s.Path}
	cf.Config.Cmd = s.Cmd
	cf.Config.Env = []string{"PATH=" + path.Dir(s.Path)}
	cf.Config.WorkingDir = "/"
	cf.Config.Labels = s.Labels
	if len(s.Ports) > 0 {
		cf.Config.ExposedPorts = map[string]struct{}{}
		for _, p := range s.Ports {
			cf.Config.ExposedPorts[p] = struct{}{}
		}
	}
	return mutate.ConfigFile(img, cf)
}

// rootfsTar is the single layer: parent directories, the binary, and the
// optional passwd/group and /tmp, sorted, owned by root, stamped with the epoch.
func rootfsTar(s Spec, bin []byte) ([]byte, error) {
	type entry struct {
		hdr  tar.Header
		body []byte
	}
	entries := map[string]entry{}
	dir := func(name string, mode int64) {
		entries[name+"/"] = entry{hdr: tar.Header{Typeflag: tar.TypeDir, Name: name + "/", Mode: mode}}
	}
	file := func(name string, mode int64, body []byte) {
		entries[name] = entry{hdr: tar.Header{Typeflag: tar.TypeReg, Name: name, Mode: mode, Size: int64(len(body))}, body: body}
	}
	rel := strings.TrimPrefix(s.Path, "/")
	for d := path.Dir(rel); d != "."; d = path.Dir(d) {
		dir(d, 0o755)
	}
	file(rel, 0o755, bin)
	if s.WithPasswd {
		dir("etc", 0o755)
		file("etc/passwd", 0o644, []byte("root:x:0:0:root:/root:/sbin/nologin\nnonroot:x:65532:65532:nonroot:/home/nonroot:/sbin/nologin\n"))
		file("etc/group", 0o644, []byte("root:x:0:\nnonroot:x:65532:\n"))
		dir("tmp", 0o1777)
	}
	names := make([]string, 0, len(entries))
	for n := range entries {
		names = append(names, n)
	}
	sort.Strings(names)
	var buf bytes.Buffer
	tw := tar.NewWriter(&buf)
	for _, n := range names {
		e := entries[n]
		e.hdr.ModTime = s.Epoch
		e.hdr.Format = tar.FormatPAX
		if err := tw.WriteHeader(&e.hdr); err != nil {
			return nil, err
		}
		if _, err := tw.Write(e.body); err != nil {
			return nil, err
		}
	}
	if err := tw.Close(); err != nil {
		return nil, err
	}
	return buf.Bytes(), nil
}

// FullReference spells a short image name the way the kubelet asks
// containerd for it: "dsw:e2e" is docker.io/library/dsw:e2e, "x/y:1" is
// docker.io/x/y:1; a name whose first component is a registry (has a dot or
// a port, or is localhost) is kept. containerd stores the name of an OCI
// archive as written, so a short one would never match the Pod's image.
func FullReference(name string) string {
	first, rest, ok := strings.Cut(name, "/")
	if ok && (strings.ContainsAny(first, ".:") || first == "localhost") {
		return name
	}
	if !ok {
		return "docker.io/library/" + name
	}
	return "docker.io/" + first + "/" + rest
}

// WriteArchive writes idx as an OCI image layout in one tar: oci-layout,
// index.json naming the image (containerd's and the OCI ref-name annotation,
// so `ctr images import`, `kind load image-archive` and `docker load` tag it)
// and every blob, entries sorted and stamped with epoch.
func WriteArchive(w io.Writer, idx v1.ImageIndex, name string, epoch time.Time) error {
	blobs := map[string][]byte{}
	add := func(b []byte) v1.Hash {
		h, _, _ := v1.SHA256(bytes.NewReader(b))
		blobs[h.Hex] = b
		return h
	}
	idxRaw, err := idx.RawManifest()
	if err != nil {
		return err
	}
	idxDigest := add(idxRaw)
	im, err := idx.IndexManifest()
	if err != nil {
		return err
	}
	for _, d := range im.Manifests {
		img, err := idx.Image(d.Digest)
		if err != nil {
			return err
		}
		raw, err := img.RawManifest()
		if err != nil {
			return err
		}
		add(raw)
		cfg, err := img.RawConfigFile()
		if err != nil {
			return err
		}
		add(cfg)
		layers, err := img.Layers()
		if err != nil {
			return err
		}
		for _, l := range layers {
			rc, err := l.Compressed()
			if err != nil {
				return err
			}
			b, err := io.ReadAll(rc)
			rc.Close()
			if err != nil {
				return err
			}
			add(b)
		}
	}
	tag := name
	if i := strings.LastIndex(name, ":"); i > strings.LastIndex(name, "/") {
		tag = name[i+1:]
	}
	name = FullReference(name)
	top := v1.IndexManifest{
		SchemaVersion: 2,
		MediaType:     types.OCIImageIndex,
		Manifests: []v1.Descriptor{{
			MediaType: types.OCIImageIndex,
			Size:      int64(len(idxRaw)),
			Digest:    idxDigest,
			Annotations: map[string]string{
				"io.containerd.image.name":          name,
				"org.opencontainers.image.ref.name": tag,
			},
		}},
	}
	topRaw, err := json.Marshal(top)
	if err != nil {
		return err
	}

	tw := tar.NewWriter(w)
	dir := func(n string) error {
		return tw.WriteHeader(&tar.Header{Typeflag: tar.TypeDir, Name: n, Mode: 0o755, ModTime: epoch, Format: tar.FormatPAX})
	}
	file := func(n string, b []byte) error {
		if err := tw.WriteHeader(&tar.Header{Typeflag: tar.TypeReg, Name: n, Mode: 0o644, Size: int64(len(b)), ModTime: epoch, Format: tar.FormatPAX}); err != nil {
			return err
		}
		_, err := tw.Write(b)
		return err
	}
	if err := dir("blobs/"); err != nil {
		return err
	}
	if err := dir("blobs/sha256/"); err != nil {
		return err
	}
	hexes := make([]string, 0, len(blobs))
	for h := range blobs {
		hexes = append(hexes, h)
	}
	sort.Strings(hexes)
	for _, h := range hexes {
		if err := file("blobs/sha256/"+h, blobs[h]); err != nil {
			return err
		}
	}
	if err := file("index.json", topRaw); err != nil {
		return err
	}
	if err := file("oci-layout", []byte(`{"imageLayoutVersion":"1.0.0"}`)); err != nil {
		return err
	}
	return tw.Close()
}
