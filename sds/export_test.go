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
	variants, err := build(u, names)
	if err != nil {
		return nil, fmt.Errorf("build secrets: %w", err)
	}
	return variants[validationOf(names.DisableSPIFFECertValidation)].protos(), nil
}

// Secrets returns the Secrets served to a client that makes no choice of
// its own (see Validation) and their version; nil before the first Update.
func (s *Server) Secrets() (map[string]*tlsv3.Secret, string) {
	snap := s.current.Load()
	if snap.number == 0 {
		return nil, ""
	}
	v, _ := validationFor(nil, s.cfg.Names.DisableSPIFFECertValidation)
	return snap.variants[v].protos(), snap.version
}

// protos unmarshals what sv sends.
func (sv served) protos() map[string]*tlsv3.Secret {
	out := make(map[string]*tlsv3.Secret, len(sv.secrets))
	for name, r := range sv.secrets {
		out[name] = &tlsv3.Secret{}
		if err := r.GetResource().UnmarshalTo(out[name]); err != nil {
			panic(err)
		}
	}
	return out
}
