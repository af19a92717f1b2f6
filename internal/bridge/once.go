package bridge

import (
	"context"
	"errors"
	"fmt"
)

// runOnce writes the JWT files, then lets the source write every folder
// once and returns when all have (reload actions run), or with the first
// error.
func (b *Bridge) runOnce(ctx context.Context) error {
	b.Logger.Info("--once: writing every credential folder once, then exiting; Envoy SDS is not served", "folders", len(b.Config.Files))
	if err := b.jwtOnce(ctx); err != nil {
		return fmt.Errorf("--once: %w", err)
	}
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	ran := make(chan error, 1)
	go func() { ran <- b.src.Run(ctx) }()
	stop := func() { cancel(); <-ran }
	for {
		select {
		case err := <-ran:
			if err == nil {
				err = errors.New("stopped before every credential folder was written")
			}
			return fmt.Errorf("--once: %w", err)
		case <-b.applied:
		}
		done := true
		for _, st := range b.src.SinkStatuses() {
			if st.Err != nil {
				stop()
				return fmt.Errorf("--once: %s: %w", st.Name, st.Err)
			}
			done = done && st.Generation > 0
		}
		if done {
			// The actions run with the source's context: wait first.
			err := b.actionsDone(ctx)
			stop()
			if err != nil {
				return fmt.Errorf("--once: %w", err)
			}
			b.Logger.Info("--once: every credential folder written and its reload actions run; exiting")
			return nil
		}
	}
}

// jwtOnce writes every JWT file once, within first_update_timeout.
func (b *Bridge) jwtOnce(ctx context.Context) error {
	if b.jwt.Empty() {
		return nil
	}
	timeout := b.Config.WorkloadAPI.WithDefaults().FirstUpdateTimeout
	if timeout > 0 {
		var cancel context.CancelFunc
		ctx, cancel = context.WithTimeoutCause(ctx, timeout,
			fmt.Errorf("no JWT-SVID within workload_api.first_update_timeout (%s): is the agent reachable, and is there a registration entry for this workload?", timeout))
		defer cancel()
	}
	return b.jwt.Once(ctx)
}

// actionsDone waits for every folder's reload actions on the generation
// swapped in, and returns the first failure.
func (b *Bridge) actionsDone(ctx context.Context) error {
	for i, r := range b.runners {
		if err := r.Wait(ctx); err != nil {
			return err
		}
		for _, a := range r.Stats() {
			if a.Failed() {
				return fmt.Errorf("folder %s: reload action %s failed for generation %d: %w", b.folders[i].Dir(), a.Action, a.Generation, a.Err)
			}
		}
	}
	return nil
}
