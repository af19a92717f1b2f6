package admin

import (
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/spiffe/go-spiffe/v2/svid/jwtsvid"
	"google.golang.org/grpc/codes"

	"github.com/sds-bridge/sds-bridge/internal/testkit"
	"github.com/sds-bridge/sds-bridge/jwtfiles"
)

// jwtStatus waits until ok accepts the /status entry of the only JWT-SVID
// file.
func (b *bridge) jwtStatus(what string, ok func(JWTSVIDStatus) bool) JWTSVIDStatus {
	b.t.Helper()
	var got JWTSVIDStatus
	testkit.Eventually(b.t, what, func() bool {
		st := b.status()
		if len(st.JWTSVIDs) != 1 {
			return false
		}
		got = st.JWTSVIDs[0]
		return ok(got)
	})
	return got
}

// at moves the admin server's clock to t.
func (b *bridge) at(t time.Time) { b.skew.Store(int64(time.Until(t))) }

// A JWT-SVID file shows in /status and /metrics with the expiry of the
// token on disk. A failing refresh is shown there at once, but /readyz
// stays green while the kept token is good by the X.509 rules
// (admin.min_validity_percent here); it turns red when the token is
// within them, and when it has expired.
func TestJWTSVIDExpiryAndRefreshFailures(t *testing.T) {
	jwtDir := t.TempDir()
	b := startBridge(t, bridgeOptions{
		jwt:    []jwtfiles.Folder{{Dir: jwtDir, SVIDs: []jwtfiles.SVIDFile{{Audience: "api", FileName: "api.token"}}}},
		jwtTTL: 4 * time.Second,
	})
	b.push(time.Hour)
	b.waitSinks(1, nil)

	first := b.jwtStatus("a JWT-SVID written", func(j JWTSVIDStatus) bool { return !j.LastRefresh.IsZero() })
	data, err := os.ReadFile(filepath.Join(jwtDir, "api.token"))
	if err != nil {
		t.Fatal(err)
	}
	onDisk, err := jwtsvid.ParseInsecure(string(data), []string{"api"})
	if err != nil {
		t.Fatal(err)
	}
	if first.Dir != jwtDir || first.File != "api.token" || first.Audience != "api" || first.SPIFFEID != dbID.String() || first.LastError != "" {
		t.Errorf("/status jwt_svids[0] = %+v", first)
	}
	m := metrics(t, b.url)
	labels := `{file="api.token",folder="` + jwtDir + `"}`
	if got, ok := m["sds_bridge_jwt_svid_expiry_timestamp_seconds"+labels]; !ok || got < float64(onDisk.Expiry.Unix()) {
		t.Errorf("expiry metric = %v (present %v), want at least the expiry of the token on disk %d", got, ok, onDisk.Expiry.Unix())
	}
	// The writer may have asked before the first X.509 push: no identity
	// then.
	if got, ok := m["sds_bridge_jwt_refresh_failures_total"+labels]; !ok || got != float64(first.Failures) {
		t.Errorf("refresh failures metric = %v (present %v), want the %d failures /status shows", got, ok, first.Failures)
	}

	// The agent stops issuing: the next refresh (at half the lifetime)
	// fails, and the file keeps its token.
	b.wl.SetX509Error(codes.Unavailable, "agent down")
	failing := b.jwtStatus("a failed refresh", func(j JWTSVIDStatus) bool { return j.LastError != "" })
	if !strings.Contains(failing.LastError, "agent down") || failing.Failures == 0 || failing.LastErrorAt.IsZero() {
		t.Errorf("failing refresh in /status: %+v", failing)
	}
	if m := metrics(t, b.url); m["sds_bridge_jwt_refresh_failures_total"+labels] <= float64(first.Failures) {
		t.Errorf("refresh failures metric = %v, want more than the %d before the agent went down", m["sds_bridge_jwt_refresh_failures_total"+labels], first.Failures)
	}
	life := failing.Expiry.Sub(failing.LastRefresh)

	// Half the lifetime left: reported, not a readiness problem.
	b.at(failing.Expiry.Add(-life / 2))
	b.expectReadyz(http.StatusOK)
	if st := b.status(); !st.Ready || st.JWTSVIDs[0].LastError == "" {
		t.Errorf("/status ready %v, jwt last error %q: want ready and the error shown", st.Ready, st.JWTSVIDs[0].LastError)
	}

	// 5% left, under admin.min_validity_percent 10.
	b.at(failing.Expiry.Add(-life / 20))
	b.expectReadyz(http.StatusServiceUnavailable, "JWT-SVID "+filepath.Join(jwtDir, "api.token"), `audience "api"`,
		"of its lifetime left", "admin.min_validity_percent 10", "refreshing it failed", "agent down")

	b.at(failing.Expiry.Add(time.Second))
	body := b.expectReadyz(http.StatusServiceUnavailable, "JWT-SVID "+filepath.Join(jwtDir, "api.token"), "expired at", "agent down")
	if strings.Contains(body, "default SVID") {
		t.Errorf("the hour-long X.509 SVID is reported:\n%s", body)
	}

	// The agent is back: a new token, ready at the same clock.
	b.push(time.Hour)
	b.jwtStatus("a refresh after the agent came back", func(j JWTSVIDStatus) bool {
		return j.LastError == "" && j.Expiry.After(failing.Expiry)
	})
	b.skew.Store(0)
	b.expectReadyz(http.StatusOK)
}

// A JWT-SVID that was never written is not ready, with why its fetch
// fails.
func TestReadyzWaitsForTheFirstJWTSVID(t *testing.T) {
	jwtDir := t.TempDir()
	b := startBridge(t, bridgeOptions{
		// An identity the Workload API never issues.
		jwt: []jwtfiles.Folder{{Dir: jwtDir, SVID: "spiffe://example.org/nobody", SVIDs: []jwtfiles.SVIDFile{{Audience: "api", FileName: "api.token"}}}},
	})
	b.push(time.Hour)
	b.waitSinks(1, nil)
	b.jwtStatus("a failed fetch", func(j JWTSVIDStatus) bool { return j.LastError != "" })
	b.expectReadyz(http.StatusServiceUnavailable, "JWT-SVID "+filepath.Join(jwtDir, "api.token"), "none written yet", "no identity issued")
	m := metrics(t, b.url)
	labels := `{file="api.token",folder="` + jwtDir + `"}`
	if _, ok := m["sds_bridge_jwt_svid_expiry_timestamp_seconds"+labels]; ok {
		t.Errorf("an expiry metric for a file with no token")
	}
	if m["sds_bridge_jwt_refresh_failures_total"+labels] < 1 {
		t.Errorf("refresh failures metric = %v, want at least 1", m["sds_bridge_jwt_refresh_failures_total"+labels])
	}
	var text strings.Builder
	if err := b.status().WriteText(&text, time.Now()); err != nil {
		t.Fatal(err)
	}
	if !strings.Contains(text.String(), "NO TOKEN YET") || !strings.Contains(text.String(), "refresh FAILING") {
		t.Errorf("status text does not show the missing token and the failing fetch:\n%s", text.String())
	}
}
