package sds

import (
	"bytes"
	"fmt"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"testing"

	corev3 "github.com/envoyproxy/go-control-plane/envoy/config/core/v3"
	discoveryv3 "github.com/envoyproxy/go-control-plane/envoy/service/discovery/v3"
	secretv3 "github.com/envoyproxy/go-control-plane/envoy/service/secret/v3"
	"github.com/envoyproxy/go-control-plane/pkg/resource/v3"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials/insecure"
	"google.golang.org/grpc/status"

	"github.com/sds-bridge/sds-bridge/internal/testkit"
)

// clientRoleEnv makes the test binary an SDS client (see TestMain): it
// fetches from the socket named by the variable, opens a stream, and
// prints what the server answered, one line per RPC.
const clientRoleEnv = "SDS_TEST_CLIENT_SOCKET"

func runClientRole(socket string) int {
	conn, err := grpc.NewClient("unix://"+socket, grpc.WithTransportCredentials(insecure.NewCredentials()))
	if err != nil {
		fmt.Println("dial:", err)
		return 2
	}
	defer conn.Close()
	ctx, cancel := contextWithTestTimeout()
	defer cancel()
	client := secretv3.NewSecretDiscoveryServiceClient(conn)
	fmt.Printf("uid %d gid %d\n", os.Getuid(), os.Getgid())

	resp, err := client.FetchSecrets(ctx, &discoveryv3.DiscoveryRequest{ResourceNames: []string{"default"}})
	fmt.Printf("fetch: %s: %d secrets: %s\n", status.Code(err), len(resp.GetResources()), status.Convert(err).Message())

	stream, err := client.StreamSecrets(ctx)
	if err == nil {
		// Send may already see the stream ended (io.EOF); Recv tells why.
		_ = stream.Send(&discoveryv3.DiscoveryRequest{
			Node: &corev3.Node{Id: "other-uid"}, ResourceNames: []string{"default"}, TypeUrl: resource.SecretType,
		})
	}
	n := 0
	if err == nil {
		var r *discoveryv3.DiscoveryResponse
		r, err = stream.Recv()
		n = len(r.GetResources())
	}
	fmt.Printf("stream: %s: %d secrets: %s\n", status.Code(err), n, status.Convert(err).Message())
	return 0
}

// runAs runs the test binary as the client role under uid:gid and returns
// its output.
func runAs(t *testing.T, socket string, uid, gid uint32) (out string, pid int) {
	t.Helper()
	var stdout, stderr bytes.Buffer
	cmd := testkit.SelfAs(t, uid, gid, clientRoleEnv+"="+socket)
	cmd.Stdout, cmd.Stderr = &stdout, &stderr
	if err := cmd.Run(); err != nil {
		t.Fatalf("client as %d:%d: %v\nstdout:\n%s\nstderr:\n%s", uid, gid, err, &stdout, &stderr)
	}
	return stdout.String(), cmd.Process.Pid
}

// openSocketPath is a socket path in a directory every user may enter.
func openSocketPath(t *testing.T) string {
	t.Helper()
	path := socketPath(t)
	if err := os.Chmod(filepath.Dir(path), 0o755); err != nil {
		t.Fatal(err)
	}
	return path
}

func TestPeerOfAnotherUID(t *testing.T) {
	if os.Geteuid() != 0 {
		// Switching to another uid needs root; the in-process test below
		// covers the check itself for any user.
		t.Fatal("this test runs the client as another uid and must run as root (as CI does)")
	}
	const nobody = 65534
	tests := []struct {
		name                     string
		allowedUIDs, allowedGIDs []int
		uid, gid                 uint32
		expectCode               codes.Code
	}{
		{name: "default: another uid is refused", uid: nobody, gid: nobody, expectCode: codes.PermissionDenied},
		{name: "uid listed", allowedUIDs: []int{0, nobody}, uid: nobody, gid: nobody, expectCode: codes.OK},
		{name: "gid listed", allowedUIDs: []int{0}, allowedGIDs: []int{nobody}, uid: nobody - 1, gid: nobody, expectCode: codes.OK},
		{name: "neither listed", allowedUIDs: []int{0, 1000}, allowedGIDs: []int{1000}, uid: nobody, gid: nobody, expectCode: codes.PermissionDenied},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			logger, logs := testLogger(t)
			s := startServer(t, Config{
				SocketPath: openSocketPath(t),
				// The mode lets everyone connect, so the peer check is
				// the only gate under test.
				SocketMode:  0o666,
				AllowedUIDs: tt.allowedUIDs,
				AllowedGIDs: tt.allowedGIDs,
				Logger:      logger,
			})
			if err := s.Apply(t.Context(), (&rotator{t: t, ca: newCA(t, exampleTD), id: webID}).next()); err != nil {
				t.Fatal(err)
			}

			out, pid := runAs(t, s.cfg.SocketPath, tt.uid, tt.gid)
			if want := fmt.Sprintf("uid %d gid %d\n", tt.uid, tt.gid); !strings.HasPrefix(out, want) {
				t.Fatalf("client did not run as %d:%d:\n%s", tt.uid, tt.gid, out)
			}
			if tt.expectCode == codes.OK {
				if !strings.Contains(out, "fetch: OK: 1 secrets") || !strings.Contains(out, "stream: OK: 1 secrets") {
					t.Errorf("allowed client was not served:\n%s", out)
				}
				if n := s.Stats().RefusedPeers; n != 0 {
					t.Errorf("RefusedPeers = %d, want 0", n)
				}
				return
			}
			msg := fmt.Sprintf("peer uid %d gid %d is not allowed to fetch secrets from this socket", tt.uid, tt.gid)
			for _, rpc := range []string{"fetch", "stream"} {
				if want := rpc + ": PermissionDenied: 0 secrets: " + msg + "\n"; !strings.Contains(out, want) {
					t.Errorf("client output lacks %q:\n%s", want, out)
				}
			}
			if n := s.Stats().RefusedPeers; n != 1 {
				t.Errorf("RefusedPeers = %d, want 1 (one connection)", n)
			}
			l := logs.String()
			if want := fmt.Sprintf("uid=%d gid=%d pid=%d", tt.uid, tt.gid, pid); !strings.Contains(l, "refused connection") || !strings.Contains(l, want) {
				t.Errorf("no refusal logged with %s:\n%s", want, l)
			}
			if strings.Contains(l, "PRIVATE KEY") || strings.Contains(l, "CERTIFICATE") {
				t.Errorf("the logs hold secret material:\n%s", l)
			}
			// The server's own uid is still served.
			if _, err := secretClient(t, s.cfg.SocketPath).FetchSecrets(t.Context(), &discoveryv3.DiscoveryRequest{}); err != nil && tt.allowedUIDs == nil {
				t.Errorf("own uid refused: %v", err)
			}
		})
	}
}

func TestPeerNotListedInProcess(t *testing.T) {
	// Any user can run this one: the allow-list names a uid and gid that
	// are not ours, so this very process is the refused peer.
	other := os.Geteuid() + 1
	logger, logs := testLogger(t)
	s := startServer(t, Config{AllowedUIDs: []int{other}, AllowedGIDs: []int{os.Getegid() + 1}, Logger: logger})
	if err := s.Apply(t.Context(), (&rotator{t: t, ca: newCA(t, exampleTD), id: webID}).next()); err != nil {
		t.Fatal(err)
	}
	client := secretClient(t, s.cfg.SocketPath)
	_, err := client.FetchSecrets(t.Context(), &discoveryv3.DiscoveryRequest{})
	if status.Code(err) != codes.PermissionDenied {
		t.Fatalf("FetchSecrets = %v, want PermissionDenied", err)
	}
	stream, err := client.DeltaSecrets(t.Context())
	if err != nil {
		t.Fatal(err)
	}
	// Send may already see the stream ended (io.EOF); Recv tells why.
	_ = stream.Send(&discoveryv3.DeltaDiscoveryRequest{TypeUrl: resource.SecretType})
	if _, err := stream.Recv(); status.Code(err) != codes.PermissionDenied {
		t.Fatalf("DeltaSecrets = %v, want PermissionDenied", err)
	}
	ads, err := discoveryv3.NewAggregatedDiscoveryServiceClient(dial(t, s.cfg.SocketPath)).StreamAggregatedResources(t.Context())
	if err != nil {
		t.Fatal(err)
	}
	if _, err := ads.Recv(); status.Code(err) != codes.PermissionDenied {
		t.Fatalf("ADS = %v, want PermissionDenied", err)
	}
	// Two client connections (the serve helper's probe came first, also
	// refused, but it never issued an RPC).
	if n := s.Stats().RefusedPeers; n < 2 {
		t.Errorf("RefusedPeers = %d, want at least 2", n)
	}
	if want := "uid=" + strconv.Itoa(os.Geteuid()); !strings.Contains(logs.String(), want) {
		t.Errorf("refusal not logged with %s:\n%s", want, logs)
	}
	if st := s.Stats(); st.StreamsOpen != 0 || st.Pushes != 0 {
		t.Errorf("a refused peer reached the SDS server: %+v", st)
	}
}

func TestAccessPolicy(t *testing.T) {
	me := uint32(os.Geteuid())
	tests := []struct {
		name       string
		uids, gids []int
		allowed    [][2]uint32
		refused    [][2]uint32
	}{
		{name: "default: own uid and root", allowed: [][2]uint32{{me, 12345}, {0, 0}}, refused: [][2]uint32{{me + 1, 0}, {65534, 65534}}},
		{name: "uids only", uids: []int{101}, allowed: [][2]uint32{{101, 7}}, refused: [][2]uint32{{0, 0}, {me + 1, 101}}},
		{name: "gids only", gids: []int{101}, allowed: [][2]uint32{{7, 101}}, refused: [][2]uint32{{101, 7}, {0, 0}}},
		{name: "both", uids: []int{5, 5, 1}, gids: []int{9}, allowed: [][2]uint32{{1, 0}, {5, 0}, {3, 9}}, refused: [][2]uint32{{3, 3}}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			p := newAccessPolicy(tt.uids, tt.gids)
			for _, id := range tt.allowed {
				if !p.allows(id[0], id[1]) {
					t.Errorf("%s refuses uid %d gid %d", p, id[0], id[1])
				}
			}
			for _, id := range tt.refused {
				if p.allows(id[0], id[1]) {
					t.Errorf("%s allows uid %d gid %d", p, id[0], id[1])
				}
			}
		})
	}
	for _, bad := range []int{-1, 1 << 32, 1<<32 - 1} {
		if _, err := New(Config{SocketPath: "/x", AllowedUIDs: []int{bad}}); err == nil || !strings.Contains(err.Error(), "allowed_uids[0]") {
			t.Errorf("New(AllowedUIDs %d) = %v, want an error naming allowed_uids[0]", bad, err)
		}
		if _, err := New(Config{SocketPath: "/x", AllowedGIDs: []int{bad}}); err == nil || !strings.Contains(err.Error(), "allowed_gids[0]") {
			t.Errorf("New(AllowedGIDs %d) = %v, want an error naming allowed_gids[0]", bad, err)
		}
	}
}

func TestOpenSocketModeWithoutAllowListWarns(t *testing.T) {
	logger, logs := testLogger(t)
	startServer(t, Config{SocketMode: 0o660, Logger: logger})
	// Serve logs just after the socket accepts, which is when startServer
	// returns.
	testkit.Eventually(t, "a warning for a group-accessible socket without an allow-list", func() bool {
		return strings.Contains(logs.String(), "list Envoy's uid or gid in sds.allowed_uids")
	})
}
