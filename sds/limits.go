package sds

import (
	"cmp"
	"context"
	"fmt"
	"strconv"
	"strings"
	"time"

	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/peer"
	"google.golang.org/grpc/status"
)

// What an allowed client can make the server hold. The allow-list says
// who may fetch the keys, not how much memory they may take: without
// these bounds one connection could open streams without end (grpc-go
// sets no stream limit) and each stream could subscribe to 131,072 names,
// and 80 such streams made a bridge of 52 MB grow to 1.6 GB. The bounds
// are far above what Envoy uses: it opens one SDS stream per secret name
// it needs (a handful, two per TLS context at most) on one connection, or
// one ADS stream naming them all, and the bridge serves only a few names
// (one per SVID and per trust domain, plus three). The per-peer totals
// stay above the fan-out benchmark's 10,000 streams of two names each.
const (
	// DefaultMaxStreamsPerConnection is HTTP/2's SETTINGS_MAX_CONCURRENT_STREAMS:
	// a client that opens more has them refused by gRPC (REFUSED_STREAM).
	DefaultMaxStreamsPerConnection = 1024
	// DefaultMaxStreamsPerPeer caps the SDS and ADS streams of one peer uid
	// over all its connections; one more ends at once with ResourceExhausted.
	DefaultMaxStreamsPerPeer = 16384
	// DefaultMaxNamesPerStream caps one stream's subscription.
	DefaultMaxNamesPerStream = 4096
	// DefaultMaxNamesPerPeer and DefaultMaxNameBytesPerPeer cap the names
	// all streams of one peer uid subscribe to (Delta initial versions
	// included), by count and by bytes: a name may be as long as a request.
	DefaultMaxNamesPerPeer     = 65536
	DefaultMaxNameBytesPerPeer = 8 << 20
	// maxRequestBytes is gRPC's limit on one request (its default is 4
	// MiB). Envoy's first request, with its node and extension list, is
	// tens of KiB; a request over the limit is refused by its length
	// prefix before it is read. A 1.6 MB request of 131,072 names, decoded
	// on 80 streams at once, took 900 MB.
	maxRequestBytes = 1 << 20
)

// Bounds on client-chosen text the server keeps for /status while a
// stream is open: longer text is cut and marked with its length.
const (
	maxStoredID      = 256  // node id, cluster, user agent
	maxStoredText    = 1024 // a NACK's error detail
	maxStoredVersion = 128  // versions and nonces a client names (the bridge's are ~20 bytes)
)

// clipMark is the most clipTo adds: "… (<20 digits> bytes)".
const clipMark = len("… () bytes") + 20

// limitLogEvery rate-limits the log line about streams refused over a
// limit: a client must not flood the log either.
const limitLogEvery = 10 * time.Second

// limits are what one client may hold; zero fields take the defaults.
type limits struct {
	streamsPerConn   uint32
	streamsPerPeer   int
	namesPerStream   int
	namesPerPeer     int
	nameBytesPerPeer int
}

func (l limits) withDefaults() limits {
	l.streamsPerConn = cmp.Or(l.streamsPerConn, DefaultMaxStreamsPerConnection)
	l.streamsPerPeer = cmp.Or(l.streamsPerPeer, DefaultMaxStreamsPerPeer)
	l.namesPerStream = cmp.Or(l.namesPerStream, DefaultMaxNamesPerStream)
	l.namesPerPeer = cmp.Or(l.namesPerPeer, DefaultMaxNamesPerPeer)
	l.nameBytesPerPeer = cmp.Or(l.nameBytesPerPeer, DefaultMaxNameBytesPerPeer)
	return l
}

// peerUsage is what the streams of one peer uid hold; the registry keeps
// it under its lock.
type peerUsage struct {
	streams, names, nameBytes int
}

// held is what one stream counts against its peer.
type held struct {
	names, nameBytes int
}

// heldBy is what a Delta stream's initial versions hold: the subscription
// keeps them.
func heldBy(versions map[string]string) held {
	var h held
	for n, v := range versions {
		h.names++
		h.nameBytes += len(n) + len(v)
	}
	return h
}

// peerUID is the uid the kernel reported for the connection behind ctx;
// only allowed peers reach a stream.
func peerUID(ctx context.Context) uint32 {
	if p, ok := peer.FromContext(ctx); ok {
		if info, ok := p.AuthInfo.(peerInfo); ok {
			return info.UID
		}
	}
	return 0
}

func errTooManyNames(n, max int) error {
	return status.Errorf(codes.ResourceExhausted, "the stream subscribes to %d secret names, more than the %d allowed", n, max)
}

// clipTo bounds a client-chosen string the server keeps: longer text is
// cut at n bytes (never inside a UTF-8 sequence) and marked with its
// length. A short string is returned as is, without allocating, and so is
// one no longer than a cut one (n plus its mark), so that a string is
// never cut twice.
func clipTo(s string, n int) string {
	if len(s) <= n+clipMark {
		return s
	}
	return strings.ToValidUTF8(s[:n], "") + "… (" + strconv.Itoa(len(s)) + " bytes)"
}

// maxLoggedNames and maxLoggedText bound what one request can put into a
// log line: names, node ids and error details are chosen by the client.
const (
	maxLoggedNames = 16
	maxLoggedText  = 256
)

// clip bounds a client-chosen string for the logs.
func clip(s string) string { return clipTo(s, maxLoggedText) }

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
