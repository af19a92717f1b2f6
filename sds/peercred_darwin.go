package sds

import (
	"errors"
	"fmt"
	"net"

	"golang.org/x/sys/unix"
)

// peerCredentials asks the kernel who connected (LOCAL_PEERCRED, and
// LOCAL_PEERPID for the logs).
func peerCredentials(c *net.UnixConn) (uid, gid uint32, pid int32, err error) {
	raw, err := c.SyscallConn()
	if err != nil {
		return 0, 0, 0, fmt.Errorf("peer credentials: %w", err)
	}
	var cred *unix.Xucred
	var serr error
	var p int
	if err := raw.Control(func(fd uintptr) {
		cred, serr = unix.GetsockoptXucred(int(fd), unix.SOL_LOCAL, unix.LOCAL_PEERCRED)
		p, _ = unix.GetsockoptInt(int(fd), unix.SOL_LOCAL, unix.LOCAL_PEERPID)
	}); err != nil {
		return 0, 0, 0, fmt.Errorf("peer credentials: %w", err)
	}
	if serr != nil {
		return 0, 0, 0, fmt.Errorf("peer credentials: LOCAL_PEERCRED: %w", serr)
	}
	if cred.Ngroups < 1 {
		return 0, 0, 0, errors.New("peer credentials: LOCAL_PEERCRED: no group")
	}
	return cred.Uid, cred.Groups[0], int32(p), nil
}
