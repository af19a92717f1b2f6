package filesink

import (
	"errors"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/sds-bridge/sds-bridge/internal/devapi"
)

func TestInspect(t *testing.T) {
	c, other := newCA(t, "example.org"), newCA(t, "example.org")
	now := time.Now()
	svid := c.issue(t, devapi.SVIDOptions{NotBefore: now.Add(-time.Minute), NotAfter: now.Add(time.Hour)})
	stranger := other.issue(t, devapi.SVIDOptions{})
	bundle := certPEM(c.Root())
	good := map[string][]byte{"svid.pem": certPEM(svid.Certificates...), "svid_key.pem": keyPEM(t, svid), "svid_bundle.pem": bundle}
	with := func(name string, data []byte) map[string][]byte {
		files := map[string][]byte{}
		for k, v := range good {
			files[k] = v
		}
		if data == nil {
			delete(files, name)
		} else {
			files[name] = data
		}
		return files
	}

	tests := []struct {
		name        string
		files       map[string][]byte
		now         time.Time
		minValidity time.Duration
		wantErr     *Reason
		wantMsg     []string
	}{
		{name: "missing certificate", files: with("svid.pem", nil), wantErr: ErrMissing, wantMsg: []string{"missing file", "svid.pem"}},
		{name: "missing key", files: with("svid_key.pem", nil), wantErr: ErrMissing, wantMsg: []string{"missing file", "svid_key.pem"}},
		{name: "missing bundle", files: with("svid_bundle.pem", nil), wantErr: ErrMissing, wantMsg: []string{"missing file", "svid_bundle.pem"}},
		{name: "empty folder", files: map[string][]byte{}, wantErr: ErrMissing, wantMsg: []string{"svid.pem"}},
		{
			name: "expired", files: good, now: now.Add(2 * time.Hour), wantErr: ErrExpired,
			wantMsg: []string{"spiffe://example.org/db", "expired at " + svid.Certificates[0].NotAfter.UTC().Format(time.RFC3339)},
		},
		{
			name: "not yet valid", files: good, now: now.Add(-time.Hour), wantErr: ErrNotYetValid,
			wantMsg: []string{"not valid until " + svid.Certificates[0].NotBefore.UTC().Format(time.RFC3339)},
		},
		{
			name: "valid for less than required", files: good, now: now, minValidity: 2 * time.Hour,
			wantErr: ErrExpiringSoon, wantMsg: []string{"valid for only", "less than the required 2h0m0s"},
		},
		{
			name: "key of another certificate", files: with("svid_key.pem", keyPEM(t, stranger)),
			wantErr: ErrKeyMismatch, wantMsg: []string{"svid_key.pem", "does not match certificate"},
		},
		{
			name: "chain from another CA", files: with("svid.pem", certPEM(stranger.Certificates...)),
			wantErr: ErrKeyMismatch, // the key is checked before the chain
		},
		{
			name: "bundle of another CA", files: with("svid_bundle.pem", certPEM(other.Root())),
			wantErr: ErrUntrusted, wantMsg: []string{"does not verify against bundle", "svid_bundle.pem", "unknown authority"},
		},
		{
			name: "truncated key", files: with("svid_key.pem", keyPEM(t, svid)[:40]),
			wantErr: ErrMalformed, wantMsg: []string{"svid_key.pem", "cannot parse private key"},
		},
		{
			name: "key where the certificate belongs", files: with("svid.pem", keyPEM(t, svid)),
			wantErr: ErrMalformed, wantMsg: []string{`unexpected PEM block "PRIVATE KEY"`},
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			dir := t.TempDir()
			writePlain(t, dir, tt.files)
			_, err := Inspect(InspectConfig{Dir: dir, Now: tt.now, MinValidity: tt.minValidity})
			if !errors.Is(err, tt.wantErr) {
				t.Fatalf("Inspect() error = %v, want %v", err, tt.wantErr)
			}
			var me *MaterialError
			if !errors.As(err, &me) || me.Reason != tt.wantErr {
				t.Fatalf("Inspect() error %v: reason %v, want %v", err, me, tt.wantErr)
			}
			msg := err.Error()
			if strings.Contains(msg, "\n") || strings.HasPrefix(msg, "filesink: ") {
				t.Errorf("message is not one line without a package name: %q", msg)
			}
			for _, frag := range tt.wantMsg {
				if !strings.Contains(msg, frag) {
					t.Errorf("message %q lacks %q", msg, frag)
				}
			}
		})
	}

	t.Run("plain files without marker", func(t *testing.T) {
		dir := t.TempDir()
		writePlain(t, dir, good)
		m, err := Inspect(InspectConfig{Dir: dir, MinValidity: 30 * time.Minute})
		if err != nil {
			t.Fatal(err)
		}
		if m.Dir != dir || m.SPIFFEID != svid.ID || m.Serial != svid.Certificates[0].SerialNumber.Text(16) ||
			!m.NotAfter.Equal(svid.Certificates[0].NotAfter) || m.Generation != 0 {
			t.Errorf("Inspect() = %+v", m)
		}
	})

	t.Run("written by Apply, read through ..data", func(t *testing.T) {
		f := written(t, Config{CertFileName: "server.crt", KeyFileName: "server.key", BundleFileName: "root.crt"}, 42, c, svid)
		m, err := Inspect(f.InspectConfig(0))
		if err != nil {
			t.Fatal(err)
		}
		target, _ := os.Readlink(filepath.Join(f.Dir(), DataLink))
		if m.Generation != 42 || m.SPIFFEID != svid.ID || m.Dir != filepath.Join(f.Dir(), target) ||
			len(m.TrustDomains) != 1 || m.TrustDomains[0] != c.td {
			t.Errorf("Inspect() = %+v", m)
		}
	})

	t.Run("generation complete but stable name missing", func(t *testing.T) {
		f := written(t, Config{}, 1, c, svid)
		if err := os.Remove(filepath.Join(f.Dir(), "svid_key.pem")); err != nil {
			t.Fatal(err)
		}
		_, err := Inspect(f.InspectConfig(0))
		if !errors.Is(err, ErrMissing) || !strings.Contains(err.Error(), filepath.Join(f.Dir(), "svid_key.pem")) {
			t.Errorf("Inspect() error = %v, want the stable name missing", err)
		}
	})

	t.Run("marker of other material is ignored", func(t *testing.T) {
		dir := t.TempDir()
		writePlain(t, dir, with(MarkerFileName, []byte(`{"generation":5,"serial":"ffff"}`)))
		m, err := Inspect(InspectConfig{Dir: dir})
		if err != nil {
			t.Fatal(err)
		}
		if m.Generation != 0 {
			t.Errorf("generation = %d from a marker describing another certificate", m.Generation)
		}
	})

	t.Run("spiffe layout: own trust bundle missing", func(t *testing.T) {
		dir := t.TempDir()
		writePlain(t, dir, map[string][]byte{
			CredentialFileName:                append(keyPEM(t, svid), certPEM(svid.Certificates...)...),
			"partner.net" + TrustBundleSuffix: certPEM(other.Root()),
		})
		_, err := Inspect(InspectConfig{Dir: dir, Names: Names{Layout: LayoutSPIFFE}})
		if !errors.Is(err, ErrMissing) || !strings.Contains(err.Error(), "example.org"+TrustBundleSuffix) {
			t.Errorf("Inspect() error = %v, want the own trust bundle missing", err)
		}
	})

	t.Run("spiffe layout: own trust bundle malformed", func(t *testing.T) {
		dir := t.TempDir()
		writePlain(t, dir, map[string][]byte{
			CredentialFileName:                append(keyPEM(t, svid), certPEM(svid.Certificates...)...),
			"example.org" + TrustBundleSuffix: []byte("-----BEGIN CERTIFICATE-----\n"),
		})
		_, err := Inspect(InspectConfig{Dir: dir, Names: Names{Layout: LayoutSPIFFE}})
		if !errors.Is(err, ErrMalformed) || !strings.Contains(err.Error(), "cannot parse bundle") {
			t.Errorf("Inspect() error = %v, want the own trust bundle malformed", err)
		}
	})

	t.Run("unreadable is not missing", func(t *testing.T) {
		dir := t.TempDir()
		writePlain(t, dir, with("svid.pem", nil))
		// A directory cannot be read as a file, whoever runs the test.
		if err := os.Mkdir(filepath.Join(dir, "svid.pem"), 0o755); err != nil {
			t.Fatal(err)
		}
		_, err := Inspect(InspectConfig{Dir: dir})
		if !errors.Is(err, ErrUnreadable) || errors.Is(err, ErrMissing) || !strings.Contains(err.Error(), "cannot read") {
			t.Errorf("Inspect() error = %v, want unreadable", err)
		}
	})

	t.Run("unknown layout", func(t *testing.T) {
		if _, err := Inspect(InspectConfig{Dir: t.TempDir(), Names: Names{Layout: "pkcs12"}}); err == nil {
			t.Error("Inspect accepted an unknown layout")
		}
	})
}

// A folder is self-describing: written with custom names (three of
// spiffe-helper's four examples use them), Inspect told only the folder
// reads the names it was written with, from the marker.
func TestInspectReadsTheNamesTheFolderWasWrittenWith(t *testing.T) {
	c := newCA(t, "example.org")
	svid := c.issue(t, devapi.SVIDOptions{})
	for _, cfg := range []Config{
		{CertFileName: "server.crt", KeyFileName: "server.key", BundleFileName: "root.crt"},
		{Layout: LayoutSPIFFE},
	} {
		t.Run(string(cfg.Layout)+cfg.CertFileName, func(t *testing.T) {
			f := written(t, cfg, 1, c, svid)
			m, err := Inspect(InspectConfig{Dir: f.Dir()})
			if err != nil {
				t.Fatalf("Inspect with the folder alone: %v", err)
			}
			if m.Generation != 1 || m.SPIFFEID != svid.ID {
				t.Errorf("Inspect = generation %d %s, want 1 %s", m.Generation, m.SPIFFEID, svid.ID)
			}
			// Guard: names given explicitly still win, so the marker is
			// what made the difference above.
			if cfg.CertFileName != "" {
				if _, err := Inspect(InspectConfig{Dir: f.Dir(), Names: Names{Cert: DefaultCertFileName}}); !errors.Is(err, ErrMissing) {
					t.Errorf("Inspect with cert_file_name %s = %v, want %v", DefaultCertFileName, err, ErrMissing)
				}
			}
		})
	}
}

// A valid set of another identity than the folder is configured for is
// not ready: told by SPIFFE ID from the certificate, by hint from the
// marker, and a set written for another svid choice is refused even when
// the choice is the default.
func TestInspectRefusesASetOfAnotherSVIDThanConfigured(t *testing.T) {
	c := newCA(t, "example.org")
	db := c.issue(t, devapi.SVIDOptions{Hint: "db"})
	web, err := c.IssueWith(c.id("/web"), time.Hour, devapi.SVIDOptions{Hint: "web"})
	if err != nil {
		t.Fatal(err)
	}
	for _, tc := range []struct {
		name, writtenFor string
		cfg              InspectConfig
		wantMsg          string // "" means ready
	}{
		{name: "the configured SPIFFE ID", writtenFor: web.ID.String(), cfg: InspectConfig{SVID: web.ID.String()}},
		{name: "the configured hint", writtenFor: "web", cfg: InspectConfig{SVID: "web"}},
		{name: "the default, as configured", cfg: InspectConfig{}},
		{name: "the default hint", cfg: InspectConfig{DefaultSVIDHint: "db"}},
		{name: "default written, SPIFFE ID configured", cfg: InspectConfig{SVID: web.ID.String()},
			wantMsg: `written for svid "", but the folder is configured for svid "spiffe://example.org/web"`},
		{name: "hint written, default configured", writtenFor: "web", cfg: InspectConfig{},
			wantMsg: `written for svid "web", but the folder is configured for svid ""`},
		{name: "default hint names another SVID", cfg: InspectConfig{DefaultSVIDHint: web.ID.String()},
			wantMsg: "holds spiffe://example.org/db (serial " + db.Certificates[0].SerialNumber.Text(16) + "), not the configured workload_api.default_svid_hint spiffe://example.org/web"},
		{name: "default hint is another hint", cfg: InspectConfig{DefaultSVIDHint: "web"},
			wantMsg: `whose hint is "db", not the configured workload_api.default_svid_hint "web"`},
	} {
		t.Run(tc.name, func(t *testing.T) {
			dir := written(t, Config{SVID: tc.writtenFor}, 1, c, db, web).Dir()
			cfg := tc.cfg
			cfg.Dir, cfg.CheckSVID = dir, true
			_, err := Inspect(cfg)
			if tc.wantMsg == "" {
				if err != nil {
					t.Fatalf("Inspect = %v, want ready", err)
				}
				return
			}
			var me *MaterialError
			if !errors.As(err, &me) || me.Reason != ErrOtherSVID || !errors.Is(err, ErrOtherSVID) {
				t.Fatalf("Inspect = %v, want reason %s", err, ErrOtherSVID)
			}
			if !strings.Contains(err.Error(), tc.wantMsg) {
				t.Errorf("Inspect = %q, want it to say %q", err, tc.wantMsg)
			}
			// Guard: the set itself is fine, only the identity is wrong.
			if _, err := Inspect(InspectConfig{Dir: dir}); err != nil {
				t.Errorf("Inspect without CheckSVID = %v", err)
			}
		})
	}
}
