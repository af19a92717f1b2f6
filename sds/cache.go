package sds

import (
	"crypto/sha256"
	"encoding/hex"
	"fmt"
	"log/slog"
	"maps"
	"slices"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"

	corev3 "github.com/envoyproxy/go-control-plane/envoy/config/core/v3"
	tlsv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/transport_sockets/tls/v3"
	discoveryv3 "github.com/envoyproxy/go-control-plane/envoy/service/discovery/v3"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/types/known/anypb"
)

// secretCache owns what is served and under which version: publish makes
// one generation of Secrets, in both Validation variants, current at once,
// as version "<prefix>-<generation>", and wakes every open stream
// (xdsStream.wake), which sends what its client lacks. A stream's
// response follows from the snapshot current when it is sent
// (xdsStream.next); each Secret is marshalled once per generation for
// every stream. A SotW request never gets an empty answer, whatever
// version it presents, so a client that connects before the first Update
// (or after a restart of the bridge) waits until one of its secrets
// exists, as SPIRE Agent's SDS waits. SotW secrets carry the version of
// the generation that published them (every generation replaces them
// all); Delta secrets carry a hash of the secret, so an unchanged one is
// not resent.
//
// Every stream and fetch gets the variant its node gets (validationFor),
// as SPIRE Agent's SDS chooses per request.
type secretCache struct {
	prefix string
	// disabled is Names.DisableSPIFFECertValidation: the choice for a node
	// that does not make its own.
	disabled bool
	log      *slog.Logger

	// current is the published snapshot; nil until the first one. It is
	// read without mu (streams, fetch, Secrets) and written under it.
	current atomic.Pointer[snapshot]

	mu sync.Mutex
	// number is the version number of current: its generation, unless a
	// generation did not advance.
	number  uint64
	streams map[*xdsStream]struct{}
	// ended is set by endStreams: no stream opens after.
	ended bool
}

// snapshot is one published generation as served.
type snapshot struct {
	generation uint64
	version    string
	// variants is indexed by Validation.
	variants [2]served
}

// sameNames reports whether snap serves the same names as other, in every
// variant.
func (snap *snapshot) sameNames(other *snapshot) bool {
	for v := range snap.variants {
		if !slices.Equal(snap.variants[v].names, other.variants[v].names) {
			return false
		}
	}
	return true
}

// served is the set of Secrets of one Validation.
type served struct {
	secrets map[string]servedSecret
	names   []string // sorted
}

// servedSecret is a Secret with its wire form, marshalled once per
// generation for every stream.
type servedSecret struct {
	secret *tlsv3.Secret
	wire   []byte
	// hash is the Delta resource version.
	hash string
}

// newServed marshals secrets; a Secret already in known (another variant
// of the same generation shares it) is not marshalled again.
func newServed(secrets map[string]*tlsv3.Secret, known map[*tlsv3.Secret]servedSecret) (served, error) {
	sv := served{secrets: make(map[string]servedSecret, len(secrets)), names: slices.Sorted(maps.Keys(secrets))}
	for name, sec := range secrets {
		ss, ok := known[sec]
		if !ok {
			wire, err := proto.MarshalOptions{Deterministic: true}.Marshal(sec)
			if err != nil {
				return served{}, fmt.Errorf("marshal secret %q: %w", name, err)
			}
			ss = servedSecret{secret: sec, wire: wire, hash: hashOf(wire)}
			known[sec] = ss
		}
		sv.secrets[name] = ss
	}
	return sv, nil
}

// hashOf is a Delta resource version (as go-control-plane computes it): a
// Delta client that reconnects holding the same secret, also to a
// restarted bridge, is not sent it again.
func hashOf(wire []byte) string {
	sum := sha256.Sum256(wire)
	return hex.EncodeToString(sum[:])
}

// nothingServed is what is served before the first Update.
var nothingServed served

func (s *served) has(name string) bool {
	_, ok := s.secrets[name]
	return ok
}

func newSecretCache(prefix string, disabled bool, log *slog.Logger) *secretCache {
	return &secretCache{prefix: prefix, disabled: disabled, log: log, streams: make(map[*xdsStream]struct{})}
}

// validation is what node gets.
func (c *secretCache) validation(node *corev3.Node) Validation {
	v, _ := validationFor(node, c.disabled)
	return v
}

// version is the version string of version number n.
func (c *secretCache) version(n uint64) string { return c.prefix + "-" + strconv.FormatUint(n, 10) }

// generation reads the generation out of a version this cache issued; 0
// for any other.
func (c *secretCache) generation(version string) uint64 {
	n, ok := strings.CutPrefix(version, c.prefix+"-")
	if !ok {
		return 0
	}
	g, err := strconv.ParseUint(n, 10, 64)
	if err != nil {
		return 0
	}
	return g
}

// publish makes secrets (indexed by Validation) the served set of
// generation and wakes every stream, which sends what its client lacks. The
// version is "<prefix>-<generation>"; a generation that does not advance
// (a breach of rotation's contract) still gets a new version, one past the
// last, so that versions never repeat. namesChanged says whether the
// served names differ from the previous snapshot's (always, for the first).
func (c *secretCache) publish(generation uint64, secrets [2]map[string]*tlsv3.Secret) (snap *snapshot, namesChanged bool, err error) {
	snap = &snapshot{generation: generation}
	known := make(map[*tlsv3.Secret]servedSecret)
	for v, s := range secrets {
		sv, err := newServed(s, known)
		if err != nil {
			return nil, false, err
		}
		snap.variants[v] = sv
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	n := generation
	if n <= c.number {
		n = c.number + 1
		c.log.Warn("Envoy SDS: generation did not advance; the SDS version no longer equals the generation",
			"generation", generation, "version", c.version(n))
	}
	c.number = n
	snap.version = c.version(n)
	prev := c.current.Swap(snap)
	for st := range c.streams {
		st.wake()
	}
	return snap, prev == nil || !snap.sameNames(prev), nil
}

// add makes st one of the streams publish wakes, until remove; false
// once endStreams ran.
func (c *secretCache) add(st *xdsStream) bool {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.ended {
		return false
	}
	c.streams[st] = struct{}{}
	return true
}

// endStreams ends every open stream, and every stream that opens after.
func (c *secretCache) endStreams() {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.ended = true
	for st := range c.streams {
		st.end()
	}
}

func (c *secretCache) remove(st *xdsStream) {
	c.mu.Lock()
	delete(c.streams, st)
	c.mu.Unlock()
}

// fetch answers the unary FetchSecrets: the requested names that exist
// (all of them for an empty list) at the current version, in the variant
// the requesting node gets. Unknown names are
// left out; if none is known the error lists what is served.
func (c *secretCache) fetch(req *discoveryv3.DiscoveryRequest) (*discoveryv3.DiscoveryResponse, error) {
	snap := c.current.Load()
	if snap == nil {
		return nil, status.Error(codes.Unavailable, "no secrets yet: waiting for the first Workload API update")
	}
	sv := &snap.variants[c.validation(req.GetNode())]
	names := requestedNames(req.GetResourceNames())
	if len(names) == 0 {
		names = sv.names
	}
	resp := &discoveryv3.DiscoveryResponse{VersionInfo: snap.version, TypeUrl: secretType}
	for _, name := range names {
		if s, ok := sv.secrets[name]; ok {
			resp.Resources = append(resp.Resources, &anypb.Any{TypeUrl: secretType, Value: s.wire})
		}
	}
	if len(resp.Resources) == 0 {
		return nil, status.Errorf(codes.NotFound, "none of the requested secrets %q is served; served: %q", clipNames(names), clipNames(sv.names))
	}
	return resp, nil
}

// requestedNames is names sorted, without duplicates, empty names and the
// "*" wildcard.
func requestedNames(names []string) []string {
	out := make([]string, 0, len(names))
	for _, n := range names {
		if n != "" && n != "*" {
			out = append(out, n)
		}
	}
	slices.Sort(out)
	return slices.Compact(out)
}
