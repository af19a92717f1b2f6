package admin

import (
	"net"
	"syscall"
)

// deferAccept makes the kernel hand over a connection only once it has
// sent something (or after about a second): a probe's request is then
// there to be seen when the cap is taken, and a connection that sends
// nothing holds no descriptor meanwhile.
func deferAccept(l net.Listener) {
	tl, ok := l.(*net.TCPListener)
	if !ok {
		return
	}
	rc, err := tl.SyscallConn()
	if err != nil {
		return
	}
	_ = rc.Control(func(fd uintptr) {
		_ = syscall.SetsockoptInt(int(fd), syscall.IPPROTO_TCP, syscall.TCP_DEFER_ACCEPT, 1)
	})
}
