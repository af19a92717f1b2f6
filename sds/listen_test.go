package sds

import (
	"context"
	"net"
	"os"
	"path/filepath"
	"strings"
	"testing"

	discoveryv3 "github.com/envoyproxy/go-control-plane/envoy/service/discovery/v3"
	"github.com/envoyproxy/go-control-plane/pkg/resource/v3"

	"github.com/sds-bridge/sds-bridge/internal/flock"
)

func TestServeSocket(t *testing.T) {
	tests := []struct {
		name string
		// path returns the socket path inside a fresh short directory.
		path       func(dir string) string
		mode       os.FileMode
		expectMode os.FileMode
		// createdDirs are relative to the fresh directory.
		createdDirs []string
	}{
		{name: "default mode", path: func(d string) string { return filepath.Join(d, "sds.sock") }, expectMode: 0o600},
		{name: "custom mode", path: func(d string) string { return filepath.Join(d, "sds.sock") }, mode: 0o660, expectMode: 0o660},
		{
			name:        "missing parent directories",
			path:        func(d string) string { return filepath.Join(d, "run", "sds", "sds.sock") },
			expectMode:  0o600,
			createdDirs: []string{"run", "run/sds"},
		},
		{
			// Too long to bind in a private directory first: bound in place.
			name: "path near the sun_path limit",
			path: func(d string) string {
				return filepath.Join(d, strings.Repeat("s", flock.MaxSocketPath-len(d)-1))
			},
			expectMode: 0o600,
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			dir := filepath.Dir(socketPath(t))
			path := tt.path(dir)
			s, err := New(Config{SocketPath: path, SocketMode: tt.mode})
			if err != nil {
				t.Fatal(err)
			}
			stop := serve(t, s)
			fi, err := os.Lstat(path)
			if err != nil {
				t.Fatal(err)
			}
			if fi.Mode().Type() != os.ModeSocket || fi.Mode().Perm() != tt.expectMode {
				t.Errorf("socket mode %s, want socket with %04o", fi.Mode(), tt.expectMode)
			}
			for _, d := range tt.createdDirs {
				fi, err := os.Stat(filepath.Join(dir, d))
				if err != nil {
					t.Errorf("created directory %s: %v", d, err)
				} else if fi.Mode().Perm() != 0o755 {
					t.Errorf("created directory %s has mode %s, want 0755", d, fi.Mode())
				}
			}
			// The server answers on it.
			_, err = secretClient(t, path).FetchSecrets(t.Context(), &discoveryv3.DiscoveryRequest{TypeUrl: resource.SecretType})
			if err == nil || !strings.Contains(err.Error(), "no secrets yet") {
				t.Errorf("FetchSecrets before an Update: %v", err)
			}
			if err := stop(); err != nil {
				t.Fatal(err)
			}
			if _, err := os.Lstat(path); !os.IsNotExist(err) {
				t.Errorf("socket left behind after Serve returned: %v", err)
			}
			entries, _ := os.ReadDir(filepath.Dir(path))
			for _, e := range entries {
				t.Errorf("left behind in the socket directory: %s", e.Name())
			}
		})
	}
}

func TestServeReplacesStaleSocket(t *testing.T) {
	path := socketPath(t)
	l, err := net.ListenUnix("unix", &net.UnixAddr{Name: path, Net: "unix"})
	if err != nil {
		t.Fatal(err)
	}
	l.SetUnlinkOnClose(false)
	l.Close() // a crashed predecessor's socket: present, nobody listening
	startServer(t, Config{SocketPath: path})
	if _, err := secretClient(t, path).FetchSecrets(t.Context(), &discoveryv3.DiscoveryRequest{}); err == nil || !strings.Contains(err.Error(), "no secrets yet") {
		t.Errorf("FetchSecrets: %v, want the new server's answer", err)
	}
}

func TestServeRefusesPath(t *testing.T) {
	tests := []struct {
		name      string
		prepare   func(t *testing.T, path string)
		expectErr string
	}{
		{
			name: "regular file",
			prepare: func(t *testing.T, path string) {
				if err := os.WriteFile(path, []byte("keep me"), 0o600); err != nil {
					t.Fatal(err)
				}
			},
			expectErr: "exists and is not a socket",
		},
		{
			name: "directory",
			prepare: func(t *testing.T, path string) {
				if err := os.Mkdir(path, 0o700); err != nil {
					t.Fatal(err)
				}
			},
			expectErr: "exists and is not a socket",
		},
		{
			name: "socket of a running server",
			prepare: func(t *testing.T, path string) {
				l, err := net.Listen("unix", path)
				if err != nil {
					t.Fatal(err)
				}
				t.Cleanup(func() { l.Close() })
			},
			expectErr: "is in use by another process",
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			path := socketPath(t)
			tt.prepare(t, path)
			before, err := os.Lstat(path)
			if err != nil {
				t.Fatal(err)
			}
			s, err := New(Config{SocketPath: path})
			if err != nil {
				t.Fatal(err)
			}
			err = s.Serve(t.Context())
			if err == nil || !strings.Contains(err.Error(), tt.expectErr) {
				t.Fatalf("Serve = %v, want error containing %q", err, tt.expectErr)
			}
			after, err := os.Lstat(path)
			if err != nil || !os.SameFile(before, after) {
				t.Errorf("Serve touched what was at the socket path: %v", err)
			}
		})
	}
}

func TestServeStopsStreamsAndLeavesSuccessorSocket(t *testing.T) {
	path := socketPath(t)
	s, err := New(Config{SocketPath: path})
	if err != nil {
		t.Fatal(err)
	}
	stop := serve(t, s)
	c := newEnvoyClient(t, dial(t, path), []string{"default"}, "")
	waitPending(t, s, "default", 1)
	if got := s.Stats().StreamsOpen; got != 1 {
		t.Fatalf("StreamsOpen = %d, want 1", got)
	}
	if err := s.Serve(context.Background()); err == nil || !strings.Contains(err.Error(), "Serve called twice") {
		t.Errorf("second Serve = %v", err)
	}

	// A successor took the path over while this server still runs.
	if err := os.Remove(path); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(path, []byte("successor"), 0o600); err != nil {
		t.Fatal(err)
	}

	if err := stop(); err != nil {
		t.Fatal(err)
	}
	if _, err := c.stream.Recv(); !isEnd(err) {
		t.Errorf("stream after Serve returned: %v, want it ended", err)
	}
	if got := s.Stats().StreamsOpen; got != 0 {
		t.Errorf("StreamsOpen = %d after stop, want 0", got)
	}
	if b, err := os.ReadFile(path); err != nil || string(b) != "successor" {
		t.Errorf("successor's file: %q, %v", b, err)
	}
}
