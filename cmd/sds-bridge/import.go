package main

import (
	"flag"
	"fmt"
	"io"

	"github.com/sds-bridge/sds-bridge/internal/config"
	"github.com/sds-bridge/sds-bridge/internal/helperconf"
)

// runImport prints the sds-bridge YAML equivalent to a spiffe-helper
// helper.conf on stdout and every note about it on stderr.
func runImport(args []string, stdout, stderr io.Writer) error {
	fs := flag.NewFlagSet("sds-bridge import-spiffe-helper", flag.ContinueOnError)
	fs.SetOutput(stderr)
	baseDir := fs.String("base-dir", "", "spiffe-helper's working directory, against which relative cert_dir and pid_file_name are resolved (default: the current directory)")
	var owner *config.Owner
	fs.Func("owner", "uid:gid to own the written files (files[].owner; the bridge must run as root): for a consumer that reads them as another user, such as mosquitto's `user`", ownerFunc(&owner))
	allow := fs.Bool("allow-unsupported", false, "print the YAML even when some helper.conf keys cannot be carried over (each is a NOT SUPPORTED comment in it)")
	fs.Usage = func() {
		fmt.Fprintln(stderr, "Usage: sds-bridge import-spiffe-helper [--base-dir DIR] [--owner UID:GID] [--allow-unsupported] helper.conf > sds-bridge.yaml")
		fs.PrintDefaults()
	}
	if err := parseFlags(fs, args); err != nil {
		return usageError(err)
	}
	if fs.NArg() != 1 {
		fs.Usage()
		return coded{code: exitUsage}
	}
	return helperconf.Import(stdout, stderr, fs.Arg(0), helperconf.Options{BaseDir: *baseDir, Owner: owner}, *allow)
}

// ownerFunc parses --owner uid:gid into *dst, as files[].owner reads it.
func ownerFunc(dst **config.Owner) func(string) error {
	return func(v string) error {
		uid, gid, err := config.ParseOwner(v)
		if err != nil {
			return err
		}
		*dst = &config.Owner{UID: uid, GID: gid}
		return nil
	}
}
