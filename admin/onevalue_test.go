package admin

import (
	"encoding/json"
	"net/http"
	"net/http/httptest"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/promhttp"
)

// TestEveryViewRendersTheOneStatus: /readyz, /status, /metrics and the
// text of `sds-bridge status` are renderings of one Status value and
// judge nothing of their own. A Status taken from a running bridge is
// changed after the fact (a problem, the generation, a sink's failures,
// an SDS count), and each view shows the changed value, not what the
// parts say now.
func TestEveryViewRendersTheOneStatus(t *testing.T) {
	b := startBridge(t, bridgeOptions{})
	b.push(time.Hour)
	b.waitSinks(1, nil)
	st := b.admin.snapshot(time.Now(), statusView)
	if !st.Ready || st.Generation != 1 || len(st.Sinks) != 1 || st.SDS == nil {
		t.Fatalf("snapshot of a ready bridge = %+v", st)
	}
	const planted = "folder /planted: a problem only this value holds"
	st.Ready, st.Problems, st.Generation = false, []string{planted}, 42
	st.Sinks[0].Failures, st.SDS.ClientsCurrent = 7, 5

	rec := httptest.NewRecorder()
	writeReadyz(rec, st)
	if rec.Code != http.StatusServiceUnavailable || rec.Body.String() != planted+"\n" {
		t.Errorf("/readyz rendering = %d %q, want 503 with the planted problem alone", rec.Code, rec.Body.String())
	}

	rec = httptest.NewRecorder()
	b.admin.writeStatus(rec, st)
	var served Status
	if err := json.Unmarshal(rec.Body.Bytes(), &served); err != nil {
		t.Fatal(err)
	}
	if served.Ready || !slices.Equal(served.Problems, []string{planted}) || served.Generation != 42 ||
		served.Sinks[0].Failures != 7 || served.SDS.ClientsCurrent != 5 {
		t.Errorf("/status rendering = %+v, want the changed value", served)
	}

	var text strings.Builder
	if err := st.WriteText(&text, st.Time); err != nil {
		t.Fatal(err)
	}
	for _, want := range []string{"NOT READY, generation 42", "! " + planted, "7 failures"} {
		if !strings.Contains(text.String(), want) {
			t.Errorf("status text lacks %q:\n%s", want, text.String())
		}
	}

	reg := prometheus.NewRegistry()
	reg.MustRegister(&collector{build: BuildInfo{Version: "v"}, status: func() Status { return st }})
	rec = httptest.NewRecorder()
	promhttp.HandlerFor(reg, promhttp.HandlerOpts{}).ServeHTTP(rec, httptest.NewRequest(http.MethodGet, "/metrics", nil))
	m := parseMetrics(t, rec.Body.String())
	for series, want := range map[string]float64{
		"sds_bridge_ready":                                 0,
		"sds_bridge_generation":                            42,
		`sds_bridge_sink_apply_failures_total{sink="sds"}`: 7,
		"sds_bridge_sds_clients_current":                   5,
	} {
		if got, ok := m[series]; !ok || got != want {
			t.Errorf("%s = %v (present %v), want %v, the changed value", series, got, ok, want)
		}
	}
}
