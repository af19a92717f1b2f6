// Package config reads the sds-bridge YAML configuration in three pure
// steps — Parse, (Config).Default, (Config).Validate — so that every error
// names the key and the value that caused it.
package config

import (
	"bytes"
	"errors"
	"fmt"
	"io"
	"net"
	"net/url"
	"os"
	"path"
	"path/filepath"
	"regexp"
	"slices"
	"strconv"
	"strings"
	"syscall"
	"time"

	"github.com/spiffe/go-spiffe/v2/spiffeid"
	"go.yaml.in/yaml/v3"

	"github.com/sds-bridge/sds-bridge/sds"
	"github.com/sds-bridge/sds-bridge/supervise"
)

// Defaults every key falls back to; the README lists them.
const (
	DefaultSDSSocket          = "/run/sds-bridge/sds.sock"
	DefaultSocketMode         = Mode(0o600)
	DefaultSVIDName           = sds.DefaultSVIDName
	DefaultBundleName         = sds.DefaultBundleName
	DefaultAllBundlesName     = sds.DefaultAllBundlesName
	DefaultFirstUpdateTimeout = Duration(60 * time.Second)
	DefaultLayout             = "spiffe-helper"
	DefaultCertMode           = Mode(0o644)
	DefaultKeyMode            = Mode(0o600)
	DefaultCertFileName       = "svid.pem"
	DefaultKeyFileName        = "svid_key.pem"
	DefaultBundleFileName     = "svid_bundle.pem"
	DefaultActionTimeout      = Duration(30 * time.Second)
	DefaultPostgresTimeout    = Duration(10 * time.Second)
	DefaultAdminListen        = "127.0.0.1:8081"
	DefaultLivenessPath       = "/livez"
	DefaultReadinessPath      = "/readyz"
	DefaultMinValidityPercent = 10
	DefaultJWTMode            = Mode(0o600)
	DefaultJWTBundleMode      = Mode(0o600)
	DefaultRenewSignal        = "SIGHUP"
	DefaultRestart            = string(supervise.RestartNever)
)

// Config is the whole file. Field comments give the YAML key.
type Config struct {
	WorkloadAPI WorkloadAPI `yaml:"workload_api"`
	SDS         SDS         `yaml:"sds"`
	Files       []Folder    `yaml:"files"`
	Admin       Admin       `yaml:"admin"`
	// Supervise runs the consumer as the bridge's child; off without a
	// command.
	Supervise Supervise `yaml:"supervise"`
}

// Supervise is the program the bridge starts once every folder holds a
// complete set, signals after each swap, and whose exit it exits with.
type Supervise struct {
	// Command is the program and its arguments (no shell).
	Command []string `yaml:"command"`
	// RenewSignal is sent after each swap; default SIGHUP, "none" for no
	// signal.
	RenewSignal string `yaml:"renew_signal"`
	// Restart is never (the default) or on-failure.
	Restart string `yaml:"restart"`
}

// On reports whether a program is supervised.
func (s Supervise) On() bool { return len(s.Command) > 0 }

// Signal is RenewSignal parsed; 0 for "none".
func (s Supervise) Signal() (syscall.Signal, error) {
	if strings.EqualFold(s.RenewSignal, "none") {
		return 0, nil
	}
	return ParseSignal(s.RenewSignal)
}

// WorkloadAPI is where SVIDs come from.
type WorkloadAPI struct {
	Address            string   `yaml:"address"`
	FirstUpdateTimeout Duration `yaml:"first_update_timeout"`
	// DefaultSVIDHint picks the default SVID among several: a Workload API
	// hint or a SPIFFE ID.
	DefaultSVIDHint string `yaml:"default_svid_hint"`
}

// SDS is the Envoy-facing server.
type SDS struct {
	// Enabled is a pointer so that an absent key means "on".
	Enabled                     *bool  `yaml:"enabled"`
	Socket                      string `yaml:"socket"`
	SocketMode                  Mode   `yaml:"socket_mode"`
	DefaultSVIDName             string `yaml:"default_svid_name"`
	DefaultBundleName           string `yaml:"default_bundle_name"`
	DefaultAllBundlesName       string `yaml:"default_all_bundles_name"`
	DisableSPIFFECertValidation bool   `yaml:"disable_spiffe_cert_validation"`
	// AllowedUIDs and AllowedGIDs are the peers (uid, or primary gid) that
	// may fetch secrets; both empty means the bridge's own uid and root.
	AllowedUIDs []int `yaml:"allowed_uids"`
	AllowedGIDs []int `yaml:"allowed_gids"`
	// MaxConnections caps the SDS connections open at once (refused
	// peers get an eighth of it); 0 or absent is the SDS server's default.
	MaxConnections int `yaml:"max_connections"`
}

// On reports whether the SDS server runs.
func (s SDS) On() bool { return s.Enabled == nil || *s.Enabled }

// Names are the secret names this section makes the SDS server serve; the
// section must be defaulted (Load does that).
func (s SDS) Names() sds.Names {
	return sds.Names{
		DefaultSVID:                 s.DefaultSVIDName,
		DefaultBundle:               s.DefaultBundleName,
		AllBundles:                  s.DefaultAllBundlesName,
		DisableSPIFFECertValidation: s.DisableSPIFFECertValidation,
	}
}

// Folder is one credential folder.
type Folder struct {
	Dir            string   `yaml:"dir"`
	Layout         string   `yaml:"layout"`
	CertFileName   string   `yaml:"cert_file_name"`
	KeyFileName    string   `yaml:"key_file_name"`
	BundleFileName string   `yaml:"bundle_file_name"`
	CertMode       Mode     `yaml:"cert_mode"`
	KeyMode        Mode     `yaml:"key_mode"`
	Owner          string   `yaml:"owner"`
	OnRotate       []Action `yaml:"on_rotate"`
	// AllowWorldWritableDir accepts a dir every user may write to; by
	// default such a folder is refused.
	AllowWorldWritableDir bool `yaml:"allow_world_writable_dir"`
	// SVID chooses this folder's SVID (a hint or a SPIFFE ID); empty is
	// the default SVID.
	SVID string `yaml:"svid"`
	// IncludeFederatedDomains, FederatedBundle and AddIntermediatesToBundle
	// shape the spiffe-helper layout's bundles (filesink.Config).
	IncludeFederatedDomains  bool   `yaml:"include_federated_domains"`
	FederatedBundle          string `yaml:"federated_bundle"`
	AddIntermediatesToBundle bool   `yaml:"add_intermediates_to_bundle"`
	// JWTSVIDs are JWT-SVIDs written into Dir, each refreshed before half
	// its lifetime is gone; JWTBundleFileName gets the JWT bundles of every
	// trust domain (package jwtfiles). They are written one file at a time,
	// outside the X.509 generation swap.
	JWTSVIDs          []JWTSVID `yaml:"jwt_svids"`
	JWTBundleFileName string    `yaml:"jwt_bundle_file_name"`
	JWTMode           Mode      `yaml:"jwt_mode"`
	JWTBundleMode     Mode      `yaml:"jwt_bundle_mode"`
}

// JWTSVID is one JWT-SVID file: a token for Audience (and ExtraAudiences).
type JWTSVID struct {
	Audience       string   `yaml:"audience"`
	ExtraAudiences []string `yaml:"extra_audiences"`
	FileName       string   `yaml:"file_name"`
}

// Action is one reload action; exactly one of Signal, Exec and Postgres is
// set.
type Action struct {
	Signal   *SignalAction   `yaml:"signal"`
	Exec     *ExecAction     `yaml:"exec"`
	Postgres *PostgresAction `yaml:"postgres"`
	// On lists the events that run the action: EventX509 (a new X.509
	// set swapped in) and EventJWT (a JWT-SVID or the JWT bundles
	// rewritten); default [x509], as most consumers (PostgreSQL, nginx)
	// read no JWT.
	On []string `yaml:"on"`
}

// The events of on_rotate[].on.
const (
	EventX509 = "x509"
	EventJWT  = "jwt"
)

// Events are the values on_rotate[].on takes.
var Events = []string{EventX509, EventJWT}

// RunsOn reports whether event (EventX509 or EventJWT) runs the action; an
// action without on (before Default) runs on EventX509 only.
func (a Action) RunsOn(event string) bool {
	if len(a.On) == 0 {
		return event == EventX509
	}
	return slices.Contains(a.On, event)
}

// SignalAction signals the process whose pid is on the first line of PIDFile.
type SignalAction struct {
	PIDFile string `yaml:"pid_file"`
	Signal  string `yaml:"signal"`
}

// ExecAction runs Command (argv, no shell) with a time limit.
type ExecAction struct {
	Command []string `yaml:"command"`
	Timeout Duration `yaml:"timeout"`
}

// PostgresAction runs SELECT pg_reload_conf() over a connection to DSN.
// The DSN may hold a password: errors about it never repeat its value.
type PostgresAction struct {
	DSN     string   `yaml:"dsn"`
	Timeout Duration `yaml:"timeout"`
}

// Admin is the health, metrics and status HTTP listener.
type Admin struct {
	// Listen is a pointer so that an absent key means the default
	// (loopback) and an explicit "" turns the listener off.
	Listen *string `yaml:"listen"`
	// MinValidity: /readyz fails when the current SVID, or the leaf in a
	// credential folder, expires sooner than this.
	MinValidity Duration `yaml:"min_validity"`
	// MinValidityPercent: /readyz fails when an SVID has less than this
	// percentage of its lifetime left (SPIRE rotates at 50%, so getting
	// here means rotation is stuck). A pointer: absent means 10, 0 is off.
	MinValidityPercent *int `yaml:"min_validity_percent"`
	// RequireSDSAck: /readyz also waits for at least one SDS client to
	// acknowledge the current generation.
	RequireSDSAck bool `yaml:"require_sds_ack"`
	// MaxConnections caps the admin connections open at once; 0 or
	// absent is the admin server's default.
	MaxConnections int `yaml:"max_connections"`
	// LivenessPath and ReadinessPath are where /livez and /readyz are
	// served, so that probes written for another tool (spiffe-helper
	// serves /live and /ready) keep working unchanged.
	LivenessPath  string `yaml:"liveness_path"`
	ReadinessPath string `yaml:"readiness_path"`
}

// reservedAdminPaths are the admin paths that cannot be moved.
var reservedAdminPaths = []string{"/", "/metrics", "/status"}

// Address is where the admin listener listens; "" when it is off.
func (a Admin) Address() string {
	if a.Listen == nil {
		return DefaultAdminListen
	}
	return *a.Listen
}

// Load reads, defaults and validates the file at path.
func Load(path string) (*Config, error) {
	c, err := Read(path)
	if err != nil {
		return nil, err
	}
	c.Default()
	if err := c.Validate(); err != nil {
		return nil, fmt.Errorf("config %s: %w", path, err)
	}
	return c, nil
}

// Read parses the file at path without defaulting or validating it, for
// callers that lay flags over the file first.
func Read(path string) (*Config, error) {
	f, err := os.Open(path)
	if err != nil {
		return nil, fmt.Errorf("config: %w", err)
	}
	defer f.Close()
	c, err := Parse(f)
	if err != nil {
		return nil, fmt.Errorf("config %s: %w", path, err)
	}
	return c, nil
}

// Parse decodes YAML strictly: unknown keys and wrong types are errors.
func Parse(r io.Reader) (*Config, error) {
	data, err := io.ReadAll(r)
	if err != nil {
		return nil, err
	}
	c := &Config{}
	if len(bytes.TrimSpace(data)) == 0 {
		return c, nil
	}
	dec := yaml.NewDecoder(bytes.NewReader(data))
	dec.KnownFields(true)
	if err := dec.Decode(c); err != nil {
		var ve *valueError
		if errors.As(err, &ve) {
			if key := keyAt(data, ve.line, ve.column); key != "" {
				return nil, fmt.Errorf("%s: %w", key, err)
			}
		}
		var te *yaml.TypeError
		if errors.As(err, &te) {
			for i, m := range te.Errors {
				te.Errors[i] = typeErrorWithKey(data, m)
			}
		}
		return nil, friendlyYAMLError(err)
	}
	return c, nil
}

// valueError is a value Mode or Duration refused. yaml.v3 hands an
// unmarshaler the value's node but not its key: Parse finds the key by the
// node's position.
type valueError struct {
	line, column int
	msg          string
}

func (e *valueError) Error() string { return fmt.Sprintf("line %d: %s", e.line, e.msg) }

func refuse(n *yaml.Node, format string, args ...any) error {
	return &valueError{line: n.Line, column: n.Column, msg: fmt.Sprintf(format, args...)}
}

// keyAt is the dotted key ("files[0].on_rotate[1].exec.timeout") whose
// value starts at line and column of the YAML in data; "" if none does.
func keyAt(data []byte, line, column int) string {
	keys := keysWhere(data, func(n *yaml.Node) bool { return n.Line == line && n.Column == column })
	if len(keys) == 0 {
		return ""
	}
	return keys[0]
}

// yaml.v3's words for a value of the wrong type; it shortens a long value
// to its first 7 bytes and "...".
var typeErrorText = regexp.MustCompile("^line ([0-9]+): cannot unmarshal !![a-z]+ `([^`]*)`")

// typeErrorWithKey puts the key in front of one of yaml.v3's "line 2:
// cannot unmarshal !!str `envoy` into int", when one scalar on that line
// has that value.
func typeErrorWithKey(data []byte, msg string) string {
	m := typeErrorText.FindStringSubmatch(msg)
	if m == nil {
		return msg
	}
	line, _ := strconv.Atoi(m[1])
	shown, cut := strings.CutSuffix(m[2], "...")
	keys := keysWhere(data, func(n *yaml.Node) bool {
		return n.Kind == yaml.ScalarNode && n.Line == line &&
			(n.Value == shown || cut && strings.HasPrefix(n.Value, shown))
	})
	if len(keys) != 1 {
		return msg
	}
	return keys[0] + ": " + msg
}

// keysWhere lists, in document order, the dotted keys of the values in
// the YAML in data for which match holds.
func keysWhere(data []byte, match func(*yaml.Node) bool) []string {
	var doc yaml.Node
	if yaml.Unmarshal(data, &doc) != nil {
		return nil
	}
	var keys []string
	var walk func(n *yaml.Node, path string)
	walk = func(n *yaml.Node, path string) {
		if path != "" && match(n) {
			keys = append(keys, path)
		}
		switch n.Kind {
		case yaml.DocumentNode:
			for _, c := range n.Content {
				walk(c, path)
			}
		case yaml.MappingNode:
			for i := 0; i+1 < len(n.Content); i += 2 {
				p := n.Content[i].Value
				if path != "" {
					p = path + "." + p
				}
				walk(n.Content[i+1], p)
			}
		case yaml.SequenceNode:
			for i, c := range n.Content {
				walk(c, fmt.Sprintf("%s[%d]", path, i))
			}
		}
	}
	walk(&doc, "")
	return keys
}

// describe shows a value that should have been a scalar, on one line.
func describe(n *yaml.Node) string {
	kind := map[yaml.Kind]string{yaml.MappingNode: "a map", yaml.SequenceNode: "a list", yaml.AliasNode: "an alias"}[n.Kind]
	if kind == "" {
		return fmt.Sprintf("%q", n.Value)
	}
	flow := *n
	flow.Style |= yaml.FlowStyle
	text, err := yaml.Marshal(&flow)
	if err != nil {
		return kind
	}
	return kind + " " + strings.TrimSpace(string(text))
}

// friendlyYAMLError rewrites yaml.v3's "field x not found in type config.Folder"
// into words about the key.
func friendlyYAMLError(err error) error {
	msg := err.Error()
	msg = strings.TrimPrefix(msg, "yaml: unmarshal errors:\n  ")
	if i := strings.Index(msg, "field "); i >= 0 && strings.Contains(msg, " not found in type ") {
		key := msg[i+len("field "):]
		key = key[:strings.Index(key, " not found in type ")]
		return fmt.Errorf("%sunknown key %q", msg[:i], key)
	}
	return errors.New(msg)
}

// Default fills every unset key with its documented default.
func (c *Config) Default() {
	if c.WorkloadAPI.FirstUpdateTimeout == 0 {
		c.WorkloadAPI.FirstUpdateTimeout = DefaultFirstUpdateTimeout
	}
	s := &c.SDS
	if s.Socket == "" {
		s.Socket = DefaultSDSSocket
	}
	if s.SocketMode == 0 {
		s.SocketMode = DefaultSocketMode
	}
	if s.DefaultSVIDName == "" {
		s.DefaultSVIDName = DefaultSVIDName
	}
	if s.DefaultBundleName == "" {
		s.DefaultBundleName = DefaultBundleName
	}
	if s.DefaultAllBundlesName == "" {
		s.DefaultAllBundlesName = DefaultAllBundlesName
	}
	for i := range c.Files {
		f := &c.Files[i]
		if f.Layout == "" {
			f.Layout = DefaultLayout
		}
		if f.CertMode == 0 {
			f.CertMode = DefaultCertMode
		}
		if f.KeyMode == 0 {
			f.KeyMode = DefaultKeyMode
		}
		if f.JWTMode == 0 {
			f.JWTMode = DefaultJWTMode
		}
		if f.JWTBundleMode == 0 {
			f.JWTBundleMode = DefaultJWTBundleMode
		}
		if f.Layout == "spiffe-helper" {
			if f.CertFileName == "" {
				f.CertFileName = DefaultCertFileName
			}
			if f.KeyFileName == "" {
				f.KeyFileName = DefaultKeyFileName
			}
			if f.BundleFileName == "" {
				f.BundleFileName = DefaultBundleFileName
			}
		}
		for j := range f.OnRotate {
			a := &f.OnRotate[j]
			if len(a.On) == 0 {
				a.On = []string{EventX509}
			}
			if a.Signal != nil && a.Signal.Signal == "" {
				a.Signal.Signal = "SIGHUP"
			}
			if a.Exec != nil && a.Exec.Timeout == 0 {
				a.Exec.Timeout = DefaultActionTimeout
			}
			if a.Postgres != nil && a.Postgres.Timeout == 0 {
				a.Postgres.Timeout = DefaultPostgresTimeout
			}
		}
	}
	if c.Admin.Listen == nil {
		listen := DefaultAdminListen
		c.Admin.Listen = &listen
	}
	if c.Admin.MinValidityPercent == nil {
		p := DefaultMinValidityPercent
		c.Admin.MinValidityPercent = &p
	}
	if c.Supervise.On() {
		if c.Supervise.RenewSignal == "" {
			c.Supervise.RenewSignal = DefaultRenewSignal
		}
		if c.Supervise.Restart == "" {
			c.Supervise.Restart = DefaultRestart
		}
	}
	if c.Admin.LivenessPath == "" {
		c.Admin.LivenessPath = DefaultLivenessPath
	}
	if c.Admin.ReadinessPath == "" {
		c.Admin.ReadinessPath = DefaultReadinessPath
	}
}

// KeyError is one value Validate refused. Key is the dotted YAML key
// ("files[0].owner"), so that a caller that wrote the YAML itself (the
// helper.conf converter) can say which of its own keys it came from.
type KeyError struct {
	Key string
	Err error
}

func (e *KeyError) Error() string { return e.Key + ": " + e.Err.Error() }
func (e *KeyError) Unwrap() error { return e.Err }

// Validate checks a defaulted Config; every error names the key and value.
// The result joins one *KeyError per refused value, in a stable order.
func (c *Config) Validate() error {
	var errs []error
	bad := func(key string, format string, args ...any) {
		errs = append(errs, &KeyError{Key: key, Err: fmt.Errorf(format, args...)})
	}
	if a := c.WorkloadAPI.Address; a != "" && !strings.HasPrefix(a, "unix://") && !strings.HasPrefix(a, "tcp://") {
		bad("workload_api.address", "%q must start with unix:// or tcp://", a)
	}
	if c.WorkloadAPI.FirstUpdateTimeout < 0 {
		bad("workload_api.first_update_timeout", "%s must not be negative", c.WorkloadAPI.FirstUpdateTimeout)
	}
	if err := checkSVIDChoice(c.WorkloadAPI.DefaultSVIDHint); err != nil {
		bad("workload_api.default_svid_hint", "%q: %v", c.WorkloadAPI.DefaultSVIDHint, err)
	}
	if c.SDS.On() {
		if !filepath.IsAbs(c.SDS.Socket) {
			bad("sds.socket", "%q must be an absolute path", c.SDS.Socket)
		}
		if c.SDS.SocketMode&0o007 != 0 {
			bad("sds.socket_mode", "%q lets every local user fetch private keys; use 0600 or 0660", c.SDS.SocketMode)
		}
		if c.SDS.MaxConnections < 0 {
			bad("sds.max_connections", "%d must not be negative", c.SDS.MaxConnections)
		}
		// Slices, not maps: the errors come in the order the keys are documented.
		for _, l := range []struct {
			key string
			ids []int
		}{{"sds.allowed_uids", c.SDS.AllowedUIDs}, {"sds.allowed_gids", c.SDS.AllowedGIDs}} {
			for i, id := range l.ids {
				if id < 0 || id > MaxID {
					bad(fmt.Sprintf("%s[%d]", l.key, i), "%d is not a valid id", id)
				}
			}
		}
		names := map[string]string{}
		for _, n := range []struct{ key, name string }{
			{"sds.default_svid_name", c.SDS.DefaultSVIDName},
			{"sds.default_bundle_name", c.SDS.DefaultBundleName},
			{"sds.default_all_bundles_name", c.SDS.DefaultAllBundlesName},
		} {
			if strings.HasPrefix(n.name, "spiffe://") {
				bad(n.key, "%q would shadow a SPIFFE ID or trust domain name", n.name)
			}
			if other, dup := names[n.name]; dup {
				bad(n.key, "%q is also the value of %s", n.name, other)
				continue
			}
			names[n.name] = n.key
		}
	}
	dirs := map[string]int{}
	for i, f := range c.Files {
		key := fmt.Sprintf("files[%d]", i)
		switch {
		case f.Dir == "":
			bad(key+".dir", "missing")
		case !filepath.IsAbs(f.Dir):
			bad(key+".dir", "%q must be an absolute path", f.Dir)
		default:
			clean := filepath.Clean(f.Dir)
			if j, dup := dirs[clean]; dup {
				bad(key+".dir", "%q is already files[%d].dir; two folders cannot share a directory", f.Dir, j)
			}
			dirs[clean] = i
		}
		switch f.Layout {
		case "spiffe-helper":
			seen := map[string]string{}
			for _, n := range f.x509FileNames() {
				if other, dup := seen[n.name]; dup {
					bad(key+"."+n.key, "%q is also %s", n.name, other)
					continue
				}
				seen[n.name] = n.key
				if strings.ContainsRune(n.name, '/') || strings.HasPrefix(n.name, "..") || n.name == "." {
					bad(key+"."+n.key, "%q must be a plain file name", n.name)
				}
			}
		case "spiffe":
			for _, n := range f.x509FileNames() {
				if n.name != "" {
					bad(key+"."+n.key, "%q: file names are fixed by the spiffe layout", n.name)
				}
			}
		default:
			bad(key+".layout", "%q is not one of spiffe-helper, spiffe", f.Layout)
		}
		if f.KeyMode&0o007 != 0 {
			bad(key+".key_mode", "%q makes the private key readable or writable by every user", f.KeyMode)
		}
		if f.KeyMode&0o400 == 0 {
			bad(key+".key_mode", "%q: the owner must be able to read the private key", f.KeyMode)
		}
		if f.CertMode&0o002 != 0 {
			bad(key+".cert_mode", "%q makes the certificate writable by every user", f.CertMode)
		}
		if f.CertMode&0o400 == 0 {
			bad(key+".cert_mode", "%q: the owner must be able to read the certificate", f.CertMode)
		}
		if f.Owner != "" {
			if _, _, err := ParseOwner(f.Owner); err != nil {
				bad(key+".owner", "%q: %v", f.Owner, err)
			}
		}
		if err := checkSVIDChoice(f.SVID); err != nil {
			bad(key+".svid", "%q: %v", f.SVID, err)
		}
		switch f.FederatedBundle {
		case "", "separate":
		case "concatenate":
			if !f.IncludeFederatedDomains {
				bad(key+".federated_bundle", "%q needs include_federated_domains: true", f.FederatedBundle)
			}
		default:
			bad(key+".federated_bundle", "%q is not one of separate, concatenate", f.FederatedBundle)
		}
		if f.Layout == "spiffe" {
			// The standard's layout already writes one file per trust domain.
			if f.IncludeFederatedDomains {
				bad(key+".include_federated_domains", "true applies only to layout spiffe-helper; layout spiffe always writes every trust domain")
			}
			if f.FederatedBundle != "" {
				bad(key+".federated_bundle", "%q applies only to layout spiffe-helper", f.FederatedBundle)
			}
			if f.AddIntermediatesToBundle {
				bad(key+".add_intermediates_to_bundle", "true applies only to layout spiffe-helper")
			}
		}
		validateJWT(key, f, bad)
		for j, a := range f.OnRotate {
			akey := fmt.Sprintf("%s.on_rotate[%d]", key, j)
			validateOn(akey+".on", a.On, bad)
			if slices.Equal(a.On, []string{EventJWT}) && len(f.JWTSVIDs) == 0 && f.JWTBundleFileName == "" {
				bad(akey+".on", "[jwt] but the folder writes no JWT files (jwt_svids, jwt_bundle_file_name): the action would never run")
			}
			switch {
			case countSet(a.Signal != nil, a.Exec != nil, a.Postgres != nil) != 1:
				bad(akey, "set exactly one of signal, exec, postgres")
			case a.Signal != nil:
				if !filepath.IsAbs(a.Signal.PIDFile) {
					bad(akey+".signal.pid_file", "%q must be an absolute path", a.Signal.PIDFile)
				}
				if _, err := ParseSignal(a.Signal.Signal); err != nil {
					bad(akey+".signal.signal", "%q: %v", a.Signal.Signal, err)
				}
			case a.Exec != nil:
				if len(a.Exec.Command) == 0 || a.Exec.Command[0] == "" {
					bad(akey+".exec.command", "missing: give the program and its arguments as a list")
				}
				if a.Exec.Timeout < 0 {
					bad(akey+".exec.timeout", "%s must not be negative", a.Exec.Timeout)
				}
			case a.Postgres != nil:
				if err := checkDSN(a.Postgres.DSN); err != nil {
					bad(akey+".postgres.dsn", "%v", err)
				}
				if a.Postgres.Timeout < 0 {
					bad(akey+".postgres.timeout", "%s must not be negative", a.Postgres.Timeout)
				}
			}
		}
	}
	if addr := c.Admin.Address(); addr != "" {
		if _, port, err := net.SplitHostPort(addr); err != nil || port == "" {
			bad("admin.listen", "%q must be host:port, e.g. 127.0.0.1:8081 (or \"\" for no admin listener)", addr)
		}
	}
	if c.Admin.MinValidity < 0 {
		bad("admin.min_validity", "%s must not be negative", c.Admin.MinValidity)
	}
	if p := c.Admin.MinValidityPercent; p != nil && (*p < 0 || *p > 99) {
		bad("admin.min_validity_percent", "%d must be between 0 (off) and 99", *p)
	}
	if c.Admin.MaxConnections < 0 {
		bad("admin.max_connections", "%d must not be negative", c.Admin.MaxConnections)
	}
	for _, p := range []struct{ key, path string }{
		{"admin.liveness_path", c.Admin.LivenessPath},
		{"admin.readiness_path", c.Admin.ReadinessPath},
	} {
		// Empty is the default (Validate may run before Default).
		if p.path == "" {
			continue
		}
		switch {
		case !strings.HasPrefix(p.path, "/") || path.Clean(p.path) != p.path || strings.ContainsAny(p.path, "{}?#% \t\n"):
			bad(p.key, "%q must be a plain absolute URL path such as %q", p.path, "/live")
		case slices.Contains(reservedAdminPaths, p.path):
			bad(p.key, "%q is already served by the admin listener (%s)", p.path, strings.Join(reservedAdminPaths, " "))
		}
	}
	if l, r := c.Admin.LivenessPath, c.Admin.ReadinessPath; l != "" && l == r {
		bad("admin.readiness_path", "%q is also admin.liveness_path: the two probes need their own paths", r)
	}
	if c.Admin.RequireSDSAck && !c.SDS.On() {
		bad("admin.require_sds_ack", "true needs sds.enabled: no SDS client can acknowledge anything")
	}
	// renew_signal and restart without a command are checked too: the
	// example config shows them with supervision off.
	sv := c.Supervise
	if sv.On() && sv.Command[0] == "" {
		bad("supervise.command[0]", "empty: give the program and its arguments as a list")
	}
	if _, err := sv.Signal(); sv.RenewSignal != "" && err != nil {
		bad("supervise.renew_signal", "%q: %v (or none)", sv.RenewSignal, err)
	}
	switch sv.Restart {
	case "", string(supervise.RestartNever), string(supervise.RestartOnFailure):
	default:
		bad("supervise.restart", "%q is not one of never, on-failure", sv.Restart)
	}
	if !c.SDS.On() && len(c.Files) == 0 {
		errs = append(errs, errors.New("nothing to deliver to: sds.enabled is false and files is empty"))
	}
	return errors.Join(errs...)
}

// validateOn checks an action's on: known events, each once. Empty is the
// default (Validate may run before Default).
func validateOn(key string, on []string, bad func(key string, format string, args ...any)) {
	for i, ev := range on {
		switch {
		case !slices.Contains(Events, ev):
			bad(fmt.Sprintf("%s[%d]", key, i), "%q is not an event: want %s", ev, strings.Join(Events, " or "))
		case slices.Index(on, ev) < i:
			bad(fmt.Sprintf("%s[%d]", key, i), "%q is listed twice", ev)
		}
	}
}

// validateJWT checks a folder's JWT keys: a token is a bearer credential,
// so jwt_mode may not open it to every user, and no two files (JWT or
// X.509) may share a name.
func validateJWT(key string, f Folder, bad func(key string, format string, args ...any)) {
	names := map[string]string{}
	for _, n := range f.x509FileNames() {
		if n.name != "" {
			names[n.name] = n.key
		}
	}
	plain := func(k, name string) {
		switch {
		case name == "":
			bad(key+"."+k, "missing")
			return
		case strings.ContainsRune(name, '/') || strings.HasPrefix(name, "."):
			bad(key+"."+k, "%q must be a plain file name", name)
		}
		if other, dup := names[name]; dup {
			bad(key+"."+k, "%q is also %s", name, other)
		}
		names[name] = k
	}
	for i, j := range f.JWTSVIDs {
		jkey := fmt.Sprintf("jwt_svids[%d]", i)
		if strings.TrimSpace(j.Audience) == "" {
			bad(key+"."+jkey+".audience", "missing: a JWT-SVID is always issued for an audience")
		}
		for n, a := range j.ExtraAudiences {
			if strings.TrimSpace(a) == "" {
				bad(fmt.Sprintf("%s.%s.extra_audiences[%d]", key, jkey, n), "empty audience")
			}
		}
		plain(jkey+".file_name", j.FileName)
	}
	if f.JWTBundleFileName != "" {
		plain("jwt_bundle_file_name", f.JWTBundleFileName)
	}
	if f.JWTMode&0o007 != 0 {
		bad(key+".jwt_mode", "%q lets every user read or replace a bearer token", f.JWTMode)
	}
	if f.JWTMode&0o400 == 0 {
		bad(key+".jwt_mode", "%q: the owner must be able to read the token", f.JWTMode)
	}
	if f.JWTBundleMode&0o002 != 0 {
		bad(key+".jwt_bundle_mode", "%q makes the JWT bundle writable by every user", f.JWTBundleMode)
	}
	if f.JWTBundleMode&0o400 == 0 {
		bad(key+".jwt_bundle_mode", "%q: the owner must be able to read the JWT bundle", f.JWTBundleMode)
	}
}

// x509FileNames are the folder's spiffe-helper layout file names, each
// with its key, in the order the keys are documented.
func (f Folder) x509FileNames() []struct{ key, name string } {
	return []struct{ key, name string }{
		{"cert_file_name", f.CertFileName},
		{"key_file_name", f.KeyFileName},
		{"bundle_file_name", f.BundleFileName},
	}
}

// checkSVIDChoice checks a hint-or-SPIFFE-ID value: anything that looks
// like a SPIFFE ID must be one, or it could never match.
func checkSVIDChoice(v string) error {
	switch {
	case v == "":
		return nil
	case strings.TrimSpace(v) != v:
		return errors.New("has leading or trailing spaces; it would never match a hint or SPIFFE ID")
	case strings.HasPrefix(strings.ToLower(v), "spiffe://"):
		if _, err := spiffeid.FromString(v); err != nil {
			return fmt.Errorf("not a valid SPIFFE ID: %v", err)
		}
	}
	return nil
}

func countSet(set ...bool) int {
	n := 0
	for _, b := range set {
		if b {
			n++
		}
	}
	return n
}

// checkDSN checks the shape of a libpq connection string without echoing
// it: it may hold a password. The driver parses it for real when the
// action runs (it may name certificates not written yet).
func checkDSN(dsn string) error {
	switch {
	case strings.TrimSpace(dsn) == "":
		return errors.New("missing: a libpq connection string, e.g. \"host=/var/run/postgresql user=postgres\"")
	case strings.HasPrefix(dsn, "postgres://"), strings.HasPrefix(dsn, "postgresql://"):
		if _, err := url.Parse(dsn); err != nil {
			return errors.New("not a valid postgres:// URL (value not shown: it may hold a password)")
		}
	case !strings.Contains(dsn, "="):
		return errors.New("want keyword=value pairs or a postgres:// URL (value not shown: it may hold a password)")
	}
	return nil
}

// MaxID is the largest uid or gid chown can apply: 1<<32-1 is (uid_t)-1,
// which chown reads as "leave unchanged".
const MaxID = 1<<32 - 2

// ParseOwner reads "uid:gid" (numbers). Each id must be within 0..MaxID:
// a larger one would be truncated to 32 bits by chown, and
// "4294967296:0" would quietly mean root.
func ParseOwner(s string) (uid, gid int, err error) {
	u, g, ok := strings.Cut(s, ":")
	if !ok {
		return 0, 0, errors.New(`want "uid:gid", e.g. "999:999"`)
	}
	if uid, err = parseID(u); err != nil {
		return 0, 0, fmt.Errorf("uid %w", err)
	}
	if gid, err = parseID(g); err != nil {
		return 0, 0, fmt.Errorf("gid %w", err)
	}
	return uid, gid, nil
}

func parseID(s string) (int, error) {
	// ParseUint, not Atoi: no sign, and no wrap-around on 32-bit ints.
	v, err := strconv.ParseUint(s, 10, 64)
	switch {
	case err != nil && !errors.Is(err, strconv.ErrRange):
		return 0, fmt.Errorf("%q is not a number", s)
	case err != nil || v > MaxID:
		return 0, fmt.Errorf("%s is out of range: want 0 to %d", s, MaxID)
	}
	return int(v), nil
}

var signals = map[string]syscall.Signal{
	"SIGHUP": syscall.SIGHUP, "SIGINT": syscall.SIGINT, "SIGQUIT": syscall.SIGQUIT,
	"SIGTERM": syscall.SIGTERM, "SIGUSR1": syscall.SIGUSR1, "SIGUSR2": syscall.SIGUSR2,
}

// ParseSignal reads a signal name such as "SIGHUP" or "HUP".
func ParseSignal(s string) (syscall.Signal, error) {
	name := strings.ToUpper(s)
	if !strings.HasPrefix(name, "SIG") {
		name = "SIG" + name
	}
	sig, ok := signals[name]
	if !ok {
		return 0, errors.New("not one of SIGHUP, SIGINT, SIGQUIT, SIGTERM, SIGUSR1, SIGUSR2")
	}
	return sig, nil
}

// Mode is a file mode written as an octal string ("0640"), never a decimal
// integer: spiffe-helper users have been bitten by cert_file_mode = 444.
type Mode os.FileMode

// UnmarshalYAML accepts only quoted octal strings.
func (m *Mode) UnmarshalYAML(n *yaml.Node) error {
	switch {
	case n.Kind != yaml.ScalarNode:
		return refuse(n, "mode: want a quoted octal string such as \"0640\", not %s", describe(n))
	case n.Tag != "!!str":
		return refuse(n, "mode %s must be a quoted octal string such as \"0640\"", n.Value)
	}
	v, err := ParseMode(n.Value)
	if err != nil {
		return refuse(n, "%v", err)
	}
	*m = v
	return nil
}

// ParseMode reads an octal permission string such as "0640".
func ParseMode(s string) (Mode, error) {
	v, err := strconv.ParseUint(strings.TrimPrefix(s, "0o"), 8, 32)
	if err != nil || v > 0o777 || v == 0 {
		return 0, fmt.Errorf("mode %q is not an octal permission between 0001 and 0777", s)
	}
	return Mode(v), nil
}

// String prints the mode as it is written in the config.
func (m Mode) String() string { return fmt.Sprintf("%04o", uint32(m)) }

// Duration is a time.Duration written as "30s", "5m".
type Duration time.Duration

// durationSyntax is what time.ParseDuration reads; a value that matches
// it and still fails to parse does not fit in a time.Duration.
var durationSyntax = regexp.MustCompile(`^[-+]?((\d+\.?\d*|\.\d+)(ns|us|µs|μs|ms|s|m|h))+$`)

// UnmarshalYAML accepts Go duration strings.
func (d *Duration) UnmarshalYAML(n *yaml.Node) error {
	if n.Kind != yaml.ScalarNode {
		return refuse(n, "duration: want a number with a unit, such as \"30s\" or \"2m\", not %s", describe(n))
	}
	v, err := time.ParseDuration(n.Value)
	switch {
	case err != nil && durationSyntax.MatchString(n.Value):
		return refuse(n, "duration %q is out of range: at most 2562047h (about 292 years)", n.Value)
	case err != nil:
		return refuse(n, "duration %q: want a number with a unit, such as \"30s\" or \"2m\"", n.Value)
	}
	*d = Duration(v)
	return nil
}

// String prints the duration as Go does.
func (d Duration) String() string { return time.Duration(d).String() }
