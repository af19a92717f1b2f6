package devapi

import (
	"context"
	"crypto"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"time"

	"github.com/go-jose/go-jose/v4"
	"github.com/go-jose/go-jose/v4/jwt"
	"github.com/spiffe/go-spiffe/v2/bundle/jwtbundle"
	"github.com/spiffe/go-spiffe/v2/proto/spiffe/workload"
	"github.com/spiffe/go-spiffe/v2/spiffeid"
	"github.com/spiffe/go-spiffe/v2/svid/jwtsvid"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/proto"
	"google.golang.org/protobuf/types/known/structpb"
)

// jwtState is the JWT profile's part of a Server, guarded by Server.mu. One
// signing key serves every trust domain (a dev shortcut: SPIRE has one per
// trust domain).
type jwtState struct {
	// signer, its public key by key ID and that as a JWKS are made on
	// first use.
	signer jose.Signer
	keys   map[string]crypto.PublicKey
	jwks   []byte
	ttl    time.Duration
	// bundles is derived from the X.509 response, as Server.bundles is;
	// bundlesVer moves only when they change.
	bundles    *workload.JWTBundlesResponse
	bundlesVer uint64
	keyErr     error
	// streams are the FetchJWTBundles streams, woken with the X.509 ones.
	streams map[chan struct{}]struct{}
}

// SetJWTTTL sets the lifetime of the JWT-SVIDs the Server issues from now
// on; zero or negative means DefaultTTL.
func (s *Server) SetJWTTTL(ttl time.Duration) {
	s.mu.Lock()
	defer s.mu.Unlock()
	s.jwt.ttl = ttl
}

// jwtKeyLocked creates the signing key, its signer and its JWKS on first use.
func (s *Server) jwtKeyLocked() error {
	if s.jwt.signer != nil {
		return nil
	}
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	if err != nil {
		return fmt.Errorf("JWT signing key: %w", err)
	}
	var id [16]byte
	_, _ = rand.Read(id[:])
	kid := hex.EncodeToString(id[:])
	signer, err := jose.NewSigner(
		jose.SigningKey{Algorithm: jose.ES256, Key: jose.JSONWebKey{Key: key, KeyID: kid}},
		(&jose.SignerOptions{}).WithType("JWT"),
	)
	if err != nil {
		return fmt.Errorf("JWT signer: %w", err)
	}
	jwks, err := json.Marshal(jose.JSONWebKeySet{Keys: []jose.JSONWebKey{{Key: key.Public(), KeyID: kid, Use: "jwt-svid", Algorithm: string(jose.ES256)}}})
	if err != nil {
		return fmt.Errorf("marshal JWKS: %w", err)
	}
	s.jwt.signer, s.jwt.keys, s.jwt.jwks = signer, map[string]crypto.PublicKey{kid: key.Public()}, jwks
	return nil
}

// FetchJWTSVID implements the Workload API: a JWT-SVID for the requested
// audience for every SVID of the current X.509 response (with its hint), or
// only for the requested SPIFFE ID, as SPIRE's agent answers.
func (s *Server) FetchJWTSVID(_ context.Context, req *workload.JWTSVIDRequest) (*workload.JWTSVIDResponse, error) {
	if len(req.GetAudience()) == 0 {
		return nil, status.Error(codes.InvalidArgument, "audience must be specified")
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.x509Err != nil {
		return nil, s.x509Err
	}
	ttl := s.jwt.ttl
	if ttl <= 0 {
		ttl = DefaultTTL
	}
	if err := s.jwtKeyLocked(); err != nil {
		return nil, status.Error(codes.Internal, err.Error())
	}
	resp := &workload.JWTSVIDResponse{}
	now := time.Now()
	for _, x := range s.x509.GetSvids() {
		if req.GetSpiffeId() != "" && req.GetSpiffeId() != x.GetSpiffeId() {
			continue
		}
		token, err := jwt.Signed(s.jwt.signer).Claims(jwt.Claims{
			Subject:  x.GetSpiffeId(),
			Audience: jwt.Audience(req.GetAudience()),
			IssuedAt: jwt.NewNumericDate(now),
			Expiry:   jwt.NewNumericDate(now.Add(ttl)),
		}).Serialize()
		if err != nil {
			return nil, status.Error(codes.Internal, "sign JWT-SVID: "+err.Error())
		}
		resp.Svids = append(resp.Svids, &workload.JWTSVID{SpiffeId: x.GetSpiffeId(), Svid: token, Hint: x.GetHint()})
	}
	if len(resp.Svids) == 0 {
		// SPIRE's text when the caller has no (matching) entry.
		return nil, status.Error(codes.PermissionDenied, "no identity issued")
	}
	return resp, nil
}

// setJWTBundlesLocked derives the FetchJWTBundles answer from resp: the
// signing key as a JWKS for every trust domain of its SVIDs.
func (s *Server) setJWTBundlesLocked(resp *workload.X509SVIDResponse) {
	var out *workload.JWTBundlesResponse
	if resp != nil {
		if s.jwt.keyErr = s.jwtKeyLocked(); s.jwt.keyErr != nil {
			return
		}
		out = &workload.JWTBundlesResponse{Bundles: map[string][]byte{}}
		for _, x := range resp.GetSvids() {
			if id, err := spiffeid.FromString(x.GetSpiffeId()); err == nil {
				out.Bundles[id.TrustDomain().IDString()] = s.jwt.jwks
			}
		}
	}
	if !proto.Equal(out, s.jwt.bundles) {
		s.jwt.bundles = out
		s.jwt.bundlesVer++
	}
}

// FetchJWTBundles implements the Workload API: the JWT bundles at once,
// then again whenever they change.
func (s *Server) FetchJWTBundles(_ *workload.JWTBundlesRequest, stream grpc.ServerStreamingServer[workload.JWTBundlesResponse]) error {
	return serveStream(s, stream, "FetchJWTBundles", s.jwt.streams, func() (*workload.JWTBundlesResponse, uint64, error) {
		err := s.x509Err
		if s.jwt.keyErr != nil {
			err = status.Error(codes.Internal, s.jwt.keyErr.Error())
		}
		return s.jwt.bundles, s.jwt.bundlesVer, err
	})
}

// ValidateJWTSVID implements the Workload API: the token must be signed by
// this Server's key, for a SPIFFE ID it issues now, for the audience.
func (s *Server) ValidateJWTSVID(_ context.Context, req *workload.ValidateJWTSVIDRequest) (*workload.ValidateJWTSVIDResponse, error) {
	if req.GetAudience() == "" {
		return nil, status.Error(codes.InvalidArgument, "audience must be specified")
	}
	if req.GetSvid() == "" {
		return nil, status.Error(codes.InvalidArgument, "svid must be specified")
	}
	s.mu.Lock()
	resp, keys := s.jwt.bundles, s.jwt.keys
	s.mu.Unlock()
	set := jwtbundle.NewSet()
	for tdID := range resp.GetBundles() {
		if td, err := spiffeid.TrustDomainFromString(tdID); err == nil {
			set.Add(jwtbundle.FromJWTAuthorities(td, keys))
		}
	}
	svid, err := jwtsvid.ParseAndValidate(req.GetSvid(), set, []string{req.GetAudience()})
	if err != nil {
		return nil, status.Error(codes.InvalidArgument, err.Error())
	}
	for k, v := range svid.Claims {
		// structpb takes []any, not go-jose's []string.
		if ss, ok := v.([]string); ok {
			vs := make([]any, len(ss))
			for i, s := range ss {
				vs[i] = s
			}
			svid.Claims[k] = vs
		}
	}
	claims, err := structpb.NewStruct(svid.Claims)
	if err != nil {
		return nil, status.Error(codes.Internal, err.Error())
	}
	return &workload.ValidateJWTSVIDResponse{SpiffeId: svid.ID.String(), Claims: claims}, nil
}
