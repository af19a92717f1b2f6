// Package loglimit bounds how fast one kind of log line can be repeated,
// so that a misbehaving peer cannot flood the log (seen: 166,339 identical
// ERROR lines, 39 MB, in 11 s). Lines past the rate are counted, and the
// count is logged later, so nothing disappears without a trace.
package loglimit

import (
	"context"
	"fmt"
	"log/slog"
	"strings"
	"time"
)

const (
	defaultBurst        = 10
	defaultRate         = 1.0
	defaultSummaryEvery = 10 * time.Second
	defaultMaxKinds     = 256
)

// Config says how much repetition passes. Zero values take the defaults.
type Config struct {
	// Burst lines of one kind pass at once; then Rate per second.
	Burst int
	Rate  float64
	// SummaryEvery is how long after a kind's first suppressed line the
	// count is logged, and then again while it goes on.
	SummaryEvery time.Duration
	// MaxKinds bounds the kinds tracked: then an idle kind is forgotten,
	// or else new kinds share one budget.
	MaxKinds int
	// Now defaults to time.Now; tests move the clock.
	Now func() time.Time
}

func (c Config) withDefaults() Config {
	if c.Burst <= 0 {
		c.Burst = defaultBurst
	}
	if c.Rate <= 0 {
		c.Rate = defaultRate
	}
	if c.SummaryEvery <= 0 {
		c.SummaryEvery = defaultSummaryEvery
	}
	if c.MaxKinds <= 0 {
		c.MaxKinds = defaultMaxKinds
	}
	if c.Now == nil {
		c.Now = time.Now
	}
	return c
}

// Handler passes records on until a kind of line repeats faster than the
// rate, then counts instead. A kind is the level, the message and the
// logger's With attributes, not the record's: those (an error, a pid)
// would make a flood look like many kinds. Debug records always pass.
type Handler struct {
	inner slog.Handler
	// kindPrefix renders the handler's With attributes and groups.
	kindPrefix string
	state      *state
}

// New wraps inner; call Close when the program stops logging.
func New(inner slog.Handler, cfg Config) *Handler {
	cfg = cfg.withDefaults()
	return &Handler{inner: inner, state: &state{cfg: cfg, kinds: map[string]*kind{}}}
}

// Enabled reports the wrapped handler's answer.
func (h *Handler) Enabled(ctx context.Context, level slog.Level) bool {
	return h.inner.Enabled(ctx, level)
}

// WithAttrs implements slog.Handler; it shares the limits with h.
func (h *Handler) WithAttrs(attrs []slog.Attr) slog.Handler {
	var b strings.Builder
	b.WriteString(h.kindPrefix)
	for _, a := range attrs {
		fmt.Fprintf(&b, "%s=%s\x00", a.Key, a.Value.Resolve())
	}
	return &Handler{inner: h.inner.WithAttrs(attrs), kindPrefix: b.String(), state: h.state}
}

// WithGroup implements slog.Handler; it shares the limits with h.
func (h *Handler) WithGroup(name string) slog.Handler {
	return &Handler{inner: h.inner.WithGroup(name), kindPrefix: h.kindPrefix + "group " + name + "\x00", state: h.state}
}

// Handle writes r unless its kind is over the rate.
func (h *Handler) Handle(ctx context.Context, r slog.Record) error {
	if r.Level < slog.LevelInfo {
		return h.inner.Handle(ctx, r)
	}
	key := r.Level.String() + "\x00" + h.kindPrefix + r.Message
	if !h.state.allow(key, h.inner, r) {
		return nil
	}
	return h.inner.Handle(ctx, r)
}

// Close logs every pending count and stops the summary timers.
func (h *Handler) Close() {
	h.state.mu.Lock()
	h.state.closed = true
	h.state.mu.Unlock()
	h.state.flush()
}
