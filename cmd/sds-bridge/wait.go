package main

import (
	"context"
	"flag"
	"fmt"
	"io"
	"path/filepath"
	"strings"
	"time"

	"github.com/sds-bridge/sds-bridge/filesink"
	"github.com/sds-bridge/sds-bridge/internal/config"
)

// runCheck tests the folders once; runWait until they are ready.
func runCheck(args []string, stdout, stderr io.Writer) error {
	return testFolders(context.Background(), "check", args, stdout, stderr)
}

func runWait(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	return testFolders(ctx, "wait", args, stdout, stderr)
}

func testFolders(ctx context.Context, cmd string, args []string, stdout, stderr io.Writer) error {
	fs := flag.NewFlagSet("sds-bridge "+cmd, flag.ContinueOnError)
	fs.SetOutput(stderr)
	var t folderTargets
	fs.StringVar(&t.configFile, "config", "", "the bridge's config file: test every folder it writes (files[]), with its layout, names and svid; --dir picks one")
	fs.StringVar(&t.dir, "dir", "", "credential folder to test (required without --config)")
	fs.StringVar(&t.layout, "layout", "", "folder layout: spiffe-helper or spiffe (default: what the folder's sds-bridge.json says it was written with, else spiffe-helper)")
	fs.DurationVar(&t.minValidity, "min-validity", 0, "the leaf must stay valid at least this long")
	var timeout *time.Duration
	if cmd == "wait" {
		timeout = fs.Duration("timeout", 2*time.Minute, "give up after this long")
	}
	if err := parseFlags(fs, args); err != nil {
		return usageError(err)
	}
	cfgs, err := t.configs()
	if err != nil {
		return err
	}
	verdict, lines := "ok:", []string(nil)
	if timeout == nil {
		if lines, err = filesink.InspectAll(cfgs); err != nil {
			return fmt.Errorf("check %w", err)
		}
	} else {
		ctx, cancel := context.WithTimeout(ctx, *timeout)
		defer cancel()
		if lines, err = filesink.Wait(ctx, cfgs); err != nil {
			return fmt.Errorf("wait: not ready after %s: %w", *timeout, err)
		}
		verdict = "ready:"
	}
	for _, l := range lines {
		fmt.Fprintln(stdout, verdict, l)
	}
	return nil
}

// folderTargets are the folders a command line names.
type folderTargets struct {
	configFile  string
	dir         string
	layout      string
	minValidity time.Duration
}

// configs are the folders to test: --dir alone (as its marker says), or
// those of --config, each with its layout, names and svid choice.
func (t folderTargets) configs() ([]filesink.InspectConfig, error) {
	var dir string
	if t.dir != "" {
		abs, err := filepath.Abs(t.dir)
		if err != nil {
			return nil, fmt.Errorf("--dir: %w", err)
		}
		dir = abs
	}
	if t.configFile == "" {
		return t.dirOnly(dir)
	}
	if t.layout != "" {
		return nil, fmt.Errorf("--layout and --config: the config says each folder's layout; give only one")
	}
	cfg, err := config.Load(t.configFile)
	if err != nil {
		return nil, err
	}
	var cfgs []filesink.InspectConfig
	var dirs []string
	for _, fo := range cfg.Files {
		dirs = append(dirs, fo.Dir)
		if dir != "" && filepath.Clean(fo.Dir) != dir {
			continue
		}
		ic := fo.WithDefaults().InspectConfig(t.minValidity)
		ic.Dir = filepath.Clean(fo.Dir)
		ic.CheckSVID, ic.SVID, ic.DefaultSVIDHint = true, fo.SVID, cfg.WorkloadAPI.DefaultSVIDHint
		cfgs = append(cfgs, ic)
	}
	switch {
	case len(dirs) == 0:
		return nil, fmt.Errorf("config %s: no credential folder (files[]) to test", t.configFile)
	case len(cfgs) == 0:
		return nil, fmt.Errorf("--dir %s: not a folder of config %s (files[].dir: %s)", dir, t.configFile, strings.Join(dirs, ", "))
	}
	return cfgs, nil
}

// dirOnly is --dir without --config.
func (t folderTargets) dirOnly(dir string) ([]filesink.InspectConfig, error) {
	if dir == "" {
		return nil, fmt.Errorf("--dir or --config is required")
	}
	cfg := filesink.InspectConfig{Dir: dir, MinValidity: t.minValidity}
	if t.layout != "" {
		cfg.Layout = filesink.Layout(t.layout)
		if _, err := (filesink.Names{Layout: cfg.Layout}).WithDefaults(); err != nil {
			return nil, fmt.Errorf("--layout %q: want %s or %s", t.layout, filesink.LayoutSPIFFEHelper, filesink.LayoutSPIFFE)
		}
	}
	return []filesink.InspectConfig{cfg}, nil
}
