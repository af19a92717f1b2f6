// Command traceparse breaks one or more rotations in a runtime trace of
// sds-bridge (built with -tags benchtrace, see make bench-spire) into the
// hand-offs on its two push paths: Workload API response read off the
// socket → validated Update offered to the sinks → the SDS sink's Apply →
// the stream goroutine → gRPC's writer's write(2) on the SDS socket; and →
// the folder sink's Apply → each fsync → the rename of ..data.
//
// It is a module of its own so that golang.org/x/exp/trace stays out of the
// daemon's go.mod. Usage:
//
//	traceparse -trace FILE -rotation ZERO,SDS,FOLDER ... (unix nanoseconds)
//
// ZERO is when SPIRE's own SDS client had the rotation's leaf; SDS and
// FOLDER when the bridge's SDS client and folder watch had it (0: missed).
package main

import (
	"flag"
	"fmt"
	"os"
	"strconv"
	"strings"
	"time"
)

// rotation is one rotation's outside marks, in wall-clock time.
type rotation struct{ zero, sdsClient, folder time.Time }

type rotationFlags []rotation

func (r *rotationFlags) String() string { return fmt.Sprint(len(*r)) }

func (r *rotationFlags) Set(v string) error {
	parts := strings.Split(v, ",")
	if len(parts) != 3 {
		return fmt.Errorf("want ZERO,SDS,FOLDER, got %q", v)
	}
	var ts [3]time.Time
	for i, p := range parts {
		n, err := strconv.ParseInt(p, 10, 64)
		if err != nil {
			return fmt.Errorf("rotation %q: %w", v, err)
		}
		if n != 0 {
			ts[i] = time.Unix(0, n)
		}
	}
	*r = append(*r, rotation{zero: ts[0], sdsClient: ts[1], folder: ts[2]})
	return nil
}

func main() {
	path := flag.String("trace", "", "runtime trace of the bridge")
	var rotations rotationFlags
	flag.Var(&rotations, "rotation", "ZERO,SDS,FOLDER in unix nanoseconds (repeatable)")
	flag.Parse()
	if err := run(*path, rotations); err != nil {
		fmt.Fprintln(os.Stderr, "traceparse:", err)
		os.Exit(1)
	}
}

func run(path string, rotations []rotation) error {
	f, err := os.Open(path)
	if err != nil {
		return err
	}
	defer f.Close()
	tr, err := load(f)
	if err != nil {
		return fmt.Errorf("%s: %w", path, err)
	}
	var all []*breakdown
	for i, r := range rotations {
		b := tr.breakdown(r)
		// One timeline in full; the summary covers them all.
		if i == 0 {
			fmt.Printf("first rotation (ms after SPIRE's own SDS client had the leaf; goroutine in brackets):\n")
			b.print(os.Stdout)
		}
		all = append(all, b)
	}
	summarize(os.Stdout, all)
	return nil
}
