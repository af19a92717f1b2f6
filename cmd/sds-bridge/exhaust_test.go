package main

import (
	"bufio"
	"context"
	"fmt"
	"io"
	"net"
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"testing"
	"time"

	discoveryv3 "github.com/envoyproxy/go-control-plane/envoy/service/discovery/v3"
	secretv3 "github.com/envoyproxy/go-control-plane/envoy/service/secret/v3"
	"github.com/envoyproxy/go-control-plane/pkg/resource/v3"
	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials/insecure"

	"github.com/sds-bridge/sds-bridge/filesink"
	"github.com/sds-bridge/sds-bridge/internal/testkit"
)

// floodRoleEnv makes the test binary an attacker (see TestMain): for each
// "network:address" in the comma-separated variable it opens as many
// connections as it can (floodAttempts tries), prints "opened N", and
// holds them all until its stdin closes.
const floodRoleEnv = "SDS_BRIDGE_TEST_FLOOD"

const floodAttempts = 2000

func runFloodRole(targets string) int {
	var held []net.Conn
	for _, target := range strings.Split(targets, ",") {
		network, addr, _ := strings.Cut(target, ":")
		conns := testkit.HoldConnections(network, addr, floodAttempts)
		held = append(held, conns...)
		fmt.Printf("opened %d %s\n", len(conns), target)
	}
	_, _ = io.Copy(io.Discard, os.Stdin)
	for _, c := range held {
		c.Close()
	}
	return 0
}

var bridgeAdminAddr = regexp.MustCompile(`msg="admin endpoint: listening" addr=(\S+)`)

// TestAFloodOfRefusedAndAdminConnectionsDoesNotStarveRotation runs the
// real binary (dev, a rotation every second) with an SDS socket its group
// may reach and an allow-list of root only. A uid in that group but not
// allowed opens as many connections as it can to the SDS socket and to the
// admin port (2000 tries each) and holds them: the bridge holds at most
// the refused peers' share of sds.max_connections plus
// admin.max_connections of descriptors, the credential folder keeps
// rotating, and an allowed SDS client still receives a rotation.
func TestAFloodOfRefusedAndAdminConnectionsDoesNotStarveRotation(t *testing.T) {
	if os.Geteuid() != 0 {
		t.Fatal("this test runs the attacker as another uid and must run as root (as CI does)")
	}
	bin := buildBridge(t)
	work := testkit.ShortDir(t)
	if err := os.Chmod(work, 0o755); err != nil { // the attacker must reach the socket
		t.Fatal(err)
	}
	dir := filepath.Join(work, "certs")
	socket := filepath.Join(work, "sds.sock")
	cfgPath := filepath.Join(work, "bridge.yaml")
	if err := os.WriteFile(cfgPath, []byte("sds:\n  socket_mode: \"0660\"\n  allowed_uids: [0]\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	bridge := startBridgeProc(t, bin, work, "dev", "--config", cfgPath, "--svid-ttl", "2s", "--dir", dir,
		"--sds-socket", socket, "--admin", "127.0.0.1:0")
	var adminAddr string
	testkit.Eventually(t, "the bridge serving", func() bool {
		m := bridgeAdminAddr.FindStringSubmatch(bridge.stderr.String())
		if m == nil || !strings.Contains(bridge.stderr.String(), "Envoy SDS: listening") {
			return false
		}
		adminAddr = m[1]
		f, err := filesink.Inspect(filesink.InspectConfig{Dir: dir})
		return err == nil && f.Generation >= 1
	})
	pid := bridge.cmd.Process.Pid
	base := testkit.OpenFDs(t, pid)

	// Group 0 may connect (socket mode 0660, owned by root); uid 65534 is
	// not on the allow-list.
	attacker := testkit.SelfAs(t, 65534, 0, floodRoleEnv+"=unix:"+socket+",tcp:"+adminAddr)
	attacker.Stderr = os.Stderr
	stdin, err := attacker.StdinPipe()
	if err != nil {
		t.Fatal(err)
	}
	stdout, err := attacker.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	if err := attacker.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		stdin.Close()
		_ = attacker.Wait()
	})
	lines := bufio.NewReader(stdout)
	opened := 0
	for range 2 {
		line, err := lines.ReadString('\n')
		var n int
		var target string
		if _, serr := fmt.Sscanf(line, "opened %d %s", &n, &target); err != nil || serr != nil {
			t.Fatalf("attacker: %q %v %v", line, err, serr)
		}
		t.Logf("the attacker (uid 65534) holds %d connections to %s", n, target)
		if n < 500 {
			t.Fatalf("the attacker opened only %d connections to %s: the test would prove nothing", n, target)
		}
		opened += n
	}
	held := testkit.OpenFDs(t, pid) - base
	t.Logf("while the attacker holds %d connections, the bridge holds %d more descriptors (%d in all)", opened, held, base+held)
	// Refused peers' share of the SDS cap (128/8) and the admin cap (64),
	// plus a few the runtime opens.
	if want := 128/8 + 64 + 16; held > want {
		t.Errorf("the bridge holds %d more descriptors during the flood, want at most %d", held, want)
	}

	// The folder keeps rotating.
	m, err := filesink.Inspect(filesink.InspectConfig{Dir: dir})
	if err != nil {
		t.Fatal(err)
	}
	start := time.Now()
	testkit.Eventually(t, "two more generations in the folder", func() bool {
		f, err := filesink.Inspect(filesink.InspectConfig{Dir: dir})
		return err == nil && f.Generation >= m.Generation+2
	})
	t.Logf("the folder went from generation %d two generations on in %s during the flood", m.Generation, time.Since(start).Round(time.Millisecond))

	// An allowed SDS client (root) receives a rotation.
	start = time.Now()
	conn, err := grpc.NewClient("unix://"+socket, grpc.WithTransportCredentials(insecure.NewCredentials()))
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	ctx, cancel := context.WithTimeout(t.Context(), testkit.Timeout)
	defer cancel()
	stream, err := secretv3.NewSecretDiscoveryServiceClient(conn).StreamSecrets(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if err := stream.Send(&discoveryv3.DiscoveryRequest{ResourceNames: []string{"default"}, TypeUrl: resource.SecretType}); err != nil {
		t.Fatal(err)
	}
	first, err := stream.Recv()
	if err != nil {
		t.Fatalf("allowed client during the flood: %v", err)
	}
	connected := time.Since(start)
	if err := stream.Send(&discoveryv3.DiscoveryRequest{ResourceNames: []string{"default"}, TypeUrl: resource.SecretType,
		VersionInfo: first.GetVersionInfo(), ResponseNonce: first.GetNonce()}); err != nil {
		t.Fatal(err)
	}
	next, err := stream.Recv()
	if err != nil {
		t.Fatalf("allowed client during the flood: %v", err)
	}
	if next.GetVersionInfo() == first.GetVersionInfo() {
		t.Errorf("no rotation: version stays %s", next.GetVersionInfo())
	}
	t.Logf("an allowed SDS client got its secrets %s after dialing and a rotation %s after dialing (SVIDs rotate every 1 s)",
		connected.Round(time.Microsecond), time.Since(start).Round(time.Millisecond))
	if !strings.Contains(bridge.stderr.String(), "sds.max_connections") || !strings.Contains(bridge.stderr.String(), "admin.max_connections") {
		t.Errorf("the closing over the caps was not logged")
	}
}
