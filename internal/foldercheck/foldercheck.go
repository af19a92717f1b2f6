// Package foldercheck is the `check` and `wait` commands: which credential
// folders to test, named by flags or by the bridge's config, tested once
// or until they are ready. The testing itself is folderstate's.
package foldercheck

import (
	"context"
	"flag"
	"fmt"
	"io"
	"path/filepath"
	"strings"
	"time"

	"github.com/sds-bridge/sds-bridge/folderstate"
	"github.com/sds-bridge/sds-bridge/internal/config"
	"github.com/sds-bridge/sds-bridge/internal/layout"
)

// Targets are the folders a command line names.
type Targets struct {
	ConfigFile  string
	Dir         string
	Layout      string
	MinValidity time.Duration
}

// Register adds the flags that fill t.
func (t *Targets) Register(fs *flag.FlagSet) {
	fs.StringVar(&t.ConfigFile, "config", "", "the bridge's config file: test every folder it writes (files[]), with its layout, names and svid; --dir picks one")
	fs.StringVar(&t.Dir, "dir", "", "credential folder to test (required without --config)")
	fs.StringVar(&t.Layout, "layout", "", "folder layout: spiffe-helper or spiffe (default: what the folder's sds-bridge.json says it was written with, else spiffe-helper)")
	fs.DurationVar(&t.MinValidity, "min-validity", 0, "the leaf must stay valid at least this long")
}

// Check tests the folders once and prints what each holds.
func Check(t Targets, stdout io.Writer) error {
	cfgs, err := t.configs()
	if err != nil {
		return err
	}
	lines, err := folderstate.InspectAll(cfgs)
	if err != nil {
		return fmt.Errorf("check %w", err)
	}
	for _, l := range lines {
		fmt.Fprintln(stdout, "ok:", l)
	}
	return nil
}

// Wait tests the folders until they are ready or timeout passes.
func Wait(ctx context.Context, t Targets, timeout time.Duration, stdout io.Writer) error {
	cfgs, err := t.configs()
	if err != nil {
		return err
	}
	ctx, cancel := context.WithTimeout(ctx, timeout)
	defer cancel()
	lines, err := folderstate.Wait(ctx, cfgs)
	if err != nil {
		return fmt.Errorf("wait: not ready after %s: %w", timeout, err)
	}
	for _, l := range lines {
		fmt.Fprintln(stdout, "ready:", l)
	}
	return nil
}

// configs are the folders to test: --dir alone (layout and names from the
// folder's marker), or the folders of --config, each with its layout,
// names and svid choice, which the folder must hold.
func (t Targets) configs() ([]folderstate.Config, error) {
	var dir string
	if t.Dir != "" {
		abs, err := filepath.Abs(t.Dir)
		if err != nil {
			return nil, fmt.Errorf("--dir: %w", err)
		}
		dir = abs
	}
	if t.ConfigFile == "" {
		return t.dirOnly(dir)
	}
	if t.Layout != "" {
		return nil, fmt.Errorf("--layout and --config: the config says each folder's layout; give only one")
	}
	cfg, err := config.Load(t.ConfigFile)
	if err != nil {
		return nil, err
	}
	var cfgs []folderstate.Config
	var dirs []string
	for _, fo := range cfg.Files {
		dirs = append(dirs, fo.Dir)
		if dir != "" && filepath.Clean(fo.Dir) != dir {
			continue
		}
		ic := fo.FileSinkConfig().WithDefaults().InspectConfig(t.MinValidity)
		ic.Dir = filepath.Clean(fo.Dir)
		ic.CheckSVID, ic.SVID, ic.DefaultSVIDHint = true, fo.SVID, cfg.WorkloadAPI.DefaultSVIDHint
		cfgs = append(cfgs, ic)
	}
	switch {
	case len(dirs) == 0:
		return nil, fmt.Errorf("config %s: no credential folder (files[]) to test", t.ConfigFile)
	case len(cfgs) == 0:
		return nil, fmt.Errorf("--dir %s: not a folder of config %s (files[].dir: %s)", dir, t.ConfigFile, strings.Join(dirs, ", "))
	}
	return cfgs, nil
}

// dirOnly is --dir without --config.
func (t Targets) dirOnly(dir string) ([]folderstate.Config, error) {
	if dir == "" {
		return nil, fmt.Errorf("--dir or --config is required")
	}
	cfg := folderstate.Config{Dir: dir, MinValidity: t.MinValidity}
	if t.Layout != "" {
		kind := layout.Kind(t.Layout)
		if _, err := (layout.Names{Kind: kind}).WithDefaults(); err != nil {
			return nil, fmt.Errorf("--layout %q: want %s or %s", t.Layout, layout.SPIFFEHelper, layout.SPIFFE)
		}
		cfg.Layout = kind
	}
	return []folderstate.Config{cfg}, nil
}
