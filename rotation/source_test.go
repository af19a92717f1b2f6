package rotation

import (
	"context"
	"errors"
	"log/slog"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/spiffe/go-spiffe/v2/bundle/x509bundle"
	"github.com/spiffe/go-spiffe/v2/spiffeid"
	"github.com/spiffe/go-spiffe/v2/svid/x509svid"
	"go.uber.org/goleak"

	"github.com/sds-bridge/sds-bridge/internal/devapi"
	"github.com/sds-bridge/sds-bridge/internal/testkit"
)

func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }

var (
	td    = spiffeid.RequireTrustDomainFromString("example.org")
	svcID = spiffeid.RequireFromPath(td, "/backend")
)

// recordingSink keeps every Update it is given and can be made to fail or
// to block until released.
type recordingSink struct {
	name    string
	fail    error
	gate    chan struct{} // when non-nil, Apply waits for a receive from it
	entered chan uint64   // with gate: each generation Apply waits with
	mu      sync.Mutex
	got     []*Update
	applied chan uint64
}

func newRecordingSink(name string) *recordingSink {
	return &recordingSink{name: name, applied: make(chan uint64, 100), entered: make(chan uint64, 100)}
}

func (r *recordingSink) Name() string { return r.name }

func (r *recordingSink) Apply(ctx context.Context, u *Update) error {
	if r.gate != nil {
		r.entered <- u.Generation
		select {
		case <-r.gate:
		case <-ctx.Done():
			return ctx.Err()
		}
	}
	r.mu.Lock()
	r.got = append(r.got, u)
	r.mu.Unlock()
	r.applied <- u.Generation
	return r.fail
}

func (r *recordingSink) generations() []uint64 {
	r.mu.Lock()
	defer r.mu.Unlock()
	var out []uint64
	for _, u := range r.got {
		out = append(out, u.Generation)
	}
	return out
}

// waitGen waits until the sink applied generation gen.
func (r *recordingSink) waitGen(t *testing.T, gen uint64) {
	t.Helper()
	timeout := time.After(10 * time.Second)
	for {
		select {
		case g := <-r.applied:
			if g == gen {
				return
			}
			if g > gen {
				t.Fatalf("%s: got generation %d while waiting for %d", r.name, g, gen)
			}
		case <-timeout:
			t.Fatalf("%s: generation %d never applied; have %v", r.name, gen, r.generations())
		}
	}
}

// waitEntered waits until a gated sink's Apply holds generation gen.
func (r *recordingSink) waitEntered(t *testing.T, gen uint64) {
	t.Helper()
	select {
	case g := <-r.entered:
		if g != gen {
			t.Fatalf("%s: Apply entered with generation %d, want %d", r.name, g, gen)
		}
	case <-time.After(testkit.Timeout):
		t.Fatalf("%s: Apply never entered with generation %d", r.name, gen)
	}
}

type harness struct {
	t   *testing.T
	ca  *devapi.CA
	wl  *devapi.Server
	src *Source
	err chan error
}

// start runs a fake Workload API and a Source with the given sinks.
func start(t *testing.T, cfg Config, sinks ...Sink) *harness {
	t.Helper()
	authority, err := devapi.NewCA(td, time.Hour)
	if err != nil {
		t.Fatal(err)
	}
	wl := devapi.NewServer(devapi.ServerConfig{SocketPath: filepath.Join(testkit.ShortDir(t), "wl.sock"), Logger: slog.New(slog.DiscardHandler)})
	if err := wl.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(wl.Stop)
	cfg.Address = wl.Address()
	cfg.Sinks = sinks
	if cfg.Logger == nil {
		cfg.Logger = slog.New(slog.DiscardHandler)
	}
	src, err := New(cfg)
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	h := &harness{t: t, ca: authority, wl: wl, src: src, err: make(chan error, 1)}
	go func() { h.err <- src.Run(ctx) }()
	t.Cleanup(func() {
		cancel()
		if err := <-h.err; err != nil {
			t.Errorf("Run: %v", err)
		}
	})
	return h
}

// push sends svids with the CA's bundle through the fake Workload API.
func (h *harness) push(svids ...*x509svid.SVID) {
	h.t.Helper()
	resp, err := devapi.X509Response(svids, []*x509bundle.Bundle{h.ca.Bundle()})
	if err != nil {
		h.t.Fatal(err)
	}
	h.wl.SetX509(resp)
}

func (h *harness) issue(opts devapi.SVIDOptions) *x509svid.SVID {
	h.t.Helper()
	s, err := h.ca.IssueWith(svcID, time.Minute, opts)
	if err != nil {
		h.t.Fatal(err)
	}
	return s
}

func TestOneUpdateReachesEverySinkWithTheSameGeneration(t *testing.T) {
	a, b := newRecordingSink("a"), newRecordingSink("b")
	h := start(t, Config{}, a, b)
	for gen := uint64(1); gen <= 3; gen++ {
		h.push(h.issue(devapi.SVIDOptions{}))
		a.waitGen(t, gen)
		b.waitGen(t, gen)
	}
	a.mu.Lock()
	b.mu.Lock()
	defer a.mu.Unlock()
	defer b.mu.Unlock()
	for i := range a.got {
		if a.got[i] != b.got[i] {
			t.Errorf("generation %d: sinks got different Update values", a.got[i].Generation)
		}
	}
	if got := h.src.Current().Generation; got != 3 {
		t.Errorf("Current().Generation = %d, want 3", got)
	}
	select {
	case <-h.src.Ready():
	default:
		t.Error("Ready not closed after the first update")
	}
}

func TestBadUpdatesAreRefusedAndTheLastGoodKept(t *testing.T) {
	sink := newRecordingSink("sink")
	h := start(t, Config{}, sink)
	good := h.issue(devapi.SVIDOptions{})
	h.push(good)
	sink.waitGen(t, 1)

	other, err := devapi.NewCA(td, time.Hour)
	if err != nil {
		t.Fatal(err)
	}
	foreign, err := other.Issue(svcID, time.Minute)
	if err != nil {
		t.Fatal(err)
	}
	mismatched := *h.issue(devapi.SVIDOptions{})
	mismatched.PrivateKey = foreign.PrivateKey

	bad := []struct {
		name string
		svid *x509svid.SVID
	}{
		{"expired leaf", h.issue(devapi.SVIDOptions{NotBefore: time.Now().Add(-2 * time.Hour), NotAfter: time.Now().Add(-time.Hour)})},
		{"leaf from the future", h.issue(devapi.SVIDOptions{NotBefore: time.Now().Add(time.Hour), NotAfter: time.Now().Add(2 * time.Hour)})},
		{"chain from another CA", foreign},
		{"key of another SVID", &mismatched},
	}
	for _, tc := range bad {
		before := h.src.Counters()
		h.push(tc.svid)
		testkit.Eventually(t, tc.name+" counted", func() bool {
			c := h.src.Counters()
			return c.Refused > before.Refused || c.WatchErrors > before.WatchErrors
		})
		if cur := h.src.Current(); cur.Generation != 1 || !cur.Leaf().Equal(good.Certificates[0]) {
			t.Fatalf("%s: current update replaced (generation %d)", tc.name, cur.Generation)
		}
	}
	// A good update after the bad ones is accepted as generation 2.
	h.push(h.issue(devapi.SVIDOptions{}))
	sink.waitGen(t, 2)
	if got := sink.generations(); len(got) != 2 {
		t.Errorf("sink saw generations %v, want [1 2]", got)
	}
}

func TestRepeatedMaterialIsNotARotation(t *testing.T) {
	sink := newRecordingSink("sink")
	h := start(t, Config{}, sink)
	s := h.issue(devapi.SVIDOptions{})
	h.push(s)
	sink.waitGen(t, 1)
	h.push(s) // as after an agent reconnect
	h.push(h.issue(devapi.SVIDOptions{}))
	sink.waitGen(t, 2)
	if got := sink.generations(); len(got) != 2 {
		t.Errorf("generations %v: a resend became a rotation", got)
	}
}

func TestWorkloadAPIGoesAwayAndComesBack(t *testing.T) {
	sink := newRecordingSink("sink")
	h := start(t, Config{}, sink)
	h.push(h.issue(devapi.SVIDOptions{}))
	sink.waitGen(t, 1)

	h.wl.Stop()
	testkit.Eventually(t, "watch error after the agent went away", func() bool { return h.src.Counters().WatchErrors > 0 })
	if cur := h.src.Current(); cur == nil || cur.Generation != 1 {
		t.Fatal("last good update lost while the Workload API is away")
	}
	h.push(h.issue(devapi.SVIDOptions{}))
	if err := h.wl.Start(); err != nil {
		t.Fatal(err)
	}
	sink.waitGen(t, 2)
}

func TestSlowOrFailingSinkDoesNotHoldOthers(t *testing.T) {
	slow := newRecordingSink("slow")
	slow.gate = make(chan struct{})
	failing := newRecordingSink("failing")
	failing.fail = errors.New("disk full")
	fast := newRecordingSink("fast")
	h := start(t, Config{}, slow, failing, fast)

	for gen := uint64(1); gen <= 3; gen++ {
		h.push(h.issue(devapi.SVIDOptions{}))
		if gen == 1 {
			// slow must hold generation 1 before 2 arrives: until its
			// goroutine takes 1 from its slot, 2 would replace it there
			// (being woken last makes it run first only on an idle machine).
			slow.waitEntered(t, 1)
		}
		fast.waitGen(t, gen)
		failing.waitGen(t, gen)
	}
	// slow has been inside Apply(1) all along; once released it gets the
	// newest Update and skips generation 2 — once 3 is in its slot: the
	// source hands an Update to slow (the first sink) after the others, so
	// they may have applied 3 before slow was offered it.
	testkit.Eventually(t, "generation 3 offered to the slow sink", func() bool {
		return slices.ContainsFunc(h.src.SinkStatuses(), func(st SinkStatus) bool { return st.Name == "slow" && st.Pending == 3 })
	})
	slow.gate <- struct{}{}
	slow.gate <- struct{}{}
	slow.waitGen(t, 3)
	if got := slow.generations(); len(got) != 2 || got[0] != 1 || got[1] != 3 {
		t.Errorf("slow sink generations = %v, want [1 3]", got)
	}
	// A sink's status is recorded just after its Apply returns, which is
	// after the recording sink saw the generation.
	statusesSettled := func() bool {
		for _, st := range h.src.SinkStatuses() {
			if st.Name != "failing" && st.Generation != 3 {
				return false
			}
		}
		return true
	}
	testkit.Eventually(t, "every sink's status recorded", statusesSettled)
	for _, st := range h.src.SinkStatuses() {
		switch st.Name {
		case "failing":
			if st.Err == nil || st.Generation != 0 {
				t.Errorf("failing sink status = %+v", st)
			}
		case "fast", "slow":
			if st.Err != nil || st.Generation != 3 {
				t.Errorf("%s sink status = %+v", st.Name, st)
			}
		}
	}
}

func TestFirstUpdateTimeoutSaysWhatToCheck(t *testing.T) {
	authority, err := devapi.NewCA(td, time.Hour)
	if err != nil {
		t.Fatal(err)
	}
	_ = authority
	wl := devapi.NewServer(devapi.ServerConfig{SocketPath: filepath.Join(testkit.ShortDir(t), "wl.sock"), Logger: slog.New(slog.DiscardHandler)})
	if err := wl.Start(); err != nil {
		t.Fatal(err)
	}
	defer wl.Stop()
	src, err := New(Config{Address: wl.Address(), FirstUpdateTimeout: 300 * time.Millisecond, Logger: slog.New(slog.DiscardHandler)})
	if err != nil {
		t.Fatal(err)
	}
	err = src.Run(t.Context())
	if err == nil {
		t.Fatal("Run returned nil without any update")
	}
	for _, want := range []string{wl.Address(), "SPIRE agent", "registration entry"} {
		if !strings.Contains(err.Error(), want) {
			t.Errorf("error %q does not mention %q", err, want)
		}
	}
}

func TestNoAddressIsAClearError(t *testing.T) {
	t.Setenv("SPIFFE_ENDPOINT_SOCKET", "")
	_, err := New(Config{})
	if err == nil || !strings.Contains(err.Error(), "SPIFFE_ENDPOINT_SOCKET") {
		t.Fatalf("New without address: %v", err)
	}
}
