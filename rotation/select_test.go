package rotation

import (
	"bytes"
	"log/slog"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/spiffe/go-spiffe/v2/spiffeid"
	"github.com/spiffe/go-spiffe/v2/svid/x509svid"

	"github.com/sds-bridge/sds-bridge/internal/devapi"
)

func TestOrderSVIDs(t *testing.T) {
	mk := func(path, hint string) *x509svid.SVID {
		return &x509svid.SVID{ID: spiffeid.RequireFromPath(td, path), Hint: hint}
	}
	a, b, c := mk("/a", "internal"), mk("/b", "external"), mk("/c", "")
	// A hint that is also another SVID's SPIFFE ID: the hint wins.
	d := mk("/d", "spiffe://example.org/a")
	in := []*x509svid.SVID{a, b, c, d}
	for _, tt := range []struct {
		hint    string
		want    []*x509svid.SVID
		matched bool
	}{
		{"", in, true},
		{"internal", in, true},
		{"external", []*x509svid.SVID{b, a, c, d}, true},
		{"spiffe://example.org/c", []*x509svid.SVID{c, a, b, d}, true},
		{"spiffe://example.org/a", []*x509svid.SVID{d, a, b, c}, true},
		{"nope", in, false},
	} {
		got, matched := orderSVIDs(in, tt.hint)
		if matched != tt.matched || len(got) != len(tt.want) {
			t.Errorf("orderSVIDs(%q) = %d SVIDs, matched %v; want %d, %v", tt.hint, len(got), matched, len(tt.want), tt.matched)
			continue
		}
		for i := range got {
			if got[i] != tt.want[i] {
				t.Errorf("orderSVIDs(%q)[%d] = %s, want %s", tt.hint, i, got[i].ID, tt.want[i].ID)
			}
		}
		if in[0] != a || in[1] != b {
			t.Fatalf("orderSVIDs(%q) modified its input", tt.hint)
		}
	}
}

type lockedBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (l *lockedBuffer) Write(p []byte) (int, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.b.Write(p)
}

func (l *lockedBuffer) String() string {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.b.String()
}

// The hint reorders every Update; a hint that matches nothing keeps the
// Workload API's first SVID and is reported once, not every rotation.
func TestDefaultSVIDHint(t *testing.T) {
	logs := &lockedBuffer{}
	sink := newRecordingSink("sink")
	h := start(t, Config{DefaultSVIDHint: "second", Logger: slog.New(slog.NewTextHandler(logs, nil))}, sink)
	issue := func(path, hint string) *x509svid.SVID {
		s, err := h.ca.IssueWith(spiffeid.RequireFromPath(td, path), time.Minute, devapi.SVIDOptions{Hint: hint})
		if err != nil {
			t.Fatal(err)
		}
		return s
	}
	h.push(issue("/one", "first"), issue("/two", "second"), issue("/three", ""))
	sink.waitGen(t, 1)
	u := h.src.Current()
	if got := []string{u.SVIDs[0].ID.Path(), u.SVIDs[1].ID.Path(), u.SVIDs[2].ID.Path()}; strings.Join(got, ",") != "/two,/one,/three" {
		t.Errorf("SVIDs in order %v, want /two first then Workload API order", got)
	}
	if strings.Contains(logs.String(), "matches no SVID") {
		t.Error("warned although the hint matched")
	}

	for gen := uint64(2); gen <= 3; gen++ {
		h.push(issue("/one", "first"), issue("/three", ""))
		sink.waitGen(t, gen)
		if got := h.src.Current().DefaultSVID().ID.Path(); got != "/one" {
			t.Errorf("generation %d: default %s, want the first SVID /one", gen, got)
		}
	}
	if n := strings.Count(logs.String(), "matches no SVID"); n != 1 {
		t.Errorf("warned %d times about the unmatched hint, want once:\n%s", n, logs)
	}
	if !strings.Contains(logs.String(), "hint=first id=spiffe://example.org/one") {
		t.Errorf("warning does not list the available SVIDs:\n%s", logs)
	}
}
