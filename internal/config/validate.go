package config

import (
	"errors"
	"fmt"
	"net"
	"path/filepath"
	"slices"
	"strings"

	"github.com/sds-bridge/sds-bridge/filesink"
	"github.com/sds-bridge/sds-bridge/internal/fielderr"
	"github.com/sds-bridge/sds-bridge/reload"
	"github.com/sds-bridge/sds-bridge/rotation"
	"github.com/sds-bridge/sds-bridge/supervise"
)

// Validate checks a defaulted Config: each section as its component
// checks it, under the section's key, and here what spans components. It
// joins one *KeyError per refused value, in the order of the keys.
func (c *Config) Validate() error {
	var errs fielderr.List
	errs.Under("workload_api", validateSource(c.WorkloadAPI))
	if c.SDS.On() {
		errs.Under("sds", c.SDS.validate())
	}
	dirs := map[string]int{}
	for i, f := range c.Files {
		key := fmt.Sprintf("files[%d]", i)
		errs.Under(key, f.validate())
		if f.Dir == "" || !filepath.IsAbs(f.Dir) {
			continue
		}
		clean := filepath.Clean(f.Dir)
		if j, dup := dirs[clean]; dup {
			errs.Add(key+".dir", "%q is already files[%d].dir; two folders cannot share a directory", f.Dir, j)
		}
		dirs[clean] = i
	}
	errs.Under("admin", c.Admin.validate(c.SDS.On()))
	errs.Under("supervise", c.Supervise.validate())
	if !c.SDS.On() && len(c.Files) == 0 {
		errs = append(errs, errors.New("nothing to deliver to: sds.enabled is false and files is empty"))
	}
	return errs.Err()
}

// validateSource also refuses a negative first_update_timeout: rotation
// reads it as "wait forever", which only a caller that means it may ask.
func validateSource(w rotation.Config) error {
	errs := fielderr.List{w.Validate()}
	if w.FirstUpdateTimeout < 0 {
		errs.Add("first_update_timeout", "%s must not be negative", w.FirstUpdateTimeout)
	}
	return errs.Err()
}

// validate also refuses a socket every local user may connect to (the
// server takes it, for tests of its peer checks).
func (s SDS) validate() error {
	errs := fielderr.List{s.WithDefaults().Validate()}
	if s.SocketMode&0o007 != 0 {
		errs.Add("socket_mode", "%q lets every local user fetch private keys; use 0600 or 0660", Mode(s.SocketMode))
	}
	return errs.Err()
}

func (f Folder) validate() error {
	fc := f.WithDefaults()
	errs := fielderr.List{fc.Validate()}
	errs = append(errs, f.JWTFolder().WithDefaults().Validate())
	errs = append(errs, f.jwtOverX509(fc)...)
	for j, a := range f.OnRotate {
		errs.Under(fmt.Sprintf("on_rotate[%d]", j), a.validate(f))
	}
	return errs.Err()
}

// jwtOverX509 refuses a JWT file named as one of the X.509 files of fc.
func (f Folder) jwtOverX509(fc filesink.Config) []error {
	x509 := map[string]string{}
	for _, n := range []struct{ key, name string }{
		{"cert_file_name", fc.CertFileName},
		{"key_file_name", fc.KeyFileName},
		{"bundle_file_name", fc.BundleFileName},
	} {
		if n.name != "" {
			x509[n.name] = n.key
		}
	}
	var errs fielderr.List
	check := func(key, name string) {
		if other, dup := x509[name]; dup {
			errs.Clash(key, other, fmt.Sprintf("%q is also", name), "")
		}
	}
	for i, j := range f.JWT.SVIDs {
		check(fmt.Sprintf("jwt_svids[%d].file_name", i), j.FileName)
	}
	if f.JWT.BundleFileName != "" {
		check("jwt_bundle_file_name", f.JWT.BundleFileName)
	}
	return errs
}

func (a Action) validate(f Folder) error {
	var errs fielderr.List
	for i, ev := range a.On {
		switch {
		case !slices.Contains(events, ev):
			errs.Add(fmt.Sprintf("on[%d]", i), "%q is not an event: want %s", ev, strings.Join(events, " or "))
		case slices.Index(a.On, ev) < i:
			errs.Add(fmt.Sprintf("on[%d]", i), "%q is listed twice", ev)
		}
	}
	if slices.Equal(a.On, []string{EventJWT}) && len(f.JWT.SVIDs) == 0 && f.JWT.BundleFileName == "" {
		errs.Add("on", "[jwt] but the folder writes no JWT files (jwt_svids, jwt_bundle_file_name): the action would never run")
	}
	if kind, action := a.reloadAction(); action == nil {
		errs = append(errs, errors.New("set exactly one of signal, exec, postgres"))
	} else {
		errs.Under(kind, action.(reload.Validator).Validate())
	}
	return errs.Err()
}

// validate also checks what admin cannot see: the listen address and
// whether SDS runs.
func (a Admin) validate(sdsOn bool) error {
	errs := fielderr.List{a.ServerConfig().WithDefaults().Validate()}
	if addr := a.Address(); addr != "" {
		if _, port, err := net.SplitHostPort(addr); err != nil || port == "" {
			errs.Add("listen", "%q must be host:port, e.g. 127.0.0.1:8081 (or \"\" for no admin listener)", addr)
		}
	}
	if a.RequireSDSAck && !sdsOn {
		errs.Add("require_sds_ack", "true needs sds.enabled: no SDS client can acknowledge anything")
	}
	return errs.Err()
}

// validate checks restart even without a command: the example config
// shows it with supervision off.
func (s Supervise) validate() error {
	var errs fielderr.List
	if s.On() && s.Command[0] == "" {
		errs.Add("command[0]", "empty: give the program and its arguments as a list")
	}
	switch s.Restart {
	case "", string(supervise.RestartNever), string(supervise.RestartOnFailure):
	default:
		errs.Add("restart", "%q is not one of never, on-failure", s.Restart)
	}
	return errs.Err()
}
