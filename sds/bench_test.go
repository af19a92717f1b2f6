package sds

import (
	"context"
	"fmt"
	"io"
	"log/slog"
	"sync"
	"testing"
	"time"

	corev3 "github.com/envoyproxy/go-control-plane/envoy/config/core/v3"
	discoveryv3 "github.com/envoyproxy/go-control-plane/envoy/service/discovery/v3"
	secretv3 "github.com/envoyproxy/go-control-plane/envoy/service/secret/v3"
	"github.com/envoyproxy/go-control-plane/pkg/resource/v3"
	"google.golang.org/grpc"

	"github.com/sds-bridge/sds-bridge/internal/testkit"
	"github.com/sds-bridge/sds-bridge/rotation"
)

// streamsPerConn spreads benchmark streams over connections, as many
// Envoys would.
const streamsPerConn = 100

// BenchmarkApplyToStreams measures the time from Apply until every open
// stream has received the new version (ns/op), and that time divided by the
// number of streams (ns/stream). Each client ACKs like Envoy; the timer
// only runs once every stream is waiting for the next push.
func BenchmarkApplyToStreams(b *testing.B) {
	for _, delta := range []bool{false, true} {
		for _, n := range []int{1, 100, 1000, 10000} {
			kind := "sotw"
			if delta {
				kind = "delta"
			}
			b.Run(fmt.Sprintf("%s/streams=%d", kind, n), func(b *testing.B) {
				benchmarkApply(b, n, delta)
			})
		}
	}
}

func benchmarkApply(b *testing.B, n int, delta bool) {
	s := startServer(b, Config{Logger: slog.New(slog.NewTextHandler(io.Discard, nil))})
	exampleCA := newCA(b, exampleTD)
	r := &rotator{t: b, ca: exampleCA, id: webID}
	// Two materials in turn, so every Update really changes the SVID (Delta
	// only sends resources whose content changed).
	materials := []*rotation.Update{r.next(), r.next()}
	gen := uint64(0)
	apply := func() {
		gen++
		u := *materials[gen%2]
		u.Generation = gen
		if err := s.Apply(context.Background(), &u); err != nil {
			b.Fatal(err)
		}
	}
	apply()

	ctx, cancel := context.WithCancel(context.Background())
	var wg sync.WaitGroup
	b.Cleanup(func() {
		cancel()
		wg.Wait()
	})
	received := make(chan struct{}, n)
	errs := make(chan error, n)
	var conn *grpc.ClientConn
	for i := range n {
		if i%streamsPerConn == 0 {
			conn = dial(b, s.cfg.SocketPath)
		}
		client := secretv3.NewSecretDiscoveryServiceClient(conn)
		node := &corev3.Node{Id: fmt.Sprintf("envoy-%d", i)}
		wg.Add(1)
		if delta {
			go func() { defer wg.Done(); errs <- runDeltaClient(ctx, client, node, received) }()
		} else {
			go func() { defer wg.Done(); errs <- runSotwClient(ctx, client, node, received) }()
		}
	}
	waitReceived := func() {
		// One timer for the whole wait: a timer per stream would be most
		// of what this benchmark allocates.
		timeout := time.NewTimer(testkit.Timeout)
		defer timeout.Stop()
		for range n {
			select {
			case <-received:
			case err := <-errs:
				b.Fatalf("client: %v", err)
			case <-timeout.C:
				b.Fatal("timed out waiting for pushes")
			}
		}
	}
	waitReceived()

	var elapsed time.Duration
	for b.Loop() {
		b.StopTimer()
		testkit.Eventually(b, "every stream waiting", func() bool { return s.NumWatches("default") == n })
		b.StartTimer()
		start := time.Now()
		apply()
		waitReceived()
		elapsed += time.Since(start)
	}
	b.StopTimer()
	b.ReportMetric(float64(elapsed.Nanoseconds())/float64(b.N*n), "ns/stream")
}

// runSotwClient ACKs every response and reports each on received.
func runSotwClient(ctx context.Context, c secretv3.SecretDiscoveryServiceClient, node *corev3.Node, received chan<- struct{}) error {
	stream, err := c.StreamSecrets(ctx)
	if err != nil {
		return err
	}
	names := []string{"default", "ALL"}
	req := &discoveryv3.DiscoveryRequest{Node: node, ResourceNames: names, TypeUrl: resource.SecretType}
	for {
		if err := stream.Send(req); err != nil {
			return clientErr(ctx, err)
		}
		resp, err := stream.Recv()
		if err != nil {
			return clientErr(ctx, err)
		}
		received <- struct{}{}
		req = &discoveryv3.DiscoveryRequest{ResourceNames: names, TypeUrl: resource.SecretType,
			VersionInfo: resp.GetVersionInfo(), ResponseNonce: resp.GetNonce()}
	}
}

func runDeltaClient(ctx context.Context, c secretv3.SecretDiscoveryServiceClient, node *corev3.Node, received chan<- struct{}) error {
	stream, err := c.DeltaSecrets(ctx)
	if err != nil {
		return err
	}
	req := &discoveryv3.DeltaDiscoveryRequest{Node: node, TypeUrl: resource.SecretType, ResourceNamesSubscribe: []string{"default", "ALL"}}
	for {
		if err := stream.Send(req); err != nil {
			return clientErr(ctx, err)
		}
		resp, err := stream.Recv()
		if err != nil {
			return clientErr(ctx, err)
		}
		received <- struct{}{}
		req = &discoveryv3.DeltaDiscoveryRequest{TypeUrl: resource.SecretType, ResponseNonce: resp.GetNonce()}
	}
}

// clientErr hides the error of a stream the benchmark itself ended.
func clientErr(ctx context.Context, err error) error {
	if ctx.Err() != nil {
		return nil
	}
	return err
}

// BenchmarkBuildSecrets is the share of Apply spent building the Secrets
// of one SVID and one bundle.
func BenchmarkBuildSecrets(b *testing.B) {
	u := (&rotator{t: b, ca: newCA(b, exampleTD), id: webID}).next()
	for b.Loop() {
		if _, err := BuildSecrets(u, Names{}); err != nil {
			b.Fatal(err)
		}
	}
}
