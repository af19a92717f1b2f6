//go:build e2e

package e2e

import (
	"context"
	"encoding/base64"
	"encoding/json"
	"fmt"
	"os"
	"strings"
	"testing"
	"time"

	"github.com/spiffe/go-spiffe/v2/bundle/jwtbundle"
	"github.com/spiffe/go-spiffe/v2/spiffeid"
	"github.com/spiffe/go-spiffe/v2/svid/jwtsvid"
	"github.com/spiffe/go-spiffe/v2/svid/x509svid"
)

// TestTwoSVIDsForOneWorkload registers two entries for the bridge's uid,
// the second with a Workload API hint: SPIRE's agent returns both SVIDs;
// default_svid_hint picks the default by SPIFFE ID, a folder with
// `svid: admin` gets the hinted identity, a folder without `svid` the
// default one, and SDS serves each SVID by its SPIFFE ID.
func TestTwoSVIDsForOneWorkload(t *testing.T) {
	requireBridge(t)
	work := newWorkDir(t)
	s := startSPIRE(t, work,
		spireEntry{Path: "/backend", Selector: "unix:uid:0"},
		spireEntry{Path: "/backend-admin", Selector: "unix:uid:0", Hint: "admin"})
	backend, admin := s.ID("/backend"), s.ID("/backend-admin")

	socket := work + "/sds.sock"
	adminDir, defaultDir := work+"/admin-certs", work+"/default-certs"
	b := startBridge(t, work, "two-svids", bridgeConfig{
		WorkloadAPI: bridgeWorkloadAPI{Address: s.WorkloadAPIAddr(), FirstUpdateTimeout: "60s", DefaultSVIDHint: backend.String()},
		SDS:         &bridgeSDS{Socket: socket},
		Files: []bridgeFolder{
			{Dir: adminDir, Layout: layoutHelper, SVID: "admin",
				JWTSVIDs: []bridgeJWTSVID{{Audience: "db", FileName: "jwt.token"}}, JWTBundleFileName: "jwt_bundle.json"},
			{Dir: defaultDir, Layout: layoutSPIFFE},
		},
	}, nil)
	waitForSocket(t, b, socket)
	conn := dialSDS(t, socket)

	ctx, cancel := context.WithTimeout(t.Context(), 2*time.Minute)
	defer cancel()
	// The agent may hand out one SVID before it has synced both entries:
	// wait for the state where everything is in place.
	for name, want := range map[string]struct {
		f  folder
		id spiffeid.ID
	}{
		"admin":   {folder{Dir: adminDir, Layout: layoutHelper, TD: s.TrustDomain}, admin},
		"default": {folder{Dir: defaultDir, Layout: layoutSPIFFE, TD: s.TrustDomain}, backend},
	} {
		if err := poll(ctx, "folder "+name+" with "+want.id.String(), 200*time.Millisecond, func() error {
			svid, err := want.f.GetX509SVID()
			if err != nil {
				return err
			}
			if svid.ID != want.id {
				return fmt.Errorf("holds %s", svid.ID)
			}
			// As a consumer would: the chain verifies against the folder's bundle.
			_, _, err = x509svid.Verify(svid.Certificates, want.f)
			return err
		}); err != nil {
			b.Running(t)
			t.Fatal(err)
		}
	}

	// The folder's JWT-SVID comes from the real agent for the folder's
	// identity and verifies against the JWT bundle file written beside it.
	if err := poll(ctx, "JWT-SVID file for "+admin.String(), 200*time.Millisecond, func() error {
		return checkJWTFile(adminDir+"/jwt.token", adminDir+"/jwt_bundle.json", admin, "db")
	}); err != nil {
		b.Running(t)
		t.Fatal(err)
	}

	names := []string{sdsDefault, sdsAll, backend.String(), admin.String()}
	if err := poll(ctx, "SDS serving both SVIDs", 200*time.Millisecond, func() error {
		secrets, version, err := fetchSecrets(ctx, conn, names...)
		if err != nil {
			return err
		}
		for name, want := range map[string]spiffeid.ID{sdsDefault: backend, backend.String(): backend, admin.String(): admin} {
			sec, ok := secrets[name]
			if !ok {
				return fmt.Errorf("version %s lacks %q (has %v)", version, name, sortedKeys(secrets))
			}
			leaf, err := leafOf(sec)
			if err != nil {
				return err
			}
			if id, err := x509svid.IDFromCert(leaf); err != nil || id != want {
				return fmt.Errorf("version %s: %q serves %v (%v), want %s", version, name, id, err, want)
			}
		}
		return nil
	}); err != nil {
		b.Running(t)
		t.Fatal(err)
	}
	b.Running(t)
}

// checkJWTFile reads a token file and a JWT bundle file in spiffe-helper's
// format ({"<trust domain>": "<base64 JWKS>"}) and verifies the token for
// audience against it, as an HTTP client of the folder would.
func checkJWTFile(tokenPath, bundlePath string, want spiffeid.ID, audience string) error {
	token, err := os.ReadFile(tokenPath)
	if err != nil {
		return err
	}
	raw, err := os.ReadFile(bundlePath)
	if err != nil {
		return err
	}
	var byTD map[string]string
	if err := json.Unmarshal(raw, &byTD); err != nil {
		return fmt.Errorf("%s: %w", bundlePath, err)
	}
	set := jwtbundle.NewSet()
	for name, b64 := range byTD {
		td, err := spiffeid.TrustDomainFromString(name)
		if err != nil {
			return fmt.Errorf("%s: trust domain %q: %w", bundlePath, name, err)
		}
		jwks, err := base64.StdEncoding.DecodeString(b64)
		if err != nil {
			return fmt.Errorf("%s: %q: %w", bundlePath, name, err)
		}
		b, err := jwtbundle.Parse(td, jwks)
		if err != nil {
			return fmt.Errorf("%s: %q: %w", bundlePath, name, err)
		}
		set.Add(b)
	}
	svid, err := jwtsvid.ParseAndValidate(strings.TrimSpace(string(token)), set, []string{audience})
	if err != nil {
		return fmt.Errorf("%s: %w", tokenPath, err)
	}
	if svid.ID != want {
		return fmt.Errorf("%s: token for %s, want %s", tokenPath, svid.ID, want)
	}
	return nil
}
