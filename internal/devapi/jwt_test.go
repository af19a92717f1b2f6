package devapi

import (
	"context"
	"testing"
	"time"

	"github.com/sds-bridge/sds-bridge/internal/testkit"
	"github.com/spiffe/go-spiffe/v2/bundle/x509bundle"
	"github.com/spiffe/go-spiffe/v2/proto/spiffe/workload"
	"github.com/spiffe/go-spiffe/v2/spiffeid"
	"github.com/spiffe/go-spiffe/v2/svid/jwtsvid"
	"github.com/spiffe/go-spiffe/v2/svid/x509svid"
	"github.com/spiffe/go-spiffe/v2/workloadapi"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"
)

func TestJWTSVIDsForAnyAudience(t *testing.T) {
	srv := startServer(t)
	td := spiffeid.RequireTrustDomainFromString("dev.test")
	first, second := spiffeid.RequireFromPath(td, "/dev"), spiffeid.RequireFromPath(td, "/second")
	iss, err := NewIssuer(IssuerConfig{
		TrustDomain: td,
		SPIFFEIDs:   []spiffeid.ID{first, second},
		Hints:       map[spiffeid.ID]string{second: "second"},
		TTL:         time.Minute,
		Logger:      testkit.Logger(t),
	}, srv)
	if err != nil {
		t.Fatal(err)
	}
	ctx := guardCtx(t)

	// Before any X.509 response there is no identity to issue for.
	raw := rawClient(t, srv)
	if _, err := raw.FetchJWTSVID(withHeader(ctx), &workload.JWTSVIDRequest{Audience: []string{"a"}}); status.Code(err) != codes.PermissionDenied {
		t.Errorf("FetchJWTSVID before any SVID: %v, want PermissionDenied", err)
	}

	runCtx, cancel := context.WithCancel(ctx)
	runErr := make(chan error, 1)
	go func() { runErr <- iss.Run(runCtx) }()
	defer func() {
		cancel()
		if err := <-runErr; err != nil {
			t.Errorf("Run: %v", err)
		}
	}()
	w := watch(t, srv.Address())
	w.next(t, "the first SVIDs", func(*workloadapi.X509Context) bool { return true })

	client, err := workloadapi.New(ctx, workloadapi.WithAddr(srv.Address()))
	if err != nil {
		t.Fatal(err)
	}
	defer client.Close()
	bundles, err := client.FetchJWTBundles(ctx)
	if err != nil {
		t.Fatalf("FetchJWTBundles: %v", err)
	}
	if bundles.Len() != 1 || !bundles.Has(td) {
		t.Fatalf("%d JWT bundles, want only %s", bundles.Len(), td)
	}

	for _, tc := range []struct {
		name    string
		subject spiffeid.ID
		want    spiffeid.ID
	}{
		{"default subject is the first SVID", spiffeid.ID{}, first},
		{"named subject", second, second},
	} {
		t.Run(tc.name, func(t *testing.T) {
			svid, err := client.FetchJWTSVID(ctx, jwtsvid.Params{Audience: "https://api.example.org", ExtraAudiences: []string{"billing"}, Subject: tc.subject})
			if err != nil {
				t.Fatalf("FetchJWTSVID: %v", err)
			}
			verified, err := jwtsvid.ParseAndValidate(svid.Marshal(), bundles, []string{"billing"})
			if err != nil {
				t.Fatalf("token does not verify with the JWT bundle: %v", err)
			}
			if verified.ID != tc.want {
				t.Errorf("subject %s, want %s", verified.ID, tc.want)
			}
			if len(verified.Audience) != 2 {
				t.Errorf("audience %v, want both", verified.Audience)
			}
			if left := time.Until(verified.Expiry); left <= 0 || left > time.Minute {
				t.Errorf("expires in %s, want within the issuer's TTL (1m)", left)
			}
			got, err := client.ValidateJWTSVID(ctx, svid.Marshal(), "billing")
			if err != nil {
				t.Fatalf("ValidateJWTSVID: %v", err)
			}
			if got.ID != tc.want {
				t.Errorf("ValidateJWTSVID subject %s, want %s", got.ID, tc.want)
			}
			if _, err := client.ValidateJWTSVID(ctx, svid.Marshal(), "someone-else"); err == nil {
				t.Error("ValidateJWTSVID accepted a token for another audience")
			}
		})
	}

	all, err := client.FetchJWTSVIDs(ctx, jwtsvid.Params{Audience: "a"})
	if err != nil {
		t.Fatal(err)
	}
	if len(all) != 2 || all[1].Hint != "second" {
		t.Errorf("FetchJWTSVIDs: %d SVIDs (hint of the second %q), want 2 with hint \"second\"", len(all), all[len(all)-1].Hint)
	}

	if _, err := raw.FetchJWTSVID(withHeader(ctx), &workload.JWTSVIDRequest{}); status.Code(err) != codes.InvalidArgument {
		t.Errorf("FetchJWTSVID without audience: %v, want InvalidArgument", err)
	}
	if _, err := raw.FetchJWTSVID(withHeader(ctx), &workload.JWTSVIDRequest{Audience: []string{"a"}, SpiffeId: "spiffe://dev.test/nobody"}); status.Code(err) != codes.PermissionDenied {
		t.Errorf("FetchJWTSVID for an ID not issued: %v, want PermissionDenied", err)
	}
}

func TestJWTBundlesFollowTheX509Response(t *testing.T) {
	srv := startServer(t)
	ctx := guardCtx(t)
	raw := rawClient(t, srv)
	streamCtx, cancel := context.WithCancel(withHeader(ctx))
	defer cancel()
	stream, err := raw.FetchJWTBundles(streamCtx, &workload.JWTBundlesRequest{})
	if err != nil {
		t.Fatal(err)
	}
	for _, td := range []string{"one.test", "two.test"} {
		c := newCA(t, td)
		id := spiffeid.RequireFromPath(c.TrustDomain(), "/w")
		svid, err := c.Issue(id, time.Hour)
		if err != nil {
			t.Fatal(err)
		}
		resp, err := X509Response([]*x509svid.SVID{svid}, []*x509bundle.Bundle{c.Bundle()})
		if err != nil {
			t.Fatal(err)
		}
		srv.SetX509(resp)
		got, err := stream.Recv()
		if err != nil {
			t.Fatalf("Recv: %v", err)
		}
		if _, ok := got.GetBundles()["spiffe://"+td]; !ok || len(got.GetBundles()) != 1 {
			t.Errorf("JWT bundles for %v, want only spiffe://%s", keys(got.GetBundles()), td)
		}
	}
}

func keys[V any](m map[string]V) []string {
	var out []string
	for k := range m {
		out = append(out, k)
	}
	return out
}
