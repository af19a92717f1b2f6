package main

import (
	"flag"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"strings"

	"github.com/sds-bridge/sds-bridge/internal/config"
	"github.com/sds-bridge/sds-bridge/internal/helperconf"
)

// runImport prints the sds-bridge YAML equivalent to a spiffe-helper
// helper.conf on stdout and every note about it on stderr.
func runImport(args []string, stdout, stderr io.Writer) error {
	fs := flag.NewFlagSet("sds-bridge import-spiffe-helper", flag.ContinueOnError)
	fs.SetOutput(stderr)
	baseDir := fs.String("base-dir", "", "spiffe-helper's working directory, against which relative cert_dir and pid_file_name are resolved (default: the current directory)")
	allow := fs.Bool("allow-unsupported", false, "print the YAML even when some helper.conf keys cannot be carried over (each is a NOT SUPPORTED comment in it)")
	fs.Usage = func() {
		fmt.Fprintln(stderr, "Usage: sds-bridge import-spiffe-helper [--base-dir DIR] [--allow-unsupported] helper.conf > sds-bridge.yaml")
		fs.PrintDefaults()
	}
	if err := fs.Parse(args); err != nil {
		return err
	}
	if fs.NArg() != 1 {
		fs.Usage()
		return exitCode(2)
	}
	res, _, err := convertHelperConf(fs.Arg(0), *baseDir)
	if res != nil {
		printNotes(stderr, fs.Arg(0), res.Notes)
	}
	if err != nil {
		// No YAML: `> sds-bridge.yaml` must not leave a config run refuses.
		return err
	}
	if keys := res.Unsupported(); len(keys) > 0 && !*allow {
		// Nor one that silently behaves otherwise than helper.conf did.
		return fmt.Errorf("%w; --allow-unsupported prints the YAML anyway", unsupportedError(fs.Arg(0), keys))
	}
	_, err = stdout.Write(res.YAML)
	return err
}

// convertHelperConf converts the helper.conf at path and checks the result
// as run checks a config, naming helper.conf's keys; the Config is parsed,
// not yet defaulted. A refused conversion still returns its notes.
func convertHelperConf(path, baseDir string) (*helperconf.Result, *config.Config, error) {
	src, err := os.ReadFile(path)
	if err != nil {
		return nil, nil, fmt.Errorf("spiffe-helper config: %w", err)
	}
	if baseDir != "" {
		if baseDir, err = filepath.Abs(baseDir); err != nil {
			return nil, nil, fmt.Errorf("--base-dir: %w", err)
		}
	}
	res, err := helperconf.Convert(src, helperconf.Options{BaseDir: baseDir})
	if err != nil {
		return nil, nil, fmt.Errorf("spiffe-helper config %s: %w", path, err)
	}
	cfg, err := res.Config()
	if err != nil {
		return res, nil, fmt.Errorf("spiffe-helper config %s: %w", path, err)
	}
	return res, cfg, nil
}

// unsupportedError names the helper.conf keys a conversion does not carry
// over; the caller says what to do about them.
func unsupportedError(path string, keys []string) error {
	return fmt.Errorf("spiffe-helper config %s: cannot carry over %s (see the notes above)", path, strings.Join(keys, ", "))
}

func printNotes(w io.Writer, path string, notes []helperconf.Note) {
	for _, n := range notes {
		fmt.Fprintf(w, "sds-bridge: %s: %s\n", path, n)
	}
}
