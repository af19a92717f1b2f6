//go:build e2e

package e2e

import (
	"context"
	"fmt"
	"testing"
	"time"

	tlsv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/transport_sockets/tls/v3"
	"github.com/spiffe/go-spiffe/v2/spiffetls/tlsconfig"
	"github.com/spiffe/go-spiffe/v2/workloadapi"
)

// TestAgentRestart kills spire-agent mid-run and starts it again. Meanwhile
// the bridge keeps serving the last good SVID (FetchSecrets still answers
// with it); afterwards it reconnects by itself and rotations resume. The
// Envoy-behaving client's one stream stays open throughout and ends with the
// newest leaf, the one the agent now serves to the same identity.
func TestAgentRestart(t *testing.T) {
	requireBridge(t)
	work := newWorkDir(t)
	s := startSPIRE(t, work, spireEntry{Path: "/backend", Selector: "unix:uid:0"})
	backendID := s.ID("/backend")

	socket := work + "/sds.sock"
	b := startBridge(t, work, "envoy", bridgeConfig{
		WorkloadAPI: bridgeWorkloadAPI{Address: s.WorkloadAPIAddr(), FirstUpdateTimeout: "60s"},
		SDS:         &bridgeSDS{Socket: socket},
	}, nil)
	waitForSocket(t, b, socket)
	conn := dialSDS(t, socket)
	envoy := newEnvoyClient(t, conn, sdsDefault, sdsAll)

	ctx, cancel := context.WithTimeout(t.Context(), 4*time.Minute)
	defer cancel()

	// nextSerial waits for a default leaf other than every serial in
	// skip and returns it.
	nextSerial := func(skip ...string) (string, sdsState) {
		t.Helper()
		for {
			st, err := envoy.Next(ctx)
			if err != nil {
				t.Fatal(err)
			}
			if st.Rejected != nil {
				t.Fatalf("Envoy would NACK version %s: %v", st.Version, st.Rejected)
			}
			serial, ok := defaultSerial(t, st.Secrets)
			if !ok {
				continue
			}
			fresh := true
			for _, s := range skip {
				fresh = fresh && s != serial
			}
			if fresh {
				return serial, st
			}
		}
	}

	// Before: one rotation on the stream.
	first, _ := nextSerial()
	second, _ := nextSerial(first)
	t.Logf("before the restart: %s → %s", first, second)

	s.KillAgent(t)
	t.Log("spire-agent killed")
	// Whatever was in flight has arrived by now; nothing new can.
	time.Sleep(time.Second)
	lastGood := envoy.Latest()
	lastSerial, ok := defaultSerial(t, lastGood.Secrets)
	if !ok {
		t.Fatal("the stream holds no default secret")
	}
	for i := range 3 {
		secrets, version, err := fetchSecrets(ctx, conn, sdsDefault, sdsAll)
		if err != nil {
			t.Fatalf("FetchSecrets while the agent is down (%d): %v", i, err)
		}
		got, ok := defaultSerial(t, secrets)
		if !ok || secrets[sdsAll] == nil {
			t.Fatalf("FetchSecrets while the agent is down: got %v", sortedKeys(secrets))
		}
		if got != lastSerial {
			t.Fatalf("FetchSecrets while the agent is down serves serial %s (version %s), want the last good %s", got, version, lastSerial)
		}
		leaf, err := leafOf(secrets[sdsDefault])
		if err != nil {
			t.Fatal(err)
		}
		if time.Now().After(leaf.NotAfter) {
			t.Fatalf("the last good SVID expired during the outage (NotAfter %s): the outage is too long for the TTL", leaf.NotAfter)
		}
		b.Running(t)
		if !envoy.Open() {
			t.Fatalf("SDS stream ended while the agent was down: %v", envoy.Err())
		}
		time.Sleep(time.Second)
	}
	t.Logf("agent down: FetchSecrets still serves %s", lastSerial)

	s.StartAgent(t, "")
	t.Log("spire-agent started again")
	// Rotations resume: the SVID the restarted agent hands out, and at
	// least one more after it.
	resumed, _ := nextSerial(lastSerial)
	again, _ := nextSerial(lastSerial, resumed)
	t.Logf("after the restart: %s → %s", resumed, again)

	// The stream ends with the newest leaf: the one the agent serves to
	// this identity right now. Both move every ~5 s, so look until they
	// meet.
	workload := newX509Source(t, ctx, s.WorkloadAPIAddr())
	if err := poll(ctx, "the stream's leaf matches the agent's", 200*time.Millisecond, func() error {
		return sameLeaf(t, envoy.Latest().Secrets, workload)
	}); err != nil {
		t.Fatal(err)
	}

	// And it still works as a server certificate.
	final := envoy.Latest().Secrets
	l := startEnvoyListener(t, final, sdsDefault, sdsAll)
	clientTLS := tlsconfig.MTLSClientConfig(workload, workload, tlsconfig.AuthorizeID(backendID))
	_, _, dialErr := dialMTLS(ctx, l.Addr, clientTLS)
	if res := l.Wait(ctx, dialErr); dialErr != nil || res.Err != nil {
		t.Fatalf("mTLS with the last SDS material: client: %v; server: %v", dialErr, res.Err)
	}
	b.Running(t)
	if !envoy.Open() {
		t.Fatalf("SDS stream ended: %v", envoy.Err())
	}
}

// defaultSerial is the serial of the default secret's leaf, if present.
func defaultSerial(t testing.TB, secrets map[string]*tlsv3.Secret) (string, bool) {
	t.Helper()
	def := secrets[sdsDefault]
	if def == nil {
		return "", false
	}
	leaf, err := leafOf(def)
	if err != nil {
		t.Fatal(err)
	}
	return leaf.SerialNumber.String(), true
}

func sameLeaf(t testing.TB, secrets map[string]*tlsv3.Secret, src *workloadapi.X509Source) error {
	serial, ok := defaultSerial(t, secrets)
	svid, err := src.GetX509SVID()
	if err != nil {
		return err
	}
	if want := svid.Certificates[0].SerialNumber.String(); !ok || serial != want {
		return fmt.Errorf("stream %s, agent %s", serial, want)
	}
	return nil
}
