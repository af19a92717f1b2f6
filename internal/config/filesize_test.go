package config

import (
	"os"
	"path/filepath"
	"strings"
	"testing"
)

// A config file over MaxFileSize is refused naming the file and the
// bound, without being read further; one at the bound is read (here a
// comment padding a valid config).
func TestAConfigFileOverTheBoundIsRefusedByName(t *testing.T) {
	dir := t.TempDir()
	body := "files:\n  - dir: /certs\n#"
	at := filepath.Join(dir, "at.yaml")
	over := filepath.Join(dir, "over.yaml")
	pad := strings.Repeat("x", MaxFileSize-len(body))
	if err := os.WriteFile(at, []byte(body+pad), 0o600); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(over, []byte(body+pad+"x"), 0o600); err != nil {
		t.Fatal(err)
	}
	if _, err := Load(at); err != nil {
		t.Errorf("a config of exactly %d bytes: %v", MaxFileSize, err)
	}
	_, err := Load(over)
	if err == nil || !strings.Contains(err.Error(), over) || !strings.Contains(err.Error(), "larger than 1048576 bytes") {
		t.Errorf("a config of %d bytes: %v; want an error naming the file and the bound", MaxFileSize+1, err)
	}
}
