package config

import (
	"os"
	"time"

	"github.com/sds-bridge/sds-bridge/admin"
	"github.com/sds-bridge/sds-bridge/filesink"
	"github.com/sds-bridge/sds-bridge/jwtfiles"
	"github.com/sds-bridge/sds-bridge/reload"
	"github.com/sds-bridge/sds-bridge/reload/pgreload"
	"github.com/sds-bridge/sds-bridge/rotation"
	"github.com/sds-bridge/sds-bridge/sds"
)

// This file is the one place where sections become the components'
// configs: Validate checks what they give, and the bridge builds from
// them, adding only what runs (loggers, runners, sinks).

// SourceConfig is the section as the rotation source takes it.
func (w WorkloadAPI) SourceConfig() rotation.Config {
	return rotation.Config{
		Address:            w.Address,
		FirstUpdateTimeout: time.Duration(w.FirstUpdateTimeout),
		DefaultSVIDHint:    w.DefaultSVIDHint,
	}
}

// ServerConfig is the section as the SDS server takes it.
func (s SDS) ServerConfig() sds.Config {
	return sds.Config{
		SocketPath:  s.Socket,
		SocketMode:  os.FileMode(s.SocketMode),
		AllowedUIDs: s.AllowedUIDs,
		AllowedGIDs: s.AllowedGIDs,
		// Zero is the server's default.
		MaxConnections: s.MaxConnections,
		Names:          s.Names(),
	}
}

// Names are the secret names this section makes the SDS server serve,
// unset ones as sds defaults them.
func (s SDS) Names() sds.Names {
	return sds.Names{
		DefaultSVID:                 s.DefaultSVIDName,
		DefaultBundle:               s.DefaultBundleName,
		AllBundles:                  s.DefaultAllBundlesName,
		DisableSPIFFECertValidation: s.DisableSPIFFECertValidation,
	}.WithDefaults()
}

// FileSinkConfig is the folder as filesink takes it, without its reload
// runner.
func (f Folder) FileSinkConfig() filesink.Config {
	fc := filesink.Config{
		Dir:                      f.Dir,
		Layout:                   filesink.Layout(f.Layout),
		CertFileName:             f.CertFileName,
		KeyFileName:              f.KeyFileName,
		BundleFileName:           f.BundleFileName,
		CertMode:                 os.FileMode(f.CertMode),
		KeyMode:                  os.FileMode(f.KeyMode),
		Owner:                    f.fileOwner(),
		AllowWorldWritableDir:    f.AllowWorldWritableDir,
		SVID:                     f.SVID,
		IncludeFederatedDomains:  f.IncludeFederatedDomains,
		FederatedBundle:          filesink.FederatedMode(f.FederatedBundle),
		AddIntermediatesToBundle: f.AddIntermediatesToBundle,
		OmitExpired:              f.OmitExpired,
		MinSwapInterval:          time.Duration(f.MinSwapInterval),
	}
	return fc
}

func (f Folder) fileOwner() *filesink.Owner {
	if f.Owner == nil {
		return nil
	}
	return &filesink.Owner{UID: f.Owner.UID, GID: f.Owner.GID}
}

// JWTFolder is the folder's JWT part as jwtfiles takes it, without its
// reload runner (the folder's, shared with its X.509 writer).
func (f Folder) JWTFolder() jwtfiles.Folder {
	jf := jwtfiles.Folder{
		Dir:            f.Dir,
		BundleFileName: f.JWTBundleFileName,
		SVID:           f.SVID,
		Mode:           os.FileMode(f.JWTMode),
		BundleMode:     os.FileMode(f.JWTBundleMode),
		Owner:          f.fileOwner(),
	}
	for _, j := range f.JWTSVIDs {
		jf.SVIDs = append(jf.SVIDs, jwtfiles.SVIDFile{Audience: j.Audience, ExtraAudiences: j.ExtraAudiences, FileName: j.FileName})
	}
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
		return reload.SignalAction{PIDFile: a.Signal.PIDFile, Signal: a.Signal.Signal.Signal()}
	case a.Exec != nil:
		return reload.ExecAction{Command: a.Exec.Command, Timeout: time.Duration(a.Exec.Timeout)}
	case a.Postgres != nil:
		return pgreload.Action{DSN: a.Postgres.DSN, Timeout: time.Duration(a.Postgres.Timeout)}
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
	percent := DefaultMinValidityPercent
	if a.MinValidityPercent != nil {
		percent = *a.MinValidityPercent
	}
	return admin.Config{
		MinValidity:        time.Duration(a.MinValidity),
		MinValidityPercent: percent,
		RequireSDSAck:      a.RequireSDSAck,
		MaxConnections:     a.MaxConnections,
		LivenessPath:       a.LivenessPath,
		ReadinessPath:      a.ReadinessPath,
	}
}
