package sds

import (
	"cmp"
	"maps"
	"slices"
	"sync"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
)

// Client is one open SDS stream as /status and readiness see it: which
// node, what it subscribes to, what it accepted.
type Client struct {
	Stream        int64 // one number per stream of any kind
	Delta         bool
	Node, Cluster string
	// Wildcard and Subscribed (sorted, clipped) are the subscription served.
	Wildcard         bool
	Subscribed       []string
	Validation       Validation
	ValidationReason string
	OpenedAt         time.Time
	// AckedGeneration is 0 when AckedVersion was not sent by this process.
	AckedVersion    string
	AckedGeneration uint64
	AckedAt         time.Time
	// NACKedVersion and NACK describe the last rejection.
	NACKedVersion string
	NACK          string
	NACKedAt      time.Time
}

// registry holds every open stream, and what each peer uid's streams hold.
type registry struct {
	mu      sync.Mutex
	streams map[*stream]struct{}
	peers   map[uint32]*peerUsage
	lastID  int64
}

// Clients lists the open SDS streams, oldest first.
func (s *Server) Clients() []Client {
	s.reg.mu.Lock()
	out := make([]Client, 0, len(s.reg.streams))
	for st := range s.reg.streams {
		st.mu.Lock()
		c := st.client
		c.Validation, c.ValidationReason = st.validation, st.reason.String()
		if st.sub != nil {
			c.Wildcard, c.Subscribed = st.sub.wildcard, clipNames(slices.Sorted(maps.Keys(st.sub.names)))
		}
		st.mu.Unlock()
		out = append(out, c)
	}
	s.reg.mu.Unlock()
	slices.SortFunc(out, func(a, b Client) int {
		return cmp.Or(a.OpenedAt.Compare(b.OpenedAt), cmp.Compare(a.Stream, b.Stream))
	})
	return out
}

// Acks counts the open streams, those that last acknowledged gen, and the
// newest generation acknowledged, copying nothing: readiness asks per probe.
func (s *Server) Acks(gen uint64) (streams, current int, newest uint64) {
	s.reg.mu.Lock()
	defer s.reg.mu.Unlock()
	for st := range s.reg.streams {
		st.mu.Lock()
		acked := st.client.AckedGeneration
		st.mu.Unlock()
		streams++
		if acked != 0 && acked == gen {
			current++
		}
		newest = max(newest, acked)
	}
	return streams, current, newest
}

// open registers a stream of peer uid, or refuses it over the peer's limit.
func (s *Server) open(ss grpc.ServerStream, delta bool, uid uint32) (*stream, error) {
	v, why := validationFor(nil, s.cfg.Names.DisableSPIFFECertValidation)
	st := &stream{s: s, ss: ss, delta: delta, uid: uid, seen: s.current.Load(), validation: v, reason: why}
	r := &s.reg
	r.mu.Lock()
	p := r.peers[uid]
	if p == nil {
		p = &peerUsage{}
		r.peers[uid] = p
	}
	if p.streams >= s.cfg.limits.streamsPerPeer {
		r.mu.Unlock()
		return nil, s.refuse(st, status.Errorf(codes.ResourceExhausted, "peer uid %d holds %d streams, the most one peer may",
			uid, s.cfg.limits.streamsPerPeer))
	}
	p.streams++
	r.lastID++
	st.id = r.lastID
	st.client = Client{Stream: st.id, Delta: delta, OpenedAt: time.Now()}
	r.streams[st] = struct{}{}
	r.mu.Unlock()
	s.streamsOpen.Add(1)
	s.cfg.Logger.Debug("Envoy SDS: stream opened", "stream", st.id, "delta", delta)
	return st, nil
}

// close forgets st and gives back what it held against its peer.
func (s *Server) close(st *stream) {
	r := &s.reg
	r.mu.Lock()
	delete(r.streams, st)
	p := r.peers[st.uid]
	p.streams--
	p.names -= st.held.names
	p.nameBytes -= st.held.nameBytes
	if *p == (peerUsage{}) {
		delete(r.peers, st.uid)
	}
	r.mu.Unlock()
	s.streamsOpen.Add(-1)
	s.cfg.Logger.Debug("Envoy SDS: stream closed", "stream", st.id, "delta", st.delta, "node", clip(st.client.Node))
}

// account counts st's names (and a Delta stream's initial versions)
// against its peer's limits; an error ends the stream.
func (s *Server) account(st *stream) error {
	now := st.initial
	now.names += len(st.sub.names)
	for n := range st.sub.names {
		now.nameBytes += len(n)
	}
	r := &s.reg
	r.mu.Lock()
	p := r.peers[st.uid]
	p.names += now.names - st.held.names
	p.nameBytes += now.nameBytes - st.held.nameBytes
	st.held = now
	peer := *p
	r.mu.Unlock()
	l := s.cfg.limits
	switch {
	case now.names > l.namesPerStream:
		return s.refuse(st, errTooManyNames(now.names, l.namesPerStream))
	case peer.names > l.namesPerPeer || peer.nameBytes > l.nameBytesPerPeer:
		return s.refuse(st, status.Errorf(codes.ResourceExhausted,
			"the streams of peer uid %d would subscribe to %d secret names (%d bytes), more than one peer may",
			st.uid, peer.names, peer.nameBytes))
	}
	return nil
}

// refuse counts a stream ended over a limit, logs it at most once per
// limitLogEvery, and returns err.
func (s *Server) refuse(st *stream, err error) error {
	refused, now, last := s.overLimit.Add(1), time.Now().UnixNano(), s.overLimitLogged.Load()
	if (last == 0 || now-last >= int64(limitLogEvery)) && s.overLimitLogged.CompareAndSwap(last, now) {
		s.cfg.Logger.Warn("Envoy SDS: stream ended: over a limit on what one client may hold (counted; logged at most every "+
			limitLogEvery.String()+")", "stream", st.id, "delta", st.delta, "error", status.Convert(err).Message(),
			"refused_since_start", refused)
	}
	return err
}
