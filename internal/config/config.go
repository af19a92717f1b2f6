// Package config reads the sds-bridge YAML configuration in three pure
// steps — Parse, (Config).Default, (Config).Validate — so that every error
// names the key and the value that caused it.
package config

import (
	"bytes"
	"cmp"
	"errors"
	"fmt"
	"io"
	"os"
	"slices"
	"syscall"

	"go.yaml.in/yaml/v3"

	"github.com/sds-bridge/sds-bridge/filesink"
	"github.com/sds-bridge/sds-bridge/internal/fielderr"
	"github.com/sds-bridge/sds-bridge/jwtfiles"
	"github.com/sds-bridge/sds-bridge/reload"
	"github.com/sds-bridge/sds-bridge/reload/pgreload"
	"github.com/sds-bridge/sds-bridge/supervise"
)

// The defaults Default applies, and those of components that other
// packages name (helperconf, the admin address of `status`). Every other
// key's default is its component's (the README lists them all).
const (
	DefaultSDSSocket          = "/run/sds-bridge/sds.sock"
	DefaultCertMode           = Mode(filesink.DefaultCertMode)
	DefaultKeyMode            = Mode(filesink.DefaultKeyMode)
	DefaultActionTimeout      = Duration(reload.DefaultExecTimeout)
	DefaultPostgresTimeout    = Duration(pgreload.DefaultTimeout)
	DefaultAdminListen        = "127.0.0.1:8081"
	DefaultMinValidityPercent = 10
	DefaultJWTMode            = Mode(jwtfiles.DefaultMode)
	DefaultJWTBundleMode      = Mode(jwtfiles.DefaultBundleMode)
	DefaultRenewSignal        = Signal(syscall.SIGHUP)
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
	// RenewSignal is sent after each swap; default SIGHUP, "none"
	// (NoSignal) for no signal.
	RenewSignal Signal `yaml:"renew_signal"`
	// Restart is never (the default) or on-failure.
	Restart string `yaml:"restart"`
}

// On reports whether a program is supervised.
func (s Supervise) On() bool { return len(s.Command) > 0 }

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

// Folder is one credential folder.
type Folder struct {
	Dir            string   `yaml:"dir"`
	Layout         string   `yaml:"layout"`
	CertFileName   string   `yaml:"cert_file_name"`
	KeyFileName    string   `yaml:"key_file_name"`
	BundleFileName string   `yaml:"bundle_file_name"`
	CertMode       Mode     `yaml:"cert_mode"`
	KeyMode        Mode     `yaml:"key_mode"`
	Owner          *Owner   `yaml:"owner"`
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
	// OmitExpired leaves expired certificates out of the certificate and
	// bundle files, as spiffe-helper's omit_expired does.
	OmitExpired bool `yaml:"omit_expired"`
	// JWTSVIDs are JWT-SVIDs written into Dir, each refreshed before half
	// its lifetime is gone; JWTBundleFileName gets the JWT bundles of every
	// trust domain (package jwtfiles). They are written one file at a time,
	// outside the X.509 generation swap.
	JWTSVIDs          []JWTSVID `yaml:"jwt_svids"`
	JWTBundleFileName string    `yaml:"jwt_bundle_file_name"`
	JWTMode           Mode      `yaml:"jwt_mode"`
	JWTBundleMode     Mode      `yaml:"jwt_bundle_mode"`
	// MinSwapInterval is the least time between two swaps (and reloads)
	// of the folder: faster updates are coalesced, the newest winning.
	MinSwapInterval Duration `yaml:"min_swap_interval"`
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

// events are the values on_rotate[].on takes.
var events = []string{EventX509, EventJWT}

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
	Signal  Signal `yaml:"signal"`
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
	data, err := ReadFile(path)
	if err != nil {
		return nil, fmt.Errorf("config: %w", err)
	}
	c, err := Parse(bytes.NewReader(data))
	if err != nil {
		return nil, fmt.Errorf("config %s: %w", path, err)
	}
	return c, nil
}

// MaxFileSize bounds a configuration file, the YAML config as a
// spiffe-helper helper.conf: a real one is a few KiB, and parsing takes
// tens of times its size in memory (a 50 MB helper.conf value took
// 1.6 GB).
const MaxFileSize = 1 << 20

// ReadFile reads a configuration file of at most MaxFileSize bytes; its
// errors name the file. It need not be a regular file (--config <(…) is
// a pipe).
func ReadFile(path string) ([]byte, error) {
	f, err := os.Open(path)
	if err != nil {
		return nil, err
	}
	defer f.Close()
	data, err := io.ReadAll(io.LimitReader(f, MaxFileSize+1))
	if err != nil {
		return nil, err
	}
	if len(data) > MaxFileSize {
		return nil, fmt.Errorf("%s: larger than %d bytes (1 MiB), the most a configuration file may hold", path, MaxFileSize)
	}
	return data, nil
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
			typeErrorsWithKeys(data, te)
		}
		return nil, friendlyYAMLError(err)
	}
	return c, nil
}

// Default fills the keys whose default belongs to the config, not to a
// component: the SDS socket's path (the server takes any path it is
// given), the supervised program's renew signal and restart policy, and
// each reload action's events, signal and time limit as the YAML
// documents them. Every other unset key stays zero here and gets its
// default once, from its component (rotation, sds, filesink, jwtfiles,
// admin), when the section is mapped onto the component's config.
func (c *Config) Default() {
	c.SDS.Socket = cmp.Or(c.SDS.Socket, DefaultSDSSocket)
	for i := range c.Files {
		for j := range c.Files[i].OnRotate {
			c.Files[i].OnRotate[j].defaults()
		}
	}
	if c.Supervise.On() {
		c.Supervise.RenewSignal = cmp.Or(c.Supervise.RenewSignal, DefaultRenewSignal)
		c.Supervise.Restart = cmp.Or(c.Supervise.Restart, DefaultRestart)
	}
}

func (a *Action) defaults() {
	if len(a.On) == 0 {
		a.On = []string{EventX509}
	}
	if a.Signal != nil {
		a.Signal.Signal = cmp.Or(a.Signal.Signal, DefaultRenewSignal)
	}
	if a.Exec != nil {
		a.Exec.Timeout = cmp.Or(a.Exec.Timeout, DefaultActionTimeout)
	}
	if a.Postgres != nil {
		a.Postgres.Timeout = cmp.Or(a.Postgres.Timeout, DefaultPostgresTimeout)
	}
}

// KeyError is one value Validate refused. Key is the dotted YAML key
// ("files[0].owner"), so that a caller that wrote the YAML itself (the
// helper.conf converter) can say which of its own keys it came from.
type KeyError = fielderr.Error
