package devapi

import (
	"context"
	"strings"
	"testing"
	"time"

	"github.com/sds-bridge/sds-bridge/internal/testkit"
	"github.com/spiffe/go-spiffe/v2/spiffeid"
	"github.com/spiffe/go-spiffe/v2/workloadapi"
)

func TestIssuerSendsHintsAndFederatedBundles(t *testing.T) {
	srv := startServer(t)
	td := spiffeid.RequireTrustDomainFromString("dev.test")
	fed := spiffeid.RequireTrustDomainFromString("partner.test")
	first, second := spiffeid.RequireFromPath(td, "/dev"), spiffeid.RequireFromPath(td, "/second")
	iss, err := NewIssuer(IssuerConfig{
		TrustDomain:   td,
		SPIFFEIDs:     []spiffeid.ID{first, second},
		Hints:         map[spiffeid.ID]string{second: "second"},
		FederatedWith: []spiffeid.TrustDomain{fed},
		TTL:           time.Minute,
		Logger:        testkit.Logger(t),
	}, srv)
	if err != nil {
		t.Fatal(err)
	}
	w := watch(t, srv.Address())
	ctx, cancel := context.WithCancel(context.Background())
	runErr := make(chan error, 1)
	go func() { runErr <- iss.Run(ctx) }()
	defer func() {
		cancel()
		if err := <-runErr; err != nil {
			t.Errorf("Run: %v", err)
		}
	}()

	c := w.next(t, "two SVIDs", func(*workloadapi.X509Context) bool { return true })
	if len(c.SVIDs) != 2 || c.SVIDs[0].ID != first || c.SVIDs[1].ID != second {
		t.Fatalf("SVIDs %v, want %s then %s", c.SVIDs, first, second)
	}
	if c.SVIDs[0].Hint != "" || c.SVIDs[1].Hint != "second" {
		t.Errorf("hints %q, %q; want \"\", \"second\"", c.SVIDs[0].Hint, c.SVIDs[1].Hint)
	}
	for _, want := range []spiffeid.TrustDomain{td, fed} {
		if b, ok := c.Bundles.Get(want); !ok || b.Empty() {
			t.Errorf("no bundle for %s", want)
		}
	}
	if c.Bundles.Len() != 2 {
		t.Errorf("%d bundles, want 2", c.Bundles.Len())
	}
}

func TestNewIssuerRefusesBadHintsAndFederation(t *testing.T) {
	srv := NewServer(ServerConfig{SocketPath: "unused.sock", Logger: testkit.Logger(t)})
	td := spiffeid.RequireTrustDomainFromString("dev.test")
	a := spiffeid.RequireFromPath(td, "/a")
	for _, tc := range []struct {
		name    string
		cfg     IssuerConfig
		wantErr string
	}{
		{"hint for an unknown ID", IssuerConfig{TrustDomain: td, SPIFFEIDs: []spiffeid.ID{a}, Hints: map[spiffeid.ID]string{spiffeid.RequireFromPath(td, "/b"): "b"}}, "not in SPIFFEIDs"},
		{"federated with itself", IssuerConfig{TrustDomain: td, FederatedWith: []spiffeid.TrustDomain{td}}, `federated trust domain "dev.test"`},
		{"federated twice", IssuerConfig{TrustDomain: td, FederatedWith: []spiffeid.TrustDomain{
			spiffeid.RequireTrustDomainFromString("p.test"), spiffeid.RequireTrustDomainFromString("p.test")}}, `"p.test"`},
	} {
		t.Run(tc.name, func(t *testing.T) {
			if _, err := NewIssuer(tc.cfg, srv); err == nil || !strings.Contains(err.Error(), tc.wantErr) {
				t.Fatalf("NewIssuer() error = %v, want one containing %q", err, tc.wantErr)
			}
		})
	}
}
