package config

import (
	"github.com/sds-bridge/sds-bridge/admin"
	"github.com/sds-bridge/sds-bridge/jwtfiles"
	"github.com/sds-bridge/sds-bridge/reload"
)

// The sections are the components' configs; what follows is only what a
// section adds to its component's: the keys one folder's two writers
// share, its actions, and admin's percentage default.

// JWTFolder is the folder's JWT part as jwtfiles takes it, with the dir,
// svid and owner of its X.509 writer, without its reload runner (the
// folder's, shared with its X.509 writer).
func (f Folder) JWTFolder() jwtfiles.Folder {
	jf := f.JWT
	jf.Dir, jf.SVID, jf.Owner = f.Dir, f.SVID, f.Owner
	return jf
}

// ReloadConfig is the folder's one reload runner: the actions an X.509
// swap runs and those a JWT refresh runs (on_rotate[].on). With once,
// every action runs after the X.509 swap, when the JWT files are already
// in place (jwtfiles.Writer.Once runs none).
func (f Folder) ReloadConfig(once bool) reload.Config {
	var rc reload.Config
	for _, a := range f.OnRotate {
		action := a.reloadAction()
		if a.RunsOn(EventX509) || once {
			rc.Actions = append(rc.Actions, action)
		}
		if a.RunsOn(EventJWT) {
			rc.JWTActions = append(rc.JWTActions, action)
		}
	}
	return rc
}

// reloadAction is the action as reload runs it; nil unless exactly one
// kind is set (Validate refuses that).
func (a Action) reloadAction() reload.Action {
	switch {
	case a.Signal != nil:
		return *a.Signal
	case a.Exec != nil:
		return *a.Exec
	case a.Postgres != nil:
		return *a.Postgres
	}
	return nil
}

// kind is the action's YAML key: signal, exec or postgres.
func (a Action) kind() string {
	switch {
	case a.Signal != nil:
		return "signal"
	case a.Exec != nil:
		return "exec"
	}
	return "postgres"
}

// ServerConfig is the section as the admin server takes it, without
// what it reads (source, sinks).
func (a Admin) ServerConfig() admin.Config {
	ac := a.Config
	ac.MinValidityPercent = DefaultMinValidityPercent
	if a.MinValidityPercent != nil {
		ac.MinValidityPercent = *a.MinValidityPercent
	}
	return ac
}
