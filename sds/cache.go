package sds

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"maps"
	"slices"
	"strconv"
	"strings"
	"sync/atomic"

	corev3 "github.com/envoyproxy/go-control-plane/envoy/config/core/v3"
	discoveryv3 "github.com/envoyproxy/go-control-plane/envoy/service/discovery/v3"
	secretv3 "github.com/envoyproxy/go-control-plane/envoy/service/secret/v3"
	"github.com/envoyproxy/go-control-plane/pkg/cache/types"
	"github.com/envoyproxy/go-control-plane/pkg/cache/v3"
	"github.com/envoyproxy/go-control-plane/pkg/resource/v3"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/types/known/anypb"
)

// secretCache serves Secrets from two LinearCaches, one per Validation,
// and routes every watch and fetch by the requesting node, as SPIRE Agent's
// SDS chooses per request (validationFor). Apply updates both together, so
// they report the same version for a generation. It adds what LinearCache
// lacks for SDS:
//   - Fetch, which LinearCache does not implement, answered from the
//     current snapshot;
//   - waiting: LinearCache answers a request without a version of its own
//     at once, even when it holds none of the requested secrets, so a
//     client that connects before the first Update (or after a restart of
//     the bridge) would get an empty response. Such requests are handed to
//     LinearCache as "I hold version 0 of this cache", so they wait until
//     one of their secrets exists, as SPIRE Agent's SDS waits;
//   - a clear error for other resource types on an ADS stream.
type secretCache struct {
	// variants is indexed by Validation.
	variants [2]*cache.LinearCache
	prefix   string
	// disabled is Names.DisableSPIFFECertValidation: the choice for a node
	// that does not make its own.
	disabled bool

	// current is the snapshot served by Fetch and used to tell known from
	// unknown names; nil until the first Update.
	current atomic.Pointer[snapshot]
}

var _ cache.Cache = (*secretCache)(nil)

// snapshot is one applied Update as served.
type snapshot struct {
	generation uint64
	version    string
	// variants is indexed by Validation.
	variants [2]served
}

// served is the set of Secrets of one Validation.
type served struct {
	secrets map[string]types.Resource
	names   []string // sorted
}

func newServed(secrets map[string]types.Resource) served {
	return served{secrets: secrets, names: slices.Sorted(maps.Keys(secrets))}
}

func (s *served) has(name string) bool {
	_, ok := s.secrets[name]
	return ok
}

func newSecretCache(prefix string, disabled bool, logger cacheLogger) *secretCache {
	c := &secretCache{prefix: prefix, disabled: disabled}
	for i := range c.variants {
		c.variants[i] = cache.NewLinearCache(resource.SecretType,
			cache.WithVersionPrefix(prefix), cache.WithLogger(logger))
	}
	return c
}

// validation is what node gets.
func (c *secretCache) validation(node *corev3.Node) Validation {
	v, _ := validationFor(node, c.disabled)
	return v
}

// version is the version string LinearCache reports after its n-th update.
func (c *secretCache) version(n uint64) string { return c.prefix + strconv.FormatUint(n, 10) }

// set replaces the served Secrets of every variant; each LinearCache
// version moves by one.
func (c *secretCache) set(s *snapshot) {
	for v, sv := range s.variants {
		c.variants[v].SetResources(sv.secrets)
	}
	c.current.Store(s)
}

// skip moves every LinearCache version by one without a change.
func (c *secretCache) skip() error {
	var errs []error
	for _, lc := range c.variants {
		errs = append(errs, lc.UpdateResources(nil, nil))
	}
	return errors.Join(errs...)
}

// NumWatches counts the watches waiting on name, in every variant.
func (c *secretCache) NumWatches(name string) int {
	n := 0
	for _, lc := range c.variants {
		n += lc.NumWatches(name)
	}
	return n
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
	if !strings.HasPrefix(req.GetVersionInfo(), c.prefix) {
		r := proto.Clone(req).(*discoveryv3.DiscoveryRequest)
		r.VersionInfo = c.version(0)
		req = r
	}
	return c.variants[c.validation(req.GetNode())].CreateWatch(req, sub, out)
}

func (c *secretCache) CreateDeltaWatch(req *cache.DeltaRequest, sub cache.Subscription, out chan cache.DeltaResponse) (func(), error) {
	if err := checkType(req.GetTypeUrl()); err != nil {
		return nil, err
	}
	return c.variants[c.validation(req.GetNode())].CreateDeltaWatch(req, sub, out)
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
		res, ok := sv.secrets[name]
		if !ok {
			continue
		}
		a, err := anypb.New(res)
		if err != nil {
			return nil, status.Errorf(codes.Internal, "sds: fetch: pack secret %q: %v", name, err)
		}
		resp.Resources = append(resp.Resources, a)
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
