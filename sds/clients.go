package sds

import (
	"cmp"
	"slices"
	"time"
)

// Client is one open SDS stream (SotW, Delta or ADS) as the bridge sees it:
// which node it is and which version of the secrets it has accepted. It
// answers "what does Envoy have?" for readiness and status.
type Client struct {
	// Stream is the stream's number; SotW (with ADS) and Delta streams are
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

// Clients lists the open SDS streams, oldest first.
func (s *Server) Clients() []Client {
	s.tracker.mu.Lock()
	out := make([]Client, 0, len(s.tracker.streams))
	for _, st := range s.tracker.streams {
		c := st.Client
		c.ValidationReason = st.reason.String()
		out = append(out, c)
	}
	s.tracker.mu.Unlock()
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
