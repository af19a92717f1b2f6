package sds

import (
	discoveryv3 "github.com/envoyproxy/go-control-plane/envoy/service/discovery/v3"
	secretv3 "github.com/envoyproxy/go-control-plane/envoy/service/secret/v3"
	"google.golang.org/grpc/health"
	healthpb "google.golang.org/grpc/health/grpc_health_v1"
)

// healthServices are the names grpc.health.v1 answers for: the whole
// server ("") and each discovery service.
var healthServices = []string{
	"",
	secretv3.SecretDiscoveryService_ServiceDesc.ServiceName,
	discoveryv3.AggregatedDiscoveryService_ServiceDesc.ServiceName,
}

// newHealth starts NOT_SERVING: until the first Update is applied, a
// client would only wait for secrets, so a probe must not call it ready.
func newHealth() *health.Server {
	h := health.NewServer()
	for _, svc := range healthServices {
		h.SetServingStatus(svc, healthpb.HealthCheckResponse_NOT_SERVING)
	}
	return h
}

// markServing flips grpc.health.v1 to SERVING; called after every applied
// Update, it stays SERVING afterwards (the last good secrets stay served).
func (s *Server) markServing() {
	for _, svc := range healthServices {
		s.health.SetServingStatus(svc, healthpb.HealthCheckResponse_SERVING)
	}
}
