//go:build benchfanout

// Command fanoutclient is the client process of TestBenchFanout (make
// bench-fanout): the load many Envoys put on one SDS server, from outside
// the server's process, the way SPIRE Agent's SDS and the bridge's are used.
//
// It dials a unix socket with -conns gRPC connections, opens -streams SotW
// StreamSecrets streams spread over them (stream i on connection i mod
// conns), each asking for -names and ACKing every response by version and
// nonce as Envoy does. For every rotation (a new leaf serial of the first
// name) it records when each stream received it and, on stdout, writes one
// JSON line: the first arrival, every stream's delay after it, p50, p90,
// max, and how many streams got it within -settle. Before that it writes a
// "ready" line once every stream holds a leaf: rotations that began earlier
// are not counted, since streams still opening would skew their spread.
// It exits 0 after -rotations rotations.
//
// The process shares two cores with the server it measures, so the work per
// response is small: the arrival time is taken as Recv returns, the chain is
// read from the wire without decoding the Secret, and the leaf is parsed
// once per rotation, not once per stream.
package main

import (
	"context"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"os"
	"os/signal"
	"runtime/pprof"
	"strings"
	"syscall"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials/insecure"
)

func main() {
	if err := run(os.Args[1:]); err != nil {
		fmt.Fprintln(os.Stderr, "fanoutclient:", err)
		os.Exit(1)
	}
}

// config is what the flags say.
type config struct {
	socket    string
	conns     int
	streams   int
	names     []string
	rotations int
	settle    time.Duration
	timeout   time.Duration
	profile   string
}

func parseFlags(args []string) (config, error) {
	fs := flag.NewFlagSet("fanoutclient", flag.ContinueOnError)
	cfg := config{}
	fs.StringVar(&cfg.socket, "socket", "", "unix socket of the SDS server")
	fs.IntVar(&cfg.conns, "conns", 50, "gRPC connections")
	fs.IntVar(&cfg.streams, "streams", 1000, "StreamSecrets streams, spread over the connections")
	names := fs.String("names", "default,ALL", "resource names every stream asks for; rotations are told by the first one's leaf")
	fs.IntVar(&cfg.rotations, "rotations", 2, "rotations to report before exiting")
	fs.DurationVar(&cfg.settle, "settle", 4*time.Second, "how long after a rotation's first arrival the other streams may take")
	fs.DurationVar(&cfg.timeout, "timeout", 5*time.Minute, "give up after this long")
	fs.StringVar(&cfg.profile, "cpuprofile", "", "write this process's CPU profile from ready to exit here (where the client's own time goes)")
	if err := fs.Parse(args); err != nil {
		return config{}, err
	}
	cfg.names = strings.Split(*names, ",")
	switch {
	case cfg.socket == "":
		return config{}, errors.New("-socket is required")
	case cfg.conns < 1 || cfg.streams < cfg.conns:
		return config{}, fmt.Errorf("-conns %d, -streams %d: need 1 ≤ conns ≤ streams", cfg.conns, cfg.streams)
	case cfg.rotations < 1:
		return config{}, fmt.Errorf("-rotations %d: need at least 1", cfg.rotations)
	case cfg.names[0] == "":
		return config{}, errors.New("-names: the first name is the one whose leaf is followed")
	}
	return cfg, nil
}

func run(args []string) error {
	cfg, err := parseFlags(args)
	if err != nil {
		return err
	}
	ctx, stop := signal.NotifyContext(context.Background(), syscall.SIGINT, syscall.SIGTERM)
	defer stop()
	ctx, cancel := context.WithTimeout(ctx, cfg.timeout)
	defer cancel()

	conns := make([]*grpc.ClientConn, cfg.conns)
	for i := range conns {
		conns[i], err = grpc.NewClient("unix://"+cfg.socket, grpc.WithTransportCredentials(insecure.NewCredentials()))
		if err != nil {
			return fmt.Errorf("dial %s: %w", cfg.socket, err)
		}
		defer conns[i].Close()
	}

	out := json.NewEncoder(os.Stdout)
	lb := newLeafBook(cfg.streams)
	opened := time.Now()
	streams, err := openStreams(ctx, conns, cfg)
	if err != nil {
		return err
	}
	// One goroutine per stream; each ends when ctx does or its stream
	// fails, and the first failure ends the run.
	failed := make(chan error, 1)
	for i, s := range streams {
		go func() {
			if err := follow(s, i, cfg.names, lb); err != nil && ctx.Err() == nil {
				select {
				case failed <- fmt.Errorf("stream %d (connection %d): %w", i, i%cfg.conns, err):
				default:
				}
			}
		}()
	}
	select {
	case <-lb.ready:
	case err := <-failed:
		return err
	case <-ctx.Done():
		return fmt.Errorf("%d of %d streams got a leaf: %w", lb.holding.Load(), cfg.streams, ctx.Err())
	}
	if err := out.Encode(readyLine{Event: "ready", Streams: cfg.streams, Conns: cfg.conns,
		OpenMS: float64(time.Since(opened).Microseconds()) / 1000}); err != nil {
		return err
	}
	if cfg.profile != "" {
		stopProfile, err := startProfile(cfg.profile)
		if err != nil {
			return err
		}
		defer stopProfile()
	}
	return report(ctx, lb, cfg, out, failed)
}

func startProfile(path string) (stop func(), err error) {
	f, err := os.Create(path)
	if err != nil {
		return nil, err
	}
	if err := pprof.StartCPUProfile(f); err != nil {
		f.Close()
		return nil, err
	}
	return func() {
		pprof.StopCPUProfile()
		f.Close()
	}, nil
}

// openStreams opens every stream before any starts receiving, so the
// connections come up as Envoy's would: all of them at once.
func openStreams(ctx context.Context, conns []*grpc.ClientConn, cfg config) ([]sdsStream, error) {
	streams := make([]sdsStream, cfg.streams)
	for i := range streams {
		s, err := newSDSStream(ctx, conns[i%len(conns)])
		if err != nil {
			return nil, fmt.Errorf("open stream %d: %w", i, err)
		}
		streams[i] = s
	}
	return streams, nil
}

// report writes one line per rotation that began after ready, until
// cfg.rotations are written.
func report(ctx context.Context, lb *leafBook, cfg config, out *json.Encoder, failed <-chan error) error {
	for done := 0; done < cfg.rotations; done++ {
		var r *rotation
		select {
		case r = <-lb.rotations:
		case err := <-failed:
			return err
		case <-ctx.Done():
			return fmt.Errorf("%d of %d rotations seen: %w", done, cfg.rotations, ctx.Err())
		}
		settled := time.NewTimer(time.Until(r.created.Add(cfg.settle)))
		select {
		case <-r.all:
		case <-settled.C:
		case err := <-failed:
			return err
		case <-ctx.Done():
			return ctx.Err()
		}
		settled.Stop()
		if err := out.Encode(r.summary()); err != nil {
			return err
		}
	}
	return nil
}

// readyLine is written once every stream holds a leaf.
type readyLine struct {
	Event   string  `json:"event"` // "ready"
	Streams int     `json:"streams"`
	Conns   int     `json:"conns"`
	OpenMS  float64 `json:"open_ms"` // from dialing until every stream held a leaf
}
