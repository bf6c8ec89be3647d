package alloc

import (
	"fmt"
	"net/netip"
	"os"
	"slices"
	"sort"
	"strings"

	corev1 "k8s.io/api/core/v1"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/labels"
	"k8s.io/apimachinery/pkg/util/validation"
	"sigs.k8s.io/yaml"
)

// Names of the pool document and where it lives.
const (
	// ConfigAPIVersion is the only apiVersion ParseConfig accepts; a new
	// version gets a converter rather than silent reinterpretation.
	ConfigAPIVersion = "dualstack-webhook.io/v1alpha1"
	// ConfigKind is the document's kind.
	ConfigKind = "PoolConfig"
	// ConfigMapKey is the key of the pools ConfigMap (in the webhook's
	// namespace) that holds the document.
	ConfigMapKey = "pools.yaml"
	// PoolAnnotation on a Service names the pool to allocate from
	// (a documented contract: docs/architecture.md#names).
	PoolAnnotation = "dualstack-webhook.io/pool"
	// StaticBandPool is the name of the implicit pool used when the document
	// defines none: the KEP-3070 static band of every ServiceCIDR.
	StaticBandPool = "static-band"
)

// Strategy chooses among the free addresses of a pool.
type Strategy string

const (
	// StrategyLowest hands out the lowest free address, like node IPAM does:
	// predictable, and it keeps the used part of a pool compact.
	StrategyLowest Strategy = "lowest"
	// StrategyHash starts at an address derived from namespace/name (FNV-1a,
	// so every replica and every run computes the same start) and probes
	// upwards, wrapping, for the first free one. The same Service gets the
	// same IP in every cluster with the same pool, as long as it is free.
	StrategyHash Strategy = "hash"
)

// PoolState says whether a pool hands out new addresses.
type PoolState string

const (
	// PoolActive pools allocate.
	PoolActive PoolState = "active"
	// PoolDraining pools hand out nothing new and keep what they have, so
	// an operator can empty a pool before removing it.
	PoolDraining PoolState = "draining"
)

// PoolConfig is the pools.yaml document.
//
//	apiVersion: dualstack-webhook.io/v1alpha1
//	kind: PoolConfig
//	defaultPool: general
//	pools:
//	- name: general
//	  addresses:
//	    ipv4: ["10.96.0.16/28", "10.96.0.40-10.96.0.60", "10.96.0.99"]
//	    ipv6: ["fd00:10:96::100-fd00:10:96::1ff"]
//	  exclude: ["10.96.0.50"]
//	  strategy: lowest
//	- name: payments
//	  addresses: {ipv4: ["10.96.0.200-10.96.0.250"]}
//	  strategy: hash
//	  namespaces: [payments]
//	  namespaceSelector: {matchLabels: {team: payments}}
//	  serviceSelector: {matchLabels: {tier: edge}}
//	  allowExplicitFrom: selected
type PoolConfig struct {
	// APIVersion must be ConfigAPIVersion.
	APIVersion string `json:"apiVersion"`
	// Kind must be ConfigKind.
	Kind string `json:"kind"`
	// DefaultPool names the pool for Services no other rule selects. Empty
	// means such Services are not pinned (the apiserver allocates them).
	DefaultPool string `json:"defaultPool,omitempty"`
	// Pools never overlap. An empty list means the static band of each
	// ServiceCIDR is the (default) pool.
	Pools []PoolSpec `json:"pools,omitempty"`
}

// PoolSpec is one pool of the document.
type PoolSpec struct {
	// Name is a DNS-1123 label; it is also a label value on state objects.
	Name string `json:"name"`
	// Addresses lists CIDRs, "a-b" ranges (both ends included) and single
	// addresses per family. A CIDR means all of its addresses: the network
	// address (and the IPv4 broadcast) of a ServiceCIDR must be excluded
	// explicitly, since the apiserver never allocates them.
	Addresses FamilyAddresses `json:"addresses"`
	// Exclude lists addresses (same syntax, either family) never handed out.
	Exclude []string `json:"exclude,omitempty"`
	// Strategy is "lowest" (default) or "hash".
	Strategy Strategy `json:"strategy,omitempty"`
	// State is "active" (default) or "draining".
	State PoolState `json:"state,omitempty"`
	// Namespaces selects Services of these namespaces.
	Namespaces []string `json:"namespaces,omitempty"`
	// NamespaceSelector selects Services whose Namespace's labels match.
	NamespaceSelector *metav1.LabelSelector `json:"namespaceSelector,omitempty"`
	// ServiceSelector selects Services whose own labels match. With
	// Namespaces or NamespaceSelector, a Service must satisfy both: one of
	// the namespaces, and the Service selector.
	//
	// A pool with any of the three serves only the Services they select:
	// others can neither name it in the pool annotation nor ask for one of
	// its addresses (see AllowExplicitFrom).
	ServiceSelector *metav1.LabelSelector `json:"serviceSelector,omitempty"`
	// AllowExplicitFrom is "selected" (default): only the Services the pool
	// serves may ask for one of its addresses in spec.clusterIP(s); or
	// "any": anyone may (a shared band of well-known addresses whose
	// automatic allocation is still limited to the selected Services).
	AllowExplicitFrom ExplicitFrom `json:"allowExplicitFrom,omitempty"`
}

// ExplicitFrom says who may request a restricted pool's addresses
// explicitly.
type ExplicitFrom string

const (
	// ExplicitFromSelected: only the Services the pool serves.
	ExplicitFromSelected ExplicitFrom = "selected"
	// ExplicitFromAny: any Service.
	ExplicitFromAny ExplicitFrom = "any"
)

// FamilyAddresses keeps each family's entries apart so that a misplaced
// address is caught as a mixed-up family rather than silently accepted.
type FamilyAddresses struct {
	IPv4 []string `json:"ipv4,omitempty"`
	IPv6 []string `json:"ipv6,omitempty"`
}

// ParseConfig decodes a pools.yaml document strictly: unknown fields are
// errors, because a misspelt "exlude" must not hand out excluded addresses.
// It checks syntax only; Compile checks meaning.
func ParseConfig(data []byte) (*PoolConfig, error) {
	var c PoolConfig
	if err := yaml.UnmarshalStrict(data, &c); err != nil {
		return nil, fmt.Errorf("%s: %w", ConfigMapKey, err)
	}
	if c.APIVersion != ConfigAPIVersion || c.Kind != ConfigKind {
		return nil, fmt.Errorf("%s: want apiVersion %s kind %s, got apiVersion %q kind %q",
			ConfigMapKey, ConfigAPIVersion, ConfigKind, c.APIVersion, c.Kind)
	}
	return &c, nil
}

// AppliedConfigMapName is the name of the ConfigMap in which the replicas
// record the last document they applied from the pools ConfigMap named
// pools (key ConfigMapKey): what they pin from when that ConfigMap is
// absent or unusable.
func AppliedConfigMapName(pools string) string { return pools + "-applied" }

// LoadConfigFile reads and parses a pools.yaml file (for --dev).
func LoadConfigFile(path string) (*PoolConfig, error) {
	b, err := os.ReadFile(path)
	if err != nil {
		return nil, err
	}
	c, err := ParseConfig(b)
	if err != nil {
		return nil, fmt.Errorf("%s: %w", path, err)
	}
	return c, nil
}

// ConfigFromConfigMap parses the pools document of cm. A ConfigMap without
// the key means "no pools configured".
func ConfigFromConfigMap(cm *corev1.ConfigMap) (*PoolConfig, error) {
	if cm == nil {
		return &PoolConfig{APIVersion: ConfigAPIVersion, Kind: ConfigKind}, nil
	}
	data, ok := cm.Data[ConfigMapKey]
	if !ok {
		return &PoolConfig{APIVersion: ConfigAPIVersion, Kind: ConfigKind}, nil
	}
	c, err := ParseConfig([]byte(data))
	if err != nil {
		return nil, fmt.Errorf("ConfigMap %s/%s: %w", cm.Namespace, cm.Name, err)
	}
	return c, nil
}

// Pool is a compiled pool: its usable addresses per family (exclusions
// already removed) and its selection rules. Immutable once compiled.
type Pool struct {
	// Name is the pool's name (the state objects' pool label).
	Name string
	// Strategy is never empty once compiled (lowest by default).
	Strategy Strategy
	// State is never empty once compiled (active by default).
	State PoolState
	// Addresses holds the usable addresses of both families.
	Addresses *IPSet

	namespaces  []string
	nsSelector  labels.Selector // nil: none
	svcSelector labels.Selector // nil: none
	explicitAny bool
}

// Has reports whether the pool has addresses of family f.
func (p *Pool) Has(f corev1.IPFamily) bool { return !p.Addresses.Empty(f) }

// Subject is the Service asking for a pool's address, as admission sees
// it: its namespace and name, its Namespace's labels (from the Namespace
// object) and its own labels (from the object under review).
type Subject struct {
	Namespace, Name string
	// NamespaceLabels are the labels of the Service's Namespace.
	NamespaceLabels map[string]string
	// Labels are the Service's own labels.
	Labels map[string]string
}

func (s Subject) String() string { return s.Namespace + "/" + s.Name }

// Restricted reports whether the pool serves only the Services its
// namespaces, namespaceSelector or serviceSelector select.
func (p *Pool) Restricted() bool {
	return len(p.namespaces) > 0 || p.nsSelector != nil || p.svcSelector != nil
}

// Serves reports whether s may use the pool: every Service for an open
// pool; for a restricted one, a Service in one of its namespaces (listed or
// matching namespaceSelector; any namespace if it has neither) whose labels
// match serviceSelector (if it has one). MetalLB's serviceAllocation
// combines its namespace and Service selectors the same way.
func (p *Pool) Serves(s Subject) bool {
	return p.servesNamespace(s) && p.servesLabels(s)
}

func (p *Pool) servesNamespace(s Subject) bool {
	if len(p.namespaces) == 0 && p.nsSelector == nil {
		return true
	}
	return slices.Contains(p.namespaces, s.Namespace) ||
		(p.nsSelector != nil && p.nsSelector.Matches(labels.Set(s.NamespaceLabels)))
}

func (p *Pool) servesLabels(s Subject) bool {
	return p.svcSelector == nil || p.svcSelector.Matches(labels.Set(s.Labels))
}

// ServesExplicit reports whether s may ask for one of the pool's addresses
// in spec.clusterIP(s): Serves, or anyone if allowExplicitFrom is "any".
func (p *Pool) ServesExplicit(s Subject) bool {
	return p.explicitAny || p.Serves(s)
}

// Audience says whom a pool serves, for denials: "namespaces [payments] or
// namespaces matching team=payments", "Services matching tier=edge in
// namespaces [shop]", "every Service".
func (p *Pool) Audience() string {
	var ns []string
	if len(p.namespaces) > 0 {
		ns = append(ns, fmt.Sprintf("namespaces [%s]", strings.Join(p.namespaces, " ")))
	}
	if p.nsSelector != nil {
		ns = append(ns, "namespaces matching "+p.nsSelector.String())
	}
	nsText := strings.Join(ns, " or ")
	switch {
	case p.svcSelector != nil && nsText != "":
		return "Services matching " + p.svcSelector.String() + " in " + nsText
	case p.svcSelector != nil:
		return "Services matching " + p.svcSelector.String()
	case nsText != "":
		return nsText
	}
	return "every Service"
}

// Pools is a compiled, validated PoolConfig bound to the cluster's
// ServiceCIDRs. Immutable: swap the whole value on change.
type Pools struct {
	// CIDRs are the cluster's ServiceCIDRs the pools were checked against.
	CIDRs []netip.Prefix
	// List is in document order (which breaks ties between selectors).
	List []*Pool
	// Default is the pool of last resort, or nil.
	Default *Pool
	byName  map[string]*Pool
}

// Get returns the pool called name.
func (p *Pools) Get(name string) (*Pool, bool) {
	if p == nil {
		return nil, false
	}
	x, ok := p.byName[name]
	return x, ok
}

// HasServiceSelector reports whether any pool has a serviceSelector.
func (p *Pools) HasServiceSelector() bool {
	if p == nil {
		return false
	}
	for _, x := range p.List {
		if x.svcSelector != nil {
			return true
		}
	}
	return false
}

// PoolOf returns the pool holding ip, or nil.
func (p *Pools) PoolOf(ip netip.Addr) *Pool {
	if p == nil {
		return nil
	}
	for _, x := range p.List {
		if x.Addresses.Contains(ip) {
			return x
		}
	}
	return nil
}

// InServiceCIDR reports whether ip lies in one of the cluster's ServiceCIDRs.
func (p *Pools) InServiceCIDR(ip netip.Addr) bool {
	for _, c := range p.CIDRs {
		if c.Contains(ip) {
			return true
		}
	}
	return false
}

// ConfigError lists every problem of a pool document, each naming the pool
// and the address, so that one kubectl apply shows them all.
type ConfigError struct {
	Problems []string
}

func (e *ConfigError) Error() string {
	return "invalid pool configuration: " + strings.Join(e.Problems, "; ")
}

func (e *ConfigError) addf(format string, a ...any) {
	e.Problems = append(e.Problems, fmt.Sprintf(format, a...))
}

// Compile validates c against the cluster's ServiceCIDRs and builds the
// pools. With no pools in c, the result is one pool, StaticBandPool, made of
// the KEP-3070 static band of every ServiceCIDR (the apiserver's dynamic
// allocation takes the upper band first, so pins there rarely collide).
//
// It rejects, with messages naming pool and address: malformed addresses,
// addresses listed under the wrong family, pools overlapping each other,
// addresses outside every ServiceCIDR, pools containing a ServiceCIDR's
// network address or IPv4 broadcast address, duplicate or invalid names,
// unknown strategies/states, a defaultPool that does not exist and a
// namespace claimed by two pools.
func Compile(c *PoolConfig, cidrs []netip.Prefix) (*Pools, error) {
	e := &ConfigError{}
	if len(cidrs) == 0 {
		e.addf("no ServiceCIDR known: pools cannot be checked")
		return nil, e
	}
	for _, p := range cidrs {
		if !p.IsValid() || p.Masked() != p {
			e.addf("ServiceCIDR %s is not a valid network prefix", p)
		}
	}
	if len(e.Problems) > 0 {
		return nil, e
	}
	out := &Pools{CIDRs: slices.Clone(cidrs), byName: map[string]*Pool{}}
	if c == nil || len(c.Pools) == 0 {
		band := &Pool{Name: StaticBandPool, Strategy: StrategyLowest, State: PoolActive, Addresses: &IPSet{}}
		for _, p := range cidrs {
			if r, ok := StaticBand(p); ok {
				band.Addresses.AddRange(r)
			}
		}
		out.List = []*Pool{band}
		out.Default = band
		out.byName[band.Name] = band
		if c != nil && c.DefaultPool != "" && c.DefaultPool != StaticBandPool {
			e.addf("defaultPool %q: no such pool (no pools are defined)", c.DefaultPool)
			return nil, e
		}
		return out, nil
	}

	nsOwner := map[string]string{}
	for i, ps := range c.Pools {
		name := ps.Name
		where := fmt.Sprintf("pool %q", name)
		if name == "" {
			where = fmt.Sprintf("pools[%d]", i)
			e.addf("%s: name is required", where)
		} else if errs := validation.IsDNS1123Label(name); len(errs) > 0 {
			e.addf("%s: invalid name: %s", where, strings.Join(errs, ", "))
		}
		if _, dup := out.byName[name]; dup && name != "" {
			e.addf("%s: defined twice", where)
		}
		p := &Pool{Name: name, Strategy: ps.Strategy, State: ps.State, Addresses: &IPSet{}}
		if p.Strategy == "" {
			p.Strategy = StrategyLowest
		}
		if p.Strategy != StrategyLowest && p.Strategy != StrategyHash {
			e.addf("%s: unknown strategy %q (want %q or %q)", where, ps.Strategy, StrategyLowest, StrategyHash)
		}
		if p.State == "" {
			p.State = PoolActive
		}
		if p.State != PoolActive && p.State != PoolDraining {
			e.addf("%s: unknown state %q (want %q or %q)", where, ps.State, PoolActive, PoolDraining)
		}
		for _, fam := range []struct {
			f       corev1.IPFamily
			key     string
			entries []string
		}{{corev1.IPv4Protocol, "ipv4", ps.Addresses.IPv4}, {corev1.IPv6Protocol, "ipv6", ps.Addresses.IPv6}} {
			for _, s := range fam.entries {
				r, err := ParseRange(s)
				if err != nil {
					e.addf("%s: addresses.%s: %v", where, fam.key, err)
					continue
				}
				if r.Family() != fam.f {
					e.addf("%s: addresses.%s: %q is an %s address", where, fam.key, s, r.Family())
					continue
				}
				checkInCIDRs(e, where, s, r, cidrs)
				p.Addresses.AddRange(r)
			}
		}
		for _, s := range ps.Exclude {
			r, err := ParseRange(s)
			if err != nil {
				e.addf("%s: exclude: %v", where, err)
				continue
			}
			p.Addresses.RemoveRange(r)
		}
		if p.Addresses.Empty(corev1.IPv4Protocol) && p.Addresses.Empty(corev1.IPv6Protocol) {
			e.addf("%s: has no usable address", where)
		}
		for _, cidr := range cidrs {
			net := cidr.Addr()
			if p.Addresses.Contains(net) {
				e.addf("%s: contains %s, the network address of ServiceCIDR %s, which the apiserver never allocates: add it to exclude", where, net, cidr)
			}
			if net.Is4() {
				bc := RangeFromPrefix(cidr).To
				if p.Addresses.Contains(bc) {
					e.addf("%s: contains %s, the broadcast address of ServiceCIDR %s, which the apiserver never allocates: add it to exclude", where, bc, cidr)
				}
			}
		}
		for _, ns := range ps.Namespaces {
			if prev, ok := nsOwner[ns]; ok && prev != name {
				e.addf("%s: namespace %q is already selected by pool %q", where, ns, prev)
			}
			nsOwner[ns] = name
		}
		p.namespaces = slices.Clone(ps.Namespaces)
		p.nsSelector = compileSelector(e, where, "namespaceSelector", ps.NamespaceSelector)
		p.svcSelector = compileSelector(e, where, "serviceSelector", ps.ServiceSelector)
		switch ps.AllowExplicitFrom {
		case "", ExplicitFromSelected:
		case ExplicitFromAny:
			p.explicitAny = true
		default:
			e.addf("%s: unknown allowExplicitFrom %q (want %q or %q)", where, ps.AllowExplicitFrom, ExplicitFromSelected, ExplicitFromAny)
		}
		for _, q := range out.List {
			if ip, ok := q.Addresses.Overlap(p.Addresses); ok {
				e.addf("%s overlaps pool %q at %s", where, q.Name, ip)
			}
		}
		out.List = append(out.List, p)
		if name != "" {
			out.byName[name] = p
		}
	}
	if c.DefaultPool != "" {
		d, ok := out.byName[c.DefaultPool]
		switch {
		case !ok:
			e.addf("defaultPool %q: no such pool", c.DefaultPool)
		case d.Restricted():
			// The default pool is where every Service nothing else
			// selects goes: it cannot also refuse them.
			e.addf("defaultPool %q serves only %s: the default pool serves every Service no other pool selects; drop its namespaces and selectors or name another defaultPool", c.DefaultPool, d.Audience())
		}
		out.Default = d
	}
	if len(e.Problems) > 0 {
		return nil, e
	}
	return out, nil
}

// compileSelector turns a pool's label selector into a labels.Selector
// (nil when absent). An empty selector is refused: it would match every
// namespace or Service, which is what leaving it out already means, and
// reading "{}" as "nothing" or "everything" is a guess either way.
func compileSelector(e *ConfigError, where, field string, ls *metav1.LabelSelector) labels.Selector {
	if ls == nil {
		return nil
	}
	if len(ls.MatchLabels) == 0 && len(ls.MatchExpressions) == 0 {
		e.addf("%s: %s is empty, which would select everything: leave it out instead", where, field)
		return nil
	}
	sel, err := metav1.LabelSelectorAsSelector(ls)
	if err != nil {
		e.addf("%s: %s: %v", where, field, err)
		return nil
	}
	return sel
}

// checkInCIDRs reports the part of r outside every ServiceCIDR, naming its
// first address.
func checkInCIDRs(e *ConfigError, where, entry string, r Range, cidrs []netip.Prefix) {
	rest := &IPSet{}
	rest.AddRange(r)
	for _, c := range cidrs {
		rest.RemoveRange(RangeFromPrefix(c))
	}
	if out := rest.Ranges(r.Family()); len(out) > 0 {
		e.addf("%s: %q: %s is outside every ServiceCIDR (%s)", where, entry, out[0].From, joinPrefixes(cidrs))
	}
}

func joinPrefixes(ps []netip.Prefix) string {
	s := make([]string, len(ps))
	for i, p := range ps {
		s[i] = p.String()
	}
	return strings.Join(s, ",")
}

// Select returns the pool for a Service: the pool its PoolAnnotation names
// (ErrUnknownPool if there is none of that name, *ErrPoolAccess if that
// pool does not serve s), else the first pool (in document order) listing
// its namespace, else the first pool whose namespaceSelector matches the
// Namespace's labels, else the first pool with only a serviceSelector that
// matches, else the default pool. A pool with a serviceSelector is chosen
// by its namespaces only for Services that also match it. A nil pool with
// a nil error means "do not pin this Service".
func (p *Pools) Select(s Subject, serviceAnnotations map[string]string) (*Pool, error) {
	if p == nil {
		return nil, nil
	}
	if name, ok := serviceAnnotations[PoolAnnotation]; ok {
		x, ok := p.byName[name]
		if !ok {
			known := make([]string, 0, len(p.byName))
			for n := range p.byName {
				known = append(known, n)
			}
			sort.Strings(known)
			return nil, fmt.Errorf("annotation %s=%q: %w (known: %s)", PoolAnnotation, name, ErrUnknownPool, strings.Join(known, ", "))
		}
		if !x.Serves(s) {
			return nil, &ErrPoolAccess{Pool: x.Name, Audience: x.Audience(), Subject: s.String()}
		}
		return x, nil
	}
	for _, x := range p.List {
		if slices.Contains(x.namespaces, s.Namespace) && x.servesLabels(s) {
			return x, nil
		}
	}
	set := labels.Set(s.NamespaceLabels)
	for _, x := range p.List {
		if x.nsSelector != nil && x.nsSelector.Matches(set) && x.servesLabels(s) {
			return x, nil
		}
	}
	for _, x := range p.List {
		if x.svcSelector != nil && len(x.namespaces) == 0 && x.nsSelector == nil && x.servesLabels(s) {
			return x, nil
		}
	}
	return p.Default, nil
}

// ValidateChange rejects a new configuration that would orphan or move an
// address in use: every reservation (pending, bound or sticky) must still lie
// in a pool of the same name. MetalLB silently re-addresses Services on such
// edits (metallb#2449); we make the operator free or drain them first.
func ValidateChange(next *Pools, reservations []Reservation) error {
	e := &ConfigError{}
	rs := slices.Clone(reservations)
	slices.SortFunc(rs, func(a, b Reservation) int { return a.IP.Compare(b.IP) })
	for _, r := range rs {
		if r.Pool == "" {
			continue // a recorded request outside every pool: no pool to keep it in
		}
		q := next.PoolOf(r.IP)
		switch {
		case q == nil:
			e.addf("pool %q: address %s is %s by %s and would leave every pool", r.Pool, r.IP, r.State, r.Owner)
		case q.Name != r.Pool:
			e.addf("pool %q: address %s is %s by %s and would move to pool %q", r.Pool, r.IP, r.State, r.Owner, q.Name)
		}
	}
	if len(e.Problems) > 0 {
		return e
	}
	return nil
}

// SubjectFunc finds the live Service holding a reservation, as pools see it
// (its labels and its Namespace's labels); ok is false when there is none
// to check (deleted meanwhile, or not known yet).
type SubjectFunc func(owner Owner) (s Subject, ok bool)

// ValidateAccessChange rejects a new configuration whose namespaces,
// namespaceSelector, serviceSelector or allowExplicitFrom would leave a
// bound Service outside the pool whose address it holds. Nothing is ever
// evicted, so such a change would only leave the pool's rules untrue: the
// operator moves the Service first, or widens the rules. Only a change does
// this: a Service that prev already did not serve (imported while the
// webhook was down, or whose labels changed since) does not block edits.
// Pending reservations are not checked (their Service is still being
// admitted, and admission checks it against the pools in force then);
// sticky ones have no Service to check.
func ValidateAccessChange(prev, next *Pools, reservations []Reservation, subjects SubjectFunc) error {
	if subjects == nil {
		return nil
	}
	e := &ConfigError{}
	rs := slices.Clone(reservations)
	slices.SortFunc(rs, func(a, b Reservation) int { return a.IP.Compare(b.IP) })
	for _, r := range rs {
		if r.State != StateBound || r.Pool == "" {
			continue
		}
		q := next.PoolOf(r.IP)
		if q == nil || q.Name != r.Pool {
			continue // ValidateChange reports it
		}
		s, ok := subjects(r.Owner)
		if !ok || q.ServesExplicit(s) {
			continue
		}
		if old, ok := prev.Get(r.Pool); ok && !old.ServesExplicit(s) {
			continue
		}
		e.addf("pool %q: address %s is bound to %s, which the pool would no longer serve (it would serve only %s): move or delete that Service first, or keep it selected",
			r.Pool, r.IP, s, q.Audience())
	}
	if len(e.Problems) > 0 {
		return e
	}
	return nil
}
