package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
)

// envoyTool is the program envoy-bootstrap runs, so that the daemon does
// not link (and initialise, in every sidecar) Envoy's bootstrap types.
const envoyTool = "sds-bridge-envoy"

const envoyBootstrapUsage = `  sds-bridge envoy-bootstrap [FLAGS]   (runs ` + envoyTool + `, beside sds-bridge or on PATH: prints an Envoy bootstrap
                             for the bridge's config, or with --check FILE checks one; --help lists its flags)`

// runEnvoyBootstrap runs sds-bridge-envoy as git and kubectl run their
// plugins: with this process's streams, its exit status passed on.
func runEnvoyBootstrap(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	tool, err := findEnvoyTool()
	if err != nil {
		return err
	}
	cmd := exec.CommandContext(ctx, tool, args...)
	cmd.Stdin, cmd.Stdout, cmd.Stderr = os.Stdin, stdout, stderr
	err = cmd.Run()
	var exit *exec.ExitError
	if errors.As(err, &exit) && exit.ExitCode() > 0 {
		// The tool has said why on stderr.
		return coded{code: exit.ExitCode()}
	}
	if err != nil {
		return fmt.Errorf("envoy-bootstrap: %s: %w", tool, err)
	}
	return nil
}

// findEnvoyTool is sds-bridge-envoy beside this executable (as a release
// and `make build` put it), or else on PATH.
func findEnvoyTool() (string, error) {
	where := "on PATH"
	if exe, err := os.Executable(); err == nil {
		beside := filepath.Join(filepath.Dir(exe), envoyTool)
		if fi, err := os.Stat(beside); err == nil && fi.Mode().IsRegular() && fi.Mode().Perm()&0o111 != 0 {
			return beside, nil
		}
		where = "beside " + exe + " nor on PATH"
	}
	if p, err := exec.LookPath(envoyTool); err == nil {
		return p, nil
	}
	return "", fmt.Errorf("envoy-bootstrap is the command %s, which is not %s. "+
		"It is kept out of sds-bridge so that the daemon does not carry Envoy's bootstrap and extension types "+
		"(memory in every sidecar): take it from the same release as sds-bridge (or bin/ after make build), "+
		"or go install github.com/sds-bridge/sds-bridge/cmd/%s@<version>, and put it beside sds-bridge or on PATH",
		envoyTool, where, envoyTool)
}
