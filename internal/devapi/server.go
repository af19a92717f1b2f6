// Package devapi is a real SPIFFE Workload API gRPC server on a unix socket,
// for `sds-bridge dev` (where an Issuer's in-memory CA rotates short-lived
// SVIDs at half-life) and for tests (a fake SPIRE agent that can stop and
// start again on the same socket). It serves the X.509 response it was last
// given without validating it, so tests can push expired or mismatched
// material and watch clients refuse it. JWT-SVIDs are issued for that
// response's SPIFFE IDs, for any audience (jwt.go); WIT is Unimplemented.
package devapi

import (
	"cmp"
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"path/filepath"
	"sync"

	"github.com/sds-bridge/sds-bridge/internal/flock"
	"github.com/spiffe/go-spiffe/v2/proto/spiffe/workload"
	"github.com/spiffe/go-spiffe/v2/spiffeid"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/metadata"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/proto"
)

// securityHeader keeps browsers and SSRF-style requests out (SPIFFE Workload
// Endpoint spec, section 4.2).
const securityHeader = "workload.spiffe.io"

// ServerConfig configures a Server.
type ServerConfig struct {
	// SocketPath is the unix socket the Workload API listens on. Keep it
	// under ~100 bytes (the sun_path limit).
	SocketPath string
	// Logger defaults to slog.Default().
	Logger *slog.Logger
}

// Server is a Workload API server. The zero value is not usable; call
// NewServer. Its state (the current response or error) lives in the Server,
// not in the listener, so it survives Stop and Start.
type Server struct {
	workload.UnimplementedSpiffeWorkloadAPIServer

	path string
	log  *slog.Logger

	mu sync.Mutex
	// x509 and x509Err are mutually exclusive; both nil means nothing to
	// send yet, and streams wait. x509Ver counts changes so a stream sends
	// only what it has not sent, and only the newest.
	x509    *workload.X509SVIDResponse
	x509Err error
	x509Ver uint64
	// bundles is derived from x509; bundlesVer moves only when the bundles
	// actually change, as SPIRE does not resend identical bundles.
	bundles    *workload.X509BundlesResponse
	bundlesVer uint64
	// streams holds one wake-up channel (capacity 1) per open stream.
	streams map[chan struct{}]struct{}
	// streamsChanged is closed and replaced when a stream opens or closes.
	streamsChanged chan struct{}
	jwt            jwtState

	// life serializes Start and Stop.
	life      sync.Mutex
	grpc      *grpc.Server
	serveDone chan struct{}
	serveErr  error
}

// NewServer returns a stopped Server; call Start or Serve.
func NewServer(cfg ServerConfig) *Server {
	path := cfg.SocketPath
	// go-spiffe wants unix:///absolute/path; Abs only fails without a cwd.
	if abs, err := filepath.Abs(path); err == nil {
		path = abs
	}
	return &Server{
		path:           path,
		log:            cmp.Or(cfg.Logger, slog.Default()).With("component", "devapi", "socket", path),
		streams:        make(map[chan struct{}]struct{}),
		streamsChanged: make(chan struct{}),
		jwt:            jwtState{streams: make(map[chan struct{}]struct{})},
	}
}

// Address is the Workload API address in the form go-spiffe expects
// (workloadapi.WithAddr, SPIFFE_ENDPOINT_SOCKET).
func (s *Server) Address() string { return "unix://" + s.path }

// Start listens on the socket and serves in the background until Stop. A
// stale socket file left by a dead server is removed first; a live one, or
// a file that is not a socket, is an error.
func (s *Server) Start() error {
	s.life.Lock()
	defer s.life.Unlock()
	if s.grpc != nil {
		return errors.New("start: already serving")
	}
	if err := flock.RemoveStaleSocket(s.path); err != nil {
		return err
	}
	lis, err := net.Listen("unix", s.path)
	if err != nil {
		return fmt.Errorf("listen on %q: %w", s.path, err)
	}
	gs := grpc.NewServer(
		// Stop then waits for every stream handler, so no stream is open
		// afterwards and no goroutine outlives the server.
		grpc.WaitForHandlers(true),
		grpc.ChainUnaryInterceptor(func(ctx context.Context, req any, _ *grpc.UnaryServerInfo, h grpc.UnaryHandler) (any, error) {
			if err := checkSecurityHeader(ctx); err != nil {
				return nil, err
			}
			return h(ctx, req)
		}),
		grpc.ChainStreamInterceptor(func(srv any, ss grpc.ServerStream, _ *grpc.StreamServerInfo, h grpc.StreamHandler) error {
			if err := checkSecurityHeader(ss.Context()); err != nil {
				return err
			}
			return h(srv, ss)
		}),
	)
	workload.RegisterSpiffeWorkloadAPIServer(gs, s)
	done := make(chan struct{})
	s.grpc, s.serveDone, s.serveErr = gs, done, nil
	go func() {
		defer close(done)
		if err := gs.Serve(lis); err != nil {
			s.serveErr = fmt.Errorf("serve on %q: %w", s.path, err)
		}
	}()
	s.log.Info("workload API listening", "address", s.Address())
	return nil
}

// Stop makes the Workload API go away as a crashed agent would: streams fail
// with Unavailable, the socket is removed; it returns once every handler has.
// A second Stop does nothing; the response is kept for the next Start.
func (s *Server) Stop() {
	s.life.Lock()
	defer s.life.Unlock()
	if s.grpc == nil {
		return
	}
	s.grpc.Stop()
	<-s.serveDone
	s.grpc = nil
	s.log.Info("workload API stopped")
}

// Serve is Start, then Wait.
func (s *Server) Serve(ctx context.Context) error {
	if err := s.Start(); err != nil {
		return err
	}
	return s.Wait(ctx)
}

// Wait runs a started server until ctx ends (nil) or serving fails, then
// stops it: for a caller that needs the socket listening first.
func (s *Server) Wait(ctx context.Context) error {
	s.life.Lock()
	done := s.serveDone
	s.life.Unlock()
	select {
	case <-ctx.Done():
		s.Stop()
		return nil
	case <-done:
		s.Stop()
		return s.serveErr
	}
}

// SetX509 makes resp (sent as is, not to be modified afterwards) the current
// X.509 response, clears a SetX509Error and pushes it to every stream; a slow
// stream skips to the newest, and bundles go out only if they changed. A
// nil resp withdraws the response: new streams wait for the next one.
func (s *Server) SetX509(resp *workload.X509SVIDResponse) { s.setX509(resp, nil) }

// SetX509Error ends every open X.509 stream (SVIDs and bundles) with a gRPC
// status, and answers new ones the same way, until the next SetX509. SPIRE's
// agent does this with codes.PermissionDenied, "no identity issued" when
// the caller has no registration entry; go-spiffe then retries with backoff.
func (s *Server) SetX509Error(code codes.Code, msg string) { s.setX509(nil, status.Error(code, msg)) }

// setX509 sets a response or an error; bundles are derived from resp.
func (s *Server) setX509(resp *workload.X509SVIDResponse, err error) {
	bundles := bundlesOf(resp)
	s.mu.Lock()
	defer s.mu.Unlock()
	s.x509, s.x509Err = resp, err
	s.x509Ver++
	if !proto.Equal(bundles, s.bundles) {
		s.bundles = bundles
		s.bundlesVer++
	}
	s.setJWTBundlesLocked(resp)
	s.wakeLocked()
}

// WaitOpenStreams blocks until exactly n X.509 streams are open, e.g. 1 once
// a client watches, or 0 after it went away. It fails only when ctx ends.
func (s *Server) WaitOpenStreams(ctx context.Context, n int) error {
	for {
		s.mu.Lock()
		got, changed := len(s.streams), s.streamsChanged
		s.mu.Unlock()
		if got == n {
			return nil
		}
		select {
		case <-changed:
		case <-ctx.Done():
			return fmt.Errorf("wait for %d open streams (have %d): %w", n, got, ctx.Err())
		}
	}
}

// FetchX509SVID implements the Workload API: the current response at once,
// then every new one.
func (s *Server) FetchX509SVID(_ *workload.X509SVIDRequest, stream grpc.ServerStreamingServer[workload.X509SVIDResponse]) error {
	return serveStream(s, stream, "FetchX509SVID", s.streams, func() (*workload.X509SVIDResponse, uint64, error) {
		return s.x509, s.x509Ver, s.x509Err
	})
}

// FetchX509Bundles implements the Workload API: the current response's own
// and federated bundles, keyed by trust domain ID, then every change.
func (s *Server) FetchX509Bundles(_ *workload.X509BundlesRequest, stream grpc.ServerStreamingServer[workload.X509BundlesResponse]) error {
	return serveStream(s, stream, "FetchX509Bundles", s.streams, func() (*workload.X509BundlesResponse, uint64, error) {
		return s.bundles, s.bundlesVer, s.x509Err
	})
}

// serveStream runs one server stream registered in streams: current reads
// (under s.mu) the message to send, its version and a terminal error.
func serveStream[T any](s *Server, stream grpc.ServerStreamingServer[T], method string, streams map[chan struct{}]struct{}, current func() (*T, uint64, error)) error {
	wake, untrack := s.trackStream(method, streams)
	defer untrack()
	var sent uint64
	for {
		s.mu.Lock()
		msg, ver, err := current()
		s.mu.Unlock()
		if err != nil {
			return err
		}
		if msg != nil && ver != sent {
			if err := stream.Send(msg); err != nil {
				s.log.Debug("workload API send failed", "method", method, "error", err)
				return err
			}
			sent = ver
		}
		select {
		case <-wake:
		case <-stream.Context().Done():
			return status.FromContextError(stream.Context().Err()).Err()
		}
	}
}

// trackStream registers a stream's wake-up channel in streams until
// untrack runs; WaitOpenStreams sees both changes.
func (s *Server) trackStream(method string, streams map[chan struct{}]struct{}) (wake chan struct{}, untrack func()) {
	wake = make(chan struct{}, 1)
	track := func(event string, change func()) {
		s.mu.Lock()
		change()
		n := len(streams)
		close(s.streamsChanged)
		s.streamsChanged = make(chan struct{})
		s.mu.Unlock()
		s.log.Debug("workload API stream "+event, "method", method, "open_streams", n)
	}
	track("opened", func() { streams[wake] = struct{}{} })
	return wake, func() { track("closed", func() { delete(streams, wake) }) }
}

// wakeLocked wakes every X.509 and JWT bundle stream. It never blocks: a
// pending wake-up already makes the stream read the newest state.
func (s *Server) wakeLocked() {
	for _, streams := range []map[chan struct{}]struct{}{s.streams, s.jwt.streams} {
		for wake := range streams {
			select {
			case wake <- struct{}{}:
			default:
			}
		}
	}
}

// checkSecurityHeader refuses a call without the Workload API header, with
// SPIRE's code and text (go-spiffe stops watching on InvalidArgument).
func checkSecurityHeader(ctx context.Context) error {
	md, _ := metadata.FromIncomingContext(ctx)
	if v := md.Get(securityHeader); len(v) != 1 || v[0] != "true" {
		return status.Error(codes.InvalidArgument, "security header missing from request")
	}
	return nil
}

// bundlesOf derives the FetchX509Bundles answer from an X.509 response
// without judging it: an unparsable SPIFFE ID is used as the key verbatim.
func bundlesOf(resp *workload.X509SVIDResponse) *workload.X509BundlesResponse {
	if resp == nil {
		return nil
	}
	out := &workload.X509BundlesResponse{Crl: resp.GetCrl(), Bundles: make(map[string][]byte)}
	for _, svid := range resp.GetSvids() {
		key := svid.GetSpiffeId()
		if id, err := spiffeid.FromString(key); err == nil {
			key = id.TrustDomain().IDString()
		}
		if _, ok := out.Bundles[key]; !ok {
			out.Bundles[key] = svid.GetBundle()
		}
	}
	for td, b := range resp.GetFederatedBundles() {
		if _, ok := out.Bundles[td]; !ok {
			out.Bundles[td] = b
		}
	}
	return out
}
