package config

import (
	"github.com/sds-bridge/sds-bridge/admin"
	"github.com/sds-bridge/sds-bridge/jwtfiles"
	"github.com/sds-bridge/sds-bridge/reload"
)

// JWTFolder is the folder's JWT part as jwtfiles takes it, with the dir,
// svid and owner of its X.509 writer.
func (f Folder) JWTFolder() jwtfiles.Folder {
	jf := f.JWT
	jf.Dir, jf.SVID, jf.Owner = f.Dir, f.SVID, f.Owner
	return jf
}

// ReloadConfig is the folder's one reload runner. With once, every action
// runs after the X.509 swap: the JWT files are in place by then
// (jwtfiles.Writer.Once runs none).
func (f Folder) ReloadConfig(once bool) reload.Config {
	var rc reload.Config
	for _, a := range f.OnRotate {
		_, action := a.reloadAction()
		if a.RunsOn(EventX509) || once {
			rc.Actions = append(rc.Actions, action)
		}
		if a.RunsOn(EventJWT) {
			rc.JWTActions = append(rc.JWTActions, action)
		}
	}
	return rc
}

// reloadAction is the action as reload runs it and its YAML key (signal,
// exec or postgres); nil unless exactly one kind is set.
func (a Action) reloadAction() (string, reload.Action) {
	var kinds []string
	var action reload.Action
	if a.Signal != nil {
		kinds, action = append(kinds, "signal"), *a.Signal
	}
	if a.Exec != nil {
		kinds, action = append(kinds, "exec"), *a.Exec
	}
	if a.Postgres != nil {
		kinds, action = append(kinds, "postgres"), *a.Postgres
	}
	if len(kinds) != 1 {
		return "", nil
	}
	return kinds[0], action
}

// ServerConfig is the section as the admin server takes it.
func (a Admin) ServerConfig() admin.Config {
	ac := a.Config
	ac.MinValidityPercent = DefaultMinValidityPercent
	if a.MinValidityPercent != nil {
		ac.MinValidityPercent = *a.MinValidityPercent
	}
	return ac
}
