package sds

import (
	"cmp"
	"context"
	"slices"
	"sync"
	"time"

	corev3 "github.com/envoyproxy/go-control-plane/envoy/config/core/v3"
	discoveryv3 "github.com/envoyproxy/go-control-plane/envoy/service/discovery/v3"
	"github.com/envoyproxy/go-control-plane/pkg/resource/v3"
	"github.com/envoyproxy/go-control-plane/pkg/server/v3"
)

// Client is one open SDS stream (SotW, Delta or ADS) as the bridge sees it:
// which node it is and which version of the secrets it has accepted. It
// answers "what does Envoy have?" for readiness and status.
type Client struct {
	// Stream is go-control-plane's stream id; SotW and Delta streams are
	// numbered independently, so (Stream, Delta) identifies a stream.
	Stream int64
	Delta  bool
	// Node and Cluster are the node's id and cluster, from its requests.
	Node, Cluster string
	// Validation is the kind of validation_context the client gets, and
	// ValidationReason why: its Envoy version, its node metadata
	// disable_spiffe_cert_validation or the bridge's config, as SPIRE
	// Agent's SDS decides.
	Validation       Validation
	ValidationReason string
	OpenedAt         time.Time
	// AckedVersion is the last SDS version the client accepted; empty
	// until its first ACK. AckedGeneration is the rotation generation of
	// that version (the SDS version is "<prefix>-<generation>"), 0 when the
	// version was not issued by this process.
	AckedVersion    string
	AckedGeneration uint64
	AckedAt         time.Time
	// NACKedVersion and NACK describe the last rejection, if any; Envoy
	// keeps its last accepted secrets then.
	NACKedVersion string
	NACK          string
	NACKedAt      time.Time
}

// maxSentNonces bounds the nonce → version memory per stream: a client
// answers responses in order, so only the newest few can still be ACKed.
const maxSentNonces = 16

type clientState struct {
	Client
	reason validationReason
	sent   map[string]string // response nonce → version
	// sentOrder is a ring of the nonces in sent, oldest at sentNext once
	// full: a fixed array, so recording a push allocates nothing.
	sentOrder [maxSentNonces]string
	sentNext  int
}

// clients follows every stream's ACKs and NACKs. It is fed by the same
// go-control-plane callbacks as tracker and, like it, never changes what
// is sent.
type clients struct {
	cache *secretCache
	now   func() time.Time

	mu      sync.Mutex
	streams map[streamKey]*clientState
}

func newClients(c *secretCache) *clients {
	return &clients{cache: c, now: time.Now, streams: make(map[streamKey]*clientState)}
}

// Clients lists the open SDS streams, oldest first.
func (s *Server) Clients() []Client {
	s.clients.mu.Lock()
	out := make([]Client, 0, len(s.clients.streams))
	for _, st := range s.clients.streams {
		c := st.Client
		c.ValidationReason = st.reason.String()
		out = append(out, c)
	}
	s.clients.mu.Unlock()
	slices.SortFunc(out, func(a, b Client) int {
		if c := a.OpenedAt.Compare(b.OpenedAt); c != 0 {
			return c
		}
		if a.Delta != b.Delta {
			return cmp.Compare(boolInt(a.Delta), boolInt(b.Delta))
		}
		return cmp.Compare(a.Stream, b.Stream)
	})
	return out
}

func boolInt(b bool) int {
	if b {
		return 1
	}
	return 0
}

func (c *clients) open(k streamKey) {
	c.mu.Lock()
	defer c.mu.Unlock()
	v, why := validationFor(nil, c.cache.disabled)
	c.streams[k] = &clientState{
		Client: Client{Stream: k.id, Delta: k.delta, Validation: v, OpenedAt: c.now()},
		reason: why,
		sent:   make(map[string]string, maxSentNonces),
	}
}

func (c *clients) closed(k streamKey) {
	c.mu.Lock()
	defer c.mu.Unlock()
	delete(c.streams, k)
}

func (c *clients) sent(k streamKey, nonce, version string) {
	c.mu.Lock()
	defer c.mu.Unlock()
	st := c.streams[k]
	if st == nil || nonce == "" {
		return
	}
	if oldest := st.sentOrder[st.sentNext]; oldest != "" {
		delete(st.sent, oldest)
	}
	st.sent[nonce] = version
	st.sentOrder[st.sentNext] = nonce
	st.sentNext = (st.sentNext + 1) % maxSentNonces
}

// request records an ACK or NACK. version is what the client says it
// holds (SotW only); the nonce names the response it answers.
func (c *clients) request(k streamKey, node *corev3.Node, version, nonce string, nack bool, detail string) {
	c.mu.Lock()
	defer c.mu.Unlock()
	st := c.streams[k]
	if st == nil {
		return
	}
	if node != nil {
		st.Validation, st.reason = validationFor(node, c.cache.disabled)
	}
	if id := node.GetId(); id != "" {
		st.Node = id
	}
	if cl := node.GetCluster(); cl != "" {
		st.Cluster = cl
	}
	if nonce == "" {
		return // a first request, or a new subscription: no answer to a response
	}
	answered, known := st.sent[nonce]
	switch {
	case nack:
		st.NACKedVersion, st.NACK, st.NACKedAt = answered, detail, c.now()
	case version != "" || known:
		if version == "" {
			version = answered // Delta requests carry no version
		}
		st.AckedVersion, st.AckedGeneration, st.AckedAt = version, c.cache.generation(version), c.now()
	}
}

// callbacks feeds go-control-plane's events to both tracker and clients.
type callbacks struct {
	*tracker
	clients *clients
}

var _ server.Callbacks = callbacks{}

func (cb callbacks) OnStreamOpen(ctx context.Context, id int64, typeURL string) error {
	if err := cb.tracker.OnStreamOpen(ctx, id, typeURL); err != nil {
		return err
	}
	cb.clients.open(streamKey{id: id})
	return nil
}

func (cb callbacks) OnStreamClosed(id int64, node *corev3.Node) {
	cb.clients.closed(streamKey{id: id})
	cb.tracker.OnStreamClosed(id, node)
}

func (cb callbacks) OnDeltaStreamOpen(ctx context.Context, id int64, typeURL string) error {
	if err := cb.tracker.OnDeltaStreamOpen(ctx, id, typeURL); err != nil {
		return err
	}
	cb.clients.open(streamKey{delta: true, id: id})
	return nil
}

func (cb callbacks) OnDeltaStreamClosed(id int64, node *corev3.Node) {
	cb.clients.closed(streamKey{delta: true, id: id})
	cb.tracker.OnDeltaStreamClosed(id, node)
}

func (cb callbacks) OnStreamRequest(id int64, req *discoveryv3.DiscoveryRequest) error {
	if req.GetTypeUrl() == resource.SecretType {
		cb.clients.request(streamKey{id: id}, req.GetNode(), req.GetVersionInfo(), req.GetResponseNonce(),
			req.GetErrorDetail() != nil, req.GetErrorDetail().GetMessage())
	}
	return cb.tracker.OnStreamRequest(id, req)
}

func (cb callbacks) OnStreamDeltaRequest(id int64, req *discoveryv3.DeltaDiscoveryRequest) error {
	if req.GetTypeUrl() == resource.SecretType {
		cb.clients.request(streamKey{delta: true, id: id}, req.GetNode(), "", req.GetResponseNonce(),
			req.GetErrorDetail() != nil, req.GetErrorDetail().GetMessage())
	}
	return cb.tracker.OnStreamDeltaRequest(id, req)
}

func (cb callbacks) OnStreamResponse(ctx context.Context, id int64, req *discoveryv3.DiscoveryRequest, resp *discoveryv3.DiscoveryResponse) {
	if resp.GetTypeUrl() == resource.SecretType {
		cb.clients.sent(streamKey{id: id}, resp.GetNonce(), resp.GetVersionInfo())
	}
	cb.tracker.OnStreamResponse(ctx, id, req, resp)
}

func (cb callbacks) OnStreamDeltaResponse(id int64, req *discoveryv3.DeltaDiscoveryRequest, resp *discoveryv3.DeltaDiscoveryResponse) {
	if resp.GetTypeUrl() == resource.SecretType {
		cb.clients.sent(streamKey{delta: true, id: id}, resp.GetNonce(), resp.GetSystemVersionInfo())
	}
	cb.tracker.OnStreamDeltaResponse(id, req, resp)
}
