package main

import (
	"flag"
	"fmt"
	"log/slog"
	"os"
	"os/signal"
	"sync"
	"syscall"

	"github.com/sds-bridge/sds-bridge/internal/config"
	"github.com/sds-bridge/sds-bridge/rotation"
	"github.com/sds-bridge/sds-bridge/supervise"
)

// programArgs returns what follows "--" on the command line (the program
// to supervise and its arguments), and refuses any other argument left
// after the flags.
func programArgs(fs *flag.FlagSet, args []string) ([]string, error) {
	rest := fs.Args()
	if len(rest) == 0 {
		return nil, nil
	}
	// flag stops at the first non-flag, or drops a "--" and stops after it.
	if i := len(args) - len(rest) - 1; i >= 0 && args[i] == "--" {
		return rest, nil
	}
	return nil, fmt.Errorf("%s: unexpected argument %q (a program to supervise goes after --: %s [flags] -- PROGRAM ARGS...)", fs.Name(), rest[0], fs.Name())
}

// newSupervisor is cfg.Supervise's supervisor and the SIGINT/SIGTERM it
// forwards, caught from now until stop; nil without a supervise block.
func newSupervisor(cfg *config.Config, log *slog.Logger) (sup *supervise.Supervisor, stop func(), err error) {
	if !cfg.Supervise.On() {
		return nil, func() {}, nil
	}
	sig, err := cfg.Supervise.Signal()
	if err != nil {
		return nil, nil, fmt.Errorf("supervise.renew_signal %q: %w", cfg.Supervise.RenewSignal, err)
	}
	sigs := make(chan os.Signal, 2)
	signal.Notify(sigs, syscall.SIGINT, syscall.SIGTERM)
	sup, err = supervise.New(supervise.Config{
		Command:     cfg.Supervise.Command,
		RenewSignal: sig,
		Restart:     supervise.Restart(cfg.Supervise.Restart),
		Signals:     sigs,
		Logger:      log.With("component", "supervise"),
	})
	if err != nil {
		signal.Stop(sigs)
		return nil, nil, err
	}
	return sup, func() { signal.Stop(sigs) }, nil
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
	if g == nil || st.Generation == 0 {
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
