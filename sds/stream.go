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

// secretType is the type URL of an Envoy Secret, the one resource type
// served.
const secretType = "type.googleapis.com/envoy.extensions.transport_sockets.tls.v3.Secret"

// adsType is the type of an ADS stream: none, so its requests must name one.
const adsType = ""

// errStopping ends every stream when the server stops: Envoy keeps its
// secrets and reconnects.
var errStopping = status.Error(codes.Canceled, "the SDS server is stopping")

// discovery serves SDS (SotW, Delta, the unary FetchSecrets) and ADS with
// secrets only, in the shape of SPIRE Agent's SDS handler: per stream a
// goroutine receives requests and hands them to the stream's loop, which
// takes them, answers, and pushes each new snapshot (stream.serve).
//
// The protocol is the one go-control-plane v0.14's server and LinearCache
// gave the bridge before: a request gets at most one response, once its
// client lacks something (stream.answer); a SotW request that does not
// name the last response's nonce is stale and ignored; each Delta request
// replaces the one before.
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

// FetchSecrets answers the unary request with what is served now; a
// request for another type is refused as on a stream.
func (d *discovery) FetchSecrets(_ context.Context, req *discoveryv3.DiscoveryRequest) (*discoveryv3.DiscoveryResponse, error) {
	if req == nil {
		return nil, status.Error(codes.Unavailable, "empty request")
	}
	if err := checkType(req.GetTypeUrl(), secretType); err != nil {
		return nil, err
	}
	return d.s.fetch(req)
}

// serveStream runs one stream: a goroutine receives its requests, and this loop
// takes each, answers it, and pushes each new snapshot, until the client
// leaves (a receive error: the stream ends without one), a request is
// refused, or the server stops. take says whether the request is answered
// even with nothing to send.
func serveStream[Req, Resp any](s *Server, ss grpc.BidiStreamingServer[Req, Resp], streamType string, delta bool,
	take func(*stream, *Req, string) (bool, error)) error {
	st, err := s.open(ss, delta, peerUID(ss.Context()))
	if st == nil {
		return err
	}
	defer s.close(st)
	// requests is closed when the client leaves: the stream ends without
	// an error.
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

// stream is one open SotW or Delta stream: the one record of what it asks
// for, what it was sent and what its client said, in the server's one
// registry (Server.open). Its loop alone changes it; the fields under mu
// are the ones Clients reads.
type stream struct {
	s     *Server
	ss    grpc.ServerStream // nil in tests that only take requests
	id    int64
	delta bool
	uid   uint32

	// seen is the snapshot the loop last looked at; the next one wakes it.
	seen *snapshot
	// The last response sent: its nonce, version and generation (not its
	// snapshot, which holds keys the stream no longer needs).
	lastNonce, lastVersion string
	lastGeneration         uint64
	nonces                 uint64
	// held is what the stream counts against its peer's limits: its names
	// and a Delta stream's initial versions; initial is the latter.
	held, initial held
	// unknown is the last reported set of unknown names, joined.
	unknown string
	// nackedNonce is the response the last logged NACK rejected: a client
	// repeating a NACK is counted each time but logged once.
	nackedNonce string

	mu sync.Mutex
	// asked is set while a taken request is unanswered: the next snapshot
	// that gives the client something is sent.
	asked      bool
	client     Client
	validation Validation
	reason     validationReason
	// sub is nil until the first request taken.
	sub *subscription
}

// takeSotw takes one SotW request: the whole subscription, and the ACK or
// NACK of the last response. A request that does not name the last
// response's nonce was sent before its client saw that response: it is
// stale and changes nothing.
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
// or a NACK. A first wildcard request is answered even when nothing is
// served: that ends Envoy's initial fetch.
func (st *stream) takeDelta(req *discoveryv3.DeltaDiscoveryRequest, streamType string) (replyEmpty bool, err error) {
	if err := checkType(req.GetTypeUrl(), streamType); err != nil {
		return false, err
	}
	st.setNode(req.GetNode())
	// Delta requests carry no version.
	st.answered("", req.GetResponseNonce(), req.GetErrorDetail())
	st.mu.Lock()
	if st.sub == nil {
		// The versions the client says it holds (initial_resource_versions).
		st.sub = newSubscription(len(req.GetResourceNamesSubscribe()) == 0, req.GetInitialResourceVersions())
		st.initial = heldBy(req.GetInitialResourceVersions())
	}
	st.sub.updateDelta(req.GetResourceNamesSubscribe(), req.GetResourceNamesUnsubscribe())
	st.mu.Unlock()
	return st.sub.wildcard && req.GetResponseNonce() == "", st.subscribed()
}

// subscribed follows a taken request: the stream's names count against
// its peer (the error ends the stream), unknown ones are reported, and the
// request waits for its answer.
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

// setNode takes what the stream keeps of the node a request names (Envoy
// may send it in its first request only): its id and cluster, bounded, and
// the Validation it gets. Envoy repeats its node on every request, ACKs
// included: an unchanged one costs no allocation.
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

// answered records and logs what a request says of the response its nonce
// names: accepted, or rejected with errDetail. version is the version the
// client says it holds (SotW only; clipped, since the client chooses it).
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
				gen = st.lastGeneration // the version names it; nothing is parsed
			}
		}
		st.mu.Lock()
		st.client.AckedVersion, st.client.AckedGeneration, st.client.AckedAt = clipTo(acked, maxStoredVersion), gen, time.Now()
		st.mu.Unlock()
	}
	// Every ACK passes here: building the attributes of a line that is
	// not logged would cost allocations per stream per Update.
	if log.Enabled(context.Background(), slog.LevelDebug) {
		log.Debug("Envoy SDS: client acknowledged secrets", "stream", st.id, "delta", st.delta, "node", clip(st.client.Node),
			"version", clip(version), "nonce", clip(nonce))
	}
}

// nacked records, counts and logs a rejection. The client keeps its last
// accepted secrets; nothing is resent until the next Update.
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
		level = slog.LevelDebug // the same rejection again: counted, not logged twice
	}
	st.nackedNonce = clipTo(nonce, maxStoredVersion)
	st.s.cfg.Logger.Log(context.Background(), level, "Envoy SDS: client rejected secrets", "stream", st.id, "delta", st.delta,
		"node", clip(st.client.Node), "kept_version", clip(version), "nonce", clip(nonce), "error", clip(msg))
}

// look makes snap the one the stream has seen, and reports unknown names
// again when the served names changed.
func (st *stream) look(snap *snapshot) {
	names := snap.namesID != st.seen.namesID
	st.seen = snap
	if names {
		st.checkUnknown()
	}
}

// checkUnknown warns when the set of requested but unserved names changes.
// Before the first Update every name is unknown and requests simply wait,
// so nothing is reported then.
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

// answer sends the response the stream is due from the current snapshot,
// if any: while a request is unanswered, and the client lacks something
// (or replyEmpty says to answer anyway).
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

// response is the response the client is due from snap, if any, recorded
// as sent. As LinearCache: a SotW response carries the subscribed secrets
// (all, for a wildcard) the client lacks at the snapshot's version, never
// an empty list, since SotW cannot say "removed" for this type; a Delta
// response carries those the client lacks at their hash, and removes those
// no longer served or subscribed.
func (st *stream) response(snap *snapshot, replyEmpty bool) any {
	sv := &snap.variants[st.validation]
	resourceVersion := func(s servedSecret) string {
		if st.delta {
			return s.resource.Version
		}
		return snap.version
	}
	changed, removed := st.sub.changes(sv, resourceVersion)
	if len(changed) == 0 && (!st.delta || (len(removed) == 0 && !replyEmpty)) {
		return nil
	}
	// The response is committed: the subscription holds what it carries.
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
			resp.Resources = append(resp.Resources, sv.secrets[name].resource.Resource)
		}
		return resp
	}
	resp := &discoveryv3.DeltaDiscoveryResponse{SystemVersionInfo: snap.version, TypeUrl: secretType, Nonce: st.lastNonce,
		RemovedResources: removed, Resources: make([]*discoveryv3.Resource, 0, len(changed))}
	for _, name := range changed {
		resp.Resources = append(resp.Resources, sv.secrets[name].resource)
	}
	return resp
}

// checkType refuses a request for another type than Secrets: its own
// type, else its stream's. An ADS stream or a FetchSecrets can ask for
// other types.
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
