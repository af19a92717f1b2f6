package filesink

import (
	"context"
	"fmt"
	"time"
)

// waitPoll is how often Wait looks at the folders again when it cannot be
// told of changes; it runs only while a consumer is starting, never inside
// the daemon. With change notification (inotify) Wait looks again on every
// change, and only every waitPollNotified for what no file event announces
// (a leaf whose NotBefore is still ahead).
const (
	waitPoll         = 200 * time.Millisecond
	waitPollNotified = time.Second
)

// InspectAll inspects every folder at one instant. Each line says what a
// folder holds (naming the folder when there are several); the error is
// the first folder's problem, after its path.
func InspectAll(cfgs []InspectConfig) (lines []string, err error) {
	now := time.Now()
	for _, cfg := range cfgs {
		cfg.Now = now
		m, err := Inspect(cfg)
		if err != nil {
			return nil, fmt.Errorf("%s: %w", cfg.Dir, err)
		}
		line := m.describe(now)
		if len(cfgs) > 1 {
			line = cfg.Dir + ": " + line
		}
		lines = append(lines, line)
	}
	return lines, nil
}

func (m *Material) describe(now time.Time) string {
	return fmt.Sprintf("%s serial %s valid until %s (%s left), generation %d",
		m.SPIFFEID, m.Serial, m.NotAfter.UTC().Format(time.RFC3339), m.NotAfter.Sub(now).Round(time.Second), m.Generation)
}

// Wait inspects the folders until every one is usable, and returns
// InspectAll's lines; when ctx ends first, it returns the last problem.
// A single folder is looked at again on every change inotify reports.
func Wait(ctx context.Context, cfgs []InspectConfig) ([]string, error) {
	poll := waitPoll
	var changes <-chan struct{}
	if len(cfgs) == 1 { // several folders: the short tick
		ch, stopWatch, err := watchFolderChanges(cfgs[0].Dir)
		if err == nil {
			defer stopWatch()
			changes, poll = ch, waitPollNotified
		}
	}
	tick := time.NewTicker(poll)
	defer tick.Stop()
	for {
		lines, err := InspectAll(cfgs)
		if err == nil {
			return lines, nil
		}
		select {
		case <-ctx.Done():
			return nil, err
		case <-tick.C:
		case _, ok := <-changes:
			if !ok { // notification failed: back to the short tick
				changes = nil
				tick.Reset(waitPoll)
			}
		}
	}
}
