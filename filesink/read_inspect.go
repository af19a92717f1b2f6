// The reader (read_*.go): a folder read as its consumer reads it, behind
// `wait`, `check`, /readyz, /status and Prepare. It uses none of the
// writer's code (TestTheFolderReaderDoesNotUseTheWriter).

package filesink

import (
	"cmp"
	"encoding/json"
	"errors"
	"fmt"
	"io/fs"
	"path/filepath"
	"syscall"
	"time"

	"github.com/spiffe/go-spiffe/v2/spiffeid"
)

// InspectConfig tells Inspect where and what to read.
type InspectConfig struct {
	Dir string
	// Names left empty are the marker's, else the defaults.
	Names
	// CheckSVID requires SVID, or if empty DefaultSVIDHint: a SPIFFE ID is
	// compared with the certificate, a hint with the marker's.
	CheckSVID             bool
	SVID, DefaultSVIDHint string
	MinValidity           time.Duration // how long the leaf must still be valid
	Now                   time.Time     // default: time.Now()
}

// Material describes a usable set found by Inspect.
type Material struct {
	Dir          string // the generation behind ..data, else the folder
	SPIFFEID     spiffeid.ID
	Serial       string // hexadecimal, as in the marker
	NotBefore    time.Time
	NotAfter     time.Time
	Generation   uint64                 // from the marker; 0 if none describes this certificate
	TrustDomains []spiffeid.TrustDomain // whose bundles are in the set
}

// Inspect checks the set in a folder (through ..data, resolved once) as a
// consumer would. The error is a *MaterialError.
func Inspect(cfg InspectConfig) (*Material, error) {
	if cfg.Now.IsZero() {
		cfg.Now = time.Now()
	}
	folder := openSetDir(nil, cfg.Dir, cfg.Dir)
	defer folder.Close()
	if folder.err != nil {
		return nil, folderError(cfg.Dir, folder.err)
	}
	set := folder.current()
	defer set.Close()
	written := readMarker(set)
	names, err := written.fill(cfg.Names).WithDefaults()
	if err != nil {
		return nil, fmt.Errorf("%w", err)
	}
	m, findings := checkSet(names, set, written, cfg.Now, cfg.MinValidity)
	if len(findings) > 0 {
		return nil, findings[0].Err
	}
	if cfg.CheckSVID {
		if err := checkSVID(cfg, m, set, written); err != nil {
			return nil, err
		}
	}
	if set.path != folder.path {
		// Consumers open the stable names: a set not linked is not ready.
		for _, name := range names.required(m.SPIFFEID.TrustDomain()) {
			if err := folder.stat(name); err != nil {
				return nil, &MaterialError{Reason: ErrMissing, Path: folder.join(name), Err: err,
					Detail: oneLine(fmt.Sprintf("missing file %s (%s has it; the link is missing or broken)", folder.join(name), filepath.Base(set.path)))}
			}
		}
	}
	return m, nil
}

// folderError names the folder, not "missing file …/svid.pem", when the
// folder itself cannot be read.
func folderError(dir string, err error) *MaterialError {
	e := &MaterialError{Reason: ErrMissing, Path: dir, Err: err}
	switch {
	case errors.Is(err, fs.ErrNotExist):
		e.Detail = "the directory " + dir + " does not exist"
	case errors.Is(err, syscall.ENOTDIR):
		e.Detail = dir + " is not a directory"
	default:
		e.Reason = ErrUnreadable
		e.Detail = oneLine("the directory " + dir + " cannot be opened: " + err.Error())
	}
	return e
}

// current is the generation ..data names, else d itself. Close it; it
// does not close d.
func (d setDir) current() setDir {
	if d.root == nil {
		return setDir{path: d.path, err: d.err}
	}
	target, err := d.root.Readlink(DataLink)
	switch {
	case err != nil:
		return setDir{root: d.root, path: d.path, borrowed: true}
	case filepath.IsAbs(target):
		return openSetDir(nil, target, target)
	}
	return openSetDir(d.root, target, filepath.Join(d.path, target))
}

// readMarker is the marker in dir, nil if it cannot be read.
func readMarker(dir setDir) *marker {
	var m marker
	data, err := dir.read(MarkerFileName)
	if err != nil || json.Unmarshal(data, &m) != nil {
		return nil
	}
	return &m
}

// checkSVID refuses a valid set of another identity than configured (a
// config change, a folder shared by mistake).
func checkSVID(cfg InspectConfig, m *Material, set setDir, written *marker) *MaterialError {
	path := set.join(MarkerFileName)
	if written != nil && written.Serial != m.Serial {
		written = nil // describes other files: says nothing about these
	}
	fail := func(format string, args ...any) *MaterialError {
		return &MaterialError{Reason: ErrOtherSVID, Path: path,
			Detail: oneLine(fmt.Sprintf("%s holds %s (serial %s), ", set.path, m.SPIFFEID, m.Serial) + fmt.Sprintf(format, args...))}
	}
	if written != nil && written.SVID != cfg.SVID {
		return fail("written for svid %q, but the folder is configured for svid %q", written.SVID, cfg.SVID)
	}
	want := cmp.Or(cfg.SVID, cfg.DefaultSVIDHint)
	if want == "" || want == m.SPIFFEID.String() {
		return nil
	}
	if written != nil && written.Hint == want {
		return nil
	}
	key := "svid"
	if cfg.SVID == "" {
		key = "workload_api.default_svid_hint"
	}
	if _, err := spiffeid.FromString(want); err == nil {
		return fail("not the configured %s %s", key, want)
	}
	if written == nil {
		return fail("and no marker (%s) for it tells its hint: cannot tell it is the configured %s %q", MarkerFileName, key, want)
	}
	return fail("whose hint is %q, not the configured %s %q", written.Hint, key, want)
}
