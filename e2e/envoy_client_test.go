//go:build e2e

package e2e

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"fmt"
	"io"
	"maps"
	"net"
	"sort"
	"strings"
	"sync"
	"testing"
	"time"

	corev3 "github.com/envoyproxy/go-control-plane/envoy/config/core/v3"
	tlsv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/transport_sockets/tls/v3"
	discoveryv3 "github.com/envoyproxy/go-control-plane/envoy/service/discovery/v3"
	secretv3 "github.com/envoyproxy/go-control-plane/envoy/service/secret/v3"
	resourcev3 "github.com/envoyproxy/go-control-plane/pkg/resource/v3"
	"github.com/spiffe/go-spiffe/v2/bundle/x509bundle"
	"github.com/spiffe/go-spiffe/v2/spiffeid"
	"github.com/spiffe/go-spiffe/v2/svid/x509svid"
	statuspb "google.golang.org/genproto/googleapis/rpc/status"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials/insecure"
)

// Names the bridge serves, as SPIRE's agent names them.
const (
	sdsDefault = "default"
	sdsRootCA  = "ROOTCA"
	sdsAll     = "ALL"
)

// dialSDS opens a gRPC client conn on the bridge's SDS socket, closed when
// the test ends.
func dialSDS(t testing.TB, socket string) *grpc.ClientConn {
	t.Helper()
	conn, err := grpc.NewClient("unix://"+socket, grpc.WithTransportCredentials(insecure.NewCredentials()))
	if err != nil {
		t.Fatalf("e2e: dial SDS %s: %v", socket, err)
	}
	t.Cleanup(func() { _ = conn.Close() })
	return conn
}

// sdsState is what the Envoy-behaving client holds after one response.
type sdsState struct {
	Version string
	Nonce   string
	// Secrets is the client's merged view: a SotW response for SDS may
	// carry only some of the subscribed names, as Envoy's own SDS
	// subscriptions allow.
	Secrets map[string]*tlsv3.Secret
	// Rejected is why the response was NACKed; nil when ACKed.
	Rejected error
}

// envoyClient behaves as Envoy's SDS client does on one SotW stream:
// subscribe to names, check every Secret (ValidateAll, and that the
// material can be loaded), ACK with the response's version and nonce, or
// NACK with the last accepted version, the nonce and an error detail. One
// goroutine owns the stream; the test reads states from Next.
type envoyClient struct {
	names  []string
	stream grpc.BidiStreamingClient[discoveryv3.DiscoveryRequest, discoveryv3.DiscoveryResponse]
	cancel context.CancelFunc
	states chan sdsState
	done   chan struct{}

	mu     sync.Mutex
	err    error // why the stream ended; valid once done is closed
	latest sdsState
}

func newEnvoyClient(t testing.TB, conn *grpc.ClientConn, names ...string) *envoyClient {
	t.Helper()
	ctx, cancel := context.WithCancel(context.Background())
	stream, err := secretv3.NewSecretDiscoveryServiceClient(conn).StreamSecrets(ctx)
	if err != nil {
		cancel()
		t.Fatalf("e2e: open SDS stream: %v", err)
	}
	c := &envoyClient{
		names:  names,
		stream: stream,
		cancel: cancel,
		states: make(chan sdsState, 256),
		done:   make(chan struct{}),
	}
	if err := stream.Send(c.request("", "", nil)); err != nil {
		cancel()
		t.Fatalf("e2e: subscribe to %v: %v", names, err)
	}
	go c.run()
	t.Cleanup(c.Close)
	return c
}

func (c *envoyClient) request(version, nonce string, detail error) *discoveryv3.DiscoveryRequest {
	req := &discoveryv3.DiscoveryRequest{
		VersionInfo:   version,
		ResponseNonce: nonce,
		Node:          &corev3.Node{Id: "e2e-envoy", Cluster: "e2e"},
		ResourceNames: c.names,
		TypeUrl:       resourcev3.SecretType,
	}
	if detail != nil {
		req.ErrorDetail = &statuspb.Status{Code: int32(codes.InvalidArgument), Message: detail.Error()}
	}
	return req
}

func (c *envoyClient) run() {
	defer close(c.done)
	defer close(c.states)
	var accepted string // version of the last ACKed response
	secrets := map[string]*tlsv3.Secret{}
	for {
		resp, err := c.stream.Recv()
		if err != nil {
			c.mu.Lock()
			c.err = err
			c.mu.Unlock()
			return
		}
		next := maps.Clone(secrets)
		rejected := checkSecrets(resp, next)
		if rejected == nil && resp.GetNonce() == "" {
			// A stream response needs a nonce to be ACKed by.
			rejected = errors.New("stream response without a nonce")
		}
		st := sdsState{Version: resp.GetVersionInfo(), Nonce: resp.GetNonce(), Rejected: rejected}
		var req *discoveryv3.DiscoveryRequest
		if rejected == nil {
			accepted, secrets = resp.GetVersionInfo(), next
			req = c.request(accepted, resp.GetNonce(), nil)
		} else {
			req = c.request(accepted, resp.GetNonce(), rejected)
		}
		st.Secrets = secrets
		if err := c.stream.Send(req); err != nil {
			c.mu.Lock()
			c.err = fmt.Errorf("send ACK/NACK: %w", err)
			c.mu.Unlock()
			return
		}
		c.mu.Lock()
		c.latest = st
		c.mu.Unlock()
		select {
		case c.states <- st:
		default:
			// The test is not reading (e.g. while the agent is down);
			// Latest still has the newest state.
		}
	}
}

// checkSecrets decodes and validates every resource of resp into into.
func checkSecrets(resp *discoveryv3.DiscoveryResponse, into map[string]*tlsv3.Secret) error {
	if resp.GetTypeUrl() != resourcev3.SecretType {
		return fmt.Errorf("type_url %q, want %q", resp.GetTypeUrl(), resourcev3.SecretType)
	}
	if resp.GetVersionInfo() == "" {
		return fmt.Errorf("response without a version")
	}
	var errs []error
	for _, a := range resp.GetResources() {
		s := &tlsv3.Secret{}
		if err := a.UnmarshalTo(s); err != nil {
			errs = append(errs, fmt.Errorf("decode %s: %w", a.GetTypeUrl(), err))
			continue
		}
		if err := s.ValidateAll(); err != nil {
			errs = append(errs, fmt.Errorf("secret %q: ValidateAll: %w", s.GetName(), err))
			continue
		}
		if err := loadable(s); err != nil {
			errs = append(errs, fmt.Errorf("secret %q: %w", s.GetName(), err))
			continue
		}
		into[s.GetName()] = s
	}
	return errors.Join(errs...)
}

// loadable checks what Envoy checks when it installs a Secret: the key
// matches the chain, the roots parse.
func loadable(s *tlsv3.Secret) error {
	switch {
	case s.GetTlsCertificate() != nil:
		_, err := tlsCertificate(s)
		return err
	case s.GetValidationContext() != nil:
		_, err := trustFromSecret(s, spiffeid.RequireTrustDomainFromString(trustDomain))
		return err
	default:
		return fmt.Errorf("neither tls_certificate nor validation_context")
	}
}

// Next returns the next state the client accepted or rejected.
func (c *envoyClient) Next(ctx context.Context) (sdsState, error) {
	select {
	case st, ok := <-c.states:
		if !ok {
			return sdsState{}, fmt.Errorf("e2e: SDS stream ended: %w", c.Err())
		}
		return st, nil
	case <-ctx.Done():
		return sdsState{}, fmt.Errorf("e2e: no SDS response: %w", ctx.Err())
	}
}

// Latest is the newest state, after dropping what is queued.
func (c *envoyClient) Latest() sdsState {
	for {
		select {
		case _, ok := <-c.states:
			if ok {
				continue
			}
		default:
		}
		break
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.latest
}

// Open reports whether the stream is still open.
func (c *envoyClient) Open() bool {
	select {
	case <-c.done:
		return false
	default:
		return true
	}
}

// Err is why the stream ended (nil while it is open).
func (c *envoyClient) Err() error {
	select {
	case <-c.done:
	default:
		return nil
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.err
}

// Close ends the stream as Envoy does on shutdown and waits for the reader.
func (c *envoyClient) Close() {
	c.cancel()
	<-c.done
}

// fetchSecrets asks with the unary FetchSecrets, as a one-shot client does.
func fetchSecrets(ctx context.Context, conn *grpc.ClientConn, names ...string) (map[string]*tlsv3.Secret, string, error) {
	resp, err := secretv3.NewSecretDiscoveryServiceClient(conn).FetchSecrets(ctx, &discoveryv3.DiscoveryRequest{
		Node:          &corev3.Node{Id: "e2e-fetch"},
		ResourceNames: names,
		TypeUrl:       resourcev3.SecretType,
	})
	if err != nil {
		return nil, "", fmt.Errorf("e2e: FetchSecrets %v: %w", names, err)
	}
	out := map[string]*tlsv3.Secret{}
	if err := checkSecrets(resp, out); err != nil {
		return nil, "", fmt.Errorf("e2e: FetchSecrets %v: %w", names, err)
	}
	return out, resp.GetVersionInfo(), nil
}

// tlsCertificate turns a tls_certificate Secret into a tls.Certificate (with
// Leaf set).
func tlsCertificate(s *tlsv3.Secret) (tls.Certificate, error) {
	tc := s.GetTlsCertificate()
	if tc == nil {
		return tls.Certificate{}, fmt.Errorf("e2e: secret %q is not a tls_certificate", s.GetName())
	}
	chain, key := tc.GetCertificateChain().GetInlineBytes(), tc.GetPrivateKey().GetInlineBytes()
	if len(chain) == 0 || len(key) == 0 {
		return tls.Certificate{}, fmt.Errorf("e2e: secret %q: chain or key not inline", s.GetName())
	}
	cert, err := tls.X509KeyPair(chain, key)
	if err != nil {
		return tls.Certificate{}, fmt.Errorf("e2e: secret %q: %w", s.GetName(), err)
	}
	return cert, nil
}

// leafOf is the leaf certificate of a tls_certificate Secret.
func leafOf(s *tlsv3.Secret) (*x509.Certificate, error) {
	cert, err := tlsCertificate(s)
	if err != nil {
		return nil, err
	}
	return cert.Leaf, nil
}

// trustFromSecret reads the trust bundles of a validation_context Secret:
// either Envoy's SPIFFE certificate validator (one bundle per trust domain,
// as SPIRE's agent serves "ALL") or a plain trusted_ca ("ROOTCA") holding
// the roots of td.
func trustFromSecret(s *tlsv3.Secret, td spiffeid.TrustDomain) (*x509bundle.Set, error) {
	vc := s.GetValidationContext()
	if vc == nil {
		return nil, fmt.Errorf("e2e: secret %q is not a validation_context", s.GetName())
	}
	set := x509bundle.NewSet()
	if cv := vc.GetCustomValidatorConfig(); cv != nil {
		if cv.GetName() != "envoy.tls.cert_validator.spiffe" {
			return nil, fmt.Errorf("e2e: secret %q: custom validator %q", s.GetName(), cv.GetName())
		}
		cfg := &tlsv3.SPIFFECertValidatorConfig{}
		if err := cv.GetTypedConfig().UnmarshalTo(cfg); err != nil {
			return nil, fmt.Errorf("e2e: secret %q: %w", s.GetName(), err)
		}
		for _, td := range cfg.GetTrustDomains() {
			id, err := spiffeid.TrustDomainFromString(td.GetName())
			if err != nil {
				return nil, fmt.Errorf("e2e: secret %q: trust domain %q: %w", s.GetName(), td.GetName(), err)
			}
			b, err := x509bundle.Parse(id, td.GetTrustBundle().GetInlineBytes())
			if err != nil {
				return nil, fmt.Errorf("e2e: secret %q: bundle of %s: %w", s.GetName(), id, err)
			}
			set.Add(b)
		}
		if set.Len() == 0 {
			return nil, fmt.Errorf("e2e: secret %q: SPIFFE validator without trust domains", s.GetName())
		}
		return set, nil
	}
	// A plain trusted_ca carries no trust domain: its roots are taken as
	// those of td, which is what SPIRE's "ROOTCA" means.
	b, err := x509bundle.Parse(td, vc.GetTrustedCa().GetInlineBytes())
	if err != nil {
		return nil, fmt.Errorf("e2e: secret %q: trusted_ca: %w", s.GetName(), err)
	}
	set.Add(b)
	return set, nil
}

// envoyListener is a TLS server configured only from SDS material, as an
// Envoy listener with `default` as its certificate and `ALL` (SPIFFE
// validator) as its validation context: it requires a client certificate
// whose chain verifies against the bundle of the client's trust domain.
// It serves one connection and writes the client's SPIFFE ID back.
type envoyListener struct {
	Addr   string
	Leaf   *x509.Certificate // the certificate it presents
	ln     net.Listener
	result chan listenerResult
}

type listenerResult struct {
	ClientID spiffeid.ID
	Err      error
}

func startEnvoyListener(t testing.TB, secrets map[string]*tlsv3.Secret, certName, validationName string) *envoyListener {
	t.Helper()
	certSecret, vcSecret := secrets[certName], secrets[validationName]
	if certSecret == nil || vcSecret == nil {
		t.Fatalf("e2e: listener needs secrets %q and %q, have %v", certName, validationName, sortedKeys(secrets))
	}
	cert, err := tlsCertificate(certSecret)
	if err != nil {
		t.Fatal(err)
	}
	trust, err := trustFromSecret(vcSecret, spiffeid.RequireTrustDomainFromString(trustDomain))
	if err != nil {
		t.Fatal(err)
	}
	cfg := &tls.Config{
		MinVersion:   tls.VersionTLS12,
		Certificates: []tls.Certificate{cert},
		ClientAuth:   tls.RequireAnyClientCert,
		// Envoy's SPIFFE validator: pick the bundle by the peer's trust
		// domain and verify the chain against it.
		VerifyPeerCertificate: func(raw [][]byte, _ [][]*x509.Certificate) error {
			_, _, err := x509svid.ParseAndVerify(raw, trust)
			return err
		},
	}
	ln, err := tls.Listen("tcp", "127.0.0.1:0", cfg)
	if err != nil {
		t.Fatalf("e2e: listen: %v", err)
	}
	l := &envoyListener{Addr: ln.Addr().String(), Leaf: cert.Leaf, ln: ln, result: make(chan listenerResult, 1)}
	go l.serveOne()
	t.Cleanup(func() { _ = ln.Close() })
	return l
}

func (l *envoyListener) serveOne() {
	res := listenerResult{}
	defer func() { l.result <- res }()
	conn, err := l.ln.Accept()
	if err != nil {
		res.Err = fmt.Errorf("accept: %w", err)
		return
	}
	defer conn.Close()
	_ = conn.SetDeadline(time.Now().Add(30 * time.Second))
	tc := conn.(*tls.Conn)
	if err := tc.Handshake(); err != nil {
		res.Err = fmt.Errorf("server handshake: %w", err)
		return
	}
	id, err := x509svid.IDFromCert(tc.ConnectionState().PeerCertificates[0])
	if err != nil {
		res.Err = err
		return
	}
	res.ClientID = id
	if _, err := io.WriteString(tc, id.String()+"\n"); err != nil {
		res.Err = fmt.Errorf("server write: %w", err)
	}
}

// Wait returns what the server saw of its one connection. When the client
// could not even connect (dialErr), nothing will arrive: the listener is
// closed first so Accept returns.
func (l *envoyListener) Wait(ctx context.Context, dialErr error) listenerResult {
	if dialErr != nil {
		_ = l.ln.Close()
	}
	select {
	case r := <-l.result:
		return r
	case <-ctx.Done():
		_ = l.ln.Close()
		return <-l.result
	}
}

// dialMTLS connects to addr with cfg, reads the line the server writes and
// returns the server's leaf and that line.
func dialMTLS(ctx context.Context, addr string, cfg *tls.Config) (*x509.Certificate, string, error) {
	d := tls.Dialer{Config: cfg}
	conn, err := d.DialContext(ctx, "tcp", addr)
	if err != nil {
		return nil, "", fmt.Errorf("e2e: mTLS dial %s: %w", addr, err)
	}
	defer conn.Close()
	tc := conn.(*tls.Conn)
	_ = tc.SetDeadline(time.Now().Add(30 * time.Second))
	line, err := io.ReadAll(tc)
	if err != nil {
		return nil, "", fmt.Errorf("e2e: mTLS read: %w", err)
	}
	return tc.ConnectionState().PeerCertificates[0], strings.TrimSpace(string(line)), nil
}

func sortedKeys[V any](m map[string]V) []string {
	keys := make([]string, 0, len(m))
	for k := range m {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	return keys
}
