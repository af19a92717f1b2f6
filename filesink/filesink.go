// Package filesink is the credential folder: the writer mirrors every
// rotation.Update into a folder that PostgreSQL (or any program that reads
// PEM files) can use, and the reader (Inspect, Wait) reads a folder as
// such a program does.
//
// A folder is swapped atomically as a set, the way Kubernetes' AtomicWriter
// updates Secret volumes: each Update becomes a new, fully written and
// fsynced generation directory ("..<timestamp>-g<generation>"), then the
// "..data" symlink is renamed to point at it. The names consumers open
// ("svid.pem", …) are relative symlinks into "..data", so every open(2) sees
// a complete file of one generation.
//
// Opening two stable names one after the other can, in a rare race with a
// swap, give files of two adjacent generations (a new certificate with the
// old key). A consumer that needs a matching set resolves "..data" once
// (os.Readlink) and reads every file from that generation directory; the
// previous generation directory is kept until the next swap so such a
// reader can finish.
//
// The folder's reload.Runner, if any, runs after the swap is durable, on
// its own goroutine: a consumer that hangs never holds back the next swap.
// Swaps are paced (Config.MinSwapInterval); Stats counts write failures
// and reports the runner's actions. Prepare removes stale leftovers
// (expired, not yet valid, mismatched or unverifiable material, old
// generations) at start-up, as the reader behind `wait`, `check` and
// readiness judges them.
package filesink

import (
	"cmp"
	"context"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"path/filepath"
	"sync"
	"time"

	"github.com/sds-bridge/sds-bridge/internal/fielderr"
	"github.com/sds-bridge/sds-bridge/reload"
	"github.com/sds-bridge/sds-bridge/rotation"
)

// Default modes, and the names only the writer makes.
const (
	DefaultCertMode = os.FileMode(0o644)
	DefaultKeyMode  = os.FileMode(0o600)

	// LockFileName is the lock file (internal/flock) that makes a folder
	// belong to one running bridge; taken before Prepare touches anything.
	LockFileName = "..sds-bridge.lock"

	// DefaultMinSwapInterval is Config.MinSwapInterval's default: a
	// consumer is reloaded at most once a second, whatever the agent
	// sends; SPIRE rotates every few minutes at the shortest.
	DefaultMinSwapInterval = time.Second
	// MaxMinSwapInterval bounds Config.MinSwapInterval: a new set must
	// never wait long for its swap.
	MaxMinSwapInterval = time.Minute

	generationDirMode = os.FileMode(0o755)
	folderMode        = os.FileMode(0o755)
)

// FederatedMode says how LayoutSPIFFEHelper delivers federated bundles.
type FederatedMode string

const (
	// FederatedSeparate writes federated/<td>.pem only (the default).
	FederatedSeparate FederatedMode = "separate"
	// FederatedConcatenate also appends every federated root to the bundle
	// file: an explicit opt-in, see Config.FederatedBundle.
	FederatedConcatenate FederatedMode = "concatenate"
)

// Config describes one credential folder.
type Config struct {
	// Dir is the absolute path of the folder; it is created (0755) if missing.
	Dir string `yaml:"dir"`
	// Lock, if set, is the folder's lock (LockFolder on Dir): the folder
	// writes the very directory that was locked. Without it the directory
	// found at the first Prepare is held instead. Either way a swap is
	// refused (ErrFolderReplaced) while Dir names another directory. The
	// caller releases it once the Folder is no longer used.
	Lock *FolderLock `yaml:"-"`
	// AllowWorldWritableDir lets Dir be writable by every user. By default
	// such a folder is refused: anyone could plant links or files at the
	// names consumers open, or remove the set.
	AllowWorldWritableDir bool `yaml:"allow_world_writable_dir"`
	// Layout defaults to LayoutSPIFFEHelper.
	Layout Layout `yaml:"layout"`
	// File names of LayoutSPIFFEHelper; defaults svid.pem, svid_key.pem,
	// svid_bundle.pem. They must be empty for LayoutSPIFFE.
	CertFileName   string `yaml:"cert_file_name"`
	KeyFileName    string `yaml:"key_file_name"`
	BundleFileName string `yaml:"bundle_file_name"`
	// SVID chooses the SVID written here when the workload has several: a
	// Workload API hint or a SPIFFE ID (files[].svid), matched as
	// rotation.FindSVID does. Empty means the default SVID. An Update
	// without it is refused: the folder keeps its last good set and Apply
	// returns an error (counted, readiness red) rather than write another
	// identity than the one configured.
	SVID string `yaml:"svid"`
	// IncludeFederatedDomains (LayoutSPIFFEHelper) writes every federated
	// trust domain's bundle as its own file, FederatedDirName/<td>.pem,
	// reached through the stable link FederatedDirName. LayoutSPIFFE always
	// writes one file per trust domain.
	IncludeFederatedDomains bool `yaml:"include_federated_domains"`
	// FederatedBundle (LayoutSPIFFEHelper, needs IncludeFederatedDomains)
	// is FederatedSeparate (default) or FederatedConcatenate, which also
	// appends every federated root to the bundle file for consumers that
	// read one CA file. That is dangerous: a consumer that does not check
	// SPIFFE IDs then accepts certificates any federated CA issues for any
	// name, this trust domain's included.
	FederatedBundle FederatedMode `yaml:"federated_bundle"`
	// AddIntermediatesToBundle (LayoutSPIFFEHelper) appends the SVID's
	// intermediates to the bundle file, as spiffe-helper's
	// add_intermediates_to_bundle does for MySQL, which wants every CA
	// certificate in its ssl-ca file.
	AddIntermediatesToBundle bool `yaml:"add_intermediates_to_bundle"`
	// OmitExpired leaves certificates expired at write time out of the
	// chain and bundle files, as spiffe-helper's omit_expired does: a
	// bundle keeps an old CA until SPIRE prunes it (omitexpired.go).
	OmitExpired bool `yaml:"omit_expired"`
	// CertMode applies to certificates, bundles and the marker (default
	// 0644); KeyMode to files holding the private key (default 0600) and
	// must not grant anything to others.
	CertMode os.FileMode `yaml:"cert_mode"`
	KeyMode  os.FileMode `yaml:"key_mode"`
	// Owner, if set, is chowned onto files and generation directories.
	Owner *Owner `yaml:"owner"`
	// Reload, if set, runs the folder's reload actions after every swap,
	// once the files are durable (an EventX509), beside the swaps: Apply
	// hands the event over (reload.Runner.Submit) and does not wait for a
	// consumer. The folder's JWT writer shares it, so the two never reload
	// a consumer at the same time.
	Reload *reload.Runner `yaml:"-"`
	// MinSwapInterval is the least time between two swaps (and so between
	// two reloads of the consumer) of this folder; default
	// DefaultMinSwapInterval. Updates that come faster (an agent flapping
	// between two SVIDs) are coalesced: the newest wins and is swapped in
	// at most this long after the previous swap. See MinApplyInterval.
	MinSwapInterval time.Duration `yaml:"min_swap_interval"`
	// Logger defaults to slog.Default().
	Logger *slog.Logger `yaml:"-"`
	// Now defaults to time.Now; tests move the clock.
	Now func() time.Time `yaml:"-"`
}

// Folder is one credential folder. It implements rotation.Sink.
type Folder struct {
	cfg   Config
	names Names
	log   *slog.Logger

	// mu serialises Prepare and Apply: the swap reads and replaces shared
	// on-disk state.
	mu sync.Mutex

	stats writeStats

	// unmakeable and foreign (guarded by mu) are the stable names that
	// could not be made and the ".." entries that are not ours, each
	// logged once rather than on every rotation.
	unmakeable, foreign map[string]bool

	// root (guarded by mu) is the folder's directory, held from the first
	// Prepare (or from LockFolder) on; prepared says that its start-up
	// clean-up has run, and warned that its parents have been checked.
	root             *os.Root
	prepared, warned bool

	// hooks is nil outside tests: a per-Folder seam, so tests that fail or
	// race a swap can still run in parallel.
	hooks *hooks
}

var (
	_ rotation.Sink  = (*Folder)(nil)
	_ rotation.Paced = (*Folder)(nil)
)

// New applies defaults to cfg, validates it and returns the folder. It does
// not touch the disk; call Prepare before the first Apply.
func New(cfg Config) (*Folder, error) {
	cfg = cfg.WithDefaults()
	if err := cfg.Validate(); err != nil {
		return nil, fmt.Errorf("%w", err)
	}
	f := &Folder{
		cfg:        cfg,
		names:      cfg.names(),
		unmakeable: map[string]bool{},
		foreign:    map[string]bool{},
	}
	if cfg.Lock != nil {
		f.root = cfg.Lock.root
	}
	f.log = cfg.Logger.With("sink", f.Name())
	return f, nil
}

// WithDefaults fills every unset field with its default.
func (c Config) WithDefaults() Config {
	if c.Dir != "" {
		c.Dir = filepath.Clean(c.Dir)
	}
	c.Layout = cmp.Or(c.Layout, LayoutSPIFFEHelper)
	// An unknown layout keeps its names: validate refuses it.
	if n, err := c.names().WithDefaults(); err == nil {
		c.CertFileName, c.KeyFileName, c.BundleFileName = n.Cert, n.Key, n.Bundle
	}
	if c.Layout == LayoutSPIFFEHelper && c.FederatedBundle == "" {
		// The spiffe layout takes no federated_bundle at all.
		c.FederatedBundle = FederatedSeparate
	}
	if c.CertMode == 0 {
		c.CertMode = DefaultCertMode
	}
	if c.KeyMode == 0 {
		c.KeyMode = DefaultKeyMode
	}
	c.MinSwapInterval = cmp.Or(c.MinSwapInterval, DefaultMinSwapInterval)
	if c.Logger == nil {
		c.Logger = slog.Default()
	}
	if c.Now == nil {
		c.Now = time.Now
	}
	return c
}

// Validate checks a defaulted Config. It joins one *fielderr.Error per
// refused field, keyed as the YAML config's files[] entry spells it
// ("key_mode"), in the order the keys are documented.
func (c Config) Validate() error {
	var errs fielderr.List
	switch {
	case c.Dir == "":
		errs.Add("dir", "missing: an absolute path is needed")
	case !filepath.IsAbs(c.Dir):
		errs.Add("dir", "%q must be an absolute path", c.Dir)
	}
	switch c.Layout {
	case LayoutSPIFFEHelper:
		c.validateHelperLayout(&errs)
	case LayoutSPIFFE:
		c.validateSPIFFELayout(&errs)
	default:
		errs.Add("layout", "%q is not one of %s, %s", c.Layout, LayoutSPIFFEHelper, LayoutSPIFFE)
	}
	errs.FileMode("cert_mode", "certificate", c.CertMode, 0o002, "writable by every user")
	errs.FileMode("key_mode", "private key", c.KeyMode, 0o007, "readable, writable or executable by every user")
	if c.Owner != nil && (c.Owner.UID < 0 || c.Owner.GID < 0) {
		errs.Add("owner", "%d:%d: uid and gid must not be negative", c.Owner.UID, c.Owner.GID)
	}
	if err := rotation.CheckSVIDChoice(c.SVID); err != nil {
		errs.Add("svid", "%q: %v", c.SVID, err)
	}
	if c.MinSwapInterval < 0 || c.MinSwapInterval > MaxMinSwapInterval {
		errs.Add("min_swap_interval", "%s must be at most %s and not negative (unset is %s): a newer set waits up to this long for its swap",
			c.MinSwapInterval, MaxMinSwapInterval, DefaultMinSwapInterval)
	}
	return errs.Err()
}

// validateHelperLayout checks the spiffe-helper layout's file names and
// federation keys.
func (c Config) validateHelperLayout(errs *fielderr.List) {
	seen := map[string]string{}
	for _, n := range []struct{ key, value string }{
		{"cert_file_name", c.CertFileName},
		{"key_file_name", c.KeyFileName},
		{"bundle_file_name", c.BundleFileName},
	} {
		err := validFileName(n.value)
		switch {
		case err != nil:
			errs.Add(n.key, "%q %v", n.value, err)
		case n.value == MarkerFileName:
			errs.Add(n.key, "%q is already used by the generation marker", n.value)
		case seen[n.value] != "":
			errs.Clash(n.key, seen[n.value], fmt.Sprintf("%q is already used by", n.value), "")
		case c.IncludeFederatedDomains && n.value == FederatedDirName:
			errs.Add(n.key, "%q is reserved for federated bundles (include_federated_domains)", n.value)
		default:
			seen[n.value] = n.key
		}
	}
	switch c.FederatedBundle {
	case FederatedSeparate:
	case FederatedConcatenate:
		if !c.IncludeFederatedDomains {
			errs.Add("federated_bundle", "%q needs include_federated_domains: true", c.FederatedBundle)
		}
	default:
		errs.Add("federated_bundle", "%q is not one of %s, %s", c.FederatedBundle, FederatedSeparate, FederatedConcatenate)
	}
}

// validateSPIFFELayout refuses what the standard's layout fixes: its file
// names, and one file per trust domain with nothing else in it.
func (c Config) validateSPIFFELayout(errs *fielderr.List) {
	for _, n := range []struct{ key, value string }{
		{"cert_file_name", c.CertFileName},
		{"key_file_name", c.KeyFileName},
		{"bundle_file_name", c.BundleFileName},
	} {
		if n.value != "" {
			errs.Add(n.key, "%q: file names are fixed by the standard (layout %s); they apply only to layout %s", n.value, LayoutSPIFFE, LayoutSPIFFEHelper)
		}
	}
	if c.IncludeFederatedDomains {
		errs.Add("include_federated_domains", "true applies only to layout %s; layout %s always writes every trust domain", LayoutSPIFFEHelper, LayoutSPIFFE)
	}
	if c.FederatedBundle != "" {
		errs.Add("federated_bundle", "%q applies only to layout %s", c.FederatedBundle, LayoutSPIFFEHelper)
	}
	if c.AddIntermediatesToBundle {
		errs.Add("add_intermediates_to_bundle", "true applies only to layout %s", LayoutSPIFFEHelper)
	}
}

// Name identifies the sink in logs, readiness and metrics.
func (f *Folder) Name() string { return "files:" + f.cfg.Dir }

// SVIDChoice is the configured svid (hint or SPIFFE ID); "" means the
// default SVID. Readiness uses it to know which serial the folder must hold.
func (f *Folder) SVIDChoice() string { return f.cfg.SVID }

// MinApplyInterval implements rotation.Paced: the folder's
// MinSwapInterval.
func (f *Folder) MinApplyInterval() time.Duration { return f.cfg.MinSwapInterval }

// Dir is the folder's absolute path.
func (f *Folder) Dir() string { return f.cfg.Dir }

// InspectConfig is what Inspect needs to read this folder.
func (f *Folder) InspectConfig(minValidity time.Duration) InspectConfig {
	return f.cfg.InspectConfig(minValidity)
}

// InspectConfig is what Inspect needs to read the folder c (defaults
// applied) writes.
func (c Config) InspectConfig(minValidity time.Duration) InspectConfig {
	return InspectConfig{Dir: c.Dir, Names: c.names(), MinValidity: minValidity}
}

// names are the managed names of the folder c (defaults applied) writes.
func (c Config) names() Names {
	return Names{Layout: c.Layout, Cert: c.CertFileName, Key: c.KeyFileName, Bundle: c.BundleFileName}
}

// Apply writes u as a new generation, swaps it in and hands the reload
// actions their event, without waiting for them (Stats shows how they
// went). Material whose default leaf is expired or not yet valid is
// refused and the folder is left untouched. A write error is returned and
// no action runs. Once ..data names the new generation the set is in
// place: a stable name that cannot be made after that is logged, counted
// and returned marked ErrStableName (not swapped again), and the actions
// still run.
func (f *Folder) Apply(ctx context.Context, u *rotation.Update) error {
	f.mu.Lock()
	defer f.mu.Unlock()
	if u == nil {
		return errors.New("apply: nil update")
	}
	if err := ctx.Err(); err != nil {
		return fmt.Errorf("apply generation %d: %w", u.Generation, err)
	}
	now := f.cfg.Now()
	set, err := f.render(omitExpired(u, f.cfg.OmitExpired, now), now)
	if err != nil {
		f.stats.written(err)
		return err
	}
	genDir, err := f.swapInFolder(set, u.Generation, now)
	f.stats.written(err)
	if err != nil && !errors.Is(err, ErrStableName) {
		return err
	}
	f.log.Info("folder: swapped in new generation",
		"generation", u.Generation, "spiffe_id", set.marker.SPIFFEID,
		"serial", set.marker.Serial, "not_after", set.marker.NotAfter, "generation_dir", genDir)
	if f.cfg.Reload != nil {
		f.cfg.Reload.Submit(ctx, reload.Event{
			Kind:       reload.EventX509,
			Dir:        f.cfg.Dir,
			Generation: u.Generation,
			SPIFFEID:   set.marker.SPIFFEID,
			NotAfter:   set.marker.NotAfter,
		})
	}
	return err
}

// RerunActions runs every reload action again for the generation in place
// (the last one swapped in), with the same rules as after a swap: retries,
// and no server to reload is not a failure. It is what SIGHUP does. Before
// the first swap there is nothing to reload and it returns nil.
func (f *Folder) RerunActions(ctx context.Context) error {
	if f.cfg.Reload == nil {
		return nil
	}
	if err := f.cfg.Reload.Rerun(ctx); err != nil {
		return fmt.Errorf("%w: %w", ErrReloadAction, err)
	}
	return nil
}

// SignalledWithin reports whether one of the folder's signal actions sent
// its signal less than d ago (reload.Runner).
func (f *Folder) SignalledWithin(d time.Duration) bool {
	return f.cfg.Reload != nil && f.cfg.Reload.SignalledWithin(d)
}

// ErrReloadAction marks a RerunActions error: the generation is in place,
// but a consumer may not have picked it up.
var ErrReloadAction error = inPlaceError("generation swapped in, reload action failed")

// ErrStableName marks an Apply error that came after ..data was renamed
// onto the new generation: the set is in place, but a stable name (a
// directory planted at svid_bundle.pem) could not be made. Swapping the
// same set in again would only write another copy of the private key and
// fail the same way.
var ErrStableName error = inPlaceError("generation swapped in, a stable name could not be made")

// inPlaceError is an error after the set is in place: it wraps
// rotation.ErrUpdateInPlace, so rotation does not retry the Update.
type inPlaceError string

func (e inPlaceError) Error() string { return string(e) }
func (inPlaceError) Unwrap() error   { return rotation.ErrUpdateInPlace }

// swapInFolder opens the folder for one swap, after its start-up
// clean-up if that could not finish at start (a full or read-only disk):
// the failed Apply is then retried like any other.
func (f *Folder) swapInFolder(set *fileSet, generation uint64, now time.Time) (string, error) {
	root, err := f.openFolder()
	if err != nil {
		return "", err
	}
	if !f.prepared {
		if err := f.prepare(root, now); err != nil {
			return "", err
		}
	}
	return f.swap(root, set, generation, now)
}
