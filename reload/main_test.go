package reload

import (
	"context"
	"fmt"
	"log/slog"
	"os"
	"os/signal"
	"strconv"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	"go.uber.org/goleak"

	"github.com/sds-bridge/sds-bridge/internal/testkit"
)

// helperArg makes the test binary act as a child process for the action
// tests (a process to signal, a command to exec).
const helperArg = "reload-test-helper"

func TestMain(m *testing.M) {
	if len(os.Args) > 1 && os.Args[1] == helperArg {
		os.Exit(runHelper(os.Args[2:]))
	}
	goleak.VerifyTestMain(m)
}

func runHelper(args []string) int {
	if len(args) == 0 {
		fmt.Fprintln(os.Stderr, "helper: no mode")
		return 2
	}
	switch args[0] {
	case "wait-sighup": // <ready file> <got file>
		ch := make(chan os.Signal, 1)
		signal.Notify(ch, syscall.SIGHUP)
		// Ready only once the handler is installed: before that, SIGHUP
		// would kill the process.
		if err := os.WriteFile(args[1], []byte(strconv.Itoa(os.Getpid())), 0o644); err != nil {
			fmt.Fprintln(os.Stderr, err)
			return 2
		}
		select {
		case s := <-ch:
			if err := os.WriteFile(args[2], []byte(s.String()), 0o644); err != nil {
				fmt.Fprintln(os.Stderr, err)
				return 2
			}
			return 0
		case <-time.After(30 * time.Second):
			return 3
		}
	case "dump-env": // <out file>
		var b strings.Builder
		for _, k := range []string{"SDS_BRIDGE_EVENT", "SDS_BRIDGE_DIR", "SDS_BRIDGE_GENERATION", "SDS_BRIDGE_SPIFFE_ID", "SDS_BRIDGE_NOT_AFTER"} {
			fmt.Fprintf(&b, "%s=%s\n", k, os.Getenv(k))
		}
		if err := os.WriteFile(args[1], []byte(b.String()), 0o644); err != nil {
			fmt.Fprintln(os.Stderr, err)
			return 2
		}
		return 0
	case "fail": // <exit code> <stderr line>...
		code, _ := strconv.Atoi(args[1])
		for _, l := range args[2:] {
			fmt.Fprintln(os.Stderr, l)
		}
		return code
	case "sleep":
		time.Sleep(60 * time.Second)
		return 0
	}
	fmt.Fprintln(os.Stderr, "helper: unknown mode", args[0])
	return 2
}

// scriptedAction fails a given number of times, then succeeds, recording
// every call.
type scriptedAction struct {
	name     string
	failures int
	onRun    func(call int)

	mu     sync.Mutex
	calls  int
	events []Event
	log    *[]string
}

func (a *scriptedAction) Name() string { return a.name }

func (a *scriptedAction) Run(ctx context.Context, e Event) error {
	a.mu.Lock()
	a.calls++
	call := a.calls
	a.events = append(a.events, e)
	if a.log != nil {
		*a.log = append(*a.log, a.name)
	}
	a.mu.Unlock()
	if a.onRun != nil {
		a.onRun(call)
	}
	if call <= a.failures {
		return fmt.Errorf("%s: failure %d", a.name, call)
	}
	return nil
}

// newRunner makes a Runner for cfg; unless cfg has a logger, logs go to
// the returned buffer and to the test log on failure.
func newRunner(t testing.TB, cfg Config) (*Runner, *testkit.LogBuffer) {
	t.Helper()
	logs := &testkit.LogBuffer{}
	if cfg.Logger == nil {
		cfg.Logger = slog.New(slog.NewTextHandler(logs, &slog.HandlerOptions{Level: slog.LevelDebug}))
	}
	r, err := New(cfg)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		if t.Failed() {
			t.Logf("reload logs:\n%s", logs.String())
		}
	})
	return r, logs
}

func readFile(t testing.TB, path string) []byte {
	t.Helper()
	b, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	return b
}
