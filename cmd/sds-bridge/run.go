package main

import (
	"cmp"
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"math"
	"net"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"time"

	"golang.org/x/sync/errgroup"
	"golang.org/x/sys/unix"

	"github.com/sds-bridge/sds-bridge/admin"
	"github.com/sds-bridge/sds-bridge/filesink"
	"github.com/sds-bridge/sds-bridge/internal/config"
	"github.com/sds-bridge/sds-bridge/internal/flock"
	"github.com/sds-bridge/sds-bridge/jwtfiles"
	"github.com/sds-bridge/sds-bridge/reload"
	"github.com/sds-bridge/sds-bridge/reload/pgreload"
	"github.com/sds-bridge/sds-bridge/rotation"
	"github.com/sds-bridge/sds-bridge/sds"
)

// commonFlags are the flags run and dev share; set ones override the config file.
type commonFlags struct {
	configFile string
	sdsSocket  string
	dir        string
	layout     string
	logFormat  string
	logLevel   string
	admin      optionalString
	// once writes every folder once and exits (runOnce); the converted
	// config of a helper.conf with daemon_mode = false sets it too.
	once bool
	// program is what follows "--": the program to supervise
	// (supervise.command), over the config's.
	program []string

	// spiffeHelperConfig is a helper.conf converted on the fly, instead of
	// configFile; its notes go to stderr.
	spiffeHelperConfig string
	stderr             io.Writer
}

// optionalString is a string flag that knows whether it was given, so that
// --admin "" (off) differs from no --admin (the config's or the default).
type optionalString struct {
	value string
	set   bool
}

func (o *optionalString) String() string { return o.value }

func (o *optionalString) Set(v string) error {
	o.value, o.set = v, true
	return nil
}

func (c *commonFlags) register(fs *flag.FlagSet) {
	fs.StringVar(&c.configFile, "config", "", "YAML config file (see README for every key)")
	fs.StringVar(&c.spiffeHelperConfig, "spiffe-helper-config", "", "a spiffe-helper helper.conf to use instead of --config, converted as import-spiffe-helper does")
	c.stderr = fs.Output()
	fs.StringVar(&c.sdsSocket, "sds-socket", "", "unix socket for Envoy's SDS (sds.socket)")
	fs.StringVar(&c.dir, "dir", "", "add one credential folder at DIR (files[].dir)")
	fs.StringVar(&c.layout, "layout", "spiffe-helper", "layout of the --dir folder: spiffe-helper or spiffe")
	fs.StringVar(&c.logFormat, "log-format", "text", "log format: text or json")
	fs.StringVar(&c.logLevel, "log-level", "info", "log level: debug, info, warn or error")
	fs.BoolVar(&c.once, "once", false, "write every credential folder (and its JWT files) once, run its reload actions, then exit 0; exit 1 with the reason after workload_api.first_update_timeout. Envoy SDS and the admin listener are not served (spiffe-helper's daemon_mode = false)")
	fs.Var(&c.admin, "admin", `admin HTTP address for /livez, /readyz, /metrics, /status (admin.listen; default 127.0.0.1:8081; "" turns it off)`)
}

// load reads the config file (if any), applies the flags over it, then
// defaults and validates the result.
func (c *commonFlags) load(apply func(*config.Config)) (*config.Config, error) {
	if c.configFile != "" && c.spiffeHelperConfig != "" {
		return nil, errors.New("--config and --spiffe-helper-config: give only one")
	}
	cfg := &config.Config{}
	if c.configFile != "" {
		var err error
		if cfg, err = config.Read(c.configFile); err != nil {
			return nil, err
		}
	}
	if c.spiffeHelperConfig != "" {
		res, converted, err := convertHelperConf(c.spiffeHelperConfig, "")
		if err != nil {
			return nil, err
		}
		printNotes(c.stderr, c.spiffeHelperConfig, res.Notes)
		if keys := res.Unsupported(); len(keys) > 0 {
			// A daemon must not start doing less than helper.conf said
			// with the difference only in its log: convert, review, run.
			return nil, fmt.Errorf("%w; convert it with `sds-bridge import-spiffe-helper --allow-unsupported %s > sds-bridge.yaml`, review the NOT SUPPORTED comments, then use --config sds-bridge.yaml",
				unsupportedError(c.spiffeHelperConfig, keys), c.spiffeHelperConfig)
		}
		cfg = converted
		c.once = c.once || res.Once
	}
	if c.sdsSocket != "" {
		abs, err := filepath.Abs(c.sdsSocket)
		if err != nil {
			return nil, fmt.Errorf("--sds-socket: %w", err)
		}
		cfg.SDS.Socket = abs
	}
	if c.dir != "" {
		abs, err := filepath.Abs(c.dir)
		if err != nil {
			return nil, fmt.Errorf("--dir: %w", err)
		}
		cfg.Files = append(cfg.Files, config.Folder{Dir: abs, Layout: c.layout})
	}
	if c.admin.set {
		listen := c.admin.value
		cfg.Admin.Listen = &listen
	}
	if len(c.program) > 0 {
		cfg.Supervise.Command = c.program
	}
	if apply != nil {
		apply(cfg)
	}
	if c.once && cfg.Supervise.On() {
		return nil, errors.New("--once and a program to supervise (supervise.command or -- PROGRAM): a one-shot run starts no program")
	}
	if c.once {
		// Nothing would be there to answer Envoy or a probe a moment later.
		off, none := false, ""
		cfg.SDS.Enabled = &off
		cfg.Admin.Listen = &none
		if len(cfg.Files) == 0 {
			return nil, errors.New("--once: no credential folder to write (files[] or --dir)")
		}
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

func (c *commonFlags) logger(w io.Writer) (*slog.Logger, error) {
	var level slog.Level
	if err := level.UnmarshalText([]byte(c.logLevel)); err != nil {
		return nil, fmt.Errorf("--log-level %q: want debug, info, warn or error", c.logLevel)
	}
	opts := &slog.HandlerOptions{Level: level}
	switch c.logFormat {
	case "text":
		return slog.New(slog.NewTextHandler(w, opts)), nil
	case "json":
		return slog.New(slog.NewJSONHandler(w, opts)), nil
	default:
		return nil, fmt.Errorf("--log-format %q: want text or json", c.logFormat)
	}
}

func runBridge(ctx context.Context, args []string, stderr io.Writer) error {
	fs := flag.NewFlagSet("sds-bridge run", flag.ContinueOnError)
	fs.Usage = func() {
		fmt.Fprintln(stderr, "Usage: sds-bridge run [flags] [-- PROGRAM ARGS...]\n\nPROGRAM (supervise.command) starts once every folder holds a complete set, gets supervise.renew_signal after each swap and SIGTERM/SIGINT forwarded; the bridge exits with its status.")
		fs.PrintDefaults()
	}
	fs.SetOutput(stderr)
	var common commonFlags
	common.register(fs)
	workloadAPI := fs.String("workload-api", "", "Workload API address, e.g. unix:///run/spire/sockets/agent.sock (workload_api.address; default $SPIFFE_ENDPOINT_SOCKET)")
	err := fs.Parse(args)
	if err != nil {
		return err
	}
	if common.program, err = programArgs(fs, args); err != nil {
		return err
	}
	log, err := common.logger(stderr)
	if err != nil {
		return err
	}
	cfg, err := common.load(func(c *config.Config) {
		if *workloadAPI != "" {
			c.WorkloadAPI.Address = *workloadAPI
		}
	})
	if err != nil {
		return err
	}
	return serve(ctx, cfg, log, common.mode())
}

// runMode is how long serving lasts.
type runMode int

const (
	// daemon serves and rotates until stopped.
	daemon runMode = iota
	// oneShot writes every folder once, runs its actions and returns.
	oneShot
)

func (c *commonFlags) mode() runMode {
	if c.once {
		return oneShot
	}
	return daemon
}

// serve takes what the bridge owns (lockOwned), then wires config →
// source → sinks and runs until ctx ends.
func serve(ctx context.Context, cfg *config.Config, log *slog.Logger, mode runMode) error {
	release, err := lockOwned(cfg)
	if err != nil {
		return err
	}
	defer release()
	return serveOwned(ctx, cfg, log, mode, nil)
}

// lockOwned makes the SDS socket and every credential folder belong to this
// process: one exclusive lock each, taken before any start-up cleanup,
// write or socket removal. A second bridge on any of them (the same folder
// with another socket or SVID, the same socket with another folder) fails
// here, naming the running bridge's pid, and has touched nothing but the
// lock files (and a missing folder, created empty to hold its lock). The
// socket goes first: a bridge refused on the socket creates no folder.
// release gives every lock up; call it once serving has ended.
func lockOwned(cfg *config.Config) (release func(), err error) {
	var locks []*flock.Lock
	releaseAll := func() {
		for _, l := range slices.Backward(locks) {
			l.Release()
		}
	}
	defer func() {
		if err != nil {
			releaseAll()
		}
	}()
	if cfg.SDS.On() {
		l, err := sds.LockSocket(cfg.SDS.Socket)
		if err != nil {
			return nil, fmt.Errorf("sds.socket %q: %w", cfg.SDS.Socket, err)
		}
		locks = append(locks, l)
	}
	for i, f := range cfg.Files {
		if err := os.MkdirAll(f.Dir, 0o755); err != nil {
			return nil, fmt.Errorf("files[%d].dir %q: create folder: %w", i, f.Dir, err)
		}
		l, err := flock.Acquire(f.Dir, filesink.LockFileName)
		if err != nil {
			return nil, fmt.Errorf("files[%d].dir %q: %w", i, f.Dir, err)
		}
		locks = append(locks, l)
	}
	return releaseAll, nil
}

// serveOwned is serve once the locks are held. Everything that can fail on
// bad input is built before anything starts. adminBound, if not nil, is
// told the address the admin listener bound (a port 0 resolved).
func serveOwned(ctx context.Context, cfg *config.Config, log *slog.Logger, mode runMode, adminBound func(addr string)) error {
	hups, stopHangup := catchHangup()
	defer stopHangup()
	sup, stopSignals, err := newSupervisor(cfg, log)
	if err != nil {
		return err
	}
	defer stopSignals()
	var sinks []rotation.Sink
	var fileSinks []*filesink.Folder
	var jwtFolders []jwtfiles.Folder
	var folders []admin.Folder
	var sdsServer *sds.Server
	if cfg.SDS.On() {
		srv, err := sds.New(sds.Config{
			SocketPath:  cfg.SDS.Socket,
			SocketMode:  os.FileMode(cfg.SDS.SocketMode),
			AllowedUIDs: cfg.SDS.AllowedUIDs,
			AllowedGIDs: cfg.SDS.AllowedGIDs,
			// Zero is the server's default.
			MaxConnections: cfg.SDS.MaxConnections,
			Names:          cfg.SDS.Names(),
			Logger:         log.With("component", "sds"),
		})
		if err != nil {
			return err
		}
		sdsServer = srv
		sinks = append(sinks, srv)
	}
	for i, f := range cfg.Files {
		fc, runner, err := folderConfig(f, log, mode)
		if err != nil {
			return fmt.Errorf("files[%d]: %w", i, err)
		}
		folder, err := filesink.New(fc)
		if err != nil {
			return fmt.Errorf("files[%d]: %w", i, err)
		}
		// Leftovers from a previous pod must be gone before any consumer can
		// be told the folder is ready: the incident this project comes from.
		if err := folder.Prepare(ctx); err != nil {
			return fmt.Errorf("files[%d]: %w", i, err)
		}
		sinks = append(sinks, folder)
		fileSinks = append(fileSinks, folder)
		jwtFolders = append(jwtFolders, jwtFolder(f, fc.Owner, runner))
		folders = append(folders, folder)
	}
	jwtWriter, err := jwtfiles.New(jwtfiles.Config{
		Address:         cfg.WorkloadAPI.Address,
		DefaultSVIDHint: cfg.WorkloadAPI.DefaultSVIDHint,
		Folders:         jwtFolders,
		Logger:          log.With("component", "jwtfiles"),
	})
	if err != nil {
		return err
	}
	// The admin server reads the source, and the source feeds the admin's
	// latency histogram: adm is set below, before the source runs.
	var adm *admin.Server
	var gate *startGate
	applied := make(chan struct{}, 1) // a sink has applied, or failed to
	src, err := rotation.New(rotation.Config{
		Address:            cfg.WorkloadAPI.Address,
		FirstUpdateTimeout: time.Duration(cfg.WorkloadAPI.FirstUpdateTimeout),
		DefaultSVIDHint:    cfg.WorkloadAPI.DefaultSVIDHint,
		Sinks:              sinks,
		OnSinkDone: func(st rotation.SinkStatus) {
			if adm != nil {
				adm.ObserveSink(st)
			}
			gate.observe(st)
			select {
			case applied <- struct{}{}:
			default:
			}
		},
		Logger: log.With("component", "rotation"),
	})
	if err != nil {
		return err
	}
	if sup != nil {
		var names []string
		for _, f := range fileSinks {
			names = append(names, f.Name())
		}
		gate = newStartGate(sup, len(sinks), names)
	}
	var adminListener net.Listener
	if addr := cfg.Admin.Address(); addr != "" {
		ac := admin.Config{
			Source:             src,
			Folders:            folders,
			MinValidity:        time.Duration(cfg.Admin.MinValidity),
			MinValidityPercent: *cfg.Admin.MinValidityPercent,
			RequireSDSAck:      cfg.Admin.RequireSDSAck,
			MaxConnections:     cfg.Admin.MaxConnections,
			LivenessPath:       cfg.Admin.LivenessPath,
			ReadinessPath:      cfg.Admin.ReadinessPath,
			Version:            versionString(),
			Logger:             log.With("component", "admin"),
		}
		if sdsServer != nil {
			ac.SDS = sdsServer
		}
		if !jwtWriter.Empty() {
			ac.JWT = jwtWriter
		}
		if adm, err = admin.New(ac); err != nil {
			return err
		}
		if adminListener, err = net.Listen("tcp", addr); err != nil {
			if errors.Is(err, unix.EADDRINUSE) {
				return fmt.Errorf("admin.listen %q: %w: another process has that port; pass --admin 127.0.0.1:0 for any free port, or --admin \"\" for no admin listener", addr, err)
			}
			return fmt.Errorf("admin.listen %q: %w", addr, err)
		}
		defer adminListener.Close()
		if adminBound != nil {
			adminBound(adminListener.Addr().String())
		}
	}

	if mode == oneShot {
		return once(ctx, cfg, src, applied, jwtWriter, log)
	}
	logDescriptorBudget(cfg, log)

	// The child's exit ends the bridge, with the child's status.
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	var childErr error
	g, ctx := errgroup.WithContext(ctx)
	if sup != nil {
		g.Go(func() error {
			childErr = sup.Run(ctx)
			cancel()
			return nil
		})
	}
	if sdsServer != nil {
		g.Go(func() error { return sdsServer.Serve(ctx) })
		log.Info("serving Envoy SDS", "socket", cfg.SDS.Socket)
	}
	if adminListener != nil {
		g.Go(func() error { return adm.Serve(ctx, adminListener) })
		log.Info("admin: listening", "addr", adminListener.Addr().String(), "endpoints", cfg.Admin.LivenessPath+" "+cfg.Admin.ReadinessPath+" /metrics /status")
	}
	g.Go(func() error { return src.Run(ctx) })
	g.Go(func() error { return onHangup(ctx, hups, src, fileSinks, log) })
	// JWT-SVIDs have their own Workload API calls and timers: they are not
	// in the X.509 updates the source fans out.
	if !jwtWriter.Empty() {
		g.Go(func() error { return jwtWriter.Run(ctx) })
	}
	for _, f := range cfg.Files {
		log.Info("writing credential folder", "dir", f.Dir, "layout", f.Layout)
	}
	err = g.Wait()
	if err == nil || errors.Is(err, context.Canceled) {
		log.Info("stopped; credential folders keep the last good material")
		return childErr
	}
	return err
}

// once writes the JWT files, then lets the source write every folder once
// (each swap runs its folder's reload actions, with every file in place)
// and returns when all have, or with the first folder's error, or the
// source's at workload_api.first_update_timeout.
func once(ctx context.Context, cfg *config.Config, src *rotation.Source, applied <-chan struct{}, jwtWriter *jwtfiles.Writer, log *slog.Logger) error {
	log.Info("--once: writing every credential folder once, then exiting; Envoy SDS is not served", "folders", len(cfg.Files))
	timeout := time.Duration(cfg.WorkloadAPI.FirstUpdateTimeout)
	if !jwtWriter.Empty() {
		jctx, cancel := ctx, context.CancelFunc(func() {})
		if timeout > 0 {
			jctx, cancel = context.WithTimeoutCause(ctx, timeout,
				fmt.Errorf("no JWT-SVID within workload_api.first_update_timeout (%s): is the agent reachable, and is there a registration entry for this workload?", timeout))
		}
		err := jwtWriter.Once(jctx)
		cancel()
		if err != nil {
			return fmt.Errorf("--once: %w", err)
		}
	}
	ctx, cancel := context.WithCancel(ctx)
	defer cancel()
	ran := make(chan error, 1)
	go func() { ran <- src.Run(ctx) }()
	stop := func() { cancel(); <-ran }
	for {
		select {
		case err := <-ran:
			if err == nil {
				err = errors.New("stopped before every credential folder was written")
			}
			return fmt.Errorf("--once: %w", err)
		case <-applied:
		}
		done := true
		for _, st := range src.SinkStatuses() {
			if st.Err != nil {
				stop()
				return fmt.Errorf("--once: %s: %w", st.Name, st.Err)
			}
			done = done && st.Generation > 0
		}
		if done {
			stop()
			log.Info("--once: every credential folder written and its reload actions run; exiting")
			return nil
		}
	}
}

// minDescriptorsLeft is what the connection caps must leave of the
// descriptor limit for everything else: Workload API and SDS listener,
// folder swaps (a few per file, briefly), reload actions, logs.
const minDescriptorsLeft = 256

// logDescriptorBudget logs how the descriptor limit is shared, and warns
// when the connection caps leave too little for folder swaps. There is
// nothing to raise: on Linux the Go runtime sets the soft RLIMIT_NOFILE to
// the hard limit when the process starts (and gives exec'd reload actions
// the original back), so the limit read here is the most the bridge can
// have.
func logDescriptorBudget(cfg *config.Config, log *slog.Logger) {
	var lim unix.Rlimit
	if err := unix.Getrlimit(unix.RLIMIT_NOFILE, &lim); err != nil {
		log.Warn("descriptors: cannot read RLIMIT_NOFILE", "error", err)
		return
	}
	var sdsMax, adminMax int
	if cfg.SDS.On() {
		sdsMax = cmp.Or(cfg.SDS.MaxConnections, sds.DefaultMaxConnections)
	}
	if cfg.Admin.Address() != "" {
		adminMax = cmp.Or(cfg.Admin.MaxConnections, admin.DefaultMaxConnections)
	}
	limit := int64(min(lim.Cur, math.MaxInt64))
	left := limit - int64(sdsMax) - int64(adminMax)
	attrs := []any{"limit", limit, "sds_max_connections", sdsMax, "admin_max_connections", adminMax, "left", left}
	if left < minDescriptorsLeft {
		log.Warn("descriptors: the connection caps leave too few for folder swaps and reload actions; "+
			"lower sds.max_connections or admin.max_connections, or raise the limit (ulimit -n, LimitNOFILE)",
			append(attrs, "want_left", minDescriptorsLeft)...)
		return
	}
	log.Info("descriptors", attrs...)
}

// folderConfig is the folder's filesink config and its one reload runner,
// with the actions an X.509 swap runs and those a JWT refresh runs
// (on_rotate[].on); the X.509 and JWT writers share the runner.
func folderConfig(f config.Folder, log *slog.Logger, mode runMode) (filesink.Config, *reload.Runner, error) {
	rc := reload.Config{Logger: log.With("component", "reload", "dir", f.Dir)}
	fc := filesink.Config{
		Dir:            f.Dir,
		Layout:         filesink.Layout(f.Layout),
		CertFileName:   f.CertFileName,
		KeyFileName:    f.KeyFileName,
		BundleFileName: f.BundleFileName,
		CertMode:       os.FileMode(f.CertMode),
		KeyMode:        os.FileMode(f.KeyMode),
		Logger:         log.With("component", "files", "dir", f.Dir),

		AllowWorldWritableDir: f.AllowWorldWritableDir,

		SVID:                     f.SVID,
		IncludeFederatedDomains:  f.IncludeFederatedDomains,
		FederatedBundle:          filesink.FederatedMode(f.FederatedBundle),
		AddIntermediatesToBundle: f.AddIntermediatesToBundle,
	}
	if f.Owner != "" {
		uid, gid, err := config.ParseOwner(f.Owner)
		if err != nil {
			return fc, nil, fmt.Errorf("owner %q: %w", f.Owner, err)
		}
		fc.Owner = &filesink.Owner{UID: uid, GID: gid}
	}
	for _, a := range f.OnRotate {
		var action reload.Action
		switch {
		case a.Signal != nil:
			sig, err := config.ParseSignal(a.Signal.Signal)
			if err != nil {
				return fc, nil, fmt.Errorf("on_rotate signal %q: %w", a.Signal.Signal, err)
			}
			action = &reload.SignalAction{PIDFile: a.Signal.PIDFile, Signal: sig}
		case a.Exec != nil:
			action = &reload.ExecAction{Command: a.Exec.Command, Timeout: time.Duration(a.Exec.Timeout)}
		case a.Postgres != nil:
			action = &pgreload.Action{DSN: a.Postgres.DSN, Timeout: time.Duration(a.Postgres.Timeout)}
		}
		// --once runs every action once, after the X.509 swap, when
		// the JWT files are already in place (jwtfiles.Writer.Once runs
		// none).
		if a.RunsOn(config.EventX509) || mode == oneShot {
			rc.Actions = append(rc.Actions, action)
		}
		if a.RunsOn(config.EventJWT) {
			rc.JWTActions = append(rc.JWTActions, action)
		}
	}
	runner, err := reload.New(rc)
	if err != nil {
		return fc, nil, err
	}
	fc.Reload = runner
	return fc, runner, nil
}

// jwtFolder is the JWT part of a folder, with the folder's reload runner.
func jwtFolder(f config.Folder, owner *filesink.Owner, runner *reload.Runner) jwtfiles.Folder {
	jf := jwtfiles.Folder{
		Dir:            f.Dir,
		BundleFileName: f.JWTBundleFileName,
		SVID:           f.SVID,
		Mode:           os.FileMode(f.JWTMode),
		BundleMode:     os.FileMode(f.JWTBundleMode),
		Owner:          owner,
		Reload:         runner,
	}
	for _, j := range f.JWTSVIDs {
		jf.SVIDs = append(jf.SVIDs, jwtfiles.SVIDFile{Audience: j.Audience, ExtraAudiences: j.ExtraAudiences, FileName: j.FileName})
	}
	return jf
}

// layoutFlag checks a --layout value early, with the flag's name in the error.
func layoutFlag(v string) (filesink.Layout, error) {
	switch v {
	case string(filesink.LayoutSPIFFEHelper), string(filesink.LayoutSPIFFE):
		return filesink.Layout(v), nil
	}
	return "", fmt.Errorf("--layout %q: want %s", v, strings.Join([]string{string(filesink.LayoutSPIFFEHelper), string(filesink.LayoutSPIFFE)}, " or "))
}
