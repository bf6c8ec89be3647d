package ops

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net/netip"
	"os"
	"strings"
	"text/tabwriter"
	"time"

	"github.com/spf13/pflag"
	corev1 "k8s.io/api/core/v1"
	"k8s.io/apimachinery/pkg/labels"
	"k8s.io/client-go/kubernetes"
	"k8s.io/client-go/tools/clientcmd"
)

// common are the flags every operator command has.
type common struct {
	kubeconfig, context, namespace, poolsConfigMap, output string
}

func (c *common) add(fs *pflag.FlagSet, output string) {
	fs.StringVar(&c.kubeconfig, "kubeconfig", "", "kubeconfig file (default: $KUBECONFIG, then ~/.kube/config, then in-cluster)")
	// --context and -n are kubectl's spellings, so that `kubectl dualstack`
	// (the same binary as a kubectl plugin, docs/kubectl-plugin.md) takes
	// the flags an operator types by habit. -n names the webhook's
	// namespace, not a namespace of Services: that is where every object
	// these commands read and write first lives.
	fs.StringVar(&c.context, "context", "", "kubeconfig context to use (default: the current context)")
	fs.StringVarP(&c.namespace, "namespace", "n", "", "the webhook's namespace: pools and state ConfigMaps (default: $POD_NAMESPACE, else dualstack-webhook)")
	fs.StringVar(&c.poolsConfigMap, "pools-configmap", DefaultPoolsConfigMap, "name of the pools ConfigMap (key "+"pools.yaml"+")")
	fs.StringVarP(&c.output, "output", "o", output, "output: table, yaml or json")
}

func (c *common) client() (kubernetes.Interface, error) {
	if c.namespace == "" {
		c.namespace = os.Getenv("POD_NAMESPACE")
	}
	if c.namespace == "" {
		c.namespace = "dualstack-webhook"
	}
	rules := clientcmd.NewDefaultClientConfigLoadingRules()
	rules.ExplicitPath = c.kubeconfig
	cfg, err := clientcmd.NewNonInteractiveDeferredLoadingClientConfig(rules, &clientcmd.ConfigOverrides{CurrentContext: c.context}).ClientConfig()
	if err != nil {
		return nil, fmt.Errorf("loading kubeconfig: %w", err)
	}
	cfg.UserAgent = "dualstack-webhook-ops"
	return kubernetes.NewForConfig(cfg)
}

// StatusOf computes the status of a snapshot.
func StatusOf(s *Snapshot) (Status, error) {
	pools, source, note, err := s.PoolsInForce()
	if err != nil {
		if strings.Contains(err.Error(), "outside every ServiceCIDR") {
			// The usual cause: a replaced range's ServiceCIDR went away
			// before its pool entries were pruned.
			err = fmt.Errorf("%w\n(a ServiceCIDR was removed under a pool? `dualstack-webhook apply replace-primary --old-cidr <removed range> --cidr <its replacement> --confirm` prunes it)", err)
		}
		return Status{}, err
	}
	st := ComputeStatus(pools, s.Reservations, s.Services)
	st.Namespace = s.Namespace
	st.PoolsSource, st.PoolsNote = source, note
	for _, sc := range s.ServiceCIDRs {
		cs := ServiceCIDRStatus{Name: sc.Name, CIDRs: sc.Spec.CIDRs, Terminating: sc.DeletionTimestamp != nil}
		for _, c := range sc.Status.Conditions {
			if c.Type == "Ready" {
				cs.Ready = string(c.Status)
			}
		}
		st.ServiceCIDRs = append(st.ServiceCIDRs, cs)
	}
	return st, nil
}

// StatusMain is `dualstack-webhook status`.
func StatusMain(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	fs := pflag.NewFlagSet("dualstack-webhook status", pflag.ContinueOnError)
	fs.SetOutput(stdout)
	var c common
	c.add(fs, OutputTable)
	fs.Usage = func() {
		fmt.Fprintln(stdout, "usage: dualstack-webhook status [flags]\n\nPer pool and family: size, reserved (pending, bound, sticky), live holders\nwithout a reservation, free addresses and the lowest free one; then the\nServices whose clusterIPs lie outside every pool.\n\nflags:")
		fs.PrintDefaults()
	}
	if err := fs.Parse(args); err != nil {
		return err
	}
	if fs.NArg() > 0 {
		return fmt.Errorf("unexpected arguments: %s", strings.Join(fs.Args(), " "))
	}
	if err := checkOutput(c.output); err != nil {
		return err
	}
	cl, err := c.client()
	if err != nil {
		return err
	}
	snap, err := Load(ctx, cl, c.namespace, c.poolsConfigMap)
	if err != nil {
		return err
	}
	st, err := StatusOf(snap)
	if err != nil {
		return err
	}
	if c.output == OutputTable {
		return WriteStatusTable(stdout, st)
	}
	return write(stdout, c.output, st)
}

// scenarioFlags are plan's and apply's.
type scenarioFlags struct {
	common
	cidr, cidrName, poolName, poolRange, nsSel, sel, family, oldCIDR string
}

func (f *scenarioFlags) add(fs *pflag.FlagSet, output string) {
	f.common.add(fs, output)
	fs.StringVar(&f.cidr, "cidr", "", "new range (extend, single-to-dual, replace-primary), e.g. 10.97.0.0/16")
	fs.StringVar(&f.cidrName, "cidr-name", "", "name of the new ServiceCIDR object (default: derived from the scenario and --cidr)")
	fs.StringVar(&f.poolName, "pool-name", "", "pool receiving the new addresses (default: extend/replace-primary: the ServiceCIDR's name; single-to-dual: the default pool)")
	fs.StringVar(&f.poolRange, "pool-range", PoolRangeBand, "addresses of the new range the pool gets: band (KEP-3070 static band) or whole (every allocatable address)")
	fs.StringVar(&f.nsSel, "namespace-selector", "", "label selector on Namespaces choosing Services (single-to-dual, dual-to-single)")
	fs.StringVar(&f.sel, "selector", "", "label selector on Services choosing them (single-to-dual, dual-to-single; '' with the flag given: every Service)")
	fs.StringVar(&f.family, "family", "", "family being removed (dual-to-single): IPv4 or IPv6")
	fs.StringVar(&f.oldCIDR, "old-cidr", "", "range being replaced (replace-primary; default: the primary range of ServiceCIDR kubernetes)")
}

func (f *scenarioFlags) options(fs *pflag.FlagSet) (Options, error) {
	var o Options
	var errs []error
	if f.cidr != "" {
		p, err := netip.ParsePrefix(f.cidr)
		if err != nil {
			errs = append(errs, fmt.Errorf("--cidr: %w", err))
		}
		o.CIDR = p
	}
	if f.oldCIDR != "" {
		p, err := netip.ParsePrefix(f.oldCIDR)
		if err != nil {
			errs = append(errs, fmt.Errorf("--old-cidr: %w", err))
		}
		o.OldCIDR = p
	}
	if fs.Changed("namespace-selector") {
		s, err := labels.Parse(f.nsSel)
		if err != nil {
			errs = append(errs, fmt.Errorf("--namespace-selector: %w", err))
		}
		o.NamespaceSelector = s
	}
	if fs.Changed("selector") {
		s, err := labels.Parse(f.sel)
		if err != nil {
			errs = append(errs, fmt.Errorf("--selector: %w", err))
		}
		o.Selector = s
	}
	o.Family = corev1.IPFamily(f.family)
	o.CIDRName, o.PoolName, o.PoolRange = f.cidrName, f.poolName, f.poolRange
	return o, errors.Join(errs...)
}

func scenarioUsage(w io.Writer, cmd, what string, fs *pflag.FlagSet) func() {
	return func() {
		fmt.Fprintf(w, "usage: dualstack-webhook %s <scenario> [flags]\n\n%s\n\nscenarios:\n", cmd, what)
		tw := tabwriter.NewWriter(w, 0, 4, 2, ' ', 0)
		for _, s := range Scenarios {
			fmt.Fprintf(tw, "  %s\t%s\n", s.Name, s.Summary)
		}
		_ = tw.Flush()
		fmt.Fprintln(w, "\nflags:")
		fs.PrintDefaults()
	}
}

// parseScenarioArgs parses `<scenario> [flags]` (the scenario may also
// follow flags).
func parseScenarioArgs(cmd, what string, args []string, stdout io.Writer, extra func(*pflag.FlagSet)) (Scenario, Options, *scenarioFlags, error) {
	fs := pflag.NewFlagSet("dualstack-webhook "+cmd, pflag.ContinueOnError)
	fs.SetOutput(stdout)
	f := &scenarioFlags{}
	f.add(fs, OutputTable)
	if extra != nil {
		extra(fs)
	}
	fs.SortFlags = false
	fs.Usage = scenarioUsage(stdout, cmd, what, fs)
	if err := fs.Parse(args); err != nil {
		return "", Options{}, nil, err
	}
	if fs.NArg() != 1 {
		fs.Usage()
		return "", Options{}, nil, fmt.Errorf("want exactly one scenario, got %d argument(s)", fs.NArg())
	}
	sc, err := ParseScenario(fs.Arg(0))
	if err != nil {
		return "", Options{}, nil, err
	}
	if err := checkOutput(f.output); err != nil {
		return "", Options{}, nil, err
	}
	o, err := f.options(fs)
	return sc, o, f, err
}

// plan reads the live state and plans the scenario on it: the shared first
// half of `plan` and `apply`, so that both always show the same plan.
func (f *scenarioFlags) plan(ctx context.Context, sc Scenario, o Options) (kubernetes.Interface, *Plan, error) {
	cl, err := f.client()
	if err != nil {
		return nil, nil, err
	}
	snap, err := Load(ctx, cl, f.namespace, f.poolsConfigMap)
	if err != nil {
		return nil, nil, err
	}
	p, err := BuildPlan(snap, sc, o)
	return cl, p, err
}

// PlanMain is `dualstack-webhook plan <scenario>`: read-only.
func PlanMain(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	sc, o, f, err := parseScenarioArgs("plan", "Prints the steps and the affected Services of a ServiceCIDR reconfiguration\n(read-only; `apply` with the same flags performs them).", args, stdout, nil)
	if err != nil {
		return err
	}
	_, p, err := f.plan(ctx, sc, o)
	if err != nil {
		return err
	}
	if f.output == OutputTable {
		return WritePlanTable(stdout, p)
	}
	return write(stdout, f.output, p)
}

// ApplyMain is `dualstack-webhook apply <scenario>`: a dry run unless
// --confirm.
func ApplyMain(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	var confirm bool
	var timeout time.Duration
	sc, o, f, err := parseScenarioArgs("apply", "Performs a ServiceCIDR reconfiguration: a dry run unless --confirm. Idempotent and\nresumable: every step checks the live state first, so running it again after an\ninterruption continues where it stopped.", args, stdout, func(fs *pflag.FlagSet) {
		fs.BoolVar(&confirm, "confirm", false, "perform the changes (without it: print what would be done)")
		fs.DurationVar(&timeout, "timeout", 2*time.Minute, "bound of each wait (ServiceCIDR Ready, a Service's deletion)")
	})
	if err != nil {
		return err
	}
	cl, p, err := f.plan(ctx, sc, o)
	if err != nil {
		return err
	}
	// With -o yaml|json stdout carries only the document; progress goes to
	// stderr so that the output stays parseable.
	progress := stdout
	if f.output != OutputTable {
		progress = stderr
	}
	a := &Applier{Client: cl, Namespace: f.namespace, PoolsConfigMap: f.poolsConfigMap, Out: progress, Confirm: confirm, Timeout: timeout}
	if !confirm {
		fmt.Fprintln(progress, "dry run: nothing is changed; add --confirm to apply")
	}
	outcomes, err := a.Apply(ctx, p)
	if f.output != OutputTable {
		if werr := write(stdout, f.output, map[string]any{"plan": p, "outcomes": outcomes}); werr != nil && err == nil {
			err = werr
		}
	} else {
		// The summary the operator acts on: what could not keep its offset.
		for _, o := range outcomes {
			if o.OffsetKept != nil && !*o.OffsetKept {
				fmt.Fprintf(stdout, "%s %v -> %v: %s\n", o.Service, o.ClusterIPs, o.NewClusterIPs, o.Note)
			}
		}
		for _, n := range p.Notes {
			fmt.Fprintf(stdout, "note: %s\n", n)
		}
	}
	return err
}

// WritePlanTable prints a plan for people.
func WritePlanTable(w io.Writer, p *Plan) error {
	fmt.Fprintf(w, "scenario: %s\n\nsteps:\n", p.Scenario)
	if len(p.Steps) == 0 {
		fmt.Fprintln(w, "  (none: nothing left to do)")
	}
	for i, s := range p.Steps {
		fmt.Fprintf(w, "  %d. %s\n", i+1, s.Description)
	}
	fmt.Fprintln(w, "\nservices:")
	if len(p.Services) == 0 {
		fmt.Fprintln(w, "  (none)")
	} else {
		tw := tabwriter.NewWriter(w, 0, 4, 2, ' ', 0)
		fmt.Fprintf(tw, "  SERVICE\tCHANGE\tCLUSTER IPS\tNEW CLUSTER IPS\tNOTE\n")
		for _, c := range p.Services {
			newIPs := "-"
			if len(c.NewClusterIPs) > 0 {
				newIPs = strings.Join(c.NewClusterIPs, ",")
				if strings.Trim(newIPs, ",") == "" {
					newIPs = "(allocator chooses)"
				}
			} else if c.Change == Upgrade {
				newIPs = "+" + c.IPFamilies[len(c.IPFamilies)-1]
			}
			fmt.Fprintf(tw, "  %s\t%s\t%s\t%s\t%s\n", c.Key(), c.Change, dash(strings.Join(c.ClusterIPs, ",")), newIPs, c.Note)
		}
		if err := tw.Flush(); err != nil {
			return err
		}
	}
	if len(p.Notes) > 0 {
		fmt.Fprintln(w, "\nnotes:")
		for _, n := range p.Notes {
			fmt.Fprintf(w, "  - %s\n", n)
		}
	}
	return nil
}
