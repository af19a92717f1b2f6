package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"time"

	"github.com/sds-bridge/sds-bridge/admin"
	"github.com/sds-bridge/sds-bridge/internal/bridge"
	"github.com/sds-bridge/sds-bridge/internal/config"
	"github.com/sds-bridge/sds-bridge/internal/helperconf"
	"github.com/sds-bridge/sds-bridge/internal/loglimit"
)

// commonFlags are the flags run and dev share; set ones override the config file.
type commonFlags struct {
	configFile string
	sdsSocket  string
	dir        string
	layout     string
	logFormat  string
	logLevel   string
	admin      *string // nil: no --admin; "" turns it off
	// once is --once, or a converted helper.conf's daemon_mode = false.
	once bool
	// program is what follows "--" (supervise.command).
	program []string

	// spiffeHelperConfig is a helper.conf converted on the fly, instead
	// of configFile, with its notes on stderr and owner over its files.
	spiffeHelperConfig string
	stderr             io.Writer
	owner              *config.Owner

	// limit is the logger's handler (repeated lines bounded), closed when
	// the command ends; format is the one under it, for the last line.
	limit  *loglimit.Handler
	format slog.Handler
}

func (c *commonFlags) register(fs *flag.FlagSet) {
	fs.StringVar(&c.configFile, "config", "", "YAML config file (see README for every key)")
	fs.StringVar(&c.spiffeHelperConfig, "spiffe-helper-config", "", "a spiffe-helper helper.conf to use instead of --config, converted as import-spiffe-helper does")
	c.stderr = fs.Output()
	fs.Func("owner", "uid:gid to own the files of --spiffe-helper-config's folder (files[].owner; the bridge must run as root)", ownerFunc(&c.owner))
	fs.StringVar(&c.sdsSocket, "sds-socket", "", "unix socket for Envoy's SDS (sds.socket)")
	fs.StringVar(&c.dir, "dir", "", "add one credential folder at DIR (files[].dir)")
	fs.StringVar(&c.layout, "layout", "spiffe-helper", "layout of the --dir folder: spiffe-helper or spiffe")
	fs.StringVar(&c.logFormat, "log-format", "text", "log format: text or json")
	fs.StringVar(&c.logLevel, "log-level", "info", "log level: debug, info, warn or error")
	fs.BoolVar(&c.once, "once", false, "write every credential folder (and its JWT files) once, run its reload actions, then exit 0; exit 1 with the reason after workload_api.first_update_timeout. Envoy SDS and the admin listener are not served (spiffe-helper's daemon_mode = false)")
	fs.Func("admin", `admin HTTP address for /livez, /readyz, /metrics, /status (admin.listen; default 127.0.0.1:8081; "" turns it off)`, func(v string) error {
		c.admin = &v
		return nil
	})
}

// load reads the config file (if any), applies the flags, defaults and
// validates.
func (c *commonFlags) load(then func(*config.Config)) (*config.Config, error) {
	if c.configFile != "" && c.spiffeHelperConfig != "" {
		return nil, errors.New("--config and --spiffe-helper-config: give only one")
	}
	if c.owner != nil && c.spiffeHelperConfig == "" {
		return nil, errors.New("--owner goes with --spiffe-helper-config; a YAML config says files[].owner")
	}
	cfg := &config.Config{}
	if c.configFile != "" {
		var err error
		if cfg, err = config.Read(c.configFile); err != nil {
			return nil, err
		}
	}
	if c.spiffeHelperConfig != "" {
		converted, once, err := helperconf.Load(c.stderr, c.spiffeHelperConfig, helperconf.Options{Owner: c.owner})
		if err != nil {
			return nil, err
		}
		cfg = converted
		c.once = c.once || once
	}
	o := config.Overrides{SDSSocket: c.sdsSocket, Dir: c.dir, Layout: c.layout, Program: c.program, Then: then, Once: c.once, Admin: c.admin}
	if err := o.Apply(cfg); err != nil {
		return nil, err
	}
	cfg.Default()
	if err := cfg.Validate(); err != nil {
		where := "flags"
		if c.configFile != "" {
			where = "config " + c.configFile
		}
		if c.spiffeHelperConfig != "" {
			where = "spiffe-helper config " + c.spiffeHelperConfig + " (converted)"
		}
		return nil, fmt.Errorf("%s: %w", where, err)
	}
	return cfg, nil
}

// errStoppedLoading is a stop that came while the config was being read:
// the bridge exits 0 at once, having started nothing (see finish).
var errStoppedLoading = errors.New("stopped before the config was read")

// loadUntil is load, unless ctx ends first: a config slow to read (a pipe
// whose writer hangs, a stuck mount) must not make the bridge deaf to a
// stop; the abandoned read ends with the process.
func (c *commonFlags) loadUntil(ctx context.Context, log *slog.Logger, then func(*config.Config)) (*config.Config, error) {
	var cfg *config.Config
	var err error
	done := make(chan struct{})
	go func() {
		cfg, err = c.load(then)
		close(done)
	}()
	select {
	case <-done:
		return cfg, err
	case <-ctx.Done():
		log.Info("stopped before the config was read; nothing was started", "why", context.Cause(ctx))
		return nil, errStoppedLoading
	}
}

func (c *commonFlags) logger(w io.Writer) (*slog.Logger, error) {
	var level slog.Level
	if err := level.UnmarshalText([]byte(c.logLevel)); err != nil {
		return nil, fmt.Errorf("--log-level %q: want debug, info, warn or error", c.logLevel)
	}
	opts := &slog.HandlerOptions{Level: level}
	switch c.logFormat {
	case "text":
		c.format = slog.NewTextHandler(w, opts)
	case "json":
		c.format = slog.NewJSONHandler(w, opts)
	default:
		return nil, fmt.Errorf("--log-format %q: want text or json", c.logFormat)
	}
	c.limit = loglimit.New(c.format, loglimit.Config{})
	return slog.New(c.limit), nil
}

// finish ends run or dev with err: the counts of suppressed lines are
// written, and with --log-format json the error is a JSON line like every
// other (main then prints nothing more). Text keeps main's line.
func (c *commonFlags) finish(err error) error {
	c.limit.Close()
	if errors.Is(err, errStoppedLoading) {
		return nil
	}
	if err == nil || c.logFormat != "json" {
		return err
	}
	rec := slog.NewRecord(time.Now(), slog.LevelError, "sds-bridge stopped", 0)
	rec.AddAttrs(slog.String("error", err.Error()))
	_ = c.format.Handle(context.Background(), rec)
	return coded{code: exitStatus(err, io.Discard)} // logged: main prints nothing more
}

func runBridge(ctx context.Context, args []string, stderr io.Writer) error {
	fs := flag.NewFlagSet("sds-bridge run", flag.ContinueOnError)
	fs.Usage = func() {
		fmt.Fprintln(stderr, "Usage: sds-bridge run [flags] [-- PROGRAM ARGS...]\n\nPROGRAM (supervise.command) starts once every folder holds a complete set, gets supervise.renew_signal after each swap and SIGTERM/SIGINT forwarded; the bridge exits with its status.")
		fs.PrintDefaults()
	}
	var common commonFlags
	workloadAPI := fs.String("workload-api", "", "Workload API address, e.g. unix:///run/spire/sockets/agent.sock (workload_api.address; default $SPIFFE_ENDPOINT_SOCKET)")
	return common.run(fs, args, stderr, func(log *slog.Logger) error {
		cfg, err := common.loadUntil(ctx, log, func(c *config.Config) {
			if *workloadAPI != "" {
				c.WorkloadAPI.Address = *workloadAPI
			}
		})
		if err != nil {
			return err
		}
		b, err := bridge.New(ctx, common.options(cfg, log))
		if err != nil {
			return err
		}
		return b.Run(ctx)
	})
}

// run parses args with the common flags beside fs's own, and runs body.
func (c *commonFlags) run(fs *flag.FlagSet, args []string, stderr io.Writer, body func(*slog.Logger) error) error {
	fs.SetOutput(stderr)
	c.register(fs)
	err := parseFlags(fs, args)
	if err != nil {
		return usageError(err)
	}
	if c.program, err = programArgs(fs, args); err != nil {
		return usageError(err)
	}
	log, err := c.logger(stderr)
	if err != nil {
		return err
	}
	return c.finish(body(log))
}

func (c *commonFlags) options(cfg *config.Config, log *slog.Logger) bridge.Options {
	return bridge.Options{Config: cfg, Logger: log, Once: c.once, Build: admin.ReadBuildInfo(version)}
}

// programArgs returns what follows "--" on the command line, and refuses
// any other argument left after the flags.
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
