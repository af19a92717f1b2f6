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

	limits limits
	// overLimit counts streams ended over a limit of limits.
	overLimit overLimit

	mu      sync.Mutex
	streams map[streamKey]*stream
	// peers is what each peer uid's streams hold, for limits.
	peers map[uint32]*peerUsage
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

	// uid is the stream's peer; held is what it counts against the peer's
	// limits: its names, and a Delta stream's initial versions.
	uid     uint32
	held    held
	initial held

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

func newTracker(log *slog.Logger, c *secretCache, l limits) *tracker {
	return &tracker{log: log, cache: c, now: time.Now, limits: l.withDefaults(),
		streams: make(map[streamKey]*stream), peers: make(map[uint32]*peerUsage)}
}

// open registers a stream of peer uid; the error (ResourceExhausted) ends
// it when the peer holds as many streams as it may.
func (t *tracker) open(k streamKey, typeURL string, uid uint32) error {
	v, why := validationFor(nil, t.cache.disabled)
	st := &stream{
		Client: Client{Stream: k.id, Delta: k.delta, Validation: v, OpenedAt: t.now()},
		reason: why,
		uid:    uid,
		names:  make(map[string]struct{}),
	}
	t.mu.Lock()
	p := t.peers[uid]
	if p == nil {
		p = &peerUsage{}
		t.peers[uid] = p
	}
	if p.streams >= t.limits.streamsPerPeer {
		t.mu.Unlock()
		err := errTooManyStreams(uid, t.limits.streamsPerPeer)
		t.refuse(k, err)
		return err
	}
	p.streams++
	t.streams[k] = st
	t.mu.Unlock()
	t.streamsOpen.Add(1)
	t.log.Debug("Envoy SDS: stream opened", "stream", k.id, "delta", k.delta, "type", typeURL)
	return nil
}

func (t *tracker) closed(k streamKey, node *corev3.Node) {
	t.mu.Lock()
	st := t.streams[k]
	if st == nil {
		t.mu.Unlock()
		return
	}
	delete(t.streams, k)
	p := t.peers[st.uid]
	p.streams--
	p.names -= st.held.names + st.initial.names
	p.nameBytes -= st.held.nameBytes + st.initial.nameBytes
	if *p == (peerUsage{}) {
		delete(t.peers, st.uid)
	}
	t.mu.Unlock()
	t.streamsOpen.Add(-1)
	t.log.Debug("Envoy SDS: stream closed", "stream", k.id, "delta", k.delta, "node", clip(node.GetId()))
}

// account counts st's names against its peer's limits after a request
// changed them; called with t.mu held. The error (ResourceExhausted) ends
// the stream, and closed gives back what it held.
func (t *tracker) account(k streamKey, st *stream) error {
	now := held{names: len(st.names)}
	for n := range st.names {
		now.nameBytes += len(n)
	}
	p := t.peers[st.uid]
	p.names += now.names - st.held.names
	p.nameBytes += now.nameBytes - st.held.nameBytes
	st.held = now
	var err error
	switch {
	case now.names+st.initial.names > t.limits.namesPerStream:
		err = errTooManyNames(now.names+st.initial.names, t.limits.namesPerStream)
	case p.names > t.limits.namesPerPeer || p.nameBytes > t.limits.nameBytesPerPeer:
		err = errPeerNames(st.uid, p.names, p.nameBytes)
	default:
		return nil
	}
	t.refuse(k, err)
	return err
}

// refuse counts a stream ended over a limit and logs it, at most once per
// limitLogEvery.
func (t *tracker) refuse(k streamKey, err error) {
	if t.overLimit.report(t.now()) {
		t.log.Warn("Envoy SDS: stream ended: over a limit on what one client may hold (counted; logged at most every "+
			limitLogEvery.String()+")", "stream", k.id, "delta", k.delta, "error", status.Convert(err).Message(),
			"refused_since_start", t.overLimit.count.Load())
	}
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
	// (legacy) wildcard. A list over the bound is refused before it is
	// kept.
	if n := len(req.GetResourceNames()); n > t.limits.namesPerStream {
		err := errTooManyNames(n, t.limits.namesPerStream)
		t.refuse(k, err)
		return err
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
	if err := t.account(k, st); err != nil {
		return err
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
	if first {
		// The subscription keeps the versions the client says it holds.
		for n, v := range req.GetInitialResourceVersions() {
			st.initial.names++
			st.initial.nameBytes += len(n) + len(v)
		}
		p := t.peers[st.uid]
		p.names += st.initial.names
		p.nameBytes += st.initial.nameBytes
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
	if err := t.account(k, st); err != nil {
		return err
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
	// What is kept is bounded (clipTo): the stream keeps it while open,
	// and /status shows it.
	if id := node.GetId(); id != "" {
		st.Node = clipTo(id, maxStoredID)
	}
	if cl := node.GetCluster(); cl != "" {
		st.Cluster = clipTo(cl, maxStoredID)
	}
	if nonce != "" { // else a first request, or a new subscription: no answer to a response
		answered, known := st.version(nonce)
		switch {
		case nack:
			st.NACKedVersion, st.NACK, st.NACKedAt = answered, clipTo(errMsg, maxStoredText), t.now()
		case version != "" || known:
			acked := cmp.Or(version, answered) // Delta requests carry no version
			st.AckedVersion, st.AckedGeneration, st.AckedAt = clipTo(acked, maxStoredVersion), t.cache.generation(acked), t.now()
		}
	}
	switch {
	case nack:
		t.nacks.Add(1)
		// The client keeps its last accepted secrets; nothing is resent
		// until the next Update.
		level := slog.LevelError
		if nonce != "" && clipTo(nonce, maxStoredVersion) == st.nackedNonce {
			level = slog.LevelDebug // the same rejection again: counted, not logged twice
		}
		st.nackedNonce = clipTo(nonce, maxStoredVersion)
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
