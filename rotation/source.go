package rotation

import (
	"cmp"
	"context"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"slices"
	"strings"
	"sync"
	"time"

	"github.com/spiffe/go-spiffe/v2/bundle/x509bundle"
	"github.com/spiffe/go-spiffe/v2/spiffeid"
	"github.com/spiffe/go-spiffe/v2/svid/x509svid"
	"github.com/spiffe/go-spiffe/v2/workloadapi"
	"golang.org/x/sync/errgroup"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	"github.com/sds-bridge/sds-bridge/internal/fielderr"
)

// DefaultFirstUpdateTimeout bounds the wait for the first valid X.509 context.
const DefaultFirstUpdateTimeout = 60 * time.Second

// Config configures a Source.
type Config struct {
	// Address of the Workload API; empty means $SPIFFE_ENDPOINT_SOCKET.
	Address string `yaml:"address"`
	// FirstUpdateTimeout bounds the wait for the first valid update;
	// negative waits forever.
	FirstUpdateTimeout time.Duration `yaml:"first_update_timeout"`
	// DefaultSVIDHint picks Update.SVIDs[0] among several: the first SVID
	// whose hint, else whose SPIFFE ID, equals it. No match keeps the
	// Workload API's first, logged once per change of the SVID set.
	DefaultSVIDHint string `yaml:"default_svid_hint"`
	// Sinks receive every Update; the first runs first (OnX509ContextUpdate):
	// put Envoy's SDS there.
	Sinks []Sink `yaml:"-"`
	// RetryBackoff is the delay before a failed Apply is retried, doubled
	// per failure of the same Update up to MaxRetryBackoff.
	RetryBackoff    time.Duration `yaml:"-"`
	MaxRetryBackoff time.Duration `yaml:"-"`
	// OnSinkDone is called after each Apply (metrics, readiness); it must
	// not block.
	OnSinkDone func(SinkStatus) `yaml:"-"`
	Logger     *slog.Logger     `yaml:"-"`
	Now        func() time.Time `yaml:"-"` // the validation clock
}

// Validate checks what a user configures: one *fielderr.Error per refused
// field, keyed as the YAML workload_api section spells it.
func (c Config) Validate() error {
	var errs fielderr.List
	if a := c.Address; a != "" && !strings.HasPrefix(a, "unix://") && !strings.HasPrefix(a, "tcp://") {
		errs.Add("address", "%q must start with unix:// or tcp://", a)
	}
	if err := CheckSVIDChoice(c.DefaultSVIDHint); err != nil {
		errs.Add("default_svid_hint", "%q: %v", c.DefaultSVIDHint, err)
	}
	return errs.Err()
}

// CheckSVIDChoice checks a hint-or-SPIFFE-ID value for FindSVID: what
// looks like a SPIFFE ID must be one, or it could never match.
func CheckSVIDChoice(v string) error {
	switch {
	case v == "":
		return nil
	case strings.TrimSpace(v) != v:
		return errors.New("has leading or trailing spaces; it would never match a hint or SPIFFE ID")
	case strings.HasPrefix(strings.ToLower(v), "spiffe://"):
		if _, err := spiffeid.FromString(v); err != nil {
			return fmt.Errorf("not a valid SPIFFE ID: %v", err)
		}
	}
	return nil
}

// Source is the one Workload API watch, fanned out to every sink.
type Source struct {
	cfg        Config
	log        *slog.Logger
	deliverers []*deliverer
	firstReady chan struct{}

	mu         sync.Mutex
	current    *Update
	generation uint64
	refused    uint64
	watchErrs  uint64
	lastErr    error
	outage     outage
	hintMiss   string // the SVID set last logged as missing DefaultSVIDHint
}

// WithDefaults fills every unset field but Address, which New reads from
// the environment.
func (c Config) WithDefaults() Config {
	c.FirstUpdateTimeout = cmp.Or(c.FirstUpdateTimeout, DefaultFirstUpdateTimeout)
	c.RetryBackoff = cmp.Or(c.RetryBackoff, DefaultRetryBackoff)
	c.MaxRetryBackoff = cmp.Or(c.MaxRetryBackoff, max(DefaultMaxRetryBackoff, c.RetryBackoff))
	c.Logger = cmp.Or(c.Logger, slog.Default())
	if c.Now == nil {
		c.Now = time.Now
	}
	return c
}

// New checks cfg and applies defaults.
func New(cfg Config) (*Source, error) {
	if err := cfg.Validate(); err != nil {
		return nil, fmt.Errorf("%w", err)
	}
	cfg = cfg.WithDefaults()
	cfg.Address = cmp.Or(cfg.Address, os.Getenv("SPIFFE_ENDPOINT_SOCKET"))
	if cfg.Address == "" {
		return nil, errors.New("no Workload API address: set workload_api.address (--workload-api) or SPIFFE_ENDPOINT_SOCKET")
	}
	if cfg.RetryBackoff < 0 || cfg.MaxRetryBackoff < cfg.RetryBackoff {
		return nil, fmt.Errorf("retry backoff %s up to %s: want 0 < backoff <= maximum", cfg.RetryBackoff, cfg.MaxRetryBackoff)
	}
	s := &Source{cfg: cfg, log: cfg.Logger, firstReady: make(chan struct{})}
	for _, sink := range cfg.Sinks {
		s.deliverers = append(s.deliverers, newDeliverer(sink, &s.cfg))
	}
	return s, nil
}

// Run watches the Workload API until ctx ends; it fails if no valid
// update arrives within FirstUpdateTimeout.
func (s *Source) Run(ctx context.Context) error {
	client, err := workloadapi.New(ctx, s.workloadAPIOptions()...)
	if err != nil {
		return fmt.Errorf("Workload API client for %q: %w", s.cfg.Address, err)
	}
	defer client.Close()

	g, ctx := errgroup.WithContext(ctx)
	for _, d := range s.deliverers {
		g.Go(func() error { d.run(ctx); return nil })
	}
	g.Go(func() error {
		err := client.WatchX509Context(ctx, s)
		if ctx.Err() != nil || status.Code(err) == codes.Canceled {
			return nil
		}
		return fmt.Errorf("watch Workload API at %q: %w", s.cfg.Address, err)
	})
	if s.cfg.FirstUpdateTimeout > 0 {
		g.Go(func() error { return s.awaitFirst(ctx) })
	}
	return g.Wait()
}

func (s *Source) awaitFirst(ctx context.Context) error {
	t := time.NewTimer(s.cfg.FirstUpdateTimeout)
	defer t.Stop()
	select {
	case <-ctx.Done():
		return nil
	case <-s.firstReady:
		return nil
	case <-t.C:
	}
	s.mu.Lock()
	last := s.lastErr
	s.mu.Unlock()
	msg := fmt.Sprintf("no valid X.509 SVID from the Workload API at %q within %s; "+
		"check that the SPIRE agent is running and its socket is reachable from here, "+
		"and that a registration entry matches this workload (its uid, pod or path)",
		s.cfg.Address, s.cfg.FirstUpdateTimeout)
	if last != nil {
		return fmt.Errorf("%s; last error: %w", msg, last)
	}
	return errors.New(msg)
}

// Ready is closed once the first valid Update has been published.
func (s *Source) Ready() <-chan struct{} { return s.firstReady }

// Current returns the last good Update, or nil before the first one.
func (s *Source) Current() *Update {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.current
}

// SinkStatuses reports what every sink did with its newest Update.
func (s *Source) SinkStatuses() []SinkStatus {
	out := make([]SinkStatus, len(s.deliverers))
	for i, d := range s.deliverers {
		out[i] = d.snapshot()
	}
	return out
}

// RetryNow wakes every sink whose failed Update waits for its retry
// timer, and returns their names without waiting (SIGHUP: an operator who
// freed the disk need not wait). A sink holding the current Update, even
// after ErrUpdateInPlace, is left alone.
func (s *Source) RetryNow() []string {
	var woken []string
	for _, d := range s.deliverers {
		if d.retryNow() {
			woken = append(woken, d.sink.Name())
		}
	}
	return woken
}

// Counters are totals since start.
type Counters struct {
	Refused     uint64 // X.509 contexts refused by validation
	WatchErrors uint64 // Workload API errors (connection lost, parse failures)
	Reconnects  uint64 // X.509 contexts that ended a lost connection
}

// Counters returns totals since start.
func (s *Source) Counters() Counters {
	s.mu.Lock()
	defer s.mu.Unlock()
	return Counters{Refused: s.refused, WatchErrors: s.watchErrs, Reconnects: s.outage.count}
}

// OnX509ContextUpdate implements workloadapi.X509ContextWatcher: validate,
// publish, hand the Update to every sink's slot, wait for none.
func (s *Source) OnX509ContextUpdate(xc *workloadapi.X509Context) {
	defer s.connected()()
	received := s.cfg.Now()
	bundles, err := Validate(xc, received)
	if err != nil {
		s.refuse(err)
		return
	}
	svids, matched := orderSVIDs(xc.SVIDs, s.cfg.DefaultSVIDHint)
	u, first, warnMiss := s.publish(svids, bundles, received, matched, xc.SVIDs)
	if u == nil {
		s.log.Debug("Workload API resent the current material; nothing to rotate")
		return
	}
	// Sinks before logs, which a full stderr pipe can hold up. Last to
	// first: Go runs the goroutine woken last next (runnext); an SDS sink
	// woken before a folder waited ~1 ms for a thread (docs/benchmarks.md).
	for _, d := range slices.Backward(s.deliverers) {
		d.offer(u)
	}
	if first {
		close(s.firstReady)
	}
	if warnMiss != "" {
		s.log.Warn("workload_api.default_svid_hint matches no SVID; the Workload API's first SVID stays the default",
			"default_svid_hint", s.cfg.DefaultSVIDHint, "available", warnMiss, "default_spiffe_id", u.SVIDs[0].ID.String())
	}
	leaf := u.Leaf()
	s.log.Info("rotation", "generation", u.Generation, "spiffe_id", u.DefaultSVID().ID.String(),
		"serial", fmt.Sprintf("%x", leaf.SerialNumber), "not_after", leaf.NotAfter.UTC().Format(time.RFC3339),
		"svids", len(u.SVIDs), "bundles", len(u.Bundles))
}

// refuse counts and logs a refused context; the last good Update stays.
func (s *Source) refuse(err error) {
	s.mu.Lock()
	s.refused++
	s.lastErr = err
	keeping := uint64(0)
	if s.current != nil {
		keeping = s.current.Generation
	}
	s.mu.Unlock()
	s.log.Error("refused Workload API update; keeping the last good one", "error", err, "kept_generation", keeping)
}

// publish makes validated material the next Update, unless it repeats the
// current one (nil); Validate made NewUpdate's checks. warnMiss is the SVID
// list to log when the hint matched none, once per list.
func (s *Source) publish(svids []*x509svid.SVID, bundles []*x509bundle.Bundle, received time.Time, matched bool, sent []*x509svid.SVID) (u *Update, first bool, warnMiss string) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if matched {
		s.hintMiss = ""
	} else if avail := DescribeSVIDs(sent); avail != s.hintMiss {
		s.hintMiss, warnMiss = avail, avail
	}
	if sameMaterial(s.current, svids, bundles) {
		return nil, false, warnMiss
	}
	s.generation++
	u = &Update{Generation: s.generation, SVIDs: svids, Bundles: bundles, ReceivedAt: received}
	first = s.current == nil
	s.current, s.lastErr = u, nil
	return u, first, warnMiss
}

// OnX509ContextWatchError implements workloadapi.X509ContextWatcher.
func (s *Source) OnX509ContextWatchError(err error) {
	if status.Code(err) == codes.Canceled || errors.Is(err, context.Canceled) {
		return
	}
	s.mu.Lock()
	s.watchErrs++
	s.lastErr = err
	s.lostLocked(err)
	s.mu.Unlock()
	s.log.Warn("Workload API watch error; go-spiffe retries with backoff, sinks keep the last good update", "error", err)
}

// spiffeLogger logs go-spiffe at debug level: OnX509ContextWatchError
// reports its errors.
type spiffeLogger struct{ l *slog.Logger }

func (l spiffeLogger) Debugf(f string, a ...any) {
	l.l.Debug(fmt.Sprintf(f, a...), "from", "go-spiffe")
}
func (l spiffeLogger) Infof(f string, a ...any) { l.l.Debug(fmt.Sprintf(f, a...), "from", "go-spiffe") }
func (l spiffeLogger) Warnf(f string, a ...any) { l.l.Debug(fmt.Sprintf(f, a...), "from", "go-spiffe") }
func (l spiffeLogger) Errorf(f string, a ...any) {
	l.l.Debug(fmt.Sprintf(f, a...), "from", "go-spiffe")
}
