// Package sds serves the bridge's SVIDs and trust bundles to Envoy over
// SDS v3 (SotW, Delta, ADS, FetchSecrets) on a unix socket, named and
// shaped as SPIRE Agent's SDS serves them. The version is
// "<process start>-<Generation>", so it never repeats across restarts.
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

// DefaultSocketMode is Config.SocketMode when zero: the socket hands out
// private keys.
const DefaultSocketMode os.FileMode = 0o600

// stopGrace is how long Serve waits for streams to end before it cuts them.
const stopGrace = 1500 * time.Millisecond

// Config configures a Server.
type Config struct {
	// SocketPath is the unix socket Envoy connects to. Required.
	SocketPath string `yaml:"socket"`
	// SocketMode is the socket's file mode; zero means 0600.
	SocketMode os.FileMode `yaml:"socket_mode"`
	// AllowedUIDs and AllowedGIDs say who may fetch secrets: the peer's
	// uid or primary gid (SO_PEERCRED) must be listed. With both empty,
	// only the bridge's own effective uid and root are served; anyone else
	// gets PermissionDenied on every RPC.
	AllowedUIDs []int `yaml:"allowed_uids"`
	AllowedGIDs []int `yaml:"allowed_gids"`
	// MaxConnections caps the connections open at once (zero:
	// DefaultMaxConnections); refused peers may hold an eighth of it.
	MaxConnections int `yaml:"max_connections"`
	// RefusedPeerGrace is how long a refused peer's connection stays open
	// for the PermissionDenied answers.
	RefusedPeerGrace time.Duration `yaml:"-"`
	Names            Names         `yaml:",inline"`
	Logger           *slog.Logger  `yaml:"-"`

	// limits are not configurable; tests lower them.
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

// Validate checks a defaulted Config: one *fielderr.Error per refused
// field, keyed as the YAML sds section spells it.
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
	StreamsOpen int64
	Pushes      int64 // responses sent on streams
	NACKs       int64
	// RefusedPeers counts connections of peers the allow-lists refuse.
	RefusedPeers    int64
	ConnectionsOpen int64 // allowed or not
	// ConnectionsOverCap counts connections closed at once over
	// MaxConnections or the refused peers' share of it.
	ConnectionsOverCap int64
	// StreamsOverLimit counts streams ended with ResourceExhausted over a
	// per-stream or per-peer bound.
	StreamsOverLimit int64
	// Generation and Version are what is served; zero before the first Update.
	Generation uint64
	Version    string
}

// Server is the SDS server and a rotation.Sink.
type Server struct {
	cfg    Config
	policy accessPolicy
	prefix string // versionPrefix
	// current is the snapshot served; publishing serializes its writers.
	current    atomic.Pointer[snapshot]
	publishing sync.Mutex
	reg        registry
	health     *health.Server
	serving    atomic.Bool

	streamsOpen, pushes, nacks atomic.Int64
	// overLimitLogged is when a stream over a limit was last logged (unix ns).
	overLimit, overLimitLogged atomic.Int64
	refusedPeers, overCap      atomic.Int64
	listener                   atomic.Pointer[connlimit.Listener] // set by Serve
}

var _ rotation.Sink = (*Server)(nil)

// lastPrefix keeps version prefixes unique within one clock tick.
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

// versionPrefix is unique per New, so a client reconnecting after a
// restart never holds a version this server could take for its own.
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

// Apply replaces the served set with u's Secrets in one step, waking every
// stream; on error the previous set stays served.
func (s *Server) Apply(ctx context.Context, u *rotation.Update) error {
	if u == nil {
		return errors.New("apply: nil update")
	}
	if err := ctx.Err(); err != nil {
		return fmt.Errorf("apply generation %d: %w", u.Generation, err)
	}
	variants, err := build(u, s.cfg.Names)
	if err != nil {
		return fmt.Errorf("apply generation %d: %w", u.Generation, err)
	}
	snap := s.publish(u.Generation, variants)
	s.markServing()
	v, _ := validationFor(nil, s.cfg.Names.DisableSPIFFECertValidation)
	s.cfg.Logger.Info("Envoy SDS: serving secrets", "generation", u.Generation, "version", snap.version,
		"secrets", len(snap.variants[v].secrets), "streams", s.streamsOpen.Load())
	return nil
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

// endStreams ends every stream, open or opened later, by publishing a copy
// of the current snapshot marked stopped.
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

// Serve listens on the socket until ctx ends, then ends the streams (Envoy
// keeps its secrets and reconnects), gives RPCs stopGrace and removes the
// socket. Serve can run once.
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

// grpcServer is the socket's gRPC server, with its bounds and peer checks.
func (s *Server) grpcServer() *grpc.Server {
	gs := grpc.NewServer(
		// REFUSED_STREAM before any handler runs.
		grpc.MaxConcurrentStreams(s.cfg.limits.streamsPerConn),
		grpc.MaxRecvMsgSize(maxRequestBytes),
		grpc.KeepaliveEnforcementPolicy(keepalive.EnforcementPolicy{
			// Envoy's connection_keepalive may ping every few seconds, idle or
			// not; grpc-go's default (5 min) would answer GOAWAY "too_many_pings".
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

// healthServices are the names grpc.health.v1 answers for: the whole
// server ("") and each discovery service.
var healthServices = []string{
	"",
	secretv3.SecretDiscoveryService_ServiceDesc.ServiceName,
	discoveryv3.AggregatedDiscoveryService_ServiceDesc.ServiceName,
}

// newHealth starts NOT_SERVING: until the first Update a client would only
// wait for secrets.
func newHealth() *health.Server {
	h := health.NewServer()
	for _, svc := range healthServices {
		h.SetServingStatus(svc, healthpb.HealthCheckResponse_NOT_SERVING)
	}
	return h
}

// markServing flips grpc.health.v1 to SERVING for good: the last good
// secrets stay served.
func (s *Server) markServing() {
	for _, svc := range healthServices {
		s.health.SetServingStatus(svc, healthpb.HealthCheckResponse_SERVING)
	}
}
