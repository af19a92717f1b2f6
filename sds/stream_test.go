package sds

import (
	"context"
	"runtime"
	"slices"
	"strings"
	"testing"
	"time"

	corev3 "github.com/envoyproxy/go-control-plane/envoy/config/core/v3"
	discoveryv3 "github.com/envoyproxy/go-control-plane/envoy/service/discovery/v3"
	secretv3 "github.com/envoyproxy/go-control-plane/envoy/service/secret/v3"
	"github.com/envoyproxy/go-control-plane/pkg/resource/v3"
	"github.com/spiffe/go-spiffe/v2/svid/x509svid"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	"github.com/sds-bridge/sds-bridge/internal/testkit"
)

// TestAWaitingStreamCostsTwoGoroutines: a stream that holds its secrets
// and waits for the next push keeps two goroutines on the server, as SPIRE
// Agent's SDS handler does (the stream's loop, in gRPC's handler, and the
// one that receives its requests); a push starts none. The clients are a
// child process, so only the server's goroutines count.
func TestAWaitingStreamCostsTwoGoroutines(t *testing.T) {
	s := startServer(t, Config{})
	r := &rotator{t: t, ca: newCA(t, exampleTD), id: webID}
	if err := s.Apply(t.Context(), r.next()); err != nil {
		t.Fatal(err)
	}
	const n = 2 * streamsPerConn
	base := runtime.NumGoroutine()
	closeAll := openStreamsInChild(t, s.cfg.SocketPath, n)
	testkit.Eventually(t, "every stream waiting", func() bool { return s.NumWatches("default") == n })
	// Per connection gRPC keeps a reader and a writer; a few more may be
	// on their way out.
	const slack = 2*(n/streamsPerConn) + 4
	perStream := func() int { return runtime.NumGoroutine() - base }
	testkit.Eventually(t, "two goroutines per stream", func() bool { return perStream() <= 2*n+slack })
	if got := perStream(); got < 2*n {
		t.Errorf("%d goroutines for %d streams: the streams are not what is counted", got, n)
	}

	// A push leaves the count where it was once it is sent.
	if err := s.Apply(t.Context(), r.next()); err != nil {
		t.Fatal(err)
	}
	testkit.Eventually(t, "every stream pushed", func() bool { return s.Stats().Pushes == 2*n })
	testkit.Eventually(t, "no goroutine left by the push", func() bool { return perStream() <= 2*n+slack })
	closeAll()
	testkit.Eventually(t, "every stream closed", func() bool { return s.Stats().StreamsOpen == 0 })
}

// TestStopEndsEveryStream: when Serve's context ends, SotW, Delta and ADS
// streams that wait in Recv end at once (Envoy keeps its secrets and
// reconnects), without waiting for the grace that cuts streams that do not
// end. gRPC answers a stream whose context the server ended with Canceled
// (go-control-plane's server ended them with OK: its handler returned
// while a second goroutine per stream waited in Recv).
func TestStopEndsEveryStream(t *testing.T) {
	logger, logs := testLogger(t)
	path := socketPath(t)
	s, err := New(Config{SocketPath: path, Logger: logger})
	if err != nil {
		t.Fatal(err)
	}
	stop := serve(t, s)
	t.Cleanup(func() { _ = stop() })
	if err := s.Apply(t.Context(), (&rotator{t: t, ca: newCA(t, exampleTD), id: webID}).next()); err != nil {
		t.Fatal(err)
	}
	conn := dial(t, path)
	ctx, cancel := context.WithTimeout(t.Context(), testkit.Timeout)
	defer cancel()
	node := &corev3.Node{Id: "envoy"}
	names := []string{"default"}

	sotw := newEnvoyClient(t, conn, names, "")
	sotw.ack(sotw.recv())
	ads, err := discoveryv3.NewAggregatedDiscoveryServiceClient(conn).StreamAggregatedResources(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if err := ads.Send(&discoveryv3.DiscoveryRequest{Node: node, TypeUrl: resource.SecretType, ResourceNames: names}); err != nil {
		t.Fatal(err)
	}
	if _, err := ads.Recv(); err != nil {
		t.Fatal(err)
	}
	delta, err := secretv3.NewSecretDiscoveryServiceClient(conn).DeltaSecrets(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if err := delta.Send(&discoveryv3.DeltaDiscoveryRequest{Node: node, TypeUrl: resource.SecretType, ResourceNamesSubscribe: names}); err != nil {
		t.Fatal(err)
	}
	if _, err := delta.Recv(); err != nil {
		t.Fatal(err)
	}
	testkit.Eventually(t, "three streams open", func() bool { return s.Stats().StreamsOpen == 3 })

	start := time.Now()
	if err := stop(); err != nil {
		t.Fatal(err)
	}
	took := time.Since(start)
	for name, recv := range map[string]func() error{
		"SotW":  func() error { _, err := sotw.stream.Recv(); return err },
		"ADS":   func() error { _, err := ads.Recv(); return err },
		"Delta": func() error { _, err := delta.Recv(); return err },
	} {
		if err := recv(); status.Code(err) != codes.Canceled {
			t.Errorf("%s stream after stop: %v, want it ended by the server (Canceled)", name, err)
		}
	}
	if strings.Contains(logs.String(), "did not end in time") {
		t.Errorf("the streams had to be cut after %s:\n%s", took, logs.String())
	}
}

// TestStaleSotWRequestIsIgnored: a SotW request that does not name the
// last response's nonce was sent before the client saw that response; it
// changes nothing (the client's next request will), as in go-control-plane.
func TestStaleSotWRequestIsIgnored(t *testing.T) {
	logger, logs := testLogger(t)
	s := startServer(t, Config{Logger: logger})
	r := &rotator{t: t, ca: newCA(t, exampleTD), id: webID}
	if err := s.Apply(t.Context(), r.next()); err != nil {
		t.Fatal(err)
	}
	c := newEnvoyClient(t, dial(t, s.cfg.SocketPath), []string{"default"}, "")
	first := c.recv()
	c.ack(first)
	if err := s.Apply(t.Context(), r.next()); err != nil {
		t.Fatal(err)
	}
	second := c.recv()

	// Names the first response: stale. "nope" is not served, so a request
	// taken would wait on it.
	c.names = []string{"default", "nope"}
	c.send(&discoveryv3.DiscoveryRequest{VersionInfo: first.GetVersionInfo(), ResourceNames: c.names,
		TypeUrl: resource.SecretType, ResponseNonce: first.GetNonce()})
	testkit.Eventually(t, "the stale request seen", func() bool { return strings.Contains(logs.String(), `stale request ignored`) })
	if n := s.NumWatches("nope"); n != 0 {
		t.Fatalf("%d requests wait on nope after a stale request, want 0", n)
	}
	if strings.Contains(logs.String(), `unknown=[nope]`) {
		t.Errorf("the stale request's names were reported as if subscribed:\n%s", logs)
	}
	c.ack(second)
	waitPending(t, s, "nope", 1)
	if !strings.Contains(logs.String(), `unknown=[nope]`) {
		t.Errorf("the request taken did not report its unknown name:\n%s", logs)
	}
}

// TestDeltaSubscriptionChanges: a Delta client that says which versions it
// holds is not sent them again, an unsubscribed secret is no longer sent,
// and a secret that stops being served is reported removed.
func TestDeltaSubscriptionChanges(t *testing.T) {
	s := startServer(t, Config{})
	exampleCA := newCA(t, exampleTD)
	web, backend := issue(t, exampleCA, webID), issue(t, exampleCA, backendID)
	u1 := newUpdate(1, []*x509svid.SVID{web, backend}, exampleCA.Bundle())
	if err := s.Apply(t.Context(), u1); err != nil {
		t.Fatal(err)
	}
	conn := dial(t, s.cfg.SocketPath)
	ctx, cancel := context.WithTimeout(t.Context(), testkit.Timeout)
	defer cancel()
	open := func(req *discoveryv3.DeltaDiscoveryRequest) secretv3.SecretDiscoveryService_DeltaSecretsClient {
		t.Helper()
		stream, err := secretv3.NewSecretDiscoveryServiceClient(conn).DeltaSecrets(ctx)
		if err != nil {
			t.Fatal(err)
		}
		req.TypeUrl = resource.SecretType
		if err := stream.Send(req); err != nil {
			t.Fatal(err)
		}
		return stream
	}
	// recv checks the names sent and removed, and ACKs.
	recv := func(stream secretv3.SecretDiscoveryService_DeltaSecretsClient, sent, removed []string) map[string]string {
		t.Helper()
		resp, err := stream.Recv()
		if err != nil {
			t.Fatal(err)
		}
		versions := map[string]string{}
		var names []string
		for _, res := range resp.GetResources() {
			names = append(names, res.GetName())
			versions[res.GetName()] = res.GetVersion()
		}
		if !slices.Equal(names, sent) || !slices.Equal(resp.GetRemovedResources(), removed) {
			t.Fatalf("sent %q removed %q, want %q and %q", names, resp.GetRemovedResources(), sent, removed)
		}
		if err := stream.Send(&discoveryv3.DeltaDiscoveryRequest{TypeUrl: resource.SecretType, ResponseNonce: resp.GetNonce()}); err != nil {
			t.Fatal(err)
		}
		return versions
	}
	both := []string{"ROOTCA", backendID.String()}
	held := recv(open(&discoveryv3.DeltaDiscoveryRequest{ResourceNamesSubscribe: both}), both, nil)

	// A reconnect holding ROOTCA at its version gets only what it lacks.
	again := open(&discoveryv3.DeltaDiscoveryRequest{ResourceNamesSubscribe: both,
		InitialResourceVersions: map[string]string{"ROOTCA": held["ROOTCA"], backendID.String(): "old"}})
	recv(again, []string{backendID.String()}, nil)

	// Unsubscribed, ROOTCA is not sent on the next Update; the backend
	// SVID that is no longer served is removed.
	waitPending(t, s, "ROOTCA", 2)
	if err := again.Send(&discoveryv3.DeltaDiscoveryRequest{TypeUrl: resource.SecretType, ResourceNamesUnsubscribe: []string{"ROOTCA"}}); err != nil {
		t.Fatal(err)
	}
	waitPending(t, s, "ROOTCA", 1)
	otherCA := newCA(t, exampleTD) // a new bundle: ROOTCA changes too
	u2 := newUpdate(2, []*x509svid.SVID{issue(t, otherCA, webID)}, otherCA.Bundle())
	if err := s.Apply(t.Context(), u2); err != nil {
		t.Fatal(err)
	}
	recv(again, nil, []string{backendID.String()})
}

// TestDeltaRequestWithoutTypeIsBounded: a Delta request that leaves its
// type URL empty (it means the stream's own) is held to the same name bound
// as one that names it; go-control-plane passed it to the bridge's checks
// before filling in the type, so they skipped it.
func TestDeltaRequestWithoutTypeIsBounded(t *testing.T) {
	s := startServer(t, Config{})
	if err := s.Apply(t.Context(), (&rotator{t: t, ca: newCA(t, exampleTD), id: webID}).next()); err != nil {
		t.Fatal(err)
	}
	stream, err := secretClient(t, s.cfg.SocketPath).DeltaSecrets(t.Context())
	if err != nil {
		t.Fatal(err)
	}
	_ = stream.Send(&discoveryv3.DeltaDiscoveryRequest{ResourceNamesSubscribe: hugeNames(DefaultMaxNamesPerStream+1, "default")})
	if _, err := stream.Recv(); status.Code(err) != codes.ResourceExhausted {
		t.Errorf("Recv = %v, want ResourceExhausted", err)
	}
}
