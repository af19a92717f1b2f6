package devapi

import (
	"bytes"
	"context"
	"fmt"
	"net"
	"os"
	"strconv"
	"testing"
	"time"

	"github.com/spiffe/go-spiffe/v2/bundle/x509bundle"
	"github.com/spiffe/go-spiffe/v2/proto/spiffe/workload"
	"github.com/spiffe/go-spiffe/v2/spiffeid"
	"github.com/spiffe/go-spiffe/v2/svid/x509svid"
	"github.com/spiffe/go-spiffe/v2/workloadapi"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/metadata"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/proto"

	"github.com/sds-bridge/sds-bridge/internal/testkit"
)

func mustResponse(tb testing.TB, svids []*x509svid.SVID, bundles []*x509bundle.Bundle, federated ...*x509bundle.Bundle) *workload.X509SVIDResponse {
	tb.Helper()
	resp, err := X509Response(svids, bundles, federated...)
	if err != nil {
		tb.Fatal(err)
	}
	return resp
}

func mustIssue(tb testing.TB, c *CA, path string, opts SVIDOptions) *x509svid.SVID {
	tb.Helper()
	svid, err := c.IssueWith(spiffeid.RequireFromPath(c.TrustDomain(), path), time.Hour, opts)
	if err != nil {
		tb.Fatal(err)
	}
	return svid
}

// hasSerial matches an update whose default SVID is svid.
func hasSerial(svid *x509svid.SVID) func(*workloadapi.X509Context) bool {
	return func(c *workloadapi.X509Context) bool {
		return c.DefaultSVID().Certificates[0].SerialNumber.Cmp(svid.Certificates[0].SerialNumber) == 0
	}
}

func TestGoSpiffeClientGetsExactlyWhatWasPushed(t *testing.T) {
	srv := startServer(t)
	own, fed := newCA(t, "example.org"), newCA(t, "federated.test")
	backend := mustIssue(t, own, "/backend", SVIDOptions{Hint: "internal"})
	frontend := mustIssue(t, own, "/frontend", SVIDOptions{Hint: "external"})
	srv.SetX509(mustResponse(t, []*x509svid.SVID{backend, frontend}, []*x509bundle.Bundle{own.Bundle()}, fed.Bundle()))

	client, err := workloadapi.New(guardCtx(t), workloadapi.WithAddr(srv.Address()))
	if err != nil {
		t.Fatal(err)
	}
	defer client.Close()

	got, err := client.FetchX509Context(guardCtx(t))
	if err != nil {
		t.Fatalf("FetchX509Context: %v", err)
	}
	want := []*x509svid.SVID{backend, frontend}
	if len(got.SVIDs) != len(want) {
		t.Fatalf("got %d SVIDs, want %d", len(got.SVIDs), len(want))
	}
	for i, w := range want {
		g := got.SVIDs[i]
		if g.ID != w.ID || g.Hint != w.Hint || !bytes.Equal(g.Certificates[0].Raw, w.Certificates[0].Raw) {
			t.Errorf("SVID %d = %s hint %q serial %s, want %s hint %q serial %s", i,
				g.ID, g.Hint, g.Certificates[0].SerialNumber, w.ID, w.Hint, w.Certificates[0].SerialNumber)
		}
	}
	if _, _, err := x509svid.Verify(got.DefaultSVID().Certificates, got.Bundles); err != nil {
		t.Errorf("default SVID does not verify against the received bundles: %v", err)
	}
	checkBundles(t, "FetchX509Context", got.Bundles, own.Bundle(), fed.Bundle())

	bundles, err := client.FetchX509Bundles(guardCtx(t))
	if err != nil {
		t.Fatalf("FetchX509Bundles: %v", err)
	}
	checkBundles(t, "FetchX509Bundles", bundles, own.Bundle(), fed.Bundle())
}

func checkBundles(t *testing.T, what string, got *x509bundle.Set, want ...*x509bundle.Bundle) {
	t.Helper()
	if got.Len() != len(want) {
		t.Errorf("%s: %d bundles, want %d", what, got.Len(), len(want))
	}
	for _, w := range want {
		g, ok := got.Get(w.TrustDomain())
		if !ok {
			t.Errorf("%s: no bundle for %s", what, w.TrustDomain())
			continue
		}
		if !g.Equal(w) {
			t.Errorf("%s: bundle for %s differs from the one pushed", what, w.TrustDomain())
		}
	}
}

func TestWatcherSeesEveryPushInOrder(t *testing.T) {
	srv := startServer(t)
	own := newCA(t, "example.org")
	w := watch(t, srv.Address())
	for i := range 3 {
		svid := mustIssue(t, own, "/backend", SVIDOptions{})
		srv.SetX509(mustResponse(t, []*x509svid.SVID{svid}, []*x509bundle.Bundle{own.Bundle()}))
		select {
		case got := <-w.updates:
			if !hasSerial(svid)(got) {
				t.Fatalf("push %d: watcher got serial %s, want %s", i,
					got.DefaultSVID().Certificates[0].SerialNumber, svid.Certificates[0].SerialNumber)
			}
		case <-time.After(testkit.Timeout):
			t.Fatalf("push %d never reached the watcher", i)
		}
	}
}

func TestSecurityHeaderRequired(t *testing.T) {
	srv := startServer(t)
	own := newCA(t, "example.org")
	srv.SetX509(mustResponse(t, []*x509svid.SVID{mustIssue(t, own, "/a", SVIDOptions{})}, []*x509bundle.Bundle{own.Bundle()}))
	client := rawClient(t, srv)

	headers := []struct {
		name     string
		md       metadata.MD
		wantCode codes.Code
	}{
		{"none", nil, codes.InvalidArgument},
		{"false", metadata.Pairs(securityHeader, "false"), codes.InvalidArgument},
		{"twice", metadata.Pairs(securityHeader, "true", securityHeader, "true"), codes.InvalidArgument},
		{"present", metadata.Pairs(securityHeader, "true"), codes.OK},
	}
	calls := []struct {
		name string
		// okCode is what a call with the header gets.
		okCode codes.Code
		call   func(ctx context.Context) error
	}{
		{"FetchX509SVID", codes.OK, func(ctx context.Context) error {
			s, err := client.FetchX509SVID(ctx, &workload.X509SVIDRequest{})
			if err != nil {
				return err
			}
			_, err = s.Recv()
			return err
		}},
		{"FetchX509Bundles", codes.OK, func(ctx context.Context) error {
			s, err := client.FetchX509Bundles(ctx, &workload.X509BundlesRequest{})
			if err != nil {
				return err
			}
			_, err = s.Recv()
			return err
		}},
		{"FetchJWTSVID", codes.OK, func(ctx context.Context) error {
			_, err := client.FetchJWTSVID(ctx, &workload.JWTSVIDRequest{Audience: []string{"x"}})
			return err
		}},
	}
	for _, h := range headers {
		for _, c := range calls {
			t.Run(h.name+"/"+c.name, func(t *testing.T) {
				ctx, cancel := context.WithTimeout(context.Background(), testkit.Timeout)
				defer cancel()
				if h.md != nil {
					ctx = metadata.NewOutgoingContext(ctx, h.md)
				}
				want := h.wantCode
				if want == codes.OK {
					want = c.okCode
				}
				err := c.call(ctx)
				if got := status.Code(err); got != want {
					t.Fatalf("code %s (%v), want %s", got, err, want)
				}
				if want == codes.InvalidArgument {
					if msg := status.Convert(err).Message(); msg != "security header missing from request" {
						t.Errorf("message %q, want SPIRE's", msg)
					}
				}
			})
		}
	}
}

func TestWatcherReconnectsAfterRestartOnSameSocket(t *testing.T) {
	for _, tc := range []struct {
		name string
		// restart brings the API back on srv's socket and returns the
		// server now serving it.
		restart func(t *testing.T, srv *Server, resp *workload.X509SVIDResponse) *Server
	}{
		{"same server", func(t *testing.T, srv *Server, resp *workload.X509SVIDResponse) *Server {
			srv.SetX509(resp) // while nobody can connect
			if err := srv.Start(); err != nil {
				t.Fatal(err)
			}
			return srv
		}},
		{"new server", func(t *testing.T, srv *Server, resp *workload.X509SVIDResponse) *Server {
			next := NewServer(ServerConfig{SocketPath: srv.SocketPath(), Logger: testkit.Logger(t)})
			next.SetX509(resp)
			if err := next.Start(); err != nil {
				t.Fatal(err)
			}
			t.Cleanup(next.Stop)
			return next
		}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			srv := startServer(t)
			own := newCA(t, "example.org")
			before := mustIssue(t, own, "/backend", SVIDOptions{})
			srv.SetX509(mustResponse(t, []*x509svid.SVID{before}, []*x509bundle.Bundle{own.Bundle()}))
			w := watch(t, srv.Address())
			w.next(t, "the first SVID", hasSerial(before))

			srv.Stop()
			if n := srv.OpenStreams(); n != 0 {
				t.Fatalf("%d streams open after Stop", n)
			}
			if _, err := os.Lstat(srv.SocketPath()); !os.IsNotExist(err) {
				t.Fatalf("socket still there after Stop: %v", err)
			}
			select {
			case err := <-w.errs:
				t.Logf("watcher saw the API go away: %v", err)
			case <-time.After(testkit.Timeout):
				t.Fatal("watcher never noticed the API went away")
			}

			after := mustIssue(t, own, "/backend", SVIDOptions{})
			restarted := time.Now()
			tc.restart(t, srv, mustResponse(t, []*x509svid.SVID{after}, []*x509bundle.Bundle{own.Bundle()}))
			w.next(t, "the SVID pushed after the restart", hasSerial(after))
			// Informational: go-spiffe retries after 1s, 2s, 3s... (linear,
			// reset by every received message), capped at 30s.
			t.Logf("watcher reconnected %s after the restart", time.Since(restarted).Round(time.Millisecond))
		})
	}
}

func TestStartHandlesExistingSocketFile(t *testing.T) {
	for _, tc := range []struct {
		name    string
		prepare func(t *testing.T, path string)
		wantErr bool
		// keep: the existing file must still be there after a refusal.
		keep bool
	}{
		{"no file", func(*testing.T, string) {}, false, false},
		{"stale socket", func(t *testing.T, path string) {
			l, err := net.ListenUnix("unix", &net.UnixAddr{Name: path, Net: "unix"})
			if err != nil {
				t.Fatal(err)
			}
			l.SetUnlinkOnClose(false) // a crashed agent leaves its socket behind
			if err := l.Close(); err != nil {
				t.Fatal(err)
			}
		}, false, false},
		{"live socket", func(t *testing.T, path string) {
			l, err := net.Listen("unix", path)
			if err != nil {
				t.Fatal(err)
			}
			t.Cleanup(func() { _ = l.Close() })
		}, true, true},
		{"regular file", func(t *testing.T, path string) {
			if err := os.WriteFile(path, []byte("not a socket"), 0o600); err != nil {
				t.Fatal(err)
			}
		}, true, true},
	} {
		t.Run(tc.name, func(t *testing.T) {
			path := socketPath(t)
			tc.prepare(t, path)
			srv := NewServer(ServerConfig{SocketPath: path, Logger: testkit.Logger(t)})
			err := srv.Start()
			defer srv.Stop()
			if (err != nil) != tc.wantErr {
				t.Fatalf("Start: %v, want error %v", err, tc.wantErr)
			}
			if tc.keep {
				if _, statErr := os.Lstat(path); statErr != nil {
					t.Fatalf("refused Start removed the existing file: %v", statErr)
				}
				return
			}
			if err == nil {
				own := newCA(t, "example.org")
				svid := mustIssue(t, own, "/a", SVIDOptions{})
				srv.SetX509(mustResponse(t, []*x509svid.SVID{svid}, []*x509bundle.Bundle{own.Bundle()}))
				s, err := rawClient(t, srv).FetchX509SVID(withHeader(guardCtx(t)), &workload.X509SVIDRequest{})
				if err != nil {
					t.Fatal(err)
				}
				if _, err := s.Recv(); err != nil {
					t.Fatalf("server on the reused path does not answer: %v", err)
				}
			}
		})
	}
}

func TestStartWhileServingFails(t *testing.T) {
	srv := startServer(t)
	if err := srv.Start(); err == nil {
		t.Fatal("second Start succeeded")
	}
}

func TestServeRunsUntilContextEnds(t *testing.T) {
	srv := NewServer(ServerConfig{SocketPath: socketPath(t), Logger: testkit.Logger(t)})
	own := newCA(t, "example.org")
	svid := mustIssue(t, own, "/a", SVIDOptions{})
	srv.SetX509(mustResponse(t, []*x509svid.SVID{svid}, []*x509bundle.Bundle{own.Bundle()}))
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	done := make(chan error, 1)
	go func() { done <- srv.Serve(ctx) }()

	// WaitForReady: the socket may not exist yet when the call starts.
	client, err := workloadapi.New(ctx, workloadapi.WithAddr(srv.Address()),
		workloadapi.WithDialOptions(grpc.WithDefaultCallOptions(grpc.WaitForReady(true))))
	if err != nil {
		t.Fatal(err)
	}
	got, err := client.FetchX509SVID(guardCtx(t))
	if closeErr := client.Close(); closeErr != nil {
		t.Errorf("close client: %v", closeErr)
	}
	if err != nil {
		t.Fatalf("FetchX509SVID: %v", err)
	}
	if got.ID != svid.ID {
		t.Errorf("got %s, want %s", got.ID, svid.ID)
	}

	cancel()
	select {
	case err := <-done:
		if err != nil {
			t.Fatalf("Serve: %v", err)
		}
	case <-time.After(testkit.Timeout):
		t.Fatal("Serve did not return after ctx ended")
	}
	if _, err := os.Lstat(srv.SocketPath()); !os.IsNotExist(err) {
		t.Fatalf("socket still there after Serve returned: %v", err)
	}
}

// TestBadResponsesAreServedVerbatim: the server must never judge what it is
// given, or the tests of the client's validation would test nothing.
func TestBadResponsesAreServedVerbatim(t *testing.T) {
	own, other := newCA(t, "example.org"), newCA(t, "example.org")
	good := mustIssue(t, own, "/a", SVIDOptions{})
	stranger := mustIssue(t, other, "/a", SVIDOptions{})
	expired := mustIssue(t, own, "/a", SVIDOptions{NotBefore: time.Now().Add(-2 * time.Hour), NotAfter: time.Now().Add(-time.Hour)})
	notYet := mustIssue(t, own, "/a", SVIDOptions{NotBefore: time.Now().Add(time.Hour), NotAfter: time.Now().Add(2 * time.Hour)})
	mismatched := &x509svid.SVID{ID: good.ID, Certificates: good.Certificates, PrivateKey: stranger.PrivateKey}
	ownBundle := []*x509bundle.Bundle{own.Bundle()}

	for _, tc := range []struct {
		name string
		resp *workload.X509SVIDResponse
	}{
		{"empty SVID list", &workload.X509SVIDResponse{}},
		{"expired leaf", mustResponse(t, []*x509svid.SVID{expired}, ownBundle)},
		{"not yet valid leaf", mustResponse(t, []*x509svid.SVID{notYet}, ownBundle)},
		{"mismatched key", mustResponse(t, []*x509svid.SVID{mismatched}, ownBundle)},
		{"unverifiable chain", mustResponse(t, []*x509svid.SVID{stranger}, ownBundle)},
		{"garbage", &workload.X509SVIDResponse{Svids: []*workload.X509SVID{{
			SpiffeId: "not a SPIFFE ID", X509Svid: []byte("junk"), X509SvidKey: []byte("junk"), Bundle: []byte("junk"),
		}}}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			srv := startServer(t)
			srv.SetX509(tc.resp)
			s, err := rawClient(t, srv).FetchX509SVID(withHeader(guardCtx(t)), &workload.X509SVIDRequest{})
			if err != nil {
				t.Fatal(err)
			}
			got, err := s.Recv()
			if err != nil {
				t.Fatalf("Recv: %v", err)
			}
			if !proto.Equal(got, tc.resp) {
				t.Fatalf("server changed the response:\n got %v\nwant %v", got, tc.resp)
			}
		})
	}
}

func TestSetX509ErrorEndsStreamsUntilNextResponse(t *testing.T) {
	srv := startServer(t)
	client := rawClient(t, srv)
	ctx := withHeader(guardCtx(t))

	// Streams opened before anything was pushed wait, then get the error.
	x509Stream, err := client.FetchX509SVID(ctx, &workload.X509SVIDRequest{})
	if err != nil {
		t.Fatal(err)
	}
	bundleStream, err := client.FetchX509Bundles(ctx, &workload.X509BundlesRequest{})
	if err != nil {
		t.Fatal(err)
	}
	if err := srv.WaitOpenStreams(guardCtx(t), 2); err != nil {
		t.Fatal(err)
	}
	srv.SetX509Error(codes.PermissionDenied, "no identity issued")
	checkStatus := func(what string, err error) {
		t.Helper()
		if st := status.Convert(err); st.Code() != codes.PermissionDenied || st.Message() != "no identity issued" {
			t.Errorf("%s: %v, want PermissionDenied \"no identity issued\"", what, err)
		}
	}
	_, err = x509Stream.Recv()
	checkStatus("open FetchX509SVID", err)
	_, err = bundleStream.Recv()
	checkStatus("open FetchX509Bundles", err)

	late, err := client.FetchX509SVID(ctx, &workload.X509SVIDRequest{})
	if err != nil {
		t.Fatal(err)
	}
	_, err = late.Recv()
	checkStatus("new FetchX509SVID", err)

	// A go-spiffe watcher keeps retrying and recovers on the next response.
	w := watch(t, srv.Address())
	select {
	case err := <-w.errs:
		if status.Code(err) != codes.PermissionDenied {
			t.Errorf("watcher error %v, want PermissionDenied", err)
		}
	case <-time.After(testkit.Timeout):
		t.Fatal("watcher saw no error")
	}
	own := newCA(t, "example.org")
	svid := mustIssue(t, own, "/a", SVIDOptions{})
	srv.SetX509(mustResponse(t, []*x509svid.SVID{svid}, []*x509bundle.Bundle{own.Bundle()}))
	w.next(t, "the SVID after the error", hasSerial(svid))
}

func TestOpenStreams(t *testing.T) {
	srv := startServer(t)
	client := rawClient(t, srv)
	ctx, cancel := context.WithCancel(withHeader(guardCtx(t)))
	defer cancel()
	if _, err := client.FetchX509SVID(ctx, &workload.X509SVIDRequest{}); err != nil {
		t.Fatal(err)
	}
	if _, err := client.FetchX509Bundles(withHeader(guardCtx(t)), &workload.X509BundlesRequest{}); err != nil {
		t.Fatal(err)
	}
	if err := srv.WaitOpenStreams(guardCtx(t), 2); err != nil {
		t.Fatal(err)
	}
	cancel()
	if err := srv.WaitOpenStreams(guardCtx(t), 1); err != nil {
		t.Fatal(err)
	}
	srv.Stop()
	if n := srv.OpenStreams(); n != 0 {
		t.Fatalf("OpenStreams after Stop = %d, want 0", n)
	}
	// A wait that cannot be satisfied ends with its context.
	short, cancelShort := context.WithCancel(context.Background())
	cancelShort()
	if err := srv.WaitOpenStreams(short, 5); err == nil {
		t.Fatal("WaitOpenStreams(5) succeeded with no stream open")
	}
}

// TestSlowStreamSkipsToNewest: a client that does not read must not make the
// server queue every response; when it reads again it gets the newest.
func TestSlowStreamSkipsToNewest(t *testing.T) {
	srv := startServer(t)
	ctx := withHeader(guardCtx(t))
	// 1 MiB per message: far beyond gRPC's 64 KiB initial stream window, so
	// the handler blocks in Send while the client is not reading.
	filler := make([]byte, 1<<20)
	resp := func(i int) *workload.X509SVIDResponse {
		return &workload.X509SVIDResponse{
			Svids: []*workload.X509SVID{{SpiffeId: "spiffe://example.org/a", Hint: strconv.Itoa(i)}},
			Crl:   [][]byte{filler},
		}
	}
	stream, err := rawClient(t, srv).FetchX509SVID(ctx, &workload.X509SVIDRequest{}, grpc.MaxCallRecvMsgSize(4<<20))
	if err != nil {
		t.Fatal(err)
	}
	if err := srv.WaitOpenStreams(guardCtx(t), 1); err != nil {
		t.Fatal(err)
	}
	const pushes = 20
	for i := range pushes {
		srv.SetX509(resp(i))
	}
	last := strconv.Itoa(pushes - 1)
	received := 0
	for prev := -1; ; {
		got, err := stream.Recv()
		if err != nil {
			t.Fatalf("Recv after %d messages: %v", received, err)
		}
		received++
		n, _ := strconv.Atoi(got.Svids[0].Hint)
		if n <= prev {
			t.Fatalf("got response %d after %d", n, prev)
		}
		prev = n
		if got.Svids[0].Hint == last {
			break
		}
	}
	if received >= pushes {
		t.Fatalf("client received %d of %d responses: the server queued a backlog", received, pushes)
	}
	t.Logf("client received %d of %d responses, ending with the newest", received, pushes)
}

func BenchmarkSetX509ToWatchers(b *testing.B) {
	for _, watchers := range []int{1, 10} {
		b.Run(fmt.Sprintf("watchers=%d", watchers), func(b *testing.B) {
			srv := startServer(b)
			own := newCA(b, "example.org")
			// Two alternating responses: each push is a change.
			var resps [2]*workload.X509SVIDResponse
			for i := range resps {
				resps[i] = mustResponse(b, []*x509svid.SVID{mustIssue(b, own, "/a", SVIDOptions{})}, []*x509bundle.Bundle{own.Bundle()})
			}
			ws := make([]*x509Watcher, watchers)
			for i := range ws {
				ws[i] = watch(b, srv.Address())
			}
			if err := srv.WaitOpenStreams(guardCtx(b), watchers); err != nil {
				b.Fatal(err)
			}
			n := 0
			for b.Loop() {
				srv.SetX509(resps[n%2])
				for _, w := range ws {
					<-w.updates
				}
				n++
			}
			// Each push reaches every watcher; per delivery is the fan-out cost.
			b.ReportMetric(float64(b.Elapsed().Nanoseconds())/float64(n*watchers), "ns/delivery")
		})
	}
}

// BenchmarkReconnect measures how long a go-spiffe watcher takes to get an
// update after the Workload API is stopped and started again: dominated by
// go-spiffe's first retry delay (1s).
func BenchmarkReconnect(b *testing.B) {
	srv := startServer(b)
	own := newCA(b, "example.org")
	first := mustIssue(b, own, "/a", SVIDOptions{})
	srv.SetX509(mustResponse(b, []*x509svid.SVID{first}, []*x509bundle.Bundle{own.Bundle()}))
	w := watch(b, srv.Address())
	w.next(b, "the first SVID", hasSerial(first))
	var total time.Duration
	n := 0
	for b.Loop() {
		n++
		b.StopTimer()
		svid := mustIssue(b, own, "/a", SVIDOptions{})
		resp := mustResponse(b, []*x509svid.SVID{svid}, []*x509bundle.Bundle{own.Bundle()})
		b.StartTimer()
		srv.Stop()
		srv.SetX509(resp)
		start := time.Now()
		if err := srv.Start(); err != nil {
			b.Fatal(err)
		}
		w.next(b, "the SVID after restart", hasSerial(svid))
		total += time.Since(start)
	}
	b.ReportMetric(total.Seconds()/float64(n), "s/reconnect")
}
