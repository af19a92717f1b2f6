package config

import (
	"bytes"
	"path/filepath"
	"strings"
	"testing"
)

// FuzzParse feeds arbitrary bytes through Parse, Default and Validate: no
// input may panic or hang, an error is one message naming what is wrong,
// and a config that validates keeps the promises the rest of the bridge
// relies on.
func FuzzParse(f *testing.F) {
	f.Add([]byte("files:\n  - dir: /certs\n"))
	f.Add([]byte("sds:\n  socket: /run/s.sock\n  socket_mode: \"0660\"\n  allowed_gids: [101]\nfiles:\n  - dir: /a\n    key_mode: \"0640\"\n    owner: \"999:999\"\n    on_rotate:\n      - signal: {pid_file: /p}\n"))
	f.Add([]byte("a: &a [*a, *a]\n"))
	f.Fuzz(func(t *testing.T, data []byte) {
		c, err := Parse(bytes.NewReader(data))
		if err != nil {
			if c != nil {
				t.Errorf("Parse returned a config with error %v", err)
			}
			if err.Error() == "" {
				t.Error("empty error")
			}
			return
		}
		c.Default()
		if err := c.Validate(); err != nil {
			if err.Error() == "" {
				t.Error("empty error")
			}
			return
		}
		if c.SDS.On() {
			if !filepath.IsAbs(c.SDS.SocketPath) {
				t.Errorf("valid config with relative socket %q", c.SDS.SocketPath)
			}
			if c.SDS.SocketMode&0o007 != 0 {
				t.Errorf("valid config with socket mode %s", c.SDS.SocketMode)
			}
			for _, id := range append(append([]int(nil), c.SDS.AllowedUIDs...), c.SDS.AllowedGIDs...) {
				if id < 0 || id >= 1<<32-1 {
					t.Errorf("valid config with id %d", id)
				}
			}
		} else if len(c.Files) == 0 {
			t.Error("valid config that delivers nothing")
		}
		dirs := map[string]bool{}
		for _, fo := range c.Files {
			if !filepath.IsAbs(fo.Dir) || dirs[filepath.Clean(fo.Dir)] {
				t.Errorf("valid config with dir %q", fo.Dir)
			}
			dirs[filepath.Clean(fo.Dir)] = true
			fc := fo.WithDefaults()
			if fc.KeyMode&0o007 != 0 || fc.KeyMode == 0 || fc.CertMode&0o002 != 0 {
				t.Errorf("valid config with key mode %s, cert mode %s", fc.KeyMode, fc.CertMode)
			}
			for _, name := range []string{fc.CertFileName, fc.KeyFileName, fc.BundleFileName} {
				if strings.ContainsRune(name, '/') || strings.HasPrefix(name, "..") {
					t.Errorf("valid config with file name %q", name)
				}
			}
			for _, a := range fo.OnRotate {
				if a.Exec != nil && (len(a.Exec.Command) == 0 || a.Exec.Timeout < 0) {
					t.Errorf("valid config with exec action %+v", a.Exec)
				}
			}
		}
	})
}
