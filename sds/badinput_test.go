package sds

import (
	"strings"
	"testing"

	"github.com/spiffe/go-spiffe/v2/svid/x509svid"
)

func TestAllNotServedWithoutSPIFFEValidation(t *testing.T) {
	logger, logs := testLogger(t)
	s := startServer(t, Config{Names: Names{DisableSPIFFECertValidation: true}, Logger: logger})
	if n := strings.Count(logs.String(), `the secret \"ALL\" is not served, as in SPIRE`); n != 1 {
		t.Errorf("start-up explanation logged %d times, want once:\n%s", n, logs)
	}
	exampleCA, otherCA := newCA(t, exampleTD), newCA(t, otherTD)
	u := newUpdate(1, []*x509svid.SVID{issue(t, exampleCA, webID)}, exampleCA.Bundle(), otherCA.Bundle())
	if err := s.Apply(t.Context(), u); err != nil {
		t.Fatal(err)
	}
	secrets, _ := s.Secrets()
	if _, ok := secrets["ALL"]; ok {
		t.Fatal("ALL is served without the SPIFFE validator")
	}

	// A client asking for it gets the rest and the usual warning; its
	// stream stays open.
	c := newEnvoyClient(t, dial(t, s.cfg.SocketPath), []string{"default", "ALL", "spiffe://other.org"}, "")
	resp := c.recv()
	if d := diffSecrets(built(t, u, s.cfg.Names, "default", "spiffe://other.org"), unpack(t, resp.GetResources())); d != "" {
		t.Fatalf("secrets (-want +got):\n%s", d)
	}
	c.ack(resp)
	waitPending(t, s, "default", 1)
	if l := logs.String(); !strings.Contains(l, "requested secrets are not served") || !strings.Contains(l, "unknown=[ALL]") {
		t.Errorf("no unknown-name warning for ALL:\n%s", l)
	}
}
