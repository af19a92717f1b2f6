package devapi

import (
	"maps"

	"github.com/spiffe/go-spiffe/v2/spiffeid"
)

// Config is the configuration in effect, defaults applied.
func (i *Issuer) Config() IssuerConfig {
	cfg := i.cfg
	cfg.SPIFFEIDs = append([]spiffeid.ID(nil), i.cfg.SPIFFEIDs...)
	cfg.Hints = maps.Clone(i.cfg.Hints)
	cfg.FederatedWith = append([]spiffeid.TrustDomain(nil), i.cfg.FederatedWith...)
	return cfg
}

// OpenStreams is the number of open FetchX509SVID and FetchX509Bundles
// streams.
func (s *Server) OpenStreams() int {
	s.mu.Lock()
	defer s.mu.Unlock()
	return len(s.streams)
}

// SocketPath is the absolute path of the unix socket.
func (s *Server) SocketPath() string { return s.path }
