package main

import (
	"bufio"
	"bytes"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"regexp"
	"runtime/debug"
	"slices"
	"strings"
	"time"

	cdx "github.com/CycloneDX/cyclonedx-go"
	"github.com/CycloneDX/cyclonedx-gomod/pkg/generate/bin"
	"github.com/google/uuid"
	"github.com/rs/zerolog"
)

// The tool that writes the SBOMs, named in each one's metadata.
const sbomTool = "github.com/CycloneDX/cyclonedx-gomod"

// sbomNamespace makes the SBOM's serial number a name-based UUID of the
// binary's SHA-256: one binary, one serial number, whoever builds it.
var sbomNamespace = uuid.MustParse("6ba7b811-9dad-11d1-80b4-00c04fd430c8") // RFC 4122 URL namespace

// writeSBOM writes the CycloneDX SBOM of one binary: the modules its build
// information names (so exactly what was linked for that platform), the Go
// standard library, the build settings and the binary's hashes.
func writeSBOM(binary, version string, commitTime time.Time) error {
	g, err := bin.NewGenerator(binary,
		bin.WithLogger(zerolog.Nop()),
		bin.WithIncludeStdlib(true),
		// Full purls carry goos/goarch from `go env` of this process,
		// not of the binary (an arm64 SBOM would say amd64); the
		// binary's own GOOS/GOARCH are in the build properties.
		bin.WithShortPURLS(true),
		// Go records the commit's pseudo-version for a checkout
		// build; the release is this version.
		bin.WithVersionOverride(version))
	if err != nil {
		return err
	}
	bom, err := g.Generate()
	if err != nil {
		return err
	}
	sum, err := fileSHA256(binary)
	if err != nil {
		return err
	}
	bom.SerialNumber = uuid.NewSHA1(sbomNamespace, []byte("sha256:"+sum)).URN()
	bom.Metadata.Timestamp = commitTime.Format(time.RFC3339)
	bom.Metadata.Component.Licenses = &cdx.Licenses{{License: &cdx.License{ID: "Apache-2.0"}}}
	bom.Metadata.Tools = &cdx.ToolsChoice{Components: &[]cdx.Component{{
		Type: cdx.ComponentTypeApplication, Name: "cyclonedx-gomod", Version: toolVersion(sbomTool),
	}}}
	var buf bytes.Buffer
	if err := cdx.NewBOMEncoder(&buf, cdx.BOMFileFormatJSON).SetPretty(true).Encode(bom); err != nil {
		return err
	}
	return os.WriteFile(SBOMName(binary), buf.Bytes(), 0o644)
}

// toolVersion is the version of a module this program is built with.
func toolVersion(path string) string {
	if info, ok := debug.ReadBuildInfo(); ok {
		for _, d := range info.Deps {
			if d.Path == path {
				return d.Version
			}
		}
	}
	return "unknown"
}

func fileSHA256(path string) (string, error) {
	b, err := os.ReadFile(path)
	if err != nil {
		return "", err
	}
	h := sha256.Sum256(b)
	return hex.EncodeToString(h[:]), nil
}

// releaseNotes is the CHANGELOG.md section of the version (Keep a
// Changelog: "## [0.1.0] - 2026-12-05" up to the next "## "), with the
// link definitions at the end of the file that it uses. A release without
// a changelog entry is refused.
func releaseNotes(root, version string) ([]byte, error) {
	b, err := os.ReadFile(filepath.Join(root, "CHANGELOG.md"))
	if err != nil {
		return nil, err
	}
	heading := "## [" + strings.TrimPrefix(version, "v") + "]"
	var section []string
	in := false
	sc := bufio.NewScanner(bytes.NewReader(b))
	for sc.Scan() {
		line := sc.Text()
		switch {
		case strings.HasPrefix(line, "## "):
			in = strings.HasPrefix(line, heading)
		case in && linkDefinition.MatchString(line):
			in = false // the link definitions that close the file
		}
		if in {
			section = append(section, line)
		}
	}
	if err := sc.Err(); err != nil {
		return nil, err
	}
	if len(section) == 0 {
		return nil, fmt.Errorf("CHANGELOG.md has no %q section: write the release's entry first", heading)
	}
	notes := strings.TrimSpace(strings.Join(section, "\n"))
	notes = "# sds-bridge " + version + strings.TrimPrefix(notes, heading) + "\n"
	return []byte(notes), nil
}

// linkDefinition is a Markdown link reference definition: "[0.1.0]: https://…".
var linkDefinition = regexp.MustCompile(`^\[[^\]]+\]: `)

// SumsName is the checksum file.
const SumsName = "SHA256SUMS"

// WriteSums writes SHA256SUMS over every regular file under dist (the OCI
// layout's too), sorted by path, as `sha256sum -c SHA256SUMS` checks them.
func WriteSums(dist string) error {
	var files []string
	err := filepath.WalkDir(dist, func(p string, d fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		rel, err := filepath.Rel(dist, p)
		if err != nil {
			return err
		}
		switch {
		case d.Type().IsRegular() && rel != SumsName:
			files = append(files, filepath.ToSlash(rel))
		case !d.IsDir() && !d.Type().IsRegular():
			return fmt.Errorf("%s is neither a file nor a directory", p)
		}
		return nil
	})
	if err != nil {
		return err
	}
	if len(files) == 0 {
		return errors.New("nothing to sum in " + dist)
	}
	slices.Sort(files)
	var out strings.Builder
	for _, f := range files {
		sum, err := fileSHA256(filepath.Join(dist, filepath.FromSlash(f)))
		if err != nil {
			return err
		}
		fmt.Fprintf(&out, "%s  %s\n", sum, f)
	}
	return os.WriteFile(filepath.Join(dist, SumsName), []byte(out.String()), 0o644)
}
