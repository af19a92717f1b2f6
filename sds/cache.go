package sds

import (
	"context"
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
	secretv3 "github.com/envoyproxy/go-control-plane/envoy/service/secret/v3"
	"github.com/envoyproxy/go-control-plane/pkg/cache/v3"
	"github.com/envoyproxy/go-control-plane/pkg/resource/v3"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/types/known/anypb"
)

// secretCache owns what is served and under which version: publish makes
// one generation of Secrets, in both Validation variants, current at once,
// as version "<prefix>-<generation>", and pushes every waiting watch. It is
// go-control-plane's cache.Cache for the Secret type, so the version on the
// wire is the one it chose, not a counter inside someone else's cache.
//
// Watches follow LinearCache's rules for one type that SotW does not send
// in full state (so responses carry only what the client lacks): a SotW
// watch is answered when a subscribed secret (every secret, for a wildcard)
// exists at a version the client does not hold; a Delta watch also when a
// known secret was removed or unsubscribed, and a first wildcard request
// always. A SotW request never gets an empty answer, whatever version it
// presents, so a client that connects before the first Update (or after a
// restart of the bridge) waits until one of its secrets exists, as SPIRE
// Agent's SDS waits. SotW secrets carry the version of the generation that
// published them (every generation replaces them all); Delta secrets carry
// go-control-plane's hash of the secret, so an unchanged one is not resent.
//
// Every watch and fetch gets the variant its node gets (validationFor), as
// SPIRE Agent's SDS chooses per request. Fetch, which LinearCache lacks,
// answers the unary FetchSecrets; other resource types on an ADS stream get
// a clear error.
type secretCache struct {
	prefix string
	// disabled is Names.DisableSPIFFECertValidation: the choice for a node
	// that does not make its own.
	disabled bool
	log      *slog.Logger

	// current is the published snapshot; nil until the first one. It is
	// read without mu (Fetch, callbacks, Secrets) and written under it.
	current atomic.Pointer[snapshot]

	mu sync.Mutex
	// number is the version number of current: its generation, unless a
	// generation did not advance.
	number  uint64
	watches map[*watch]struct{}
}

var _ cache.Cache = (*secretCache)(nil)

// snapshot is one published generation as served.
type snapshot struct {
	generation uint64
	version    string
	// variants is indexed by Validation.
	variants [2]served
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

func newServed(secrets map[string]*tlsv3.Secret) (served, error) {
	sv := served{secrets: make(map[string]servedSecret, len(secrets)), names: slices.Sorted(maps.Keys(secrets))}
	for name, sec := range secrets {
		wire, err := cache.MarshalResource(sec)
		if err != nil {
			return served{}, fmt.Errorf("marshal secret %q: %w", name, err)
		}
		sv.secrets[name] = servedSecret{secret: sec, wire: wire, hash: cache.HashResource(wire)}
	}
	return sv, nil
}

func (s *served) has(name string) bool {
	_, ok := s.secrets[name]
	return ok
}

// watch is one waiting SotW or Delta request.
type watch struct {
	validation Validation
	sub        cache.Subscription
	// Exactly one of req and deltaReq is set, with its channel.
	req      *cache.Request
	out      chan cache.Response
	deltaReq *cache.DeltaRequest
	deltaOut chan cache.DeltaResponse
}

func newSecretCache(prefix string, disabled bool, logger cacheLogger) *secretCache {
	return &secretCache{prefix: prefix, disabled: disabled, log: logger.log, watches: make(map[*watch]struct{})}
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
// generation and answers every watch that now lacks something. The
// version is "<prefix>-<generation>"; a generation that does not advance
// (a breach of rotation's contract) still gets a new version, one past the
// last, so that versions never repeat.
func (c *secretCache) publish(generation uint64, secrets [2]map[string]*tlsv3.Secret) (*snapshot, error) {
	snap := &snapshot{generation: generation}
	for v, s := range secrets {
		sv, err := newServed(s)
		if err != nil {
			return nil, err
		}
		snap.variants[v] = sv
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	n := generation
	if n <= c.number {
		n = c.number + 1
		c.log.Warn("sds: generation did not advance; the SDS version no longer equals the generation",
			"generation", generation, "version", c.version(n))
	}
	c.number = n
	snap.version = c.version(n)
	c.current.Store(snap)
	for w := range c.watches {
		if c.respond(w, snap, false) {
			delete(c.watches, w)
		}
	}
	return snap, nil
}

// checkType refuses other resource types, which an ADS stream can ask for.
func checkType(typeURL string) error {
	if typeURL != resource.SecretType {
		return status.Errorf(codes.InvalidArgument, "sds: this server serves only %s, not %s", resource.SecretType, typeURL)
	}
	return nil
}

// checkFetchType refuses a FetchSecrets for another resource type with
// InvalidArgument, as the streams are refused (checkType). go-control-plane
// overwrites the request's type URL with the Secret type before the cache
// and the callbacks see it, so this runs before, as a unary interceptor, on
// the request as the client sent it. An empty type URL means the RPC's own
// type, as on a stream.
func checkFetchType(ctx context.Context, req any, info *grpc.UnaryServerInfo, handler grpc.UnaryHandler) (any, error) {
	if info.FullMethod == secretv3.SecretDiscoveryService_FetchSecrets_FullMethodName {
		if r, ok := req.(*discoveryv3.DiscoveryRequest); ok && r.GetTypeUrl() != "" {
			if err := checkType(r.GetTypeUrl()); err != nil {
				return nil, err
			}
		}
	}
	return handler(ctx, req)
}

func (c *secretCache) CreateWatch(req *cache.Request, sub cache.Subscription, out chan cache.Response) (func(), error) {
	if err := checkType(req.GetTypeUrl()); err != nil {
		return nil, err
	}
	return c.watch(&watch{validation: c.validation(req.GetNode()), sub: sub, req: req, out: out}), nil
}

func (c *secretCache) CreateDeltaWatch(req *cache.DeltaRequest, sub cache.Subscription, out chan cache.DeltaResponse) (func(), error) {
	if err := checkType(req.GetTypeUrl()); err != nil {
		return nil, err
	}
	return c.watch(&watch{validation: c.validation(req.GetNode()), sub: sub, deltaReq: req, deltaOut: out}), nil
}

// watch answers w at once if it lacks something, else keeps it until a
// publish does or the server cancels it.
func (c *secretCache) watch(w *watch) func() {
	c.mu.Lock()
	defer c.mu.Unlock()
	if c.respond(w, c.current.Load(), true) {
		return func() {}
	}
	c.watches[w] = struct{}{}
	return func() {
		c.mu.Lock()
		delete(c.watches, w)
		c.mu.Unlock()
	}
}

// respond sends w what it lacks from snap, if anything, and reports
// whether it did; called with c.mu held. first is true when the watch is
// being created. Each watch gets at most one response: the server makes a
// new one for the next request, and its channel has room for it.
func (c *secretCache) respond(w *watch, snap *snapshot, first bool) bool {
	var sv served
	version := c.version(c.number)
	if snap != nil {
		sv, version = snap.variants[w.validation], snap.version
	}
	delta := w.deltaReq != nil
	resourceVersion := func(s servedSecret) string {
		if delta {
			return s.hash
		}
		return version
	}
	changed, removed := changes(w.sub, &sv, resourceVersion)
	// SotW cannot say "removed" for this type, so only changes are sent;
	// Delta's first wildcard request is answered even when empty, which
	// ends Envoy's initial fetch.
	replyEmpty := delta && first && w.sub.IsWildcard() && w.deltaReq.GetResponseNonce() == ""
	if len(changed) == 0 && (!delta || (len(removed) == 0 && !replyEmpty)) {
		return false
	}
	returned := make(map[string]string, len(w.sub.ReturnedResources())+len(changed))
	maps.Copy(returned, w.sub.ReturnedResources())
	for _, name := range changed {
		returned[name] = resourceVersion(sv.secrets[name])
	}
	for _, name := range removed {
		delete(returned, name)
	}
	if !delta {
		resp := &discoveryv3.DiscoveryResponse{VersionInfo: version, TypeUrl: w.req.GetTypeUrl()}
		for _, name := range changed {
			resp.Resources = append(resp.Resources, &anypb.Any{TypeUrl: w.req.GetTypeUrl(), Value: sv.secrets[name].wire})
		}
		w.out <- &cache.PassthroughResponse{Request: w.req, DiscoveryResponse: resp, ReturnedResources: returned}
		return true
	}
	resp := &discoveryv3.DeltaDiscoveryResponse{SystemVersionInfo: version, TypeUrl: w.deltaReq.GetTypeUrl(), RemovedResources: removed}
	for _, name := range changed {
		s := sv.secrets[name]
		resp.Resources = append(resp.Resources, &discoveryv3.Resource{Name: name, Version: s.hash,
			Resource: &anypb.Any{TypeUrl: w.deltaReq.GetTypeUrl(), Value: s.wire}})
	}
	w.deltaOut <- &cache.DeltaPassthroughResponse{DeltaRequest: w.deltaReq, DeltaDiscoveryResponse: resp, NextVersionMap: returned}
	return true
}

// changes compares what sub holds with sv, as LinearCache does: changed
// are the subscribed secrets (all, for a wildcard) the client lacks at
// their version, removed the ones it holds that are no longer served or
// no longer subscribed. Both are sorted.
func changes(sub cache.Subscription, sv *served, version func(servedSecret) string) (changed, removed []string) {
	known := sub.ReturnedResources()
	lacks := func(name string, s servedSecret) bool {
		v, ok := known[name]
		return !ok || v != version(s)
	}
	if sub.IsWildcard() {
		for _, name := range sv.names {
			if lacks(name, sv.secrets[name]) {
				changed = append(changed, name)
			}
		}
		for name := range known {
			if !sv.has(name) {
				removed = append(removed, name)
			}
		}
	} else {
		subscribed := sub.SubscribedResources()
		for name := range subscribed {
			if s, ok := sv.secrets[name]; ok && lacks(name, s) {
				changed = append(changed, name)
			}
		}
		for name := range known {
			if _, ok := subscribed[name]; !ok || !sv.has(name) {
				removed = append(removed, name)
			}
		}
	}
	slices.Sort(changed)
	slices.Sort(removed)
	return changed, removed
}

// Fetch answers the unary FetchSecrets: the requested names that exist
// (all of them for an empty list) at the current version, in the variant
// the requesting node gets. Unknown names are
// left out; if none is known the error lists what is served.
func (c *secretCache) Fetch(_ context.Context, req *cache.Request) (cache.Response, error) {
	if err := checkType(req.GetTypeUrl()); err != nil {
		return nil, err
	}
	snap := c.current.Load()
	if snap == nil {
		return nil, status.Error(codes.Unavailable, "sds: no secrets yet: waiting for the first Workload API update")
	}
	sv := &snap.variants[c.validation(req.GetNode())]
	names := requestedNames(req.GetResourceNames())
	if len(names) == 0 {
		names = sv.names
	}
	resp := &discoveryv3.DiscoveryResponse{VersionInfo: snap.version, TypeUrl: resource.SecretType}
	for _, name := range names {
		if s, ok := sv.secrets[name]; ok {
			resp.Resources = append(resp.Resources, &anypb.Any{TypeUrl: resource.SecretType, Value: s.wire})
		}
	}
	if len(resp.Resources) == 0 {
		return nil, status.Errorf(codes.NotFound, "sds: none of the requested secrets %q is served; served: %q", clipNames(names), clipNames(sv.names))
	}
	return &cache.PassthroughResponse{Request: req, DiscoveryResponse: resp}, nil
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

// cacheLogger adapts go-control-plane's logger to slog. Its Info messages
// are one per watch, so they go to Debug.
type cacheLogger struct{ log *slog.Logger }

func (l cacheLogger) logf(level slog.Level, format string, args []any) {
	if l.log.Enabled(context.Background(), level) {
		// go-control-plane prints whole subscriptions, which a client
		// can make megabytes long.
		msg := fmt.Sprintf(format, args...)
		if len(msg) > maxLoggedLine {
			msg = fmt.Sprintf("%s… (%d bytes)", strings.ToValidUTF8(msg[:maxLoggedLine], ""), len(msg))
		}
		l.log.Log(context.Background(), level, "sds: go-control-plane: "+msg)
	}
}

func (l cacheLogger) Debugf(format string, args ...any) { l.logf(slog.LevelDebug, format, args) }
func (l cacheLogger) Infof(format string, args ...any)  { l.logf(slog.LevelDebug, format, args) }
func (l cacheLogger) Warnf(format string, args ...any)  { l.logf(slog.LevelWarn, format, args) }
func (l cacheLogger) Errorf(format string, args ...any) { l.logf(slog.LevelError, format, args) }
