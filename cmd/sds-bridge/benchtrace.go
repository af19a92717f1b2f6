//go:build benchtrace

package main

import (
	"fmt"
	"os"
	"os/signal"
	"runtime/trace"
	"syscall"
)

// Only in binaries built with -tags benchtrace (make bench-spire): with
// SDS_BRIDGE_TRACE set, a SIGUSR2 starts a runtime/trace and the next one
// stops it. The trace is written beside the path and renamed onto it when
// complete, so a reader never parses half a trace.
func init() {
	path := os.Getenv("SDS_BRIDGE_TRACE")
	if path == "" {
		return
	}
	sigs := make(chan os.Signal, 1)
	signal.Notify(sigs, syscall.SIGUSR2)
	go func() {
		for range sigs {
			if err := traceUntilSignal(path, sigs); err != nil {
				fmt.Fprintln(os.Stderr, "sds-bridge: benchtrace:", err)
			}
		}
	}()
}

func traceUntilSignal(path string, sigs <-chan os.Signal) error {
	f, err := os.Create(path + ".part")
	if err != nil {
		return err
	}
	defer f.Close()
	if err := trace.Start(f); err != nil {
		return err
	}
	<-sigs
	trace.Stop()
	if err := f.Close(); err != nil {
		return err
	}
	return os.Rename(path+".part", path)
}
