package jwtfiles

import (
	"context"
	"log/slog"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/spiffe/go-spiffe/v2/spiffeid"
	"github.com/spiffe/go-spiffe/v2/svid/jwtsvid"
	"github.com/spiffe/go-spiffe/v2/workloadapi"
	"go.uber.org/goleak"

	"github.com/sds-bridge/sds-bridge/filesink"
	"github.com/sds-bridge/sds-bridge/internal/devapi"
	"github.com/sds-bridge/sds-bridge/internal/testkit"
	"github.com/sds-bridge/sds-bridge/reload"
)

func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }

func socketPath(tb testing.TB) string {
	return filepath.Join(testkit.ShortDir(tb), "api.sock")
}

// countAction counts the events it is run with: a real reload.Action.
type countAction struct {
	mu     sync.Mutex
	events []reload.Event
}

func (a *countAction) Name() string { return "count" }

func (a *countAction) Run(_ context.Context, e reload.Event) error {
	a.mu.Lock()
	defer a.mu.Unlock()
	a.events = append(a.events, e)
	return nil
}

func (a *countAction) count() int {
	a.mu.Lock()
	defer a.mu.Unlock()
	return len(a.events)
}

// devWorkloadAPI runs a dev Workload API whose issuer is started by the
// returned func, so a test can have the writer wait for it first.
func devWorkloadAPI(t *testing.T, ttl time.Duration, ids ...spiffeid.ID) (*devapi.Server, func()) {
	t.Helper()
	srv := devapi.NewServer(devapi.ServerConfig{SocketPath: socketPath(t), Logger: testkit.Logger(t)})
	if err := srv.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(srv.Stop)
	iss, err := devapi.NewIssuer(devapi.IssuerConfig{
		TrustDomain: spiffeid.RequireTrustDomainFromString("dev.test"),
		SPIFFEIDs:   ids,
		Hints:       map[spiffeid.ID]string{ids[len(ids)-1]: "last"},
		TTL:         ttl,
		Logger:      testkit.Logger(t),
	}, srv)
	if err != nil {
		t.Fatal(err)
	}
	return srv, func() {
		ctx, cancel := context.WithCancel(context.Background())
		done := make(chan error, 1)
		go func() { done <- iss.Run(ctx) }()
		t.Cleanup(func() {
			cancel()
			if err := <-done; err != nil {
				t.Errorf("issuer: %v", err)
			}
		})
	}
}

func runWriter(t *testing.T, cfg Config) {
	t.Helper()
	cfg.Logger = testkit.Logger(t)
	cfg.MinRetry, cfg.MaxRetry = 50*time.Millisecond, 200*time.Millisecond
	w, err := New(cfg)
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- w.Run(ctx) }()
	t.Cleanup(func() {
		cancel()
		if err := <-done; err != nil {
			t.Errorf("Run: %v", err)
		}
	})
}

// waitFile returns the file's content once ok accepts it.
func waitFile(t *testing.T, path, what string, ok func([]byte) bool) []byte {
	t.Helper()
	deadline := time.Now().Add(testkit.Timeout)
	for time.Now().Before(deadline) {
		if data, err := os.ReadFile(path); err == nil && ok(data) {
			return data
		}
		time.Sleep(20 * time.Millisecond)
	}
	t.Fatalf("%s never appeared in %s", what, path)
	return nil
}

func TestTokensAndBundlesWrittenAndRefreshed(t *testing.T) {
	td := spiffeid.RequireTrustDomainFromString("dev.test")
	first, second := spiffeid.RequireFromPath(td, "/first"), spiffeid.RequireFromPath(td, "/second")
	srv, startIssuer := devWorkloadAPI(t, 2*time.Second, first, second)
	dir := t.TempDir()
	// What a crash inside filesink.WriteFile leaves behind.
	leftover := filepath.Join(dir, ".api.token.tmp-0123456789ab")
	if err := os.WriteFile(leftover, []byte("half a token"), 0o600); err != nil {
		t.Fatal(err)
	}
	action := &countAction{}
	runWriter(t, Config{
		Address: srv.Address(),
		Folders: []Folder{{
			Dir: dir,
			SVIDs: []SVIDFile{
				{Audience: "https://api.example.org", ExtraAudiences: []string{"billing"}, FileName: "api.token"},
				{Audience: "other", FileName: "other.token"},
			},
			BundleFileName: "jwt_bundle.json",
			Reload:         jwtRunner(t, action),
		}},
	})
	// The writer starts before any identity exists: it must retry.
	startIssuer()

	bundleData := waitFile(t, filepath.Join(dir, "jwt_bundle.json"), "JWT bundles", func(b []byte) bool { return len(b) > 0 })
	bundles, err := testkit.ParseJWTBundles(bundleData)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := os.Stat(leftover); !os.IsNotExist(err) {
		t.Errorf("leftover temporary file still there: %v", err)
	}
	if !bundles.Has(td) || bundles.Len() != 1 {
		t.Fatalf("%d JWT bundles in the file, want the one of %s", bundles.Len(), td)
	}
	path := filepath.Join(dir, "api.token")
	token := waitFile(t, path, "a JWT-SVID", func(b []byte) bool { return len(b) > 0 })
	svid, err := jwtsvid.ParseAndValidate(string(token), bundles, []string{"billing"})
	if err != nil {
		t.Fatalf("token file does not verify with the bundle file: %v", err)
	}
	if svid.ID != first {
		t.Errorf("subject %s, want the default SVID %s", svid.ID, first)
	}
	for name, want := range map[string]os.FileMode{"api.token": DefaultMode, "jwt_bundle.json": DefaultBundleMode} {
		if fi, err := os.Stat(filepath.Join(dir, name)); err != nil || fi.Mode().Perm() != want {
			t.Errorf("%s: mode %v (%v), want %v", name, fi.Mode().Perm(), err, want)
		}
	}

	// The next token comes before this one expires, with a later expiry.
	refreshed := waitFile(t, path, "a refreshed JWT-SVID", func(b []byte) bool { return string(b) != string(token) })
	next, err := jwtsvid.ParseAndValidate(string(refreshed), bundles, []string{"https://api.example.org"})
	if err != nil {
		t.Fatalf("refreshed token: %v", err)
	}
	if !next.Expiry.After(svid.Expiry) {
		t.Errorf("refreshed token expires %s, not after the first (%s)", next.Expiry, svid.Expiry)
	}
	if n := action.count(); n < 3 {
		t.Errorf("actions ran %d times, want at least 3 (two tokens, the bundle)", n)
	}
	action.mu.Lock()
	for _, e := range action.events {
		if e.Kind != reload.EventJWT {
			t.Errorf("action ran with event kind %q, want %q", e.Kind, reload.EventJWT)
			break
		}
	}
	action.mu.Unlock()

	other := waitFile(t, filepath.Join(dir, "other.token"), "the second token", func(b []byte) bool { return len(b) > 0 })
	if _, err := jwtsvid.ParseAndValidate(string(other), bundles, []string{"other"}); err != nil {
		t.Errorf("other.token: %v", err)
	}
}

func TestFolderChoosesItsSVIDByHint(t *testing.T) {
	td := spiffeid.RequireTrustDomainFromString("dev.test")
	first, last := spiffeid.RequireFromPath(td, "/first"), spiffeid.RequireFromPath(td, "/last")
	srv, startIssuer := devWorkloadAPI(t, time.Minute, first, last)
	startIssuer()
	dirs := []string{t.TempDir(), t.TempDir(), t.TempDir()}
	runWriter(t, Config{
		Address:         srv.Address(),
		DefaultSVIDHint: "no-such-hint",
		Folders: []Folder{
			{Dir: dirs[0], SVID: "last", SVIDs: []SVIDFile{{Audience: "a", FileName: "t"}}, Mode: 0o640},
			{Dir: dirs[1], SVID: last.String(), SVIDs: []SVIDFile{{Audience: "a", FileName: "t"}}},
			{Dir: dirs[2], SVIDs: []SVIDFile{{Audience: "a", FileName: "t"}}},
		},
	})
	for i, want := range []spiffeid.ID{last, last, first} {
		data := waitFile(t, filepath.Join(dirs[i], "t"), "a token", func(b []byte) bool { return len(b) > 0 })
		svid, err := jwtsvid.ParseInsecure(string(data), []string{"a"})
		if err != nil {
			t.Fatalf("folder %d: %v", i, err)
		}
		if svid.ID != want {
			t.Errorf("folder %d: subject %s, want %s", i, svid.ID, want)
		}
	}
	if fi, err := os.Stat(filepath.Join(dirs[0], "t")); err != nil || fi.Mode().Perm() != 0o640 {
		t.Errorf("mode %v (%v), want 0640", fi.Mode().Perm(), err)
	}
}

func TestNewRefusesBadFolders(t *testing.T) {
	for _, tc := range []struct {
		name string
		f    Folder
		want string
	}{
		{"relative dir", Folder{Dir: "rel"}, "absolute"},
		{"no audience", Folder{Dir: "/a", SVIDs: []SVIDFile{{FileName: "t"}}}, "audience"},
		{"path as file name", Folder{Dir: "/a", SVIDs: []SVIDFile{{Audience: "a", FileName: "x/t"}}}, `"x/t"`},
		{"path as bundle name", Folder{Dir: "/a", BundleFileName: "x/b"}, `"x/b"`},
		{"hidden token", Folder{Dir: "/a", SVIDs: []SVIDFile{{Audience: "a", FileName: ".t"}}}, `jwt_svids[0].file_name: ".t"`},
		{"two tokens one file", Folder{Dir: "/a", SVIDs: []SVIDFile{{Audience: "a", FileName: "t"}, {Audience: "b", FileName: "t"}}}, `jwt_svids[1].file_name: "t" is also jwt_svids[0].file_name`},
	} {
		t.Run(tc.name, func(t *testing.T) {
			_, err := New(Config{Folders: []Folder{tc.f}})
			if err == nil || !strings.Contains(err.Error(), tc.want) {
				t.Errorf("New: %v, want an error containing %q", err, tc.want)
			}
		})
	}
}

// logSeen signals the first log record whose message contains want.
type logSeen struct {
	slog.Handler
	want string
	once sync.Once
	seen chan struct{}
}

func (h *logSeen) Handle(ctx context.Context, r slog.Record) error {
	if strings.Contains(r.Message, h.want) {
		h.once.Do(func() { close(h.seen) })
	}
	return h.Handler.Handle(ctx, r)
}

func (h *logSeen) WithAttrs(as []slog.Attr) slog.Handler {
	return &logSeen{Handler: h.Handler.WithAttrs(as), want: h.want, seen: h.seen}
}

// When the Workload API goes away the file keeps the last token (still
// valid), and a new one comes once the API is back.
func TestFailedRefreshKeepsTheLastToken(t *testing.T) {
	td := spiffeid.RequireTrustDomainFromString("dev.test")
	srv, startIssuer := devWorkloadAPI(t, 4*time.Second, spiffeid.RequireFromPath(td, "/w"))
	startIssuer()
	dir := t.TempDir()
	failed := &logSeen{Handler: testkit.Logger(t).Handler(), want: "the file keeps the last token", seen: make(chan struct{})}
	w, err := New(Config{
		Address:  srv.Address(),
		Folders:  []Folder{{Dir: dir, SVIDs: []SVIDFile{{Audience: "a", FileName: "t"}}}},
		MinRetry: 50 * time.Millisecond, MaxRetry: 200 * time.Millisecond,
		Logger: slog.New(failed),
	})
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- w.Run(ctx) }()
	defer func() {
		cancel()
		if err := <-done; err != nil {
			t.Errorf("Run: %v", err)
		}
	}()

	path := filepath.Join(dir, "t")
	token := waitFile(t, path, "a token", func(b []byte) bool { return len(b) > 0 })
	srv.Stop()
	select {
	case <-failed.seen:
	case <-time.After(testkit.Timeout):
		t.Fatal("no failed refresh was logged")
	}
	if got, err := os.ReadFile(path); err != nil || string(got) != string(token) {
		t.Fatalf("after a failed refresh the file holds %q (%v), want the last token", got, err)
	}
	if err := srv.Start(); err != nil {
		t.Fatal(err)
	}
	waitFile(t, path, "a new token after the Workload API came back", func(b []byte) bool { return len(b) > 0 && string(b) != string(token) })
}

// tokenStatus waits until ok accepts the status of the writer's only token.
func tokenStatus(t *testing.T, w *Writer, what string, ok func(TokenStatus) bool) TokenStatus {
	t.Helper()
	deadline := time.Now().Add(testkit.Timeout)
	for time.Now().Before(deadline) {
		if ts := w.Tokens(); len(ts) == 1 && ok(ts[0]) {
			return ts[0]
		}
		time.Sleep(20 * time.Millisecond)
	}
	t.Fatalf("token status never showed %s: %+v", what, w.Tokens())
	return TokenStatus{}
}

// Tokens reports the token the file holds, and a failing refresh (with the
// last good token kept) until a refresh succeeds again: what /readyz,
// /status and the metrics show.
func TestTokensReportExpiryAndRefreshFailures(t *testing.T) {
	td := spiffeid.RequireTrustDomainFromString("dev.test")
	srv, startIssuer := devWorkloadAPI(t, 4*time.Second, spiffeid.RequireFromPath(td, "/w"))
	startIssuer()
	dir := t.TempDir()
	w, err := New(Config{
		Address:  srv.Address(),
		Folders:  []Folder{{Dir: dir, SVIDs: []SVIDFile{{Audience: "a", FileName: "t"}}}},
		MinRetry: 50 * time.Millisecond, MaxRetry: 200 * time.Millisecond,
		Logger: testkit.Logger(t),
	})
	if err != nil {
		t.Fatal(err)
	}
	if ts := w.Tokens(); len(ts) != 1 || ts[0].Audience != "a" || ts[0].Dir != dir || ts[0].FileName != "t" || !ts[0].Expiry.IsZero() {
		t.Fatalf("before Run, Tokens() = %+v, want the one file with no token yet", ts)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- w.Run(ctx) }()
	defer func() {
		cancel()
		if err := <-done; err != nil {
			t.Errorf("Run: %v", err)
		}
	}()

	path := filepath.Join(dir, "t")
	written := tokenStatus(t, w, "a token", func(ts TokenStatus) bool { return !ts.RefreshedAt.IsZero() })
	// The file is judged by itself, not by what the writer remembers.
	onDisk, err := jwtsvid.ParseInsecure(string(readFile(t, path)), []string{"a"})
	if err != nil {
		t.Fatal(err)
	}
	if !written.Expiry.Equal(onDisk.Expiry) || written.SPIFFEID != onDisk.ID.String() || written.LastError != nil {
		t.Errorf("status %+v, want expiry %s and subject %s of the token in the file, no error", written, onDisk.Expiry, onDisk.ID)
	}

	srv.Stop()
	failing := tokenStatus(t, w, "a failed refresh", func(ts TokenStatus) bool { return ts.LastError != nil })
	if failing.Failures == 0 || failing.LastErrorAt.IsZero() || failing.Expiry.IsZero() {
		t.Errorf("failing refresh: %+v, want failures counted and the kept token's expiry", failing)
	}
	if onDisk, err := jwtsvid.ParseInsecure(string(readFile(t, path)), []string{"a"}); err != nil || !onDisk.Expiry.Equal(failing.Expiry) {
		t.Errorf("while failing, status expiry %s, file's token %v (%v): want the kept token's", failing.Expiry, onDisk, err)
	}

	if err := srv.Start(); err != nil {
		t.Fatal(err)
	}
	back := tokenStatus(t, w, "a refresh after the Workload API came back", func(ts TokenStatus) bool { return ts.LastError == nil && ts.RefreshedAt.After(failing.LastErrorAt) })
	if back.Failures < failing.Failures {
		t.Errorf("failures went from %d to %d: the count is since start", failing.Failures, back.Failures)
	}
}

// BenchmarkFetchAndWrite is one token refresh: FetchJWTSVIDs from the dev
// Workload API (which signs a new ES256 token) plus the atomic write.
func BenchmarkFetchAndWrite(b *testing.B) {
	srv := devapi.NewServer(devapi.ServerConfig{SocketPath: socketPath(b), Logger: slog.New(slog.DiscardHandler)})
	if err := srv.Start(); err != nil {
		b.Fatal(err)
	}
	defer srv.Stop()
	iss, err := devapi.NewIssuer(devapi.IssuerConfig{TTL: time.Minute, Logger: slog.New(slog.DiscardHandler)}, srv)
	if err != nil {
		b.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- iss.Run(ctx) }()
	defer func() { cancel(); <-done }()
	w, err := New(Config{Address: srv.Address(), Logger: slog.New(slog.DiscardHandler)})
	if err != nil {
		b.Fatal(err)
	}
	client, err := workloadapi.New(ctx, workloadapi.WithAddr(srv.Address()))
	if err != nil {
		b.Fatal(err)
	}
	defer client.Close()
	f := &Folder{Dir: b.TempDir(), Mode: DefaultMode}
	s := SVIDFile{Audience: "a", FileName: "t"}
	// The issuer pushes its first SVID asynchronously.
	for {
		if _, err := w.fetch(ctx, client, f, s); err == nil {
			break
		}
		time.Sleep(10 * time.Millisecond)
	}
	for b.Loop() {
		svid, err := w.fetch(ctx, client, f, s)
		if err != nil {
			b.Fatal(err)
		}
		if err := filesink.WriteFile(filepath.Join(f.Dir, s.FileName), []byte(svid.Marshal()), f.Mode, nil); err != nil {
			b.Fatal(err)
		}
	}
}

// TestOnlyWriteFilesOwnLeftoversAreRemoved: at start, the temporary files
// a crash inside filesink.WriteFile leaves behind go, but an operator's
// file that merely starts like one (".api.token.tmp-mine") and a link's
// target outside the folder are left alone.
func TestOnlyWriteFilesOwnLeftoversAreRemoved(t *testing.T) {
	t.Parallel()
	dir := t.TempDir()
	outside := filepath.Join(t.TempDir(), "passwd")
	if err := os.WriteFile(outside, []byte("keep"), 0o644); err != nil {
		t.Fatal(err)
	}
	for _, name := range []string{".api.token.tmp-0123456789ab", ".jwt_bundle.json.tmp-0123456789ab", ".api.token.tmp-mine"} {
		if err := os.WriteFile(filepath.Join(dir, name), []byte("x"), 0o600); err != nil {
			t.Fatal(err)
		}
	}
	if err := os.Symlink(outside, filepath.Join(dir, ".api.token.tmp-abcdef012345")); err != nil {
		t.Fatal(err)
	}
	w, err := New(Config{
		Logger:  testkit.Logger(t),
		Folders: []Folder{{Dir: dir, SVIDs: []SVIDFile{{Audience: "a", FileName: "api.token"}}, BundleFileName: "jwt_bundle.json"}},
	})
	if err != nil {
		t.Fatal(err)
	}
	w.removeLeftovers()
	entries, err := os.ReadDir(dir)
	if err != nil {
		t.Fatal(err)
	}
	var left []string
	for _, e := range entries {
		left = append(left, e.Name())
	}
	if want := []string{".api.token.tmp-mine"}; strings.Join(left, " ") != strings.Join(want, " ") {
		t.Errorf("left %v, want %v", left, want)
	}
	if b, err := os.ReadFile(outside); err != nil || string(b) != "keep" {
		t.Errorf("the link's target: %q, %v", b, err)
	}
}

// Once (run --once) writes every token and the JWT bundles and returns,
// retrying while the Workload API has no identity yet; it runs no reload
// action (the X.509 swap after it does), and it gives up, saying why,
// when its context ends first.
func TestOnceWritesEveryFileAndReturns(t *testing.T) {
	td := spiffeid.RequireTrustDomainFromString("dev.test")
	id := spiffeid.RequireFromPath(td, "/once")
	srv, startIssuer := devWorkloadAPI(t, time.Minute, id)
	dir := t.TempDir()
	action := &countAction{}
	w, err := New(Config{
		Address: srv.Address(),
		Folders: []Folder{{
			Dir:            dir,
			SVIDs:          []SVIDFile{{Audience: "db", FileName: "db.token"}},
			BundleFileName: "jwt_bundle.json",
			Reload:         jwtRunner(t, action),
		}},
		MinRetry: 50 * time.Millisecond, MaxRetry: 200 * time.Millisecond,
		Logger: testkit.Logger(t),
	})
	if err != nil {
		t.Fatal(err)
	}

	// No identity yet, and a short deadline: Once fails with the reason.
	short, cancel := context.WithTimeout(t.Context(), 300*time.Millisecond)
	err = w.Once(short)
	cancel()
	if err == nil || !strings.Contains(err.Error(), "gave up") || !strings.Contains(err.Error(), "db.token") {
		t.Fatalf("Once without an identity = %v, want it to give up on db.token", err)
	}

	startIssuer()
	if err := w.Once(t.Context()); err != nil {
		t.Fatalf("Once: %v", err)
	}
	bundles, err := testkit.ParseJWTBundles(readFile(t, filepath.Join(dir, "jwt_bundle.json")))
	if err != nil {
		t.Fatal(err)
	}
	svid, err := jwtsvid.ParseAndValidate(string(readFile(t, filepath.Join(dir, "db.token"))), bundles, []string{"db"})
	if err != nil {
		t.Fatalf("token file does not verify with the bundle file: %v", err)
	}
	if svid.ID != id {
		t.Errorf("subject %s, want %s", svid.ID, id)
	}
	if n := action.count(); n != 0 {
		t.Errorf("Once ran the actions %d times, want none", n)
	}
}

func readFile(t *testing.T, path string) []byte {
	t.Helper()
	data, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	return data
}

// jwtRunner is a folder's reload runner with action as its one JWT action.
func jwtRunner(t testing.TB, action reload.Action) *reload.Runner {
	t.Helper()
	r, err := reload.New(reload.Config{JWTActions: []reload.Action{action}, Logger: testkit.Logger(t)})
	if err != nil {
		t.Fatal(err)
	}
	return r
}
