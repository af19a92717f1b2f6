package devapi

import (
	"cmp"
	"context"
	"crypto/x509"
	"errors"
	"fmt"
	"log/slog"
	"maps"
	"slices"
	"time"

	"github.com/spiffe/go-spiffe/v2/bundle/x509bundle"
	"github.com/spiffe/go-spiffe/v2/spiffeid"
	"github.com/spiffe/go-spiffe/v2/svid/x509svid"
)

// Defaults of IssuerConfig.
const (
	DefaultTTL     = 30 * time.Second
	defaultRootTTL = 24 * time.Hour
)

// DefaultTrustDomain is used when IssuerConfig.TrustDomain is zero.
var DefaultTrustDomain = spiffeid.RequireTrustDomainFromString("example.org")

// IssuerConfig configures the development Issuer.
type IssuerConfig struct {
	// TrustDomain defaults to example.org.
	TrustDomain spiffeid.TrustDomain
	// SPIFFEIDs are issued in this order (the first is the default SVID);
	// all must belong to TrustDomain. Default: spiffe://<td>/dev.
	SPIFFEIDs []spiffeid.ID
	// Hints sets the Workload API hint of some SPIFFEIDs (as `spire-server
	// entry create -hint`), to try default_svid_hint and files[].svid.
	Hints map[spiffeid.ID]string
	// FederatedWith gets each trust domain a CA of its own whose bundle is
	// sent as federated (no SVIDs: SPIRE issues none of another domain).
	FederatedWith []spiffeid.TrustDomain
	// TTL is the SVID lifetime, at least 1s; SVIDs are re-issued at half
	// of it. Default 30s.
	TTL time.Duration
	// RootTTL (default 24h, more than TTL): a root is replaced before a fresh
	// SVID would outlive it, and stays in the bundle while valid.
	RootTTL time.Duration
	// Logger defaults to slog.Default().
	Logger *slog.Logger
}

// Issuer issues SVIDs from an in-memory CA and pushes them to a Server,
// rotating at half-life like SPIRE's agent.
type Issuer struct {
	cfg IssuerConfig
	srv *Server
	log *slog.Logger

	// ca and prev are only touched by the issuing goroutine (Run, or
	// NewIssuer and IssueFirst before Run starts).
	ca   *CA
	prev *CA
	// federated are the CAs of FederatedWith, in that order.
	federated []*CA
	// issuedFirst: IssueFirst ran, so Run waits half a TTL first.
	issuedFirst bool
}

// NewIssuer validates cfg, applies defaults and creates the CA. Nothing is
// issued until Run.
func NewIssuer(cfg IssuerConfig, srv *Server) (*Issuer, error) {
	if srv == nil {
		return nil, errors.New("issuer: nil server")
	}
	cfg = cfg.WithDefaults()
	if err := cfg.Validate(); err != nil {
		return nil, err
	}
	var cas []*CA // own, then federated
	for _, td := range append([]spiffeid.TrustDomain{cfg.TrustDomain}, cfg.FederatedWith...) {
		c, err := NewCA(td, cfg.RootTTL)
		if err != nil {
			return nil, fmt.Errorf("issuer: CA of %s: %w", td, err)
		}
		cas = append(cas, c)
	}
	// JWT-SVIDs live as long as the X.509 ones, so both rotate alike.
	srv.SetJWTTTL(cfg.TTL)
	return &Issuer{
		cfg:       cfg,
		srv:       srv,
		log:       cfg.Logger.With("component", "devapi-issuer", "trust_domain", cfg.TrustDomain.String()),
		ca:        cas[0],
		federated: cas[1:],
	}, nil
}

// WithDefaults fills what cfg leaves zero and copies its slices and map, so
// that the caller's later changes do not reach the issuer.
func (cfg IssuerConfig) WithDefaults() IssuerConfig {
	if cfg.TrustDomain.IsZero() {
		cfg.TrustDomain = DefaultTrustDomain
	}
	if len(cfg.SPIFFEIDs) == 0 {
		cfg.SPIFFEIDs = []spiffeid.ID{spiffeid.RequireFromPath(cfg.TrustDomain, "/dev")}
	}
	cfg.TTL = cmp.Or(cfg.TTL, DefaultTTL)
	cfg.RootTTL = cmp.Or(cfg.RootTTL, defaultRootTTL)
	cfg.Logger = cmp.Or(cfg.Logger, slog.Default())
	cfg.SPIFFEIDs = slices.Clone(cfg.SPIFFEIDs)
	cfg.Hints = maps.Clone(cfg.Hints)
	cfg.FederatedWith = slices.Clone(cfg.FederatedWith)
	return cfg
}

// A ConfigError is a value of IssuerConfig that NewIssuer refuses.
type ConfigError struct {
	// Field is "TTL", "SPIFFE ID" or "federated trust domain"; Index is
	// the value's place in SPIFFEIDs or FederatedWith.
	Field  string
	Index  int
	Value  string
	Reason string
}

func (e *ConfigError) Error() string {
	return fmt.Sprintf("issuer: %s %q: %s", e.Field, e.Value, e.Reason)
}

// Validate checks cfg, defaults applied.
func (cfg IssuerConfig) Validate() error {
	if cfg.TTL < time.Second {
		return &ConfigError{Field: "TTL", Value: cfg.TTL.String(), Reason: "must be at least 1s"}
	}
	if cfg.RootTTL <= cfg.TTL {
		return fmt.Errorf("issuer: root TTL %s must exceed SVID TTL %s", cfg.RootTTL, cfg.TTL)
	}
	for i, id := range cfg.SPIFFEIDs {
		switch {
		case id.IsZero():
			return errors.New("issuer: empty SPIFFE ID")
		case !id.MemberOf(cfg.TrustDomain):
			return &ConfigError{Field: "SPIFFE ID", Index: i, Value: id.String(), Reason: fmt.Sprintf("not in trust domain %q", cfg.TrustDomain.Name())}
		case slices.Contains(cfg.SPIFFEIDs[:i], id):
			return &ConfigError{Field: "SPIFFE ID", Index: i, Value: id.String(), Reason: "listed twice"}
		}
	}
	for id := range cfg.Hints {
		if !slices.Contains(cfg.SPIFFEIDs, id) {
			return fmt.Errorf("issuer: hint for %q, which is not in SPIFFEIDs", id)
		}
	}
	for i, td := range cfg.FederatedWith {
		switch {
		case td.IsZero():
			return &ConfigError{Field: "federated trust domain", Index: i, Value: td.Name(), Reason: "empty"}
		case td == cfg.TrustDomain:
			return &ConfigError{Field: "federated trust domain", Index: i, Value: td.Name(), Reason: "that is the own trust domain"}
		case slices.Contains(cfg.FederatedWith[:i], td):
			return &ConfigError{Field: "federated trust domain", Index: i, Value: td.Name(), Reason: "listed twice"}
		}
	}
	return nil
}

// Run issues SVIDs for every ID and pushes them to the server, again at
// half of TTL, until ctx ends (then it returns nil).
func (i *Issuer) Run(ctx context.Context) error {
	every := i.cfg.TTL / 2
	first := time.Duration(0)
	if i.issuedFirst {
		first = every
	}
	timer := time.NewTimer(first)
	defer timer.Stop()
	for {
		select {
		case <-ctx.Done():
			return nil
		case <-timer.C:
		}
		if err := i.issue(time.Now()); err != nil {
			return err
		}
		timer.Reset(every)
	}
}

// IssueFirst issues before Run, so that the Workload API's very first call
// gets an identity; Run then rotates at half-life from here.
func (i *Issuer) IssueFirst() error {
	i.issuedFirst = true
	return i.issue(time.Now())
}

// issue signs a fresh SVID per ID and pushes them with the current bundle.
func (i *Issuer) issue(now time.Time) error {
	if now.Add(i.cfg.TTL).After(i.ca.Root().NotAfter) {
		next, err := NewCA(i.cfg.TrustDomain, i.cfg.RootTTL)
		if err != nil {
			return fmt.Errorf("issuer: rotate root: %w", err)
		}
		i.prev, i.ca = i.ca, next
		i.log.Info("CA root rotated", "not_after", next.Root().NotAfter)
	}
	svids := make([]*x509svid.SVID, 0, len(i.cfg.SPIFFEIDs))
	for _, id := range i.cfg.SPIFFEIDs {
		svid, err := i.ca.IssueWith(id, i.cfg.TTL, SVIDOptions{Hint: i.cfg.Hints[id]})
		if err != nil {
			return fmt.Errorf("issuer: %w", err)
		}
		svids = append(svids, svid)
	}
	federated := make([]*x509bundle.Bundle, 0, len(i.federated))
	for k, fc := range i.federated {
		// Replaced outright: no SVID here was signed by a federated root.
		if now.Add(i.cfg.TTL).After(fc.Root().NotAfter) {
			next, err := NewCA(fc.TrustDomain(), i.cfg.RootTTL)
			if err != nil {
				return fmt.Errorf("issuer: rotate federated root of %s: %w", fc.TrustDomain(), err)
			}
			i.federated[k], fc = next, next
		}
		federated = append(federated, fc.Bundle())
	}
	resp, err := X509Response(svids, []*x509bundle.Bundle{i.bundleAt(now)}, federated...)
	if err != nil {
		return fmt.Errorf("issuer: %w", err)
	}
	i.srv.SetX509(resp)
	leaf := svids[0].Certificates[0]
	i.log.Debug("SVIDs issued", "count", len(svids), "default_id", svids[0].ID.String(),
		"serial", leaf.SerialNumber.String(), "not_after", leaf.NotAfter)
	return nil
}

// bundleAt is the current root plus the previous one while it is still
// valid, so SVIDs signed by the old root keep verifying during the switch.
func (i *Issuer) bundleAt(now time.Time) *x509bundle.Bundle {
	roots := []*x509.Certificate{i.ca.Root()}
	if i.prev != nil && now.Before(i.prev.Root().NotAfter) {
		roots = append(roots, i.prev.Root())
	}
	return x509bundle.FromX509Authorities(i.cfg.TrustDomain, roots)
}
