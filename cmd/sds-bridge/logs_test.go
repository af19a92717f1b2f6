package main

import (
	"bufio"
	"bytes"
	"crypto/x509"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"log/slog"
	"maps"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"slices"
	"strings"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/spiffe/go-spiffe/v2/bundle/x509bundle"
	"github.com/spiffe/go-spiffe/v2/proto/spiffe/workload"
	"github.com/spiffe/go-spiffe/v2/spiffeid"
	"github.com/spiffe/go-spiffe/v2/svid/x509svid"
	"google.golang.org/grpc"

	"github.com/sds-bridge/sds-bridge/filesink"
	"github.com/sds-bridge/sds-bridge/internal/devapi"
	"github.com/sds-bridge/sds-bridge/internal/testkit"
)

// strictJSON checks that line is exactly one JSON object in which no
// object, at any depth, has a key twice. encoding/json keeps the last of
// two equal keys without a word; most log pipelines do the same or worse,
// so a duplicate is a field silently lost.
func strictJSON(line []byte) error {
	d := json.NewDecoder(bytes.NewReader(line))
	d.UseNumber()
	tok, err := d.Token()
	if err != nil {
		return err
	}
	if tok != json.Delim('{') {
		return fmt.Errorf("not a JSON object: starts with %v", tok)
	}
	if err := strictObject(d); err != nil {
		return err
	}
	if _, err := d.Token(); err != io.EOF {
		return fmt.Errorf("more after the object (%v)", err)
	}
	return nil
}

// strictObject reads an object's members after its '{', through its '}'.
func strictObject(d *json.Decoder) error {
	seen := map[string]bool{}
	for d.More() {
		tok, err := d.Token()
		if err != nil {
			return err
		}
		key := tok.(string) // the decoder only yields strings as keys
		if seen[key] {
			return fmt.Errorf("duplicate key %q", key)
		}
		seen[key] = true
		if err := strictValue(d); err != nil {
			return fmt.Errorf("%s: %w", key, err)
		}
	}
	_, err := d.Token() // '}'
	return err
}

// strictValue reads one value, checking any object in it.
func strictValue(d *json.Decoder) error {
	tok, err := d.Token()
	if err != nil {
		return err
	}
	switch tok {
	case json.Delim('{'):
		return strictObject(d)
	case json.Delim('['):
		for d.More() {
			if err := strictValue(d); err != nil {
				return err
			}
		}
		_, err := d.Token() // ']'
		return err
	}
	return nil
}

// TestTheStrictJSONCheckRejectsDuplicateKeys: the check the log tests rely
// on finds a duplicate at any depth (which json.Unmarshal accepts), and
// passes what slog writes.
func TestTheStrictJSONCheckRejectsDuplicateKeys(t *testing.T) {
	for _, bad := range []string{
		`{"dir":"/a","msg":"x","dir":"/a/..g2"}`,
		`{"a":{"b":1,"b":2}}`,
		`{"a":[{"b":1,"b":2}]}`,
		`{"a":1} {"b":2}`,
		`sds-bridge: rotation: no valid X.509 SVID`,
		`["not", "an", "object"]`,
	} {
		if strictJSON([]byte(bad)) == nil {
			t.Errorf("accepted %s", bad)
		}
	}
	var any map[string]any
	if err := json.Unmarshal([]byte(`{"dir":"/a","dir":"/b"}`), &any); err != nil {
		t.Fatalf("encoding/json refuses duplicates after all (%v): the strict check is not needed", err)
	}
	var out bytes.Buffer
	slog.New(slog.NewJSONHandler(&out, nil)).With("component", "files", "dir", "/a").Info("m", "err", errors.New("e"), "n", 1)
	if err := strictJSON(bytes.TrimSpace(out.Bytes())); err != nil {
		t.Errorf("slog's own line refused: %v: %s", err, out.Bytes())
	}
}

// finished is one run of the binary to its exit.
type finished struct {
	name   string
	stderr string
	code   int
}

// runProcToExit runs bin in work until it exits by itself.
func runProcToExit(t *testing.T, name, bin, work string, args ...string) finished {
	t.Helper()
	cmd := exec.Command(bin, args...)
	cmd.Dir = work
	var stderr testkit.LogBuffer
	cmd.Stderr = &stderr
	cmd.Stdout = io.Discard
	cmd.WaitDelay = testkit.Timeout
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	timer := time.AfterFunc(testkit.Timeout, func() { _ = cmd.Process.Kill() })
	defer timer.Stop()
	err := cmd.Wait()
	code := 0
	var xe *exec.ExitError
	if errors.As(err, &xe) {
		code = xe.ExitCode()
	} else if err != nil {
		t.Fatalf("%s: %v", name, err)
	}
	return finished{name: name, stderr: stderr.String(), code: code}
}

// running is the binary as a process that the test stops.
type running struct {
	cmd    *exec.Cmd
	stderr *testkit.LogBuffer
	exited chan error
}

func startRunning(t *testing.T, bin, work string, args ...string) *running {
	t.Helper()
	r := &running{cmd: exec.Command(bin, args...), stderr: &testkit.LogBuffer{}, exited: make(chan error, 1)}
	r.cmd.Dir = work
	r.cmd.Stderr = r.stderr
	r.cmd.Stdout = io.Discard
	if err := r.cmd.Start(); err != nil {
		t.Fatal(err)
	}
	go func() { r.exited <- r.cmd.Wait() }()
	t.Cleanup(func() {
		if r.cmd.ProcessState == nil {
			_ = r.cmd.Process.Kill()
		}
	})
	return r
}

// stop sends SIGTERM and waits for the exit; what the process wrote and
// its exit status are the result.
func (r *running) stop(t *testing.T, name string) finished {
	t.Helper()
	_ = r.cmd.Process.Signal(syscall.SIGTERM)
	var err error
	select {
	case err = <-r.exited:
	case <-time.After(testkit.Timeout):
		_ = r.cmd.Process.Kill()
		err = <-r.exited
		t.Errorf("%s did not stop on SIGTERM", name)
	}
	code := 0
	var xe *exec.ExitError
	if errors.As(err, &xe) {
		code = xe.ExitCode()
	}
	return finished{name: name, stderr: r.stderr.String(), code: code}
}

// fakeAgent is a Workload API the test controls, with a CA of its own.
type fakeAgent struct {
	*devapi.Server
	ca *devapi.CA
	id spiffeid.ID
}

func startFakeAgent(t *testing.T, dir string) *fakeAgent {
	t.Helper()
	td := spiffeid.RequireTrustDomainFromString("example.org")
	authority, err := devapi.NewCA(td, 24*time.Hour)
	if err != nil {
		t.Fatal(err)
	}
	srv := devapi.NewServer(devapi.ServerConfig{SocketPath: filepath.Join(dir, "agent.sock"), Logger: slog.New(slog.DiscardHandler)})
	if err := srv.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(srv.Stop)
	return &fakeAgent{Server: srv, ca: authority, id: spiffeid.RequireFromPath(td, "/db")}
}

// response is an X.509 response with one SVID valid from notBefore to
// notAfter.
func (a *fakeAgent) response(t *testing.T, notBefore, notAfter time.Time) *workload.X509SVIDResponse {
	t.Helper()
	svid, err := a.ca.IssueWith(a.id, time.Hour, devapi.SVIDOptions{NotBefore: notBefore, NotAfter: notAfter})
	if err != nil {
		t.Fatal(err)
	}
	resp, err := devapi.X509Response([]*x509svid.SVID{svid}, []*x509bundle.Bundle{a.ca.Bundle()})
	if err != nil {
		t.Fatal(err)
	}
	return resp
}

func (a *fakeAgent) expired(t *testing.T) *workload.X509SVIDResponse {
	return a.response(t, time.Now().Add(-2*time.Hour), time.Now().Add(-time.Hour))
}

func (a *fakeAgent) valid(t *testing.T) *workload.X509SVIDResponse {
	return a.response(t, time.Now().Add(-time.Minute), time.Now().Add(time.Hour))
}

// runConfig writes a config for `run` against addr with one folder.
func runConfig(t *testing.T, work, name, addr, extra string) string {
	t.Helper()
	path := filepath.Join(work, name+".yaml")
	cfg := fmt.Sprintf("workload_api:\n  address: %s\n  first_update_timeout: 2s\nsds:\n  socket: %s\nfiles:\n  - dir: %s\n%s",
		addr, filepath.Join(work, name+".sock"), filepath.Join(work, name), extra)
	if err := os.WriteFile(path, []byte(cfg), 0o644); err != nil {
		t.Fatal(err)
	}
	return path
}

// folderReady waits until dir holds a usable set of at least generation gen.
func folderReady(t *testing.T, dir string, gen uint64) {
	t.Helper()
	testkit.Eventually(t, fmt.Sprintf("generation %d in %s", gen, dir), func() bool {
		m, err := filesink.Inspect(filesink.InspectConfig{Dir: dir})
		return err == nil && m.Generation >= gen
	})
}

// failurePaths runs the binary through the ways it fails or complains
// with --log-format json, and returns each run: a config error, an agent
// that sends only expired material, no agent at all, a second bridge on
// a locked folder, a restart after a clean stop (leftover generation), a
// folder holding expired files with an action that fails.
func failurePaths(t *testing.T, bin string) []finished {
	work := testkit.ShortDir(t)
	agent := startFakeAgent(t, work)
	agent.SetX509(agent.expired(t))
	var runs []finished

	bad := filepath.Join(work, "bad.yaml")
	if err := os.WriteFile(bad, []byte("workload_api:\n  adress: unix:///x\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	runs = append(runs, runProcToExit(t, "config error", bin, work, "run", "--log-format", "json", "--config", bad))
	runs = append(runs, runProcToExit(t, "only expired material", bin, work, "run", "--log-format", "json", "--admin", "",
		"--config", runConfig(t, work, "exp", agent.Address(), "")))
	runs = append(runs, runProcToExit(t, "no agent", bin, work, "run", "--log-format", "json", "--admin", "",
		"--config", runConfig(t, work, "none", "unix://"+filepath.Join(work, "absent.sock"), "")))

	// dev with 1 s SVIDs leaves the previous generation beside the current
	// one at a clean stop, as every running bridge does.
	folder := filepath.Join(work, "f")
	devArgs := []string{"dev", "--log-format", "json", "--admin", "", "--svid-ttl", "1s", "--dir", folder}
	first := startRunning(t, bin, work, append(devArgs, "--sds-socket", filepath.Join(work, "a.sock"))...)
	// Two generation directories, not generation 2: under load the
	// first swap can already be generation 2, with none before it.
	testkit.Eventually(t, "a previous generation beside the current one", func() bool {
		gens, _ := generationDirs(folder)
		return len(gens) >= 2
	})
	runs = append(runs, runProcToExit(t, "second bridge on a locked folder", bin, work, append(devArgs, "--sds-socket", filepath.Join(work, "b.sock"))...))
	runs = append(runs, first.stop(t, "first bridge"))
	if gens, _ := generationDirs(folder); len(gens) < 2 {
		t.Fatalf("a clean stop left %v: no leftover generation to test the restart with", gens)
	}
	again := startRunning(t, bin, work, append(devArgs, "--sds-socket", filepath.Join(work, "a.sock"))...)
	testkit.Eventually(t, "the restarted bridge's clean-up", func() bool { return strings.Contains(again.stderr.String(), "leftover generation") })
	runs = append(runs, again.stop(t, "restart after a clean stop"))

	stale := filepath.Join(work, "stale")
	old := agent.ca
	svid, err := old.IssueWith(agent.id, time.Hour, devapi.SVIDOptions{NotBefore: time.Now().Add(-2 * time.Hour), NotAfter: time.Now().Add(-time.Hour)})
	if err != nil {
		t.Fatal(err)
	}
	writeSVID(t, stale, svid, []*x509.Certificate{old.Root()})
	agent.SetX509(agent.valid(t))
	failing := startRunning(t, bin, work, "run", "--log-format", "json", "--admin", "",
		"--config", runConfig(t, work, "stale", agent.Address(), `    on_rotate:
      - exec:
          command: ["/bin/false"]
`))
	testkit.Eventually(t, "a failed reload action", func() bool { return strings.Contains(failing.stderr.String(), "/bin/false") })
	runs = append(runs, failing.stop(t, "expired files and a failing action"))
	return runs
}

// TestEveryLogLineOfTheFailurePathsIsStrictJSONAndNamesNoGoPackage: with
// --log-format json, every line the binary writes on its failure paths is
// one JSON object without a duplicate key, the error that stops it
// included; a leftover generation after a clean stop is INFO, not a
// warning that pages; and no message or error in them, nor in what check,
// wait and status print when they fail, names a Go package of this module
// ("filesink: …"): an operator reads about the folder, the agent, Envoy.
func TestEveryLogLineOfTheFailurePathsIsStrictJSONAndNamesNoGoPackage(t *testing.T) {
	t.Parallel()
	bin := buildBridge(t)
	runs := failurePaths(t, bin)
	prefixed := packagePrefix(t)
	for _, r := range append(runs, commandFailures(t, bin)...) {
		for _, m := range prefixed.FindAllString(r.stderr, -1) {
			t.Errorf("%s: a message names the Go package %q:\n%s", r.name, strings.TrimLeft(m, `" `), r.stderr)
		}
	}
	wantCode := map[string]int{"config error": 1, "only expired material": 1, "no agent": 1, "second bridge on a locked folder": 1,
		"first bridge": 0, "restart after a clean stop": 0, "expired files and a failing action": 0}
	for _, r := range runs {
		if r.code != wantCode[r.name] {
			t.Errorf("%s: exit status %d, want %d\n%s", r.name, r.code, wantCode[r.name], r.stderr)
		}
		fatal := 0
		for _, line := range strings.Split(strings.TrimSpace(r.stderr), "\n") {
			if err := strictJSON([]byte(line)); err != nil {
				t.Errorf("%s: not a strict JSON line (%v): %s", r.name, err, line)
			}
			var rec struct{ Level, Msg string }
			_ = json.Unmarshal([]byte(line), &rec)
			if rec.Level == "" || rec.Msg == "" {
				t.Errorf("%s: a line without level or msg: %s", r.name, line)
			}
			if rec.Msg == "sds-bridge stopped" {
				fatal++
			}
			if strings.Contains(rec.Msg, "leftover generation") && rec.Level != "INFO" {
				t.Errorf("%s: a leftover generation after a clean stop logged at %s: %s", r.name, rec.Level, line)
			}
		}
		if wantFatal := min(r.code, 1); fatal != wantFatal {
			t.Errorf("%s: %d \"sds-bridge stopped\" lines, want %d\n%s", r.name, fatal, wantFatal, r.stderr)
		}
	}
}

// packagePrefix matches "<package>: " at the start of a message or after
// another prefix, for every package of this module: the names are read
// from the source, so a new package is covered too.
func packagePrefix(t *testing.T) *regexp.Regexp {
	t.Helper()
	names := map[string]bool{}
	err := filepath.WalkDir(filepath.Join("..", ".."), func(path string, d fs.DirEntry, err error) error {
		if err != nil || d.IsDir() || !strings.HasSuffix(path, ".go") || strings.HasSuffix(path, "_test.go") {
			return err
		}
		src, err := os.ReadFile(path)
		if err != nil {
			return err
		}
		if m := regexp.MustCompile(`(?m)^package (\w+)`).FindSubmatch(src); m != nil && string(m[1]) != "main" {
			names[string(m[1])] = true
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	if !names["filesink"] || !names["rotation"] || !names["admin"] || !names["envoyboot"] {
		t.Fatalf("package names read from the source: %v", names)
	}
	return regexp.MustCompile(`(^|[\s"=:])(` + strings.Join(slices.Sorted(maps.Keys(names)), "|") + `): `)
}

// commandFailures runs check, wait and status where they fail, in text.
func commandFailures(t *testing.T, bin string) []finished {
	t.Helper()
	work := testkit.ShortDir(t)
	missing := filepath.Join(work, "never-written")
	empty := filepath.Join(work, "empty")
	if err := os.Mkdir(empty, 0o755); err != nil {
		t.Fatal(err)
	}
	return []finished{
		runProcToExit(t, "check on a missing folder", bin, work, "check", "--dir", missing),
		runProcToExit(t, "check on an empty folder", bin, work, "check", "--dir", empty),
		runProcToExit(t, "wait on an empty folder", bin, work, "wait", "--dir", empty, "--timeout", "10ms"),
		runProcToExit(t, "status without a bridge", bin, work, "status", "--admin", "http://127.0.0.1:1"),
	}
}

// TestCheckOnAMissingDirectorySaysSo: `check --dir` on a folder that does
// not exist says the directory does not exist, not that a file in it is
// missing; `wait` says the same when it gives up.
func TestCheckOnAMissingDirectorySaysSo(t *testing.T) {
	dir := filepath.Join(t.TempDir(), "never-written")
	for _, args := range [][]string{{"check", "--dir", dir}, {"wait", "--dir", dir, "--timeout", "1ms"}} {
		var out syncBuffer
		code := exitStatus(run(t.Context(), args, &out, &out), &out)
		if code != exitBad || !strings.Contains(out.String(), "the directory "+dir+" does not exist") || strings.Contains(out.String(), "missing file") {
			t.Errorf("%v: exit status %d: %s", args, code, out.String())
		}
	}
}

// logLines splits what a process wrote into its JSON lines.
func logLines(t *testing.T, stderr string) []map[string]any {
	t.Helper()
	var out []map[string]any
	sc := bufio.NewScanner(strings.NewReader(stderr))
	sc.Buffer(nil, 1<<20)
	for sc.Scan() {
		var m map[string]any
		if err := json.Unmarshal(sc.Bytes(), &m); err != nil {
			t.Fatalf("not JSON: %q", sc.Text())
		}
		out = append(out, m)
	}
	return out
}

// loopingAgent is a misbehaving Workload API: one valid response, then,
// once flood is closed, the same expired response as fast as the stream
// takes it.
type loopingAgent struct {
	workload.UnimplementedSpiffeWorkloadAPIServer
	valid, expired *workload.X509SVIDResponse
	flood          chan struct{}
	sent           atomic.Int64
}

func (a *loopingAgent) FetchX509SVID(_ *workload.X509SVIDRequest, s grpc.ServerStreamingServer[workload.X509SVIDResponse]) error {
	if err := s.Send(a.valid); err != nil {
		return err
	}
	select {
	case <-a.flood:
	case <-s.Context().Done():
		return nil
	}
	for s.Send(a.expired) == nil {
		a.sent.Add(1)
	}
	return nil
}

// startLoopingAgent serves a loopingAgent on a unix socket in dir.
func startLoopingAgent(t *testing.T, dir string) (*loopingAgent, string) {
	t.Helper()
	material := startFakeAgent(t, dir) // only for its CA and responses
	a := &loopingAgent{valid: material.valid(t), expired: material.expired(t), flood: make(chan struct{})}
	path := filepath.Join(dir, "looping.sock")
	l, err := net.Listen("unix", path)
	if err != nil {
		t.Fatal(err)
	}
	srv := grpc.NewServer()
	workload.RegisterSpiffeWorkloadAPIServer(srv, a)
	go func() { _ = srv.Serve(l) }()
	t.Cleanup(srv.Stop)
	return a, "unix://" + path
}

// TestAnAgentSendingExpiredMaterialInALoopCannotFloodTheLog: a fake agent
// resends expired material as fast as the stream takes it (the incident:
// 166,339 ERROR lines, 39 MB, in 11 s). The refused-update line passes at
// most its burst plus one a second; the rest are counted, and the count
// is logged. The figures go to the test log.
func TestAnAgentSendingExpiredMaterialInALoopCannotFloodTheLog(t *testing.T) {
	t.Parallel()
	bin := buildBridge(t)
	work := testkit.ShortDir(t)
	agent, addr := startLoopingAgent(t, work)
	bridge := startRunning(t, bin, work, "run", "--log-format", "json", "--admin", "",
		"--config", runConfig(t, work, "flood", addr, ""))
	folderReady(t, filepath.Join(work, "flood"), 1)

	before := len(bridge.stderr.String())
	start := time.Now()
	close(agent.flood)
	// The flood runs this long; nothing below is timed.
	time.Sleep(3 * time.Second)
	r := bridge.stop(t, "flooded bridge")
	elapsed := time.Since(start)
	flood := r.stderr[before:]

	const refusedMsg = "refused Workload API update; keeping the last good one"
	passed, suppressed, lines := 0, 0, logLines(t, flood)
	for _, l := range lines {
		switch {
		case l["msg"] == refusedMsg:
			passed++
		case l["like"] == refusedMsg:
			suppressed += int(l["suppressed"].(float64))
		}
	}
	t.Logf("fake agent: %d expired responses sent in %s; the bridge refused %d updates and wrote %d lines, %d bytes (%d refused-update lines, %d counted as suppressed)",
		agent.sent.Load(), elapsed.Round(time.Millisecond), passed+suppressed, len(lines), len(flood), passed, suppressed)
	if passed+suppressed < 100 {
		t.Fatalf("only %d refused updates: the agent did not flood (the test proves nothing)", passed+suppressed)
	}
	// The bridge's clock runs within the test's elapsed time: its budget
	// is the burst and one line a second of it.
	if bound := 10 + int(elapsed.Seconds()) + 1; passed > bound {
		t.Errorf("%d refused-update lines in %s, want at most %d", passed, elapsed, bound)
	}
	if suppressed == 0 {
		t.Errorf("no count of suppressed lines was logged")
	}
}
