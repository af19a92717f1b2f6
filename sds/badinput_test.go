package sds

import (
	"context"
	"fmt"
	"log/slog"
	"runtime"
	"strings"
	"testing"

	corev3 "github.com/envoyproxy/go-control-plane/envoy/config/core/v3"
	discoveryv3 "github.com/envoyproxy/go-control-plane/envoy/service/discovery/v3"
	secretv3 "github.com/envoyproxy/go-control-plane/envoy/service/secret/v3"
	"github.com/envoyproxy/go-control-plane/pkg/resource/v3"
	"github.com/spiffe/go-spiffe/v2/spiffeid"
	"github.com/spiffe/go-spiffe/v2/svid/x509svid"
	rpcstatus "google.golang.org/genproto/googleapis/rpc/status"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials/insecure"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/types/known/structpb"

	"github.com/sds-bridge/sds-bridge/internal/testkit"
	"github.com/sds-bridge/sds-bridge/rotation"
)

func TestAllNotServedWithoutSPIFFEValidation(t *testing.T) {
	logger, logs := testLogger(t)
	s := startServer(t, Config{Names: Names{DisableSPIFFECertValidation: true}, Logger: logger})
	if n := strings.Count(logs.String(), `the secret \"ALL\" is not served, as in SPIRE`); n != 1 {
		t.Errorf("start-up explanation logged %d times, want once:\n%s", n, logs)
	}
	exampleCA, otherCA := newCA(t, exampleTD), newCA(t, otherTD)
	u := newUpdate(1, []*x509svid.SVID{issue(t, exampleCA, webID)}, exampleCA.Bundle(), otherCA.Bundle())
	if err := s.Apply(t.Context(), u); err != nil {
		t.Fatal(err)
	}
	secrets, _ := s.Secrets()
	if _, ok := secrets["ALL"]; ok {
		t.Fatal("ALL is served without the SPIFFE validator")
	}

	// A client asking for it gets the rest and the usual warning; its
	// stream stays open.
	c := newEnvoyClient(t, dial(t, s.cfg.SocketPath), []string{"default", "ALL", "spiffe://other.org"}, "")
	resp := c.recv()
	if d := diffSecrets(built(t, u, s.cfg.Names, "default", "spiffe://other.org"), unpack(t, resp.GetResources())); d != "" {
		t.Fatalf("secrets (-want +got):\n%s", d)
	}
	c.ack(resp)
	waitPending(t, s, "default", 1)
	if l := logs.String(); !strings.Contains(l, "requested secrets are not served") || !strings.Contains(l, "unknown=[ALL]") {
		t.Errorf("no unknown-name warning for ALL:\n%s", l)
	}
}

func TestWrongTypeURL(t *testing.T) {
	s := startServer(t, Config{})
	u := (&rotator{t: t, ca: newCA(t, exampleTD), id: webID}).next()
	if err := s.Apply(t.Context(), u); err != nil {
		t.Fatal(err)
	}
	conn := dial(t, s.cfg.SocketPath)
	client := secretv3.NewSecretDiscoveryServiceClient(conn)
	refused := func(typeURL string) string {
		return "this server serves only " + resource.SecretType + ", not " + typeURL
	}
	tests := []struct {
		name       string
		typeURL    string
		delta      bool
		expectCode codes.Code
		expectMsg  string
	}{
		{name: "SotW: cluster type", typeURL: resource.ClusterType, expectCode: codes.InvalidArgument, expectMsg: refused(resource.ClusterType)},
		{name: "SotW: garbage", typeURL: "\x00not a type\n", expectCode: codes.InvalidArgument, expectMsg: refused("\x00not a type\n")},
		{name: "SotW: empty means the stream's own type", typeURL: "", expectCode: codes.OK},
		{name: "Delta: listener type", typeURL: resource.ListenerType, delta: true, expectCode: codes.InvalidArgument, expectMsg: refused(resource.ListenerType)},
		{name: "Delta: empty means the stream's own type", typeURL: "", delta: true, expectCode: codes.OK},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			ctx, cancel := context.WithTimeout(t.Context(), testkit.Timeout)
			defer cancel()
			var n int
			var err error
			if tt.delta {
				var stream secretv3.SecretDiscoveryService_DeltaSecretsClient
				if stream, err = client.DeltaSecrets(ctx); err != nil {
					t.Fatal(err)
				}
				_ = stream.Send(&discoveryv3.DeltaDiscoveryRequest{TypeUrl: tt.typeURL, ResourceNamesSubscribe: []string{"default"}})
				var resp *discoveryv3.DeltaDiscoveryResponse
				resp, err = stream.Recv()
				n = len(resp.GetResources())
			} else {
				var stream secretv3.SecretDiscoveryService_StreamSecretsClient
				if stream, err = client.StreamSecrets(ctx); err != nil {
					t.Fatal(err)
				}
				_ = stream.Send(&discoveryv3.DiscoveryRequest{TypeUrl: tt.typeURL, ResourceNames: []string{"default"}})
				var resp *discoveryv3.DiscoveryResponse
				resp, err = stream.Recv()
				n = len(resp.GetResources())
			}
			if status.Code(err) != tt.expectCode {
				t.Fatalf("Recv = %v, want %v", err, tt.expectCode)
			}
			if err != nil {
				if got := status.Convert(err).Message(); got != tt.expectMsg {
					t.Errorf("message %q, want %q", got, tt.expectMsg)
				}
				return
			}
			if n != 1 {
				t.Errorf("%d secrets, want default", n)
			}
		})
	}
	// The refusals ended those streams only.
	c := newEnvoyClient(t, conn, []string{"default"}, "")
	c.recv()
}

// TestFetchSecretsOfAnotherTypeIsInvalidArgument: the unary FetchSecrets
// refuses another type URL with InvalidArgument, as the streams do; an
// empty or the Secret type URL is served.
func TestFetchSecretsOfAnotherTypeIsInvalidArgument(t *testing.T) {
	s := startServer(t, Config{})
	if err := s.Apply(t.Context(), (&rotator{t: t, ca: newCA(t, exampleTD), id: webID}).next()); err != nil {
		t.Fatal(err)
	}
	client := secretClient(t, s.cfg.SocketPath)
	tests := []struct {
		typeURL    string
		expectCode codes.Code
	}{
		{typeURL: resource.ClusterType, expectCode: codes.InvalidArgument},
		{typeURL: "\x00not a type\n", expectCode: codes.InvalidArgument},
		{typeURL: "", expectCode: codes.OK},
		{typeURL: resource.SecretType, expectCode: codes.OK},
	}
	for _, tt := range tests {
		resp, err := client.FetchSecrets(t.Context(), &discoveryv3.DiscoveryRequest{TypeUrl: tt.typeURL, ResourceNames: []string{"default"}})
		if status.Code(err) != tt.expectCode {
			t.Errorf("FetchSecrets(type %q) = %v, want %v", tt.typeURL, err, tt.expectCode)
			continue
		}
		if err != nil {
			want := "this server serves only " + resource.SecretType + ", not " + tt.typeURL
			if got := status.Convert(err).Message(); got != want {
				t.Errorf("FetchSecrets(type %q): message %q, want %q", tt.typeURL, got, want)
			}
			continue
		}
		if len(resp.GetResources()) != 1 || resp.GetTypeUrl() != resource.SecretType {
			t.Errorf("FetchSecrets(type %q) = %v, want the default secret", tt.typeURL, resp)
		}
	}
}

func TestEmptyNameListIsWildcard(t *testing.T) {
	// SPIRE answers a SotW request without names with every secret; so
	// does this server (legacy wildcard).
	s := startServer(t, Config{})
	exampleCA, otherCA := newCA(t, exampleTD), newCA(t, otherTD)
	u := newUpdate(1, []*x509svid.SVID{issue(t, exampleCA, webID), issue(t, exampleCA, backendID)}, exampleCA.Bundle(), otherCA.Bundle())
	if err := s.Apply(t.Context(), u); err != nil {
		t.Fatal(err)
	}
	c := newEnvoyClient(t, dial(t, s.cfg.SocketPath), nil, "")
	if d := diffSecrets(built(t, u, Names{}), unpack(t, c.recv().GetResources())); d != "" {
		t.Errorf("secrets (-want +got):\n%s", d)
	}
}

// hugeNames is n names: the known ones first, then unknown short names.
func hugeNames(n int, known ...string) []string {
	names := append([]string(nil), known...)
	for i := len(known); i < n; i++ {
		names = append(names, fmt.Sprintf("n%06d", i))
	}
	return names
}

func TestHugeNameList(t *testing.T) {
	// Info, as in production.
	logs := &syncBuffer{}
	s := startServer(t, Config{Logger: slog.New(slog.NewTextHandler(logs, nil))})
	r := &rotator{t: t, ca: newCA(t, exampleTD), id: webID}
	u1 := r.next()
	if err := s.Apply(t.Context(), u1); err != nil {
		t.Fatal(err)
	}
	conn := dial(t, s.cfg.SocketPath)
	known := []string{"default", "ROOTCA"}
	names := hugeNames(DefaultMaxNamesPerStream, known...)

	runtime.GC()
	var before runtime.MemStats
	runtime.ReadMemStats(&before)

	c := newEnvoyClient(t, conn, names, "")
	resp := c.recv()
	if d := diffSecrets(built(t, u1, Names{}, known...), unpack(t, resp.GetResources())); d != "" {
		t.Fatalf("secrets (-want +got):\n%s", d)
	}
	c.ack(resp)
	waitPending(t, s, "default", 1)

	runtime.GC()
	var during runtime.MemStats
	runtime.ReadMemStats(&during)
	grown := int64(during.HeapInuse) - int64(before.HeapInuse)
	t.Logf("heap in use grew by %.1f MiB with a %d-name subscription open", float64(grown)/(1<<20), len(names))
	// A bound, not a measurement: the request is at most gRPC's 4 MiB,
	// and what the server keeps per name is a few hundred bytes.
	if grown > 256<<20 {
		t.Errorf("heap grew by %d MiB for one subscription", grown>>20)
	}

	// The stream is kept and follows rotation.
	u2 := r.next()
	if err := s.Apply(t.Context(), u2); err != nil {
		t.Fatal(err)
	}
	if d := diffSecrets(built(t, u2, Names{}, known...), unpack(t, c.recv().GetResources())); d != "" {
		t.Fatalf("secrets (-want +got):\n%s", d)
	}

	// One bounded warning, not a megabyte of names.
	var warning string
	for _, l := range strings.Split(logs.String(), "\n") {
		if strings.Contains(l, "requested secrets are not served") {
			warning = l
		}
		if len(l) > 8<<10 {
			t.Errorf("log line of %d bytes: %.200s…", len(l), l)
		}
	}
	if !strings.Contains(warning, fmt.Sprintf("… and %d more", len(names)-len(known)-maxLoggedNames)) {
		t.Errorf("warning does not summarise the unknown names: %.500s", warning)
	}

	client := secretv3.NewSecretDiscoveryServiceClient(conn)
	t.Run("Fetch", func(t *testing.T) {
		resp, err := client.FetchSecrets(t.Context(), &discoveryv3.DiscoveryRequest{ResourceNames: names})
		if err != nil {
			t.Fatal(err)
		}
		if d := diffSecrets(built(t, u2, Names{}, known...), unpack(t, resp.GetResources())); d != "" {
			t.Errorf("secrets (-want +got):\n%s", d)
		}
		_, err = client.FetchSecrets(t.Context(), &discoveryv3.DiscoveryRequest{ResourceNames: names[len(known):]})
		if status.Code(err) != codes.NotFound || len(status.Convert(err).Message()) > 4<<10 {
			t.Errorf("Fetch of only unknown names: %v, %d-byte message; want a short NotFound", status.Code(err), len(status.Convert(err).Message()))
		}
	})
	t.Run("Delta", func(t *testing.T) {
		stream, err := client.DeltaSecrets(t.Context())
		if err != nil {
			t.Fatal(err)
		}
		if err := stream.Send(&discoveryv3.DeltaDiscoveryRequest{TypeUrl: resource.SecretType, ResourceNamesSubscribe: names}); err != nil {
			t.Fatal(err)
		}
		resp, err := stream.Recv()
		if err != nil {
			t.Fatal(err)
		}
		if len(resp.GetResources()) != len(known) {
			t.Errorf("%d secrets, want %d", len(resp.GetResources()), len(known))
		}
	})
	t.Run("over the per-stream bound", func(t *testing.T) {
		// Under gRPC's 4 MiB message limit, over DefaultMaxNamesPerStream.
		stream, err := client.StreamSecrets(t.Context())
		if err != nil {
			t.Fatal(err)
		}
		_ = stream.Send(&discoveryv3.DiscoveryRequest{TypeUrl: resource.SecretType, ResourceNames: hugeNames(DefaultMaxNamesPerStream+1, known...)})
		_, err = stream.Recv()
		if want := fmt.Sprintf("subscribes to %d secret names, more than the %d allowed", DefaultMaxNamesPerStream+1, DefaultMaxNamesPerStream); status.Code(err) != codes.ResourceExhausted || !strings.Contains(err.Error(), want) {
			t.Errorf("Recv = %v, want ResourceExhausted: %s", err, want)
		}
		// Others are still served.
		c := newEnvoyClient(t, conn, known, "")
		c.recv()
	})
}

func TestGarbageNode(t *testing.T) {
	logger, logs := testLogger(t)
	s := startServer(t, Config{Logger: logger})
	u := (&rotator{t: t, ca: newCA(t, exampleTD), id: webID}).next()
	if err := s.Apply(t.Context(), u); err != nil {
		t.Fatal(err)
	}
	meta, err := structpb.NewStruct(map[string]any{"\x00": []any{nil, 1e308, "\u202e", map[string]any{"": true}}})
	if err != nil {
		t.Fatal(err)
	}
	garbage := strings.Repeat("\x1b[31mlevel=ERROR msg=forged\n", 4096) // 112 KiB of escapes and newlines
	node := &corev3.Node{
		Id: garbage, Cluster: garbage, Metadata: meta,
		UserAgentName:        "\x00",
		UserAgentVersionType: &corev3.Node_UserAgentVersion{UserAgentVersion: garbage},
		Locality:             &corev3.Locality{Region: garbage},
	}
	conn := dial(t, s.cfg.SocketPath)
	ctx, cancel := context.WithTimeout(t.Context(), testkit.Timeout)
	defer cancel()
	stream, err := secretv3.NewSecretDiscoveryServiceClient(conn).StreamSecrets(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if err := stream.Send(&discoveryv3.DiscoveryRequest{Node: node, TypeUrl: resource.SecretType, ResourceNames: []string{"default", "nope"}}); err != nil {
		t.Fatal(err)
	}
	resp, err := stream.Recv()
	if err != nil {
		t.Fatal(err)
	}
	if d := diffSecrets(built(t, u, Names{}, "default"), unpack(t, resp.GetResources())); d != "" {
		t.Fatalf("secrets (-want +got):\n%s", d)
	}
	// A NACK from that node: logged, clipped, on one line.
	if err := stream.Send(&discoveryv3.DiscoveryRequest{TypeUrl: resource.SecretType, ResourceNames: []string{"default", "nope"},
		ResponseNonce: resp.GetNonce(), ErrorDetail: &rpcstatus.Status{Message: garbage}}); err != nil {
		t.Fatal(err)
	}
	testkit.Eventually(t, "NACK counted", func() bool { return s.Stats().NACKs == 1 })
	_, err = secretv3.NewSecretDiscoveryServiceClient(conn).FetchSecrets(t.Context(), &discoveryv3.DiscoveryRequest{Node: node, ResourceNames: []string{"nope"}})
	if status.Code(err) != codes.NotFound {
		t.Errorf("Fetch from a garbage node: %v", err)
	}

	l := logs.String()
	if strings.Contains(l, "\nlevel=ERROR msg=forged") || strings.Count(l, "msg=forged") > 3*20 {
		t.Errorf("the node's text forged or flooded log lines:\n%.2000s", l)
	}
	for _, line := range strings.Split(l, "\n") {
		if len(line) > 8<<10 {
			t.Errorf("log line of %d bytes: %.200s…", len(line), line)
		}
	}
	for _, want := range []string{"requested secrets are not served", "client rejected secrets", "fetch asks for secrets that are not served", fmt.Sprintf("(%d bytes)", len(garbage))} {
		if !strings.Contains(l, want) {
			t.Errorf("logs lack %q", want)
		}
	}
}

func TestNACKStorm(t *testing.T) {
	logger, logs := testLogger(t)
	s := startServer(t, Config{Logger: logger})
	r := &rotator{t: t, ca: newCA(t, exampleTD), id: webID}
	u1 := r.next()
	if err := s.Apply(t.Context(), u1); err != nil {
		t.Fatal(err)
	}
	c := newEnvoyClient(t, dial(t, s.cfg.SocketPath), []string{"default"}, "")
	resp := c.recv()
	// The client never accepted anything (version ""), the hardest case:
	// a server that answers "no version" with the current secrets would
	// loop forever with a client that keeps rejecting them.
	const storm = 1000
	for range storm {
		c.nack(resp, "Failed to load private key")
	}
	testkit.Eventually(t, "every NACK counted", func() bool { return s.Stats().NACKs == storm })
	waitPending(t, s, "default", 1)
	if st := s.Stats(); st.Pushes != 1 {
		t.Fatalf("Pushes = %d after %d NACKs, want 1: the server resent", st.Pushes, storm)
	}
	if n := strings.Count(logs.String(), "level=ERROR msg=\"Envoy SDS: client rejected secrets\""); n != 1 {
		t.Errorf("%d error lines for one rejected response repeated %d times, want 1", n, storm)
	}
	// The next push is the next generation, not a resend.
	u2 := r.next()
	if err := s.Apply(t.Context(), u2); err != nil {
		t.Fatal(err)
	}
	resp = c.recv()
	if got, want := resp.GetVersionInfo(), versionOf(s, 2); got != want {
		t.Fatalf("after the storm: version %q, want %q", got, want)
	}
	c.nack(resp, "again")
	testkit.Eventually(t, "NACK of generation 2", func() bool { return s.Stats().NACKs == storm+1 })
	if n := strings.Count(logs.String(), "level=ERROR msg=\"Envoy SDS: client rejected secrets\""); n != 2 {
		t.Errorf("%d error lines, want 2: a NACK of a new response is logged", n)
	}
	if st := s.Stats(); st.Pushes != 2 {
		t.Errorf("Pushes = %d, want 2", st.Pushes)
	}
}

func TestClientThatNeverReads(t *testing.T) {
	s := startServer(t, Config{})
	exampleCA := newCA(t, exampleTD)
	// Enough SVIDs that one response is far larger than what HTTP/2 flow
	// control lets the server send unread (64 KiB stream window, 64 KiB
	// write quota): a client that does not read blocks the server's Send
	// of that response for sure, without any timing.
	bigUpdate := func(gen uint64) *rotation.Update {
		svids := make([]*x509svid.SVID, 300)
		for i := range svids {
			svids[i] = issue(t, exampleCA, spiffeid.RequireFromPathf(exampleTD, "/w%d", i))
		}
		return newUpdate(gen, svids, exampleCA.Bundle())
	}
	u1 := bigUpdate(1)
	if err := s.Apply(t.Context(), u1); err != nil {
		t.Fatal(err)
	}
	var size int
	for _, sec := range built(t, u1, Names{}) {
		size += proto.Size(sec)
	}
	if size < 256<<10 {
		t.Fatalf("a wildcard response is %d bytes; the test needs one far above the flow-control windows", size)
	}

	// Fixed windows: grpc-go's dynamic (BDP) windows would let the client
	// buffer more without reading.
	conn, err := grpc.NewClient("unix://"+s.cfg.SocketPath, grpc.WithTransportCredentials(insecure.NewCredentials()),
		grpc.WithInitialWindowSize(64<<10), grpc.WithInitialConnWindowSize(64<<10))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { conn.Close() })
	ctx, cancel := context.WithTimeout(t.Context(), testkit.Timeout)
	defer cancel()
	stuck, err := secretv3.NewSecretDiscoveryServiceClient(conn).StreamSecrets(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if err := stuck.Send(&discoveryv3.DiscoveryRequest{TypeUrl: resource.SecretType}); err != nil { // wildcard
		t.Fatal(err)
	}
	testkit.Eventually(t, "the push to the stuck stream", func() bool { return s.Stats().Pushes == 1 })

	// Another stream on the same connection, and rotation, go on.
	c := newEnvoyClient(t, conn, []string{"default"}, "")
	c.ack(c.recv())
	for gen := uint64(2); gen <= 3; gen++ {
		u := bigUpdate(gen)
		if err := s.Apply(t.Context(), u); err != nil {
			t.Fatal(err)
		}
		resp := c.recv()
		if got, want := resp.GetVersionInfo(), versionOf(s, gen); got != want {
			t.Fatalf("healthy stream got %q, want %q", got, want)
		}
		c.ack(resp)
	}
	// The stuck client still has its first response waiting, whole.
	resp, err := stuck.Recv()
	if err != nil {
		t.Fatal(err)
	}
	if resp.GetVersionInfo() != versionOf(s, 1) || len(resp.GetResources()) != len(built(t, u1, Names{})) {
		t.Errorf("stuck stream: version %q with %d secrets", resp.GetVersionInfo(), len(resp.GetResources()))
	}
}
