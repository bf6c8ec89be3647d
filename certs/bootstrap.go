package certs

import (
	"bytes"
	"context"
	"crypto/tls"
	"encoding/json"
	"errors"
	"fmt"
	"net"
	"slices"
	"sync"
	"sync/atomic"
	"time"

	"go.uber.org/zap"
	corev1 "k8s.io/api/core/v1"
	apierrors "k8s.io/apimachinery/pkg/api/errors"
	metav1 "k8s.io/apimachinery/pkg/apis/meta/v1"
	"k8s.io/apimachinery/pkg/types"
	"k8s.io/client-go/kubernetes"
)

// Keys of the CA Secret. tls.crt/tls.key hold the newest CA so that the
// Secret reads like any kubernetes.io/tls one; previous.* hold the CA it
// replaced until that one expires; ca.crt is the trust bundle (newest first)
// that goes into the webhook configurations' caBundle.
const (
	SecretKeyCACert       = "tls.crt"
	SecretKeyCAKey        = "tls.key"
	SecretKeyPreviousCert = "previous.crt"
	SecretKeyPreviousKey  = "previous.key"
	SecretKeyBundle       = "ca.crt"
)

// ManagedByLabel marks the CA Secret, so `kubectl get secrets -l` finds it.
const ManagedByLabel = "dualstack-webhook.io/managed-by"

// Defaults of BootstrapConfig. A one-year CA renewed four months ahead
// leaves months for a replica that was down to catch up; 24 h serving
// certificates limit what a leaked pod key is worth (the key never leaves
// the pod's memory). The activation delay must exceed the time every replica
// and the apiserver's webhook informer need to see a new caBundle: two
// resyncs plus margin.
const (
	DefaultCADuration        = 365 * 24 * time.Hour
	DefaultCARenewBefore     = 120 * 24 * time.Hour
	DefaultCertDuration      = 24 * time.Hour
	DefaultCertRenewBefore   = 8 * time.Hour
	DefaultResync            = time.Minute
	DefaultCAActivationDelay = 5 * time.Minute
)

// BootstrapConfig configures a Bootstrap source.
type BootstrapConfig struct {
	// Client talks to the apiserver; it needs get/create/update on the CA
	// Secret and get/patch on the named webhook configurations.
	Client kubernetes.Interface
	// Namespace and SecretName locate the CA Secret shared by all replicas.
	Namespace, SecretName string
	// DNSNames and IPAddresses go into the serving certificate; see
	// ServiceDNSNames for the names the apiserver dials.
	DNSNames    []string
	IPAddresses []net.IP
	// MutatingWebhookConfigurations and ValidatingWebhookConfigurations are
	// the configurations (by name) whose every webhook gets the CA bundle.
	MutatingWebhookConfigurations, ValidatingWebhookConfigurations []string

	// Durations; zero means the Default* constant.
	CADuration, CARenewBefore, CertDuration, CertRenewBefore time.Duration
	// CAActivationDelay is how long a new CA sits in caBundle before serving
	// certificates are issued from it (the old CA keeps issuing meanwhile).
	CAActivationDelay time.Duration
	// Resync is the period of the reconcile loop (CA, caBundle, renewal).
	Resync time.Duration

	// Log is required in spirit; nil means no logs.
	Log *zap.Logger
	// Now is the clock; nil means time.Now. Tests move it to force renewals.
	Now func() time.Time
}

// ServiceDNSNames are the names under which the apiserver reaches a
// Service-backed webhook (it dials <svc>.<ns>.svc); the shorter forms help
// humans curling from inside the cluster.
func ServiceDNSNames(service, namespace string) []string {
	return []string{service, service + "." + namespace, service + "." + namespace + ".svc"}
}

// Bootstrap is a Source for clusters without cert-manager. All replicas share
// one CA kept in a Secret: the first to find it missing creates it, the
// others get AlreadyExists and read the winner's, so they converge. Each
// replica mints its own short-lived serving certificate from that CA (the
// key stays in memory), renews it before expiry, and writes the CA bundle
// into the webhook configurations.
//
// CA rotation, without a moment where the apiserver distrusts us:
//
//	t0        CA renewal due: new CA created, Secret = {new, previous: old},
//	          caBundle = new+old; replicas keep issuing from old
//	t0+delay  new CA active: replicas re-issue from it (old still trusted)
//	old expiry  old dropped from the Secret and from caBundle
type Bootstrap struct {
	cfg BootstrapConfig
	log *zap.Logger
	now func() time.Time

	cur         atomic.Pointer[keyPair] // serving pair
	bundleSaved atomic.Bool             // caBundle written at least once
	lastErr     atomic.Pointer[error]

	mu sync.Mutex // serialises Sync
}

var _ Source = (*Bootstrap)(nil)

// NewBootstrap checks cfg and fills its defaults. Nothing is contacted until
// Start (or Sync).
func NewBootstrap(cfg BootstrapConfig) (*Bootstrap, error) {
	if cfg.Client == nil || cfg.Namespace == "" || cfg.SecretName == "" {
		return nil, errors.New("certs: bootstrap needs a client, a namespace and a Secret name")
	}
	if len(cfg.DNSNames) == 0 && len(cfg.IPAddresses) == 0 {
		return nil, errors.New("certs: bootstrap needs at least one DNS name or IP for the serving certificate")
	}
	def := func(d *time.Duration, v time.Duration) {
		if *d <= 0 {
			*d = v
		}
	}
	def(&cfg.CADuration, DefaultCADuration)
	def(&cfg.CARenewBefore, DefaultCARenewBefore)
	def(&cfg.CertDuration, DefaultCertDuration)
	def(&cfg.CertRenewBefore, DefaultCertRenewBefore)
	def(&cfg.Resync, DefaultResync)
	def(&cfg.CAActivationDelay, DefaultCAActivationDelay)
	if cfg.CARenewBefore >= cfg.CADuration || cfg.CertRenewBefore >= cfg.CertDuration {
		return nil, errors.New("certs: renew-before must be shorter than the duration")
	}
	if cfg.Log == nil {
		cfg.Log = zap.NewNop()
	}
	if cfg.Now == nil {
		cfg.Now = time.Now
	}
	return &Bootstrap{
		cfg: cfg,
		log: cfg.Log.With(zap.String("secret", cfg.Namespace+"/"+cfg.SecretName)),
		now: cfg.Now,
	}, nil
}

// GetCertificate returns this replica's serving certificate.
func (b *Bootstrap) GetCertificate(*tls.ClientHelloInfo) (*tls.Certificate, error) {
	p := b.cur.Load()
	if p == nil {
		return nil, errors.New("certs: no serving certificate issued yet")
	}
	return p.tlsCertificate(), nil
}

// NotAfter is the expiry of the serving certificate.
func (b *Bootstrap) NotAfter() time.Time {
	if p := b.cur.Load(); p != nil {
		return p.cert.NotAfter
	}
	return time.Time{}
}

// Ready is nil once a valid serving certificate exists and the CA bundle
// reached the webhook configurations: before that the apiserver cannot
// verify us and traffic would only fail.
func (b *Bootstrap) Ready() error {
	p := b.cur.Load()
	switch {
	case p == nil:
		if e := b.lastErr.Load(); e != nil {
			return fmt.Errorf("no serving certificate yet: %w", *e)
		}
		return errors.New("no serving certificate yet")
	case !b.now().Before(p.cert.NotAfter):
		return fmt.Errorf("serving certificate expired at %s", p.cert.NotAfter.UTC().Format(time.RFC3339))
	case !b.bundleSaved.Load() && b.hasConfigs():
		if e := b.lastErr.Load(); e != nil {
			return fmt.Errorf("CA bundle not yet written to the webhook configurations: %w", *e)
		}
		return errors.New("CA bundle not yet written to the webhook configurations")
	}
	return nil
}

func (b *Bootstrap) hasConfigs() bool {
	return len(b.cfg.MutatingWebhookConfigurations)+len(b.cfg.ValidatingWebhookConfigurations) > 0
}

// Start syncs at once, then every Resync, retrying failures sooner (1 s
// doubling up to Resync) until ctx ends.
func (b *Bootstrap) Start(ctx context.Context) error {
	backoff := time.Second
	for {
		wait := b.cfg.Resync
		if err := b.Sync(ctx); err != nil {
			if ctx.Err() != nil {
				return nil
			}
			b.log.Warn("certificate bootstrap failed, retrying", zap.Duration("in", backoff), zap.Error(err))
			wait = backoff
			backoff = min(2*backoff, b.cfg.Resync)
		} else {
			backoff = time.Second
		}
		select {
		case <-ctx.Done():
			return nil
		case <-time.After(wait):
		}
	}
}

// Sync does one reconcile: make sure the shared CA exists (rotating it when
// due), write its bundle into the webhook configurations, and (re)issue the
// serving certificate when missing, due for renewal, or not from the issuing
// CA. Start calls it; tests call it directly.
func (b *Bootstrap) Sync(ctx context.Context) error {
	b.mu.Lock()
	defer b.mu.Unlock()
	err := b.sync(ctx)
	if err != nil {
		b.lastErr.Store(&err)
	} else {
		b.lastErr.Store(nil)
	}
	return err
}

func (b *Bootstrap) sync(ctx context.Context) error {
	st, err := b.ensureCA(ctx)
	if err != nil {
		return err
	}
	if err := b.ensureBundle(ctx, st.bundle); err != nil {
		return err
	}
	b.bundleSaved.Store(true)
	return b.ensureServing(st)
}

// caState is the parsed CA Secret.
type caState struct {
	current  *keyPair
	previous *keyPair // nil when none or expired
	bundle   []byte
}

// ensureCA returns the shared CA, creating or rotating it as needed. Races
// between replicas are settled by the apiserver: Create fails with
// AlreadyExists and Update with Conflict for all but one, and the losers
// adopt what the winner wrote.
func (b *Bootstrap) ensureCA(ctx context.Context) (*caState, error) {
	secrets := b.cfg.Client.CoreV1().Secrets(b.cfg.Namespace)
	for attempt := 0; ; attempt++ {
		if attempt == 5 {
			return nil, errors.New("CA Secret keeps changing under us (5 conflicts in a row)")
		}
		now := b.now()
		sec, err := secrets.Get(ctx, b.cfg.SecretName, metav1.GetOptions{})
		if apierrors.IsNotFound(err) {
			st, err := b.newState(nil, now)
			if err != nil {
				return nil, err
			}
			_, err = secrets.Create(ctx, b.secretFor(nil, st), metav1.CreateOptions{})
			if apierrors.IsAlreadyExists(err) {
				b.log.Info("another replica created the CA first, adopting it")
				continue
			}
			if err != nil {
				return nil, fmt.Errorf("creating CA Secret: %w", err)
			}
			b.log.Info("created the webhook CA", zap.Time("notAfter", st.current.cert.NotAfter))
			return st, nil
		}
		if err != nil {
			return nil, fmt.Errorf("reading CA Secret: %w", err)
		}

		st, perr := parseState(sec, now)
		var next *caState
		switch {
		case perr != nil:
			// Replacing an unreadable CA is the only way to recover; the
			// previous caBundle is lost, so log loudly.
			b.log.Error("CA Secret is unreadable, replacing it with a new CA", zap.Error(perr))
			if next, err = b.newState(nil, now); err != nil {
				return nil, err
			}
		case !now.Before(st.current.cert.NotAfter.Add(-b.cfg.CARenewBefore)):
			b.log.Info("CA renewal due, rotating; the old CA stays trusted until it expires",
				zap.Time("oldNotAfter", st.current.cert.NotAfter))
			if next, err = b.newState(st.current, now); err != nil {
				return nil, err
			}
		case !bytes.Equal(st.bundle, sec.Data[SecretKeyBundle]) || (st.previous == nil && len(sec.Data[SecretKeyPreviousCert]) > 0):
			next = st // an expired previous CA was pruned: persist it
		default:
			return st, nil
		}
		_, err = secrets.Update(ctx, b.secretFor(sec, next), metav1.UpdateOptions{})
		if apierrors.IsConflict(err) {
			continue // someone else rotated or pruned: re-read and adopt
		}
		if err != nil {
			return nil, fmt.Errorf("updating CA Secret: %w", err)
		}
		return next, nil
	}
}

// newState makes a fresh CA; previous (the CA it replaces) stays trusted.
func (b *Bootstrap) newState(previous *keyPair, now time.Time) (*caState, error) {
	ca, err := newCA(fmt.Sprintf("dualstack-webhook-ca@%d", now.Unix()), b.cfg.CADuration, now)
	if err != nil {
		return nil, err
	}
	st := &caState{current: ca, previous: previous}
	st.bundle = st.bundlePEM()
	return st, nil
}

func (st *caState) bundlePEM() []byte {
	out := slices.Clone(st.current.certPEM)
	if st.previous != nil {
		out = append(out, st.previous.certPEM...)
	}
	return out
}

// parseState reads the Secret; an expired previous CA is dropped.
func parseState(sec *corev1.Secret, now time.Time) (*caState, error) {
	cur, err := parseKeyPair(sec.Data[SecretKeyCACert], sec.Data[SecretKeyCAKey])
	if err != nil {
		return nil, fmt.Errorf("current CA: %w", err)
	}
	if !cur.cert.IsCA {
		return nil, errors.New("current CA: certificate is not a CA")
	}
	st := &caState{current: cur}
	if len(sec.Data[SecretKeyPreviousCert]) > 0 {
		prev, err := parseKeyPair(sec.Data[SecretKeyPreviousCert], sec.Data[SecretKeyPreviousKey])
		if err == nil && now.Before(prev.cert.NotAfter) {
			st.previous = prev
		}
	}
	st.bundle = st.bundlePEM()
	return st, nil
}

// secretFor renders st into a Secret; base (nil on create) supplies the
// resourceVersion so that the update is a compare-and-swap.
func (b *Bootstrap) secretFor(base *corev1.Secret, st *caState) *corev1.Secret {
	sec := &corev1.Secret{}
	if base != nil {
		sec = base.DeepCopy()
	}
	sec.Name, sec.Namespace = b.cfg.SecretName, b.cfg.Namespace
	if sec.Labels == nil {
		sec.Labels = map[string]string{}
	}
	sec.Labels[ManagedByLabel] = "dualstack-webhook"
	sec.Type = corev1.SecretTypeOpaque
	sec.Data = map[string][]byte{
		SecretKeyCACert: st.current.certPEM,
		SecretKeyCAKey:  st.current.keyPEM,
		SecretKeyBundle: st.bundle,
	}
	if st.previous != nil {
		sec.Data[SecretKeyPreviousCert] = st.previous.certPEM
		sec.Data[SecretKeyPreviousKey] = st.previous.keyPEM
	}
	return sec
}

// ensureBundle sets caBundle on every webhook of the named configurations
// that lacks it. A strategic-merge patch keyed by webhook name touches only
// that field, so Helm keeps owning the rest of the object; RBAC needs only
// get and patch on those names.
func (b *Bootstrap) ensureBundle(ctx context.Context, bundle []byte) error {
	ar := b.cfg.Client.AdmissionregistrationV1()
	for _, name := range b.cfg.MutatingWebhookConfigurations {
		c, err := ar.MutatingWebhookConfigurations().Get(ctx, name, metav1.GetOptions{})
		if err != nil {
			return fmt.Errorf("reading MutatingWebhookConfiguration %s: %w", name, err)
		}
		var stale []string
		for _, w := range c.Webhooks {
			if !bytes.Equal(w.ClientConfig.CABundle, bundle) {
				stale = append(stale, w.Name)
			}
		}
		if len(stale) > 0 {
			if _, err := ar.MutatingWebhookConfigurations().Patch(ctx, name, types.StrategicMergePatchType, bundlePatch(stale, bundle), metav1.PatchOptions{}); err != nil {
				return fmt.Errorf("writing caBundle of MutatingWebhookConfiguration %s: %w", name, err)
			}
			b.log.Info("caBundle written", zap.String("mutatingWebhookConfiguration", name), zap.Strings("webhooks", stale))
		}
	}
	for _, name := range b.cfg.ValidatingWebhookConfigurations {
		c, err := ar.ValidatingWebhookConfigurations().Get(ctx, name, metav1.GetOptions{})
		if err != nil {
			return fmt.Errorf("reading ValidatingWebhookConfiguration %s: %w", name, err)
		}
		var stale []string
		for _, w := range c.Webhooks {
			if !bytes.Equal(w.ClientConfig.CABundle, bundle) {
				stale = append(stale, w.Name)
			}
		}
		if len(stale) > 0 {
			if _, err := ar.ValidatingWebhookConfigurations().Patch(ctx, name, types.StrategicMergePatchType, bundlePatch(stale, bundle), metav1.PatchOptions{}); err != nil {
				return fmt.Errorf("writing caBundle of ValidatingWebhookConfiguration %s: %w", name, err)
			}
			b.log.Info("caBundle written", zap.String("validatingWebhookConfiguration", name), zap.Strings("webhooks", stale))
		}
	}
	return nil
}

// bundlePatch is {"webhooks":[{"name":N,"clientConfig":{"caBundle":B}},...]};
// webhooks merge by name in admissionregistration/v1.
func bundlePatch(names []string, bundle []byte) []byte {
	type cc struct {
		CABundle []byte `json:"caBundle"`
	}
	type wh struct {
		Name         string `json:"name"`
		ClientConfig cc     `json:"clientConfig"`
	}
	p := struct {
		Webhooks []wh `json:"webhooks"`
	}{}
	for _, n := range names {
		p.Webhooks = append(p.Webhooks, wh{Name: n, ClientConfig: cc{CABundle: bundle}})
	}
	out, _ := json.Marshal(p) // cannot fail: strings and bytes only
	return out
}

// issuer picks the CA to sign with: the newest once it has been trusted for
// CAActivationDelay (or when it is the only one), else the previous.
func (b *Bootstrap) issuer(st *caState, now time.Time) *keyPair {
	activeAt := st.current.cert.NotBefore.Add(backdate + b.cfg.CAActivationDelay)
	if st.previous == nil || !now.Before(activeAt) {
		return st.current
	}
	return st.previous
}

func (b *Bootstrap) ensureServing(st *caState) error {
	now := b.now()
	ca := b.issuer(st, now)
	cur := b.cur.Load()
	reason := ""
	switch {
	case cur == nil:
		reason = "none yet"
	case cur.cert.CheckSignatureFrom(ca.cert) != nil:
		reason = "issuing CA changed"
	case !now.Before(cur.cert.NotAfter.Add(-b.renewBefore(cur))):
		reason = "renewal due"
	case !slices.Equal(cur.cert.DNSNames, b.cfg.DNSNames):
		reason = "DNS names changed"
	default:
		return nil
	}
	kp, err := issueServing(ca, b.cfg.DNSNames, b.cfg.IPAddresses, b.cfg.CertDuration, now)
	if err != nil {
		return err
	}
	b.cur.Store(kp)
	b.log.Info("serving certificate issued", zap.String("reason", reason),
		zap.String("issuer", ca.cert.Subject.CommonName), zap.Time("notAfter", kp.cert.NotAfter))
	return nil
}

// renewBefore scales CertRenewBefore down for a certificate cut short by its
// CA's expiry, so it is renewed a third of its life before the end rather
// than immediately.
func (b *Bootstrap) renewBefore(kp *keyPair) time.Duration {
	life := kp.cert.NotAfter.Sub(kp.cert.NotBefore.Add(backdate))
	return min(b.cfg.CertRenewBefore, life/3)
}
