package main

import (
	"bufio"
	"flag"
	"fmt"
	"os"
	"strconv"
	"strings"
	"time"
)

type multi []string

func (m *multi) String() string     { return strings.Join(*m, ",") }
func (m *multi) Set(v string) error { *m = append(*m, v); return nil }

func main() {
	if err := run(os.Args[1:]); err != nil {
		fmt.Fprintln(os.Stderr, "image:", err)
		os.Exit(1)
	}
}

func run(args []string) error {
	fs := flag.NewFlagSet("image", flag.ContinueOnError)
	var (
		out                 = fs.String("out", "", "archive to write (OCI image layout tar)")
		name                = fs.String("name", "", "image reference recorded in the archive, e.g. ghcr.io/x/y:1.0")
		bpath               = fs.String("path", "", "path of the binary inside the image (the entrypoint)")
		user                = fs.String("user", "65532:65532", "uid:gid the image runs as")
		epoch               = fs.Int64("epoch", -1, "timestamp of every file and of the image (Unix seconds; default $SOURCE_DATE_EPOCH)")
		cmd                 = fs.String("cmd", "", "default arguments (space separated)")
		passwd              = fs.Bool("passwd", true, "add /etc/passwd, /etc/group (root, nonroot 65532) and /tmp")
		bins, labels, ports multi
	)
	fs.Var(&bins, "binary", "os/arch=FILE, once per platform")
	fs.Var(&labels, "label", "KEY=VALUE image label, repeatable")
	fs.Var(&ports, "port", "exposed port, e.g. 8443/tcp, repeatable")
	if err := fs.Parse(args); err != nil {
		return err
	}
	if *out == "" {
		return fmt.Errorf("-out is required")
	}
	if *epoch < 0 {
		v := os.Getenv("SOURCE_DATE_EPOCH")
		n, err := strconv.ParseInt(v, 10, 64)
		if err != nil || n < 0 {
			return fmt.Errorf("-epoch or SOURCE_DATE_EPOCH (Unix seconds) is required for a reproducible image, got %q", v)
		}
		*epoch = n
	}
	s := Spec{
		Name: *name, Path: *bpath, User: *user, Epoch: time.Unix(*epoch, 0).UTC(),
		Binaries: map[string]string{}, Labels: map[string]string{},
		Cmd: strings.Fields(*cmd), Ports: ports, WithPasswd: *passwd,
	}
	s.CreatedBy = "hack/image: " + *bpath
	for _, b := range bins {
		p, f, ok := strings.Cut(b, "=")
		if !ok {
			return fmt.Errorf("-binary %q must be os/arch=FILE", b)
		}
		s.Binaries[p] = f
	}
	for _, l := range labels {
		k, v, ok := strings.Cut(l, "=")
		if !ok || k == "" {
			return fmt.Errorf("-label %q must be KEY=VALUE", l)
		}
		s.Labels[k] = v
	}
	idx, err := BuildIndex(s)
	if err != nil {
		return err
	}
	tmp := *out + ".tmp"
	f, err := os.Create(tmp)
	if err != nil {
		return err
	}
	w := bufio.NewWriter(f)
	if err := WriteArchive(w, idx, s.Name, s.Epoch); err != nil {
		f.Close()
		return err
	}
	if err := w.Flush(); err != nil {
		f.Close()
		return err
	}
	if err := f.Close(); err != nil {
		return err
	}
	if err := os.Rename(tmp, *out); err != nil {
		return err
	}
	d, err := idx.Digest()
	if err != nil {
		return err
	}
	fmt.Printf("%s %s %s\n", *out, s.Name, d)
	return nil
}
