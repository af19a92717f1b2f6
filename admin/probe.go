package admin

import (
	"bytes"
	"context"
	"net"
	"net/http"
	"syscall"

	"github.com/sds-bridge/sds-bridge/internal/connlimit"
)

// Probes under a flood: a slowloris holding every one of
// admin.max_connections used to get the kubelet's probes closed as one
// too many, and the pod restarted. A probe sends its whole request at
// once; so the listener waits for a connection's first bytes
// (deferAccept), and one over the cap is let in on one of probeReserve
// places beyond it if it sent a complete GET of a probe path. It is
// closed once answered, so a place is held only while a probe is.
const probeReserve = 8

// probePeek bounds how much of a request is looked at: a probe's is a few
// hundred bytes.
const probePeek = 4 << 10

// isProbe reports whether a connection has already sent a complete GET of
// one of paths. It peeks without waiting or consuming. The listener calls
// it from its one accept loop, so its buffer is not shared.
func isProbe(paths ...string) func(net.Conn) bool {
	buf := make([]byte, probePeek)
	var prefixes [][]byte
	for _, p := range paths {
		prefixes = append(prefixes, []byte("GET "+p+" "))
	}
	return func(c net.Conn) bool {
		sc, ok := c.(syscall.Conn)
		if !ok {
			return false
		}
		rc, err := sc.SyscallConn()
		if err != nil {
			return false
		}
		n := 0
		_ = rc.Read(func(fd uintptr) bool {
			n, _, _ = syscall.Recvfrom(int(fd), buf, syscall.MSG_PEEK|syscall.MSG_DONTWAIT)
			return true // never wait: the accept loop must go on
		})
		if n <= 0 {
			return false
		}
		req := buf[:n]
		if !bytes.Contains(req, []byte("\r\n\r\n")) {
			return false
		}
		for _, p := range prefixes {
			if bytes.HasPrefix(req, p) {
				return true
			}
		}
		return false
	}
}

type connKey struct{}

// withConn (http.Server's ConnContext) keeps the connection for closeReserved.
func withConn(ctx context.Context, c net.Conn) context.Context {
	return context.WithValue(ctx, connKey{}, c)
}

// closeReserved closes a connection on a reserved place once answered.
func closeReserved(next http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if c, ok := r.Context().Value(connKey{}).(*connlimit.Conn); ok && c.Reserved() {
			w.Header().Set("Connection", "close")
		}
		next.ServeHTTP(w, r)
	})
}
