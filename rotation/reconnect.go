package rotation

import (
	"fmt"
	"time"

	"github.com/spiffe/go-spiffe/v2/workloadapi"
	"google.golang.org/grpc"
	"google.golang.org/grpc/backoff"
	"google.golang.org/grpc/status"
)

// How soon the watch is back after the agent returns (a restart for an
// upgrade, a crash). Two timers stand between an agent that serves again
// and the next update, and both must be short: go-spiffe's retry of the
// watch, and gRPC's reconnection of the channel under it (a retry that
// finds the channel still waiting out its own backoff fails at once and
// waits for the next one). With go-spiffe's defaults (1 s more per failed
// retry, up to 30 s) and gRPC's (×1.6 per failed connect, up to 120 s), a
// 30 s outage took 15 to 27 s to notice the agent was back.
//
// The watch retries after 1 s, 2 s, 4 s, then every MaxWatchBackoff; the
// channel reconnects at most about every second (with gRPC's ±20 %
// jitter). So the watch is back at most MaxWatchBackoff + 1.2 s after the
// agent answers. A retry costs a connect on a local socket, and the cap is
// above the sinks' own retry cap (DefaultMaxRetryBackoff): an agent that
// is down is not hammered, and a folder that failed does not wait for it.
const (
	MaxWatchBackoff      = 5 * time.Second
	firstWatchBackoff    = time.Second
	firstConnectBackoff  = 100 * time.Millisecond
	maxConnectBackoff    = time.Second
	connectBackoffFactor = 1.6 // gRPC's default
	connectBackoffJitter = 0.2 // gRPC's default
)

// workloadAPIOptions are the go-spiffe client's options for addr: its
// logs, and the two backoffs above.
func (s *Source) workloadAPIOptions() []workloadapi.ClientOption {
	return []workloadapi.ClientOption{
		workloadapi.WithAddr(s.cfg.Address),
		workloadapi.WithLogger(spiffeLogger{s.log}),
		workloadapi.WithBackoffStrategy(watchBackoffStrategy{}),
		workloadapi.WithDialOptions(grpc.WithConnectParams(grpc.ConnectParams{Backoff: backoff.Config{
			BaseDelay:  firstConnectBackoff,
			Multiplier: connectBackoffFactor,
			Jitter:     connectBackoffJitter,
			MaxDelay:   maxConnectBackoff,
		}})),
	}
}

// watchBackoffStrategy doubles the wait between failed watches from
// firstWatchBackoff up to MaxWatchBackoff. go-spiffe resets it whenever
// the watch delivers a response.
type watchBackoffStrategy struct{}

func (watchBackoffStrategy) NewBackoff() workloadapi.Backoff { return &watchBackoff{} }

type watchBackoff struct{ last time.Duration }

func (b *watchBackoff) Next() time.Duration {
	b.last = min(max(2*b.last, firstWatchBackoff), MaxWatchBackoff)
	return b.last
}

func (b *watchBackoff) Reset() { b.last = 0 }

// outage is the Workload API's absence as the watch sees it: from the
// first failed call after it had delivered an X.509 context to the next
// context. Waits at start-up are not outages; FirstUpdateTimeout bounds
// those.
type outage struct {
	delivered bool      // an X.509 context arrived at least once
	since     time.Time // first failure of the current outage; zero when none
	failures  uint64    // failed calls since then
	count     uint64    // outages ended by a new context: reconnects
}

// lostLocked records a failed watch call. Only gRPC errors mean the
// Workload API is away; go-spiffe also reports a response it cannot parse
// here, on a stream that stays up.
func (s *Source) lostLocked(err error) {
	if _, rpc := status.FromError(err); !rpc || !s.outage.delivered {
		return
	}
	if s.outage.since.IsZero() {
		s.outage.since = time.Now()
	}
	s.outage.failures++
}

// connected records an X.509 context from the Workload API and, when it
// ends an outage, returns the log line that says so; OnX509ContextUpdate
// defers that until the sinks have the update, as it does its own lines.
func (s *Source) connected() (logLine func()) {
	now := time.Now()
	s.mu.Lock()
	defer s.mu.Unlock()
	o := &s.outage
	o.delivered = true
	if o.since.IsZero() {
		return func() {}
	}
	away, failures := now.Sub(o.since), o.failures
	o.since, o.failures = time.Time{}, 0
	o.count++
	return func() {
		s.log.Info(fmt.Sprintf("Workload API reconnected after %s", away.Round(time.Millisecond)),
			"away", away, "failed_attempts", failures)
	}
}
