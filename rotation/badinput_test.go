package rotation

import (
	"slices"
	"testing"

	"github.com/spiffe/go-spiffe/v2/bundle/x509bundle"
	"github.com/spiffe/go-spiffe/v2/proto/spiffe/workload"
	"github.com/spiffe/go-spiffe/v2/svid/x509svid"
	"google.golang.org/protobuf/proto"

	"github.com/sds-bridge/sds-bridge/internal/devapi"
	"github.com/sds-bridge/sds-bridge/internal/testkit"
)

// TestMalformedWorkloadAPIResponses sends what a broken or hostile agent
// could: each is refused (by go-spiffe's parser or by Validate), counted,
// and the last good Update stays; the next good one is the next generation.
func TestMalformedWorkloadAPIResponses(t *testing.T) {
	sink := newRecordingSink("sink")
	h := start(t, Config{}, sink)
	good := h.issue(devapi.SVIDOptions{})
	h.push(good)
	sink.waitGen(t, 1)

	valid := func(t *testing.T) *workload.X509SVIDResponse {
		t.Helper()
		resp, err := devapi.X509Response([]*x509svid.SVID{h.issue(devapi.SVIDOptions{})}, []*x509bundle.Bundle{h.ca.Bundle()})
		if err != nil {
			t.Fatal(err)
		}
		return resp
	}
	tests := []struct {
		name  string
		build func(t *testing.T) *workload.X509SVIDResponse
	}{
		{"empty SVID list", func(*testing.T) *workload.X509SVIDResponse { return &workload.X509SVIDResponse{} }},
		{"missing bundle", func(t *testing.T) *workload.X509SVIDResponse {
			r := valid(t)
			r.Svids[0].Bundle = nil
			return r
		}},
		{"bundle of garbage", func(t *testing.T) *workload.X509SVIDResponse {
			r := valid(t)
			r.Svids[0].Bundle = []byte("not DER")
			return r
		}},
		{"certificate of garbage", func(t *testing.T) *workload.X509SVIDResponse {
			r := valid(t)
			r.Svids[0].X509Svid = []byte{0x30, 0x82, 0xff, 0xff}
			return r
		}},
		{"no certificate", func(t *testing.T) *workload.X509SVIDResponse {
			r := valid(t)
			r.Svids[0].X509Svid = nil
			return r
		}},
		{"key of garbage", func(t *testing.T) *workload.X509SVIDResponse {
			r := valid(t)
			r.Svids[0].X509SvidKey = []byte("not a key")
			return r
		}},
		{"key of another SVID", func(t *testing.T) *workload.X509SVIDResponse {
			r := valid(t)
			r.Svids[0].X509SvidKey = valid(t).Svids[0].X509SvidKey
			return r
		}},
		{"SPIFFE ID that is not one", func(t *testing.T) *workload.X509SVIDResponse {
			r := valid(t)
			r.Svids[0].SpiffeId = "https://example.org/x"
			return r
		}},
		{"federated bundle under a bad name", func(t *testing.T) *workload.X509SVIDResponse {
			r := valid(t)
			r.FederatedBundles = map[string][]byte{"not a trust domain!": r.Svids[0].Bundle}
			return r
		}},
		{"nil SVID entry", func(t *testing.T) *workload.X509SVIDResponse {
			r := valid(t)
			r.Svids = append(r.Svids, &workload.X509SVID{})
			return r
		}},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			before := h.src.Counters()
			h.wl.SetX509(proto.Clone(tc.build(t)).(*workload.X509SVIDResponse))
			testkit.Eventually(t, tc.name+" counted", func() bool {
				c := h.src.Counters()
				return c.Refused > before.Refused || c.WatchErrors > before.WatchErrors
			})
			if cur := h.src.Current(); cur.Generation != 1 || !cur.Leaf().Equal(good.Certificates[0]) {
				t.Fatalf("current update replaced (generation %d)", cur.Generation)
			}
		})
	}
	h.push(h.issue(devapi.SVIDOptions{}))
	sink.waitGen(t, 2)
	if got := sink.generations(); !slices.Equal(got, []uint64{1, 2}) {
		t.Errorf("sink saw generations %v, want [1 2]", got)
	}
	c := h.src.Counters()
	if total := c.Refused + c.WatchErrors; total < uint64(len(tests)) {
		t.Errorf("counters %+v: %d refusals for %d bad responses", c, total, len(tests))
	}
	// Each was a bad response on a stream that stayed up, not an outage.
	if c.Reconnects != 0 {
		t.Errorf("counters %+v: bad responses counted as reconnects", c)
	}
	t.Logf("counters after %d bad responses: %+v", len(tests), c)
}
