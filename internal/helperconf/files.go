package helperconf

import (
	"fmt"
	"io"
	"path/filepath"
	"strings"

	"github.com/sds-bridge/sds-bridge/internal/config"
)

// Import writes the YAML for the helper.conf at path to stdout and the notes
// to stderr (import-spiffe-helper). Without allowUnsupported, a helper.conf
// with keys the conversion cannot carry over gives an error and no YAML.
func Import(stdout, stderr io.Writer, path string, opts Options, allowUnsupported bool) error {
	res, _, err := ConvertFile(path, opts)
	if res != nil {
		PrintNotes(stderr, path, res.Notes)
	}
	if err != nil {
		// No YAML: `> sds-bridge.yaml` must not leave a config run refuses.
		return err
	}
	if keys := res.Unsupported(); len(keys) > 0 && !allowUnsupported {
		// Nor one that silently behaves otherwise than helper.conf did.
		return fmt.Errorf("%w; --allow-unsupported prints the YAML anyway", unsupportedError(path, keys))
	}
	_, err = stdout.Write(res.YAML)
	return err
}

// Load converts the helper.conf at path for --spiffe-helper-config, notes
// on stderr, refusing keys it cannot carry over. The config is not yet
// defaulted; once is daemon_mode = false.
func Load(stderr io.Writer, path string, opts Options) (cfg *config.Config, once bool, err error) {
	res, cfg, err := ConvertFile(path, opts)
	if err != nil {
		return nil, false, err
	}
	PrintNotes(stderr, path, res.Notes)
	if keys := res.Unsupported(); len(keys) > 0 {
		// A daemon must not start doing less than helper.conf said
		// with the difference only in its log: convert, review, run.
		return nil, false, fmt.Errorf("%w; convert it with `sds-bridge import-spiffe-helper --allow-unsupported %s > sds-bridge.yaml`, review the NOT SUPPORTED comments, then use --config sds-bridge.yaml",
			unsupportedError(path, keys), path)
	}
	return cfg, res.Once, nil
}

// ConvertFile is Convert and Result.Config for the helper.conf at path. A
// refused conversion still returns its notes.
func ConvertFile(path string, opts Options) (*Result, *config.Config, error) {
	src, err := config.ReadFile(path)
	if err != nil {
		return nil, nil, fmt.Errorf("spiffe-helper config: %w", err)
	}
	if opts.BaseDir != "" {
		if opts.BaseDir, err = filepath.Abs(opts.BaseDir); err != nil {
			return nil, nil, fmt.Errorf("--base-dir: %w", err)
		}
	}
	res, err := Convert(src, opts)
	if err != nil {
		return nil, nil, fmt.Errorf("spiffe-helper config %s: %w", path, err)
	}
	cfg, err := res.Config()
	if err != nil {
		return res, nil, fmt.Errorf("spiffe-helper config %s: %w", path, err)
	}
	return res, cfg, nil
}

// unsupportedError leaves what to do about keys to the caller.
func unsupportedError(path string, keys []string) error {
	return fmt.Errorf("spiffe-helper config %s: cannot carry over %s (see the notes above)", path, strings.Join(keys, ", "))
}

// PrintNotes writes each note about the helper.conf at path on a line.
func PrintNotes(w io.Writer, path string, notes []Note) {
	for _, n := range notes {
		fmt.Fprintf(w, "sds-bridge: %s: %s\n", path, n)
	}
}
