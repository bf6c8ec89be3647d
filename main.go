// Command dualstack-webhook is a Kubernetes admission webhook that gives
// v1 Services the apiserver's dual-stack results early, translates the
// legacy spec.ipFamily field, applies per-namespace defaults and pins
// clusterIPs from address pools (reconciled against the live Services).
//
// main only dispatches subcommands; each lives in its own package.
package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"os/signal"
	"path/filepath"
	"slices"
	"sort"
	"strings"
	"syscall"

	"github.com/dualstack-webhook/dualstack-webhook/convert"
	"github.com/dualstack-webhook/dualstack-webhook/internal/renderpolicy"
	"github.com/dualstack-webhook/dualstack-webhook/internal/serve"
	"github.com/dualstack-webhook/dualstack-webhook/ops"
	"github.com/spf13/pflag"
)

// command is one subcommand. Adding one is one entry in commands.
type command struct {
	summary string
	run     func(ctx context.Context, args []string, stdout, stderr io.Writer) error
}

var commands = map[string]command{
	"serve": {"run the admission webhook (TLS) and its metrics server", serve.Main},
	// convert is dispatched in run (it reads stdin and has its own exit
	// codes, docs/convert.md); the entry lists it in usage.
	"convert": {"rewrite legacy spec.ipFamily in manifests (files/stdin; kustomize exec function, helm --post-renderer)", nil},
	// Operations (docs/operations.md).
	"status": {"per pool and family: size, reserved, free, lowest free IP; Services outside every pool", ops.StatusMain},
	"plan":   {"show the steps of a ServiceCIDR reconfiguration (extend, single-to-dual, dual-to-single, replace-primary)", ops.PlanMain},
	"apply":  {"perform a ServiceCIDR reconfiguration (dry run unless --confirm; resumable)", ops.ApplyMain},
	// Defaulting without a webhook (docs/defaulting-policy.md).
	"render-policy": {"print a MutatingAdmissionPolicy + binding applying the default ipFamilyPolicy with no webhook (Kubernetes >= 1.36)", renderpolicy.Main},
}

func main() {
	// SIGTERM (kubelet) and SIGINT (Ctrl-C) start a graceful shutdown; a
	// second signal kills at once because stop() restores the default.
	ctx, stop := signal.NotifyContext(context.Background(), syscall.SIGTERM, os.Interrupt)
	go func() { <-ctx.Done(); stop() }()
	var code int
	if isKubectlPlugin(os.Args[0]) {
		code = runPlugin(ctx, os.Args[1:], os.Stdout, os.Stderr)
	} else {
		code = run(ctx, os.Args[1:], os.Stdout, os.Stderr)
	}
	stop()
	os.Exit(code)
}

// run dispatches args to a subcommand and returns the exit code: 0 ok,
// 1 failure, 2 usage error.
func run(ctx context.Context, args []string, stdout, stderr io.Writer) int {
	if len(args) == 0 {
		usage(stderr)
		return 2
	}
	name := args[0]
	switch name {
	case "help", "-h", "--help":
		usage(stdout)
		return 0
	case "convert":
		return convert.Main(args[1:], os.Stdin, stdout, stderr)
	}
	cmd, ok := commands[name]
	if !ok {
		fmt.Fprintf(stderr, "dualstack-webhook: unknown command %q\n", name)
		usage(stderr)
		return 2
	}
	if err := cmd.run(ctx, args[1:], stdout, stderr); err != nil {
		if errors.Is(err, pflag.ErrHelp) {
			return 0
		}
		fmt.Fprintf(stderr, "dualstack-webhook %s: %v\n", name, err)
		return 1
	}
	return 0
}

func usage(w io.Writer) {
	fmt.Fprintln(w, "usage: dualstack-webhook <command> [flags]\n\ncommands:")
	names := make([]string, 0, len(commands))
	for n := range commands {
		names = append(names, n)
	}
	sort.Strings(names)
	for _, n := range names {
		fmt.Fprintf(w, "  %-14s %s\n", n, commands[n].summary)
	}
	fmt.Fprintln(w, "\nRun 'dualstack-webhook <command> --help' for its flags.")
}

// pluginName is the file name under which kubectl finds the binary as a
// plugin: `kubectl dualstack ...` runs kubectl-dualstack (docs/kubectl-plugin.md).
const pluginName = "kubectl-dualstack"

// pluginCommands are the commands an operator runs through kubectl; serve
// is the webhook itself and has no place there.
var pluginCommands = []string{"apply", "convert", "plan", "status"}

func isKubectlPlugin(argv0 string) bool {
	return strings.TrimSuffix(filepath.Base(argv0), ".exe") == pluginName
}

// runPlugin is run as kubectl's plugin: the same commands and flags (ops
// takes kubectl's --kubeconfig, --context, -n and -o), minus serve.
func runPlugin(ctx context.Context, args []string, stdout, stderr io.Writer) int {
	if len(args) == 0 {
		pluginUsage(stderr)
		return 2
	}
	switch args[0] {
	case "help", "-h", "--help":
		pluginUsage(stdout)
		return 0
	}
	if !slices.Contains(pluginCommands, args[0]) {
		fmt.Fprintf(stderr, "kubectl dualstack: unknown command %q\n", args[0])
		pluginUsage(stderr)
		return 2
	}
	return run(ctx, args, stdout, stderr)
}

func pluginUsage(w io.Writer) {
	fmt.Fprintln(w, "usage: kubectl dualstack <command> [flags]\n\ncommands:")
	for _, n := range pluginCommands {
		fmt.Fprintf(w, "  %-10s %s\n", n, commands[n].summary)
	}
	fmt.Fprintln(w, "\nRun 'kubectl dualstack <command> --help' for its flags (--kubeconfig, --context,\n-n/--namespace of the webhook, -o table|yaml|json).")
}
