package main

import (
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"

	"github.com/spiffe/go-spiffe/v2/bundle/jwtbundle"
	"github.com/spiffe/go-spiffe/v2/svid/jwtsvid"

	"github.com/sds-bridge/sds-bridge/admin"
	"github.com/sds-bridge/sds-bridge/internal/testkit"
)

// dev --config with jwt_svids writes JWT-SVIDs its embedded Workload API
// issues, verifiable with the JWT bundle file, and refreshes them.
func TestDevWritesAndRefreshesJWTSVIDs(t *testing.T) {
	dir := testkit.ShortDir(t)
	folder := filepath.Join(dir, "certs")
	conf := filepath.Join(dir, "bridge.yaml")
	if err := os.WriteFile(conf, []byte(`sds:
  enabled: false
files:
  - dir: `+folder+`
    jwt_svids:
      - audience: https://api.example.org
        extra_audiences: [billing]
        file_name: api.token
    jwt_bundle_file_name: jwt_bundle.json
    jwt_mode: "0640"
`), 0o600); err != nil {
		t.Fatal(err)
	}
	startDev(t, dir, "--config", conf, "--admin", "", "--svid-ttl", "2s")

	tokenPath, bundlePath := filepath.Join(folder, "api.token"), filepath.Join(folder, "jwt_bundle.json")
	var bundles *jwtbundle.Set
	testkit.Eventually(t, "the JWT bundle file", func() bool {
		data, err := os.ReadFile(bundlePath)
		if err != nil {
			return false
		}
		bundles, err = testkit.ParseJWTBundles(data)
		return err == nil && bundles.Len() == 1
	})
	var first *jwtsvid.SVID
	testkit.Eventually(t, "a JWT-SVID file", func() bool {
		data, err := os.ReadFile(tokenPath)
		if err != nil || len(data) == 0 {
			return false
		}
		if first, err = jwtsvid.ParseAndValidate(string(data), bundles, []string{"billing"}); err != nil {
			t.Fatalf("token does not verify with the bundle file: %v", err)
		}
		return true
	})
	if first.ID.String() != "spiffe://example.org/dev" {
		t.Errorf("subject %s, want dev's SVID", first.ID)
	}
	if fi, err := os.Stat(tokenPath); err != nil || fi.Mode().Perm() != 0o640 {
		t.Errorf("token mode %v (%v), want 0640", fi.Mode().Perm(), err)
	}
	testkit.Eventually(t, "a refreshed JWT-SVID", func() bool {
		data, err := os.ReadFile(tokenPath)
		if err != nil || string(data) == first.Marshal() {
			return false
		}
		next, err := jwtsvid.ParseAndValidate(string(data), bundles, []string{"https://api.example.org"})
		return err == nil && next.Expiry.After(first.Expiry)
	})
}

// A JWT refresh runs only the actions whose on lists jwt, and an X.509
// swap only those on x509 (the default): PostgreSQL, reloaded on every
// X.509 swap, is not reloaded for a token it never reads.
func TestJWTRefreshRunsOnlyActionsOnJWT(t *testing.T) {
	dir := testkit.ShortDir(t)
	folder := filepath.Join(dir, "certs")
	conf := filepath.Join(dir, "bridge.yaml")
	x509Log, jwtLog, bothLog := filepath.Join(dir, "x509.log"), filepath.Join(dir, "jwt.log"), filepath.Join(dir, "both.log")
	record := func(path string) string {
		return `[/bin/sh, -c, 'echo "$SDS_BRIDGE_EVENT" >> ` + path + `']`
	}
	if err := os.WriteFile(conf, []byte(`sds:
  enabled: false
files:
  - dir: `+folder+`
    jwt_svids:
      - audience: https://api.example.org
        file_name: api.token
    on_rotate:
      - exec: {command: `+record(x509Log)+`}
      - exec: {command: `+record(jwtLog)+`}
        on: [jwt]
      - exec: {command: `+record(bothLog)+`}
        on: [x509, jwt]
`), 0o600); err != nil {
		t.Fatal(err)
	}
	startDev(t, dir, "--config", conf, "--admin", "", "--svid-ttl", "2s")

	events := func(path string) []string {
		data, _ := os.ReadFile(path)
		// Lines, not fields: an empty SDS_BRIDGE_EVENT is an empty line.
		return strings.Split(strings.TrimSuffix(string(data), "\n"), "\n")
	}
	testkit.Eventually(t, "two runs of each action", func() bool {
		return len(events(x509Log)) >= 2 && len(events(jwtLog)) >= 2 &&
			slices.Contains(events(bothLog), "x509") && slices.Contains(events(bothLog), "jwt")
	})
	for path, want := range map[string]string{x509Log: "x509", jwtLog: "jwt"} {
		for _, ev := range events(path) {
			if ev != want {
				t.Errorf("%s: ran on event %q, want only %q (all: %v)", filepath.Base(path), ev, want, events(path))
				break
			}
		}
	}
}

// run hands the JWT writer to the admin server: the token files show in
// /status and /metrics, and count for /readyz.
func TestAdminShowsJWTSVIDs(t *testing.T) {
	dir := testkit.ShortDir(t)
	folder := filepath.Join(dir, "certs")
	conf := filepath.Join(dir, "bridge.yaml")
	if err := os.WriteFile(conf, []byte(`sds:
  enabled: false
files:
  - dir: `+folder+`
    jwt_svids:
      - audience: https://api.example.org
        file_name: api.token
`), 0o600); err != nil {
		t.Fatal(err)
	}
	d := startDev(t, dir, "--config", conf, "--admin", "127.0.0.1:0")
	url := d.adminURL()
	var st admin.Status
	testkit.Eventually(t, "the JWT-SVID in /status, and ready", func() bool {
		st = d.status(url)
		return st.Ready && len(st.JWTSVIDs) == 1 && !st.JWTSVIDs[0].Expiry.IsZero()
	})
	if j := st.JWTSVIDs[0]; j.Dir != folder || j.File != "api.token" || j.Audience != "https://api.example.org" {
		t.Errorf("/status jwt_svids[0] = %+v", j)
	}
	_, body := testkit.Get(t, url+"/metrics")
	for _, series := range []string{
		`sds_bridge_jwt_svid_expiry_timestamp_seconds{file="api.token",folder="` + folder + `"}`,
		`sds_bridge_jwt_refresh_failures_total{file="api.token",folder="` + folder + `"}`,
	} {
		if !strings.Contains(body, series) {
			t.Errorf("/metrics has no %s", series)
		}
	}
}
