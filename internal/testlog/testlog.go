// Package testlog holds what tests need to read the logs of code that logs
// from many goroutines.
package testlog

import (
	"bytes"
	"sync"
)

// Buffer collects log output written from many goroutines; slog handlers
// may write from any of them.
type Buffer struct {
	mu  sync.Mutex
	buf bytes.Buffer
}

func (b *Buffer) Write(p []byte) (int, error) {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.buf.Write(p)
}

func (b *Buffer) String() string {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.buf.String()
}
