package sds

import (
	"context"
	"runtime"
	"strings"
	"testing"
	"time"

	corev3 "github.com/envoyproxy/go-control-plane/envoy/config/core/v3"
	discoveryv3 "github.com/envoyproxy/go-control-plane/envoy/service/discovery/v3"
	secretv3 "github.com/envoyproxy/go-control-plane/envoy/service/secret/v3"
	"github.com/envoyproxy/go-control-plane/pkg/resource/v3"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	"github.com/sds-bridge/sds-bridge/internal/testkit"
)

// TestAWaitingStreamCostsOneGoroutine: a stream that holds its secrets and
// waits for the next push keeps one goroutine on the server (gRPC's
// handler, in Recv), not two; pushes run on goroutines that end with them.
// The clients are a child process, so only the server's goroutines count.
func TestAWaitingStreamCostsOneGoroutine(t *testing.T) {
	s := startServer(t, Config{})
	r := &rotator{t: t, ca: newCA(t, exampleTD), id: webID}
	if err := s.Apply(t.Context(), r.next()); err != nil {
		t.Fatal(err)
	}
	const n = 2 * streamsPerConn
	base := runtime.NumGoroutine()
	closeAll := openStreamsInChild(t, s.cfg.SocketPath, n)
	testkit.Eventually(t, "every stream waiting", func() bool { return s.cache.NumWatches("default") == n })
	// Per connection gRPC keeps a reader and a writer; a few more may be
	// on their way out.
	const slack = 2*(n/streamsPerConn) + 4
	perStream := func() int { return runtime.NumGoroutine() - base }
	testkit.Eventually(t, "one goroutine per stream", func() bool { return perStream() <= n+slack })
	if got := perStream(); got < n {
		t.Errorf("%d goroutines for %d streams: the streams are not what is counted", got, n)
	}

	// A push leaves the count where it was once it is sent.
	if err := s.Apply(t.Context(), r.next()); err != nil {
		t.Fatal(err)
	}
	testkit.Eventually(t, "every stream pushed", func() bool { return s.Stats().Pushes == 2*n })
	testkit.Eventually(t, "push goroutines ended", func() bool { return perStream() <= n+slack })
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
