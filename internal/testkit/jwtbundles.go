package testkit

import (
	"encoding/base64"
	"encoding/json"
	"fmt"

	"github.com/spiffe/go-spiffe/v2/bundle/jwtbundle"
	"github.com/spiffe/go-spiffe/v2/spiffeid"
)

// ParseJWTBundles reads a JWT bundle file as spiffe-helper writes its
// jwt_bundle_file_name: a JSON object from trust domain name to the base64
// (standard encoding) of that trust domain's JWKS.
func ParseJWTBundles(data []byte) (*jwtbundle.Set, error) {
	var in map[string]string
	if err := json.Unmarshal(data, &in); err != nil {
		return nil, fmt.Errorf("parse JWT bundles: %w", err)
	}
	set := jwtbundle.NewSet()
	for name, enc := range in {
		td, err := spiffeid.TrustDomainFromString(name)
		if err != nil {
			return nil, fmt.Errorf("parse JWT bundles: trust domain %q: %w", name, err)
		}
		jwks, err := base64.StdEncoding.DecodeString(enc)
		if err != nil {
			return nil, fmt.Errorf("parse JWT bundles of %s: %w", name, err)
		}
		b, err := jwtbundle.Parse(td, jwks)
		if err != nil {
			return nil, fmt.Errorf("parse JWT bundles of %s: %w", name, err)
		}
		set.Add(b)
	}
	return set, nil
}
