package sds

import (
	"context"
	"strconv"
	"sync"
	"sync/atomic"

	corev3 "github.com/envoyproxy/go-control-plane/envoy/config/core/v3"
	discoveryv3 "github.com/envoyproxy/go-control-plane/envoy/service/discovery/v3"
	secretv3 "github.com/envoyproxy/go-control-plane/envoy/service/secret/v3"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
	"google.golang.org/grpc/tap"
	"google.golang.org/protobuf/types/known/anypb"
)

// secretType is the type URL of an Envoy Secret, the one resource type
// served.
const secretType = "type.googleapis.com/envoy.extensions.transport_sockets.tls.v3.Secret"

// adsType is the type of an ADS stream: none, so its requests must name one.
const adsType = ""

// xdsServer serves SDS (SotW, Delta, the unary FetchSecrets) and ADS with
// secrets only. Each stream costs one goroutine while it waits: gRPC's
// handler receives and answers its requests. A push after a publish runs
// on a short-lived goroutine of its own, at most one per stream (gRPC
// allows one sender beside the receiver), so a client that does not read
// blocks only itself.
//
// The protocol is the one go-control-plane v0.14's server and LinearCache
// gave the bridge before: a request opens a "watch" that gets at most one
// response, when the client lacks something (see xdsStream.next); a SotW
// request that does not name the last response's nonce is stale and
// ignored; each Delta request replaces the watch.
type xdsServer struct {
	secretv3.UnimplementedSecretDiscoveryServiceServer
	discoveryv3.UnimplementedAggregatedDiscoveryServiceServer

	cache   *secretCache
	tracker *tracker
	// sotwIDs numbers SotW streams (with ADS), deltaIDs Delta streams,
	// independently, as Client.Stream shows them.
	sotwIDs, deltaIDs atomic.Int64
}

type (
	sotwServerStream  = grpc.BidiStreamingServer[discoveryv3.DiscoveryRequest, discoveryv3.DiscoveryResponse]
	deltaServerStream = grpc.BidiStreamingServer[discoveryv3.DeltaDiscoveryRequest, discoveryv3.DeltaDiscoveryResponse]
)

func (x *xdsServer) StreamSecrets(ss secretv3.SecretDiscoveryService_StreamSecretsServer) error {
	return x.sotw(ss, secretType)
}

func (x *xdsServer) StreamAggregatedResources(ss discoveryv3.AggregatedDiscoveryService_StreamAggregatedResourcesServer) error {
	return x.sotw(ss, adsType)
}

func (x *xdsServer) DeltaSecrets(ss secretv3.SecretDiscoveryService_DeltaSecretsServer) error {
	return x.delta(ss, secretType)
}

func (x *xdsServer) DeltaAggregatedResources(ss discoveryv3.AggregatedDiscoveryService_DeltaAggregatedResourcesServer) error {
	return x.delta(ss, adsType)
}

// FetchSecrets answers the unary request with what is served now; a
// request for another type is refused as on a stream.
func (x *xdsServer) FetchSecrets(ctx context.Context, req *discoveryv3.DiscoveryRequest) (*discoveryv3.DiscoveryResponse, error) {
	if req == nil {
		return nil, status.Error(codes.Unavailable, "empty request")
	}
	typeURL, err := requestType(req.GetTypeUrl(), secretType)
	if err != nil {
		return nil, err
	}
	req.TypeUrl = typeURL
	x.tracker.OnFetchRequest(ctx, req)
	resp, err := x.cache.fetch(req)
	if err != nil {
		return nil, err
	}
	x.tracker.OnFetchResponse(req, resp)
	return resp, nil
}

// sotw runs one SotW stream.
func (x *xdsServer) sotw(ss sotwServerStream, streamType string) error {
	return serveStream(x, ss, streamKey{id: x.sotwIDs.Add(1)}, streamType, func(st *xdsStream, req *discoveryv3.DiscoveryRequest) error {
		return x.sotwRequest(st, req, streamType)
	})
}

// serveStream runs one stream on gRPC's handler goroutine: take each request,
// then send what the stream is due. A receive error means the client left
// or the server stops: the stream ends without one.
func serveStream[Req, Resp any](x *xdsServer, ss grpc.BidiStreamingServer[Req, Resp], k streamKey, streamType string,
	take func(*xdsStream, *Req) error) error {
	st, err := x.open(ss, k, streamType)
	if st == nil {
		return err
	}
	defer x.close(st)
	for {
		req, err := ss.Recv()
		if err != nil {
			return nil
		}
		if err := take(st, req); err != nil {
			return err
		}
		if err := st.flush(); err != nil {
			return err
		}
	}
}

// sotwRequest takes one SotW request: the whole subscription, and the ACK
// or NACK of the last response.
func (x *xdsServer) sotwRequest(st *xdsStream, req *discoveryv3.DiscoveryRequest, streamType string) error {
	typeURL, err := requestType(req.GetTypeUrl(), streamType)
	if err != nil {
		return err
	}
	req.TypeUrl = typeURL
	st.nodeOf(&req.Node)
	if err := x.tracker.OnStreamRequest(st.key.id, req); err != nil {
		return err
	}
	st.mu.Lock()
	defer st.mu.Unlock()
	if st.sentNonce != "" && req.GetResponseNonce() != st.sentNonce {
		return nil // stale: the client has not seen the last response yet
	}
	if st.sub == nil {
		st.sub = newSotwSubscription(req.GetResourceNames())
	} else {
		st.sub.setSotw(req.GetResourceNames())
	}
	st.watch()
	return nil
}

// delta runs one Delta stream.
func (x *xdsServer) delta(ss deltaServerStream, streamType string) error {
	return serveStream(x, ss, streamKey{delta: true, id: x.deltaIDs.Add(1)}, streamType, func(st *xdsStream, req *discoveryv3.DeltaDiscoveryRequest) error {
		return x.deltaRequest(st, req, streamType)
	})
}

// deltaRequest takes one Delta request: a change of the subscription, an
// ACK or a NACK.
func (x *xdsServer) deltaRequest(st *xdsStream, req *discoveryv3.DeltaDiscoveryRequest, streamType string) error {
	typeURL, err := requestType(req.GetTypeUrl(), streamType)
	if err != nil {
		return err
	}
	req.TypeUrl = typeURL
	st.nodeOf(&req.Node)
	if err := x.tracker.OnStreamDeltaRequest(st.key.id, req); err != nil {
		return err
	}
	st.mu.Lock()
	defer st.mu.Unlock()
	if st.sub == nil {
		st.sub = newDeltaSubscription(req.GetResourceNamesSubscribe(), req.GetResourceNamesUnsubscribe(), req.GetInitialResourceVersions())
	} else {
		st.sub.updateDelta(req.GetResourceNamesSubscribe(), req.GetResourceNamesUnsubscribe())
	}
	// A first wildcard request is answered even when nothing is served:
	// that ends Envoy's initial fetch.
	st.replyEmpty = st.sub.wildcard && req.GetResponseNonce() == ""
	st.watch()
	return nil
}

// requestType is the type a request asks for: its own, else its stream's.
// Only Secrets are served.
func requestType(typeURL, streamType string) (string, error) {
	if typeURL == "" {
		if streamType == adsType {
			return "", status.Error(codes.InvalidArgument, "type URL is required for ADS")
		}
		typeURL = streamType
	}
	return typeURL, checkType(typeURL)
}

// checkType refuses other resource types, which an ADS stream or a
// FetchSecrets can ask for.
func checkType(typeURL string) error {
	if typeURL != secretType {
		return status.Errorf(codes.InvalidArgument, "this server serves only %s, not %s", secretType, typeURL)
	}
	return nil
}

// open registers a new stream; nil when the server is stopping, or with
// the error that ends it when its peer holds as many streams as it may.
func (x *xdsServer) open(ss grpc.ServerStream, k streamKey, streamType string) (*xdsStream, error) {
	st := &xdsStream{key: k, ss: ss, end: endOf(ss.Context()), cache: x.cache, tracker: x.tracker, node: &corev3.Node{}}
	if err := x.tracker.open(k, streamType, peerUID(ss.Context())); err != nil {
		return nil, err
	}
	if !x.cache.add(st) {
		x.tracker.closed(k, st.node)
		return nil, nil
	}
	return st, nil
}

// close ends st once its handler returns. gRPC forbids a send after that,
// so it waits for a push in flight; that push ends when the client reads,
// leaves, or the server stops (endableContext).
func (x *xdsServer) close(st *xdsStream) {
	x.cache.remove(st)
	st.mu.Lock()
	st.closed = true
	st.mu.Unlock()
	st.pushes.Wait()
	x.tracker.closed(st.key, st.node)
}

// xdsStream is one open SotW or Delta stream.
type xdsStream struct {
	key streamKey
	ss  grpc.ServerStream
	// end ends the stream's context (endableContext).
	end     context.CancelFunc
	cache   *secretCache
	tracker *tracker
	// node is the last node the client sent, as slimNode keeps it; only
	// the handler uses it.
	node *corev3.Node
	// pushes counts push goroutines in flight: zero or one.
	pushes sync.WaitGroup

	mu sync.Mutex
	// validation is what node gets.
	validation Validation
	// sub is nil until the first request.
	sub *subscription
	// waiting is go-control-plane's open watch: a request is waiting for
	// its response, which goes out once the client lacks something.
	waiting bool
	// replyEmpty answers the waiting Delta request even with nothing to
	// send; the first look at it (its own request, or a push in flight)
	// decides.
	replyEmpty bool
	// sentNonce is the SotW response sent since the last request taken:
	// until a request names it, requests are stale.
	sentNonce string
	nonces    uint64
	// sending is held by the one goroutine that may send (gRPC allows
	// one): the handler after a request, or a push.
	sending bool
	// closed is set when the handler returns: nothing is sent after.
	closed bool
}

// nodeOf fills a request's node with the stream's when it has none (Envoy
// may send it in its first request only), else makes it the stream's,
// slimmed: the request's node may be megabytes of metadata, and the
// stream keeps its node while it is open.
func (st *xdsStream) nodeOf(node **corev3.Node) {
	if *node != nil && !sameNode(st.node, *node) {
		st.node = slimNode(*node)
	}
	*node = st.node
}

// watch opens the watch of the request just taken; called with st.mu held.
func (st *xdsStream) watch() {
	st.validation = st.cache.validation(st.node)
	st.sentNonce = ""
	st.waiting = true
}

// wake starts a push if st waits and no one sends on it; publish calls it
// after it made a new snapshot current.
func (st *xdsStream) wake() {
	st.mu.Lock()
	defer st.mu.Unlock()
	if st.sending || st.closed || !st.waiting {
		return // a sender in flight looks at the newest snapshot before it stops
	}
	st.sending = true
	st.pushes.Add(1)
	go func() {
		defer st.pushes.Done()
		_ = st.sendDue() // a broken stream ends in its handler's Recv
	}()
}

// flush sends what st is due now, unless another goroutine sends.
func (st *xdsStream) flush() error {
	st.mu.Lock()
	if st.sending || st.closed {
		st.mu.Unlock()
		return nil
	}
	st.sending = true
	st.mu.Unlock()
	return st.sendDue()
}

// sendDue sends until st is due nothing; the caller holds the sending
// role, and gives it up here.
func (st *xdsStream) sendDue() error {
	for {
		st.mu.Lock()
		var resp any
		if !st.closed {
			resp = st.next()
		}
		if resp == nil {
			st.sending = false
			st.mu.Unlock()
			return nil
		}
		st.mu.Unlock()
		switch r := resp.(type) {
		case *discoveryv3.DiscoveryResponse:
			st.tracker.OnStreamResponse(st.key.id, r)
		case *discoveryv3.DeltaDiscoveryResponse:
			st.tracker.OnStreamDeltaResponse(st.key.id, r)
		}
		if err := st.ss.SendMsg(resp); err != nil {
			st.mu.Lock()
			st.sending = false
			st.mu.Unlock()
			return err
		}
	}
}

// next is the response st is due from the current snapshot, if any, and
// records it as sent; called with st.mu held by the goroutine that sends.
// As LinearCache: a SotW response carries the subscribed secrets (all, for
// a wildcard) the client lacks at the snapshot's version, never an empty
// list, since SotW cannot say "removed" for this type; a Delta response
// carries those the client lacks at their hash, and removes those no
// longer served or subscribed.
func (st *xdsStream) next() any {
	if !st.waiting {
		return nil
	}
	replyEmpty := st.replyEmpty
	st.replyEmpty = false
	delta := st.key.delta
	snap := st.cache.current.Load()
	sv, version := &nothingServed, st.cache.version(0)
	if snap != nil {
		sv, version = &snap.variants[st.validation], snap.version
	}
	resourceVersion := func(s servedSecret) string {
		if delta {
			return s.hash
		}
		return version
	}
	changed, removed := st.sub.changes(sv, resourceVersion)
	if len(changed) == 0 && (!delta || (len(removed) == 0 && !replyEmpty)) {
		return nil
	}
	// The response is committed: the subscription holds what it carries.
	for _, name := range changed {
		st.sub.returned[name] = resourceVersion(sv.secrets[name])
	}
	for _, name := range removed {
		delete(st.sub.returned, name)
	}
	st.waiting = false
	st.nonces++
	nonce := strconv.FormatUint(st.nonces, 10)
	if !delta {
		st.sentNonce = nonce
		resp := &discoveryv3.DiscoveryResponse{VersionInfo: version, TypeUrl: secretType, Nonce: nonce,
			Resources: make([]*anypb.Any, 0, len(changed))}
		for _, name := range changed {
			resp.Resources = append(resp.Resources, &anypb.Any{TypeUrl: secretType, Value: sv.secrets[name].wire})
		}
		return resp
	}
	resp := &discoveryv3.DeltaDiscoveryResponse{SystemVersionInfo: version, TypeUrl: secretType, Nonce: nonce,
		RemovedResources: removed}
	for _, name := range changed {
		s := sv.secrets[name]
		resp.Resources = append(resp.Resources, &discoveryv3.Resource{Name: name, Version: s.hash,
			Resource: &anypb.Any{TypeUrl: secretType, Value: s.wire}})
	}
	return resp
}

// xdsStreamMethods are the streams that get an endableContext.
var xdsStreamMethods = map[string]bool{
	secretv3.SecretDiscoveryService_StreamSecrets_FullMethodName:                    true,
	secretv3.SecretDiscoveryService_DeltaSecrets_FullMethodName:                     true,
	discoveryv3.AggregatedDiscoveryService_StreamAggregatedResources_FullMethodName: true,
	discoveryv3.AggregatedDiscoveryService_DeltaAggregatedResources_FullMethodName:  true,
}

// endableContext is the context of an SDS or ADS stream, with the cancel
// that ends it when the server stops (secretCache.endStreams): a handler
// waiting in Recv returns only when its context ends, gRPC has no other
// way to end a stream from outside, and a goroutine per stream to wait
// for the stop is what this server avoids. The handler finds it through
// Value, which costs no allocation beyond the context itself.
type endableContext struct {
	context.Context
	end context.CancelFunc
}

type endableKey struct{}

func (c *endableContext) Value(key any) any {
	if key == (endableKey{}) {
		return c
	}
	return c.Context.Value(key)
}

// endable gives every SDS and ADS stream an endableContext; it is the
// server's InTapHandle, which can replace a stream's context.
func endable(ctx context.Context, info *tap.Info) (context.Context, error) {
	if !xdsStreamMethods[info.FullMethodName] {
		return ctx, nil
	}
	ctx, end := context.WithCancel(ctx)
	return &endableContext{Context: ctx, end: end}, nil
}

// endOf is the function that ends the stream of ctx.
func endOf(ctx context.Context) context.CancelFunc {
	if c, ok := ctx.Value(endableKey{}).(*endableContext); ok {
		return c.end
	}
	return func() {}
}
