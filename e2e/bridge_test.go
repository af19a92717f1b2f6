//go:build e2e

package e2e

import (
	"context"
	"fmt"
	"os"
	"path/filepath"
	"testing"
	"time"

	"go.yaml.in/yaml/v3"
)

// bridgeConfig is the bridge's YAML config as its README documents it; the
// suite writes it as a user would.
type bridgeConfig struct {
	WorkloadAPI bridgeWorkloadAPI `yaml:"workload_api"`
	SDS         *bridgeSDS        `yaml:"sds,omitempty"`
	Files       []bridgeFolder    `yaml:"files,omitempty"`
	Admin       *bridgeAdmin      `yaml:"admin,omitempty"`
}

type bridgeAdmin struct {
	Listen string `yaml:"listen"`
}

type bridgeWorkloadAPI struct {
	Address            string `yaml:"address"`
	FirstUpdateTimeout string `yaml:"first_update_timeout,omitempty"`
	DefaultSVIDHint    string `yaml:"default_svid_hint,omitempty"`
}

type bridgeSDS struct {
	// Enabled false turns SDS off (it is on by default, on
	// /run/sds-bridge/sds.sock): a bridge that only writes files says so.
	Enabled    *bool  `yaml:"enabled,omitempty"`
	Socket     string `yaml:"socket,omitempty"`
	SocketMode string `yaml:"socket_mode,omitempty"`
}

// noSDS is the sds section of a bridge that only writes files.
func noSDS() *bridgeSDS {
	off := false
	return &bridgeSDS{Enabled: &off}
}

type bridgeFolder struct {
	Dir      string         `yaml:"dir"`
	Layout   string         `yaml:"layout"`
	CertMode string         `yaml:"cert_mode,omitempty"`
	KeyMode  string         `yaml:"key_mode,omitempty"`
	Owner    string         `yaml:"owner,omitempty"`
	OnRotate []bridgeAction `yaml:"on_rotate,omitempty"`
	// SVID picks one of several SVIDs by hint or SPIFFE ID.
	SVID string `yaml:"svid,omitempty"`
	// JWTSVIDs and JWTBundleFileName add JWT-SVID files to the folder.
	JWTSVIDs          []bridgeJWTSVID `yaml:"jwt_svids,omitempty"`
	JWTBundleFileName string          `yaml:"jwt_bundle_file_name,omitempty"`
}

type bridgeJWTSVID struct {
	Audience string `yaml:"audience"`
	FileName string `yaml:"file_name"`
}

type bridgeAction struct {
	Signal   *bridgeSignal   `yaml:"signal,omitempty"`
	Exec     *bridgeExec     `yaml:"exec,omitempty"`
	Postgres *bridgePostgres `yaml:"postgres,omitempty"`
}

type bridgePostgres struct {
	DSN string `yaml:"dsn"`
}

type bridgeSignal struct {
	PIDFile string `yaml:"pid_file"`
	Signal  string `yaml:"signal"`
}

type bridgeExec struct {
	Command []string `yaml:"command"`
	Timeout string   `yaml:"timeout,omitempty"`
}

// bridge is one running `sds-bridge run`.
type bridge struct {
	Name string
	Cfg  bridgeConfig
	proc *proc
}

// startBridge writes cfg to <workDir>/<name>.yaml and runs `sds-bridge run
// --config` as u (the suite's own account when nil). When the test ends the
// bridge gets SIGTERM and must exit 0: shutting down is part of its
// contract.
func startBridge(t testing.TB, workDir, name string, cfg bridgeConfig, u *osUser) *bridge {
	t.Helper()
	requireBridge(t)
	return startBridgeBin(t, workDir, name, cfg, cmdSpec{Path: bridgeBin, User: u})
}

// startBridgeBin is startBridge for the binary, account and environment in
// run (bench-spire runs a bridge built at another revision, and one that
// writes a runtime trace).
func startBridgeBin(t testing.TB, workDir, name string, cfg bridgeConfig, run cmdSpec) *bridge {
	t.Helper()
	if cfg.Admin == nil {
		// The admin listener has a fixed default port; several bridges
		// on one host (and parallel runs) each need their own.
		cfg.Admin = &bridgeAdmin{Listen: fmt.Sprintf("127.0.0.1:%d", freePort(t))}
	}
	data, err := yaml.Marshal(cfg)
	if err != nil {
		t.Fatalf("e2e: bridge config: %v", err)
	}
	confPath := filepath.Join(workDir, name+".yaml")
	writeFile(t, confPath, data, 0o644, nil)
	b := &bridge{Name: name, Cfg: cfg}
	// Registered before startProc's own cleanup, so it runs after it: the
	// exit status is known by then.
	t.Cleanup(func() {
		if b.proc == nil {
			return
		}
		if code := b.proc.ExitCode(); code != 0 {
			t.Errorf("e2e: bridge %s exited with %d after SIGTERM, want 0", name, code)
		}
	})
	run.Name = "bridge-" + name
	run.Args = []string{"run", "--config", confPath, "--log-format", "text"}
	run.Dir = workDir
	b.proc = startProc(t, run, filepath.Join(workDir, "bridge-"+name+".log"))
	return b
}

// Running fails the test if the bridge has exited.
func (b *bridge) Running(t testing.TB) {
	t.Helper()
	if b.proc.Exited() {
		t.Fatalf("e2e: bridge %s exited with %d:\n%s", b.Name, b.proc.ExitCode(), tailFile(b.proc.LogPath, 30))
	}
}

// bridgeCLI runs `sds-bridge <args>` to completion (wait, check) as u and
// returns its output and exit code.
func bridgeCLI(t testing.TB, ctx context.Context, workDir string, u *osUser, args ...string) (string, int) {
	t.Helper()
	requireBridge(t)
	out, code, err := runCmd(ctx, cmdSpec{Name: "sds-bridge " + args[0], Path: bridgeBin, Args: args, Dir: workDir, User: u})
	if err != nil {
		t.Fatal(err)
	}
	return out, code
}

// startBridgeWait starts `sds-bridge wait` in the background, as a pod's
// init container or a systemd ExecStartPre would.
func startBridgeWait(t testing.TB, workDir, name string, u *osUser, args ...string) *proc {
	t.Helper()
	requireBridge(t)
	return startProc(t, cmdSpec{Name: "wait-" + name, Path: bridgeBin, Args: append([]string{"wait"}, args...), Dir: workDir, User: u},
		filepath.Join(workDir, "wait-"+name+".log"))
}

// waitForSocket waits until path exists (the bridge creates the SDS socket
// once it serves).
func waitForSocket(t testing.TB, b *bridge, path string) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	if err := poll(ctx, "SDS socket "+path, 100*time.Millisecond, func() error {
		if b.proc.Exited() {
			return fmt.Errorf("bridge %s exited with %d", b.Name, b.proc.ExitCode())
		}
		fi, err := os.Stat(path)
		if err != nil {
			return err
		}
		if fi.Mode()&os.ModeSocket == 0 {
			return fmt.Errorf("%s is not a socket", path)
		}
		return nil
	}); err != nil {
		t.Fatal(err)
	}
}
