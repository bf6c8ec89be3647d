package convert

import (
	"bytes"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"strings"

	"github.com/spf13/pflag"
	corev1 "k8s.io/api/core/v1"

	"github.com/dualstack-webhook/dualstack-webhook/alloc"
)

// Exit codes of `dualstack-webhook convert` (docs/convert.md).
const (
	// ExitOK: everything converted (warnings may have been printed).
	ExitOK = 0
	// ExitInvalid: at least one document is invalid or unparsable; the
	// errors are on stderr and nothing is written to stdout (except in
	// KRM function mode, where the ResourceList carries the results).
	ExitInvalid = 1
	// ExitUsage: bad flags, unreadable input or unwritable output.
	ExitUsage = 2
)

// stdinName stands for standard input in diagnostics.
const stdinName = "<stdin>"

const usage = `Rewrite the legacy spec.ipFamily (Kubernetes 1.16-1.19) of v1 Services into
ipFamilyPolicy/ipFamilies; every other document passes through unchanged.

Usage:
  dualstack-webhook convert [-f FILE|DIR|-]... [--service-cidrs CIDRS] [--drop-only]

Reads YAML (multi-document) or JSON, v1 Lists included, from the files
(directories: their *.yaml, *.yml and *.json files) or from stdin, and writes
YAML to stdout; warnings and errors go to stderr as "file:document: ..."
(document = 1-based position among the file's non-empty documents).
A KRM ResourceList on stdin is answered with a ResourceList (kustomize exec
function); a plain stream on stdin works as a helm --post-renderer.

Exit status: 0 converted, 1 invalid input (nothing written), 2 usage or I/O error.

Flags:
`

// Main runs the convert subcommand; args exclude the subcommand name.
func Main(args []string, stdin io.Reader, stdout, stderr io.Writer) int {
	fs := pflag.NewFlagSet("dualstack-webhook convert", pflag.ContinueOnError)
	fs.SetOutput(io.Discard) // errors are printed below, help on stdout
	var (
		files    []string
		cidrs    string
		dropOnly bool
	)
	fs.StringArrayVarP(&files, "filename", "f", nil, "file, directory or - (stdin) to read; repeatable (default: stdin)")
	fs.StringVar(&cidrs, "service-cidrs", "", "the cluster's service CIDRs, primary first, e.g. 10.96.0.0/16,fd00:10:96::/108: also check every Service against that cluster (default: translate spec.ipFamily only)")
	fs.BoolVar(&dropOnly, "drop-only", false, "only remove spec.ipFamily, write no ipFamilyPolicy/ipFamilies: for manifests of Services that already exist (an apply of SingleStack would downgrade one upgraded to dual-stack since)")
	fs.Usage = func() {
		fmt.Fprint(fs.Output(), usage)
		fs.PrintDefaults()
	}
	if err := fs.Parse(args); err != nil {
		if errors.Is(err, pflag.ErrHelp) {
			fs.SetOutput(stdout)
			fs.Usage()
			return ExitOK
		}
		fmt.Fprintf(stderr, "convert: %v (see --help)\n", err)
		return ExitUsage
	}
	if fs.NArg() > 0 {
		fmt.Fprintf(stderr, "convert: unexpected arguments %q (files go after -f)\n", fs.Args())
		return ExitUsage
	}
	srcs, err := readSources(files, stdin)
	if err != nil {
		fmt.Fprintf(stderr, "convert: %v\n", err)
		return ExitUsage
	}

	// KRM function mode: kustomize runs the executable with a
	// ResourceList on stdin and expects one back.
	if len(srcs) == 1 && srcs[0].name == stdinName {
		if doc := resourceList(srcs[0].data); doc != nil {
			cfgCIDRs, cfgDropOnly := functionConfig(doc)
			if cidrs == "" {
				cidrs = cfgCIDRs
			}
			conv, err := newConverter(cidrs, dropOnly || cfgDropOnly)
			if err != nil {
				fmt.Fprintf(stderr, "convert: %v\n", err)
				return ExitUsage
			}
			res := conv.ConvertResourceList(doc, stdinName)
			// Results travel in the ResourceList; stderr repeats them
			// because kustomize shows a failed function's stderr.
			for _, d := range res.Diagnostics {
				fmt.Fprintln(stderr, d)
			}
			if _, err := stdout.Write(res.Output); err != nil {
				fmt.Fprintf(stderr, "convert: writing output: %v\n", err)
				return ExitUsage
			}
			if res.Failed() {
				return ExitInvalid
			}
			return ExitOK
		}
	}

	conv, err := newConverter(cidrs, dropOnly)
	if err != nil {
		fmt.Fprintf(stderr, "convert: %v\n", err)
		return ExitUsage
	}
	var out bytes.Buffer
	failed, errs := false, 0
	for _, src := range srcs {
		res := conv.Convert(src.name, src.data)
		for _, d := range res.Diagnostics {
			fmt.Fprintln(stderr, d)
			if d.Severity == SeverityError {
				errs++
			}
		}
		failed = failed || res.Failed()
		appendStream(&out, res.Output)
	}
	if failed {
		// All or nothing: half a converted stream in a pipeline without
		// pipefail would be applied as if it were whole.
		fmt.Fprintf(stderr, "convert: %d error(s); nothing written\n", errs)
		return ExitInvalid
	}
	if _, err := stdout.Write(out.Bytes()); err != nil {
		fmt.Fprintf(stderr, "convert: writing output: %v\n", err)
		return ExitUsage
	}
	return ExitOK
}

func newConverter(cidrs string, dropOnly bool) (*Converter, error) {
	c := &Converter{DropOnly: dropOnly}
	if cidrs == "" {
		return c, nil
	}
	fams, err := parseFamilies(cidrs)
	if err != nil {
		return nil, fmt.Errorf("--service-cidrs: %w", err)
	}
	c.Families = fams
	return c, nil
}

// parseFamilies reads --service-cidrs with the rules of `serve`
// (alloc.ParseServiceCIDRs) and keeps the families, primary first.
func parseFamilies(s string) ([]corev1.IPFamily, error) {
	cidrs, err := alloc.ParseServiceCIDRs(s)
	if err != nil {
		return nil, err
	}
	fams := make([]corev1.IPFamily, len(cidrs))
	for i, p := range cidrs {
		fams[i] = alloc.FamilyOf(p.Addr())
	}
	return fams, nil
}

// source is one input: a file or stdin.
type source struct {
	name string
	data []byte
}

// readSources reads -f arguments in order; no -f means stdin.
func readSources(files []string, stdin io.Reader) ([]source, error) {
	if len(files) == 0 {
		files = []string{"-"}
	}
	var out []source
	usedStdin := false
	for _, f := range files {
		if f == "-" {
			if usedStdin {
				return nil, errors.New(`"-f -" given twice`)
			}
			usedStdin = true
			b, err := io.ReadAll(stdin)
			if err != nil {
				return nil, fmt.Errorf("reading stdin: %w", err)
			}
			out = append(out, source{name: stdinName, data: b})
			continue
		}
		st, err := os.Stat(f)
		if err != nil {
			return nil, err
		}
		if !st.IsDir() {
			b, err := os.ReadFile(f)
			if err != nil {
				return nil, err
			}
			out = append(out, source{name: f, data: b})
			continue
		}
		entries, err := os.ReadDir(f) // sorted by name
		if err != nil {
			return nil, err
		}
		for _, e := range entries {
			switch strings.ToLower(filepath.Ext(e.Name())) {
			case ".yaml", ".yml", ".json":
			default:
				continue
			}
			if !e.Type().IsRegular() {
				continue
			}
			p := filepath.Join(f, e.Name())
			b, err := os.ReadFile(p)
			if err != nil {
				return nil, err
			}
			out = append(out, source{name: p, data: b})
		}
	}
	return out, nil
}

// appendStream adds one file's output to the YAML stream, with a document
// separator between files.
func appendStream(out *bytes.Buffer, next []byte) {
	if len(bytes.TrimSpace(next)) == 0 {
		return
	}
	if out.Len() > 0 {
		if !bytes.HasSuffix(out.Bytes(), []byte("\n")) {
			out.WriteByte('\n')
		}
		if !isSeparator(firstLine(next)) {
			out.WriteString("---\n")
		}
	}
	out.Write(next)
}
