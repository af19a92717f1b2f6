package sds

import (
	"cmp"
	"context"
	"log/slog"
	"maps"
	"strconv"
	"strings"
	"sync"
	"time"

	corev3 "github.com/envoyproxy/go-control-plane/envoy/config/core/v3"
	discoveryv3 "github.com/envoyproxy/go-control-plane/envoy/service/discovery/v3"
	secretv3 "github.com/envoyproxy/go-control-plane/envoy/service/secret/v3"
	rpcstatus "google.golang.org/genproto/googleapis/rpc/status"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/types/known/anypb"
)

// secretType is the one resource type served.
const secretType = "type.googleapis.com/envoy.extensions.transport_sockets.tls.v3.Secret"

// adsType is the type of an ADS stream: none, so its requests must name one.
const adsType = ""

// errStopping ends every stream when the server stops.
var errStopping = status.Error(codes.Canceled, "the SDS server is stopping")

// discovery serves SDS and ADS with secrets only, by the rules of
// go-control-plane v0.14's server and LinearCache: a request gets at most
// one response, once its client lacks something; a SotW request that does
// not name the last response's nonce is stale and ignored.
type discovery struct {
	secretv3.UnimplementedSecretDiscoveryServiceServer
	discoveryv3.UnimplementedAggregatedDiscoveryServiceServer
	s *Server
}

func (d *discovery) StreamSecrets(ss secretv3.SecretDiscoveryService_StreamSecretsServer) error {
	return serveStream(d.s, ss, secretType, false, (*stream).takeSotw)
}

func (d *discovery) StreamAggregatedResources(ss discoveryv3.AggregatedDiscoveryService_StreamAggregatedResourcesServer) error {
	return serveStream(d.s, ss, adsType, false, (*stream).takeSotw)
}

func (d *discovery) DeltaSecrets(ss secretv3.SecretDiscoveryService_DeltaSecretsServer) error {
	return serveStream(d.s, ss, secretType, true, (*stream).takeDelta)
}

func (d *discovery) DeltaAggregatedResources(ss discoveryv3.AggregatedDiscoveryService_DeltaAggregatedResourcesServer) error {
	return serveStream(d.s, ss, adsType, true, (*stream).takeDelta)
}

// FetchSecrets answers with what is served now.
func (d *discovery) FetchSecrets(_ context.Context, req *discoveryv3.DiscoveryRequest) (*discoveryv3.DiscoveryResponse, error) {
	if req == nil {
		return nil, status.Error(codes.Unavailable, "empty request")
	}
	if err := checkType(req.GetTypeUrl(), secretType); err != nil {
		return nil, err
	}
	return d.s.fetch(req)
}

// serveStream runs one stream as SPIRE Agent's SDS handler does: a
// goroutine receives requests, and this loop takes each, answers it and
// pushes each new snapshot, until the client leaves, a request is refused
// or the server stops. take says whether to answer even with nothing to send.
func serveStream[Req, Resp any](s *Server, ss grpc.BidiStreamingServer[Req, Resp], streamType string, delta bool,
	take func(*stream, *Req, string) (bool, error)) error {
	peer, _ := authorize(ss.Context()) // authorizeStream let it in
	st, err := s.open(ss, delta, peer.UID)
	if st == nil {
		return err
	}
	defer s.close(st)
	// requests is closed when the client leaves: no error then.
	requests := make(chan *Req)
	go func() {
		defer close(requests)
		for {
			req, err := ss.Recv()
			if err != nil {
				return
			}
			select {
			case requests <- req:
			case <-ss.Context().Done():
				return
			}
		}
	}()
	for !st.seen.stopped {
		select {
		case req, ok := <-requests:
			if !ok {
				return nil
			}
			replyEmpty, err := take(st, req, streamType)
			if err == nil {
				err = st.answer(replyEmpty)
			}
			if err != nil {
				return err
			}
		case <-st.seen.replaced:
			st.look(s.current.Load())
			if st.seen.stopped {
				return errStopping
			}
			if err := st.answer(false); err != nil {
				return err
			}
		}
	}
	return errStopping
}

// stream is one open SotW or Delta stream. Its loop alone changes it; the
// fields under mu are the ones Clients reads.
type stream struct {
	s     *Server
	ss    grpc.ServerStream // nil in tests that only take requests
	id    int64
	delta bool
	uid   uint32

	// seen is the snapshot the loop last looked at; the next one wakes it.
	seen *snapshot
	// The last response sent; not its snapshot, which holds keys the
	// stream no longer needs.
	lastNonce, lastVersion string
	lastGeneration         uint64
	nonces                 uint64
	// held counts against the peer's limits; initial is the part a Delta
	// stream's initial versions hold.
	held, initial held
	unknown       string // the last reported unknown names, joined
	// nackedNonce is the last logged NACK's: a repeated one is logged once.
	nackedNonce string

	mu sync.Mutex
	// asked is set while a taken request is unanswered.
	asked      bool
	client     Client
	validation Validation
	reason     validationReason
	sub        *subscription // nil until the first request
}

// takeSotw takes one SotW request: the whole subscription, and the ACK or
// NACK of the last response. A stale one changes nothing.
func (st *stream) takeSotw(req *discoveryv3.DiscoveryRequest, streamType string) (replyEmpty bool, err error) {
	if err := checkType(req.GetTypeUrl(), streamType); err != nil {
		return false, err
	}
	// A list over the bound is refused before anything of it is kept.
	if n, most := len(req.GetResourceNames()), st.s.cfg.limits.namesPerStream; n > most {
		return false, st.s.refuse(st, errTooManyNames(n, most))
	}
	if !st.asked && st.lastNonce != "" && req.GetResponseNonce() != st.lastNonce {
		st.s.cfg.Logger.Debug("Envoy SDS: stale request ignored: it does not answer the last response", "stream", st.id,
			"nonce", clip(req.GetResponseNonce()), "last_nonce", st.lastNonce)
		return false, nil
	}
	st.setNode(req.GetNode())
	st.answered(req.GetVersionInfo(), req.GetResponseNonce(), req.GetErrorDetail())
	st.mu.Lock()
	if st.sub == nil {
		st.sub = newSubscription(len(req.GetResourceNames()) == 0, nil)
	}
	st.sub.setSotw(req.GetResourceNames())
	st.mu.Unlock()
	return false, st.subscribed()
}

// takeDelta takes one Delta request: a change of the subscription, an ACK
// or a NACK. A first wildcard request is answered even with nothing to
// send: that ends Envoy's initial fetch.
func (st *stream) takeDelta(req *discoveryv3.DeltaDiscoveryRequest, streamType string) (replyEmpty bool, err error) {
	if err := checkType(req.GetTypeUrl(), streamType); err != nil {
		return false, err
	}
	st.setNode(req.GetNode())
	// Delta requests carry no version.
	st.answered("", req.GetResponseNonce(), req.GetErrorDetail())
	st.mu.Lock()
	if st.sub == nil {
		st.sub = newSubscription(len(req.GetResourceNamesSubscribe()) == 0, req.GetInitialResourceVersions())
		st.initial = heldBy(req.GetInitialResourceVersions())
	}
	st.sub.updateDelta(req.GetResourceNamesSubscribe(), req.GetResourceNamesUnsubscribe())
	st.mu.Unlock()
	return st.sub.wildcard && req.GetResponseNonce() == "", st.subscribed()
}

// subscribed follows a taken request: the names count against the peer
// (an error ends the stream), unknown ones are reported, and the request
// waits for its answer.
func (st *stream) subscribed() error {
	if err := st.s.account(st); err != nil {
		return err
	}
	st.checkUnknown()
	st.mu.Lock()
	st.asked = true
	st.mu.Unlock()
	return nil
}

// setNode keeps the node's id and cluster, bounded, and its Validation.
// Envoy may send the node only once, or on every request: an unchanged one
// costs no allocation.
func (st *stream) setNode(node *corev3.Node) {
	if node == nil {
		return
	}
	v, why := validationFor(node, st.s.cfg.Names.DisableSPIFFECertValidation)
	id := cmp.Or(clipTo(node.GetId(), maxStoredID), st.client.Node)
	cluster := cmp.Or(clipTo(node.GetCluster(), maxStoredID), st.client.Cluster)
	if why == st.reason && id == st.client.Node && cluster == st.client.Cluster {
		return
	}
	st.mu.Lock()
	defer st.mu.Unlock()
	st.validation, st.reason, st.client.Node, st.client.Cluster = v, why, id, cluster
}

// answered records and logs the ACK or NACK (errDetail) of the response
// nonce names; version is what the client says it holds (SotW only).
func (st *stream) answered(version, nonce string, errDetail *rpcstatus.Status) {
	log := st.s.cfg.Logger
	if errDetail != nil {
		st.nacked(version, nonce, errDetail.GetMessage())
		return
	}
	if nonce == "" { // a first request, or a new subscription: no answer to a response
		if log.Enabled(context.Background(), slog.LevelDebug) {
			log.Debug("Envoy SDS: request", "stream", st.id, "delta", st.delta, "node", clip(st.client.Node), "version", clip(version))
		}
		return
	}
	known := nonce == st.lastNonce // it names the last response
	if version != "" || known {
		acked, gen := version, uint64(0)
		if known {
			acked = cmp.Or(version, st.lastVersion)
			if acked == st.lastVersion {
				gen = st.lastGeneration
			}
		}
		st.mu.Lock()
		st.client.AckedVersion, st.client.AckedGeneration, st.client.AckedAt = clipTo(acked, maxStoredVersion), gen, time.Now()
		st.mu.Unlock()
	}
	// Every ACK passes here: no attributes built for an unlogged line.
	if log.Enabled(context.Background(), slog.LevelDebug) {
		log.Debug("Envoy SDS: client acknowledged secrets", "stream", st.id, "delta", st.delta, "node", clip(st.client.Node),
			"version", clip(version), "nonce", clip(nonce))
	}
}

// nacked records, counts and logs a rejection; nothing is resent until
// the next Update.
func (st *stream) nacked(version, nonce, msg string) {
	st.s.nacks.Add(1)
	var rejected string
	if nonce != "" && nonce == st.lastNonce {
		rejected = st.lastVersion
	}
	st.mu.Lock()
	if nonce != "" {
		st.client.NACKedVersion, st.client.NACK, st.client.NACKedAt = rejected, clipTo(msg, maxStoredText), time.Now()
	}
	st.mu.Unlock()
	level := slog.LevelError
	if nonce != "" && clipTo(nonce, maxStoredVersion) == st.nackedNonce {
		level = slog.LevelDebug
	}
	st.nackedNonce = clipTo(nonce, maxStoredVersion)
	st.s.cfg.Logger.Log(context.Background(), level, "Envoy SDS: client rejected secrets", "stream", st.id, "delta", st.delta,
		"node", clip(st.client.Node), "kept_version", clip(version), "nonce", clip(nonce), "error", clip(msg))
}

// look makes snap the one seen, and reports unknown names again if the
// served names changed.
func (st *stream) look(snap *snapshot) {
	names := snap.namesID != st.seen.namesID
	st.seen = snap
	if names {
		st.checkUnknown()
	}
}

// checkUnknown warns when the set of requested but unserved names changes;
// not before the first Update, when every name is unknown.
func (st *stream) checkUnknown() {
	snap := st.seen
	if snap.number == 0 || st.sub == nil {
		return
	}
	sv := &snap.variants[st.validation]
	unknown := requestedNames(sv.unknown(maps.Keys(st.sub.names)))
	key := strings.Join(unknown, "\x00")
	if key == st.unknown {
		return
	}
	st.unknown = key
	if len(unknown) > 0 {
		st.s.cfg.Logger.Warn("Envoy SDS: requested secrets are not served; they stay pending", "stream", st.id, "delta", st.delta,
			"node", clip(st.client.Node), "unknown", clipNames(unknown), "served", clipNames(sv.names), "validation", st.validation)
	}
}

// answer sends what the client lacks in the current snapshot while a
// request is unanswered (or, with replyEmpty, an empty response).
func (st *stream) answer(replyEmpty bool) error {
	if !st.asked {
		return nil
	}
	snap := st.s.current.Load()
	resp := st.response(snap, replyEmpty)
	if resp == nil {
		return nil
	}
	st.lastVersion, st.lastGeneration = snap.version, snap.generation
	st.s.pushes.Add(1)
	if log := st.s.cfg.Logger; log.Enabled(context.Background(), slog.LevelDebug) {
		log.Debug("Envoy SDS: push", "stream", st.id, "delta", st.delta, "version", snap.version, "nonce", st.lastNonce)
	}
	return st.ss.SendMsg(resp)
}

// response is what the client is due from snap, if anything, recorded as
// sent. A SotW response carries the secrets it lacks at the snapshot's
// version, never an empty list (SotW cannot say "removed" for this type);
// a Delta response, those it lacks at their hash, and removals.
func (st *stream) response(snap *snapshot, replyEmpty bool) any {
	sv := &snap.variants[st.validation]
	resourceVersion := func(r *discoveryv3.Resource) string {
		if st.delta {
			return r.Version
		}
		return snap.version
	}
	changed, removed := st.sub.changes(sv, resourceVersion)
	if len(changed) == 0 && (!st.delta || (len(removed) == 0 && !replyEmpty)) {
		return nil
	}
	st.mu.Lock()
	st.asked = false
	for _, name := range changed {
		st.sub.returned[name] = resourceVersion(sv.secrets[name])
	}
	for _, name := range removed {
		delete(st.sub.returned, name)
	}
	st.mu.Unlock()
	st.nonces++
	st.lastNonce = strconv.FormatUint(st.nonces, 10)
	if !st.delta {
		resp := &discoveryv3.DiscoveryResponse{VersionInfo: snap.version, TypeUrl: secretType, Nonce: st.lastNonce,
			Resources: make([]*anypb.Any, 0, len(changed))}
		for _, name := range changed {
			resp.Resources = append(resp.Resources, sv.secrets[name].Resource)
		}
		return resp
	}
	resp := &discoveryv3.DeltaDiscoveryResponse{SystemVersionInfo: snap.version, TypeUrl: secretType, Nonce: st.lastNonce,
		RemovedResources: removed, Resources: make([]*discoveryv3.Resource, 0, len(changed))}
	for _, name := range changed {
		resp.Resources = append(resp.Resources, sv.secrets[name])
	}
	return resp
}

// checkType refuses a request whose type (else its stream's) is not Secrets.
func checkType(typeURL, streamType string) error {
	if typeURL == "" {
		if streamType == adsType {
			return status.Error(codes.InvalidArgument, "type URL is required for ADS")
		}
		typeURL = streamType
	}
	if typeURL != secretType {
		return status.Errorf(codes.InvalidArgument, "this server serves only %s, not %s", secretType, typeURL)
	}
	return nil
}
