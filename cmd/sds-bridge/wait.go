package main

import (
	"context"
	"flag"
	"fmt"
	"io"
	"path/filepath"
	"time"

	"github.com/sds-bridge/sds-bridge/filesink"
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
	dir         string
	layout      string
	minValidity time.Duration
}

func (f *folderFlags) register(fs *flag.FlagSet) {
	fs.StringVar(&f.dir, "dir", "", "credential folder to test (required)")
	fs.StringVar(&f.layout, "layout", "spiffe-helper", "folder layout: spiffe-helper or spiffe")
	fs.DurationVar(&f.minValidity, "min-validity", 0, "the leaf must stay valid at least this long")
}

func (f *folderFlags) inspectConfig() (filesink.InspectConfig, error) {
	if f.dir == "" {
		return filesink.InspectConfig{}, fmt.Errorf("--dir is required")
	}
	layout, err := layoutFlag(f.layout)
	if err != nil {
		return filesink.InspectConfig{}, err
	}
	dir, err := filepath.Abs(f.dir)
	if err != nil {
		return filesink.InspectConfig{}, fmt.Errorf("--dir: %w", err)
	}
	return filesink.InspectConfig{Dir: dir, Layout: layout, MinValidity: f.minValidity}, nil
}

func describe(m *filesink.Material) string {
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
	ic, err := ff.inspectConfig()
	if err != nil {
		return err
	}
	ic.Now = time.Now()
	m, err := filesink.Inspect(ic)
	if err != nil {
		return fmt.Errorf("check %s: %w", ic.Dir, err)
	}
	fmt.Fprintln(stdout, "ok:", describe(m))
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
	ic, err := ff.inspectConfig()
	if err != nil {
		return err
	}
	ctx, cancel := context.WithTimeout(ctx, *timeout)
	defer cancel()
	poll := waitPoll
	changes, stopWatch, werr := watchFolderChanges(ic.Dir)
	if werr == nil {
		defer stopWatch()
		poll = waitPollNotified
	}
	tick := time.NewTicker(poll)
	defer tick.Stop()
	for {
		ic.Now = time.Now()
		m, err := filesink.Inspect(ic)
		if err == nil {
			fmt.Fprintln(stdout, "ready:", describe(m))
			return nil
		}
		select {
		case <-ctx.Done():
			return fmt.Errorf("wait %s: not ready after %s: %w", ic.Dir, *timeout, err)
		case <-tick.C:
		case _, ok := <-changes:
			if !ok { // notification failed: back to the short tick
				changes = nil
				tick.Reset(waitPoll)
			}
		}
	}
}
