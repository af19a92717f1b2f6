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
	"github.com/sds-bridge/sds-bridge/folderstate"
	"github.com/sds-bridge/sds-bridge/internal/config"
)

// waitPoll is how often wait looks at the folder again when it cannot be
// told of changes; it runs only while a consumer is starting, never inside
// the daemon. With change notification (inotify) wait looks again on every
// change, and only every waitPollNotified for what no file event announces
// (a leaf whose NotBefore is still ahead).
const (
	waitPoll         = 200 * time.Millisecond
	waitPollNotified = time.Second
)

type folderFlags struct {
	configFile  string
	dir         string
	layout      string
	minValidity time.Duration
}

func (f *folderFlags) register(fs *flag.FlagSet) {
	fs.StringVar(&f.configFile, "config", "", "the bridge's config file: test every folder it writes (files[]), with its layout, names and svid; --dir picks one")
	fs.StringVar(&f.dir, "dir", "", "credential folder to test (required without --config)")
	fs.StringVar(&f.layout, "layout", "", "folder layout: spiffe-helper or spiffe (default: what the folder's sds-bridge.json says it was written with, else spiffe-helper)")
	fs.DurationVar(&f.minValidity, "min-validity", 0, "the leaf must stay valid at least this long")
}

// inspectConfigs are the folders to test: --dir alone (layout and names
// from the folder's marker), or the folders of --config, each with its
// layout, names and svid choice, which the folder must hold.
func (f *folderFlags) inspectConfigs() ([]folderstate.Config, error) {
	var dir string
	if f.dir != "" {
		abs, err := filepath.Abs(f.dir)
		if err != nil {
			return nil, fmt.Errorf("--dir: %w", err)
		}
		dir = abs
	}
	if f.configFile == "" {
		if dir == "" {
			return nil, fmt.Errorf("--dir or --config is required")
		}
		ic := folderstate.Config{Dir: dir, MinValidity: f.minValidity}
		if f.layout != "" {
			layout, err := layoutFlag(f.layout)
			if err != nil {
				return nil, err
			}
			ic.Layout = layout
		}
		return []folderstate.Config{ic}, nil
	}
	if f.layout != "" {
		return nil, fmt.Errorf("--layout and --config: the config says each folder's layout; give only one")
	}
	cfg, err := config.Load(f.configFile)
	if err != nil {
		return nil, err
	}
	var ics []folderstate.Config
	var dirs []string
	for _, fo := range cfg.Files {
		dirs = append(dirs, fo.Dir)
		if dir != "" && filepath.Clean(fo.Dir) != dir {
			continue
		}
		ics = append(ics, folderstate.Config{
			Dir:             filepath.Clean(fo.Dir),
			Layout:          filesink.Layout(fo.Layout),
			CertFileName:    fo.CertFileName,
			KeyFileName:     fo.KeyFileName,
			BundleFileName:  fo.BundleFileName,
			MinValidity:     f.minValidity,
			CheckSVID:       true,
			SVID:            fo.SVID,
			DefaultSVIDHint: cfg.WorkloadAPI.DefaultSVIDHint,
		})
	}
	switch {
	case len(dirs) == 0:
		return nil, fmt.Errorf("config %s: no credential folder (files[]) to test", f.configFile)
	case len(ics) == 0:
		return nil, fmt.Errorf("--dir %s: not a folder of config %s (files[].dir: %s)", dir, f.configFile, strings.Join(dirs, ", "))
	}
	return ics, nil
}

// inspectAll tests every folder; the lines say what each holds (the
// folder named when there are several), err is the first folder's problem.
func inspectAll(ics []folderstate.Config) (lines []string, err error) {
	now := time.Now()
	for _, ic := range ics {
		ic.Now = now
		m, ierr := folderstate.Inspect(ic)
		if ierr != nil {
			return nil, fmt.Errorf("%s: %w", ic.Dir, ierr)
		}
		line := describe(m)
		if len(ics) > 1 {
			line = ic.Dir + ": " + line
		}
		lines = append(lines, line)
	}
	return lines, nil
}

func describe(m *folderstate.Material) string {
	return fmt.Sprintf("%s serial %s valid until %s (%s left), generation %d",
		m.SPIFFEID, m.Serial, m.NotAfter.UTC().Format(time.RFC3339), time.Until(m.NotAfter).Round(time.Second), m.Generation)
}

func runCheck(args []string, stdout, stderr io.Writer) error {
	fs := flag.NewFlagSet("sds-bridge check", flag.ContinueOnError)
	fs.SetOutput(stderr)
	var ff folderFlags
	ff.register(fs)
	if err := fs.Parse(args); err != nil {
		return err
	}
	ics, err := ff.inspectConfigs()
	if err != nil {
		return err
	}
	lines, err := inspectAll(ics)
	if err != nil {
		return fmt.Errorf("check %w", err)
	}
	for _, l := range lines {
		fmt.Fprintln(stdout, "ok:", l)
	}
	return nil
}

func runWait(ctx context.Context, args []string, stdout, stderr io.Writer) error {
	fs := flag.NewFlagSet("sds-bridge wait", flag.ContinueOnError)
	fs.SetOutput(stderr)
	var ff folderFlags
	ff.register(fs)
	timeout := fs.Duration("timeout", 2*time.Minute, "give up after this long")
	if err := fs.Parse(args); err != nil {
		return err
	}
	ics, err := ff.inspectConfigs()
	if err != nil {
		return err
	}
	ctx, cancel := context.WithTimeout(ctx, *timeout)
	defer cancel()
	poll := waitPoll
	var changes <-chan struct{}
	if len(ics) == 1 { // several folders: the short tick
		ch, stopWatch, werr := watchFolderChanges(ics[0].Dir)
		if werr == nil {
			defer stopWatch()
			changes, poll = ch, waitPollNotified
		}
	}
	tick := time.NewTicker(poll)
	defer tick.Stop()
	for {
		lines, err := inspectAll(ics)
		if err == nil {
			for _, l := range lines {
				fmt.Fprintln(stdout, "ready:", l)
			}
			return nil
		}
		select {
		case <-ctx.Done():
			return fmt.Errorf("wait: not ready after %s: %w", *timeout, err)
		case <-tick.C:
		case _, ok := <-changes:
			if !ok { // notification failed: back to the short tick
				changes = nil
				tick.Reset(waitPoll)
			}
		}
	}
}
