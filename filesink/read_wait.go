package filesink

import (
	"context"
	"fmt"
	"time"
)

// Wait's tick without change notification, and with it for what no event
// announces (a NotBefore still ahead).
const (
	waitPoll         = 200 * time.Millisecond
	waitPollNotified = time.Second
)

// InspectAll inspects every folder at one instant: a line per folder (named
// when there are several), or the first folder's problem after its path.
func InspectAll(cfgs []InspectConfig) (lines []string, err error) {
	now := time.Now()
	for _, cfg := range cfgs {
		cfg.Now = now
		m, err := Inspect(cfg)
		if err != nil {
			return nil, fmt.Errorf("%s: %w", cfg.Dir, err)
		}
		line := fmt.Sprintf("%s serial %s valid until %s (%s left), generation %d",
			m.SPIFFEID, m.Serial, m.NotAfter.UTC().Format(time.RFC3339), m.NotAfter.Sub(now).Round(time.Second), m.Generation)
		if len(cfgs) > 1 {
			line = cfg.Dir + ": " + line
		}
		lines = append(lines, line)
	}
	return lines, nil
}

// Wait returns InspectAll's lines once every folder is usable, or the last
// problem when ctx ends. A single folder is watched for changes.
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
