package sds

import (
	"crypto/sha256"
	"encoding/hex"
	"fmt"
	"iter"
	"maps"
	"slices"
	"strconv"

	tlsv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/transport_sockets/tls/v3"
	discoveryv3 "github.com/envoyproxy/go-control-plane/envoy/service/discovery/v3"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/types/known/anypb"
)

// snapshot is what is served at one version, shared by every stream and
// never changed: closing replaced tells them to look at the next one.
// Before the first Update it is empty, number 0.
type snapshot struct {
	// number is the generation, unless one did not advance.
	number, generation uint64
	version            string
	variants           [2]served // indexed by Validation
	// namesID changes when the served names do.
	namesID  uint64
	replaced chan struct{}
	stopped  bool // Server.endStreams
}

// served is the set of Secrets of one Validation.
type served struct {
	secrets map[string]*discoveryv3.Resource
	names   []string // sorted
}

func (s *served) has(name string) bool {
	_, ok := s.secrets[name]
	return ok
}

// newResource checks and marshals sec, served in variant v. A SotW
// response carries its Any under the snapshot's version.
func newResource(sec *tlsv3.Secret, v Validation) (*discoveryv3.Resource, error) {
	// Envoy would NACK what its own validation rejects; refuse it here and
	// keep serving the last good set.
	if err := sec.ValidateAll(); err != nil {
		return nil, fmt.Errorf("secret %q (%s): %w", sec.GetName(), v, err)
	}
	wire, err := proto.MarshalOptions{Deterministic: true}.Marshal(sec)
	if err != nil {
		return nil, fmt.Errorf("marshal secret %q: %w", sec.GetName(), err)
	}
	// The Delta version, as go-control-plane's: a client reconnecting with
	// the same secret, even to a restarted bridge, is not sent it again.
	sum := sha256.Sum256(wire)
	return &discoveryv3.Resource{Name: sec.GetName(), Version: hex.EncodeToString(sum[:]),
		Resource: &anypb.Any{TypeUrl: secretType, Value: wire}}, nil
}

// versionOf is the version string of version number n.
func (s *Server) versionOf(n uint64) string { return s.prefix + "-" + strconv.FormatUint(n, 10) }

// publish makes variants the served set of generation and wakes every
// stream. A generation that does not advance (a breach of rotation's
// contract) still gets a new version number, so versions never repeat.
func (s *Server) publish(generation uint64, variants [2]served) *snapshot {
	snap := &snapshot{generation: generation, variants: variants, replaced: make(chan struct{})}
	for v := range variants {
		snap.variants[v].names = slices.Sorted(maps.Keys(variants[v].secrets))
	}
	s.publishing.Lock()
	defer s.publishing.Unlock()
	prev := s.current.Load()
	snap.number = max(generation, prev.number+1)
	if snap.number != generation {
		s.cfg.Logger.Warn("Envoy SDS: generation did not advance; the SDS version no longer equals the generation",
			"generation", generation, "version", s.versionOf(snap.number))
	}
	snap.version = s.versionOf(snap.number)
	snap.namesID, snap.stopped = prev.namesID, prev.stopped
	if prev.number == 0 || !slices.Equal(snap.variants[0].names, prev.variants[0].names) ||
		!slices.Equal(snap.variants[1].names, prev.variants[1].names) {
		snap.namesID++
	}
	s.current.Store(snap)
	close(prev.replaced)
	return snap
}

// fetch answers FetchSecrets: the requested names served (all for none),
// in the node's variant; unknown names are logged, and NotFound if all are.
func (s *Server) fetch(req *discoveryv3.DiscoveryRequest) (*discoveryv3.DiscoveryResponse, error) {
	snap := s.current.Load()
	if snap.number == 0 {
		return nil, status.Error(codes.Unavailable, "no secrets yet: waiting for the first Workload API update")
	}
	v, _ := validationFor(req.GetNode(), s.cfg.Names.DisableSPIFFECertValidation)
	sv := &snap.variants[v]
	names := requestedNames(req.GetResourceNames())
	if unknown := sv.unknown(slices.Values(names)); len(unknown) > 0 {
		s.cfg.Logger.Warn("Envoy SDS: fetch asks for secrets that are not served", "node", clip(req.GetNode().GetId()),
			"unknown", clipNames(unknown), "served", clipNames(sv.names), "validation", v)
	}
	if len(names) == 0 {
		names = sv.names
	}
	resp := &discoveryv3.DiscoveryResponse{VersionInfo: snap.version, TypeUrl: secretType}
	for _, name := range names {
		if s, ok := sv.secrets[name]; ok {
			resp.Resources = append(resp.Resources, s.Resource)
		}
	}
	if len(resp.Resources) == 0 {
		return nil, status.Errorf(codes.NotFound, "none of the requested secrets %q is served; served: %q", clipNames(names), clipNames(sv.names))
	}
	s.cfg.Logger.Debug("Envoy SDS: fetch", "node", clip(req.GetNode().GetId()), "version", resp.GetVersionInfo(),
		"count", len(resp.GetResources()))
	return resp, nil
}

// unknown is those of names that sv does not serve, in their order.
func (sv *served) unknown(names iter.Seq[string]) []string {
	var out []string
	for n := range names {
		if !sv.has(n) {
			out = append(out, n)
		}
	}
	return out
}

// requestedNames is names sorted and compacted, without "" and "*".
func requestedNames(names []string) []string {
	out := make([]string, 0, len(names))
	for _, n := range names {
		if n != "" && n != wildcardName {
			out = append(out, n)
		}
	}
	slices.Sort(out)
	return slices.Compact(out)
}
