// Package filesink is the credential folder: the writer mirrors every
// rotation.Update into a folder of PEM files, and the reader (Inspect,
// Wait) reads a folder as its consumer does.
//
// A folder is swapped as a set, as Kubernetes' AtomicWriter does: a fsynced
// generation directory, then "..data" renamed onto it; consumers open
// links into "..data". One that needs a matching set across a swap
// resolves "..data" once: the previous generation stays until the next.
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

const (
	DefaultCertMode = os.FileMode(0o644)
	DefaultKeyMode  = os.FileMode(0o600)

	// LockFileName makes a folder belong to one running bridge (LockFolder).
	LockFileName = "..sds-bridge.lock"

	// DefaultMinSwapInterval reloads a consumer at most once a second,
	// whatever the agent sends; SPIRE rotates every few minutes at most.
	DefaultMinSwapInterval = time.Second
	// MaxMinSwapInterval: a new set must never wait long for its swap.
	MaxMinSwapInterval = time.Minute

	generationDirMode = os.FileMode(0o755)
	folderMode        = os.FileMode(0o755)
)

// FederatedMode says how LayoutSPIFFEHelper delivers federated bundles.
type FederatedMode string

const (
	FederatedSeparate    FederatedMode = "separate" // federated/<td>.pem only
	FederatedConcatenate FederatedMode = "concatenate"
)

// Config describes one credential folder; configs/sds-bridge.example.yaml
// documents its keys.
type Config struct {
	// Dir is absolute; it is created (0755) if missing.
	Dir string `yaml:"dir"`
	// Lock, if set, is the very directory written (else the one found at
	// the first Prepare); the caller releases it.
	Lock *FolderLock `yaml:"-"`
	// AllowWorldWritableDir: otherwise anyone could plant links at the
	// names consumers open, so such a folder is refused.
	AllowWorldWritableDir bool   `yaml:"allow_world_writable_dir"`
	Layout                Layout `yaml:"layout"`
	// The file names of LayoutSPIFFEHelper; empty for LayoutSPIFFE.
	CertFileName   string `yaml:"cert_file_name"`
	KeyFileName    string `yaml:"key_file_name"`
	BundleFileName string `yaml:"bundle_file_name"`
	// SVID is a hint or SPIFFE ID, "" the default SVID: an Update without
	// it is refused rather than write another identity.
	SVID                    string `yaml:"svid"`
	IncludeFederatedDomains bool   `yaml:"include_federated_domains"`
	// FederatedConcatenate is dangerous: a consumer that does not check
	// SPIFFE IDs then accepts any federated CA's certificate for any name.
	FederatedBundle          FederatedMode `yaml:"federated_bundle"`
	AddIntermediatesToBundle bool          `yaml:"add_intermediates_to_bundle"`
	OmitExpired              bool          `yaml:"omit_expired"`
	// KeyMode is for the files holding the key, CertMode for the rest.
	CertMode os.FileMode `yaml:"cert_mode"`
	KeyMode  os.FileMode `yaml:"key_mode"`
	// Owner is chowned onto files and generation directories.
	Owner *Owner `yaml:"owner"`
	// Reload gets an EventX509 once a swap is durable. The JWT writer
	// shares it, so the two never reload a consumer at once.
	Reload *reload.Runner `yaml:"-"`
	// MinSwapInterval paces swaps (and so reloads): faster Updates are
	// coalesced, the newest wins (rotation.Paced).
	MinSwapInterval time.Duration    `yaml:"min_swap_interval"`
	Logger          *slog.Logger     `yaml:"-"`
	Now             func() time.Time `yaml:"-"`
}

// Folder is one credential folder. It implements rotation.Sink.
type Folder struct {
	cfg   Config
	names Names
	log   *slog.Logger

	// statsMu is not mu: Stats answers while an Apply holds mu.
	statsMu sync.Mutex
	writes  Stats // WriteFailures and LastWriteErr
	// hooks is nil outside tests; per Folder, so such tests run in parallel.
	hooks *hooks

	// mu serialises Prepare and Apply and guards the fields below it.
	mu sync.Mutex
	// unmakeable stable names and foreign ".." entries, each logged once.
	unmakeable, foreign map[string]bool
	root                *os.Root // held from LockFolder or the first Prepare on
	prepared, warned    bool
}

var (
	_ rotation.Sink  = (*Folder)(nil)
	_ rotation.Paced = (*Folder)(nil)
)

// New defaults and validates cfg; Prepare comes before the first Apply.
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
	c.CertMode = cmp.Or(c.CertMode, DefaultCertMode)
	c.KeyMode = cmp.Or(c.KeyMode, DefaultKeyMode)
	c.MinSwapInterval = cmp.Or(c.MinSwapInterval, DefaultMinSwapInterval)
	c.Logger = cmp.Or(c.Logger, slog.Default())
	if c.Now == nil {
		c.Now = time.Now
	}
	return c
}

// Validate checks a defaulted Config: one *fielderr.Error per refused
// field, keyed as files[] spells it, in the order the keys are documented.
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

// fileNames are the configurable file names, keyed as files[] spells them.
func (c Config) fileNames() []struct{ key, value string } {
	return []struct{ key, value string }{
		{"cert_file_name", c.CertFileName},
		{"key_file_name", c.KeyFileName},
		{"bundle_file_name", c.BundleFileName},
	}
}

func (c Config) validateHelperLayout(errs *fielderr.List) {
	seen := map[string]string{}
	for _, n := range c.fileNames() {
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

// validateSPIFFELayout refuses what the standard fixes: its file names,
// and one file per trust domain with nothing else in it.
func (c Config) validateSPIFFELayout(errs *fielderr.List) {
	for _, n := range c.fileNames() {
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

// SVIDChoice is the configured svid; "" means the default SVID.
func (f *Folder) SVIDChoice() string { return f.cfg.SVID }

// MinApplyInterval implements rotation.Paced.
func (f *Folder) MinApplyInterval() time.Duration { return f.cfg.MinSwapInterval }

// Dir is the folder's absolute path.
func (f *Folder) Dir() string { return f.cfg.Dir }

// InspectConfig is what Inspect needs to read this folder.
func (f *Folder) InspectConfig(minValidity time.Duration) InspectConfig {
	return f.cfg.InspectConfig(minValidity)
}

// InspectConfig is what Inspect needs to read the folder c (defaulted) writes.
func (c Config) InspectConfig(minValidity time.Duration) InspectConfig {
	return InspectConfig{Dir: c.Dir, Names: c.names(), MinValidity: minValidity}
}

func (c Config) names() Names {
	return Names{Layout: c.Layout, Cert: c.CertFileName, Key: c.KeyFileName, Bundle: c.BundleFileName}
}

// Apply writes u as a new generation, swaps it in and hands the reload
// actions their event. A failure before ..data names it runs no action; a
// stable name that cannot be made after is marked ErrStableName.
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
		f.written(err)
		return err
	}
	genDir, err := f.swapInFolder(set, u.Generation, now)
	f.written(err)
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

// RerunActions runs every reload action again for the generation in place,
// as after a swap (SIGHUP); before the first swap it does nothing.
func (f *Folder) RerunActions(ctx context.Context) error {
	if f.cfg.Reload == nil {
		return nil
	}
	if err := f.cfg.Reload.Rerun(ctx); err != nil {
		return fmt.Errorf("%w: %w", ErrReloadAction, err)
	}
	return nil
}

// SignalledWithin reports whether a signal action of the folder's fired
// less than d ago.
func (f *Folder) SignalledWithin(d time.Duration) bool {
	return f.cfg.Reload != nil && f.cfg.Reload.SignalledWithin(d)
}

// ErrReloadAction marks a RerunActions error: the generation is in place,
// but a consumer may not have picked it up.
var ErrReloadAction error = inPlaceError("generation swapped in, reload action failed")

// ErrStableName: swapping the set in again would only write another copy
// of the key and fail the same way (a directory planted at the name).
var ErrStableName error = inPlaceError("generation swapped in, a stable name could not be made")

// inPlaceError wraps rotation.ErrUpdateInPlace: rotation does not retry.
type inPlaceError string

func (e inPlaceError) Error() string { return string(e) }
func (inPlaceError) Unwrap() error   { return rotation.ErrUpdateInPlace }

// swapInFolder runs the start-up clean-up first if it could not finish at
// start (a full disk): a failure is then retried as any failed Apply.
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

// Stats are a folder's counters and its reload actions' last results.
type Stats struct {
	WriteFailures uint64 // Applies that left the folder as it was
	LastWriteErr  error  // nil after a successful swap
	Actions       []reload.ActionStats
	// ReloadPending is the generation whose actions wait for a run in
	// progress (a hung consumer); 0 when none waits.
	ReloadPending uint64
}

func (f *Folder) written(err error) {
	f.statsMu.Lock()
	defer f.statsMu.Unlock()
	f.writes.LastWriteErr = err
	if err != nil {
		f.writes.WriteFailures++
	}
}

// Stats returns the folder's counters and last action results.
func (f *Folder) Stats() Stats {
	f.statsMu.Lock()
	s := f.writes
	f.statsMu.Unlock()
	if f.cfg.Reload != nil {
		s.Actions = f.cfg.Reload.Stats()
		s.ReloadPending = f.cfg.Reload.Pending()
	}
	return s
}
