// The reader (read_*.go): a credential folder read as its consumer would
// read it, and whether the set in it is usable: the readiness check behind
// `wait`, `check`, the admin's /readyz and /status, and the start-up
// clean-up of Prepare. It only reads, and uses none of the writer's code
// (TestTheFolderReaderDoesNotUseTheWriter, in internal/bridge).

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
	// Names left empty are what the folder's marker says it was written
	// with, else LayoutSPIFFEHelper and its default names.
	Names
	// CheckSVID makes Inspect require the SVID the folder is configured
	// for: SVID (files[].svid, a hint or a SPIFFE ID), or when that is
	// empty DefaultSVIDHint (workload_api.default_svid_hint). A SPIFFE ID
	// is compared with the certificate; a hint with the marker, which
	// records the hint of the SVID written and the choice it was written
	// for.
	CheckSVID             bool
	SVID, DefaultSVIDHint string
	// MinValidity is how long the leaf must still be valid (0: not expired).
	MinValidity time.Duration
	// Now defaults to the current time.
	Now time.Time
}

// Material describes a usable set found by Inspect.
type Material struct {
	// Dir is the directory the set was read from: the generation directory
	// behind ..data, or the folder itself when there is no ..data.
	Dir        string
	SPIFFEID   spiffeid.ID
	Serial     string // hexadecimal, as in the marker
	NotBefore  time.Time
	NotAfter   time.Time
	Generation uint64 // from the marker; 0 if none describes this certificate
	// TrustDomains are the trust domains whose bundles are in the set.
	TrustDomains []spiffeid.TrustDomain
}

// Inspect reads the set in a credential folder — through ..data resolved
// once if present, else the plain files — and checks it as a consumer
// would. The error is a *MaterialError whose message is one line.
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
		// Consumers open the stable names, not ..data: a set that is
		// complete but not linked yet (or any more) is not ready for them.
		for _, name := range names.required(m.SPIFFEID.TrustDomain()) {
			if err := folder.stat(name); err != nil {
				return nil, &MaterialError{Reason: ErrMissing, Path: folder.join(name), Err: err,
					Detail: oneLine(fmt.Sprintf("missing file %s (%s has it; the link is missing or broken)", folder.join(name), filepath.Base(set.path)))}
			}
		}
	}
	return m, nil
}

// folderError says what is wrong with the folder itself: a folder that is
// not there is not "missing file …/svid.pem", which sends an operator
// looking for one file when nothing has written the folder at all.
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

// current is the generation directory ..data names, resolved once, or the
// folder itself when there is no ..data. Close it: it does not close d.
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

// readMarker is the marker in dir, nil if there is none or it cannot be
// read.
func readMarker(dir setDir) *marker {
	var m marker
	data, err := dir.read(MarkerFileName)
	if err != nil || json.Unmarshal(data, &m) != nil {
		return nil
	}
	return &m
}

// checkSVID tells a valid set of another identity from the configured
// one: after a config change, or a folder shared by mistake, a consumer
// must not start on it.
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
