package sds

import (
	"context"
	"testing"

	corev3 "github.com/envoyproxy/go-control-plane/envoy/config/core/v3"
	discoveryv3 "github.com/envoyproxy/go-control-plane/envoy/service/discovery/v3"
	secretv3 "github.com/envoyproxy/go-control-plane/envoy/service/secret/v3"
	"github.com/envoyproxy/go-control-plane/pkg/resource/v3"
	"github.com/sds-bridge/sds-bridge/internal/testkit"
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
