//go:build e2e

package e2e

import (
	"context"
	"testing"
	"time"

	"github.com/spiffe/go-spiffe/v2/spiffetls/tlsconfig"
	"github.com/spiffe/go-spiffe/v2/svid/x509svid"
)

// TestEnvoyPattern is the seed's first pattern: Envoy takes its SVID over
// SDS. The bridge runs as the Envoy side's own OS user (nobody) against the
// real agent; an Envoy-behaving client holds one SotW stream on "default"
// and "ALL" across at least three rotations, every Secret passes
// ValidateAll, and after every rotation a TLS server built only from the
// delivered material accepts a workload that takes its own SVID straight
// from the agent with go-spiffe and authorizes the server's SPIFFE ID.
func TestEnvoyPattern(t *testing.T) {
	requireBridge(t)
	nobody, err := lookupUser("nobody")
	if err != nil {
		t.Fatal(err)
	}
	work := newWorkDir(t)
	s := startSPIRE(t, work,
		spireEntry{Path: "/frontend", Selector: "unix:uid:" + uidString(nobody.UID)},
		spireEntry{Path: "/backend", Selector: "unix:uid:0"},
	)
	frontendID, backendID := s.ID("/frontend"), s.ID("/backend")

	envoyDir := work + "/envoy"
	mkdirOwned(t, envoyDir, 0o755, nobody)
	socket := envoyDir + "/sds.sock"
	b := startBridge(t, work, "envoy", bridgeConfig{
		WorkloadAPI: bridgeWorkloadAPI{Address: s.WorkloadAPIAddr(), FirstUpdateTimeout: "60s"},
		SDS:         &bridgeSDS{Socket: socket},
	}, nobody)
	waitForSocket(t, b, socket)

	ctx, cancel := context.WithTimeout(t.Context(), 3*time.Minute)
	defer cancel()
	envoy := newEnvoyClient(t, dialSDS(t, socket), sdsDefault, sdsAll)
	workload := newX509Source(t, ctx, s.WorkloadAPIAddr())
	clientTLS := tlsconfig.MTLSClientConfig(workload, workload, tlsconfig.AuthorizeID(frontendID))

	const wantRotations = 3
	var serials []string
	seen := map[string]bool{}
	versions := map[string]bool{}
	for len(serials) < wantRotations+1 {
		st, err := envoy.Next(ctx)
		if err != nil {
			t.Fatalf("after %d SVIDs: %v", len(serials), err)
		}
		if st.Rejected != nil {
			t.Fatalf("Envoy would NACK version %s: %v", st.Version, st.Rejected)
		}
		def, all := st.Secrets[sdsDefault], st.Secrets[sdsAll]
		if def == nil || all == nil {
			continue // not both delivered yet
		}
		leaf, err := leafOf(def)
		if err != nil {
			t.Fatal(err)
		}
		serial := leaf.SerialNumber.String()
		if len(serials) > 0 && serial == serials[len(serials)-1] {
			continue
		}
		if seen[serial] {
			t.Fatalf("version %s went back to an older SVID (serial %s)", st.Version, serial)
		}
		if versions[st.Version] {
			t.Fatalf("version %s delivered two different SVIDs", st.Version)
		}
		seen[serial], versions[st.Version] = true, true
		serials = append(serials, serial)

		// The material is the frontend's, current, and chains to the
		// bundle delivered beside it.
		trust, err := trustFromSecret(all, s.TrustDomain)
		if err != nil {
			t.Fatal(err)
		}
		cert, err := tlsCertificate(def)
		if err != nil {
			t.Fatal(err)
		}
		id, _, err := x509svid.ParseAndVerify(cert.Certificate, trust)
		if err != nil {
			t.Fatalf("version %s: default does not verify against ALL: %v", st.Version, err)
		}
		if id != frontendID {
			t.Fatalf("version %s: default is %s, want %s", st.Version, id, frontendID)
		}
		if now := time.Now(); now.Before(leaf.NotBefore) || now.After(leaf.NotAfter) {
			t.Fatalf("version %s: leaf valid %s – %s, now %s", st.Version, leaf.NotBefore, leaf.NotAfter, now)
		}

		// A real handshake with nothing but the SDS material on the
		// server side.
		l := startEnvoyListener(t, st.Secrets, sdsDefault, sdsAll)
		presented, line, dialErr := dialMTLS(ctx, l.Addr, clientTLS)
		res := l.Wait(ctx, dialErr)
		if dialErr != nil || res.Err != nil {
			t.Fatalf("version %s: mTLS with the SDS material failed: client: %v; server: %v", st.Version, dialErr, res.Err)
		}
		if presented.SerialNumber.String() != serial {
			t.Fatalf("version %s: server presented serial %s, want %s", st.Version, presented.SerialNumber, serial)
		}
		if res.ClientID != backendID || line != backendID.String() {
			t.Fatalf("version %s: server saw client %s (%q), want %s", st.Version, res.ClientID, line, backendID)
		}
		t.Logf("version %s: serial %s valid until %s; mTLS %s → %s ok", st.Version, serial, leaf.NotAfter.Format(time.TimeOnly), backendID, frontendID)
	}
	b.Running(t)
	if !envoy.Open() {
		t.Fatalf("SDS stream ended: %v", envoy.Err())
	}

	// Every name SPIRE's agent answers to, in one unary fetch.
	conn := dialSDS(t, socket)
	names := []string{sdsDefault, frontendID.String(), sdsRootCA, s.TrustDomain.IDString(), sdsAll}
	secrets, version, err := fetchSecrets(ctx, conn, names...)
	if err != nil {
		t.Fatal(err)
	}
	for _, name := range names {
		if secrets[name] == nil {
			t.Errorf("FetchSecrets %v (version %s): no %q, got %v", names, version, name, sortedKeys(secrets))
		}
	}
	if byName, byDefault := secrets[frontendID.String()], secrets[sdsDefault]; byName != nil && byDefault != nil {
		a, errA := leafOf(byName)
		b, errB := leafOf(byDefault)
		if errA != nil || errB != nil || !a.Equal(b) {
			t.Errorf("%q and %q are different SVIDs in one response (%v, %v)", frontendID, sdsDefault, errA, errB)
		}
	}
}
