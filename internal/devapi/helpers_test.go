package devapi

import (
	"context"
	"errors"
	"path/filepath"
	"testing"
	"time"

	"github.com/spiffe/go-spiffe/v2/proto/spiffe/workload"
	"github.com/spiffe/go-spiffe/v2/spiffeid"
	"github.com/spiffe/go-spiffe/v2/workloadapi"
	"go.uber.org/goleak"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials/insecure"
	"google.golang.org/grpc/metadata"
	"google.golang.org/grpc/status"

	"github.com/sds-bridge/sds-bridge/internal/testkit"
)

func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }

// socketPath is short enough for sun_path, unlike t.TempDir() under long
// test names.
func socketPath(tb testing.TB) string {
	return filepath.Join(testkit.ShortDir(tb), "api.sock")
}

func startServer(tb testing.TB) *Server {
	tb.Helper()
	srv := NewServer(ServerConfig{SocketPath: socketPath(tb), Logger: testkit.Logger(tb)})
	if err := srv.Start(); err != nil {
		tb.Fatal(err)
	}
	tb.Cleanup(srv.Stop)
	return srv
}

func newCA(tb testing.TB, td string) *CA {
	tb.Helper()
	c, err := NewCA(spiffeid.RequireTrustDomainFromString(td), time.Hour)
	if err != nil {
		tb.Fatal(err)
	}
	return c
}

// x509Watcher records what a go-spiffe WatchX509Context delivers.
type x509Watcher struct {
	ctx     context.Context
	updates chan *workloadapi.X509Context
	errs    chan error
}

func (w *x509Watcher) OnX509ContextUpdate(c *workloadapi.X509Context) {
	select {
	case w.updates <- c:
	case <-w.ctx.Done():
	}
}

func (w *x509Watcher) OnX509ContextWatchError(err error) {
	select {
	case w.errs <- err:
	default: // only the first few matter
	}
}

// watch runs a real go-spiffe client watching addr until the test ends,
// then cancels it, checks it ended cleanly and closes the client.
func watch(tb testing.TB, addr string) *x509Watcher {
	tb.Helper()
	ctx, cancel := context.WithCancel(context.Background())
	client, err := workloadapi.New(ctx, workloadapi.WithAddr(addr))
	if err != nil {
		cancel()
		tb.Fatal(err)
	}
	w := &x509Watcher{ctx: ctx, updates: make(chan *workloadapi.X509Context, 16), errs: make(chan error, 16)}
	done := make(chan error, 1)
	go func() { done <- client.WatchX509Context(ctx, w) }()
	tb.Cleanup(func() {
		cancel()
		if err := <-done; !errors.Is(err, context.Canceled) && status.Code(err) != codes.Canceled {
			tb.Errorf("WatchX509Context ended with %v, want canceled", err)
		}
		if err := client.Close(); err != nil {
			tb.Errorf("close client: %v", err)
		}
	})
	return w
}

// next returns the first update satisfying want, skipping others.
func (w *x509Watcher) next(tb testing.TB, what string, want func(*workloadapi.X509Context) bool) *workloadapi.X509Context {
	tb.Helper()
	guard := time.NewTimer(testkit.Timeout)
	defer guard.Stop()
	for {
		select {
		case c := <-w.updates:
			if want(c) {
				return c
			}
		case <-guard.C:
			tb.Fatalf("watcher never saw %s", what)
			return nil
		}
	}
}

// rawClient is a plain gRPC Workload API client, for what go-spiffe hides
// (headers, status codes, the exact bytes).
func rawClient(tb testing.TB, srv *Server) workload.SpiffeWorkloadAPIClient {
	tb.Helper()
	conn, err := grpc.NewClient(srv.Address(), grpc.WithTransportCredentials(insecure.NewCredentials()))
	if err != nil {
		tb.Fatal(err)
	}
	tb.Cleanup(func() {
		if err := conn.Close(); err != nil {
			tb.Errorf("close conn: %v", err)
		}
	})
	return workload.NewSpiffeWorkloadAPIClient(conn)
}

func withHeader(ctx context.Context) context.Context {
	return metadata.AppendToOutgoingContext(ctx, securityHeader, "true")
}

func guardCtx(tb testing.TB) context.Context {
	ctx, cancel := context.WithTimeout(context.Background(), testkit.Timeout)
	tb.Cleanup(cancel)
	return ctx
}
