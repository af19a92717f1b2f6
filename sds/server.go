// Package sds serves the bridge's SVIDs and trust bundles to Envoy over the
// Secret Discovery Service (SDS v3) on a unix socket.
//
// Every rotation.Update becomes Envoy Secret resources (see Names),
// named as SPIRE Agent's SDS names them, in two variants: with Envoy's
// SPIFFE validator and with plain trusted_ca. Both replace the served set
// at once, and every open SotW, Delta and ADS stream is pushed what its
// client lacks, by a stream loop of the bridge's own over Envoy's API
// types, shaped as SPIRE Agent's SDS handler. Each client is served the
// variant SPIRE Agent would give it (see Validation). The SDS version is
// "<process start>-<Generation>": it tells which Update a client holds and
// never repeats across restarts.
package sds

import (
	"cmp"
	"context"
	"errors"
	"fmt"
	"log/slog"
	"math"
	"os"
	"path/filepath"
	"strconv"
	"sync"
	"sync/atomic"
	"time"

	tlsv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/transport_sockets/tls/v3"
	discoveryv3 "github.com/envoyproxy/go-control-plane/envoy/service/discovery/v3"
	secretv3 "github.com/envoyproxy/go-control-plane/envoy/service/secret/v3"
	"google.golang.org/grpc"
	"google.golang.org/grpc/health"
	healthpb "google.golang.org/grpc/health/grpc_health_v1"
	"google.golang.org/grpc/keepalive"

	"github.com/sds-bridge/sds-bridge/internal/connlimit"
	"github.com/sds-bridge/sds-bridge/internal/fielderr"
	"github.com/sds-bridge/sds-bridge/rotation"
)

// DefaultSocketMode is the socket's mode when Config.SocketMode is zero:
// the socket hands out private keys.
const DefaultSocketMode os.FileMode = 0o600

// stopGrace is how long Serve waits for streams to end before it cuts them.
const stopGrace = 1500 * time.Millisecond

// Config configures a Server.
type Config struct {
	// SocketPath is the unix socket Envoy connects to. Required.
	SocketPath string `yaml:"socket"`
	// SocketMode is the socket's file mode; zero means 0600.
	SocketMode os.FileMode `yaml:"socket_mode"`
	// AllowedUIDs and AllowedGIDs say who may fetch secrets: a connection
	// is served if the peer's uid is in AllowedUIDs or its primary gid in
	// AllowedGIDs, as the kernel reports them (SO_PEERCRED). With both
	// empty, only the bridge's own effective uid and root are served.
	// Anyone else gets PermissionDenied on every RPC.
	AllowedUIDs []int `yaml:"allowed_uids"`
	AllowedGIDs []int `yaml:"allowed_gids"`
	// MaxConnections caps the connections open at once; zero means
	// DefaultMaxConnections. Peers the allow-lists refuse may hold an
	// eighth of it together. A connection over the cap is closed at once
	// and counted (Stats.ConnectionsOverCap).
	MaxConnections int `yaml:"max_connections"`
	// RefusedPeerGrace is how long a refused peer's connection stays open
	// for the PermissionDenied answers; zero means DefaultRefusedPeerGrace.
	RefusedPeerGrace time.Duration `yaml:"-"`
	// Names are the resource names of default SVID and bundles.
	Names Names `yaml:",inline"`
	// Logger defaults to slog.Default().
	Logger *slog.Logger `yaml:"-"`

	// limits are the Default… bounds on what one client may hold, not
	// configurable; tests lower them.
	limits limits
}

// WithDefaults fills every unset field with its default.
func (c Config) WithDefaults() Config {
	c.SocketMode = cmp.Or(c.SocketMode, DefaultSocketMode)
	c.MaxConnections = cmp.Or(c.MaxConnections, DefaultMaxConnections)
	c.RefusedPeerGrace = cmp.Or(c.RefusedPeerGrace, DefaultRefusedPeerGrace)
	c.Names = c.Names.WithDefaults()
	c.limits = c.limits.withDefaults()
	c.Logger = cmp.Or(c.Logger, slog.Default())
	return c
}

// Validate checks a defaulted Config. It joins one *fielderr.Error per
// refused field, keyed as the YAML config's sds section spells it, in the
// order the keys are documented.
func (c Config) Validate() error {
	var errs fielderr.List
	if !filepath.IsAbs(c.SocketPath) {
		errs.Add("socket", "%q must be an absolute path", c.SocketPath)
	}
	if c.SocketMode&^os.ModePerm != 0 {
		errs.Add("socket_mode", "%#o has bits other than permissions", uint32(c.SocketMode))
	}
	if c.MaxConnections < 0 {
		errs.Add("max_connections", "%d must not be negative", c.MaxConnections)
	}
	if c.RefusedPeerGrace < 0 {
		errs.Add("refused_peer_grace", "%s must not be negative", c.RefusedPeerGrace)
	}
	for _, l := range []struct {
		key string
		ids []int
	}{{"allowed_uids", c.AllowedUIDs}, {"allowed_gids", c.AllowedGIDs}} {
		for i, id := range l.ids {
			// (uid_t)-1 means "no change" to the kernel, never a real peer.
			if id < 0 || id > math.MaxUint32-1 {
				errs.Add(fmt.Sprintf("%s[%d]", l.key, i), "%d is not a valid id", id)
			}
		}
	}
	errs.Under("", c.Names.Validate())
	return errs.Err()
}

// Stats are the Server's counters.
type Stats struct {
	// StreamsOpen counts open SotW, Delta and ADS streams.
	StreamsOpen int64
	// Pushes counts responses sent on streams.
	Pushes int64
	// NACKs counts requests that rejected a response.
	NACKs int64
	// RefusedPeers counts connections refused because the peer's uid and
	// gid are not allowed.
	RefusedPeers int64
	// ConnectionsOpen counts the connections open now, allowed or not.
	ConnectionsOpen int64
	// ConnectionsOverCap counts connections closed at once because
	// MaxConnections (or the refused peers' share of it) was reached.
	ConnectionsOverCap int64
	// StreamsOverLimit counts streams ended with ResourceExhausted because
	// they or their peer uid held as much as one may (the Default…PerPeer,
	// …PerStream bounds).
	StreamsOverLimit int64
	// Generation is the Update being served; 0 before the first one.
	Generation uint64
	// Version is the SDS version being served; empty before the first Update.
	Version string
}

// Server is the SDS server and a rotation.Sink.
type Server struct {
	cfg    Config
	policy accessPolicy
	// prefix makes versions unique per process start (versionPrefix).
	prefix string
	// current is the snapshot served; publishing serializes its writers.
	current    atomic.Pointer[snapshot]
	publishing sync.Mutex
	reg        registry
	// health answers grpc.health.v1 on the SDS socket.
	health  *health.Server
	serving atomic.Bool

	streamsOpen, pushes, nacks atomic.Int64
	// overLimit counts streams ended over a limit of cfg.limits;
	// overLimitLogged is when that was last logged (unix nanoseconds).
	overLimit, overLimitLogged atomic.Int64
	refusedPeers, overCap      atomic.Int64
	// listener is set by Serve.
	listener atomic.Pointer[connlimit.Listener]
}

var _ rotation.Sink = (*Server)(nil)

// lastPrefix keeps version prefixes unique when New runs more than once in
// the same clock tick.
var lastPrefix atomic.Int64

// New builds a Server from cfg. It does not listen until Serve.
func New(cfg Config) (*Server, error) {
	cfg = cfg.WithDefaults()
	if err := cfg.Validate(); err != nil {
		return nil, fmt.Errorf("config: %w", err)
	}
	s := &Server{
		cfg:    cfg,
		policy: newAccessPolicy(cfg.AllowedUIDs, cfg.AllowedGIDs),
		prefix: versionPrefix(),
		reg:    registry{streams: make(map[*stream]struct{}), peers: make(map[uint32]*peerUsage)},
		health: newHealth(),
	}
	s.current.Store(&snapshot{version: s.versionOf(0), replaced: make(chan struct{})})
	if cfg.Names.DisableSPIFFECertValidation {
		cfg.Logger.Warn("Envoy SDS: SPIFFE certificate validation is disabled: the secret " + strconv.Quote(cfg.Names.AllBundles) +
			" is not served, as in SPIRE: plain trusted_ca roots of several trust domains would let any of their CAs " +
			"vouch for any trust domain, including this one; use the per-trust-domain secrets (spiffe://<trust-domain>), " +
			"or node metadata " + DisableSPIFFECertValidationKey + ": false in the Envoys that want the SPIFFE validator")
	}
	return s, nil
}

// versionPrefix is unique per process start (and per New), so a client
// reconnecting after a restart never presents a version this cache could
// mistake for its own.
func versionPrefix() string {
	for {
		last, now := lastPrefix.Load(), time.Now().UnixNano()
		if now <= last {
			now = last + 1
		}
		if lastPrefix.CompareAndSwap(last, now) {
			return strconv.FormatInt(now, 36)
		}
	}
}

// Name identifies the sink.
func (s *Server) Name() string { return "sds" }

// Register adds the SDS, ADS and grpc.health.v1 services to gs.
func (s *Server) Register(gs *grpc.Server) {
	d := &discovery{s: s}
	secretv3.RegisterSecretDiscoveryServiceServer(gs, d)
	discoveryv3.RegisterAggregatedDiscoveryServiceServer(gs, d)
	healthpb.RegisterHealthServer(gs, s.health)
}

// Apply builds every Secret of u and replaces the served set in one step,
// which wakes every open stream. The SDS version becomes
// "<prefix>-<u.Generation>". On error the previous set stays served.
func (s *Server) Apply(ctx context.Context, u *rotation.Update) error {
	if u == nil {
		return errors.New("apply: nil update")
	}
	if err := ctx.Err(); err != nil {
		return fmt.Errorf("apply generation %d: %w", u.Generation, err)
	}
	variants, err := s.build(u)
	if err != nil {
		return fmt.Errorf("apply generation %d: %w", u.Generation, err)
	}
	snap, err := s.publish(u.Generation, variants)
	if err != nil {
		return fmt.Errorf("apply generation %d: %w", u.Generation, err)
	}
	s.markServing()
	v, _ := validationFor(nil, s.cfg.Names.DisableSPIFFECertValidation)
	s.cfg.Logger.Info("Envoy SDS: serving secrets", "generation", u.Generation, "version", snap.version,
		"secrets", len(snap.variants[v].secrets), "streams", s.streamsOpen.Load())
	return nil
}

// build is both variants of u's Secrets, indexed by Validation, as every
// client gets one of them (validationFor); they share the tls_certificate
// Secrets, built once (and checked and marshalled once, by publish).
func (s *Server) build(u *rotation.Update) ([2]map[string]*tlsv3.Secret, error) {
	var variants [2]map[string]*tlsv3.Secret
	certs, err := tlsCertificates(u, s.cfg.Names)
	if err != nil {
		return variants, err
	}
	for _, v := range []Validation{ValidationSPIFFE, ValidationTrustedCA} {
		names := s.cfg.Names
		names.DisableSPIFFECertValidation = v == ValidationTrustedCA
		if variants[v], err = withValidation(certs, u, names); err != nil {
			return variants, err
		}
	}
	return variants, nil
}

// Stats returns the current counters.
func (s *Server) Stats() Stats {
	st := Stats{
		StreamsOpen:        s.streamsOpen.Load(),
		Pushes:             s.pushes.Load(),
		NACKs:              s.nacks.Load(),
		StreamsOverLimit:   s.overLimit.Load(),
		RefusedPeers:       s.refusedPeers.Load(),
		ConnectionsOverCap: s.overCap.Load(),
	}
	if l := s.listener.Load(); l != nil {
		st.ConnectionsOpen = l.Open.Load()
	}
	if snap := s.current.Load(); snap.number != 0 {
		st.Generation, st.Version = snap.generation, snap.version
	}
	return st
}

// endStreams ends every open stream, and every stream that opens after:
// it replaces the current snapshot by a copy marked stopped, which wakes
// every stream.
func (s *Server) endStreams() {
	s.publishing.Lock()
	defer s.publishing.Unlock()
	prev := s.current.Load()
	if prev.stopped {
		return
	}
	snap := *prev
	snap.stopped, snap.replaced = true, make(chan struct{})
	s.current.Store(&snap)
	close(prev.replaced)
}

// Serve listens on the socket and serves until ctx ends. Then open streams
// are ended (Envoy keeps its secrets and reconnects), in-flight RPCs get
// about 1.5 s to finish, and the socket is removed. Serve can run once.
func (s *Server) Serve(ctx context.Context) error {
	if !s.serving.CompareAndSwap(false, true) {
		return errors.New("Serve called twice")
	}
	ul, removeSocket, err := listenUnix(s.cfg.SocketPath, s.cfg.SocketMode)
	if err != nil {
		return err
	}
	defer removeSocket()
	l := s.limitListener(ul)
	s.listener.Store(l)

	gs := s.grpcServer()
	served := make(chan error, 1)
	go func() { served <- gs.Serve(l) }()
	s.cfg.Logger.Info("Envoy SDS: listening", "socket", s.cfg.SocketPath, "mode", fmt.Sprintf("%04o", s.cfg.SocketMode),
		"allowed", s.policy.String(), "max_connections", s.cfg.MaxConnections, "max_refused", refusedShare(s.cfg.MaxConnections),
		"max_streams_per_connection", s.cfg.limits.streamsPerConn, "max_streams_per_peer", s.cfg.limits.streamsPerPeer)
	if s.cfg.SocketMode&0o077 != 0 && len(s.cfg.AllowedUIDs) == 0 && len(s.cfg.AllowedGIDs) == 0 {
		s.cfg.Logger.Warn("Envoy SDS: the socket mode lets other users connect, but with no allow-list only the bridge's own uid "+
			"and root are served; list Envoy's uid or gid in sds.allowed_uids or sds.allowed_gids",
			"mode", fmt.Sprintf("%04o", s.cfg.SocketMode), "allowed", s.policy.String())
	}

	select {
	case err := <-served:
		s.endStreams()
		return fmt.Errorf("serve on %q: %w", s.cfg.SocketPath, err)
	case <-ctx.Done():
	}

	s.endStreams()
	s.health.Shutdown() // watchers see NOT_SERVING before the socket goes
	stopped := make(chan struct{})
	go func() {
		gs.GracefulStop()
		close(stopped)
	}()
	timer := time.NewTimer(stopGrace)
	defer timer.Stop()
	select {
	case <-stopped:
	case <-timer.C:
		s.cfg.Logger.Warn("Envoy SDS: streams did not end in time; closing them", "grace", stopGrace)
		gs.Stop()
		<-stopped
	}
	<-served
	s.cfg.Logger.Info("Envoy SDS: stopped", "socket", s.cfg.SocketPath)
	return nil
}

// grpcServer is the socket's gRPC server, with its bounds and the peer
// checks, serving s.
func (s *Server) grpcServer() *grpc.Server {
	gs := grpc.NewServer(
		// Streams beyond this on one connection are refused by gRPC itself
		// (REFUSED_STREAM) before any handler runs.
		grpc.MaxConcurrentStreams(s.cfg.limits.streamsPerConn),
		grpc.MaxRecvMsgSize(maxRequestBytes),
		grpc.KeepaliveEnforcementPolicy(keepalive.EnforcementPolicy{
			// Envoy's connection_keepalive may ping every few seconds, also on
			// an idle connection; grpc-go's default (5 min) would answer with
			// GOAWAY "too_many_pings" and force reconnects.
			MinTime:             5 * time.Second,
			PermitWithoutStream: true,
		}),
		grpc.Creds(&peerCreds{policy: s.policy, log: s.cfg.Logger, refused: &s.refusedPeers}),
		grpc.ChainUnaryInterceptor(authorizeUnary),
		grpc.ChainStreamInterceptor(authorizeStream),
	)
	s.Register(gs)
	return gs
}
