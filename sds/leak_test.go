package sds

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"runtime"
	"sync"
	"sync/atomic"
	"testing"

	corev3 "github.com/envoyproxy/go-control-plane/envoy/config/core/v3"
	discoveryv3 "github.com/envoyproxy/go-control-plane/envoy/service/discovery/v3"
	secretv3 "github.com/envoyproxy/go-control-plane/envoy/service/secret/v3"
	"github.com/envoyproxy/go-control-plane/pkg/resource/v3"
	"github.com/sds-bridge/sds-bridge/internal/testkit"
)

// heapInUse is the heap in use after the collector has run.
func heapInUse() uint64 {
	var m runtime.MemStats
	runtime.GC()
	runtime.GC()
	runtime.ReadMemStats(&m)
	return m.HeapInuse
}

// oneStream opens a stream, waits for its first push and ends it the way
// the case number says: a cancelled SotW stream, a SotW stream closed by
// the client after an ACK, or a Delta stream.
func oneStream(ctx context.Context, client secretv3.SecretDiscoveryServiceClient, i int) error {
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	node := &corev3.Node{Id: fmt.Sprintf("envoy-%d", i)}
	switch i % 3 {
	case 0, 1:
		stream, err := client.StreamSecrets(ctx)
		if err != nil {
			return err
		}
		if err := stream.Send(&discoveryv3.DiscoveryRequest{Node: node, TypeUrl: resource.SecretType, ResourceNames: []string{"default", "ROOTCA"}}); err != nil {
			return err
		}
		resp, err := stream.Recv()
		if err != nil {
			return err
		}
		if len(resp.GetResources()) != 2 {
			return fmt.Errorf("stream %d: %d secrets", i, len(resp.GetResources()))
		}
		if i%3 == 1 {
			if err := stream.Send(&discoveryv3.DiscoveryRequest{TypeUrl: resource.SecretType, ResourceNames: []string{"default", "ROOTCA"},
				VersionInfo: resp.GetVersionInfo(), ResponseNonce: resp.GetNonce()}); err != nil {
				return err
			}
			return stream.CloseSend()
		}
	default:
		stream, err := client.DeltaSecrets(ctx)
		if err != nil {
			return err
		}
		if err := stream.Send(&discoveryv3.DeltaDiscoveryRequest{Node: node, TypeUrl: resource.SecretType, ResourceNamesSubscribe: []string{"default"}}); err != nil {
			return err
		}
		if _, err := stream.Recv(); err != nil {
			return err
		}
	}
	return nil
}

// TestTenThousandStreamsLeaveNothingBehind opens and closes 10,000 SDS
// streams over four connections and checks that goroutines and heap come
// back to where they were. The bounds are generous on purpose: they catch
// a per-stream leak (10,000 of anything), not noise.
func TestTenThousandStreamsLeaveNothingBehind(t *testing.T) {
	const (
		conns   = 4
		streams = 10_000
		workers = 16
	)
	s := startServer(t, Config{Logger: slog.New(slog.DiscardHandler)})
	if err := s.Apply(t.Context(), (&rotator{t: t, ca: newCA(t, exampleTD), id: webID}).next()); err != nil {
		t.Fatal(err)
	}
	clients := make([]secretv3.SecretDiscoveryServiceClient, conns)
	for i := range clients {
		clients[i] = secretClient(t, s.cfg.SocketPath)
	}
	// Warm up: connections established, pools and caches filled.
	for i := range 4 * conns {
		if err := oneStream(t.Context(), clients[i%conns], i); err != nil {
			t.Fatal(err)
		}
	}
	testkit.Eventually(t, "warm-up streams closed", func() bool { return s.Stats().StreamsOpen == 0 })
	baseGoroutines, baseHeap := runtime.NumGoroutine(), heapInUse()

	var next atomic.Int64
	var mu sync.Mutex
	var errs []error
	var wg sync.WaitGroup
	for range workers {
		wg.Go(func() {
			for {
				i := int(next.Add(1)) - 1
				if i >= streams {
					return
				}
				if err := oneStream(t.Context(), clients[i%conns], i); err != nil {
					mu.Lock()
					errs = append(errs, err)
					mu.Unlock()
					return
				}
			}
		})
	}
	wg.Wait()
	if err := errors.Join(errs...); err != nil {
		t.Fatal(err)
	}

	testkit.Eventually(t, "every stream closed on the server", func() bool {
		s.reg.mu.Lock()
		n := len(s.reg.streams)
		s.reg.mu.Unlock()
		return s.Stats().StreamsOpen == 0 && n == 0
	})
	if n := s.NumWatches("default"); n != 0 {
		t.Errorf("%d watches left on default", n)
	}
	// Stream goroutines end shortly after the stream; wait for them, with
	// a bound that a leak of one per stream could never meet.
	const slack = 10
	testkit.Eventually(t, "goroutines back to the baseline", func() bool { return runtime.NumGoroutine() <= baseGoroutines+slack })
	goroutines, heap := runtime.NumGoroutine(), heapInUse()
	t.Logf("%d streams: goroutines %d → %d, heap in use %.1f → %.1f MiB, pushes %d",
		streams, baseGoroutines, goroutines, float64(baseHeap)/(1<<20), float64(heap)/(1<<20), s.Stats().Pushes)
	// 10,000 leaked streams would hold far more than this (each keeps at
	// least its request, subscription and gRPC stream state, kilobytes).
	const heapSlack = 8 << 20
	if heap > baseHeap+heapSlack {
		t.Errorf("heap in use %d MiB after the streams, baseline %d MiB", heap>>20, baseHeap>>20)
	}
	if got := s.Stats().Pushes; got < streams {
		t.Errorf("Pushes = %d, want at least %d", got, streams)
	}
}
