package sds

import (
	"context"
	"errors"
	"log/slog"
	"net"
	"os"
	"path/filepath"
	"sync"
	"testing"
	"time"

	"github.com/sds-bridge/sds-bridge/internal/testkit"

	corev3 "github.com/envoyproxy/go-control-plane/envoy/config/core/v3"
	tlsv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/transport_sockets/tls/v3"
	discoveryv3 "github.com/envoyproxy/go-control-plane/envoy/service/discovery/v3"
	secretv3 "github.com/envoyproxy/go-control-plane/envoy/service/secret/v3"
	"github.com/envoyproxy/go-control-plane/pkg/resource/v3"
	"github.com/google/go-cmp/cmp"
	"github.com/spiffe/go-spiffe/v2/bundle/x509bundle"
	"github.com/spiffe/go-spiffe/v2/spiffeid"
	"github.com/spiffe/go-spiffe/v2/svid/x509svid"
	"go.uber.org/goleak"
	rpcstatus "google.golang.org/genproto/googleapis/rpc/status"
	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials/insecure"
	"google.golang.org/protobuf/testing/protocmp"
	"google.golang.org/protobuf/types/known/anypb"

	"github.com/sds-bridge/sds-bridge/internal/devapi"
	"github.com/sds-bridge/sds-bridge/rotation"
)

func TestMain(m *testing.M) {
	if socket := os.Getenv(clientRoleEnv); socket != "" {
		// A child process: the SDS client of TestPeerOfAnotherUID.
		os.Exit(runClientRole(socket))
	}
	if socket := os.Getenv(floodRoleEnv); socket != "" {
		// A child process: the attacker of
		// TestARefusedPeerCannotExhaustDescriptorsAndRotationGoesOn.
		os.Exit(runFloodRole(socket))
	}
	if arg := os.Getenv(benchClientsEnv); arg != "" {
		// A child process: the SDS clients of BenchmarkStreamMemory.
		os.Exit(runBenchClients(arg))
	}
	goleak.VerifyTestMain(m)
}

func contextWithTestTimeout() (context.Context, context.CancelFunc) {
	return context.WithTimeout(context.Background(), testkit.Timeout)
}

var (
	exampleTD = spiffeid.RequireTrustDomainFromString("example.org")
	otherTD   = spiffeid.RequireTrustDomainFromString("other.org")
	webID     = spiffeid.RequireFromString("spiffe://example.org/web")
	backendID = spiffeid.RequireFromString("spiffe://example.org/backend")
)

func newCA(t testing.TB, td spiffeid.TrustDomain) *devapi.CA {
	t.Helper()
	c, err := devapi.NewCA(td, time.Hour)
	if err != nil {
		t.Fatal(err)
	}
	return c
}

func issue(t testing.TB, c *devapi.CA, id spiffeid.ID) *x509svid.SVID {
	t.Helper()
	s, err := c.Issue(id, time.Hour)
	if err != nil {
		t.Fatal(err)
	}
	return s
}

// newUpdate is what rotation would publish, built by rotation.NewUpdate.
// Test data that breaks NewUpdate's rules is a bug in the test: it panics.
func newUpdate(gen uint64, svids []*x509svid.SVID, bundles ...*x509bundle.Bundle) *rotation.Update {
	u, err := rotation.NewUpdate(gen, svids, bundles, time.Now())
	if err != nil {
		panic(err)
	}
	return u
}

// rotator hands out Updates of one workload with a fresh SVID each time.
type rotator struct {
	t   testing.TB
	ca  *devapi.CA
	id  spiffeid.ID
	gen uint64
}

func (r *rotator) next() *rotation.Update {
	r.gen++
	return newUpdate(r.gen, []*x509svid.SVID{issue(r.t, r.ca, r.id)}, r.ca.Bundle())
}

// syncBuffer collects log output written from many goroutines.
type syncBuffer = testkit.LogBuffer

func testLogger(t testing.TB) (*slog.Logger, *syncBuffer) {
	buf := &syncBuffer{}
	return slog.New(slog.NewTextHandler(buf, &slog.HandlerOptions{Level: slog.LevelDebug})), buf
}

// socketPath is a short path for a unix socket (sun_path is ~104 bytes).
func socketPath(t testing.TB) string {
	return filepath.Join(testkit.ShortDir(t), "sds.sock")
}

// startServer builds a Server and serves it until the test ends.
func startServer(t testing.TB, cfg Config) *Server {
	t.Helper()
	if cfg.SocketPath == "" {
		cfg.SocketPath = socketPath(t)
	}
	if cfg.Logger == nil {
		cfg.Logger, _ = testLogger(t)
	}
	s, err := New(cfg)
	if err != nil {
		t.Fatal(err)
	}
	stop := serve(t, s)
	t.Cleanup(func() {
		if err := stop(); err != nil {
			t.Errorf("Serve: %v", err)
		}
	})
	return s
}

// serve runs s.Serve until the returned stop is called; it waits until the
// socket answers so clients never race the listener.
func serve(t testing.TB, s *Server) (stop func() error) {
	t.Helper()
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- s.Serve(ctx) }()
	testkit.Eventually(t, "socket "+s.cfg.SocketPath, func() bool {
		select {
		case err := <-done:
			done <- err
			return true
		default:
		}
		conn, err := net.Dial("unix", s.cfg.SocketPath)
		if err != nil {
			return false
		}
		conn.Close()
		return true
	})
	var once sync.Once
	var err error
	return func() error {
		once.Do(func() {
			cancel()
			err = <-done
		})
		return err
	}
}

func dial(t testing.TB, path string) *grpc.ClientConn {
	t.Helper()
	conn, err := grpc.NewClient("unix://"+path, grpc.WithTransportCredentials(insecure.NewCredentials()))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { conn.Close() })
	return conn
}

// waitPending waits until n watches wait on name: the server took the
// last request and did not answer it.
func waitPending(t testing.TB, s *Server, name string, n int) {
	t.Helper()
	testkit.Eventually(t, "pending watch on "+name, func() bool { return s.NumWatches(name) == n })
}

// envoyClient subscribes to secrets over SotW SDS the way Envoy does: it
// ACKs with version_info and response_nonce and NACKs with error_detail
// and the last accepted version.
type envoyClient struct {
	t      testing.TB
	stream secretv3.SecretDiscoveryService_StreamSecretsClient
	names  []string
	// version is the last accepted version, nonce the last received nonce.
	version, nonce string
}

func newEnvoyClient(t testing.TB, conn *grpc.ClientConn, names []string, version string) *envoyClient {
	t.Helper()
	return newEnvoyClientAs(t, conn, &corev3.Node{Id: "envoy-" + t.Name(), Cluster: "test"}, names, version)
}

// newEnvoyClientAs is newEnvoyClient for the given node, which only the
// first request carries, as Envoy sends it.
func newEnvoyClientAs(t testing.TB, conn *grpc.ClientConn, node *corev3.Node, names []string, version string) *envoyClient {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), testkit.Timeout)
	t.Cleanup(cancel)
	stream, err := secretv3.NewSecretDiscoveryServiceClient(conn).StreamSecrets(ctx)
	if err != nil {
		t.Fatal(err)
	}
	c := &envoyClient{t: t, stream: stream, names: names, version: version}
	c.send(&discoveryv3.DiscoveryRequest{
		Node:          node,
		VersionInfo:   version,
		ResourceNames: names,
		TypeUrl:       resource.SecretType,
	})
	return c
}

func (c *envoyClient) send(req *discoveryv3.DiscoveryRequest) {
	c.t.Helper()
	if err := c.stream.Send(req); err != nil {
		c.t.Fatalf("send: %v", err)
	}
}

func (c *envoyClient) recv() *discoveryv3.DiscoveryResponse {
	c.t.Helper()
	resp, err := c.stream.Recv()
	if err != nil {
		c.t.Fatalf("recv: %v", err)
	}
	if resp.GetTypeUrl() != resource.SecretType {
		c.t.Fatalf("response type %q, want %q", resp.GetTypeUrl(), resource.SecretType)
	}
	c.nonce = resp.GetNonce()
	return resp
}

func (c *envoyClient) ack(resp *discoveryv3.DiscoveryResponse) {
	c.t.Helper()
	c.version = resp.GetVersionInfo()
	c.send(&discoveryv3.DiscoveryRequest{
		VersionInfo:   c.version,
		ResourceNames: c.names,
		TypeUrl:       resource.SecretType,
		ResponseNonce: resp.GetNonce(),
	})
}

func (c *envoyClient) nack(resp *discoveryv3.DiscoveryResponse, msg string) {
	c.t.Helper()
	c.send(&discoveryv3.DiscoveryRequest{
		VersionInfo:   c.version,
		ResourceNames: c.names,
		TypeUrl:       resource.SecretType,
		ResponseNonce: resp.GetNonce(),
		ErrorDetail:   &rpcstatus.Status{Code: 3, Message: msg},
	})
}

// unpack decodes Secrets from a response, keyed by name; it checks each
// passes Envoy's validation.
func unpack(t testing.TB, anys []*anypb.Any) map[string]*tlsv3.Secret {
	t.Helper()
	out := make(map[string]*tlsv3.Secret, len(anys))
	for _, a := range anys {
		s := &tlsv3.Secret{}
		if err := a.UnmarshalTo(s); err != nil {
			t.Fatalf("unmarshal %s: %v", a.GetTypeUrl(), err)
		}
		if err := s.ValidateAll(); err != nil {
			t.Errorf("secret %q fails Envoy validation: %v", s.GetName(), err)
		}
		if _, dup := out[s.GetName()]; dup {
			t.Errorf("secret %q sent twice in one response", s.GetName())
		}
		out[s.GetName()] = s
	}
	return out
}

// built is BuildSecrets(u) restricted to names (all when names is nil).
func built(t testing.TB, u *rotation.Update, n Names, names ...string) map[string]*tlsv3.Secret {
	t.Helper()
	all, err := BuildSecrets(u, n)
	if err != nil {
		t.Fatal(err)
	}
	if names == nil {
		return all
	}
	out := make(map[string]*tlsv3.Secret, len(names))
	for _, name := range names {
		if s, ok := all[name]; ok {
			out[name] = s
		}
	}
	return out
}

func diffSecrets(want, got map[string]*tlsv3.Secret) string {
	return cmp.Diff(want, got, protocmp.Transform())
}

// versionOf is the version the server serves for generation gen.
func versionOf(s *Server, gen uint64) string { return s.versionOf(gen) }

// isEnd reports a stream error that means the server ended the stream.
func isEnd(err error) bool {
	return err != nil && !errors.Is(err, context.DeadlineExceeded)
}

func secretClient(t testing.TB, path string) secretv3.SecretDiscoveryServiceClient {
	return secretv3.NewSecretDiscoveryServiceClient(dial(t, path))
}

// NumWatches counts the streams whose request on name waits for an
// answer (wildcard subscriptions aside).
func (s *Server) NumWatches(name string) int {
	s.reg.mu.Lock()
	defer s.reg.mu.Unlock()
	n := 0
	for st := range s.reg.streams {
		st.mu.Lock()
		if st.asked && !st.sub.wildcard {
			if _, ok := st.sub.names[name]; ok {
				n++
			}
		}
		st.mu.Unlock()
	}
	return n
}
