package bridge

import (
	"context"
	"log/slog"
	"os"
	"time"

	"github.com/sds-bridge/sds-bridge/filesink"
)

// behindRetrier makes every sink that is waiting to retry the current
// Update apply it now, and names them (rotation.Source).
type behindRetrier interface{ RetryNow() []string }

// echoWindow is how soon after a signal action sent its signal a SIGHUP
// is taken as that signal's echo rather than an operator's: a pid file
// naming a process that passes SIGHUP on to the bridge (tini or
// dumb-init as pid 1, the bridge's parent) would otherwise re-run the
// action that caused it, for ever. Dropping an operator's HUP that close
// to a signal loses nothing: the consumer was just signalled.
const echoWindow = time.Second

// onHangup serves every SIGHUP until ctx ends: sinks that are behind the
// current generation re-apply it at once (instead of at their next
// backoff step), and every folder's reload actions run again on the
// generation in place — for a consumer restarted by hand, or one whose
// reload was lost. Several HUPs while one is handled count as one. A HUP
// within echoWindow of a signal action's signal re-runs nothing: a re-run
// triggered by the bridge's own signal never signals again. (The action
// never signals the bridge itself: reload.SignalAction refuses.)
func onHangup(ctx context.Context, hups <-chan os.Signal, src behindRetrier, folders []*filesink.Folder, log *slog.Logger) error {
	for {
		select {
		case <-ctx.Done():
			return nil
		case <-hups:
		}
		woken := src.RetryNow()
		echo := ""
		for _, f := range folders {
			if echo == "" && f.SignalledWithin(echoWindow) {
				echo = f.Dir()
			}
		}
		if echo != "" {
			log.Warn("SIGHUP right after a signal action signalled: taken as its echo (does the pid file name a process that passes SIGHUP on to the bridge?); reload actions not re-run",
				"retrying_now", woken, "dir", echo, "window", echoWindow)
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
