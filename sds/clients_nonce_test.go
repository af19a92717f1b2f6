package sds

import (
	"fmt"
	"log/slog"
	"testing"
)

// TestClientsRememberTheNewestNonces checks the nonce → version memory of
// a stream: a Delta ACK (which carries no version) names its version only
// through the nonce, and only the newest maxSentNonces responses can still
// be answered.
func TestClientsRememberTheNewestNonces(t *testing.T) {
	c := newClients(newSecretCache("p", false, cacheLogger{log: slog.New(slog.DiscardHandler)}))
	k := streamKey{delta: true, id: 1}
	c.open(k)
	const sent = 3*maxSentNonces + 5
	for i := range sent {
		c.sent(k, fmt.Sprintf("n%d", i), fmt.Sprintf("p-%d", i))
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
			c.request(k, nil, "", tt.nonce, false, "")
			if got := c.streams[k].AckedVersion; got != tt.wantVersion {
				t.Errorf("ACK of %s: acked version %q, want %q", tt.nonce, got, tt.wantVersion)
			}
		})
	}
	if n := len(c.streams[k].sent); n != maxSentNonces {
		t.Errorf("%d nonces remembered, want %d", n, maxSentNonces)
	}
}
