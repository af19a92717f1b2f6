//go:build e2e

package e2e

import (
	"context"
	"fmt"
	"os"
	"path/filepath"
	"testing"
	"time"

	"github.com/sds-bridge/sds-bridge/internal/devapi"
	"github.com/spiffe/go-spiffe/v2/spiffeid"
	"github.com/spiffe/go-spiffe/v2/svid/x509svid"
	"github.com/spiffe/go-spiffe/v2/workloadapi"
)

// TestSPIREHarness checks the SPIRE harness on its own: the agent serves the
// registered identity to a go-spiffe client, the SVID has the entry's TTL and
// verifies against the server's bundle, it rotates, and a killed agent comes
// back with the same trust domain.
func TestSPIREHarness(t *testing.T) {
	work := newWorkDir(t)
	s := startSPIRE(t, work, spireEntry{Path: "/backend", Selector: fmt.Sprintf("unix:uid:%d", os.Getuid())})
	ctx, cancel := context.WithTimeout(t.Context(), 2*time.Minute)
	defer cancel()

	src := newX509Source(t, ctx, s.WorkloadAPIAddr())
	first, err := src.GetX509SVID()
	if err != nil {
		t.Fatal(err)
	}
	if want := s.ID("/backend"); first.ID != want {
		t.Fatalf("SVID ID = %s, want %s", first.ID, want)
	}
	leaf := first.Certificates[0]
	// SPIRE back-dates NotBefore by 10 s; the entry's TTL bounds the rest.
	if life := leaf.NotAfter.Sub(leaf.NotBefore); life > (x509SVIDTTL+11)*time.Second {
		t.Fatalf("SVID lifetime %s: the entry's %d s TTL was not applied", life, x509SVIDTTL)
	}
	if _, _, err := x509svid.Verify(first.Certificates, s.Bundle(t)); err != nil {
		t.Fatalf("SVID does not verify against the server's bundle: %v", err)
	}

	second := waitNewSVID(t, ctx, src, leaf.SerialNumber.String())
	t.Logf("rotated: serial %s → %s", leaf.SerialNumber, second.Certificates[0].SerialNumber)

	s.KillAgent(t)
	s.StartAgent(t, "")
	third := waitNewSVID(t, ctx, src, second.Certificates[0].SerialNumber.String())
	if _, _, err := x509svid.Verify(third.Certificates, s.Bundle(t)); err != nil {
		t.Fatalf("SVID after the agent restart does not verify: %v", err)
	}
}

// newX509Source opens a go-spiffe X509Source on the agent, as a workload
// would, closed when the test ends.
func newX509Source(t testing.TB, ctx context.Context, addr string) *workloadapi.X509Source {
	t.Helper()
	src, err := workloadapi.NewX509Source(ctx, workloadapi.WithClientOptions(workloadapi.WithAddr(addr)))
	if err != nil {
		t.Fatalf("e2e: X509Source on %s: %v", addr, err)
	}
	t.Cleanup(func() { _ = src.Close() })
	return src
}

// waitNewSVID waits until src holds an SVID whose leaf serial is not
// oldSerial.
func waitNewSVID(t testing.TB, ctx context.Context, src *workloadapi.X509Source, oldSerial string) *x509svid.SVID {
	t.Helper()
	for {
		svid, err := src.GetX509SVID()
		if err != nil {
			t.Fatal(err)
		}
		if svid.Certificates[0].SerialNumber.String() != oldSerial {
			return svid
		}
		select {
		case <-src.Updated():
		case <-ctx.Done():
			t.Fatalf("e2e: no new SVID after serial %s: %v", oldSerial, ctx.Err())
		}
	}
}

// TestPostgresHarness checks the PostgreSQL harness on its own, with files
// the test writes from an in-memory CA: the server starts as its own OS user
// with TLS from a credential folder, a pgx client with a client SVID read
// from a folder (spiffe layout) gets in over TLS, and the server turns away a
// client without a certificate, and the client a server with another ID.
func TestPostgresHarness(t *testing.T) {
	_, pgUser := requirePostgres(t)
	work := newWorkDir(t)
	td := spiffeid.RequireTrustDomainFromString(trustDomain)
	authority, err := devapi.NewCA(td, time.Hour)
	if err != nil {
		t.Fatal(err)
	}
	dbID, clientID := spiffeid.RequireFromPath(td, "/db"), spiffeid.RequireFromPath(td, "/backend")
	dbSVID, err := authority.Issue(dbID, time.Hour)
	if err != nil {
		t.Fatal(err)
	}
	clientSVID, err := authority.Issue(clientID, time.Hour)
	if err != nil {
		t.Fatal(err)
	}
	dbDir := folder{Dir: filepath.Join(work, "db"), Layout: layoutHelper, TD: td}
	mkdirOwned(t, dbDir.Dir, 0o755, pgUser)
	writePlainFolder(t, dbDir, dbSVID, authority.Bundle(), pgUser)
	clientDir := folder{Dir: filepath.Join(work, "client"), Layout: layoutSPIFFE, TD: td}
	mkdirOwned(t, clientDir.Dir, 0o755, nil)
	writePlainFolder(t, clientDir, clientSVID, authority.Bundle(), nil)

	pg := initPostgres(t, work, pgTLSFiles{
		Cert: filepath.Join(dbDir.Dir, helperCert),
		Key:  filepath.Join(dbDir.Dir, helperKey),
		CA:   filepath.Join(dbDir.Dir, helperBundle),
	})
	pg.Start(t)
	ctx, cancel := context.WithTimeout(t.Context(), time.Minute)
	defer cancel()

	got, err := pg.Connect(ctx, clientDir.BundlePath(), clientDir, clientDir, dbID)
	if err != nil {
		t.Fatal(err)
	}
	if !got.SSL {
		t.Error("session is not over TLS")
	}
	if got.ServerSerial.Cmp(dbSVID.Certificates[0].SerialNumber) != 0 || got.ServerID != dbID {
		t.Errorf("server presented serial %s (%s), want %s (%s)", got.ServerSerial, got.ServerID, dbSVID.Certificates[0].SerialNumber, dbID)
	}
	if want := clientSVID.Certificates[0].SerialNumber.String(); got.ClientSerial != want {
		t.Errorf("server saw client serial %q, want %q", got.ClientSerial, want)
	}
	pid, err := pg.PostmasterPID()
	if err != nil {
		t.Fatal(err)
	}
	t.Logf("postmaster %d, backend %d, server serial %s", pid, got.BackendPID, got.ServerSerial)

	if _, err := pg.Connect(ctx, clientDir.BundlePath(), nil, clientDir, dbID); err == nil {
		t.Error("a client without a certificate got in: pg_hba.conf does not require one")
	} else {
		t.Logf("without a client certificate: %v", err)
	}
	if _, err := pg.Connect(ctx, clientDir.BundlePath(), clientDir, clientDir, clientID); err == nil {
		t.Errorf("the client accepted a server that is not %s", clientID)
	} else {
		t.Logf("server with another ID: %v", err)
	}
}
