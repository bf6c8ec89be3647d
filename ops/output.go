package ops

import (
	"encoding/json"
	"fmt"
	"io"
	"strings"
	"text/tabwriter"

	"sigs.k8s.io/yaml"
)

// Output formats of -o.
const (
	OutputTable = "table"
	OutputYAML  = "yaml"
	OutputJSON  = "json"
)

func checkOutput(o string) error {
	switch o {
	case OutputTable, OutputYAML, OutputJSON:
		return nil
	}
	return fmt.Errorf("-o %q: want table, yaml or json", o)
}

// write renders v as YAML or JSON; table is the caller's (it knows v).
func write(w io.Writer, format string, v any) error {
	switch format {
	case OutputJSON:
		enc := json.NewEncoder(w)
		enc.SetIndent("", "  ")
		return enc.Encode(v)
	case OutputYAML:
		b, err := yaml.Marshal(v)
		if err != nil {
			return err
		}
		_, err = w.Write(b)
		return err
	}
	return fmt.Errorf("unknown output %q", format)
}

// WriteStatusTable prints st for people.
func WriteStatusTable(w io.Writer, st Status) error {
	tw := tabwriter.NewWriter(w, 0, 4, 2, ' ', 0)
	if st.PoolsSource != "" && st.PoolsSource != PoolsFromConfigMap || st.PoolsNote != "" {
		fmt.Fprintf(tw, "Pools from: %s\n", st.PoolsSource)
		if st.PoolsNote != "" {
			fmt.Fprintf(tw, "Note: %s\n", st.PoolsNote)
		}
		fmt.Fprintln(tw)
	}
	fmt.Fprintf(tw, "SERVICECIDR\tCIDRS\tREADY\tTERMINATING\n")
	for _, c := range st.ServiceCIDRs {
		fmt.Fprintf(tw, "%s\t%s\t%s\t%v\n", c.Name, strings.Join(c.CIDRs, ","), dash(c.Ready), c.Terminating)
	}
	fmt.Fprintln(tw)
	fmt.Fprintf(tw, "POOL\tSTATE\tFAMILY\tSIZE\tRESERVED\tPENDING\tBOUND\tSTICKY\tUNRECORDED\tFREE\tLOWEST FREE\tRANGES\n")
	for _, p := range st.Pools {
		name := p.Name
		if p.Default {
			name += " (default)"
		}
		if len(p.Families) == 0 {
			fmt.Fprintf(tw, "%s\t%s\t-\t0\t0\t0\t0\t0\t0\t0\t-\t-\n", name, p.State)
		}
		for _, f := range p.Families {
			fmt.Fprintf(tw, "%s\t%s\t%s\t%s\t%d\t%d\t%d\t%d\t%d\t%s\t%s\t%s\n", name, p.State, f.Family, f.Size,
				f.Reserved, f.Pending, f.Bound, f.Sticky, f.Unrecorded, f.Free, dash(f.LowestFree), strings.Join(f.Ranges, ","))
		}
	}
	fmt.Fprintln(tw)
	if len(st.Outside) == 0 {
		fmt.Fprintln(tw, "Services outside every pool: none")
	} else {
		fmt.Fprintf(tw, "SERVICE OUTSIDE EVERY POOL\tIP\tFAMILY\tIN SERVICECIDR\n")
		for _, o := range st.Outside {
			fmt.Fprintf(tw, "%s/%s\t%s\t%s\t%v\n", o.Namespace, o.Name, o.IP, o.Family, o.InServiceCIDR)
		}
	}
	return tw.Flush()
}

func dash(s string) string {
	if s == "" {
		return "-"
	}
	return s
}
