package sds

import (
	"context"
	"crypto"
	"strconv"
	"strings"
	"testing"

	corev3 "github.com/envoyproxy/go-control-plane/envoy/config/core/v3"
	discoveryv3 "github.com/envoyproxy/go-control-plane/envoy/service/discovery/v3"
	secretv3 "github.com/envoyproxy/go-control-plane/envoy/service/secret/v3"
	adsclient "github.com/envoyproxy/go-control-plane/pkg/client/sotw/v3"
	"github.com/envoyproxy/go-control-plane/pkg/resource/v3"
	"github.com/spiffe/go-spiffe/v2/spiffeid"
	"github.com/spiffe/go-spiffe/v2/svid/x509svid"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/types/known/anypb"

	"github.com/sds-bridge/sds-bridge/internal/testkit"
	"github.com/sds-bridge/sds-bridge/rotation"
)

func TestSotWStreamFollowsRotation(t *testing.T) {
	logger, logs := testLogger(t)
	s := startServer(t, Config{Logger: logger})
	r := &rotator{t: t, ca: newCA(t, exampleTD), id: webID}
	names := []string{"default", "ROOTCA", "ALL", webID.String()}
	c := newEnvoyClient(t, dial(t, s.cfg.SocketPath), names, "")

	// Before the first Update the request waits instead of being answered
	// empty, as Envoy expects (it waits up to initial_fetch_timeout).
	waitPending(t, s, "default", 1)

	expectPush := func(u *rotation.Update) *discoveryv3.DiscoveryResponse {
		t.Helper()
		resp := c.recv()
		if got, want := resp.GetVersionInfo(), versionOf(s, u.Generation); got != want {
			t.Fatalf("pushed version %q, want %q (generation %d)", got, want, u.Generation)
		}
		if d := diffSecrets(built(t, u, Names{}, names...), unpack(t, resp.GetResources())); d != "" {
			t.Fatalf("generation %d secrets (-want +got):\n%s", u.Generation, d)
		}
		return resp
	}

	for range 3 {
		u := r.next()
		if err := s.Apply(t.Context(), u); err != nil {
			t.Fatal(err)
		}
		c.ack(expectPush(u))
	}

	// Envoy rejects generation 4. It keeps version 3; nothing is resent:
	// the server takes the NACK and waits for the next Update.
	u4 := r.next()
	if err := s.Apply(t.Context(), u4); err != nil {
		t.Fatal(err)
	}
	c.nack(expectPush(u4), "Failed to load private key")
	testkit.Eventually(t, "NACK counted", func() bool { return s.Stats().NACKs == 1 })
	waitPending(t, s, "default", 1)

	// A generation the sink never saw (5) leaves no trace but the version
	// still names the generation served.
	r.gen++
	u6 := r.next()
	if err := s.Apply(t.Context(), u6); err != nil {
		t.Fatal(err)
	}
	c.ack(expectPush(u6))
	if !strings.HasSuffix(c.version, "-6") {
		t.Errorf("version %q does not end in the generation 6", c.version)
	}

	st := s.Stats()
	if st.Pushes != 5 || st.NACKs != 1 || st.StreamsOpen != 1 || st.Generation != 6 || st.Version != c.version {
		t.Errorf("Stats = %+v, want 5 pushes, 1 NACK, 1 stream, generation 6, version %q", st, c.version)
	}
	if l := logs.String(); !strings.Contains(l, "client rejected secrets") || !strings.Contains(l, `error="Failed to load private key"`) {
		t.Errorf("NACK not logged with its error:\n%s", l)
	}
}

// TestWireVersionNamesTheGenerationAfterSkips checks the SDS version a
// client sees is "<prefix>-<generation>" whatever generations the sink
// never saw: the version is chosen, not counted. The prefix comes from the
// first push, the rest from the generation alone, so this does not read
// back what the server computed.
func TestWireVersionNamesTheGenerationAfterSkips(t *testing.T) {
	s := startServer(t, Config{})
	r := &rotator{t: t, ca: newCA(t, exampleTD), id: webID}
	c := newEnvoyClient(t, dial(t, s.cfg.SocketPath), []string{"default"}, "")
	waitPending(t, s, "default", 1)

	var prefix string
	// 1<<20 is further than any catch-up loop over skipped generations
	// should go.
	for _, gen := range []uint64{1, 2, 5, 5 + 1<<20} {
		r.gen = gen - 1
		if err := s.Apply(t.Context(), r.next()); err != nil {
			t.Fatal(err)
		}
		resp := c.recv()
		got := resp.GetVersionInfo()
		if gen == 1 {
			p, ok := strings.CutSuffix(got, "-1")
			if !ok || p == "" {
				t.Fatalf("first version %q is not <prefix>-1", got)
			}
			prefix = p
		}
		if want := prefix + "-" + strconv.FormatUint(gen, 10); got != want {
			t.Fatalf("generation %d: version on the wire %q, want %q", gen, got, want)
		}
		if st := s.Stats(); st.Version != got || st.Generation != gen {
			t.Errorf("generation %d: Stats version %q generation %d, want %q %d", gen, st.Version, st.Generation, got, gen)
		}
		c.ack(resp)
	}
}

func TestADSClientReceivesSecrets(t *testing.T) {
	s := startServer(t, Config{})
	r := &rotator{t: t, ca: newCA(t, exampleTD), id: webID}
	ctx, cancel := context.WithTimeout(context.Background(), testkit.Timeout)
	t.Cleanup(cancel)
	client := adsclient.NewADSClient(ctx, &corev3.Node{Id: "ads"}, resource.SecretType)
	if err := client.InitConnect(dial(t, s.cfg.SocketPath)); err != nil {
		t.Fatal(err)
	}
	for range 2 {
		u := r.next()
		if err := s.Apply(t.Context(), u); err != nil {
			t.Fatal(err)
		}
		resp, err := client.Fetch()
		if err != nil {
			t.Fatal(err)
		}
		// A wildcard subscription gets every secret.
		if d := diffSecrets(built(t, u, Names{}), unpack(t, resp.Resources)); d != "" {
			t.Fatalf("generation %d secrets (-want +got):\n%s", u.Generation, d)
		}
		if err := client.Ack(); err != nil {
			t.Fatal(err)
		}
	}
}

func TestADSRefusesOtherTypes(t *testing.T) {
	s := startServer(t, Config{})
	ctx, cancel := context.WithTimeout(context.Background(), testkit.Timeout)
	t.Cleanup(cancel)
	stream, err := discoveryv3.NewAggregatedDiscoveryServiceClient(dial(t, s.cfg.SocketPath)).StreamAggregatedResources(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if err := stream.Send(&discoveryv3.DiscoveryRequest{TypeUrl: resource.ClusterType}); err != nil {
		t.Fatal(err)
	}
	_, err = stream.Recv()
	if status.Code(err) != codes.InvalidArgument || !strings.Contains(err.Error(), "serves only "+resource.SecretType) {
		t.Fatalf("Recv error %v, want InvalidArgument naming the secret type", err)
	}
}

func TestDeltaStream(t *testing.T) {
	s := startServer(t, Config{})
	r := &rotator{t: t, ca: newCA(t, exampleTD), id: webID}
	ctx, cancel := context.WithTimeout(context.Background(), testkit.Timeout)
	t.Cleanup(cancel)
	stream, err := secretv3.NewSecretDiscoveryServiceClient(dial(t, s.cfg.SocketPath)).DeltaSecrets(ctx)
	if err != nil {
		t.Fatal(err)
	}
	names := []string{"default", "ALL"}
	if err := stream.Send(&discoveryv3.DeltaDiscoveryRequest{
		Node:                   &corev3.Node{Id: "delta"},
		TypeUrl:                resource.SecretType,
		ResourceNamesSubscribe: names,
	}); err != nil {
		t.Fatal(err)
	}
	waitPending(t, s, "default", 1)

	recv := func(u *rotation.Update, want ...string) {
		t.Helper()
		resp, err := stream.Recv()
		if err != nil {
			t.Fatal(err)
		}
		if got, want := resp.GetSystemVersionInfo(), versionOf(s, u.Generation); got != want {
			t.Errorf("system version %q, want %q", got, want)
		}
		var anys []*anypb.Any
		for _, res := range resp.GetResources() {
			if res.GetVersion() == "" {
				t.Errorf("resource %q has no version", res.GetName())
			}
			anys = append(anys, res.GetResource())
		}
		got := unpack(t, anys)
		for _, res := range resp.GetResources() {
			if got[res.GetName()] == nil {
				t.Errorf("resource named %q holds another secret", res.GetName())
			}
		}
		if d := diffSecrets(built(t, u, Names{}, want...), got); d != "" {
			t.Fatalf("generation %d secrets (-want +got):\n%s", u.Generation, d)
		}
		if err := stream.Send(&discoveryv3.DeltaDiscoveryRequest{TypeUrl: resource.SecretType, ResponseNonce: resp.GetNonce()}); err != nil {
			t.Fatal(err)
		}
	}

	u1 := r.next()
	if err := s.Apply(t.Context(), u1); err != nil {
		t.Fatal(err)
	}
	recv(u1, names...)
	// A new SVID under the same bundle: Delta sends only what changed.
	u2 := r.next()
	if err := s.Apply(t.Context(), u2); err != nil {
		t.Fatal(err)
	}
	recv(u2, "default")
	if st := s.Stats(); st.StreamsOpen != 1 || st.Pushes != 2 {
		t.Errorf("Stats = %+v, want 1 stream, 2 pushes", st)
	}
}

func TestFetchSecrets(t *testing.T) {
	s := startServer(t, Config{})
	client := secretv3.NewSecretDiscoveryServiceClient(dial(t, s.cfg.SocketPath))
	fetch := func(names ...string) (*discoveryv3.DiscoveryResponse, error) {
		return client.FetchSecrets(t.Context(), &discoveryv3.DiscoveryRequest{Node: &corev3.Node{Id: "fetch"}, ResourceNames: names})
	}

	if _, err := fetch("default"); status.Code(err) != codes.Unavailable {
		t.Fatalf("fetch before the first Update: %v, want Unavailable", err)
	}
	u := (&rotator{t: t, ca: newCA(t, exampleTD), id: webID}).next()
	if err := s.Apply(t.Context(), u); err != nil {
		t.Fatal(err)
	}

	tests := []struct {
		name          string
		request       []string
		expectSecrets []string // nil: every secret
		expectCode    codes.Code
		expectMsg     string
	}{
		{name: "known names", request: []string{"default", "ROOTCA"}, expectSecrets: []string{"default", "ROOTCA"}},
		{name: "no names means all", request: nil},
		{name: "unknown names are left out", request: []string{"ALL", "nope"}, expectSecrets: []string{"ALL"}},
		{
			name: "only unknown names", request: []string{"spiffe://example.org/nope", "nope", "nope"},
			expectCode: codes.NotFound,
			expectMsg: `none of the requested secrets ["nope" "spiffe://example.org/nope"] is served; ` +
				`served: ["ALL" "ROOTCA" "default" "spiffe://example.org" "spiffe://example.org/web"]`,
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			resp, err := fetch(tt.request...)
			if status.Code(err) != tt.expectCode {
				t.Fatalf("code %v (%v), want %v", status.Code(err), err, tt.expectCode)
			}
			if err != nil {
				if got := status.Convert(err).Message(); got != tt.expectMsg {
					t.Fatalf("message\n %s\nwant\n %s", got, tt.expectMsg)
				}
				return
			}
			if got, want := resp.GetVersionInfo(), versionOf(s, 1); got != want {
				t.Errorf("version %q, want %q", got, want)
			}
			if d := diffSecrets(built(t, u, Names{}, tt.expectSecrets...), unpack(t, resp.GetResources())); d != "" {
				t.Errorf("secrets (-want +got):\n%s", d)
			}
		})
	}
}

func TestUnknownNameAmongKnown(t *testing.T) {
	logger, logs := testLogger(t)
	s := startServer(t, Config{Logger: logger})
	exampleCA := newCA(t, exampleTD)
	ghostID := spiffeid.RequireFromString("spiffe://example.org/ghost")
	names := []string{"default", ghostID.String()}
	c := newEnvoyClient(t, dial(t, s.cfg.SocketPath), names, "")

	u1 := newUpdate(1, []*x509svid.SVID{issue(t, exampleCA, webID)}, exampleCA.Bundle())
	if err := s.Apply(t.Context(), u1); err != nil {
		t.Fatal(err)
	}
	resp := c.recv()
	if d := diffSecrets(built(t, u1, Names{}, "default"), unpack(t, resp.GetResources())); d != "" {
		t.Fatalf("secrets (-want +got):\n%s", d)
	}
	c.ack(resp)
	waitPending(t, s, "default", 1)
	want := `msg="Envoy SDS: requested secrets are not served; they stay pending" stream=1 delta=false node=envoy-TestUnknownNameAmongKnown ` +
		`unknown=[spiffe://example.org/ghost] served="[ALL ROOTCA default spiffe://example.org spiffe://example.org/web]"`
	if l := logs.String(); strings.Count(l, want) != 1 {
		t.Errorf("want exactly one warning %s\nlogs:\n%s", want, l)
	}

	// The stream stays open and gets the next Update, and the missing
	// name as soon as it exists.
	u2 := newUpdate(2, []*x509svid.SVID{issue(t, exampleCA, webID), issue(t, exampleCA, ghostID)}, exampleCA.Bundle())
	if err := s.Apply(t.Context(), u2); err != nil {
		t.Fatal(err)
	}
	resp = c.recv()
	if d := diffSecrets(built(t, u2, Names{}, names...), unpack(t, resp.GetResources())); d != "" {
		t.Fatalf("secrets (-want +got):\n%s", d)
	}
	c.ack(resp)

	// A rotation that keeps the names says nothing; one that drops the
	// name again warns again, once.
	u3 := newUpdate(3, []*x509svid.SVID{issue(t, exampleCA, webID), issue(t, exampleCA, ghostID)}, exampleCA.Bundle())
	u4 := newUpdate(4, []*x509svid.SVID{issue(t, exampleCA, webID)}, exampleCA.Bundle())
	for _, u := range []*rotation.Update{u3, u4} {
		if err := s.Apply(t.Context(), u); err != nil {
			t.Fatal(err)
		}
		c.ack(c.recv())
	}
	waitPending(t, s, "default", 1)
	if l := logs.String(); strings.Count(l, want) != 2 {
		t.Errorf("want the warning once more after the name was dropped (2 in all) %s\nlogs:\n%s", want, l)
	}
}

func TestRestartGetsCurrentSecrets(t *testing.T) {
	path := socketPath(t)
	names := []string{"default", "ROOTCA"}

	s1, err := New(Config{SocketPath: path})
	if err != nil {
		t.Fatal(err)
	}
	stop1 := serve(t, s1)
	r1 := &rotator{t: t, ca: newCA(t, exampleTD), id: webID}
	conn := dial(t, path)
	c1 := newEnvoyClient(t, conn, names, "")
	var u *rotation.Update
	for range 2 {
		u = r1.next()
		if err := s1.Apply(t.Context(), u); err != nil {
			t.Fatal(err)
		}
		c1.ack(c1.recv())
	}
	old := c1.version
	if err := stop1(); err != nil {
		t.Fatal(err)
	}
	if _, err := c1.stream.Recv(); !isEnd(err) {
		t.Fatalf("stream after stop: %v, want it ended", err)
	}

	// A new process: generation 1 again, other material.
	s2, err := New(Config{SocketPath: path})
	if err != nil {
		t.Fatal(err)
	}
	stop2 := serve(t, s2)
	t.Cleanup(func() {
		if err := stop2(); err != nil {
			t.Error(err)
		}
	})
	if versionOf(s2, 2) == old {
		t.Fatalf("both servers use version prefix %q", old)
	}
	// Envoy reconnects presenting what it holds; it waits for the new
	// server's first Update instead of getting an empty answer.
	c2 := newEnvoyClient(t, dial(t, path), names, old)
	waitPending(t, s2, "default", 1)
	u2 := (&rotator{t: t, ca: newCA(t, exampleTD), id: webID}).next()
	if err := s2.Apply(t.Context(), u2); err != nil {
		t.Fatal(err)
	}
	resp := c2.recv()
	if got, want := resp.GetVersionInfo(), versionOf(s2, 1); got != want {
		t.Errorf("version %q, want %q", got, want)
	}
	if d := diffSecrets(built(t, u2, Names{}, names...), unpack(t, resp.GetResources())); d != "" {
		t.Fatalf("secrets (-want +got):\n%s", d)
	}
	if d := diffSecrets(built(t, u, Names{}, names...), unpack(t, resp.GetResources())); d == "" {
		t.Fatal("the new server served the old server's material")
	}
}

func TestApplyRefusesBadUpdate(t *testing.T) {
	s := startServer(t, Config{})
	exampleCA := newCA(t, exampleTD)
	good := newUpdate(1, []*x509svid.SVID{issue(t, exampleCA, webID)}, exampleCA.Bundle())
	if err := s.Apply(t.Context(), good); err != nil {
		t.Fatal(err)
	}
	// An Update without SVIDs can no longer be built (rotation.NewUpdate);
	// a key that cannot be encoded is what Apply itself still refuses.
	unencodable := *issue(t, exampleCA, webID)
	unencodable.PrivateKey = opaqueKey{unencodable.PrivateKey}
	bad := newUpdate(2, []*x509svid.SVID{&unencodable}, exampleCA.Bundle())
	if err := s.Apply(t.Context(), bad); err == nil || !strings.HasPrefix(err.Error(), "apply generation 2: ") {
		t.Fatalf("Apply(unencodable key) = %v, want an error naming generation 2", err)
	}
	secrets, version := s.Secrets()
	if version != versionOf(s, 1) {
		t.Errorf("version %q after a refused Update, want %q", version, versionOf(s, 1))
	}
	if d := diffSecrets(built(t, good, Names{}), secrets); d != "" {
		t.Errorf("secrets changed after a refused Update (-want +got):\n%s", d)
	}
}

// opaqueKey hides a key's concrete type, so x509 cannot encode it.
type opaqueKey struct{ crypto.Signer }

func TestNewValidatesConfig(t *testing.T) {
	tests := []struct {
		name      string
		cfg       Config
		expectErr string
	}{
		{"no socket", Config{}, `socket: "" must be an absolute path`},
		{"setuid mode", Config{SocketPath: "/x", SocketMode: 0o4600}, "has bits other than permissions"},
		{"bad names", Config{SocketPath: "/x", Names: Names{AllBundles: "spiffe://example.org"}}, "default_all_bundles_name"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			if _, err := New(tt.cfg); err == nil || !strings.Contains(err.Error(), tt.expectErr) {
				t.Fatalf("New = %v, want error containing %q", err, tt.expectErr)
			}
		})
	}
	s, err := New(Config{SocketPath: "/x"})
	if err != nil {
		t.Fatal(err)
	}
	if s.Name() != "sds" || s.cfg.SocketMode != 0o600 || s.cfg.Names != (Names{DefaultSVID: "default", DefaultBundle: "ROOTCA", AllBundles: "ALL"}) {
		t.Errorf("defaults: name %q, mode %o, names %+v", s.Name(), s.cfg.SocketMode, s.cfg.Names)
	}
}

func TestApplyGenerationNotAdvancing(t *testing.T) {
	logger, logs := testLogger(t)
	s := startServer(t, Config{Logger: logger})
	r := &rotator{t: t, ca: newCA(t, exampleTD), id: webID}
	r.gen = 1
	if err := s.Apply(t.Context(), r.next()); err != nil { // generation 2
		t.Fatal(err)
	}
	r.gen = 0
	u := r.next() // generation 1 again: a contract breach, still served
	if err := s.Apply(t.Context(), u); err != nil {
		t.Fatal(err)
	}
	secrets, version := s.Secrets()
	if version != versionOf(s, 3) {
		t.Errorf("version %q, want %q: versions must never repeat", version, versionOf(s, 3))
	}
	if d := diffSecrets(built(t, u, Names{}), secrets); d != "" {
		t.Errorf("secrets (-want +got):\n%s", d)
	}
	if !strings.Contains(logs.String(), "generation did not advance") {
		t.Errorf("no warning logged:\n%s", logs)
	}
	if err := s.Apply(t.Context(), nil); err == nil {
		t.Error("Apply(nil) succeeded")
	}
}
