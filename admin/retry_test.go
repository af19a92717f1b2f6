package admin

import (
	"net/http"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/sds-bridge/sds-bridge/filesink"
	"github.com/sds-bridge/sds-bridge/internal/testkit"
	"github.com/sds-bridge/sds-bridge/rotation"
)

// A folder that failed and retries says so in /readyz, /status and the
// status text (since when, how many attempts, when next, the last error),
// and sds_bridge_sink_retries_total counts its retries; once it holds the
// current generation, all of that is gone and the bridge is ready.
func TestRetryingFolderIsShownEverywhere(t *testing.T) {
	dir := filepath.Join(t.TempDir(), "pg")
	files := "files:" + dir
	// An hour between retries: each retry here is RetryNow's.
	b := startBridge(t, bridgeOptions{folders: []filesink.Config{{Dir: dir}}})
	folderStatus := func() rotation.SinkStatus {
		for _, st := range b.src.SinkStatuses() {
			if st.Name == files {
				return st
			}
		}
		t.Fatalf("no sink %s", files)
		return rotation.SinkStatus{}
	}
	b.push(time.Hour)
	b.waitSinks(1, nil)

	// A file where the folder should be (root ignores permissions, not this).
	if err := os.Rename(dir, dir+".away"); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(dir, []byte("in the way"), 0o644); err != nil {
		t.Fatal(err)
	}
	b.push(time.Hour)
	b.waitSinks(2, map[string]uint64{files: 1})
	if woken := b.src.RetryNow(); len(woken) != 1 || woken[0] != files {
		t.Fatalf("RetryNow woke %v, want the folder", woken)
	}
	b.waitSinks(2, map[string]uint64{files: 2})
	st := folderStatus()
	since := stamp(st.RetryingSince)
	b.expectReadyz(http.StatusServiceUnavailable,
		"sink "+files+": last apply failed (it has generation 1, current is 2), retrying generation 2 since "+since+
			", 2 attempts, next in ", ", last error: ")

	m := metrics(t, b.url)
	for series, want := range map[string]float64{
		`sds_bridge_sink_retries_total{sink="` + files + `"}`:        1,
		`sds_bridge_sink_apply_failures_total{sink="` + files + `"}`: 2,
		`sds_bridge_sink_retries_total{sink="sds"}`:                  0,
	} {
		if got, ok := m[series]; !ok || got != want {
			t.Errorf("%s = %v (present %v), want %v", series, got, ok, want)
		}
	}

	doc := b.status()
	var fs *SinkStatus
	for i := range doc.Sinks {
		if doc.Sinks[i].Name == files {
			fs = &doc.Sinks[i]
		}
	}
	if fs == nil || !fs.RetryingSince.Equal(st.RetryingSince) || fs.Attempts != 2 || fs.Retries != 1 || fs.Pending != 2 ||
		fs.Generation != 1 || fs.NextRetryAt.IsZero() || fs.Error == "" {
		t.Errorf("/status sink = %+v, want retrying generation 2 since %s, 2 attempts, 1 retry", fs, since)
	}
	var text strings.Builder
	if err := doc.WriteText(&text, doc.Time); err != nil {
		t.Fatal(err)
	}
	for _, want := range []string{
		files + ": last apply failed, retrying generation 2 since " + since + ", 2 attempts, next in ",
		"2 failures  1 retry",
	} {
		if !strings.Contains(text.String(), want) {
			t.Errorf("status text lacks %q:\n%s", want, text.String())
		}
	}

	// The folder the bridge locked is back in place; no rotation comes.
	if err := os.Remove(dir); err != nil {
		t.Fatal(err)
	}
	if err := os.Rename(dir+".away", dir); err != nil {
		t.Fatal(err)
	}
	b.src.RetryNow()
	b.waitSinks(2, nil)
	if body := b.expectReadyz(http.StatusOK, "ready: generation 2"); strings.Contains(body, "retrying") {
		t.Errorf("/readyz still says retrying:\n%s", body)
	}
	if got := metrics(t, b.url)[`sds_bridge_sink_retries_total{sink="`+files+`"}`]; got != 2 {
		t.Errorf("sds_bridge_sink_retries_total = %v after the retry that worked, want 2", got)
	}
	code, body := testkit.Get(t, b.url+"/status")
	if code != http.StatusOK || strings.Contains(body, "retrying_since") || strings.Contains(body, "next_retry_at") {
		t.Errorf("/status after recovery = %d:\n%s", code, body)
	}
}
