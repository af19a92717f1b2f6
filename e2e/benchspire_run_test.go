//go:build e2e && benchspire

package e2e

import (
	"fmt"
	"os"
	"path/filepath"
	"testing"

	"golang.org/x/sys/unix"
	"google.golang.org/grpc"
)

// benchBridge is one bridge under test with what watches it.
type benchBridge struct {
	label  string // "current", "baseline b9d0cfc"
	b      *bridge
	conn   *grpc.ClientConn
	sds    *leafClient
	folder *folderWatch
	trace  string // where SIGUSR2 … SIGUSR2 leaves a runtime trace
}

// startBenchBridge runs bin as `sds-bridge run` of this uid against the
// agent, with its own SDS socket, folder (under folders) and admin port, and
// opens an SDS client and a folder watch on it.
func startBenchBridge(t testing.TB, s *spire, work, folders, name, label, bin string) *benchBridge {
	t.Helper()
	folder := filepath.Join(folders, name)
	mkdirOwned(t, folder, 0o755, nil)
	socket := filepath.Join(work, name+".sock")
	bb := &benchBridge{label: label, trace: filepath.Join(work, name+".trace")}
	bb.folder = watchBridgeFolder(t, label, folder)
	bb.b = startBridgeBin(t, work, name, bridgeConfig{
		WorkloadAPI: bridgeWorkloadAPI{Address: s.WorkloadAPIAddr(), FirstUpdateTimeout: "60s"},
		SDS:         &bridgeSDS{Socket: socket},
		Files:       []bridgeFolder{{Dir: folder, Layout: layoutHelper}},
	}, cmdSpec{Path: bin, Env: []string{"SDS_BRIDGE_TRACE=" + bb.trace}})
	waitForSocket(t, bb.b, socket)
	bb.conn = dialSDS(t, socket)
	bb.sds = newLeafClient(t, label, bb.conn)
	return bb
}

// benchHelper is spiffe-helper in daemon mode with the folder it writes.
type benchHelper struct {
	proc   *proc
	folder *folderWatch
}

// startSpiffeHelper runs spiffe-helper as a process of this uid against the
// agent, writing the same three files the bridge's spiffe-helper layout
// has, with no command to run and no renew signal.
func startSpiffeHelper(t testing.TB, s *spire, work, folder string) *benchHelper {
	t.Helper()
	bin := ensureSpiffeHelper(t)
	mkdirOwned(t, folder, 0o755, nil)
	conf := filepath.Join(work, "helper.conf")
	writeFile(t, conf, fmt.Appendf(nil, `agent_address = %q
cert_dir = %q
svid_file_name = %q
svid_key_file_name = %q
svid_bundle_file_name = %q
daemon_mode = true
`, s.AgentSocket, folder, helperCert, helperKey, helperBundle), 0o644, nil)
	h := &benchHelper{folder: watchHelperFolder(t, "spiffe-helper", folder)}
	h.proc = startProc(t, cmdSpec{Name: "spiffe-helper", Path: bin, Args: []string{"-config", conf}, Dir: work},
		filepath.Join(work, "spiffe-helper.log"))
	return h
}

// tmpfsDir is a fresh directory for the credential folders on tmpfs
// (/dev/shm), as a pod's emptyDir{medium: Memory} or /run would be; the
// test's work dir when there is no tmpfs.
func tmpfsDir(t testing.TB) string {
	t.Helper()
	var st unix.Statfs_t
	if err := unix.Statfs("/dev/shm", &st); err != nil || st.Type != unix.TMPFS_MAGIC {
		t.Logf("no tmpfs at /dev/shm: the folders go to the work dir")
		return newWorkDir(t)
	}
	dir, err := os.MkdirTemp("/dev/shm", "sb")
	if err != nil {
		t.Fatalf("e2e: %v", err)
	}
	if err := os.Chmod(dir, 0o755); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { _ = os.RemoveAll(dir) })
	return dir
}

// fsType names the file system dir is on, for the report.
func fsType(dir string) string {
	var st unix.Statfs_t
	if err := unix.Statfs(dir, &st); err != nil {
		return "unknown"
	}
	switch st.Type {
	case unix.TMPFS_MAGIC:
		return "tmpfs"
	case unix.EXT4_SUPER_MAGIC:
		return "ext4"
	case unix.XFS_SUPER_MAGIC:
		return "xfs"
	case unix.OVERLAYFS_SUPER_MAGIC:
		return "overlayfs"
	}
	return fmt.Sprintf("fs magic %#x", st.Type)
}
