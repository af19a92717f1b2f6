package devapi

// Config is the configuration in effect, defaults applied.
func (i *Issuer) Config() IssuerConfig {
	return i.cfg.WithDefaults() // a copy: defaults are applied already
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
