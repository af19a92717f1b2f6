//go:build benchfanout

package main

import (
	"crypto/x509"
	"encoding/pem"
	"errors"
	"fmt"
	"slices"
	"sync"
	"sync/atomic"
	"syscall"
	"time"
)

// leafBook knows every leaf the streams have received, one rotation per
// leaf serial. SPIRE's and the bridge's versions differ and are per stream
// on SPIRE's side, so the serial is the rotation's key.
type leafBook struct {
	streams int

	// ready is closed once every stream holds a leaf; holding counts them.
	ready   chan struct{}
	holding atomic.Int64
	// rotations gets each rotation that began after ready, in order.
	rotations chan *rotation

	mu       sync.Mutex
	byChain  map[string]*rotation // every response of one rotation carries the same chain bytes
	bySerial map[string]*rotation
	isReady  bool
}

func newLeafBook(streams int) *leafBook {
	return &leafBook{
		streams:   streams,
		ready:     make(chan struct{}),
		rotations: make(chan *rotation, 64),
		byChain:   map[string]*rotation{},
		bySerial:  map[string]*rotation{},
	}
}

// rotation is one leaf as the streams received it.
type rotation struct {
	serial   string
	created  time.Time
	cpuAt    time.Duration  // this process's CPU time when it was created
	counted  bool           // began after ready: reported
	arrivals []atomic.Int64 // per stream, Unix ns; 0 until it arrives
	got      atomic.Int64
	all      chan struct{} // closed when every stream has it
}

// rotationOf is the rotation whose leaf heads chain. The leaf is parsed
// only the first time a chain is seen.
func (lb *leafBook) rotationOf(chain []byte, at time.Time) (*rotation, error) {
	lb.mu.Lock()
	defer lb.mu.Unlock()
	if r, ok := lb.byChain[string(chain)]; ok {
		return r, nil
	}
	block, _ := pem.Decode(chain)
	if block == nil {
		return nil, errors.New("certificate chain: no PEM block")
	}
	leaf, err := x509.ParseCertificate(block.Bytes)
	if err != nil {
		return nil, fmt.Errorf("certificate chain: %w", err)
	}
	serial := leaf.SerialNumber.String()
	r, ok := lb.bySerial[serial]
	if !ok {
		r = &rotation{serial: serial, created: at, cpuAt: cpuTime(), counted: lb.isReady,
			arrivals: make([]atomic.Int64, lb.streams), all: make(chan struct{})}
		lb.bySerial[serial] = r
		if r.counted {
			lb.rotations <- r
		}
	}
	lb.byChain[string(chain)] = r
	return r, nil
}

// arrived records that stream i received r at at; each stream calls it
// once per rotation, with first set on its first leaf.
func (lb *leafBook) arrived(r *rotation, i int, at time.Time, first bool) {
	r.arrivals[i].Store(at.UnixNano())
	if r.got.Add(1) == int64(lb.streams) {
		close(r.all)
	}
	if first {
		lb.firstLeaf()
	}
}

// firstLeaf counts a stream's first leaf; the last one makes the book
// ready.
func (lb *leafBook) firstLeaf() {
	if lb.holding.Add(1) != int64(lb.streams) {
		return
	}
	lb.mu.Lock()
	lb.isReady = true
	lb.mu.Unlock()
	close(lb.ready)
}

// rotationLine is written for every counted rotation.
type rotationLine struct {
	Event     string `json:"event"` // "rotation"
	Serial    string `json:"serial"`
	FirstUnix int64  `json:"first_unix_ns"` // the earliest arrival on any stream
	Streams   int    `json:"streams"`
	Got       int    `json:"got"` // streams that had it within -settle
	P50US     int64  `json:"p50_us"`
	P90US     int64  `json:"p90_us"`
	MaxUS     int64  `json:"max_us"`
	// ClientCPUMS is the CPU time this process spent from the rotation's
	// first leaf until the line: what the client took from the cores the
	// server needed.
	ClientCPUMS float64 `json:"client_cpu_ms"`
	// DelaysUS is every stream's arrival after the first, in stream order;
	// -1 for a stream that did not get it within -settle.
	DelaysUS []int64 `json:"delays_us"`
}

func (r *rotation) summary() rotationLine {
	at := make([]int64, len(r.arrivals))
	first := int64(0)
	for i := range r.arrivals {
		at[i] = r.arrivals[i].Load()
		if at[i] != 0 && (first == 0 || at[i] < first) {
			first = at[i]
		}
	}
	line := rotationLine{Event: "rotation", Serial: r.serial, FirstUnix: first, Streams: len(at), DelaysUS: at,
		ClientCPUMS: float64((cpuTime() - r.cpuAt).Microseconds()) / 1000}
	sorted := make([]int64, 0, len(at))
	for i, t := range at {
		if t == 0 {
			at[i] = -1
			continue
		}
		at[i] = (t - first) / int64(time.Microsecond)
		sorted = append(sorted, at[i])
	}
	line.Got = len(sorted)
	if len(sorted) > 0 {
		slices.Sort(sorted)
		line.P50US, line.P90US, line.MaxUS = nearestRank(sorted, 0.5), nearestRank(sorted, 0.9), sorted[len(sorted)-1]
	}
	return line
}

// nearestRank is the q-quantile of sorted values.
func nearestRank(sorted []int64, q float64) int64 {
	i := int(q*float64(len(sorted))+0.5) - 1
	return sorted[min(max(i, 0), len(sorted)-1)]
}

// cpuTime is the user and system CPU time of this process so far.
func cpuTime() time.Duration {
	var ru syscall.Rusage
	if err := syscall.Getrusage(syscall.RUSAGE_SELF, &ru); err != nil {
		return 0
	}
	return time.Duration(ru.Utime.Nano() + ru.Stime.Nano())
}
