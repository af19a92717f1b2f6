// Package admin serves the bridge's health, metrics and status over HTTP.
// Each request builds one Status from what the parts report at that
// instant (snapshot), judges readiness on it once, and renders it, reading
// only what it renders:
//
//   - /livez answers 200 while the process serves HTTP.
//   - /readyz answers 200 only when the current generation reached every
//     sink, every folder holds a valid set, no SVID or JWT-SVID is near its
//     expiry and (if asked for) an SDS client acknowledged the current
//     generation; otherwise 503 with the problems, one a line.
//   - /metrics is Prometheus text, read from the components' own counts at
//     scrape time (only the delivery latency histogram is fed), never from
//     the disk: folders count as /readyz or /status last read them.
//   - /status is the Status as JSON; `sds-bridge status` prints it.
package admin

import (
	"cmp"
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"path"
	"slices"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"
	"github.com/prometheus/client_golang/prometheus/promhttp"

	"github.com/sds-bridge/sds-bridge/filesink"
	"github.com/sds-bridge/sds-bridge/internal/connlimit"
	"github.com/sds-bridge/sds-bridge/internal/fielderr"
	"github.com/sds-bridge/sds-bridge/jwtfiles"
	"github.com/sds-bridge/sds-bridge/rotation"
	"github.com/sds-bridge/sds-bridge/sds"
)

// DefaultDeliveryGrace is how long a sink may take to apply a new
// generation before /readyz reports it as not delivered.
const DefaultDeliveryGrace = 10 * time.Second

// shutdownGrace bounds how long Serve waits for requests in flight.
const shutdownGrace = 2 * time.Second

// What an admin client can hold: every local user reaches the port, and
// each connection is a descriptor that folder swaps need too.
const (
	DefaultMaxConnections = 64              // probes and scrapes open a handful
	DefaultHeaderTimeout  = 5 * time.Second // Config.HeaderTimeout when zero
	maxHeaderBytes        = 16 << 10        // no endpoint takes more than a short GET
	overCapLogEvery       = 10 * time.Second
)

// Source is what admin reads from the rotation source (*rotation.Source).
type Source interface {
	Current() *rotation.Update
	SinkStatuses() []rotation.SinkStatus
	Counters() rotation.Counters
}

// SDS is what admin reads from the SDS server (*sds.Server).
type SDS interface {
	Stats() sds.Stats
	Acks(gen uint64) (streams, current int, newest uint64)
	Clients() []sds.Client
}

// Folder is what admin reads from a credential folder (*filesink.Folder).
type Folder interface {
	Name() string
	Dir() string
	// SVIDChoice is files[].svid; "" is the default SVID.
	SVIDChoice() string
	InspectConfig(minValidity time.Duration) filesink.InspectConfig
	Stats() filesink.Stats
}

// JWT is what admin reads from the JWT-SVID writer (*jwtfiles.Writer).
type JWT interface {
	Tokens() []jwtfiles.TokenStatus
}

// Config configures a Server.
type Config struct {
	Source Source `yaml:"-"` // required
	SDS    SDS    `yaml:"-"` // nil without SDS
	// Folders are the credential folders, in config order.
	Folders []Folder `yaml:"-"`
	JWT     JWT      `yaml:"-"` // nil when no folder writes JWT-SVIDs
	// MinValidity: not ready when an SVID, a folder's leaf or a JWT-SVID
	// expires sooner than this.
	MinValidity time.Duration `yaml:"min_validity"`
	// MinValidityPercent: not ready when an SVID or a JWT-SVID has less
	// of its lifetime left; 0 is off. The config's key defaults it to 10.
	MinValidityPercent int `yaml:"-"`
	// RequireSDSAck: not ready until an SDS client acknowledged the
	// current generation.
	RequireSDSAck  bool          `yaml:"require_sds_ack"`
	DeliveryGrace  time.Duration `yaml:"-"`
	MaxConnections int           `yaml:"max_connections"`
	// HeaderTimeout bounds reading a request's headers; an idle
	// keep-alive connection is kept twice as long.
	HeaderTimeout time.Duration `yaml:"-"`
	// LivenessPath and ReadinessPath are where the two probes are served.
	LivenessPath  string `yaml:"liveness_path"`
	ReadinessPath string `yaml:"readiness_path"`
	// Build is shown in metrics (one label per part) and status.
	Build  BuildInfo    `yaml:"-"`
	Logger *slog.Logger `yaml:"-"`
	// Now is the clock; tests move it.
	Now func() time.Time `yaml:"-"`
}

// Server is the admin HTTP handler set.
type Server struct {
	cfg      Config
	log      *slog.Logger
	registry *prometheus.Registry
	latency  *prometheus.HistogramVec
	mux      *http.ServeMux

	// mu guards lastReady (to log readiness changes once) and lastDisk,
	// the folders as /readyz or /status last read them under lastDiskGen,
	// which a scrape takes rather than read the disk.
	mu          sync.Mutex
	lastReady   *bool
	lastDisk    []diskRead
	lastDiskGen uint64
}

// Where the probes are served unless Config moves them.
const (
	DefaultLivenessPath  = "/livez"
	DefaultReadinessPath = "/readyz"
)

// ReservedPaths are the admin paths no probe may take.
var ReservedPaths = []string{"/", "/metrics", "/status"}

// WithDefaults fills every unset field with its default.
func (c Config) WithDefaults() Config {
	c.MaxConnections = cmp.Or(c.MaxConnections, DefaultMaxConnections)
	c.HeaderTimeout = cmp.Or(c.HeaderTimeout, DefaultHeaderTimeout)
	c.DeliveryGrace = cmp.Or(c.DeliveryGrace, DefaultDeliveryGrace)
	c.LivenessPath = cmp.Or(c.LivenessPath, DefaultLivenessPath)
	c.ReadinessPath = cmp.Or(c.ReadinessPath, DefaultReadinessPath)
	c.Logger = cmp.Or(c.Logger, slog.Default())
	if c.Now == nil {
		c.Now = time.Now
	}
	return c
}

// Validate checks a defaulted Config's values (not its parts), one
// *fielderr.Error per refused field, keyed as the admin section's YAML.
func (c Config) Validate() error {
	var errs fielderr.List
	if c.MinValidity < 0 {
		errs.Add("min_validity", "%s must not be negative", c.MinValidity)
	}
	if c.MinValidityPercent < 0 || c.MinValidityPercent > 99 {
		errs.Add("min_validity_percent", "%d must be between 0 (off) and 99", c.MinValidityPercent)
	}
	if c.MaxConnections < 0 {
		errs.Add("max_connections", "%d must not be negative", c.MaxConnections)
	}
	if c.HeaderTimeout < 0 {
		errs.Add("header_timeout", "%s must not be negative", c.HeaderTimeout)
	}
	for _, p := range []struct{ key, path string }{
		{"liveness_path", c.LivenessPath},
		{"readiness_path", c.ReadinessPath},
	} {
		switch {
		// The mux would panic on a pattern, or route a path it cleans elsewhere.
		case !strings.HasPrefix(p.path, "/") || path.Clean(p.path) != p.path || strings.ContainsAny(p.path, "{}?#% \t\n"):
			errs.Add(p.key, "%q must be a plain absolute URL path such as %q", p.path, "/live")
		case slices.Contains(ReservedPaths, p.path):
			errs.Add(p.key, "%q is already served by the admin listener (%s)", p.path, strings.Join(ReservedPaths, " "))
		}
	}
	if c.LivenessPath == c.ReadinessPath {
		errs.Clash("readiness_path", "liveness_path", fmt.Sprintf("%q is also", c.ReadinessPath), ": the two probes need their own paths")
	}
	return errs.Err()
}

// New checks cfg and builds the handlers and the metrics registry.
func New(cfg Config) (*Server, error) {
	if cfg.Source == nil {
		return nil, errors.New("config: Source is nil")
	}
	if cfg.RequireSDSAck && cfg.SDS == nil {
		return nil, errors.New("config: RequireSDSAck without an SDS server")
	}
	cfg = cfg.WithDefaults()
	if err := cfg.Validate(); err != nil {
		return nil, fmt.Errorf("config: %w", err)
	}
	s := &Server{cfg: cfg, log: cfg.Logger, registry: prometheus.NewRegistry(), mux: http.NewServeMux()}
	s.latency = prometheus.NewHistogramVec(prometheus.HistogramOpts{
		Name: "sds_bridge_sink_delivery_seconds",
		Help: "Time from the Workload API delivering an update to a sink having applied it (reload actions included), per sink.",
		// From an in-memory SDS push to a folder whose reload action retries.
		Buckets: []float64{.001, .0025, .005, .01, .025, .05, .1, .25, .5, 1, 2.5, 5, 10, 30, 60},
	}, []string{"sink"})
	for _, c := range []prometheus.Collector{
		s.latency,
		&collector{build: cfg.Build, status: func() Status { return s.snapshot(s.cfg.Now(), metricsView) }},
		collectors.NewGoCollector(),
		collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}),
	} {
		if err := s.registry.Register(c); err != nil {
			return nil, fmt.Errorf("register collector: %w", err)
		}
	}
	s.mux.HandleFunc("GET "+cfg.LivenessPath, s.livez)
	s.mux.HandleFunc("GET "+cfg.ReadinessPath, s.readyz)
	s.mux.Handle("GET /metrics", promhttp.HandlerFor(s.registry, promhttp.HandlerOpts{
		ErrorLog: slog.NewLogLogger(cfg.Logger.Handler(), slog.LevelError),
	}))
	s.mux.HandleFunc("GET /status", s.status)
	s.mux.HandleFunc("GET /{$}", s.index)
	return s, nil
}

// ObserveSink (a rotation.Config.OnSinkDone hook) records the delivery
// latency of every successful Apply, without blocking.
func (s *Server) ObserveSink(st rotation.SinkStatus) {
	if st.Err == nil && st.Generation > 0 {
		s.latency.WithLabelValues(st.Name).Observe(st.Latency.Seconds())
	}
}

// Serve serves on l until ctx ends, then gives requests in flight a short
// grace. Connections are capped (one over the cap is closed at once, not
// queued ahead of the probes) and every timeout set, so a slow or idle
// client cannot hold descriptors.
func (s *Server) Serve(ctx context.Context, l net.Listener) error {
	maxConns := int64(s.cfg.MaxConnections)
	deferAccept(l)
	l = connlimit.New(l, connlimit.Config{Max: maxConns, ReportEvery: overCapLogEvery,
		Reserve: isProbe(s.cfg.LivenessPath, s.cfg.ReadinessPath), MaxReserved: probeReserve,
		Report: func(closed int64, last *connlimit.Conn) {
			s.log.Warn("admin endpoint: connections closed at once: too many open (admin.max_connections; probes have "+
				strconv.Itoa(probeReserve)+" more places)", "closed", closed, "max", maxConns, "last_from", last.RemoteAddr().String())
		}})
	hs := &http.Server{
		Handler:           closeReserved(s.mux),
		ConnContext:       withConn,
		ReadHeaderTimeout: s.cfg.HeaderTimeout,
		ReadTimeout:       2 * s.cfg.HeaderTimeout,
		// A client that does not read /metrics in this time is no scraper.
		WriteTimeout:   30 * time.Second,
		IdleTimeout:    2 * s.cfg.HeaderTimeout,
		MaxHeaderBytes: maxHeaderBytes,
		ErrorLog:       slog.NewLogLogger(s.log.Handler(), slog.LevelWarn),
	}
	served := make(chan error, 1)
	go func() { served <- hs.Serve(l) }()
	select {
	case err := <-served:
		return fmt.Errorf("serve on %s: %w", l.Addr(), err)
	case <-ctx.Done():
	}
	shutdownCtx, cancel := context.WithTimeout(context.Background(), shutdownGrace)
	defer cancel()
	if err := hs.Shutdown(shutdownCtx); err != nil {
		hs.Close()
	}
	if err := <-served; err != nil && !errors.Is(err, http.ErrServerClosed) {
		return fmt.Errorf("serve on %s: %w", l.Addr(), err)
	}
	return nil
}

// Paths are the endpoints served, as the index and the logs list them.
func (s *Server) Paths() string {
	return s.cfg.LivenessPath + " " + s.cfg.ReadinessPath + " /metrics /status"
}

func (s *Server) index(w http.ResponseWriter, _ *http.Request) {
	w.Header().Set("Content-Type", "text/plain; charset=utf-8")
	fmt.Fprintln(w, "sds-bridge admin:", s.Paths())
}

func (s *Server) livez(w http.ResponseWriter, _ *http.Request) {
	w.Header().Set("Content-Type", "text/plain; charset=utf-8")
	fmt.Fprintln(w, "ok")
}

func (s *Server) readyz(w http.ResponseWriter, _ *http.Request) {
	writeReadyz(w, s.snapshot(s.cfg.Now(), probeView))
}

func writeReadyz(w http.ResponseWriter, st Status) {
	w.Header().Set("Content-Type", "text/plain; charset=utf-8")
	w.Header().Set("Cache-Control", "no-store")
	if !st.Ready {
		w.WriteHeader(http.StatusServiceUnavailable)
		for _, p := range st.Problems {
			fmt.Fprintln(w, p)
		}
		return
	}
	fmt.Fprintf(w, "ready: generation %d delivered to %d sinks\n", st.Generation, len(st.Sinks))
}
