//go:build !linux && !darwin

package sds

import (
	"fmt"
	"net"
	"runtime"
)

// peerCredentials is not implemented here: every peer is refused rather
// than served unchecked.
func peerCredentials(*net.UnixConn) (uid, gid uint32, pid int32, err error) {
	return 0, 0, 0, fmt.Errorf("peer credentials: not supported on %s", runtime.GOOS)
}
