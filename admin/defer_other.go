//go:build !linux

package admin

import "net"

// deferAccept is Linux's TCP_DEFER_ACCEPT; elsewhere a probe's request may
// not have arrived when its connection is accepted over the cap.
func deferAccept(net.Listener) {}
