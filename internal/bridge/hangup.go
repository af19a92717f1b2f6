package bridge

import (
	"context"
	"log/slog"
	"os"
	"slices"
	"time"

	"github.com/sds-bridge/sds-bridge/filesink"
)

// behindRetrier is rotation.Source's RetryNow: sinks waiting to retry
// apply now, named.
type behindRetrier interface{ RetryNow() []string }

// echoWindow is how soon after a signal action a SIGHUP is taken as its
// echo: a pid file naming a process that passes SIGHUP on to the bridge
// (tini, dumb-init) would otherwise re-run the action for ever. An
// operator's HUP that close loses nothing: the consumer was just signalled.
const echoWindow = time.Second

// onHangup serves every SIGHUP until ctx ends: sinks behind the current
// generation re-apply it now rather than at their next backoff step, and
// every folder's reload actions run again (a consumer restarted by hand,
// a lost reload). HUPs during one count as one; an echo re-runs nothing.
func onHangup(ctx context.Context, hups <-chan os.Signal, src behindRetrier, folders []*filesink.Folder, log *slog.Logger) error {
	for {
		select {
		case <-ctx.Done():
			return nil
		case <-hups:
		}
		woken := src.RetryNow()
		if i := slices.IndexFunc(folders, func(f *filesink.Folder) bool { return f.SignalledWithin(echoWindow) }); i >= 0 {
			log.Warn("SIGHUP right after a signal action signalled: taken as its echo (does the pid file name a process that passes SIGHUP on to the bridge?); reload actions not re-run",
				"retrying_now", woken, "dir", folders[i].Dir(), "window", echoWindow)
			continue
		}
		log.Info("SIGHUP: re-applying what is behind and re-running reload actions", "retrying_now", woken, "folders", len(folders))
		for _, f := range folders {
			if err := f.RerunActions(ctx); err != nil && ctx.Err() == nil {
				log.Warn("SIGHUP: reload actions failed", "dir", f.Dir(), "err", err)
			}
		}
	}
}
