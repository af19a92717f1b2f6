//go:build e2e

package e2e

import (
	"context"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/spiffe/go-spiffe/v2/bundle/x509bundle"
	"github.com/spiffe/go-spiffe/v2/spiffeid"
)

// spireVersion is the SPIRE release the suite runs; e2e/tools/go.mod pins
// the same version. Only this exact version is served by the module proxy.
const spireVersion = "v1.13.3"

// trustDomain is the trust domain of every test's SPIRE deployment.
const trustDomain = "example.org"

// x509SVIDTTL is the entries' X.509-SVID TTL in seconds. SPIRE back-dates
// NotBefore by 10 s and the agent renews at half the lifetime, so a new SVID
// arrives about every 5 s.
const x509SVIDTTL = 20

// spireBinaries are the built spire-server and spire-agent.
type spireBinaries struct {
	Server string
	Agent  string
}

// spireCacheDir is where the binaries are kept between runs, keyed by
// version. CI works in a fresh clone each time, so a cache inside the repo
// would always be empty; the user's cache dir survives.
func spireCacheDir() (string, error) {
	base, err := os.UserCacheDir()
	if err != nil {
		return "", fmt.Errorf("e2e: user cache dir: %w", err)
	}
	return filepath.Join(base, "sds-bridge-e2e", "spire-"+spireVersion), nil
}

// ensureSPIRE returns the cached SPIRE binaries, building them first when
// they are missing. toolsDir is the e2e/tools module that pins the version.
func ensureSPIRE(toolsDir string) (spireBinaries, error) {
	dir, err := spireCacheDir()
	if err != nil {
		return spireBinaries{}, err
	}
	bins := spireBinaries{Server: filepath.Join(dir, "spire-server"), Agent: filepath.Join(dir, "spire-agent")}
	if isExecutable(bins.Server) && isExecutable(bins.Agent) {
		return bins, nil
	}
	if err := os.MkdirAll(dir, 0o755); err != nil {
		return spireBinaries{}, fmt.Errorf("e2e: spire cache dir: %w", err)
	}
	// Build into a private dir next to the cache and rename into place, so
	// that two runs at once never see a half-written binary.
	tmp, err := os.MkdirTemp(filepath.Dir(dir), "build-")
	if err != nil {
		return spireBinaries{}, fmt.Errorf("e2e: spire build dir: %w", err)
	}
	defer os.RemoveAll(tmp)
	fmt.Fprintf(os.Stderr, "e2e: building SPIRE %s into %s (a cold build takes ~15 min and ~5 GB of Go caches; warm ~seconds)\n", spireVersion, dir)
	start := time.Now()
	cmd := exec.Command(goTool(), "build", "-ldflags=-s -w", "-o", tmp+string(filepath.Separator),
		"github.com/spiffe/spire/cmd/spire-agent", "github.com/spiffe/spire/cmd/spire-server")
	cmd.Dir = toolsDir
	// Keep the tools module to itself: a GOFLAGS=-mod=… or a go.work of the
	// caller must not reach its (huge) dependency graph.
	cmd.Env = append(os.Environ(), "GOWORK=off", "GOFLAGS=-buildvcs=false")
	out, err := cmd.CombinedOutput()
	if err != nil {
		return spireBinaries{}, fmt.Errorf("e2e: build SPIRE %s in %s: %w\n%s", spireVersion, toolsDir, err, out)
	}
	for _, name := range []string{"spire-server", "spire-agent"} {
		if err := os.Rename(filepath.Join(tmp, name), filepath.Join(dir, name)); err != nil {
			return spireBinaries{}, fmt.Errorf("e2e: install %s: %w", name, err)
		}
	}
	fmt.Fprintf(os.Stderr, "e2e: built SPIRE %s in %s\n", spireVersion, time.Since(start).Round(time.Second))
	return bins, nil
}

func isExecutable(path string) bool {
	fi, err := os.Stat(path)
	return err == nil && fi.Mode().IsRegular() && fi.Mode()&0o111 != 0
}

// goTool is the go command of the toolchain running the tests.
func goTool() string {
	if p, err := exec.LookPath("go"); err == nil {
		return p
	}
	return filepath.Join(os.Getenv("GOROOT"), "bin", "go")
}

// spireEntry is one registration entry: SPIFFE ID path and one selector.
type spireEntry struct {
	Path     string // "/backend"
	Selector string // "unix:uid:0", "unix:user:postgres"
	// Hint, if set, is the entry's Workload API hint (entry create -hint),
	// which tells two SVIDs of one workload apart.
	Hint string
}

// spire is a running SPIRE server and agent on loopback for one test.
type spire struct {
	TrustDomain spiffeid.TrustDomain
	Dir         string
	AgentSocket string
	bins        spireBinaries
	serverSock  string
	agentConf   string
	agent       *proc
	agentRuns   int
	waitFetch   bool // an entry matches the suite's own uid
}

// startSPIRE starts a server and an agent in a subdirectory of workDir,
// registers entries and waits until the agent serves an X.509-SVID (when
// one of the entries matches the suite's own uid; otherwise until the agent
// is healthy). Both are stopped by PID when the test ends.
func startSPIRE(t testing.TB, workDir string, entries ...spireEntry) *spire {
	t.Helper()
	requireSPIRE(t)
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()

	dir := filepath.Join(workDir, "spire")
	mkdirOwned(t, dir, 0o755, nil)
	s := &spire{
		TrustDomain: spiffeid.RequireTrustDomainFromString(trustDomain),
		Dir:         dir,
		AgentSocket: filepath.Join(dir, "agent.sock"),
		bins:        spireBins,
		serverSock:  filepath.Join(dir, "server.sock"),
		agentConf:   filepath.Join(dir, "agent.conf"),
	}
	if len(s.AgentSocket) > 100 {
		t.Fatalf("e2e: agent socket path too long (%d bytes): %s", len(s.AgentSocket), s.AgentSocket)
	}
	port := freePort(t)
	serverConf := filepath.Join(dir, "server.conf")
	writeFile(t, serverConf, []byte(fmt.Sprintf(`server {
	bind_address = "127.0.0.1"
	bind_port = "%d"
	socket_path = %q
	trust_domain = %q
	data_dir = %q
	log_level = "INFO"
	ca_ttl = "1h"
	default_x509_svid_ttl = "1m"
	agent_ttl = "10m"
	experimental {
		cache_reload_interval = "1s"
	}
}
plugins {
	DataStore "sql" {
		plugin_data {
			database_type = "sqlite3"
			connection_string = %q
		}
	}
	NodeAttestor "join_token" {
		plugin_data {}
	}
	KeyManager "memory" {
		plugin_data {}
	}
}
`, port, s.serverSock, trustDomain, filepath.Join(dir, "server-data"), filepath.Join(dir, "server-data", "datastore.sqlite3"))), 0o644, nil)

	// The agent keeps its key on disk so that a restarted agent reuses its
	// own SVID (a join token works only once).
	agentData := filepath.Join(dir, "agent-data")
	writeFile(t, s.agentConf, []byte(fmt.Sprintf(`agent {
	data_dir = %q
	log_level = "INFO"
	server_address = "127.0.0.1"
	server_port = "%d"
	socket_path = %q
	trust_bundle_path = %q
	trust_domain = %q
	experimental {
		sync_interval = "1s"
	}
}
plugins {
	NodeAttestor "join_token" {
		plugin_data {}
	}
	KeyManager "disk" {
		plugin_data {
			directory = %q
		}
	}
	WorkloadAttestor "unix" {
		plugin_data {}
	}
}
`, agentData, port, s.AgentSocket, filepath.Join(dir, "bundle.pem"), trustDomain, agentData)), 0o644, nil)

	server := startProc(t, cmdSpec{Name: "spire-server", Path: s.bins.Server, Args: []string{"run", "-config", serverConf}, Dir: dir},
		filepath.Join(dir, "server.log"))
	if err := poll(ctx, "spire-server healthy", 200*time.Millisecond, func() error {
		if server.Exited() {
			return fmt.Errorf("spire-server exited with %d", server.ExitCode())
		}
		out, code, err := runCmd(ctx, s.serverCmd("healthcheck"))
		if err != nil || code != 0 {
			return fmt.Errorf("healthcheck: %d %v %s", code, err, oneLine(out))
		}
		return nil
	}); err != nil {
		t.Fatal(err)
	}
	if server.Exited() {
		t.Fatalf("e2e: spire-server exited")
	}

	bundle := mustRun(t, ctx, s.serverCmd("bundle", "show"))
	writeFile(t, filepath.Join(dir, "bundle.pem"), []byte(bundle), 0o644, nil)

	tokenOut := mustRun(t, ctx, s.serverCmd("token", "generate", "-spiffeID", s.agentID().String(), "-ttl", "600"))
	token, ok := strings.CutPrefix(strings.TrimSpace(tokenOut), "Token: ")
	if !ok || token == "" {
		t.Fatalf("e2e: no join token in %q", tokenOut)
	}
	for _, e := range entries {
		args := []string{"entry", "create",
			"-parentID", s.agentID().String(),
			"-spiffeID", s.ID(e.Path).String(),
			"-selector", e.Selector,
			"-x509SVIDTTL", strconv.Itoa(x509SVIDTTL)}
		if e.Hint != "" {
			args = append(args, "-hint", e.Hint)
		}
		mustRun(t, ctx, s.serverCmd(args...))
		if e.Selector == fmt.Sprintf("unix:uid:%d", os.Getuid()) {
			s.waitFetch = true
		}
	}
	s.StartAgent(t, token)
	return s
}

func (s *spire) agentID() spiffeid.ID { return spiffeid.RequireFromPath(s.TrustDomain, "/agent") }

// ID is the SPIFFE ID of an entry path in the test's trust domain.
func (s *spire) ID(path string) spiffeid.ID { return spiffeid.RequireFromPath(s.TrustDomain, path) }

// WorkloadAPIAddr is the agent's Workload API address for go-spiffe and the bridge.
func (s *spire) WorkloadAPIAddr() string { return "unix://" + s.AgentSocket }

func (s *spire) serverCmd(args ...string) cmdSpec {
	return cmdSpec{Name: "spire-server " + args[0], Path: s.bins.Server, Args: append(args, "-socketPath", s.serverSock), Dir: s.Dir}
}

func (s *spire) agentCmd(args ...string) cmdSpec {
	return cmdSpec{Name: "spire-agent " + strings.Join(args, " "), Path: s.bins.Agent, Args: append(args, "-socketPath", s.AgentSocket), Dir: s.Dir}
}

// StartAgent starts the agent (again). The first start attests with the
// join token; a restart reuses the SVID and key in the agent's data dir and
// passes an empty token. It waits until the agent serves an X.509-SVID.
func (s *spire) StartAgent(t testing.TB, joinToken string) {
	t.Helper()
	if s.agent != nil && !s.agent.Exited() {
		t.Fatalf("e2e: spire-agent is still running (pid %d)", s.agent.PID())
	}
	args := []string{"run", "-config", s.agentConf}
	if joinToken != "" {
		args = append(args, "-joinToken", joinToken)
	}
	s.agentRuns++
	// A socket left by a killed agent would answer nothing; the agent
	// replaces it, but removing it first keeps the readiness poll honest.
	_ = os.Remove(s.AgentSocket)
	s.agent = startProc(t, cmdSpec{Name: fmt.Sprintf("spire-agent#%d", s.agentRuns), Path: s.bins.Agent, Args: args, Dir: s.Dir},
		filepath.Join(s.Dir, fmt.Sprintf("agent-%d.log", s.agentRuns)))
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	check := s.agentCmd("healthcheck")
	what := "spire-agent healthy"
	if s.waitFetch {
		check, what = s.agentCmd("api", "fetch", "x509", "-silent"), "spire-agent serves an X.509-SVID"
	}
	agent := s.agent
	if err := poll(ctx, what, 200*time.Millisecond, func() error {
		if agent.Exited() {
			return fmt.Errorf("spire-agent exited with %d", agent.ExitCode())
		}
		out, code, err := runCmd(ctx, check)
		if err != nil || code != 0 {
			return fmt.Errorf("%d %v %s", code, err, oneLine(out))
		}
		return nil
	}); err != nil {
		t.Fatal(err)
	}
}

// KillAgent ends the agent with SIGKILL, as a crash or an OOM kill would.
func (s *spire) KillAgent(t testing.TB) {
	t.Helper()
	if s.agent == nil {
		t.Fatal("e2e: no spire-agent to kill")
	}
	s.agent.Kill()
}

// Bundle is the trust domain's X.509 bundle as the server reports it.
func (s *spire) Bundle(t testing.TB) *x509bundle.Bundle {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	out := mustRun(t, ctx, s.serverCmd("bundle", "show"))
	b, err := x509bundle.Parse(s.TrustDomain, []byte(out))
	if err != nil {
		t.Fatalf("e2e: parse spire bundle: %v", err)
	}
	return b
}
