package sds

import (
	"errors"
	"fmt"

	tlsv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/transport_sockets/tls/v3"

	"github.com/sds-bridge/sds-bridge/rotation"
)

// BuildSecrets is what a Server with names serves for u to a client that
// makes no choice of its own (see Validation), keyed by resource name.
// Empty names are replaced by the defaults.
func BuildSecrets(u *rotation.Update, names Names) (map[string]*tlsv3.Secret, error) {
	names = names.WithDefaults()
	if err := names.Validate(); err != nil {
		return nil, fmt.Errorf("names: %w", err)
	}
	if u == nil {
		return nil, errors.New("build secrets: nil update has no SVIDs")
	}
	certs, err := tlsCertificates(u, names)
	if err == nil {
		var secrets map[string]*tlsv3.Secret
		if secrets, err = withValidation(certs, u, names); err == nil {
			return secrets, nil
		}
	}
	return nil, fmt.Errorf("build secrets: %w", err)
}

// Secrets returns the Secrets served to a client that makes no choice of
// its own (see Validation) and their version; nil before the first Update.
// The protos are shared and must not be modified.
func (s *Server) Secrets() (map[string]*tlsv3.Secret, string) {
	snap := s.current.Load()
	if snap.number == 0 {
		return nil, ""
	}
	v, _ := validationFor(nil, s.cfg.Names.DisableSPIFFECertValidation)
	sv := snap.variants[v]
	out := make(map[string]*tlsv3.Secret, len(sv.secrets))
	for name, r := range sv.secrets {
		out[name] = r.secret
	}
	return out, snap.version
}
