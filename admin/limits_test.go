package admin

import (
	"bufio"
	"context"
	"fmt"
	"io"
	"log/slog"
	"net"
	"net/http"
	"os"
	"os/exec"
	"testing"
	"time"

	"github.com/sds-bridge/sds-bridge/internal/testkit"
	"github.com/sds-bridge/sds-bridge/rotation"
)

// floodRoleEnv makes the test binary an admin-port attacker (see TestMain):
// it opens as many idle connections to the address as it can (at most
// floodAttempts tries), prints how many, and holds them until stdin closes.
const floodRoleEnv = "ADMIN_TEST_FLOOD_ADDR"

const floodAttempts = 2000

func runFloodRole(addr string) int {
	held := testkit.HoldConnections("tcp", addr, floodAttempts)
	fmt.Printf("opened %d\n", len(held))
	_, _ = io.Copy(io.Discard, os.Stdin)
	for _, c := range held {
		c.Close()
	}
	return 0
}

// noSource is a Source before the first update.
type noSource struct{}

func (noSource) Current() *rotation.Update           { return nil }
func (noSource) SinkStatuses() []rotation.SinkStatus { return nil }
func (noSource) Counters() rotation.Counters         { return rotation.Counters{} }

// TestIdleAdminClientsCannotHoldDescriptors: a local client that opens as
// many idle connections to the admin port as it can (2000 tries) holds at
// most admin.max_connections of the bridge's descriptors, and only until
// the header timeout; the rest are closed at once (on Linux the kernel
// holds a connection that has sent nothing, TCP_DEFER_ACCEPT, so the
// bridge holds hardly any). /livez answers again while the attacker still
// holds every connection it opened.
func TestIdleAdminClientsCannotHoldDescriptors(t *testing.T) {
	const maxConns = 8
	logs := &testkit.LogBuffer{}
	s, err := New(Config{Source: noSource{}, MaxConnections: maxConns, HeaderTimeout: 300 * time.Millisecond,
		Logger: slog.New(slog.NewTextHandler(logs, nil))})
	if err != nil {
		t.Fatal(err)
	}
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	served := make(chan error, 1)
	go func() { served <- s.Serve(ctx, l) }()
	t.Cleanup(func() {
		cancel()
		if err := <-served; err != nil {
			t.Errorf("Serve: %v", err)
		}
	})
	url := "http://" + l.Addr().String() + "/livez"
	client := &http.Client{Transport: &http.Transport{DisableKeepAlives: true}, Timeout: time.Second}
	live := func() bool {
		resp, err := client.Get(url)
		if err != nil {
			return false
		}
		resp.Body.Close()
		return resp.StatusCode == http.StatusOK
	}
	testkit.Eventually(t, "/livez", live)
	base := testkit.OpenFDs(t, os.Getpid())

	self, err := os.Executable()
	if err != nil {
		t.Fatal(err)
	}
	cmd := exec.Command(self)
	cmd.Env = append(os.Environ(), floodRoleEnv+"="+l.Addr().String(), "GORACE=atexit_sleep_ms=0")
	stdin, err := cmd.StdinPipe()
	if err != nil {
		t.Fatal(err)
	}
	stdout, err := cmd.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	defer func() {
		stdin.Close()
		_ = cmd.Wait()
	}()
	var opened int
	line, err := bufio.NewReader(stdout).ReadString('\n')
	if _, serr := fmt.Sscanf(line, "opened %d", &opened); err != nil || serr != nil {
		t.Fatalf("attacker: %q %v %v", line, err, serr)
	}
	if opened < 10*maxConns {
		t.Fatalf("the attacker opened only %d connections: the test would prove nothing", opened)
	}
	held := testkit.OpenFDs(t, os.Getpid()) - base
	t.Logf("the attacker holds %d connections; the admin server holds %d more descriptors", opened, held)
	// A descriptor per accepted connection, plus a few the runtime opens.
	if held > maxConns+8 {
		t.Errorf("the admin server holds %d more descriptors, want at most %d", held, maxConns+8)
	}
	start := time.Now()
	testkit.Eventually(t, "/livez while the attacker holds its connections", live)
	t.Logf("/livez answered %s into the flood", time.Since(start).Round(time.Millisecond))
	// What stays is ours: the attacker's stdin and stdout pipes and its
	// pidfd.
	testkit.Eventually(t, "the idle connections closed", func() bool { return testkit.OpenFDs(t, os.Getpid())-base <= 4 })
	t.Logf("log:\n%s", logs)
}
