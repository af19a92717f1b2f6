package filesink

import (
	"cmp"
	"crypto"
	"crypto/x509"
	"encoding/json"
	"encoding/pem"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"time"

	"github.com/spiffe/go-spiffe/v2/bundle/x509bundle"
	"github.com/spiffe/go-spiffe/v2/spiffeid"
	"github.com/spiffe/go-spiffe/v2/svid/x509svid"

	"github.com/sds-bridge/sds-bridge/internal/certcheck"
	"github.com/sds-bridge/sds-bridge/internal/oneline"
)

// Reason says what is wrong with the material in a credential folder.
type Reason int

// The reasons Inspect and Prepare tell apart.
const (
	ReasonMissing      Reason = iota + 1 // a file is not there
	ReasonMalformed                      // a file is not the PEM it should be
	ReasonNotYetValid                    // the leaf's NotBefore is in the future
	ReasonExpired                        // the leaf's NotAfter is in the past
	ReasonExpiringSoon                   // the leaf expires within MinValidity
	ReasonKeyMismatch                    // the key is not the leaf's
	ReasonUntrusted                      // the chain does not verify against the bundle
	ReasonUnreadable                     // a file is there but cannot be read (permissions)
	ReasonOtherSVID                      // a valid set, but not of the SVID the folder is configured for
)

// Sentinel errors, one per Reason: errors.Is(err, ErrExpired).
var (
	ErrMissing      = errors.New("missing file")
	ErrMalformed    = errors.New("malformed file")
	ErrNotYetValid  = errors.New("certificate not yet valid")
	ErrExpired      = errors.New("certificate expired")
	ErrExpiringSoon = errors.New("certificate expires too soon")
	ErrKeyMismatch  = errors.New("private key does not match certificate")
	ErrUntrusted    = errors.New("certificate chain does not verify against bundle")
	ErrUnreadable   = errors.New("file not readable")
	ErrOtherSVID    = errors.New("folder holds another SVID than configured")
)

func (r Reason) String() string {
	switch r {
	case ReasonMissing:
		return "missing"
	case ReasonMalformed:
		return "malformed"
	case ReasonNotYetValid:
		return "not-yet-valid"
	case ReasonExpired:
		return "expired"
	case ReasonExpiringSoon:
		return "expiring-soon"
	case ReasonKeyMismatch:
		return "key-mismatch"
	case ReasonUntrusted:
		return "untrusted"
	case ReasonUnreadable:
		return "unreadable"
	case ReasonOtherSVID:
		return "other-svid"
	}
	return fmt.Sprintf("Reason(%d)", int(r))
}

func (r Reason) sentinel() error {
	switch r {
	case ReasonMissing:
		return ErrMissing
	case ReasonMalformed:
		return ErrMalformed
	case ReasonNotYetValid:
		return ErrNotYetValid
	case ReasonExpired:
		return ErrExpired
	case ReasonExpiringSoon:
		return ErrExpiringSoon
	case ReasonKeyMismatch:
		return ErrKeyMismatch
	case ReasonUntrusted:
		return ErrUntrusted
	case ReasonUnreadable:
		return ErrUnreadable
	case ReasonOtherSVID:
		return ErrOtherSVID
	}
	return nil
}

// MaterialError is what Inspect returns when a folder is not usable. Its
// message is one line meant for an operator; Reason (or errors.Is with the
// sentinel errors) is meant for code.
type MaterialError struct {
	Reason Reason
	// Path is the file the problem was found in.
	Path string
	// Detail is the one-line description, naming the file.
	Detail string
	// Err is the underlying cause, if any.
	Err error
}

func (e *MaterialError) Error() string { return "filesink: " + e.Detail }

// Unwrap exposes both the Reason's sentinel and the cause.
func (e *MaterialError) Unwrap() []error {
	errs := []error{e.Reason.sentinel()}
	if e.Err != nil {
		errs = append(errs, e.Err)
	}
	return errs
}

// InspectConfig tells Inspect where and what to read.
type InspectConfig struct {
	Dir string
	// Layout and the file names of LayoutSPIFFEHelper: empty means what
	// the folder's marker says it was written with, else
	// LayoutSPIFFEHelper and the default names.
	Layout                                    Layout
	CertFileName, KeyFileName, BundleFileName string
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
	defer folder.close()
	set := folder
	if folder.root != nil {
		if target, err := folder.root.Readlink(DataLink); err == nil {
			if filepath.IsAbs(target) {
				set = openSetDir(nil, target, target)
			} else {
				set = openSetDir(folder.root, target, filepath.Join(cfg.Dir, target))
			}
			defer set.close()
		}
	}
	written := readMarkerIn(set)
	names, err := inspectNames(cfg, written)
	if err != nil {
		return nil, err
	}
	m, problems := checkSet(names, set, cfg.Now, cfg.MinValidity)
	if len(problems) > 0 {
		return nil, problems[0].err
	}
	if cfg.CheckSVID {
		if err := checkSVID(cfg, m, set, written); err != nil {
			return nil, err
		}
	}
	if set.path != cfg.Dir {
		// Consumers open the stable names, not ..data: a set that is
		// complete but not linked yet (or any more) is not ready for them.
		for _, name := range names.required(m) {
			path := filepath.Join(cfg.Dir, name)
			if _, err := folder.root.Stat(name); err != nil {
				return nil, &MaterialError{Reason: ReasonMissing, Path: path, Err: err,
					Detail: oneline.Of(fmt.Sprintf("missing file %s (%s has it; the link is missing or broken)", path, filepath.Base(set.path)))}
			}
		}
	}
	return m, nil
}

// inspectNames are the names Inspect reads: those given, else those the
// marker records, else the defaults. A marker's names are used only for
// the layout it was written with, and only if they are plain file names
// (the folder may be writable by its consumer).
func inspectNames(cfg InspectConfig, written *marker) (fileNames, error) {
	names := fileNames{layout: cfg.Layout, cert: cfg.CertFileName, key: cfg.KeyFileName, bundle: cfg.BundleFileName}
	if written != nil && (names.layout == "" || names.layout == written.Layout) {
		names.layout = cmp.Or(names.layout, written.Layout)
		if written.Layout == LayoutSPIFFEHelper {
			for _, n := range []struct {
				dst *string
				v   string
			}{{&names.cert, written.CertFileName}, {&names.key, written.KeyFileName}, {&names.bundle, written.BundleFileName}} {
				if *n.dst == "" && validFileName(n.v) == nil {
					*n.dst = n.v
				}
			}
		}
	}
	names.layout = cmp.Or(names.layout, LayoutSPIFFEHelper)
	switch names.layout {
	case LayoutSPIFFEHelper:
		names.cert = cmp.Or(names.cert, DefaultCertFileName)
		names.key = cmp.Or(names.key, DefaultKeyFileName)
		names.bundle = cmp.Or(names.bundle, DefaultBundleFileName)
	case LayoutSPIFFE:
	default:
		return fileNames{}, fmt.Errorf("filesink: layout %q: want %q or %q", names.layout, LayoutSPIFFEHelper, LayoutSPIFFE)
	}
	return names, nil
}

// checkSVID tells a valid set of another identity from the configured
// one: after a config change, or a folder shared by mistake, a consumer
// must not start on it.
func checkSVID(cfg InspectConfig, m *Material, set setDir, written *marker) error {
	path := set.join(MarkerFileName)
	if written != nil && written.Serial != m.Serial {
		written = nil // describes other files: says nothing about these
	}
	fail := func(format string, args ...any) error {
		return &MaterialError{Reason: ReasonOtherSVID, Path: path,
			Detail: oneline.Of(fmt.Sprintf("%s holds %s (serial %s), ", set.path, m.SPIFFEID, m.Serial) + fmt.Sprintf(format, args...))}
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

// setDir is a directory a set is read from: a handle that keeps every read
// inside it (nil if it could not be opened: err says why), and its path
// for messages.
type setDir struct {
	root *os.Root
	err  error
	path string
}

// openSetDir opens name inside parent, or the path name if parent is nil.
func openSetDir(parent *os.Root, name, path string) setDir {
	d := setDir{path: path}
	if parent == nil {
		d.root, d.err = os.OpenRoot(name)
	} else {
		d.root, d.err = parent.OpenRoot(name)
	}
	return d
}

func (d setDir) close() {
	if d.root != nil {
		d.root.Close()
	}
}

func (d setDir) join(name string) string { return filepath.Join(d.path, name) }

func (d setDir) read(name string) ([]byte, error) {
	if d.root == nil {
		return nil, d.err
	}
	return readBoundedIn(d.root, name)
}

func (d setDir) readDir(name string) []fs.DirEntry {
	if d.root == nil {
		return nil
	}
	sub, err := d.root.OpenRoot(name)
	if err != nil {
		return nil
	}
	defer sub.Close()
	entries, _ := readDirNames(sub)
	return entries
}

func (d setDir) stat(name string) error {
	if d.root == nil {
		return d.err
	}
	_, err := d.root.Stat(name)
	return err
}

// required are the stable names a consumer of the layout opens.
func (n fileNames) required(m *Material) []string {
	if n.layout == LayoutSPIFFE {
		return []string{CredentialFileName, trustBundleFile(m.SPIFFEID.TrustDomain())}
	}
	return []string{n.cert, n.key, n.bundle}
}

// problem is one finding of checkSet; remove lists the base names Prepare
// deletes because of it.
type problem struct {
	err    *MaterialError
	remove []string
}

// checkSet reads the set of files in dir and returns it, or every problem
// found, the one a consumer would hit first in front. Checks stop at the
// first problem of the certificate itself: an expired certificate is not
// also reported as unverifiable.
func checkSet(names fileNames, dir setDir, now time.Time, minValidity time.Duration) (*Material, []problem) {
	var (
		problems   []problem
		certPath   string
		certs      []*x509.Certificate
		key        crypto.PrivateKey
		keyPath    string
		pair       []string // files that hold the certificate and its key
		bundleFile func(spiffeid.TrustDomain) string
		bundles    = map[spiffeid.TrustDomain][]*x509.Certificate{}
	)
	add := func(r Reason, path, detail string, cause error, remove ...string) {
		problems = append(problems, problem{
			err:    &MaterialError{Reason: r, Path: path, Detail: oneline.Of(detail), Err: cause},
			remove: remove,
		})
	}
	readFile := func(name string) ([]byte, string, bool) {
		path := dir.join(name)
		data, err := dir.read(name)
		switch {
		case errors.Is(err, fs.ErrNotExist):
			add(ReasonMissing, path, "missing file "+path, err)
			return nil, path, false
		case errors.Is(err, errNotRegular), errors.Is(err, errTooLarge), errors.Is(err, errOutside):
			// A FIFO, device or huge file planted at a managed name.
			add(ReasonMalformed, path, fmt.Sprintf("cannot read %s: %v", path, err), err, name)
			return nil, path, false
		case err != nil:
			add(ReasonUnreadable, path, fmt.Sprintf("cannot read %s: %v", path, err), err)
			return nil, path, false
		}
		return data, path, true
	}

	switch names.layout {
	case LayoutSPIFFEHelper:
		pair = []string{names.cert, names.key}
		if data, path, ok := readFile(names.cert); ok {
			certPath = path
			c, err := parseCerts(data)
			if err != nil {
				add(ReasonMalformed, path, fmt.Sprintf("%s: cannot parse certificate chain: %v", path, err), err, pair...)
			} else {
				certs = c
			}
		}
		if data, path, ok := readFile(names.key); ok {
			keyPath = path
			k, err := parseKey(data)
			if err != nil {
				add(ReasonMalformed, path, fmt.Sprintf("%s: cannot parse private key: %v", path, err), err, pair...)
			} else {
				key = k
			}
		}
		bundlePath := dir.join(names.bundle)
		bundleFile = func(spiffeid.TrustDomain) string { return bundlePath }
		if data, path, ok := readFile(names.bundle); ok {
			roots, err := parseCerts(data)
			if err != nil {
				add(ReasonMalformed, path, fmt.Sprintf("%s: cannot parse bundle: %v", path, err), err, names.bundle)
			} else if len(certs) > 0 {
				if id, err := x509svid.IDFromCert(certs[0]); err == nil {
					bundles[id.TrustDomain()] = roots
				}
			}
		}
		// include_federated_domains: federated/<td>.pem. They only add to
		// Material.TrustDomains; the own trust domain's roots always come
		// from the bundle file.
		fedEntries := dir.readDir(FederatedDirName)
		for _, e := range fedEntries {
			base, ok := strings.CutSuffix(e.Name(), FederatedBundleSuffix)
			if !ok {
				continue
			}
			td, err := spiffeid.TrustDomainFromString(base)
			if err != nil || td.Name() != base {
				continue
			}
			path := dir.join(FederatedDirName + "/" + e.Name())
			data, err := dir.read(FederatedDirName + "/" + e.Name())
			if err != nil {
				continue
			}
			roots, err := parseCerts(data)
			if err != nil {
				add(ReasonMalformed, path, fmt.Sprintf("%s: cannot parse bundle: %v", path, err), err)
				continue
			}
			if _, own := bundles[td]; !own {
				bundles[td] = roots
			}
		}
	case LayoutSPIFFE:
		pair = []string{CredentialFileName}
		if data, path, ok := readFile(CredentialFileName); ok {
			certPath, keyPath = path, path
			c, k, err := parseCredential(data)
			if err != nil {
				add(ReasonMalformed, path, fmt.Sprintf("%s: cannot parse key and chain: %v", path, err), err, pair...)
			} else {
				certs, key = c, k
			}
		}
		bundleFile = func(td spiffeid.TrustDomain) string { return dir.join(trustBundleFile(td)) }
		entries := dir.readDir(".")
		for _, e := range entries {
			td, ok := trustDomainOfBundleFile(e.Name())
			if !ok {
				continue
			}
			path := dir.join(e.Name())
			data, err := dir.read(e.Name())
			if err != nil {
				// A dangling link is the same as no bundle for td.
				continue
			}
			roots, err := parseCerts(data)
			if err != nil {
				add(ReasonMalformed, path, fmt.Sprintf("%s: cannot parse bundle: %v", path, err), err, e.Name())
				continue
			}
			bundles[td] = roots
		}
	}

	if len(certs) == 0 {
		return nil, problems
	}
	leaf := certs[0]
	serial := leaf.SerialNumber.Text(16)
	id, err := x509svid.IDFromCert(leaf)
	if err != nil {
		add(ReasonMalformed, certPath, fmt.Sprintf("%s: certificate (serial %s) is not an X.509-SVID: %v", certPath, serial, err), err, pair...)
		return nil, problems
	}
	what := fmt.Sprintf("%s: certificate %s (serial %s)", certPath, id, serial)
	if err := certcheck.Window(leaf, now); err != nil {
		reason := ReasonExpired
		if errors.Is(err, certcheck.ErrNotYetValid) {
			reason = ReasonNotYetValid
		}
		add(reason, certPath, fmt.Sprintf("%s %v", what, err), nil, pair...)
		return nil, problems
	}
	if key != nil {
		if certcheck.KeyMatches(key, leaf) != nil {
			add(ReasonKeyMismatch, keyPath, fmt.Sprintf("%s: private key does not match certificate %s (serial %s) in %s", keyPath, id, serial, certPath), nil, pair...)
			return nil, problems
		}
	}
	td := id.TrustDomain()
	roots, haveBundle := bundles[td]
	if !haveBundle {
		path := bundleFile(td)
		if err := dir.stat(trustBundleFile(td)); names.layout == LayoutSPIFFE && errors.Is(err, fs.ErrNotExist) {
			add(ReasonMissing, path, "missing file "+path, err)
		}
		// Without the bundle the chain cannot be verified: at start-up that
		// is as bad as a chain that does not verify.
		add(ReasonUntrusted, certPath, fmt.Sprintf("%s cannot be verified: no usable bundle %s", what, path), nil, pair...)
		return nil, problems
	}
	bundle := x509bundle.FromX509Authorities(td, roots)
	if err := certcheck.Chain(certs, bundle, now); err != nil {
		add(ReasonUntrusted, certPath, fmt.Sprintf("%s: chain does not verify against bundle %s: %v", what, bundleFile(td), err), err, pair...)
		return nil, problems
	}
	if remaining := leaf.NotAfter.Sub(now); remaining < minValidity {
		add(ReasonExpiringSoon, certPath, fmt.Sprintf("%s valid for only %s more (until %s), less than the required %s",
			what, remaining.Round(time.Second), leaf.NotAfter.UTC().Format(time.RFC3339), minValidity), nil)
	}
	if len(problems) > 0 || key == nil {
		return nil, problems
	}
	m := &Material{
		Dir:        dir.path,
		SPIFFEID:   id,
		Serial:     serial,
		NotBefore:  leaf.NotBefore,
		NotAfter:   leaf.NotAfter,
		Generation: readGeneration(dir, serial),
	}
	for td := range bundles {
		m.TrustDomains = append(m.TrustDomains, td)
	}
	slices.SortFunc(m.TrustDomains, func(a, b spiffeid.TrustDomain) int { return strings.Compare(a.Name(), b.Name()) })
	return m, nil
}

// readGeneration trusts the marker only if it describes this certificate:
// a marker left beside files another tool rewrote would lie.
func readGeneration(dir setDir, serial string) uint64 {
	if m := readMarkerIn(dir); m != nil && m.Serial == serial {
		return m.Generation
	}
	return 0
}

// readMarkerIn is the folder's marker, nil if there is none or it cannot
// be read.
func readMarkerIn(dir setDir) *marker {
	data, err := dir.read(MarkerFileName)
	if err != nil {
		return nil
	}
	var m marker
	if err := json.Unmarshal(data, &m); err != nil {
		return nil
	}
	return &m
}

// readMarkerSVID is the svid choice a marker was written for ("" when
// none, or no readable marker).
func readMarkerSVID(dir setDir) string {
	if m := readMarkerIn(dir); m != nil {
		return m.SVID
	}
	return ""
}

// parseCerts parses a file of CERTIFICATE blocks only.
func parseCerts(data []byte) ([]*x509.Certificate, error) {
	blocks, err := decodePEM(data)
	if err != nil {
		return nil, err
	}
	certs := make([]*x509.Certificate, 0, len(blocks))
	for _, b := range blocks {
		if b.Type != "CERTIFICATE" {
			return nil, fmt.Errorf("unexpected PEM block %q", b.Type)
		}
		c, err := x509.ParseCertificate(b.Bytes)
		if err != nil {
			return nil, err
		}
		certs = append(certs, c)
	}
	return certs, nil
}

// parseKey parses a file holding exactly one private key.
func parseKey(data []byte) (crypto.PrivateKey, error) {
	blocks, err := decodePEM(data)
	if err != nil {
		return nil, err
	}
	if len(blocks) != 1 {
		return nil, fmt.Errorf("want one private key block, found %d blocks", len(blocks))
	}
	return parseKeyBlock(blocks[0])
}

// parseCredential parses the spiffe layout's key-and-chain file.
func parseCredential(data []byte) ([]*x509.Certificate, crypto.PrivateKey, error) {
	blocks, err := decodePEM(data)
	if err != nil {
		return nil, nil, err
	}
	var (
		certs []*x509.Certificate
		key   crypto.PrivateKey
	)
	for _, b := range blocks {
		if b.Type == "CERTIFICATE" {
			c, err := x509.ParseCertificate(b.Bytes)
			if err != nil {
				return nil, nil, err
			}
			certs = append(certs, c)
			continue
		}
		if key != nil {
			return nil, nil, errors.New("more than one private key")
		}
		if key, err = parseKeyBlock(b); err != nil {
			return nil, nil, err
		}
	}
	switch {
	case key == nil:
		return nil, nil, errors.New("no private key")
	case len(certs) == 0:
		return nil, nil, errors.New("no certificate")
	}
	return certs, key, nil
}

// parseKeyBlock accepts PKCS#8 (what we write) and the older PKCS#1 and
// SEC 1 encodings other tools may have left behind.
func parseKeyBlock(b *pem.Block) (crypto.PrivateKey, error) {
	switch b.Type {
	case "PRIVATE KEY":
		return x509.ParsePKCS8PrivateKey(b.Bytes)
	case "EC PRIVATE KEY":
		return x509.ParseECPrivateKey(b.Bytes)
	case "RSA PRIVATE KEY":
		return x509.ParsePKCS1PrivateKey(b.Bytes)
	}
	return nil, fmt.Errorf("unexpected PEM block %q", b.Type)
}
