// Command release builds what `make release VERSION=vX.Y.Z` publishes,
// offline, into one directory. It has two steps, because the image
// (tools/image, its own module) is built from the binaries in between:
//
//	release binaries -version vX.Y.Z -dist DIR
//	    every main package under cmd/ (go list ./cmd/...) for every
//	    platform, static, stamped with the version (-X main.version) and
//	    the commit and commit time (the VCS stamp Go records); a CycloneDX
//	    SBOM per binary, read from the binary's own build information by
//	    cyclonedx-gomod; the release notes, cut from CHANGELOG.md.
//	release sums -dist DIR
//	    SHA256SUMS over every file under DIR, in the format
//	    `sha256sum -c` reads.
//
// Every output is a function of the commit and the version: the SBOMs
// take their time from the commit and their serial number from the binary.
package main

import (
	"bytes"
	"errors"
	"flag"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"time"

	"golang.org/x/mod/semver"
)

func main() {
	if err := run(os.Args[1:]); err != nil {
		fmt.Fprintln(os.Stderr, "release:", err)
		os.Exit(1)
	}
}

func run(args []string) error {
	if len(args) == 0 {
		return errors.New("usage: release binaries -version vX.Y.Z -dist DIR | release sums -dist DIR")
	}
	fs := flag.NewFlagSet("release "+args[0], flag.ContinueOnError)
	var c Config
	fs.StringVar(&c.Root, "root", filepath.Join("..", ".."), "the sds-bridge checkout")
	fs.StringVar(&c.Version, "version", "", "the version to stamp, vX.Y.Z (semantic versioning)")
	fs.StringVar(&c.Dist, "dist", "", "the directory to write into (required)")
	fs.StringVar(&c.commit, "revision", "", "the commit make stamps into the image; the release refuses to build another")
	platforms := fs.String("platforms", "linux/amd64,linux/arm64", "GOOS/GOARCH pairs, comma-separated")
	if err := fs.Parse(args[1:]); err != nil {
		return err
	}
	if c.Dist == "" {
		return errors.New("-dist is required")
	}
	c.Platforms = strings.Split(*platforms, ",")
	switch args[0] {
	case "binaries":
		return Binaries(c)
	case "sums":
		return WriteSums(c.Dist)
	}
	return fmt.Errorf("unknown step %q (binaries or sums)", args[0])
}

// Config is one release.
type Config struct {
	Root      string   // the checkout
	Version   string   // vX.Y.Z[-pre]
	Dist      string   // where the artifacts go
	Platforms []string // GOOS/GOARCH

	commit     string    // HEAD
	commitTime time.Time // HEAD's committer time
	modified   bool      // tracked files differ from HEAD
}

// readCommit finds the commit being released, its time and whether the
// checkout differs from it (a release from a modified tree says "-dirty").
func (c *Config) readCommit() error {
	out, err := exec.Command("git", "-C", c.Root, "log", "-1", "--format=%H %ct").Output()
	if err != nil {
		return fmt.Errorf("reading the commit (a release is built from a git checkout): %w", err)
	}
	var head string
	var secs int64
	if _, err := fmt.Sscan(string(out), &head, &secs); err != nil {
		return fmt.Errorf("reading the commit: git log said %q", out)
	}
	// make reads the commit once, for the image's labels; the binaries
	// must be of the same one even if HEAD moves while the release builds.
	if c.commit != "" && c.commit != head {
		return fmt.Errorf("HEAD is %s, but the release is of %s: HEAD moved; run make release again", head, c.commit)
	}
	c.commit = head
	c.commitTime = time.Unix(secs, 0).UTC()
	status, err := exec.Command("git", "-C", c.Root, "status", "--porcelain", "--untracked-files=no").Output()
	if err != nil {
		return fmt.Errorf("reading the checkout's state: %w", err)
	}
	c.modified = len(bytes.TrimSpace(status)) > 0
	if c.modified {
		fmt.Fprintln(os.Stderr, "release: warning: the checkout has uncommitted changes; the binaries say -dirty")
	}
	return nil
}

// CheckVersion accepts what semantic versioning and Go modules both call a
// release version: vMAJOR.MINOR.PATCH with an optional pre-release, in the
// canonical form (no "v1.2", no build metadata, which Go drops).
func CheckVersion(v string) error {
	if !semver.IsValid(v) || semver.Canonical(v) != v {
		return fmt.Errorf("version %q is not a semantic version vMAJOR.MINOR.PATCH (e.g. v0.1.0)", v)
	}
	return nil
}

// Binaries builds every command for every platform, an SBOM beside each,
// and the release notes.
func Binaries(c Config) error {
	if err := CheckVersion(c.Version); err != nil {
		return err
	}
	if err := c.readCommit(); err != nil {
		return err
	}
	notes, err := releaseNotes(c.Root, c.Version)
	if err != nil {
		return err
	}
	if err := os.MkdirAll(c.Dist, 0o755); err != nil {
		return err
	}
	if err := os.WriteFile(filepath.Join(c.Dist, NotesName(c.Version)), notes, 0o644); err != nil {
		return err
	}
	cmds, err := commands(c.Root)
	if err != nil {
		return err
	}
	for _, pkg := range cmds {
		for _, p := range c.Platforms {
			bin := filepath.Join(c.Dist, BinaryName(filepath.Base(pkg), c.Version, p))
			if err := build(c, pkg, p, bin); err != nil {
				return err
			}
			if err := writeSBOM(bin, c.Version, c.commitTime); err != nil {
				return fmt.Errorf("SBOM of %s: %w", filepath.Base(bin), err)
			}
		}
	}
	return nil
}

// BinaryName is a command's file name in a release: sds-bridge_v0.1.0_linux_amd64.
func BinaryName(command, version, platform string) string {
	return command + "_" + version + "_" + strings.ReplaceAll(platform, "/", "_")
}

// SBOMName is the CycloneDX SBOM beside a binary.
func SBOMName(binary string) string { return binary + ".cdx.json" }

// NotesName is the release notes' file name.
func NotesName(version string) string { return "sds-bridge_" + version + "_release-notes.md" }

// commands are the main packages under cmd/, so a new command is released
// without touching the release.
func commands(root string) ([]string, error) {
	cmd := exec.Command("go", "list", "-f", `{{if eq .Name "main"}}{{.ImportPath}}{{end}}`, "./cmd/...")
	cmd.Dir = root
	cmd.Stderr = os.Stderr
	out, err := cmd.Output()
	if err != nil {
		return nil, fmt.Errorf("listing the commands under cmd/: %w", err)
	}
	pkgs := strings.Fields(string(out))
	if len(pkgs) == 0 {
		return nil, errors.New("no main package under cmd/")
	}
	return pkgs, nil
}

// The package whose variables say which commit a binary was built from.
const buildinfoPkg = "github.com/sds-bridge/sds-bridge/admin"

// build makes one static binary. The commit is stamped with -X rather than
// by Go's VCS stamp, which a git worktree does not get: the binaries must
// not depend on how the tree was checked out. -trimpath keeps the
// builder's paths out, so two machines agree.
func build(c Config, pkg, platform, out string) error {
	goos, goarch, ok := strings.Cut(platform, "/")
	if !ok {
		return fmt.Errorf("platform %q is not GOOS/GOARCH", platform)
	}
	ldflags := fmt.Sprintf("-s -w -X main.version=%s -X %s.revision=%s -X %s.commitTime=%s -X %s.modified=%t",
		c.Version, buildinfoPkg, c.commit, buildinfoPkg, c.commitTime.Format(time.RFC3339), buildinfoPkg, c.modified)
	cmd := exec.Command("go", "build", "-trimpath", "-buildvcs=false", "-ldflags", ldflags, "-o", out, pkg)
	cmd.Dir = c.Root
	cmd.Env = append(os.Environ(), "CGO_ENABLED=0", "GOOS="+goos, "GOARCH="+goarch, "GOFLAGS=")
	var stderr bytes.Buffer
	cmd.Stderr = &stderr
	if err := cmd.Run(); err != nil {
		return fmt.Errorf("building %s for %s: %w\n%s", pkg, platform, err, stderr.Bytes())
	}
	return nil
}
