package admin

import (
	"bytes"
	"context"
	"net"
	"net/http"
	"syscall"

	"github.com/sds-bridge/sds-bridge/internal/connlimit"
)

// Probes under a flood. A slowloris (connections that send half a request
// and reconnect when closed) holds every one of admin.max_connections, and
// a probe's connection used to be closed as one too many: the kubelet saw
// /livez fail and restarted the pod. What tells a probe from a slowloris
// is that a probe sends its whole request at once. So the listener waits
// for a connection's first bytes before accepting it (TCP_DEFER_ACCEPT on
// Linux: a connection that sends nothing costs no descriptor), and one
// that finds the cap taken is let in on one of probeReserve places kept
// beyond it if what it sent is a complete GET of the liveness or readiness
// path. Such a connection gets its answer and is closed: a place is held
// only while a probe is answered.
const probeReserve = 8

// probePeek bounds how much of a request is looked at: a probe's request
// with its headers is a few hundred bytes.
const probePeek = 4 << 10

// probeCheck decides which connections over the cap are probes; the
// listener calls it from its one accept loop, so buf is not shared.
type probeCheck struct {
	paths [][]byte // "GET /livez " and "GET /readyz "
	buf   []byte
}

func newProbeCheck(paths ...string) *probeCheck {
	pc := &probeCheck{buf: make([]byte, probePeek)}
	for _, p := range paths {
		pc.paths = append(pc.paths, []byte("GET "+p+" "))
	}
	return pc
}

// isProbe reports whether c has already sent a complete request for a
// probe path. It peeks without waiting and without consuming: the HTTP
// server reads the request as usual.
func (pc *probeCheck) isProbe(c net.Conn) bool {
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
		n, _, _ = syscall.Recvfrom(int(fd), pc.buf, syscall.MSG_PEEK|syscall.MSG_DONTWAIT)
		return true // never wait: the accept loop must go on
	})
	if n <= 0 {
		return false
	}
	req := pc.buf[:n]
	if !bytes.Contains(req, []byte("\r\n\r\n")) {
		return false
	}
	for _, p := range pc.paths {
		if bytes.HasPrefix(req, p) {
			return true
		}
	}
	return false
}

type connKey struct{}

// withConn keeps the connection in the request's context (http.Server's
// ConnContext), for closeReserved.
func withConn(ctx context.Context, c net.Conn) context.Context {
	return context.WithValue(ctx, connKey{}, c)
}

// closeReserved closes a connection that came in on a reserved place once
// it has its answer, so that the place is free for the next probe.
func closeReserved(next http.Handler) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if c, ok := r.Context().Value(connKey{}).(*connlimit.Conn); ok && c.Reserved() {
			w.Header().Set("Connection", "close")
		}
		next.ServeHTTP(w, r)
	})
}
