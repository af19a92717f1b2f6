// Package loglimit bounds how fast one kind of log line can be repeated.
// A misbehaving peer (an agent resending expired material in a loop, a
// client reconnecting as fast as it is refused) must not turn the
// bridge's log into a flood: seen here, 166,339 identical ERROR lines,
// 39 MB, in 11 s, which fills a node's disk or a log pipeline's quota and
// buries every other line. Lines past the rate are counted, and the count
// is logged once the kind has been quiet for a moment or a summary period
// has passed, so nothing disappears without a trace.
package loglimit

import (
	"context"
	"fmt"
	"log/slog"
	"strings"
	"time"
)

// Defaults: a kind of line may burst defaultBurst lines, then repeats at
// most defaultRate per second; suppressed lines are summarised at most
// every defaultSummaryEvery; at most defaultMaxKinds kinds are tracked.
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
	// SummaryEvery is how long after the first suppressed line of a kind
	// the count of suppressed lines is logged ("suppressed N similar
	// lines"), and then again every SummaryEvery while it goes on.
	SummaryEvery time.Duration
	// MaxKinds bounds the kinds tracked. When it is reached, a kind that
	// has nothing pending is forgotten; if none can be, new kinds share
	// one budget, so memory stays bounded whatever the messages are.
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

// Handler passes records to the handler it wraps until a kind of line
// repeats faster than the rate, then counts instead. A kind is the
// level, the message and the attributes the logger was made With (the
// component, the folder): the same failure of two folders is two kinds,
// and the attributes of each record (an error text, a generation, a peer's
// pid) do not make a flood look like many kinds. Debug records always
// pass: whoever turns debug on asked for volume.
type Handler struct {
	inner slog.Handler
	// kindPrefix renders the With attributes and groups of this handler.
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

// WithAttrs is a handler for a logger made With attrs; it shares the
// limits with h.
func (h *Handler) WithAttrs(attrs []slog.Attr) slog.Handler {
	var b strings.Builder
	b.WriteString(h.kindPrefix)
	for _, a := range attrs {
		fmt.Fprintf(&b, "%s=%s\x00", a.Key, a.Value.Resolve())
	}
	return &Handler{inner: h.inner.WithAttrs(attrs), kindPrefix: b.String(), state: h.state}
}

// WithGroup is a handler for a logger with a group; it shares the limits
// with h.
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
