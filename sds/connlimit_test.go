package sds

import (
	"bufio"
	"errors"
	"fmt"
	"io"
	"net"
	"os"
	"strings"
	"syscall"
	"testing"
	"time"

	discoveryv3 "github.com/envoyproxy/go-control-plane/envoy/service/discovery/v3"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	"github.com/sds-bridge/sds-bridge/internal/testkit"
)

// floodRoleEnv makes the test binary an attacker (see TestMain): it opens
// as many connections to the socket named by the variable as it can (at
// most floodAttempts tries), prints how many, and holds them until its
// stdin closes.
const floodRoleEnv = "SDS_TEST_FLOOD_SOCKET"

const floodAttempts = 2000

func runFloodRole(socket string) int {
	held := testkit.HoldConnections("unix", socket, floodAttempts)
	fmt.Printf("opened %d failed %d\n", len(held), floodAttempts-len(held))
	_, _ = io.Copy(io.Discard, os.Stdin)
	for _, c := range held {
		c.Close()
	}
	return 0
}

// startFlood runs the attacker as uid:gid and returns once it holds what
// it could open; closing stdin (the returned stop) ends it.
func startFlood(t *testing.T, socket string, uid, gid uint32) (opened int, stop func()) {
	t.Helper()
	cmd := testkit.SelfAs(t, uid, gid, floodRoleEnv+"="+socket)
	stdin, err := cmd.StdinPipe()
	if err != nil {
		t.Fatal(err)
	}
	stdout, err := cmd.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	cmd.Stderr = os.Stderr
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	stop = func() {
		stdin.Close()
		_ = cmd.Wait()
	}
	t.Cleanup(stop)
	line, err := bufio.NewReader(stdout).ReadString('\n')
	var failed int
	if _, serr := fmt.Sscanf(line, "opened %d failed %d", &opened, &failed); err != nil || serr != nil {
		t.Fatalf("attacker: %q, %v %v", line, err, serr)
	}
	t.Logf("attacker (uid %d) opened %d connections, %d dials failed", uid, opened, failed)
	return opened, stop
}

// TestARefusedPeerCannotExhaustDescriptorsAndRotationGoesOn: a uid the
// allow-lists refuse, opening as many connections as it can (2000 tries),
// holds at most its share of sds.max_connections of the bridge's
// descriptors; the rest are closed at once and counted. Meanwhile an
// allowed client is served and receives a rotation, and the connections
// the refused peer did get are closed after the grace, although it keeps
// its end open.
func TestARefusedPeerCannotExhaustDescriptorsAndRotationGoesOn(t *testing.T) {
	if os.Geteuid() != 0 {
		t.Fatal("this test runs the attacker as another uid and must run as root (as CI does)")
	}
	const nobody = 65534
	logger, logs := testLogger(t)
	const grace = 2 * time.Second
	s := startServer(t, Config{
		SocketPath: openSocketPath(t),
		// Everyone may connect: the cap and the peer check are the only
		// gates under test.
		SocketMode:       0o666,
		RefusedPeerGrace: grace,
		Logger:           logger,
	})
	r := &rotator{t: t, ca: newCA(t, exampleTD), id: webID}
	if err := s.Apply(t.Context(), r.next()); err != nil {
		t.Fatal(err)
	}
	base := testkit.OpenFDs(t, os.Getpid())

	opened, _ := startFlood(t, s.cfg.SocketPath, nobody, nobody)
	floodStart := time.Now()
	if opened < 2*DefaultMaxConnections {
		t.Fatalf("the attacker opened only %d connections: the test would prove nothing", opened)
	}
	share := int64(refusedShare(DefaultMaxConnections))
	testkit.Eventually(t, "the flood accepted or closed", func() bool {
		st := s.Stats()
		return st.ConnectionsOverCap+st.ConnectionsOpen >= int64(opened) || time.Since(floodStart) > grace/2
	})
	held := testkit.OpenFDs(t, os.Getpid()) - base
	st := s.Stats()
	t.Logf("while the attacker holds %d connections: the bridge holds %d more descriptors, %d connections open, %d closed over the cap",
		opened, held, st.ConnectionsOpen, st.ConnectionsOverCap)
	if st.ConnectionsOpen > share {
		t.Errorf("refused peer holds %d connections, want at most its share %d", st.ConnectionsOpen, share)
	}
	// A descriptor per held connection, plus a few the runtime opens.
	if held > int(share)+8 {
		t.Errorf("the bridge holds %d more descriptors during the flood, want at most %d", held, share+8)
	}
	if st.ConnectionsOverCap < int64(opened)-share {
		t.Errorf("%d connections closed over the cap, want at least %d", st.ConnectionsOverCap, int64(opened)-share)
	}

	// An allowed client (this process: root) is served and rotates.
	start := time.Now()
	c := newEnvoyClient(t, dial(t, s.cfg.SocketPath), []string{"default"}, "")
	c.ack(c.recv())
	if err := s.Apply(t.Context(), r.next()); err != nil {
		t.Fatal(err)
	}
	if got := c.recv().GetVersionInfo(); got == c.version {
		t.Errorf("no rotation: version stays %s", got)
	}
	t.Logf("an allowed client connected and received a rotation in %s during the flood", time.Since(start).Round(time.Microsecond))

	// The refused connections go after the grace; the attacker still
	// holds its ends.
	testkit.Eventually(t, "refused connections closed after the grace", func() bool {
		l := s.listener.Load()
		return l.OpenLimited.Load() == 0
	})
	t.Logf("refused connections all closed %s after the flood began", time.Since(floodStart).Round(time.Millisecond))
	if !containsAll(logs.String(), "connections closed at once", "sds.max_connections") {
		t.Errorf("the over-cap closing was not logged:\n%s", logs)
	}
}

// TestARefusedPeersConnectionIsClosedAfterItsAnswer: a refused peer gets
// its PermissionDenied answer, then the bridge closes the connection after
// the grace, so idle refused connections cannot pile up. Any user can run
// it: the allow-list names another uid, so this process is the refused
// peer.
func TestARefusedPeersConnectionIsClosedAfterItsAnswer(t *testing.T) {
	s := startServer(t, Config{AllowedUIDs: []int{os.Geteuid() + 1}, RefusedPeerGrace: 300 * time.Millisecond})
	if err := s.Apply(t.Context(), (&rotator{t: t, ca: newCA(t, exampleTD), id: webID}).next()); err != nil {
		t.Fatal(err)
	}
	_, err := secretClient(t, s.cfg.SocketPath).FetchSecrets(t.Context(), &discoveryv3.DiscoveryRequest{})
	if status.Code(err) != codes.PermissionDenied {
		t.Fatalf("FetchSecrets = %v, want PermissionDenied", err)
	}
	// A peer that never sends anything is closed too.
	raw, err := net.Dial("unix", s.cfg.SocketPath)
	if err != nil {
		t.Fatal(err)
	}
	defer raw.Close()
	if err := raw.SetReadDeadline(time.Now().Add(testkit.Timeout)); err != nil {
		t.Fatal(err)
	}
	// The server speaks first (its HTTP/2 settings); then EOF.
	if _, err := io.Copy(io.Discard, raw); err != nil {
		t.Fatalf("the refused connection was not closed by the bridge: %v", err)
	}
	testkit.Eventually(t, "no connection open", func() bool { return s.Stats().ConnectionsOpen == 0 })
}

// TestConnectionsOverTheCapAreClosedAtOnceAndCounted: with MaxConnections
// reached, a further connection, even of an allowed peer, is closed at
// once and counted; once one closes, a client is served again.
func TestConnectionsOverTheCapAreClosedAtOnceAndCounted(t *testing.T) {
	const maxConns = 4
	s := startServer(t, Config{MaxConnections: maxConns})
	if err := s.Apply(t.Context(), (&rotator{t: t, ca: newCA(t, exampleTD), id: webID}).next()); err != nil {
		t.Fatal(err)
	}
	// serve's start-up probe may be accepted only now, after it was closed:
	// dial until the server holds maxConns, whichever of ours it took.
	var held []net.Conn
	defer func() {
		for _, c := range held {
			c.Close()
		}
	}()
	testkit.Eventually(t, "the cap reached", func() bool {
		if s.Stats().ConnectionsOpen == maxConns {
			return true
		}
		if len(held) < 2*maxConns {
			c, err := net.Dial("unix", s.cfg.SocketPath)
			if err == nil {
				held = append(held, c)
			}
		}
		return false
	})
	base := s.Stats().ConnectionsOverCap
	over, err := net.Dial("unix", s.cfg.SocketPath)
	if err != nil {
		t.Fatal(err)
	}
	defer over.Close()
	if err := over.SetReadDeadline(time.Now().Add(testkit.Timeout)); err != nil {
		t.Fatal(err)
	}
	if n, err := over.Read(make([]byte, 1)); n != 0 || !errors.Is(err, io.EOF) && !errors.Is(err, syscall.ECONNRESET) {
		t.Fatalf("a connection over the cap: read %d, %v; want it closed at once", n, err)
	}
	if got := s.Stats().ConnectionsOverCap - base; got != 1 {
		t.Errorf("ConnectionsOverCap rose by %d, want 1", got)
	}
	for _, c := range held {
		c.Close()
	}
	held = nil
	testkit.Eventually(t, "a place free", func() bool { return s.Stats().ConnectionsOpen < maxConns })
	if _, err := secretClient(t, s.cfg.SocketPath).FetchSecrets(t.Context(), &discoveryv3.DiscoveryRequest{}); err != nil {
		t.Fatalf("FetchSecrets below the cap: %v", err)
	}
}

func containsAll(s string, subs ...string) bool {
	for _, sub := range subs {
		if !strings.Contains(s, sub) {
			return false
		}
	}
	return true
}
