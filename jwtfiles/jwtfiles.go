// Package jwtfiles writes JWT-SVIDs and JWT bundles from the SPIFFE
// Workload API to files, as spiffe-helper's jwt_svids and
// jwt_bundle_file_name do.
//
// It is not a rotation.Sink: X.509 updates carry no JWTs, and JWT-SVIDs are
// fetched per audience. Each token is fetched again when half of its
// lifetime is gone, by its own timer; a failed fetch is retried with backoff
// while the last good token stays. JWT bundles are watched as a stream.
// Each file is replaced atomically on its own, then the folder's JWT actions
// (on_rotate[].on: jwt) run.
package jwtfiles

import (
	"cmp"
	"context"
	"encoding/base64"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"time"

	"github.com/spiffe/go-spiffe/v2/bundle/jwtbundle"
	"github.com/spiffe/go-spiffe/v2/spiffeid"
	"github.com/spiffe/go-spiffe/v2/svid/jwtsvid"
	"github.com/spiffe/go-spiffe/v2/workloadapi"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	"github.com/sds-bridge/sds-bridge/filesink"
	"github.com/sds-bridge/sds-bridge/internal/fielderr"
	"github.com/sds-bridge/sds-bridge/reload"
)

// Defaults of Config and Folder.
const (
	DefaultMode       = os.FileMode(0o600)
	DefaultBundleMode = os.FileMode(0o600)
	DefaultMinRetry   = time.Second
	DefaultMaxRetry   = 30 * time.Second
)

// Config configures a Writer.
type Config struct {
	// Address is the Workload API address (unix:///path or tcp://host:port);
	// "" means $SPIFFE_ENDPOINT_SOCKET.
	Address string
	// DefaultSVIDHint picks the token among several SVIDs for a folder
	// without its own SVID choice: a hint or a SPIFFE ID. Empty: the first.
	DefaultSVIDHint string
	Folders         []Folder
	// MinRetry and MaxRetry bound the backoff after a failed fetch or
	// write; defaults 1s and 30s.
	MinRetry, MaxRetry time.Duration
	// Logger defaults to slog.Default().
	Logger *slog.Logger
}

// Folder is the JWT part of one credential folder. Dir, SVID and Owner are
// files[] keys of the folder's X.509 writer (filesink.Config), given to both.
type Folder struct {
	// Dir must exist when Run starts (the folder's X.509 writer makes it).
	Dir   string     `yaml:"-"`
	SVIDs []SVIDFile `yaml:"jwt_svids"`
	// BundleFileName, if set, gets every trust domain's JWT bundle.
	BundleFileName string `yaml:"jwt_bundle_file_name"`
	// SVID chooses the identity: a hint or a SPIFFE ID; empty means
	// Config.DefaultSVIDHint.
	SVID string `yaml:"-"`
	// Mode (tokens) and BundleMode default to 0600.
	Mode       os.FileMode     `yaml:"jwt_mode"`
	BundleMode os.FileMode     `yaml:"jwt_bundle_mode"`
	Owner      *filesink.Owner `yaml:"-"`
	// Reload runs the folder's jwt actions after each new file. It is the
	// X.509 writer's Runner too, so the two never reload a consumer at once.
	Reload *reload.Runner `yaml:"-"`
}

// WithDefaults fills the unset modes.
func (f Folder) WithDefaults() Folder {
	f.Mode = cmp.Or(f.Mode, DefaultMode)
	f.BundleMode = cmp.Or(f.BundleMode, DefaultBundleMode)
	return f
}

// Validate checks a defaulted Folder (a token is a bearer credential: no
// access for other users), joining a *fielderr.Error per refused field,
// keyed as in files[] ("jwt_svids[0].file_name").
func (f Folder) Validate() error {
	var errs fielderr.List
	names := map[string]string{}
	plain := func(key, name string) {
		if err := validFileName(name); err != nil {
			errs.Add(key, "%v", err)
			return
		}
		if other, dup := names[name]; dup {
			errs.Clash(key, other, fmt.Sprintf("%q is also", name), "")
		}
		names[name] = key
	}
	for i, s := range f.SVIDs {
		key := fmt.Sprintf("jwt_svids[%d]", i)
		if strings.TrimSpace(s.Audience) == "" {
			errs.Add(key+".audience", "missing: a JWT-SVID is always issued for an audience")
		}
		for n, a := range s.ExtraAudiences {
			if strings.TrimSpace(a) == "" {
				errs.Add(fmt.Sprintf("%s.extra_audiences[%d]", key, n), "empty audience")
			}
		}
		plain(key+".file_name", s.FileName)
	}
	if f.BundleFileName != "" {
		plain("jwt_bundle_file_name", f.BundleFileName)
	}
	errs.FileMode("jwt_mode", "token", f.Mode, 0o007, "readable, writable or executable by every user")
	errs.FileMode("jwt_bundle_mode", "JWT bundle", f.BundleMode, 0o002, "writable by every user")
	return errs.Err()
}

// validFileName keeps a token or bundle file a plain name in the folder.
// A name starting with "." is refused too: ".." names belong to the X.509
// swap, and a hidden credential file is one nobody finds.
func validFileName(name string) error {
	switch {
	case name == "":
		return errors.New("missing")
	case strings.ContainsRune(name, '/') || strings.HasPrefix(name, "."):
		return fmt.Errorf("%q must be a plain file name", name)
	}
	return nil
}

// SVIDFile is one token file.
type SVIDFile struct {
	Audience       string   `yaml:"audience"`
	ExtraAudiences []string `yaml:"extra_audiences"`
	FileName       string   `yaml:"file_name"`
}

// TokenStatus is one token file's last token and refresh, for /readyz.
type TokenStatus struct {
	Dir, FileName string
	Audience      string
	// All zero before the first token; IssuedAt is zero without iat.
	SPIFFEID      string
	Expiry        time.Time
	IssuedAt      time.Time
	FetchedAt     time.Time
	RefreshedAt   time.Time
	NextRefreshAt time.Time
	// Failures counts failed fetches or writes since start; LastError is
	// nil once an attempt succeeded.
	Failures    uint64
	LastError   error
	LastErrorAt time.Time
}

// Writer keeps the JWT files of its folders current.
type Writer struct {
	cfg Config
	log *slog.Logger
	// mu guards tokens, one per SVIDFile in config order.
	mu     sync.Mutex
	tokens []TokenStatus
}

// New checks cfg and applies defaults. Nothing is fetched until Run.
func New(cfg Config) (*Writer, error) {
	cfg.Logger = cmp.Or(cfg.Logger, slog.Default())
	if cfg.MinRetry <= 0 {
		cfg.MinRetry = DefaultMinRetry
	}
	if cfg.MaxRetry < cfg.MinRetry {
		cfg.MaxRetry = max(DefaultMaxRetry, cfg.MinRetry)
	}
	cfg.Folders = slices.Clone(cfg.Folders)
	for i := range cfg.Folders {
		f := cfg.Folders[i].WithDefaults()
		// Dir is the folder's key: its X.509 writer checks it for the config.
		if !filepath.IsAbs(f.Dir) {
			return nil, fmt.Errorf("folder %d: dir %q must be an absolute path", i, f.Dir)
		}
		if err := f.Validate(); err != nil {
			return nil, fmt.Errorf("folder %d (%s): %w", i, f.Dir, err)
		}
		cfg.Folders[i] = f
	}
	w := &Writer{cfg: cfg, log: cfg.Logger}
	for _, f := range cfg.Folders {
		for _, s := range f.SVIDs {
			w.tokens = append(w.tokens, TokenStatus{Dir: f.Dir, FileName: s.FileName, Audience: s.Audience})
		}
	}
	return w, nil
}

// Tokens reports every token file, in config order.
func (w *Writer) Tokens() []TokenStatus {
	w.mu.Lock()
	defer w.mu.Unlock()
	return slices.Clone(w.tokens)
}

// noteToken records one refresh of token i: svid written at now, or err.
func (w *Writer) noteToken(i int, svid *jwtsvid.SVID, fetched, now time.Time, err error, next time.Time) {
	w.mu.Lock()
	defer w.mu.Unlock()
	t := &w.tokens[i]
	t.NextRefreshAt = next
	if err != nil {
		t.Failures++
		t.LastError, t.LastErrorAt = err, now
		return
	}
	t.LastError, t.LastErrorAt = nil, time.Time{}
	t.SPIFFEID, t.Expiry, t.FetchedAt, t.RefreshedAt = svid.ID.String(), svid.Expiry, fetched, now
	t.IssuedAt = issuedAt(svid)
}

// issuedAt is svid's iat claim, zero without one.
func issuedAt(svid *jwtsvid.SVID) time.Time {
	if iat, ok := svid.Claims["iat"].(float64); ok {
		return time.Unix(int64(iat), 0)
	}
	return time.Time{}
}

func (w *Writer) bundleFolders() []*Folder {
	var out []*Folder
	for i := range w.cfg.Folders {
		if w.cfg.Folders[i].BundleFileName != "" {
			out = append(out, &w.cfg.Folders[i])
		}
	}
	return out
}

// Empty: nothing to write, so a caller can skip Run and its connection.
func (w *Writer) Empty() bool {
	return len(w.tokens) == 0 && len(w.bundleFolders()) == 0
}

// connect also removes temporary files a crash left, before any write.
func (w *Writer) connect(ctx context.Context) (*workloadapi.Client, error) {
	var opts []workloadapi.ClientOption
	if w.cfg.Address != "" {
		opts = append(opts, workloadapi.WithAddr(w.cfg.Address))
	}
	client, err := workloadapi.New(ctx, opts...)
	if err != nil {
		return nil, fmt.Errorf("workload API client: %w", err)
	}
	w.removeLeftovers()
	return client, nil
}

// Run fetches, writes and refreshes until ctx ends, then returns nil. Files
// already written stay: a token is valid until it expires.
func (w *Writer) Run(ctx context.Context) error {
	if w.Empty() {
		<-ctx.Done()
		return nil
	}
	client, err := w.connect(ctx)
	if err != nil {
		return err
	}
	defer client.Close()

	var wg sync.WaitGroup
	token := 0
	for i := range w.cfg.Folders {
		f := &w.cfg.Folders[i]
		for _, s := range f.SVIDs {
			index := token
			wg.Go(func() { w.runToken(ctx, client, f, s, index) })
			token++
		}
	}
	if len(w.bundleFolders()) > 0 {
		wg.Go(func() {
			err := client.WatchJWTBundles(ctx, &bundleWatcher{w: w, ctx: ctx})
			if err != nil && ctx.Err() == nil && !errors.Is(err, context.Canceled) {
				w.log.Error("JWT files: stopped watching JWT bundles", "error", err)
			}
		})
	}
	wg.Wait()
	return nil
}

// Once writes every file once, retrying with backoff until ctx ends (give
// it a deadline). It runs no actions: `run --once` writes the JWT files
// first, then the X.509 swap runs each folder's actions once.
func (w *Writer) Once(ctx context.Context) error {
	if w.Empty() {
		return nil
	}
	client, err := w.connect(ctx)
	if err != nil {
		return err
	}
	defer client.Close()
	for i := range w.cfg.Folders {
		f := &w.cfg.Folders[i]
		for _, s := range f.SVIDs {
			path := filepath.Join(f.Dir, s.FileName)
			err := w.retry(ctx, path, func() error {
				svid, err := w.writeToken(ctx, client, f, s, path)
				if err != nil {
					return err
				}
				w.log.Info("JWT files: wrote JWT-SVID", "file", path, "audience", s.Audience, "spiffe_id", svid.ID.String(), "expires", svid.Expiry)
				return nil
			})
			if err != nil {
				return err
			}
		}
	}
	folders := w.bundleFolders()
	if len(folders) == 0 {
		return nil
	}
	var data []byte
	if err := w.retry(ctx, "JWT bundles", func() error {
		set, err := client.FetchJWTBundles(ctx)
		if err != nil {
			return fmt.Errorf("fetch JWT bundles: %w", err)
		}
		data, err = marshalBundles(set)
		return err
	}); err != nil {
		return err
	}
	for _, f := range folders {
		path := filepath.Join(f.Dir, f.BundleFileName)
		if err := w.retry(ctx, path, func() error { return filesink.WriteFile(path, data, f.BundleMode, f.Owner) }); err != nil {
			return err
		}
		w.log.Info("JWT files: wrote JWT bundles", "file", path)
	}
	return nil
}

// retry runs op until it succeeds or ctx ends, then returning op's error.
func (w *Writer) retry(ctx context.Context, what string, op func() error) error {
	wait := w.cfg.MinRetry
	for {
		err := op()
		if err == nil {
			return nil
		}
		if ctx.Err() == nil {
			w.log.Warn("JWT files: retrying", "what", what, "error", err, "retry_in", wait)
		}
		select {
		case <-ctx.Done():
			return fmt.Errorf("%s: gave up (%v): %w", what, context.Cause(ctx), err)
		case <-time.After(wait):
		}
		wait = min(2*wait, w.cfg.MaxRetry)
	}
}

// removeLeftovers keeps filesink.WriteFile's temporary files from piling
// up across crashes; it removes no other names.
func (w *Writer) removeLeftovers() {
	for _, f := range w.cfg.Folders {
		names := []string{f.BundleFileName}
		for _, s := range f.SVIDs {
			names = append(names, s.FileName)
		}
		for _, name := range names {
			if name == "" {
				continue
			}
			removed, err := filesink.RemoveTemps(f.Dir, name)
			for _, tmp := range removed {
				w.log.Info("JWT files: removed a leftover temporary file", "file", filepath.Join(f.Dir, tmp))
			}
			if err != nil {
				w.log.Warn("JWT files: leftover temporary files not removed", "error", err)
			}
		}
	}
}

// runToken keeps one token file current; its status is w.tokens[index].
func (w *Writer) runToken(ctx context.Context, client *workloadapi.Client, f *Folder, s SVIDFile, index int) {
	path := filepath.Join(f.Dir, s.FileName)
	log := w.log.With("file", path, "audience", s.Audience)
	retry := w.cfg.MinRetry
	var last *jwtsvid.SVID
	timer := time.NewTimer(0)
	defer timer.Stop()
	for {
		select {
		case <-ctx.Done():
			return
		case <-timer.C:
		}
		fetched := time.Now()
		svid, err := w.writeToken(ctx, client, f, s, path)
		if err != nil {
			if ctx.Err() != nil {
				return
			}
			attrs := []any{"error", err, "retry_in", retry}
			if last != nil && time.Now().Before(last.Expiry) {
				attrs = append(attrs, "kept_token_expires", last.Expiry)
				log.Warn("JWT files: refreshing JWT-SVID failed; the file keeps the last token", attrs...)
			} else {
				log.Error("JWT files: no valid JWT-SVID", attrs...)
			}
			w.noteToken(index, nil, fetched, time.Now(), err, time.Now().Add(retry))
			timer.Reset(retry)
			retry = min(2*retry, w.cfg.MaxRetry)
			continue
		}
		retry = w.cfg.MinRetry
		last = svid
		next := refreshIn(svid, fetched)
		w.noteToken(index, svid, fetched, time.Now(), nil, time.Now().Add(next))
		log.Info("JWT files: wrote JWT-SVID", "spiffe_id", svid.ID.String(), "expires", svid.Expiry, "refresh_in", next.Round(time.Millisecond))
		w.runActions(ctx, f, reload.Event{Kind: reload.EventJWT, Dir: f.Dir, SPIFFEID: svid.ID.String(), NotAfter: svid.Expiry})
		timer.Reset(next)
	}
}

func (w *Writer) writeToken(ctx context.Context, client *workloadapi.Client, f *Folder, s SVIDFile, path string) (*jwtsvid.SVID, error) {
	svid, err := w.fetch(ctx, client, f, s)
	if err != nil {
		return nil, err
	}
	if err := filesink.WriteFile(path, []byte(svid.Marshal()), f.Mode, f.Owner); err != nil {
		return nil, err
	}
	return svid, nil
}

// fetch sends a SPIFFE ID choice as the subject; a hint picks among the
// tokens of every SVID.
func (w *Writer) fetch(ctx context.Context, client *workloadapi.Client, f *Folder, s SVIDFile) (*jwtsvid.SVID, error) {
	choice, fromFolder := f.SVID, true
	if choice == "" {
		choice, fromFolder = w.cfg.DefaultSVIDHint, false
	}
	params := jwtsvid.Params{Audience: s.Audience, ExtraAudiences: s.ExtraAudiences}
	if id, err := spiffeid.FromString(choice); err == nil {
		params.Subject = id
		svid, err := client.FetchJWTSVID(ctx, params)
		if err != nil {
			return nil, fmt.Errorf("fetch JWT-SVID for %s: %w", id, err)
		}
		return svid, nil
	}
	svids, err := client.FetchJWTSVIDs(ctx, params)
	if err != nil {
		return nil, fmt.Errorf("fetch JWT-SVID: %w", err)
	}
	if choice == "" {
		return svids[0], nil
	}
	for _, svid := range svids {
		if svid.Hint == choice {
			return svid, nil
		}
	}
	if !fromFolder {
		// As for X.509: a default hint that matches nothing falls back to
		// the first SVID; a folder's own choice never does.
		return svids[0], nil
	}
	return nil, fmt.Errorf("fetch JWT-SVID: no SVID with hint %q among %d", choice, len(svids))
}

// refreshIn is the time until half of the token's lifetime is gone,
// counted from its iat claim (or from when it was fetched).
func refreshIn(svid *jwtsvid.SVID, fetched time.Time) time.Duration {
	start := fetched
	if iat := issuedAt(svid); !iat.IsZero() && iat.Before(fetched) {
		start = iat
	}
	return max(time.Until(start.Add(svid.Expiry.Sub(start)/2)), 0)
}

type bundleWatcher struct {
	w    *Writer
	ctx  context.Context
	last []byte
}

func (b *bundleWatcher) OnJWTBundlesUpdate(set *jwtbundle.Set) {
	data, err := marshalBundles(set)
	if err != nil {
		b.w.log.Error("JWT files: JWT bundles not written", "error", err)
		return
	}
	if string(data) == string(b.last) {
		return
	}
	ok := true
	for _, f := range b.w.bundleFolders() {
		path := filepath.Join(f.Dir, f.BundleFileName)
		if err := filesink.WriteFile(path, data, f.BundleMode, f.Owner); err != nil {
			// The next update tries again; the file keeps the last bundles.
			b.w.log.Error("JWT files: JWT bundles not written", "file", path, "error", err)
			ok = false
			continue
		}
		b.w.log.Info("JWT files: wrote JWT bundles", "file", path, "trust_domains", set.Len())
		b.w.runActions(b.ctx, f, reload.Event{Kind: reload.EventJWT, Dir: f.Dir})
	}
	if ok {
		b.last = data
	}
}

func (b *bundleWatcher) OnJWTBundlesWatchError(err error) {
	if b.ctx.Err() == nil && status.Code(err) != codes.Canceled {
		b.w.log.Warn("JWT files: watching JWT bundles failed; retrying", "error", err)
	}
}

// marshalBundles writes as spiffe-helper does: JSON, trust domain name to
// the base64 (standard) of its JWKS.
func marshalBundles(set *jwtbundle.Set) ([]byte, error) {
	out := make(map[string]string, set.Len())
	for _, b := range set.Bundles() {
		jwks, err := b.Marshal()
		if err != nil {
			return nil, fmt.Errorf("marshal JWT bundle of %s: %w", b.TrustDomain(), err)
		}
		out[b.TrustDomain().Name()] = base64.StdEncoding.EncodeToString(jwks)
	}
	return json.Marshal(out)
}

// runActions waits for a run of the X.509 actions in progress (one Runner);
// the Runner logs a failure.
func (w *Writer) runActions(ctx context.Context, f *Folder, ev reload.Event) {
	if f.Reload != nil {
		_ = f.Reload.Run(ctx, ev)
	}
}
