package sds

import (
	"cmp"
	"fmt"
	"strconv"
	"strings"
	"time"

	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
)

// What an allowed client can make the server hold: the allow-list says
// who may fetch the keys, not how much memory they may take. Unbounded, 80
// streams of 131,072 names each made a bridge of 52 MB grow to 1.6 GB.
// Envoy opens a handful of streams and the bridge serves a few names; the
// per-peer totals stay above the fan-out benchmark's 10,000 streams.
const (
	// DefaultMaxStreamsPerConnection is HTTP/2's SETTINGS_MAX_CONCURRENT_STREAMS.
	DefaultMaxStreamsPerConnection = 1024
	// DefaultMaxStreamsPerPeer caps the streams of one peer uid.
	DefaultMaxStreamsPerPeer = 16384
	DefaultMaxNamesPerStream = 4096
	// DefaultMaxNamesPerPeer and DefaultMaxNameBytesPerPeer cap the names
	// of one peer uid's streams, Delta initial versions included.
	DefaultMaxNamesPerPeer     = 65536
	DefaultMaxNameBytesPerPeer = 8 << 20
	// maxRequestBytes is refused by its length prefix, before it is read:
	// Envoy's first request is tens of KiB; 80 streams decoding a 1.6 MB
	// request at once took 900 MB.
	maxRequestBytes = 1 << 20
)

// Bounds on client-chosen text kept for /status: longer text is cut.
const (
	maxStoredID      = 256  // node id, cluster, user agent
	maxStoredText    = 1024 // a NACK's error detail
	maxStoredVersion = 128  // versions and nonces a client names (the bridge's are ~20 bytes)
)

// clipMark is the most clipTo adds: "… (<20 digits> bytes)".
const clipMark = len("… () bytes") + 20

// limitLogEvery rate-limits the log line about streams over a limit.
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

// peerUsage is what the streams of one peer uid hold (registry.mu).
type peerUsage struct {
	streams, names, nameBytes int
}

// held is what one stream counts against its peer.
type held struct {
	names, nameBytes int
}

// heldBy is what a Delta stream's initial versions hold.
func heldBy(versions map[string]string) held {
	var h held
	for n, v := range versions {
		h.names++
		h.nameBytes += len(n) + len(v)
	}
	return h
}

func errTooManyNames(n, max int) error {
	return status.Errorf(codes.ResourceExhausted, "the stream subscribes to %d secret names, more than the %d allowed", n, max)
}

// clipTo cuts a client-chosen string at n bytes (never inside a UTF-8
// sequence) and marks its length. A string no longer than a cut one is
// returned as is, so nothing is cut twice or allocated when short.
func clipTo(s string, n int) string {
	if len(s) <= n+clipMark {
		return s
	}
	return strings.ToValidUTF8(s[:n], "") + "… (" + strconv.Itoa(len(s)) + " bytes)"
}

// maxLoggedNames and maxLoggedText bound what a client puts into a log line.
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
