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
	"reflect"
	"slices"
	"strings"
	"syscall"

	"go.yaml.in/yaml/v3"

	"github.com/sds-bridge/sds-bridge/admin"
	"github.com/sds-bridge/sds-bridge/filesink"
	"github.com/sds-bridge/sds-bridge/internal/fielderr"
	"github.com/sds-bridge/sds-bridge/jwtfiles"
	"github.com/sds-bridge/sds-bridge/reload"
	"github.com/sds-bridge/sds-bridge/reload/pgreload"
	"github.com/sds-bridge/sds-bridge/rotation"
	"github.com/sds-bridge/sds-bridge/sds"
	"github.com/sds-bridge/sds-bridge/supervise"
)

// The defaults Default applies, and those other packages name (helperconf,
// `status`); every other key's default is its component's.
const (
	DefaultSDSSocket          = "/run/sds-bridge/sds.sock"
	DefaultCertMode           = Mode(filesink.DefaultCertMode)
	DefaultKeyMode            = Mode(filesink.DefaultKeyMode)
	DefaultAdminListen        = "127.0.0.1:8081"
	DefaultMinValidityPercent = 10
	DefaultJWTMode            = Mode(jwtfiles.DefaultMode)
	DefaultJWTBundleMode      = Mode(jwtfiles.DefaultBundleMode)
	DefaultRenewSignal        = Signal(syscall.SIGHUP)
	DefaultRestart            = string(supervise.RestartNever)
)

// Config is the whole file. Each section is, or embeds, its component's
// Config, whose YAML tags are the keys.
type Config struct {
	WorkloadAPI rotation.Config `yaml:"workload_api"`
	SDS         SDS             `yaml:"sds"`
	Files       []Folder        `yaml:"files"`
	Admin       Admin           `yaml:"admin"`
	Supervise   Supervise       `yaml:"supervise"`
}

// Supervise is the program the bridge starts once every folder holds a
// complete set, signals after each swap, and whose exit it exits with.
type Supervise struct {
	// Command is the program and its arguments (no shell).
	Command []string `yaml:"command"`
	// RenewSignal defaults to SIGHUP; "none" (NoSignal) sends nothing.
	RenewSignal Signal `yaml:"renew_signal"`
	// Restart is never (the default) or on-failure.
	Restart string `yaml:"restart"`
}

// On reports whether a program is supervised.
func (s Supervise) On() bool { return len(s.Command) > 0 }

// SDS is the Envoy-facing server.
type SDS struct {
	// Enabled is a pointer so that an absent key means "on".
	Enabled    *bool `yaml:"enabled"`
	sds.Config `yaml:",inline"`
}

// On reports whether the SDS server runs.
func (s SDS) On() bool { return s.Enabled == nil || *s.Enabled }

// Folder is one credential folder: its X.509 writer's config, its JWT
// writer's (see JWTFolder) and its reload actions.
type Folder struct {
	filesink.Config `yaml:",inline"`
	JWT             jwtfiles.Folder `yaml:",inline"`
	OnRotate        []Action        `yaml:"on_rotate"`
}

// Action is one reload action; exactly one of Signal, Exec and Postgres is
// set.
type Action struct {
	Signal   *reload.SignalAction `yaml:"signal"`
	Exec     *reload.ExecAction   `yaml:"exec"`
	Postgres *pgreload.Action     `yaml:"postgres"`
	// On lists the events that run the action; default [x509], as most
	// consumers (PostgreSQL, nginx) read no JWT.
	On []string `yaml:"on"`
}

// The events of on_rotate[].on.
const (
	EventX509 = "x509"
	EventJWT  = "jwt"
)

var events = []string{EventX509, EventJWT}

// RunsOn reports whether event (EventX509 or EventJWT) runs the action; an
// action without on (before Default) runs on EventX509 only.
func (a Action) RunsOn(event string) bool {
	if len(a.On) == 0 {
		return event == EventX509
	}
	return slices.Contains(a.On, event)
}

// Admin is the health, metrics and status HTTP listener.
type Admin struct {
	// Listen is a pointer so that an absent key means the default
	// (loopback) and an explicit "" turns the listener off.
	Listen *string `yaml:"listen"`
	// MinValidityPercent fails /readyz below this percentage of an SVID's
	// lifetime (SPIRE rotates at 50%). A pointer: absent is 10, 0 is off.
	MinValidityPercent *int `yaml:"min_validity_percent"`
	admin.Config       `yaml:",inline"`
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

// MaxFileSize bounds a configuration file (YAML or helper.conf): parsing
// takes tens of times its size in memory (a 50 MB value took 1.6 GB).
const MaxFileSize = 1 << 20

// ReadFile reads a configuration file of at most MaxFileSize bytes; it
// need not be a regular file (--config <(…) is a pipe).
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
	var doc yaml.Node
	if err := yaml.NewDecoder(bytes.NewReader(data)).Decode(&doc); err != nil {
		return nil, err
	}
	scalars, err := checkNode(&doc, reflect.TypeFor[Config]())
	if err != nil {
		return nil, err
	}
	if err := doc.Decode(c); err != nil {
		var te *yaml.TypeError
		if errors.As(err, &te) {
			typeErrorsWithKeys(scalars, te)
		}
		return nil, errors.New(strings.TrimPrefix(err.Error(), "yaml: unmarshal errors:\n  "))
	}
	return c, nil
}

// Default fills the keys whose default is the config's, not a
// component's: the SDS socket, supervise's renew signal and restart, and
// each reload action's events. The components default the rest, once.
func (c *Config) Default() {
	c.SDS.SocketPath = cmp.Or(c.SDS.SocketPath, DefaultSDSSocket)
	for _, f := range c.Files {
		for j, a := range f.OnRotate {
			if len(a.On) == 0 {
				f.OnRotate[j].On = []string{EventX509}
			}
		}
	}
	if c.Supervise.On() {
		c.Supervise.RenewSignal = cmp.Or(c.Supervise.RenewSignal, DefaultRenewSignal)
		c.Supervise.Restart = cmp.Or(c.Supervise.Restart, DefaultRestart)
	}
}

// KeyError is one value Validate refused, by its dotted YAML key, so that
// the helper.conf converter can name its own key instead.
type KeyError = fielderr.Error
