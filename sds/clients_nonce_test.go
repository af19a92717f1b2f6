package sds

import (
	"fmt"
	"log/slog"
	"testing"

	discoveryv3 "github.com/envoyproxy/go-control-plane/envoy/service/discovery/v3"
	"github.com/envoyproxy/go-control-plane/pkg/resource/v3"
)

// TestClientsRememberTheNewestNonces checks the nonce → version memory of
// a stream: a Delta ACK (which carries no version) names its version only
// through the nonce, and only the newest maxSentNonces responses can still
// be answered.
func TestClientsRememberTheNewestNonces(t *testing.T) {
	log := slog.New(slog.DiscardHandler)
	c := newTracker(log, newSecretCache("p", false, log), limits{})
	k := streamKey{delta: true, id: 1}
	_ = c.open(k, resource.SecretType, 0)
	const sent = 3*maxSentNonces + 5
	for i := range sent {
		c.sent(k, resource.SecretType, fmt.Sprintf("n%d", i), fmt.Sprintf("p-%d", i))
	}
	tests := []struct {
		nonce       string
		wantVersion string // "" when the nonce is forgotten
	}{
		{fmt.Sprintf("n%d", sent-maxSentNonces-1), ""},
		{"n0", ""},
		{fmt.Sprintf("n%d", sent-maxSentNonces), fmt.Sprintf("p-%d", sent-maxSentNonces)},
		{fmt.Sprintf("n%d", sent-1), fmt.Sprintf("p-%d", sent-1)},
	}
	for _, tt := range tests {
		t.Run(tt.nonce, func(t *testing.T) {
			c.streams[k].AckedVersion = ""
			if err := c.OnStreamDeltaRequest(k.id, &discoveryv3.DeltaDiscoveryRequest{TypeUrl: resource.SecretType, ResponseNonce: tt.nonce}); err != nil {
				t.Fatal(err)
			}
			if got := c.streams[k].AckedVersion; got != tt.wantVersion {
				t.Errorf("ACK of %s: acked version %q, want %q", tt.nonce, got, tt.wantVersion)
			}
		})
	}
	remembered := 0
	for i := range sent {
		if _, ok := c.streams[k].version(fmt.Sprintf("n%d", i)); ok {
			remembered++
		}
	}
	if n := remembered; n != maxSentNonces {
		t.Errorf("%d nonces remembered, want %d", n, maxSentNonces)
	}
}
