package config

import (
	"errors"
	"fmt"
	"path/filepath"

	"github.com/sds-bridge/sds-bridge/filesink"
)

// Overrides are what run and dev take from their flags, laid over the
// config file's values (or a converted helper.conf's) before Default.
type Overrides struct {
	// SDSSocket (--sds-socket) and Dir (--dir, with Layout) are made
	// absolute.
	SDSSocket   string
	Dir, Layout string
	// Admin is --admin when given; "" turns the listener off.
	Admin *string
	// Program is what follows "--".
	Program []string
	// Then changes the result last, before the Once rules: run's
	// --workload-api, dev's own Workload API and defaults.
	Then func(*Config)
	// Once (--once) serves no SDS and no admin: nothing would be there to
	// answer Envoy or a probe a moment later.
	Once bool
}

// Apply lays o over c.
func (o Overrides) Apply(c *Config) error {
	if o.SDSSocket != "" {
		abs, err := filepath.Abs(o.SDSSocket)
		if err != nil {
			return fmt.Errorf("--sds-socket: %w", err)
		}
		c.SDS.SocketPath = abs
	}
	if o.Dir != "" {
		abs, err := filepath.Abs(o.Dir)
		if err != nil {
			return fmt.Errorf("--dir: %w", err)
		}
		c.Files = append(c.Files, Folder{Config: filesink.Config{Dir: abs, Layout: filesink.Layout(o.Layout)}})
	}
	if o.Admin != nil {
		listen := *o.Admin
		c.Admin.Listen = &listen
	}
	if len(o.Program) > 0 {
		c.Supervise.Command = o.Program
	}
	if o.Then != nil {
		o.Then(c)
	}
	if !o.Once {
		return nil
	}
	if c.Supervise.On() {
		return errors.New("--once and a program to supervise (supervise.command or -- PROGRAM): a one-shot run starts no program")
	}
	off, none := false, ""
	c.SDS.Enabled = &off
	c.Admin.Listen = &none
	if len(c.Files) == 0 {
		return errors.New("--once: no credential folder to write (files[] or --dir)")
	}
	return nil
}
