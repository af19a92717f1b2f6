package rotation

import (
	"bytes"
	"log/slog"
	"sync"
	"testing"
	"time"

	"github.com/sds-bridge/sds-bridge/internal/devapi"
)

// gatedWriter blocks writes of the rotation log line until released, as
// stderr does when the log reader falls behind and the pipe is full.
type gatedWriter struct {
	gate    chan struct{}
	release func()
}

func newGatedWriter() *gatedWriter {
	g := make(chan struct{})
	var once sync.Once
	return &gatedWriter{gate: g, release: func() { once.Do(func() { close(g) }) }}
}

func (w *gatedWriter) Write(p []byte) (int, error) {
	if bytes.Contains(p, []byte("msg=rotation ")) {
		<-w.gate
	}
	return len(p), nil
}

func TestBlockedLogDoesNotHoldSinks(t *testing.T) {
	w := newGatedWriter()
	sink := newRecordingSink("sink")
	h := start(t, Config{Logger: slog.New(slog.NewTextHandler(w, nil))}, sink)
	t.Cleanup(w.release) // runs before the source is stopped
	h.push(h.issue(devapi.SVIDOptions{}))
	sink.waitGen(t, 1)
	select {
	case <-h.src.Ready():
	case <-time.After(10 * time.Second):
		t.Error("Ready waits for the log line")
	}
}
