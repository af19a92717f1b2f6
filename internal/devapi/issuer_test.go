package devapi

import (
	"context"
	"strings"
	"testing"
	"time"

	"github.com/sds-bridge/sds-bridge/internal/testkit"
	"github.com/spiffe/go-spiffe/v2/bundle/x509bundle"
	"github.com/spiffe/go-spiffe/v2/spiffeid"
	"github.com/spiffe/go-spiffe/v2/svid/x509svid"
	"github.com/spiffe/go-spiffe/v2/workloadapi"
)

func TestIssuerRotatesAtHalfLife(t *testing.T) {
	srv := startServer(t)
	td := spiffeid.RequireTrustDomainFromString("dev.test")
	ids := []spiffeid.ID{spiffeid.RequireFromPath(td, "/backend"), spiffeid.RequireFromPath(td, "/frontend")}
	const ttl = 2 * time.Second
	iss, err := NewIssuer(IssuerConfig{TrustDomain: td, SPIFFEIDs: ids, TTL: ttl, Logger: testkit.Logger(t)}, srv)
	if err != nil {
		t.Fatal(err)
	}
	w := watch(t, srv.Address())
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	runErr := make(chan error, 1)
	go func() { runErr <- iss.Run(ctx) }()

	serials := map[string]bool{}
	for len(serials) < 3 {
		c := w.next(t, "a new SVID", func(*workloadapi.X509Context) bool { return true })
		if len(c.SVIDs) != len(ids) {
			t.Fatalf("%d SVIDs, want %d", len(c.SVIDs), len(ids))
		}
		for i, svid := range c.SVIDs {
			if svid.ID != ids[i] {
				t.Errorf("SVID %d is %s, want %s", i, svid.ID, ids[i])
			}
			if id, _, err := x509svid.Verify(svid.Certificates, c.Bundles); err != nil || id != ids[i] {
				t.Errorf("SVID %s does not verify against the bundle it came with: %s, %v", ids[i], id, err)
			}
			leaf := svid.Certificates[0]
			// The CA back-dates by 10s as SPIRE does; the rest is the TTL.
			if life := leaf.NotAfter.Sub(leaf.NotBefore); life != ttl+10*time.Second {
				t.Errorf("SVID %s lives %s, want TTL %s + 10s back-dating", svid.ID, life, ttl)
			}
		}
		serial := c.DefaultSVID().Certificates[0].SerialNumber.String()
		if serials[serial] {
			t.Fatalf("serial %s delivered twice", serial)
		}
		serials[serial] = true
	}

	cancel()
	select {
	case err := <-runErr:
		if err != nil {
			t.Fatalf("Run: %v", err)
		}
	case <-time.After(testkit.Timeout):
		t.Fatal("Run did not return after ctx ended")
	}
}

func TestNewIssuerConfig(t *testing.T) {
	srv := NewServer(ServerConfig{SocketPath: "unused.sock", Logger: testkit.Logger(t)})
	td := spiffeid.RequireTrustDomainFromString("dev.test")
	other := spiffeid.RequireFromString("spiffe://elsewhere.test/a")
	a := spiffeid.RequireFromPath(td, "/a")
	for _, tc := range []struct {
		name    string
		cfg     IssuerConfig
		srv     *Server
		want    IssuerConfig // checked when wantErr is empty
		wantErr string
	}{
		{name: "defaults", srv: srv, want: IssuerConfig{
			TrustDomain: DefaultTrustDomain,
			SPIFFEIDs:   []spiffeid.ID{spiffeid.RequireFromString("spiffe://example.org/dev")},
			TTL:         30 * time.Second, RootTTL: 24 * time.Hour,
		}},
		{name: "default ID follows the trust domain", srv: srv, cfg: IssuerConfig{TrustDomain: td, TTL: time.Minute}, want: IssuerConfig{
			TrustDomain: td, SPIFFEIDs: []spiffeid.ID{spiffeid.RequireFromPath(td, "/dev")}, TTL: time.Minute, RootTTL: 24 * time.Hour,
		}},
		{name: "nil server", wantErr: "nil server"},
		{name: "ID outside the trust domain", srv: srv, cfg: IssuerConfig{TrustDomain: td, SPIFFEIDs: []spiffeid.ID{other}}, wantErr: "not in trust domain"},
		{name: "empty ID", srv: srv, cfg: IssuerConfig{SPIFFEIDs: []spiffeid.ID{{}}}, wantErr: "empty SPIFFE ID"},
		{name: "ID twice", srv: srv, cfg: IssuerConfig{TrustDomain: td, SPIFFEIDs: []spiffeid.ID{a, a}}, wantErr: "listed twice"},
		{name: "negative TTL", srv: srv, cfg: IssuerConfig{TTL: -time.Second}, wantErr: "must be at least 1s"},
		{name: "root outlived by SVID", srv: srv, cfg: IssuerConfig{TTL: time.Hour, RootTTL: time.Hour}, wantErr: "must exceed"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			iss, err := NewIssuer(tc.cfg, tc.srv)
			if tc.wantErr != "" {
				if err == nil || !strings.Contains(err.Error(), tc.wantErr) {
					t.Fatalf("error %v, want one containing %q", err, tc.wantErr)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			got := iss.Config()
			if got.TrustDomain != tc.want.TrustDomain || got.TTL != tc.want.TTL || got.RootTTL != tc.want.RootTTL ||
				len(got.SPIFFEIDs) != len(tc.want.SPIFFEIDs) || got.SPIFFEIDs[0] != tc.want.SPIFFEIDs[0] || got.Logger == nil {
				t.Fatalf("config %+v, want %+v", got, tc.want)
			}
		})
	}
}

// TestIssuerRootRotation drives issue with chosen times (no waiting): the
// root is replaced before an SVID could outlive it, and the old root stays
// in the bundle while it is valid so older SVIDs still verify.
func TestIssuerRootRotation(t *testing.T) {
	srv := NewServer(ServerConfig{SocketPath: "unused.sock", Logger: testkit.Logger(t)})
	const ttl, rootTTL = time.Minute, time.Hour
	iss, err := NewIssuer(IssuerConfig{TTL: ttl, RootTTL: rootTTL, Logger: testkit.Logger(t)}, srv)
	if err != nil {
		t.Fatal(err)
	}
	current := func() (*x509svid.SVID, *x509bundle.Bundle) {
		t.Helper()
		srv.mu.Lock()
		resp := srv.x509
		srv.mu.Unlock()
		svid, err := x509svid.ParseRaw(resp.Svids[0].X509Svid, resp.Svids[0].X509SvidKey)
		if err != nil {
			t.Fatal(err)
		}
		b, err := x509bundle.ParseRaw(iss.cfg.TrustDomain, resp.Svids[0].Bundle)
		if err != nil {
			t.Fatal(err)
		}
		return svid, b
	}

	firstRoot := iss.ca.Root()
	if err := iss.issue(time.Now()); err != nil {
		t.Fatal(err)
	}
	oldSVID, b := current()
	if iss.ca.Root() != firstRoot || len(b.X509Authorities()) != 1 {
		t.Fatalf("root rotated with %s of its life left", time.Until(firstRoot.NotAfter))
	}

	// Half an SVID lifetime before the root expires: a fresh SVID would
	// outlive it, so the root must change, and both roots are trusted.
	if err := iss.issue(firstRoot.NotAfter.Add(-ttl / 2)); err != nil {
		t.Fatal(err)
	}
	newSVID, b := current()
	if iss.ca.Root() == firstRoot {
		t.Fatal("root not rotated although a fresh SVID would outlive it")
	}
	if !b.HasX509Authority(firstRoot) || !b.HasX509Authority(iss.ca.Root()) || len(b.X509Authorities()) != 2 {
		t.Fatalf("bundle during rotation has %d roots, want old and new", len(b.X509Authorities()))
	}
	for name, svid := range map[string]*x509svid.SVID{"old": oldSVID, "new": newSVID} {
		if _, _, err := x509svid.Verify(svid.Certificates, b); err != nil {
			t.Errorf("%s SVID does not verify against the bundle during rotation: %v", name, err)
		}
	}

	// Once the old root has expired it leaves the bundle.
	if got := iss.bundleAt(firstRoot.NotAfter.Add(time.Second)); got.HasX509Authority(firstRoot) || len(got.X509Authorities()) != 1 {
		t.Fatalf("bundle after the old root expired has %d roots, still the old one: %v",
			len(got.X509Authorities()), got.HasX509Authority(firstRoot))
	}
}
