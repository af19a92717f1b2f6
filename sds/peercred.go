package sds

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"os"
	"slices"
	"strconv"
	"strings"
	"sync/atomic"

	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials"
	"google.golang.org/grpc/peer"
	"google.golang.org/grpc/status"

	"github.com/sds-bridge/sds-bridge/internal/connlimit"
)

// accessPolicy decides who may fetch secrets from a peer's uid and primary
// gid (SO_PEERCRED): the second gate after the socket's mode, as the
// bridge hands out private keys and must know to whom.
type accessPolicy struct {
	uids, gids []uint32 // sorted
}

// newAccessPolicy allows, with both lists empty, the bridge's own uid and
// root: the peers a 0600 socket admits, so the default widens nothing.
func newAccessPolicy(uids, gids []int) accessPolicy {
	var p accessPolicy
	if len(uids) == 0 && len(gids) == 0 {
		p.uids = []uint32{0, uint32(os.Geteuid())}
	}
	for _, u := range uids {
		p.uids = append(p.uids, uint32(u))
	}
	for _, g := range gids {
		p.gids = append(p.gids, uint32(g))
	}
	slices.Sort(p.uids)
	p.uids = slices.Compact(p.uids)
	slices.Sort(p.gids)
	p.gids = slices.Compact(p.gids)
	return p
}

func (p accessPolicy) allows(uid, gid uint32) bool {
	_, uidOK := slices.BinarySearch(p.uids, uid)
	_, gidOK := slices.BinarySearch(p.gids, gid)
	return uidOK || gidOK
}

func (p accessPolicy) String() string {
	join := func(ids []uint32) string {
		s := make([]string, len(ids))
		for i, id := range ids {
			s[i] = strconv.FormatUint(uint64(id), 10)
		}
		return "[" + strings.Join(s, " ") + "]"
	}
	return "uids " + join(p.uids) + " gids " + join(p.gids)
}

// peerInfo is a connection's credentials.AuthInfo: who the kernel says is
// at the other end and whether the policy lets them in.
type peerInfo struct {
	credentials.CommonAuthInfo
	UID, GID uint32
	PID      int32
	Err      error // the credentials could not be read: refused
	Allowed  bool
}

// AuthType implements credentials.AuthInfo.
func (peerInfo) AuthType() string { return "peercred" }

func (p peerInfo) logAttrs() []any {
	if p.Err != nil {
		return []any{"error", p.Err}
	}
	return []any{"uid", p.UID, "gid", p.GID, "pid", p.PID}
}

// peerCreds is gRPC TransportCredentials with no handshake, only
// SO_PEERCRED. A refused peer is not dropped, which would show it only a
// broken connection: every RPC gets PermissionDenied, which Envoy logs
// with its reason, until limitListener closes it.
type peerCreds struct {
	policy  accessPolicy
	log     *slog.Logger
	refused *atomic.Int64
}

var _ credentials.TransportCredentials = (*peerCreds)(nil)

// identify asks the kernel who is at the other end of c.
func (p accessPolicy) identify(c *net.UnixConn) peerInfo {
	info := peerInfo{CommonAuthInfo: credentials.CommonAuthInfo{SecurityLevel: credentials.NoSecurity}}
	info.UID, info.GID, info.PID, info.Err = peerCredentials(c)
	if info.Err == nil {
		// As private as grpc-go's local credentials consider a unix socket.
		info.SecurityLevel = credentials.PrivacyAndIntegrity
		info.Allowed = p.allows(info.UID, info.GID)
	}
	return info
}

func (c *peerCreds) ServerHandshake(conn net.Conn) (net.Conn, credentials.AuthInfo, error) {
	var info peerInfo
	switch pc := conn.(type) {
	case *connlimit.Conn: // limitListener already asked
		info = pc.Tag.(peerInfo)
	case *net.UnixConn:
		info = c.policy.identify(pc)
	default:
		info = peerInfo{CommonAuthInfo: credentials.CommonAuthInfo{SecurityLevel: credentials.NoSecurity}}
		info.Err = fmt.Errorf("connection over %s, not a unix socket", conn.LocalAddr().Network())
	}
	if !info.Allowed {
		c.refused.Add(1)
		c.log.Warn("Envoy SDS: refused connection: peer is not allowed to fetch secrets (sds.allowed_uids, sds.allowed_gids)",
			info.logAttrs()...)
	} else {
		c.log.Debug("Envoy SDS: connection", info.logAttrs()...)
	}
	return conn, info, nil
}

func (c *peerCreds) ClientHandshake(context.Context, string, net.Conn) (net.Conn, credentials.AuthInfo, error) {
	return nil, nil, errors.New("peer credentials are server-side only")
}

func (c *peerCreds) Info() credentials.ProtocolInfo {
	return credentials.ProtocolInfo{SecurityProtocol: "peercred"}
}

func (c *peerCreds) Clone() credentials.TransportCredentials {
	clone := *c
	return &clone
}

func (c *peerCreds) OverrideServerName(string) error { return nil }

// authorize is the peer behind ctx, or why it is refused; the error names
// no allowed id: the peer learns only that it is not one.
func authorize(ctx context.Context) (peerInfo, error) {
	p, ok := peer.FromContext(ctx)
	if !ok {
		return peerInfo{}, status.Error(codes.PermissionDenied, "unknown peer; secrets are refused")
	}
	info, ok := p.AuthInfo.(peerInfo)
	switch {
	case !ok:
		return info, status.Error(codes.PermissionDenied, "peer without credentials; secrets are refused")
	case info.Err != nil:
		return info, status.Error(codes.PermissionDenied, "the peer's credentials could not be verified; secrets are refused")
	case !info.Allowed:
		return info, status.Errorf(codes.PermissionDenied, "peer uid %d gid %d is not allowed to fetch secrets from this socket", info.UID, info.GID)
	}
	return info, nil
}

func authorizeUnary(ctx context.Context, req any, _ *grpc.UnaryServerInfo, handler grpc.UnaryHandler) (any, error) {
	if _, err := authorize(ctx); err != nil {
		return nil, err
	}
	return handler(ctx, req)
}

func authorizeStream(srv any, ss grpc.ServerStream, _ *grpc.StreamServerInfo, handler grpc.StreamHandler) error {
	if _, err := authorize(ss.Context()); err != nil {
		return err
	}
	return handler(srv, ss)
}
