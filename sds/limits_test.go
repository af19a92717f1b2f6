package sds

import (
	"bytes"
	"context"
	"net"
	"strings"
	"testing"
	"time"

	corev3 "github.com/envoyproxy/go-control-plane/envoy/config/core/v3"
	discoveryv3 "github.com/envoyproxy/go-control-plane/envoy/service/discovery/v3"
	secretv3 "github.com/envoyproxy/go-control-plane/envoy/service/secret/v3"
	"github.com/envoyproxy/go-control-plane/pkg/resource/v3"
	"golang.org/x/net/http2"
	"golang.org/x/net/http2/hpack"
	rpcstatus "google.golang.org/genproto/googleapis/rpc/status"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/types/known/structpb"

	"github.com/sds-bridge/sds-bridge/internal/testkit"
)

// TestAClientIgnoringTheStreamLimitHasItsExtraStreamsRefused: a client
// that opens streams on one connection without heeding the server's
// SETTINGS_MAX_CONCURRENT_STREAMS (a raw HTTP/2 client, as an attacker
// would write one) has every stream beyond the bound refused by gRPC
// (RST_STREAM REFUSED_STREAM) before any handler runs; the server holds no
// more streams than the bound. Before the bound, grpc-go let one
// connection open 20,000 streams (233 MB, 14,373 goroutines).
func TestAClientIgnoringTheStreamLimitHasItsExtraStreamsRefused(t *testing.T) {
	const perConn, opened = 8, 40
	s := startServer(t, Config{limits: limits{streamsPerConn: perConn}})
	if err := s.Apply(t.Context(), (&rotator{t: t, ca: newCA(t, exampleTD), id: webID}).next()); err != nil {
		t.Fatal(err)
	}
	c, err := net.Dial("unix", s.cfg.SocketPath)
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	fr := openRawStreams(t, c, opened)
	var advertised uint32
	refused := map[uint32]bool{}
	_ = c.SetReadDeadline(time.Now().Add(testkit.Timeout))
	for len(refused) < opened-perConn {
		f, err := fr.ReadFrame()
		if err != nil {
			t.Fatalf("after %d refused streams: %v", len(refused), err)
		}
		switch f := f.(type) {
		case *http2.SettingsFrame:
			if v, ok := f.Value(http2.SettingMaxConcurrentStreams); ok {
				advertised = v
			}
			if !f.IsAck() {
				_ = fr.WriteSettingsAck()
			}
		case *http2.RSTStreamFrame:
			if f.ErrCode != http2.ErrCodeRefusedStream {
				t.Fatalf("stream %d reset with %v, want REFUSED_STREAM", f.StreamID, f.ErrCode)
			}
			refused[f.StreamID] = true
		}
	}
	if advertised != perConn {
		t.Errorf("the server advertised SETTINGS_MAX_CONCURRENT_STREAMS %d, want %d", advertised, perConn)
	}
	for i := range perConn {
		if refused[uint32(2*i+1)] {
			t.Errorf("stream %d, within the bound, was refused", 2*i+1)
		}
	}
	testkit.Eventually(t, "the streams within the bound open", func() bool { return s.Stats().StreamsOpen == perConn })
	t.Logf("%d streams opened on one connection: %d served, %d refused", opened, perConn, len(refused))
}

// openRawStreams opens n StreamSecrets streams on c as a raw HTTP/2
// client, without waiting for the server's settings.
func openRawStreams(t *testing.T, c net.Conn, n int) *http2.Framer {
	t.Helper()
	if _, err := c.Write([]byte(http2.ClientPreface)); err != nil {
		t.Fatal(err)
	}
	fr := http2.NewFramer(c, c)
	if err := fr.WriteSettings(); err != nil {
		t.Fatal(err)
	}
	var hb bytes.Buffer
	enc := hpack.NewEncoder(&hb)
	for i := range n {
		hb.Reset()
		for _, f := range [][2]string{{":method", "POST"}, {":scheme", "http"}, {":authority", "sds"},
			{":path", "/" + secretv3.SecretDiscoveryService_ServiceDesc.ServiceName + "/StreamSecrets"},
			{"content-type", "application/grpc"}, {"te", "trailers"}} {
			_ = enc.WriteField(hpack.HeaderField{Name: f[0], Value: f[1]})
		}
		if err := fr.WriteHeaders(http2.HeadersFrameParam{StreamID: uint32(2*i + 1), BlockFragment: hb.Bytes(), EndHeaders: true}); err != nil {
			t.Fatal(err)
		}
	}
	return fr
}

// TestOnePeerCannotHoldMoreStreamsThanItsShare: the SDS streams of one
// peer uid, over all its connections, are bounded; one more ends at once
// with ResourceExhausted (counted in Stats), the ones it holds are still
// served, and a stream that closes gives its place back.
func TestOnePeerCannotHoldMoreStreamsThanItsShare(t *testing.T) {
	const perPeer = 6
	logger, logs := testLogger(t)
	s := startServer(t, Config{Logger: logger, limits: limits{streamsPerPeer: perPeer}})
	r := &rotator{t: t, ca: newCA(t, exampleTD), id: webID}
	if err := s.Apply(t.Context(), r.next()); err != nil {
		t.Fatal(err)
	}
	// Over three connections: the bound is the peer's, not a connection's.
	conns := []*grpc.ClientConn{dial(t, s.cfg.SocketPath), dial(t, s.cfg.SocketPath), dial(t, s.cfg.SocketPath)}
	var held []*envoyClient
	for i := range perPeer {
		c := newEnvoyClient(t, conns[i%len(conns)], []string{"default"}, "")
		c.ack(c.recv())
		held = append(held, c)
	}
	ctx, cancel := context.WithTimeout(t.Context(), testkit.Timeout)
	over, err := secretClient(t, s.cfg.SocketPath).StreamSecrets(ctx)
	if err != nil {
		t.Fatal(err)
	}
	_ = over.Send(&discoveryv3.DiscoveryRequest{TypeUrl: resource.SecretType, ResourceNames: []string{"default"}})
	if _, err := over.Recv(); status.Code(err) != codes.ResourceExhausted || !strings.Contains(err.Error(), "the most one peer may") {
		t.Errorf("stream %d of one peer: %v, want ResourceExhausted", perPeer+1, err)
	}
	cancel()
	if got := s.Stats().StreamsOverLimit; got != 1 {
		t.Errorf("StreamsOverLimit = %d, want 1", got)
	}
	if !strings.Contains(logs.String(), "over a limit on what one client may hold") {
		t.Errorf("the refusal was not logged:\n%s", logs)
	}

	// The streams it holds still rotate.
	if err := s.Apply(t.Context(), r.next()); err != nil {
		t.Fatal(err)
	}
	for _, c := range held {
		c.ack(c.recv())
	}
	// A closed stream gives its place back.
	if err := held[0].stream.CloseSend(); err != nil {
		t.Fatal(err)
	}
	testkit.Eventually(t, "a place free", func() bool { return s.Stats().StreamsOpen == perPeer-1 })
	c := newEnvoyClient(t, dial(t, s.cfg.SocketPath), []string{"default"}, "")
	c.recv()
}

// TestOnePeersStreamsCannotSubscribeToNamesWithoutBound: the names all
// streams of one peer uid subscribe to are bounded by count and by bytes
// (Delta initial versions included), and one stream's by count; the
// stream that would pass a bound ends with ResourceExhausted, the others
// keep being served, and a closed stream's names are given back.
func TestOnePeersStreamsCannotSubscribeToNamesWithoutBound(t *testing.T) {
	s := startServer(t, Config{limits: limits{namesPerStream: 50, namesPerPeer: 80, nameBytesPerPeer: 4 << 10}})
	u := (&rotator{t: t, ca: newCA(t, exampleTD), id: webID}).next()
	if err := s.Apply(t.Context(), u); err != nil {
		t.Fatal(err)
	}
	conn := dial(t, s.cfg.SocketPath)
	client := secretv3.NewSecretDiscoveryServiceClient(conn)
	refused := func(what string, err error) {
		t.Helper()
		if status.Code(err) != codes.ResourceExhausted {
			t.Errorf("%s: %v, want ResourceExhausted", what, err)
		}
	}

	first := newEnvoyClient(t, conn, hugeNames(40, "default"), "")
	first.ack(first.recv())
	t.Run("one stream over its bound", func(t *testing.T) {
		refused("51 names on one stream", sotwAnswer(t, client, hugeNames(51, "default")))
	})
	t.Run("the peer over its count", func(t *testing.T) {
		// 40 + 41 names: one more than the peer may hold.
		refused("81 names over the peer's streams", deltaAnswer(t, client,
			&discoveryv3.DeltaDiscoveryRequest{ResourceNamesSubscribe: []string{"default"}},
			&discoveryv3.DeltaDiscoveryRequest{ResourceNamesSubscribe: hugeNames(41, "default")}))
	})
	t.Run("the peer over its count with initial versions", func(t *testing.T) {
		initial := map[string]string{}
		for _, n := range hugeNames(41) {
			initial[n] = "v"
		}
		refused("41 initial versions beside 40 names", deltaAnswer(t, client,
			&discoveryv3.DeltaDiscoveryRequest{ResourceNamesSubscribe: []string{"default"}, InitialResourceVersions: initial}))
	})
	t.Run("the peer over its bytes", func(t *testing.T) {
		refused("a 4 KiB name", sotwAnswer(t, client, []string{"default", strings.Repeat("n", 4<<10)}))
	})

	// The first stream is still served, and its names come back when it
	// closes.
	if err := first.stream.CloseSend(); err != nil {
		t.Fatal(err)
	}
	testkit.Eventually(t, "the first stream closed", func() bool { return s.Stats().StreamsOpen == 0 })
	again := newEnvoyClient(t, conn, hugeNames(50, "default"), "")
	if d := diffSecrets(built(t, u, Names{}, "default"), unpack(t, again.recv().GetResources())); d != "" {
		t.Errorf("secrets (-want +got):\n%s", d)
	}
	s.reg.mu.Lock()
	defer s.reg.mu.Unlock()
	if p := s.reg.peers[0]; p == nil || p.streams != 1 || p.names != 50 {
		t.Errorf("the peer holds %+v, want 1 stream and 50 names", p)
	}
}

// TestClientTextIsKeptBounded: what a client chooses and the server keeps
// while its stream is open — node id, cluster, user agent, metadata, a
// NACK's detail, the versions and nonces it names — is cut to a bound
// where it is stored, and says how long it was. Streams that send 700 KB
// of node id and NACK each (100 of them made /status a 288 MB document)
// now hold a few KiB each.
func TestClientTextIsKeptBounded(t *testing.T) {
	s := startServer(t, Config{})
	if err := s.Apply(t.Context(), (&rotator{t: t, ca: newCA(t, exampleTD), id: webID}).next()); err != nil {
		t.Fatal(err)
	}
	big := strings.Repeat("\x1b[31mforged\n", 700<<10/12)
	meta, err := structpb.NewStruct(map[string]any{"junk": big[:64<<10], DisableSPIFFECertValidationKey: "true"})
	if err != nil {
		t.Fatal(err)
	}
	small := big[:64<<10]
	node := &corev3.Node{Id: big, Cluster: small, UserAgentName: small, Metadata: meta}
	conn := dial(t, s.cfg.SocketPath)
	const streams = 40
	before := heapInUse()
	for range streams {
		c := newEnvoyClientAs(t, conn, node, []string{"default"}, "")
		resp := c.recv()
		c.send(&discoveryv3.DiscoveryRequest{VersionInfo: big, ResourceNames: c.names, TypeUrl: resource.SecretType,
			ResponseNonce: resp.GetNonce()})
		c.send(&discoveryv3.DiscoveryRequest{ResourceNames: c.names, TypeUrl: resource.SecretType,
			ResponseNonce: small, ErrorDetail: &rpcstatus.Status{Code: 3, Message: big}})
	}
	testkit.Eventually(t, "every NACK taken", func() bool { return s.Stats().NACKs == streams })
	grown := int64(heapInUse()) - int64(before)
	t.Logf("heap in use grew by %.1f MiB with %d streams that sent %d KB of node, NACK and version each", float64(grown)/(1<<20), streams, (3*len(big)+4*len(small))>>10)
	if grown > 8<<20 {
		t.Errorf("heap grew by %d MiB: the streams keep what their clients sent", grown>>20)
	}
	for _, c := range s.Clients() {
		for what, v := range map[string]string{"node": c.Node, "cluster": c.Cluster, "NACK": c.NACK, "acked version": c.AckedVersion} {
			if len(v) > maxStoredText+clipMark || !strings.HasSuffix(v, " bytes)") {
				t.Errorf("%s kept as %d bytes: %.80q", what, len(v), v)
			}
		}
		if c.Validation != ValidationTrustedCA {
			t.Errorf("validation %s: the node's metadata was lost in the cut", c.Validation)
		}
	}
}

// sotwAnswer sends one SotW request for names and returns the error of
// the answer.
func sotwAnswer(t *testing.T, client secretv3.SecretDiscoveryServiceClient, names []string) error {
	st, err := client.StreamSecrets(bounded(t))
	if err != nil {
		t.Fatal(err)
	}
	_ = st.Send(&discoveryv3.DiscoveryRequest{TypeUrl: resource.SecretType, ResourceNames: names})
	_, err = st.Recv()
	return err
}

// deltaAnswer sends Delta requests one after the other, each once the
// previous one is answered, and returns the error of the last answer.
func deltaAnswer(t *testing.T, client secretv3.SecretDiscoveryServiceClient, reqs ...*discoveryv3.DeltaDiscoveryRequest) error {
	st, err := client.DeltaSecrets(bounded(t))
	if err != nil {
		t.Fatal(err)
	}
	for _, req := range reqs {
		req.TypeUrl = resource.SecretType
		_ = st.Send(req)
		if _, err = st.Recv(); err != nil {
			return err
		}
	}
	return nil
}

// bounded is a context for a stream that ends with the test, or after
// testkit.Timeout: a stream the server wrongly keeps fails the test
// instead of hanging it.
func bounded(t *testing.T) context.Context {
	ctx, cancel := context.WithTimeout(t.Context(), testkit.Timeout)
	t.Cleanup(cancel)
	return ctx
}
