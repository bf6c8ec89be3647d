// Package renderpolicy is the render-policy command: it prints the
// MutatingAdmissionPolicy + binding that apply the webhook's ipFamilyPolicy
// default without a webhook (docs/defaulting-policy.md). The objects are
// built by policy/admissionpolicy; this package only parses flags and writes.
package renderpolicy

import (
	"context"
	"fmt"
	"io"

	"github.com/dualstack-webhook/dualstack-webhook/policy/admissionpolicy"
	"github.com/spf13/pflag"
	corev1 "k8s.io/api/core/v1"
)

// Main runs `dualstack-webhook render-policy [flags]`.
func Main(_ context.Context, args []string, stdout, stderr io.Writer) error {
	fs := pflag.NewFlagSet("render-policy", pflag.ContinueOnError)
	fs.SetOutput(stderr)
	var def string
	o := admissionpolicy.Options{}
	fs.StringVar(&def, "default-ip-family-policy", "", "ipFamilyPolicy for new Services that set none: SingleStack, PreferDualStack or RequireDualStack (default: the apiserver's; Namespace annotations still apply)")
	fs.StringVar(&o.Name, "name", admissionpolicy.DefaultName, "name of the MutatingAdmissionPolicy and of its binding")
	fs.StringSliceVar(&o.ExcludeNamespaces, "exclude-namespaces", []string{"kube-system"}, "namespaces whose Services are never defaulted")
	fs.Usage = func() {
		fmt.Fprintln(stderr, "usage: dualstack-webhook render-policy [flags] | kubectl apply -f -\n\n"+
			"Prints a MutatingAdmissionPolicy and its binding (admissionregistration.k8s.io/v1, Kubernetes >= 1.36)\n"+
			"that give new Services the same default ipFamilyPolicy as the webhook's defaulting, with no webhook.\n\nflags:")
		fs.PrintDefaults()
	}
	if err := fs.Parse(args); err != nil {
		return err
	}
	if fs.NArg() > 0 {
		return fmt.Errorf("unexpected arguments %q", fs.Args())
	}
	if def != "" {
		p := corev1.IPFamilyPolicy(def)
		o.DefaultPolicy = &p
	}
	out, err := admissionpolicy.YAML(o)
	if err != nil {
		return err
	}
	_, err = stdout.Write(out)
	return err
}
