package admin

import (
	"net/http"
	"net/http/httptest"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/sds-bridge/sds-bridge/internal/testkit"
	"github.com/sds-bridge/sds-bridge/sds"
)

// listCountingSDS is the real SDS server, counting the calls that copy
// every stream's record.
type listCountingSDS struct {
	SDS
	lists atomic.Int64
}

func (c *listCountingSDS) Clients() []sds.Client {
	c.lists.Add(1)
	return c.SDS.Clients()
}

// TestOnlyStatusListsTheSDSStreams: /readyz and /metrics judge on the SDS
// server's acknowledgement counts and never copy its streams' records (a
// kubelet probes every few seconds; a bridge may serve thousands of
// streams); /status, which lists them, does. The counts still cover every
// stream: the probe sees the client's ACK.
func TestOnlyStatusListsTheSDSStreams(t *testing.T) {
	b := startBridge(t, bridgeOptions{requireSDSAck: true})
	b.push(time.Hour)
	b.waitSinks(1, nil)
	counting := &listCountingSDS{SDS: b.sds}
	srv, err := New(Config{Source: b.src, SDS: counting, RequireSDSAck: true, Logger: testkit.Logger(t)})
	if err != nil {
		t.Fatal(err)
	}
	get := func(path string) (int, string) {
		rec := httptest.NewRecorder()
		srv.mux.ServeHTTP(rec, httptest.NewRequest(http.MethodGet, path, nil))
		return rec.Code, rec.Body.String()
	}

	c := newSotWClient(t, b.sdsPath, "envoy-1")
	c.answer("")
	testkit.Eventually(t, "the probe sees the ACK", func() bool {
		code, _ := get("/readyz")
		return code == http.StatusOK
	})
	if code, body := get("/metrics"); code != http.StatusOK || !strings.Contains(body, "sds_bridge_sds_clients_current 1") {
		t.Errorf("/metrics = %d, without sds_bridge_sds_clients_current 1:\n%.2000s", code, body)
	}
	if n := counting.lists.Load(); n != 0 {
		t.Errorf("/readyz and /metrics copied the SDS streams %d times, want 0", n)
	}
	if code, body := get("/status"); code != http.StatusOK || !strings.Contains(body, `"node": "envoy-1"`) {
		t.Errorf("/status = %d, without the stream listed:\n%.2000s", code, body)
	}
	if n := counting.lists.Load(); n != 1 {
		t.Errorf("/status copied the SDS streams %d times, want 1", n)
	}
}
