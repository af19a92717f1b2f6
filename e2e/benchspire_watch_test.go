//go:build e2e && benchspire

package e2e

import (
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"
	"unsafe"

	corev3 "github.com/envoyproxy/go-control-plane/envoy/config/core/v3"
	tlsv3 "github.com/envoyproxy/go-control-plane/envoy/extensions/transport_sockets/tls/v3"
	discoveryv3 "github.com/envoyproxy/go-control-plane/envoy/service/discovery/v3"
	secretv3 "github.com/envoyproxy/go-control-plane/envoy/service/secret/v3"
	resourcev3 "github.com/envoyproxy/go-control-plane/pkg/resource/v3"
	"github.com/spiffe/go-spiffe/v2/workloadapi"
	"golang.org/x/sys/unix"
	statuspb "google.golang.org/genproto/googleapis/rpc/status"
	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
)

// leafClient is an Envoy-behaving SotW client on "default" and "ALL": it
// ACKs every response with its version and nonce (NACKs what it cannot
// load, keeping the last accepted version) and records when it first held
// each default leaf, by serial. The time is taken as the response
// arrives, before it is decoded.
type leafClient struct {
	name   string
	stream grpc.BidiStreamingClient[discoveryv3.DiscoveryRequest, discoveryv3.DiscoveryResponse]
	cancel context.CancelFunc
	done   chan struct{}
	serialTimes
}

func newLeafClient(t testing.TB, name string, conn *grpc.ClientConn) *leafClient {
	t.Helper()
	ctx, cancel := context.WithCancel(context.Background())
	stream, err := secretv3.NewSecretDiscoveryServiceClient(conn).StreamSecrets(ctx)
	if err != nil {
		cancel()
		t.Fatalf("e2e: %s: open SDS stream: %v", name, err)
	}
	c := &leafClient{name: name, stream: stream, cancel: cancel, done: make(chan struct{}), serialTimes: newSerialTimes()}
	go c.run()
	t.Cleanup(func() {
		c.cancel()
		<-c.done
	})
	return c
}

func (c *leafClient) run() {
	defer close(c.done)
	names := []string{sdsDefault, sdsAll}
	req := &discoveryv3.DiscoveryRequest{Node: &corev3.Node{Id: "bench-" + c.name, Cluster: "bench"},
		ResourceNames: names, TypeUrl: resourcev3.SecretType}
	accepted := ""
	for {
		if err := c.stream.Send(req); err != nil {
			c.fail(err)
			return
		}
		resp, err := c.stream.Recv()
		at := time.Now()
		if err != nil {
			c.fail(err)
			return
		}
		serial, err := defaultLeafSerial(resp)
		req = &discoveryv3.DiscoveryRequest{ResourceNames: names, TypeUrl: resourcev3.SecretType, ResponseNonce: resp.GetNonce()}
		if err != nil {
			req.VersionInfo = accepted
			req.ErrorDetail = statusDetail(err)
			continue
		}
		accepted = resp.GetVersionInfo()
		req.VersionInfo = accepted
		if serial == "" {
			continue // this response did not carry default
		}
		c.record(serial, at)
	}
}

// defaultLeafSerial is the leaf serial of the "default" secret in resp ("" when
// resp does not carry it), after the checks Envoy makes before using it.
func defaultLeafSerial(resp *discoveryv3.DiscoveryResponse) (string, error) {
	for _, a := range resp.GetResources() {
		s := &tlsv3.Secret{}
		if err := a.UnmarshalTo(s); err != nil {
			return "", err
		}
		if err := s.ValidateAll(); err != nil {
			return "", err
		}
		if s.GetName() != sdsDefault {
			continue
		}
		leaf, err := leafOf(s)
		if err != nil {
			return "", err
		}
		return leaf.SerialNumber.String(), nil
	}
	return "", nil
}

func (c *leafClient) waitFirst(ctx context.Context) error {
	select {
	case <-c.first:
		return nil
	case <-c.done:
		c.mu.Lock()
		defer c.mu.Unlock()
		return fmt.Errorf("e2e: %s SDS stream ended: %v", c.name, c.err)
	case <-ctx.Done():
		return fmt.Errorf("e2e: %s SDS client got no SVID: %w", c.name, ctx.Err())
	}
}

// seenBetween is the serials first seen within [from, to].
func (c *leafClient) seenBetween(from, to time.Time) map[string]time.Time {
	out := map[string]time.Time{}
	for k, v := range c.seen() {
		if !v.Before(from) && !v.After(to) {
			out[k] = v
		}
	}
	return out
}

// serialTimes records when each leaf serial was first seen by one watcher.
type serialTimes struct {
	first chan struct{} // closed at the first serial

	mu      sync.Mutex
	serials map[string]time.Time
	err     error
}

func newSerialTimes() serialTimes {
	return serialTimes{first: make(chan struct{}), serials: map[string]time.Time{}}
}

func (s *serialTimes) record(serial string, at time.Time) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if _, ok := s.serials[serial]; !ok {
		if len(s.serials) == 0 {
			close(s.first)
		}
		s.serials[serial] = at
	}
}

// fail keeps the first error.
func (s *serialTimes) fail(err error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if s.err == nil {
		s.err = err
	}
}

func (s *serialTimes) waitFirst(ctx context.Context, what string) error {
	select {
	case <-s.first:
		return nil
	case <-ctx.Done():
		s.mu.Lock()
		defer s.mu.Unlock()
		return fmt.Errorf("e2e: %s: %w (watch error: %v)", what, ctx.Err(), s.err)
	}
}

func (s *serialTimes) seen() map[string]time.Time {
	s.mu.Lock()
	defer s.mu.Unlock()
	out := make(map[string]time.Time, len(s.serials))
	for k, v := range s.serials {
		out[k] = v
	}
	return out
}

// folderWatch records, from inotify, when a credential folder first showed
// each leaf serial: the moment the event named trigger arrived, before
// the file is read. Nothing polls: a busy reader would take the CPU of
// what it times.
type folderWatch struct {
	name     string
	trigger  string // the entry whose event means "new leaf visible"
	certPath string // read and parsed on that event
	f        *os.File
	done     chan struct{}
	serialTimes
}

// watchBridgeFolder watches a bridge's folder: ..data renamed onto a
// generation (every file of it fsynced before that rename).
func watchBridgeFolder(t testing.TB, name, dir string) *folderWatch {
	return watchFolder(t, name, dir, unix.IN_CREATE|unix.IN_MOVED_TO, "..data", filepath.Join(dir, "..data", helperCert))
}

// watchHelperFolder watches spiffe-helper's folder: its certificate file
// closed after writing (it writes in place, no fsync) or moved in.
func watchHelperFolder(t testing.TB, name, dir string) *folderWatch {
	return watchFolder(t, name, dir, unix.IN_CLOSE_WRITE|unix.IN_MOVED_TO, helperCert, filepath.Join(dir, helperCert))
}

func watchFolder(t testing.TB, name, dir string, mask uint32, trigger, certPath string) *folderWatch {
	t.Helper()
	fd, err := unix.InotifyInit1(unix.IN_CLOEXEC | unix.IN_NONBLOCK)
	if err != nil {
		t.Fatalf("e2e: inotify: %v", err)
	}
	if _, err := unix.InotifyAddWatch(fd, dir, mask); err != nil {
		unix.Close(fd)
		t.Fatalf("e2e: inotify watch %s: %v", dir, err)
	}
	// A non-blocking descriptor in an *os.File waits in Go's poller, and
	// Close wakes the reader.
	w := &folderWatch{name: name, trigger: trigger, certPath: certPath,
		f: os.NewFile(uintptr(fd), "inotify"), done: make(chan struct{}), serialTimes: newSerialTimes()}
	go w.run()
	t.Cleanup(func() {
		w.f.Close()
		<-w.done
	})
	return w
}

func (w *folderWatch) run() {
	defer close(w.done)
	buf := make([]byte, 64<<10)
	for {
		n, err := w.f.Read(buf)
		at := time.Now()
		if err != nil {
			if !errors.Is(err, os.ErrClosed) && !errors.Is(err, io.EOF) {
				w.fail(err)
			}
			return
		}
		triggered := false
		for off := 0; off+unix.SizeofInotifyEvent <= n; {
			ev := (*unix.InotifyEvent)(unsafe.Pointer(&buf[off]))
			name := strings.TrimRight(string(buf[off+unix.SizeofInotifyEvent:off+unix.SizeofInotifyEvent+int(ev.Len)]), "\x00")
			off += unix.SizeofInotifyEvent + int(ev.Len)
			if ev.Mask&unix.IN_Q_OVERFLOW != 0 {
				w.fail(errors.New("inotify queue overflow"))
			}
			triggered = triggered || name == w.trigger
		}
		if !triggered {
			continue
		}
		certs, err := parseCertsFile(w.certPath)
		if err != nil {
			w.fail(err)
			continue
		}
		w.record(certs[0].SerialNumber.String(), at)
	}
}

func (w *folderWatch) fail(err error) {
	w.serialTimes.fail(fmt.Errorf("e2e: %s folder watch: %w", w.name, err))
}

// statusDetail is the error_detail of a NACK.
func statusDetail(err error) *statuspb.Status {
	return &statuspb.Status{Code: int32(codes.InvalidArgument), Message: err.Error()}
}

// apiWatch records when a go-spiffe X509Context watcher on the Workload API
// first had each default leaf: what the bridge receives, as early as any
// Workload API client can.
type apiWatch struct {
	done chan struct{}
	serialTimes
}

func watchWorkloadAPI(t testing.TB, addr string) *apiWatch {
	t.Helper()
	ctx, cancel := context.WithCancel(context.Background())
	client, err := workloadapi.New(ctx, workloadapi.WithAddr(addr))
	if err != nil {
		cancel()
		t.Fatalf("e2e: Workload API client: %v", err)
	}
	w := &apiWatch{done: make(chan struct{}), serialTimes: newSerialTimes()}
	go func() {
		defer close(w.done)
		w.fail(client.WatchX509Context(ctx, w))
	}()
	t.Cleanup(func() {
		cancel()
		<-w.done
		_ = client.Close()
	})
	return w
}

func (w *apiWatch) OnX509ContextUpdate(xc *workloadapi.X509Context) {
	at := time.Now()
	w.record(xc.DefaultSVID().Certificates[0].SerialNumber.String(), at)
}

func (w *apiWatch) OnX509ContextWatchError(error) {}
