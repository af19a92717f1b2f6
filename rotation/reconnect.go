package rotation

import (
	"fmt"
	"time"

	"github.com/spiffe/go-spiffe/v2/workloadapi"
	"google.golang.org/grpc"
	"google.golang.org/grpc/backoff"
	"google.golang.org/grpc/status"
)

// How soon the watch is back after the agent returns. Two backoffs stand
// in between, go-spiffe's watch retry and gRPC's reconnect under it; with
// their defaults a 30 s outage took 15 to 27 s to notice. Here the watch
// is back at most MaxWatchBackoff + 1.2 s after the agent answers, and the
// cap stays above DefaultMaxRetryBackoff so a down agent is not hammered.
const (
	MaxWatchBackoff     = 5 * time.Second
	firstWatchBackoff   = time.Second
	firstConnectBackoff = 100 * time.Millisecond
	maxConnectBackoff   = time.Second
)

// workloadAPIOptions are the go-spiffe client's options: logs, backoffs.
func (s *Source) workloadAPIOptions() []workloadapi.ClientOption {
	connect := backoff.DefaultConfig // its factor and jitter
	connect.BaseDelay, connect.MaxDelay = firstConnectBackoff, maxConnectBackoff
	return []workloadapi.ClientOption{
		workloadapi.WithAddr(s.cfg.Address),
		workloadapi.WithLogger(spiffeLogger{s.log}),
		workloadapi.WithBackoffStrategy(watchBackoffStrategy{}),
		workloadapi.WithDialOptions(grpc.WithConnectParams(grpc.ConnectParams{Backoff: connect})),
	}
}

// watchBackoffStrategy doubles the wait between failed watches up to
// MaxWatchBackoff; go-spiffe resets it on every response.
type watchBackoffStrategy struct{}

func (watchBackoffStrategy) NewBackoff() workloadapi.Backoff { return &watchBackoff{} }

type watchBackoff struct{ last time.Duration }

func (b *watchBackoff) Next() time.Duration {
	b.last = min(max(2*b.last, firstWatchBackoff), MaxWatchBackoff)
	return b.last
}

func (b *watchBackoff) Reset() { b.last = 0 }

// outage is the Workload API's absence after it had delivered a context,
// until the next one (start-up waits are FirstUpdateTimeout's).
type outage struct {
	delivered bool
	since     time.Time // zero when not away
	failures  uint64
	count     uint64 // reconnects
}

// lostLocked records a failed watch call; only a gRPC error means the
// agent is away (go-spiffe reports unparsable responses here too).
func (s *Source) lostLocked(err error) {
	if _, rpc := status.FromError(err); !rpc || !s.outage.delivered {
		return
	}
	if s.outage.since.IsZero() {
		s.outage.since = time.Now()
	}
	s.outage.failures++
}

// connected records a context and returns the log line of the outage it
// ends, which OnX509ContextUpdate defers until the sinks have the update.
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
