package filesink_test

import (
	"errors"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/spiffe/go-spiffe/v2/spiffeid"

	"github.com/sds-bridge/sds-bridge/filesink"
	"github.com/sds-bridge/sds-bridge/internal/devapi"
)

func TestInspect(t *testing.T) {
	c, other := newCA(t), newCA(t)
	now := time.Now()
	svid := issue(t, c, devapi.SVIDOptions{NotBefore: now.Add(-time.Minute), NotAfter: now.Add(time.Hour)})
	stranger := issue(t, other, devapi.SVIDOptions{})
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
		wantErr     error
		wantReason  filesink.Reason
		wantMsg     []string
	}{
		{name: "missing certificate", files: with("svid.pem", nil), wantErr: filesink.ErrMissing, wantReason: filesink.ReasonMissing, wantMsg: []string{"missing file", "svid.pem"}},
		{name: "missing key", files: with("svid_key.pem", nil), wantErr: filesink.ErrMissing, wantReason: filesink.ReasonMissing, wantMsg: []string{"missing file", "svid_key.pem"}},
		{name: "missing bundle", files: with("svid_bundle.pem", nil), wantErr: filesink.ErrMissing, wantReason: filesink.ReasonMissing, wantMsg: []string{"missing file", "svid_bundle.pem"}},
		{name: "empty folder", files: map[string][]byte{}, wantErr: filesink.ErrMissing, wantReason: filesink.ReasonMissing, wantMsg: []string{"svid.pem"}},
		{
			name: "expired", files: good, now: now.Add(2 * time.Hour), wantErr: filesink.ErrExpired, wantReason: filesink.ReasonExpired,
			wantMsg: []string{"spiffe://example.org/db", "expired at " + svid.Certificates[0].NotAfter.UTC().Format(time.RFC3339)},
		},
		{
			name: "not yet valid", files: good, now: now.Add(-time.Hour), wantErr: filesink.ErrNotYetValid, wantReason: filesink.ReasonNotYetValid,
			wantMsg: []string{"not valid until " + svid.Certificates[0].NotBefore.UTC().Format(time.RFC3339)},
		},
		{
			name: "valid for less than required", files: good, now: now, minValidity: 2 * time.Hour,
			wantErr: filesink.ErrExpiringSoon, wantReason: filesink.ReasonExpiringSoon, wantMsg: []string{"valid for only", "less than the required 2h0m0s"},
		},
		{
			name: "key of another certificate", files: with("svid_key.pem", keyPEM(t, stranger)),
			wantErr: filesink.ErrKeyMismatch, wantReason: filesink.ReasonKeyMismatch, wantMsg: []string{"svid_key.pem", "does not match certificate"},
		},
		{
			name: "chain from another CA", files: with("svid.pem", certPEM(stranger.Certificates...)),
			wantErr: filesink.ErrKeyMismatch, wantReason: filesink.ReasonKeyMismatch, // the key is checked before the chain
		},
		{
			name: "bundle of another CA", files: with("svid_bundle.pem", certPEM(other.Root())),
			wantErr: filesink.ErrUntrusted, wantReason: filesink.ReasonUntrusted, wantMsg: []string{"does not verify against bundle", "svid_bundle.pem", "unknown authority"},
		},
		{
			name: "truncated key", files: with("svid_key.pem", keyPEM(t, svid)[:40]),
			wantErr: filesink.ErrMalformed, wantReason: filesink.ReasonMalformed, wantMsg: []string{"svid_key.pem", "cannot parse private key"},
		},
		{
			name: "key where the certificate belongs", files: with("svid.pem", keyPEM(t, svid)),
			wantErr: filesink.ErrMalformed, wantReason: filesink.ReasonMalformed, wantMsg: []string{`unexpected PEM block "PRIVATE KEY"`},
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			dir := t.TempDir()
			writePlain(t, dir, tt.files)
			_, err := filesink.Inspect(filesink.InspectConfig{Dir: dir, Now: tt.now, MinValidity: tt.minValidity})
			if !errors.Is(err, tt.wantErr) {
				t.Fatalf("Inspect() error = %v, want %v", err, tt.wantErr)
			}
			var me *filesink.MaterialError
			if !errors.As(err, &me) || me.Reason != tt.wantReason {
				t.Fatalf("Inspect() error %v: reason %v, want %v", err, me, tt.wantReason)
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
		m, err := filesink.Inspect(filesink.InspectConfig{Dir: dir, MinValidity: 30 * time.Minute})
		if err != nil {
			t.Fatal(err)
		}
		if m.Dir != dir || m.SPIFFEID != svid.ID || m.Serial != svid.Certificates[0].SerialNumber.Text(16) ||
			!m.NotAfter.Equal(svid.Certificates[0].NotAfter) || m.Generation != 0 {
			t.Errorf("Inspect() = %+v", m)
		}
	})

	t.Run("written by Apply, read through ..data", func(t *testing.T) {
		f := written(t, filesink.Config{CertFileName: "server.crt", KeyFileName: "server.key", BundleFileName: "root.crt"}, 42, c, svid)
		m, err := filesink.Inspect(f.InspectConfig(0))
		if err != nil {
			t.Fatal(err)
		}
		target, _ := os.Readlink(filepath.Join(f.Dir(), filesink.DataLink))
		if m.Generation != 42 || m.SPIFFEID != svid.ID || m.Dir != filepath.Join(f.Dir(), target) ||
			len(m.TrustDomains) != 1 || m.TrustDomains[0] != td {
			t.Errorf("Inspect() = %+v", m)
		}
	})

	t.Run("generation complete but stable name missing", func(t *testing.T) {
		f := written(t, filesink.Config{}, 1, c, svid)
		if err := os.Remove(filepath.Join(f.Dir(), "svid_key.pem")); err != nil {
			t.Fatal(err)
		}
		_, err := filesink.Inspect(f.InspectConfig(0))
		if !errors.Is(err, filesink.ErrMissing) || !strings.Contains(err.Error(), filepath.Join(f.Dir(), "svid_key.pem")) {
			t.Errorf("Inspect() error = %v, want the stable name missing", err)
		}
	})

	t.Run("marker of other material is ignored", func(t *testing.T) {
		dir := t.TempDir()
		writePlain(t, dir, with(filesink.MarkerFileName, []byte(`{"generation":5,"serial":"ffff"}`)))
		m, err := filesink.Inspect(filesink.InspectConfig{Dir: dir})
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
			filesink.CredentialFileName:                append(keyPEM(t, svid), certPEM(svid.Certificates...)...),
			"partner.net" + filesink.TrustBundleSuffix: certPEM(other.Root()),
		})
		_, err := filesink.Inspect(filesink.InspectConfig{Dir: dir, Names: filesink.Names{Layout: filesink.LayoutSPIFFE}})
		if !errors.Is(err, filesink.ErrMissing) || !strings.Contains(err.Error(), "example.org"+filesink.TrustBundleSuffix) {
			t.Errorf("Inspect() error = %v, want the own trust bundle missing", err)
		}
	})

	t.Run("spiffe layout: own trust bundle malformed", func(t *testing.T) {
		dir := t.TempDir()
		writePlain(t, dir, map[string][]byte{
			filesink.CredentialFileName:                append(keyPEM(t, svid), certPEM(svid.Certificates...)...),
			"example.org" + filesink.TrustBundleSuffix: []byte("-----BEGIN CERTIFICATE-----\n"),
		})
		_, err := filesink.Inspect(filesink.InspectConfig{Dir: dir, Names: filesink.Names{Layout: filesink.LayoutSPIFFE}})
		if !errors.Is(err, filesink.ErrMalformed) || !strings.Contains(err.Error(), "cannot parse bundle") {
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
		_, err := filesink.Inspect(filesink.InspectConfig{Dir: dir})
		if !errors.Is(err, filesink.ErrUnreadable) || errors.Is(err, filesink.ErrMissing) || !strings.Contains(err.Error(), "cannot read") {
			t.Errorf("Inspect() error = %v, want unreadable", err)
		}
	})

	t.Run("unknown layout", func(t *testing.T) {
		if _, err := filesink.Inspect(filesink.InspectConfig{Dir: t.TempDir(), Names: filesink.Names{Layout: "pkcs12"}}); err == nil {
			t.Error("Inspect accepted an unknown layout")
		}
	})
}

// A folder is self-describing: written with custom names (three of
// spiffe-helper's four examples use them), Inspect told only the folder
// reads the names it was written with, from the marker.
func TestInspectReadsTheNamesTheFolderWasWrittenWith(t *testing.T) {
	c := newCA(t)
	svid := issue(t, c, devapi.SVIDOptions{})
	for _, cfg := range []filesink.Config{
		{CertFileName: "server.crt", KeyFileName: "server.key", BundleFileName: "root.crt"},
		{Layout: filesink.LayoutSPIFFE},
	} {
		t.Run(string(cfg.Layout)+cfg.CertFileName, func(t *testing.T) {
			f := written(t, cfg, 1, c, svid)
			m, err := filesink.Inspect(filesink.InspectConfig{Dir: f.Dir()})
			if err != nil {
				t.Fatalf("Inspect with the folder alone: %v", err)
			}
			if m.Generation != 1 || m.SPIFFEID != svid.ID {
				t.Errorf("Inspect = generation %d %s, want 1 %s", m.Generation, m.SPIFFEID, svid.ID)
			}
			// Guard: names given explicitly still win, so the marker is
			// what made the difference above.
			if cfg.CertFileName != "" {
				if _, err := filesink.Inspect(filesink.InspectConfig{Dir: f.Dir(), Names: filesink.Names{Cert: filesink.DefaultCertFileName}}); !errors.Is(err, filesink.ErrMissing) {
					t.Errorf("Inspect with cert_file_name %s = %v, want %v", filesink.DefaultCertFileName, err, filesink.ErrMissing)
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
	c := newCA(t)
	db := issue(t, c, devapi.SVIDOptions{Hint: "db"})
	web, err := c.IssueWith(spiffeid.RequireFromPath(td, "/web"), time.Hour, devapi.SVIDOptions{Hint: "web"})
	if err != nil {
		t.Fatal(err)
	}
	for _, tc := range []struct {
		name, writtenFor string
		cfg              filesink.InspectConfig
		wantMsg          string // "" means ready
	}{
		{name: "the configured SPIFFE ID", writtenFor: web.ID.String(), cfg: filesink.InspectConfig{SVID: web.ID.String()}},
		{name: "the configured hint", writtenFor: "web", cfg: filesink.InspectConfig{SVID: "web"}},
		{name: "the default, as configured", cfg: filesink.InspectConfig{}},
		{name: "the default hint", cfg: filesink.InspectConfig{DefaultSVIDHint: "db"}},
		{name: "default written, SPIFFE ID configured", cfg: filesink.InspectConfig{SVID: web.ID.String()},
			wantMsg: `written for svid "", but the folder is configured for svid "spiffe://example.org/web"`},
		{name: "hint written, default configured", writtenFor: "web", cfg: filesink.InspectConfig{},
			wantMsg: `written for svid "web", but the folder is configured for svid ""`},
		{name: "default hint names another SVID", cfg: filesink.InspectConfig{DefaultSVIDHint: web.ID.String()},
			wantMsg: "holds spiffe://example.org/db (serial " + db.Certificates[0].SerialNumber.Text(16) + "), not the configured workload_api.default_svid_hint spiffe://example.org/web"},
		{name: "default hint is another hint", cfg: filesink.InspectConfig{DefaultSVIDHint: "web"},
			wantMsg: `whose hint is "db", not the configured workload_api.default_svid_hint "web"`},
	} {
		t.Run(tc.name, func(t *testing.T) {
			dir := written(t, filesink.Config{SVID: tc.writtenFor}, 1, c, db, web).Dir()
			cfg := tc.cfg
			cfg.Dir, cfg.CheckSVID = dir, true
			_, err := filesink.Inspect(cfg)
			if tc.wantMsg == "" {
				if err != nil {
					t.Fatalf("Inspect = %v, want ready", err)
				}
				return
			}
			var me *filesink.MaterialError
			if !errors.As(err, &me) || me.Reason != filesink.ReasonOtherSVID || !errors.Is(err, filesink.ErrOtherSVID) {
				t.Fatalf("Inspect = %v, want reason %s", err, filesink.ReasonOtherSVID)
			}
			if !strings.Contains(err.Error(), tc.wantMsg) {
				t.Errorf("Inspect = %q, want it to say %q", err, tc.wantMsg)
			}
			// Guard: the set itself is fine, only the identity is wrong.
			if _, err := filesink.Inspect(filesink.InspectConfig{Dir: dir}); err != nil {
				t.Errorf("Inspect without CheckSVID = %v", err)
			}
		})
	}
}
