package admin

import (
	"net/http"
	"net/http/httptest"
	"testing"
)

// Probes moved to spiffe-helper's paths are answered there, and only
// there: the old paths are free, the other endpoints stay where they are.
func TestProbesAnswerOnTheConfiguredPaths(t *testing.T) {
	s, err := New(Config{Source: noSource{}, LivenessPath: "/live", ReadinessPath: "/ready"})
	if err != nil {
		t.Fatal(err)
	}
	for path, want := range map[string]int{
		"/live":    http.StatusOK,
		"/ready":   http.StatusServiceUnavailable, // no SVID yet: not ready, but answered
		"/livez":   http.StatusNotFound,
		"/readyz":  http.StatusNotFound,
		"/metrics": http.StatusOK,
		"/status":  http.StatusOK,
	} {
		rec := httptest.NewRecorder()
		s.mux.ServeHTTP(rec, httptest.NewRequest(http.MethodGet, path, nil))
		if rec.Code != want {
			t.Errorf("GET %s = %d, want %d: %s", path, rec.Code, want, rec.Body)
		}
	}
}

// A path the mux would panic on, or one that shadows another endpoint, is
// an error from New, not a panic.
func TestNewRefusesProbePathsItCannotServe(t *testing.T) {
	for _, p := range [][2]string{{"/metrics", ""}, {"/x", "/x"}, {"live", ""}, {"/a/{b}", ""}, {"", "/status"}} {
		if _, err := New(Config{Source: noSource{}, LivenessPath: p[0], ReadinessPath: p[1]}); err == nil {
			t.Errorf("New accepted liveness %q readiness %q", p[0], p[1])
		}
	}
}
