package bridge

import (
	"os"
	"os/signal"
	"sync"
	"syscall"

	"github.com/sds-bridge/sds-bridge/rotation"
	"github.com/sds-bridge/sds-bridge/supervise"
)

// buildSupervisor makes the supervisor of supervise.command, if any, with
// the SIGINT/SIGTERM it forwards caught from now until the bridge stops.
// It comes first: a program that cannot be supervised fails the start
// before any folder is touched.
func (b *Bridge) buildSupervisor() error {
	sv := b.cfg.Supervise
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
		Logger:      b.log.With("component", "supervise"),
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
	var names []string
	for _, f := range b.folders {
		names = append(names, f.Name())
	}
	b.observers.add(newStartGate(b.sup, sinks, names).observe)
}

// startGate tells the supervisor when every sink holds a complete, valid
// set (each has applied a generation: a folder's files are then swapped in
// whole, after Prepare removed any leftovers), and when a folder was
// swapped after that.
type startGate struct {
	sup     *supervise.Supervisor
	sinks   int
	folders map[string]bool // file sinks by name

	mu      sync.Mutex
	applied map[string]uint64 // generation each sink has applied
}

func newStartGate(sup *supervise.Supervisor, sinks int, folderNames []string) *startGate {
	g := &startGate{sup: sup, sinks: sinks, folders: map[string]bool{}, applied: map[string]uint64{}}
	for _, n := range folderNames {
		g.folders[n] = true
	}
	return g
}

// observe is called with each sink's status after an apply.
func (g *startGate) observe(st rotation.SinkStatus) {
	if st.Generation == 0 {
		return
	}
	g.mu.Lock()
	prev := g.applied[st.Name]
	g.applied[st.Name] = st.Generation
	all := len(g.applied) == g.sinks
	g.mu.Unlock()
	if all {
		g.sup.Ready()
	}
	if st.Generation > prev && g.folders[st.Name] {
		g.sup.Renewed() // before Ready: dropped by the supervisor
	}
}
