package sds

import (
	"cmp"
	"context"
	"fmt"
	"log/slog"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	corev3 "github.com/envoyproxy/go-control-plane/envoy/config/core/v3"
	discoveryv3 "github.com/envoyproxy/go-control-plane/envoy/service/discovery/v3"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
)

// tracker follows the stream loop's events (xdsServer calls its On…
// methods) and holds what the bridge reports per open stream: it counts streams, pushes and NACKs, logs NACKs,
// warns once per change when a stream asks for secrets that are not
// served, and follows each stream's ACKs and NACKs for Clients. It never
// changes what is sent, so a NACK cannot trigger a resend loop.
type tracker struct {
	log   *slog.Logger
	cache *secretCache
	now   func() time.Time

	streamsOpen atomic.Int64
	pushes      atomic.Int64
	nacks       atomic.Int64

	mu      sync.Mutex
	streams map[streamKey]*stream
}

// streamKey tells streams apart: SotW and Delta streams are numbered
// independently.
type streamKey struct {
	delta bool
	id    int64
}

// stream is one open stream: what it subscribes to, for the warnings about
// unknown names, and what it has accepted, for Clients.
type stream struct {
	// Client is what Clients shows; its Node and Validation are also what
	// the logs and the unknown-name checks use.
	Client
	reason validationReason

	names    map[string]struct{}
	wildcard bool
	// requested is set once the stream sent its first request.
	requested bool
	// unknown is the last reported set of unknown names, joined.
	unknown string
	// nackedNonce is the response the last logged NACK rejected: a client
	// repeating a NACK is counted each time but logged once.
	nackedNonce string

	// sent is a ring of the newest responses, oldest at sentNext once
	// full: a fixed array, so recording a push allocates nothing and a
	// stream holds no map for it.
	sent     [maxSentNonces]sentResponse
	sentNext int
}

// sentResponse is the version a response carried, by its nonce.
type sentResponse struct{ nonce, version string }

// version is the version of the response with nonce, if remembered.
func (st *stream) version(nonce string) (string, bool) {
	for _, r := range st.sent {
		if r.nonce == nonce {
			return r.version, true
		}
	}
	return "", false
}

// maxSentNonces bounds the nonce → version memory per stream: a client
// answers responses in order, so only the newest few can still be ACKed.
const maxSentNonces = 16

// Bounds on what one request can put into a log line: names, node ids
// and error details are chosen by the client.
const (
	maxLoggedNames = 16
	maxLoggedText  = 256
	maxLoggedLine  = 2048
)

// maxNamesPerStream bounds one stream's subscription. Envoy asks for a
// handful of secrets; a stream keeps a hundred bytes or more per
// subscribed name (its subscription and the tracker's copy), so without a bound a single stream could hold hundreds
// of MiB (a 4 MiB request holds ~500,000 short names, and Delta requests
// add up).
const maxNamesPerStream = 1 << 17

func errTooManyNames(n int) error {
	return status.Errorf(codes.ResourceExhausted, "the stream subscribes to %d secret names, more than the %d allowed", n, maxNamesPerStream)
}

// clip bounds a client-chosen string for the logs.
func clip(s string) string {
	if len(s) <= maxLoggedText {
		return s
	}
	return fmt.Sprintf("%s… (%d bytes)", strings.ToValidUTF8(s[:maxLoggedText], ""), len(s))
}

// clipNames bounds a client-chosen list of names for the logs.
func clipNames(names []string) []string {
	if len(names) <= maxLoggedNames {
		out := make([]string, len(names))
		for i, n := range names {
			out[i] = clip(n)
		}
		return out
	}
	out := clipNames(names[:maxLoggedNames])
	return append(out, fmt.Sprintf("… and %d more", len(names)-maxLoggedNames))
}

func newTracker(log *slog.Logger, c *secretCache) *tracker {
	return &tracker{log: log, cache: c, now: time.Now, streams: make(map[streamKey]*stream)}
}

func (t *tracker) open(k streamKey, typeURL string) {
	t.streamsOpen.Add(1)
	v, why := validationFor(nil, t.cache.disabled)
	st := &stream{
		Client: Client{Stream: k.id, Delta: k.delta, Validation: v, OpenedAt: t.now()},
		reason: why,
		names:  make(map[string]struct{}),
	}
	t.mu.Lock()
	t.streams[k] = st
	t.mu.Unlock()
	t.log.Debug("Envoy SDS: stream opened", "stream", k.id, "delta", k.delta, "type", typeURL)
}

func (t *tracker) closed(k streamKey, node *corev3.Node) {
	t.streamsOpen.Add(-1)
	t.mu.Lock()
	delete(t.streams, k)
	t.mu.Unlock()
	t.log.Debug("Envoy SDS: stream closed", "stream", k.id, "delta", k.delta, "node", clip(node.GetId()))
}

// OnStreamRequest records a SotW request; the error ends the stream.
func (t *tracker) OnStreamRequest(id int64, req *discoveryv3.DiscoveryRequest) error {
	if req.GetTypeUrl() != secretType {
		return nil // the stream refuses it with a clear status
	}
	k := streamKey{id: id}
	t.mu.Lock()
	defer t.mu.Unlock()
	st := t.streams[k]
	if st == nil {
		return nil
	}
	t.request(k, st, req.GetNode(), req.GetVersionInfo(), req.GetResponseNonce(), req.GetErrorDetail().GetMessage(), req.GetErrorDetail() != nil)
	// SotW: every request carries the whole subscription; none means
	// (legacy) wildcard.
	if n := len(req.GetResourceNames()); n > maxNamesPerStream {
		return errTooManyNames(n)
	}
	clear(st.names)
	st.wildcard = len(req.GetResourceNames()) == 0
	for _, n := range req.GetResourceNames() {
		if n == "*" {
			st.wildcard = true
			continue
		}
		st.names[n] = struct{}{}
	}
	t.checkUnknown(k, st, t.cache.current.Load())
	return nil
}

// OnStreamDeltaRequest records a Delta request; the error ends the stream.
func (t *tracker) OnStreamDeltaRequest(id int64, req *discoveryv3.DeltaDiscoveryRequest) error {
	if req.GetTypeUrl() != secretType {
		return nil
	}
	k := streamKey{delta: true, id: id}
	t.mu.Lock()
	defer t.mu.Unlock()
	st := t.streams[k]
	if st == nil {
		return nil
	}
	first := !st.requested
	st.requested = true
	// Delta requests carry no version.
	t.request(k, st, req.GetNode(), "", req.GetResponseNonce(), req.GetErrorDetail().GetMessage(), req.GetErrorDetail() != nil)
	// Delta: requests change the subscription; a first request without
	// names is a (legacy) wildcard subscription.
	if first && len(req.GetResourceNamesSubscribe()) == 0 {
		st.wildcard = true
	}
	for _, n := range req.GetResourceNamesSubscribe() {
		if n == "*" {
			st.wildcard = true
			continue
		}
		st.names[n] = struct{}{}
	}
	for _, n := range req.GetResourceNamesUnsubscribe() {
		if n == "*" {
			st.wildcard = false
			continue
		}
		delete(st.names, n)
	}
	if n := len(st.names); n > maxNamesPerStream {
		return errTooManyNames(n)
	}
	t.checkUnknown(k, st, t.cache.current.Load())
	return nil
}

// request records and logs one request: the node, if it says, and the
// ACK or NACK of the response its nonce names. version is what the client
// says it holds (SotW only). Called with t.mu held.
func (t *tracker) request(k streamKey, st *stream, node *corev3.Node, version, nonce, errMsg string, nack bool) {
	if node != nil {
		st.Validation, st.reason = validationFor(node, t.cache.disabled)
	}
	if id := node.GetId(); id != "" {
		st.Node = id
	}
	if cl := node.GetCluster(); cl != "" {
		st.Cluster = cl
	}
	if nonce != "" { // else a first request, or a new subscription: no answer to a response
		answered, known := st.version(nonce)
		switch {
		case nack:
			st.NACKedVersion, st.NACK, st.NACKedAt = answered, errMsg, t.now()
		case version != "" || known:
			acked := cmp.Or(version, answered) // Delta requests carry no version
			st.AckedVersion, st.AckedGeneration, st.AckedAt = acked, t.cache.generation(acked), t.now()
		}
	}
	switch {
	case nack:
		t.nacks.Add(1)
		// The client keeps its last accepted secrets; nothing is resent
		// until the next Update.
		level := slog.LevelError
		if nonce != "" && nonce == st.nackedNonce {
			level = slog.LevelDebug // the same rejection again: counted, not logged twice
		}
		st.nackedNonce = nonce
		t.log.Log(context.Background(), level, "Envoy SDS: client rejected secrets", "stream", k.id, "delta", k.delta,
			"node", clip(st.Node), "kept_version", clip(version), "nonce", clip(nonce), "error", clip(errMsg))
	case !t.debug():
		// Every ACK passes here: building the attributes of a line that
		// is not logged would cost allocations per stream per Update.
	case nonce != "":
		t.log.Debug("Envoy SDS: client acknowledged secrets", "stream", k.id, "delta", k.delta, "node", clip(st.Node),
			"version", clip(version), "nonce", clip(nonce))
	default:
		t.log.Debug("Envoy SDS: request", "stream", k.id, "delta", k.delta, "node", clip(st.Node), "version", clip(version))
	}
}

// checkUnknown warns when the set of requested but unserved names of a
// stream changes; called with t.mu held. Before the first Update every name
// is unknown and requests simply wait, so nothing is reported then.
func (t *tracker) checkUnknown(k streamKey, st *stream, snap *snapshot) {
	if snap == nil {
		return
	}
	sv := &snap.variants[st.Validation]
	var unknown []string
	for n := range st.names {
		if !sv.has(n) {
			unknown = append(unknown, n)
		}
	}
	unknown = requestedNames(unknown)
	key := strings.Join(unknown, "\x00")
	if key == st.unknown {
		return
	}
	st.unknown = key
	if len(unknown) == 0 {
		return
	}
	t.log.Warn("Envoy SDS: requested secrets are not served; they stay pending", "stream", k.id, "delta", k.delta,
		"node", clip(st.Node), "unknown", clipNames(unknown), "served", clipNames(sv.names), "validation", st.Validation)
}

// recheck re-evaluates every stream after an Update: names may have
// appeared or vanished.
func (t *tracker) recheck(snap *snapshot) {
	t.mu.Lock()
	defer t.mu.Unlock()
	for k, st := range t.streams {
		t.checkUnknown(k, st, snap)
	}
}

// debug reports whether debug lines are logged; the push and ACK paths
// check it first, so that they allocate nothing for logging otherwise.
func (t *tracker) debug() bool { return t.log.Enabled(context.Background(), slog.LevelDebug) }

// sent remembers which version the response with nonce carried, so that
// an ACK without a version (Delta) names it.
func (t *tracker) sent(k streamKey, typeURL, nonce, version string) {
	if typeURL != secretType || nonce == "" {
		return
	}
	t.mu.Lock()
	defer t.mu.Unlock()
	st := t.streams[k]
	if st == nil {
		return
	}
	st.sent[st.sentNext] = sentResponse{nonce: nonce, version: version}
	st.sentNext = (st.sentNext + 1) % maxSentNonces
}

// OnStreamResponse counts a SotW response about to be sent.
func (t *tracker) OnStreamResponse(id int64, resp *discoveryv3.DiscoveryResponse) {
	t.sent(streamKey{id: id}, resp.GetTypeUrl(), resp.GetNonce(), resp.GetVersionInfo())
	t.pushes.Add(1)
	if !t.debug() {
		return
	}
	t.log.Debug("Envoy SDS: push", "stream", id, "version", resp.GetVersionInfo(), "nonce", resp.GetNonce(),
		"count", len(resp.GetResources()))
}

// OnStreamDeltaResponse counts a Delta response about to be sent.
func (t *tracker) OnStreamDeltaResponse(id int64, resp *discoveryv3.DeltaDiscoveryResponse) {
	t.sent(streamKey{delta: true, id: id}, resp.GetTypeUrl(), resp.GetNonce(), resp.GetSystemVersionInfo())
	t.pushes.Add(1)
	if !t.debug() {
		return
	}
	t.log.Debug("Envoy SDS: push", "stream", id, "delta", true, "version", resp.GetSystemVersionInfo(),
		"nonce", resp.GetNonce(), "count", len(resp.GetResources()), "removed", len(resp.GetRemovedResources()))
}

// OnFetchRequest warns about requested names that are not served.
func (t *tracker) OnFetchRequest(_ context.Context, req *discoveryv3.DiscoveryRequest) {
	snap := t.cache.current.Load()
	if snap == nil {
		return
	}
	v := t.cache.validation(req.GetNode())
	sv := &snap.variants[v]
	var unknown []string
	for _, n := range requestedNames(req.GetResourceNames()) {
		if !sv.has(n) {
			unknown = append(unknown, n)
		}
	}
	if len(unknown) > 0 {
		t.log.Warn("Envoy SDS: fetch asks for secrets that are not served", "node", clip(req.GetNode().GetId()),
			"unknown", clipNames(unknown), "served", clipNames(sv.names), "validation", v)
	}
}

func (t *tracker) OnFetchResponse(req *discoveryv3.DiscoveryRequest, resp *discoveryv3.DiscoveryResponse) {
	t.log.Debug("Envoy SDS: fetch", "node", clip(req.GetNode().GetId()), "version", resp.GetVersionInfo(),
		"count", len(resp.GetResources()))
}
