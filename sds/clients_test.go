package sds

import (
	"context"
	"slices"
	"strings"
	"testing"

	corev3 "github.com/envoyproxy/go-control-plane/envoy/config/core/v3"
	discoveryv3 "github.com/envoyproxy/go-control-plane/envoy/service/discovery/v3"
	secretv3 "github.com/envoyproxy/go-control-plane/envoy/service/secret/v3"
	"github.com/envoyproxy/go-control-plane/pkg/resource/v3"
	"github.com/sds-bridge/sds-bridge/internal/testkit"
	rpcstatus "google.golang.org/genproto/googleapis/rpc/status"
	healthpb "google.golang.org/grpc/health/grpc_health_v1"
)

// Clients tells, per open stream, which node it is and which generation it
// accepted; a NACK is shown without moving the accepted version.
func TestClientsFollowACKsAndNACKs(t *testing.T) {
	s := startServer(t, Config{})
	r := &rotator{t: t, ca: newCA(t, exampleTD), id: webID}
	c := newEnvoyClient(t, dial(t, s.cfg.SocketPath), []string{"default"}, "")
	waitPending(t, s, "default", 1)

	cl := s.Clients()
	if len(cl) != 1 || cl[0].Node != "envoy-"+t.Name() || cl[0].Cluster != "test" || cl[0].Delta || cl[0].AckedVersion != "" {
		t.Fatalf("before any push Clients() = %+v, want one SotW client without ACK", cl)
	}

	for range 2 {
		if err := s.Apply(t.Context(), r.next()); err != nil {
			t.Fatal(err)
		}
		c.ack(c.recv())
	}
	testkit.Eventually(t, "ACK of generation 2", func() bool {
		cl := s.Clients()
		return len(cl) == 1 && cl[0].AckedGeneration == 2
	})
	if got := s.Clients()[0]; got.AckedVersion != versionOf(s, 2) || got.AckedAt.IsZero() || got.NACK != "" {
		t.Errorf("after ACK of 2: %+v", got)
	}

	if err := s.Apply(t.Context(), r.next()); err != nil {
		t.Fatal(err)
	}
	c.nack(c.recv(), "Failed to load private key")
	testkit.Eventually(t, "NACK of generation 3", func() bool { return s.Clients()[0].NACK != "" })
	got := s.Clients()[0]
	if got.NACK != "Failed to load private key" || got.NACKedVersion != versionOf(s, 3) || got.AckedGeneration != 2 {
		t.Errorf("after NACK of 3: %+v, want generation 2 still accepted and 3 rejected", got)
	}

	// A Delta stream: ACKs carry only the nonce.
	ctx, cancel := context.WithCancel(t.Context())
	defer cancel()
	delta, err := secretv3.NewSecretDiscoveryServiceClient(dial(t, s.cfg.SocketPath)).DeltaSecrets(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if err := delta.Send(&discoveryv3.DeltaDiscoveryRequest{
		Node: &corev3.Node{Id: "delta-node"}, TypeUrl: resource.SecretType, ResourceNamesSubscribe: []string{"ROOTCA"},
	}); err != nil {
		t.Fatal(err)
	}
	resp, err := delta.Recv()
	if err != nil {
		t.Fatal(err)
	}
	if err := delta.Send(&discoveryv3.DeltaDiscoveryRequest{TypeUrl: resource.SecretType, ResponseNonce: resp.GetNonce()}); err != nil {
		t.Fatal(err)
	}
	testkit.Eventually(t, "Delta ACK", func() bool {
		for _, c := range s.Clients() {
			if c.Delta && c.AckedGeneration == 3 {
				return true
			}
		}
		return false
	})
	all := s.Clients()
	if len(all) != 2 || all[1].Node != "delta-node" || all[1].AckedVersion != versionOf(s, 3) {
		t.Errorf("Clients() = %+v, want the SotW client then the Delta client at generation 3", all)
	}

	cancel()
	testkit.Eventually(t, "closed Delta stream gone", func() bool { return len(s.Clients()) == 1 })
}

// grpc.health.v1 on the SDS socket says NOT_SERVING until the first
// Update, then SERVING, for the server and for each discovery service.
func TestHealthServesAfterFirstUpdate(t *testing.T) {
	s := startServer(t, Config{})
	h := healthpb.NewHealthClient(dial(t, s.cfg.SocketPath))
	check := func(service string) healthpb.HealthCheckResponse_ServingStatus {
		t.Helper()
		resp, err := h.Check(t.Context(), &healthpb.HealthCheckRequest{Service: service})
		if err != nil {
			t.Fatalf("Check(%q): %v", service, err)
		}
		return resp.GetStatus()
	}
	services := []string{"", "envoy.service.secret.v3.SecretDiscoveryService", "envoy.service.discovery.v3.AggregatedDiscoveryService"}
	for _, svc := range services {
		if got := check(svc); got != healthpb.HealthCheckResponse_NOT_SERVING {
			t.Errorf("before the first Update %q is %s, want NOT_SERVING", svc, got)
		}
	}
	r := &rotator{t: t, ca: newCA(t, exampleTD), id: webID}
	if err := s.Apply(t.Context(), r.next()); err != nil {
		t.Fatal(err)
	}
	for _, svc := range services {
		if got := check(svc); got != healthpb.HealthCheckResponse_SERVING {
			t.Errorf("after the first Update %q is %s, want SERVING", svc, got)
		}
	}
}

// TestClientsShowTheSubscriptionServed: what Clients reports of a stream
// (the view /status shows) is the subscription the stream is served, also
// after the legacy wildcard ends ([default] then []: subscribed to
// nothing, not to everything) and after a stale request, which changes
// nothing: neither the names, nor the NACK count, nor the last NACK.
func TestClientsShowTheSubscriptionServed(t *testing.T) {
	logger, logs := testLogger(t)
	s := startServer(t, Config{Logger: logger})
	r := &rotator{t: t, ca: newCA(t, exampleTD), id: webID}
	if err := s.Apply(t.Context(), r.next()); err != nil {
		t.Fatal(err)
	}
	view := func() Client {
		t.Helper()
		cl := s.Clients()
		if len(cl) != 1 {
			t.Fatalf("Clients() = %+v, want one stream", cl)
		}
		return cl[0]
	}
	c := newEnvoyClient(t, dial(t, s.cfg.SocketPath), []string{"default"}, "")
	c.ack(c.recv())
	waitPending(t, s, "default", 1)
	if got := view(); got.Wildcard || !slices.Equal(got.Subscribed, []string{"default"}) {
		t.Errorf("after [default]: wildcard %t, names %q; want [default]", got.Wildcard, got.Subscribed)
	}

	// A stale NACK naming ROOTCA: the push of generation 2 is on its way.
	if err := s.Apply(t.Context(), r.next()); err != nil {
		t.Fatal(err)
	}
	second := c.recv()
	c.send(&discoveryv3.DiscoveryRequest{VersionInfo: c.version, ResourceNames: []string{"ROOTCA"}, TypeUrl: resource.SecretType,
		ResponseNonce: "1", ErrorDetail: &rpcstatus.Status{Message: "stale"}})
	testkit.Eventually(t, "the stale request seen", func() bool { return strings.Contains(logs.String(), "stale request ignored") })
	if got := view(); got.Wildcard || !slices.Equal(got.Subscribed, []string{"default"}) || got.NACK != "" || s.Stats().NACKs != 0 {
		t.Errorf("after a stale request: wildcard %t, names %q, NACK %q, %d NACKs; want [default] and no NACK",
			got.Wildcard, got.Subscribed, got.NACK, s.Stats().NACKs)
	}

	// [] after names: subscribed to nothing.
	c.names = nil
	c.ack(second)
	testkit.Eventually(t, "the empty request taken", func() bool { return len(view().Subscribed) == 0 })
	if got := view(); got.Wildcard || got.AckedGeneration != 2 {
		t.Errorf("after [default] then []: wildcard %t, acked generation %d; want no wildcard, generation 2", got.Wildcard, got.AckedGeneration)
	}
	// Served alike: generation 3 is not pushed to it; the next request
	// is answered with what it names, at generation 3.
	if err := s.Apply(t.Context(), r.next()); err != nil {
		t.Fatal(err)
	}
	c.names = []string{"ROOTCA"}
	c.send(&discoveryv3.DiscoveryRequest{VersionInfo: c.version, ResourceNames: c.names, TypeUrl: resource.SecretType, ResponseNonce: second.GetNonce()})
	resp := c.recv()
	if got := unpack(t, resp.GetResources()); len(got) != 1 || got["ROOTCA"] == nil || resp.GetVersionInfo() != versionOf(s, 3) {
		t.Errorf("after [] then [ROOTCA]: %d secrets at %q, want ROOTCA alone at generation 3", len(got), resp.GetVersionInfo())
	}
	c.ack(resp)
	testkit.Eventually(t, "ROOTCA taken", func() bool { return slices.Equal(view().Subscribed, []string{"ROOTCA"}) })
}

// TestADeltaACKNamesTheVersionOfTheResponseItAnswers: a Delta ACK carries
// no version; the stream knows the one its last response carried, and
// its generation, without parsing it. An ACK of any other nonce names no
// version.
func TestADeltaACKNamesTheVersionOfTheResponseItAnswers(t *testing.T) {
	s := startServer(t, Config{})
	r := &rotator{t: t, ca: newCA(t, exampleTD), id: webID}
	stream, err := secretClient(t, s.cfg.SocketPath).DeltaSecrets(t.Context())
	if err != nil {
		t.Fatal(err)
	}
	send := func(req *discoveryv3.DeltaDiscoveryRequest) {
		t.Helper()
		req.TypeUrl = resource.SecretType
		if err := stream.Send(req); err != nil {
			t.Fatal(err)
		}
	}
	send(&discoveryv3.DeltaDiscoveryRequest{ResourceNamesSubscribe: []string{"default"}})
	waitPending(t, s, "default", 1)
	var last *discoveryv3.DeltaDiscoveryResponse
	for range 3 {
		if err := s.Apply(t.Context(), r.next()); err != nil {
			t.Fatal(err)
		}
		if last, err = stream.Recv(); err != nil {
			t.Fatal(err)
		}
		send(&discoveryv3.DeltaDiscoveryRequest{ResponseNonce: last.GetNonce()})
		waitPending(t, s, "default", 1)
	}
	if got := s.Clients()[0]; got.AckedVersion != versionOf(s, 3) || got.AckedGeneration != 3 {
		t.Errorf("after the ACK of generation 3: acked %q generation %d, want %q and 3", got.AckedVersion, got.AckedGeneration, versionOf(s, 3))
	}
	for _, nonce := range []string{"1", "n0", last.GetNonce() + "0"} {
		send(&discoveryv3.DeltaDiscoveryRequest{ResponseNonce: nonce, ErrorDetail: &rpcstatus.Status{Message: nonce}})
		testkit.Eventually(t, "NACK "+nonce, func() bool { return s.Clients()[0].NACK == nonce })
		if got := s.Clients()[0]; got.NACKedVersion != "" {
			t.Errorf("NACK of nonce %q: rejected version %q, want none", nonce, got.NACKedVersion)
		}
	}
}
