package sds

import (
	"fmt"
	"net"

	"golang.org/x/sys/unix"
)

// peerCredentials asks the kernel who connected: the credentials of the
// peer process at connect(2), which it cannot forge.
func peerCredentials(c *net.UnixConn) (uid, gid uint32, pid int32, err error) {
	raw, err := c.SyscallConn()
	if err != nil {
		return 0, 0, 0, fmt.Errorf("peer credentials: %w", err)
	}
	var cred *unix.Ucred
	var serr error
	if err := raw.Control(func(fd uintptr) {
		cred, serr = unix.GetsockoptUcred(int(fd), unix.SOL_SOCKET, unix.SO_PEERCRED)
	}); err != nil {
		return 0, 0, 0, fmt.Errorf("peer credentials: %w", err)
	}
	if serr != nil {
		return 0, 0, 0, fmt.Errorf("peer credentials: SO_PEERCRED: %w", serr)
	}
	return cred.Uid, cred.Gid, cred.Pid, nil
}
