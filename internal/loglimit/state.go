package loglimit

import (
	"context"
	"fmt"
	"log/slog"
	"sync"
	"time"
)

// state is shared by a Handler and every handler made from it.
type state struct {
	cfg Config

	mu    sync.Mutex
	kinds map[string]*kind
	// overflow is the budget new kinds share once MaxKinds are tracked.
	overflow *kind
	closed   bool
}

// kind is one token bucket and what it suppressed since its last summary.
type kind struct {
	tokens float64
	filled time.Time // when tokens was last brought up to date

	suppressed int
	since      time.Time    // the first suppressed line since the last summary
	level      slog.Level   // of the suppressed lines
	msg        string       // of the first suppressed line
	inner      slog.Handler // writes the summary with the kind's With attributes
	timer      *time.Timer  // the pending summary
	// shared marks the overflow bucket: its lines are of many kinds.
	shared bool
}

// allow takes a token of r's kind, or counts r and arms a summary.
func (s *state) allow(key string, inner slog.Handler, r slog.Record) bool {
	s.mu.Lock()
	defer s.mu.Unlock()
	now := s.cfg.Now()
	k := s.kind(key, now)
	k.refill(now, s.cfg)
	if k.tokens >= 1 {
		k.tokens--
		return true
	}
	if k.suppressed == 0 {
		k.since, k.level, k.msg, k.inner = now, r.Level, r.Message, inner
		if !s.closed {
			k.timer = time.AfterFunc(s.cfg.SummaryEvery, func() { s.summarise(k) })
		}
	}
	k.suppressed++
	return false
}

// kind finds or adds key's bucket (see Config.MaxKinds).
func (s *state) kind(key string, now time.Time) *kind {
	if k := s.kinds[key]; k != nil {
		return k
	}
	if len(s.kinds) >= s.cfg.MaxKinds {
		for kk, k := range s.kinds {
			if k.suppressed == 0 && k.refill(now, s.cfg) >= float64(s.cfg.Burst) {
				delete(s.kinds, kk)
			}
		}
	}
	if len(s.kinds) >= s.cfg.MaxKinds {
		if s.overflow == nil {
			s.overflow = &kind{tokens: float64(s.cfg.Burst), filled: now, shared: true}
		}
		return s.overflow
	}
	k := &kind{tokens: float64(s.cfg.Burst), filled: now}
	s.kinds[key] = k
	return k
}

// refill adds the tokens earned since, up to Burst, and returns them.
func (k *kind) refill(now time.Time, cfg Config) float64 {
	if elapsed := now.Sub(k.filled); elapsed > 0 {
		k.tokens = min(float64(cfg.Burst), k.tokens+elapsed.Seconds()*cfg.Rate)
		k.filled = now
	}
	return k.tokens
}

type summary struct {
	inner slog.Handler
	rec   slog.Record
}

func (sm summary) write() { _ = sm.inner.Handle(context.Background(), sm.rec) }

// take returns k's summary, if any, and starts afresh; s.mu is held.
func (s *state) take(k *kind) (sm summary, ok bool) {
	if k.timer != nil {
		k.timer.Stop()
		k.timer = nil
	}
	if k.suppressed == 0 {
		return summary{}, false
	}
	now := s.cfg.Now()
	rec := slog.NewRecord(now, k.level, fmt.Sprintf("suppressed %d similar lines", k.suppressed), 0)
	like := k.msg
	if k.shared {
		like = fmt.Sprintf("lines of more kinds than the %d tracked, such as %q", s.cfg.MaxKinds, k.msg)
	}
	rec.AddAttrs(slog.String("like", like), slog.Int("suppressed", k.suppressed), slog.Duration("over", now.Sub(k.since).Round(time.Millisecond)))
	k.suppressed = 0
	return summary{inner: k.inner, rec: rec}, true
}

func (s *state) summarise(k *kind) {
	s.mu.Lock()
	sm, ok := s.take(k)
	s.mu.Unlock()
	if ok {
		sm.write()
	}
}

func (s *state) flush() {
	s.mu.Lock()
	var pending []summary
	for _, k := range s.kinds {
		if sm, ok := s.take(k); ok {
			pending = append(pending, sm)
		}
	}
	if s.overflow != nil {
		if sm, ok := s.take(s.overflow); ok {
			pending = append(pending, sm)
		}
	}
	s.mu.Unlock()
	for _, sm := range pending {
		sm.write()
	}
}
