package rotation_test

import (
	"context"
	"fmt"
	"log/slog"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	corev3 "github.com/envoyproxy/go-control-plane/envoy/config/core/v3"
	discoveryv3 "github.com/envoyproxy/go-control-plane/envoy/service/discovery/v3"
	secretv3 "github.com/envoyproxy/go-control-plane/envoy/service/secret/v3"
	"github.com/envoyproxy/go-control-plane/pkg/resource/v3"
	"github.com/spiffe/go-spiffe/v2/bundle/x509bundle"
	"github.com/spiffe/go-spiffe/v2/spiffeid"
	"github.com/spiffe/go-spiffe/v2/svid/x509svid"
	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials/insecure"

	"github.com/sds-bridge/sds-bridge/filesink"
	"github.com/sds-bridge/sds-bridge/internal/devapi"
	"github.com/sds-bridge/sds-bridge/internal/testkit"
	"github.com/sds-bridge/sds-bridge/rotation"
	"github.com/sds-bridge/sds-bridge/sds"
)

// TestBrokenFolderDoesNotStopSDS wires the real source to both real sinks
// and breaks the folder's disk (its directory replaced by a file, as when
// a volume goes away): Envoy keeps getting every rotation over SDS, the
// folder's failure is visible in its status, and the folder catches up
// once the disk is back (invariant 4: sinks are isolated).
func TestBrokenFolderDoesNotStopSDS(t *testing.T) {
	tmp := testkit.ShortDir(t)
	log := slog.New(slog.DiscardHandler)
	td := spiffeid.RequireTrustDomainFromString("example.org")
	id := spiffeid.RequireFromPath(td, "/db")
	authority, err := devapi.NewCA(td, time.Hour)
	if err != nil {
		t.Fatal(err)
	}

	wl := devapi.NewServer(devapi.ServerConfig{SocketPath: filepath.Join(tmp, "wl.sock"), Logger: log})
	if err := wl.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(wl.Stop)
	push := func() {
		t.Helper()
		svid, err := authority.Issue(id, time.Hour)
		if err != nil {
			t.Fatal(err)
		}
		resp, err := devapi.X509Response([]*x509svid.SVID{svid}, []*x509bundle.Bundle{authority.Bundle()})
		if err != nil {
			t.Fatal(err)
		}
		wl.SetX509(resp)
	}

	sdsServer, err := sds.New(sds.Config{SocketPath: filepath.Join(tmp, "sds.sock"), Logger: log})
	if err != nil {
		t.Fatal(err)
	}
	dir := filepath.Join(tmp, "certs")
	folder, err := filesink.New(filesink.Config{Dir: dir, Logger: log})
	if err != nil {
		t.Fatal(err)
	}
	if err := folder.Prepare(t.Context()); err != nil {
		t.Fatal(err)
	}
	// The folder catches up by the next rotation here (retries are
	// TestFolderCatchesUpWithoutANewRotation's), so none comes in between.
	src, err := rotation.New(rotation.Config{Address: wl.Address(), Sinks: []rotation.Sink{sdsServer, folder}, Logger: log, RetryBackoff: time.Hour})
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	served, ran := make(chan error, 1), make(chan error, 1)
	go func() { served <- sdsServer.Serve(ctx) }()
	go func() { ran <- src.Run(ctx) }()
	t.Cleanup(func() {
		cancel()
		for _, ch := range []chan error{served, ran} {
			if err := <-ch; err != nil {
				t.Error(err)
			}
		}
	})

	// An Envoy on the SDS socket.
	testkit.Eventually(t, "the SDS socket", func() bool { _, err := os.Stat(filepath.Join(tmp, "sds.sock")); return err == nil })
	conn, err := grpc.NewClient("unix://"+filepath.Join(tmp, "sds.sock"), grpc.WithTransportCredentials(insecure.NewCredentials()))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { conn.Close() })
	sctx, scancel := context.WithTimeout(context.Background(), testkit.Timeout)
	t.Cleanup(scancel)
	stream, err := secretv3.NewSecretDiscoveryServiceClient(conn).StreamSecrets(sctx)
	if err != nil {
		t.Fatal(err)
	}
	envoyGets := func(gen uint64) {
		t.Helper()
		resp, err := stream.Recv()
		if err != nil {
			t.Fatal(err)
		}
		if !strings.HasSuffix(resp.GetVersionInfo(), fmt.Sprintf("-%d", gen)) {
			t.Fatalf("Envoy got version %q, want generation %d", resp.GetVersionInfo(), gen)
		}
		if err := stream.Send(&discoveryv3.DiscoveryRequest{TypeUrl: resource.SecretType, ResourceNames: []string{"default"},
			VersionInfo: resp.GetVersionInfo(), ResponseNonce: resp.GetNonce()}); err != nil {
			t.Fatal(err)
		}
	}
	if err := stream.Send(&discoveryv3.DiscoveryRequest{Node: &corev3.Node{Id: "envoy"}, TypeUrl: resource.SecretType, ResourceNames: []string{"default"}}); err != nil {
		t.Fatal(err)
	}
	folderStatus := func() rotation.SinkStatus {
		for _, st := range src.SinkStatuses() {
			if st.Name == folder.Name() {
				return st
			}
		}
		t.Fatal("no status for the folder")
		return rotation.SinkStatus{}
	}

	push()
	envoyGets(1)
	testkit.Eventually(t, "generation 1 on disk", func() bool { return folderStatus().Generation == 1 })

	// The disk goes away under the folder.
	if err := os.Rename(dir, dir+".away"); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(dir, []byte("not a directory"), 0o600); err != nil {
		t.Fatal(err)
	}
	for gen := uint64(2); gen <= 3; gen++ {
		push()
		envoyGets(gen)
		testkit.Eventually(t, fmt.Sprintf("the folder's failure of generation %d", gen), func() bool {
			st := folderStatus()
			return st.Failures == gen-1 && st.Err != nil
		})
	}
	if st := folderStatus(); st.Generation != 1 {
		t.Errorf("folder status %+v, want generation 1 still", st)
	}
	if st := folder.Stats(); st.WriteFailures != 2 {
		t.Errorf("folder Stats %+v, want 2 write failures", st)
	}

	// Back: the next rotation reaches the folder again.
	if err := os.Remove(dir); err != nil {
		t.Fatal(err)
	}
	if err := os.Rename(dir+".away", dir); err != nil {
		t.Fatal(err)
	}
	push()
	envoyGets(4)
	testkit.Eventually(t, "generation 4 on disk", func() bool { return folderStatus().Generation == 4 })
	if m, err := filesink.Inspect(filesink.InspectConfig{Dir: dir}); err != nil || m.Generation != 4 {
		t.Errorf("folder after recovery: %+v, %v", m, err)
	}
	if st := folderStatus(); st.Err != nil {
		t.Errorf("folder status after recovery: %+v", st)
	}
}
