package bridge

import (
	"errors"
	"fmt"
	"os"
	"os/signal"
	"path/filepath"
	"sync"
	"syscall"

	"github.com/sds-bridge/sds-bridge/internal/config"
	"github.com/sds-bridge/sds-bridge/rotation"
	"github.com/sds-bridge/sds-bridge/supervise"
)

// buildSupervisor makes the supervisor of supervise.command, if any, with
// the SIGINT/SIGTERM it forwards caught from now on. It comes first: a
// program that cannot be supervised fails before any folder is touched.
func (b *Bridge) buildSupervisor() error {
	sv := b.Config.Supervise
	if !sv.On() {
		return nil
	}
	sigs := make(chan os.Signal, 2)
	signal.Notify(sigs, syscall.SIGINT, syscall.SIGTERM)
	b.release = append(b.release, func() { signal.Stop(sigs) })
	sup, err := supervise.New(supervise.Config{
		Command:     sv.Command,
		RenewSignal: sv.RenewSignal.Signal(),
		Restart:     supervise.Restart(sv.Restart),
		Signals:     sigs,
		Logger:      b.Logger.With("component", "supervise"),
	})
	if err != nil {
		return err
	}
	b.sup = sup
	return nil
}

// gateSupervisor lets the supervised program start once every sink has
// applied a generation, and renews it after each folder swap.
func (b *Bridge) gateSupervisor(sinks int) {
	if b.sup == nil {
		return
	}
	g := &startGate{sup: b.sup, sinks: sinks, folders: map[string]bool{}, applied: map[string]uint64{}}
	for _, f := range b.folders {
		g.folders[f.Name()] = true
	}
	b.observers = append(b.observers, g.observe)
}

// startGate tells the supervisor when every sink has applied a
// generation, numbering the sets by the folder swaps so far: the
// supervisor compares numbers, because the report of the swap that
// completed the set can come after its child started, and must not signal
// it for files it read at its start.
type startGate struct {
	sup     *supervise.Supervisor
	sinks   int
	folders map[string]bool // file sinks by name

	mu      sync.Mutex
	applied map[string]uint64 // generation each sink has applied
	swaps   uint64            // generations applied by folders, in all
}

func (g *startGate) observe(st rotation.SinkStatus) {
	g.mu.Lock()
	defer g.mu.Unlock()
	if st.Generation <= g.applied[st.Name] {
		return // nothing new applied (a failed apply, a repeated report)
	}
	g.applied[st.Name] = st.Generation
	if g.folders[st.Name] {
		g.swaps++
	}
	if len(g.applied) == g.sinks {
		g.sup.Offer(g.swaps)
	}
}

// ownerHint adds to a supervised program's failure the likeliest cause
// when the bridge runs as root and a folder has no owner: a program that
// drops to another user cannot read a key only root can.
func ownerHint(cfg *config.Config, euid int, err error) error {
	var exit *supervise.ExitError
	if euid != 0 || !errors.As(err, &exit) || exit.Code == 0 {
		return err
	}
	for i, f := range cfg.Files {
		if f.Owner != nil || f.KeyMode&0o044 != 0 {
			continue
		}
		key := filepath.Join(f.Dir, f.KeyFileName)
		if f.KeyFileName == "" {
			key = "the key in " + f.Dir
		}
		return fmt.Errorf("%w; if it runs as another user it could not read %s: uid 0 owns it, mode %s, so only root can; give files[%d].owner that user's uid:gid (--owner with --spiffe-helper-config)",
			err, key, config.Mode(f.KeyMode), i)
	}
	return err
}
