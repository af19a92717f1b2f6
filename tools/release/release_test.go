package main

import (
	"archive/tar"
	"bufio"
	"bytes"
	"crypto/sha256"
	"debug/elf"
	"encoding/hex"
	"errors"
	"io"
	"log"
	"net/http/httptest"
	"net/url"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	cdx "github.com/CycloneDX/cyclonedx-go"
	"github.com/google/go-containerregistry/pkg/name"
	"github.com/google/go-containerregistry/pkg/registry"
	v1 "github.com/google/go-containerregistry/pkg/v1"
	"github.com/google/go-containerregistry/pkg/v1/layout"
	"github.com/google/go-containerregistry/pkg/v1/remote"
	"golang.org/x/mod/modfile"
)

// The version CHANGELOG.md has an entry for: the release notes come from it.
const testVersion = "v0.1.0"

var platforms = map[string]elf.Machine{"linux/amd64": elf.EM_X86_64, "linux/arm64": elf.EM_AARCH64}

func repoRoot(t *testing.T) string {
	t.Helper()
	root, err := filepath.Abs(filepath.Join("..", ".."))
	if err != nil {
		t.Fatal(err)
	}
	return root
}

// makeRelease runs the real `make release` into dir and returns its output.
func makeRelease(t *testing.T, dir string) {
	t.Helper()
	start := time.Now()
	cmd := exec.Command("make", "--no-print-directory", "-C", repoRoot(t), "release", "VERSION="+testVersion, "DIST="+dir)
	cmd.Env = append(os.Environ(), "MAKEFLAGS=")
	if out, err := cmd.CombinedOutput(); err != nil {
		t.Fatalf("make release: %v\n%s", err, out)
	}
	t.Logf("make release took %v", time.Since(start).Round(time.Second))
}

var (
	firstOnce sync.Once
	firstDir  string
)

// released is one `make release` shared by the tests that only read it.
func released(t *testing.T) string {
	firstOnce.Do(func() {
		dir, err := os.MkdirTemp("", "sds-bridge-release-test-")
		if err != nil {
			t.Fatal(err)
		}
		firstDir = filepath.Join(dir, "dist")
		makeRelease(t, firstDir)
	})
	if _, err := os.Stat(filepath.Join(firstDir, SumsName)); err != nil {
		t.Fatal("make release failed in an earlier test")
	}
	return firstDir
}

func TestMain(m *testing.M) {
	code := m.Run()
	if firstDir != "" {
		os.RemoveAll(filepath.Dir(firstDir))
	}
	os.Exit(code)
}

// commands are the main packages the release must hold, found as the
// release finds them, so a new command under cmd/ is checked too.
func testCommands(t *testing.T) []string {
	t.Helper()
	pkgs, err := commands(repoRoot(t))
	if err != nil {
		t.Fatal(err)
	}
	names := make([]string, len(pkgs))
	for i, p := range pkgs {
		names[i] = filepath.Base(p)
	}
	return names
}

func sha256Hex(b []byte) string {
	h := sha256.Sum256(b)
	return hex.EncodeToString(h[:])
}

// TestSHA256SUMSCoversEveryArtifact: SHA256SUMS names every file of the
// release exactly once, with its SHA-256, in the format sha256sum -c reads.
func TestSHA256SUMSCoversEveryArtifact(t *testing.T) {
	dist := released(t)
	b, err := os.ReadFile(filepath.Join(dist, SumsName))
	if err != nil {
		t.Fatal(err)
	}
	listed := map[string]string{}
	sc := bufio.NewScanner(bytes.NewReader(b))
	for sc.Scan() {
		sum, file, ok := strings.Cut(sc.Text(), "  ")
		if !ok || len(sum) != 64 {
			t.Fatalf("not a sha256sum line: %q", sc.Text())
		}
		if _, dup := listed[file]; dup {
			t.Errorf("%s listed twice", file)
		}
		listed[file] = sum
	}
	var onDisk []string
	err = filepath.WalkDir(dist, func(p string, d os.DirEntry, err error) error {
		if err != nil || d.IsDir() {
			return err
		}
		rel, _ := filepath.Rel(dist, p)
		if rel != SumsName {
			onDisk = append(onDisk, filepath.ToSlash(rel))
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	if len(onDisk) != len(listed) {
		t.Errorf("%d files in the release, %d in SHA256SUMS", len(onDisk), len(listed))
	}
	for _, f := range onDisk {
		body, err := os.ReadFile(filepath.Join(dist, f))
		if err != nil {
			t.Fatal(err)
		}
		if got := sha256Hex(body); listed[f] != got {
			t.Errorf("%s: SHA256SUMS says %q, the file hashes to %s", f, listed[f], got)
		}
	}
	if out, err := exec.Command("sha256sum", "--version").CombinedOutput(); err == nil && len(out) > 0 {
		cmd := exec.Command("sha256sum", "--quiet", "-c", SumsName)
		cmd.Dir = dist
		if out, err := cmd.CombinedOutput(); err != nil {
			t.Errorf("sha256sum -c: %v\n%s", err, out)
		}
	}
}

// TestEveryCommandIsAStaticBinaryForEachPlatform: every main package under
// cmd/ is in the release for linux/amd64 and linux/arm64, each an ELF for
// that machine with no loader; the host's sds-bridge says the version and
// the commit, and nothing that says dev.
func TestEveryCommandIsAStaticBinaryForEachPlatform(t *testing.T) {
	dist := released(t)
	for _, c := range testCommands(t) {
		for p, machine := range platforms {
			path := filepath.Join(dist, BinaryName(c, testVersion, p))
			f, err := elf.Open(path)
			if err != nil {
				t.Errorf("%s %s: %v", c, p, err)
				continue
			}
			if f.Machine != machine {
				t.Errorf("%s is ELF machine %v, want %v", path, f.Machine, machine)
			}
			for _, prog := range f.Progs {
				if prog.Type == elf.PT_INTERP || prog.Type == elf.PT_DYNAMIC {
					t.Errorf("%s has %v: not static", path, prog.Type)
				}
			}
			f.Close()
		}
	}
	out, err := exec.Command(filepath.Join(dist, BinaryName("sds-bridge", testVersion, "linux/amd64")), "version").CombinedOutput()
	if err != nil {
		t.Skipf("the amd64 binary does not run here: %v", err)
	}
	rev, err := exec.Command("git", "-C", repoRoot(t), "rev-parse", "--short=12", "HEAD").Output()
	if err != nil {
		t.Fatal(err)
	}
	want := "sds-bridge " + testVersion + " (revision " + strings.TrimSpace(string(rev))
	if !strings.HasPrefix(string(out), want) || strings.Contains(string(out), "dev") {
		t.Errorf("version printed %q, want it to start with %q and not say dev", out, want)
	}
}

// TestEachBinaryHasAnSBOMNamingWhatItLinks parses every SBOM back with
// cyclonedx-go: the main component is this release, for the binary's
// platform, with the binary's SHA-256, and the components hold the
// daemon's direct dependencies at the versions go.mod requires.
func TestEachBinaryHasAnSBOMNamingWhatItLinks(t *testing.T) {
	dist := released(t)
	gomod, err := os.ReadFile(filepath.Join(repoRoot(t), "go.mod"))
	if err != nil {
		t.Fatal(err)
	}
	mf, err := modfile.Parse("go.mod", gomod, nil)
	if err != nil {
		t.Fatal(err)
	}
	want := map[string]string{}
	for _, r := range mf.Require {
		if r.Mod.Path == "github.com/spiffe/go-spiffe/v2" || r.Mod.Path == "google.golang.org/grpc" {
			want[r.Mod.Path] = r.Mod.Version
		}
	}
	for _, c := range testCommands(t) {
		for p := range platforms {
			bin := filepath.Join(dist, BinaryName(c, testVersion, p))
			checkSBOM(t, bin, p, want)
		}
	}
}

func checkSBOM(t *testing.T, bin, platform string, deps map[string]string) {
	t.Helper()
	f, err := os.Open(SBOMName(bin))
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	var bom cdx.BOM
	if err := cdx.NewBOMDecoder(f, cdx.BOMFileFormatJSON).Decode(&bom); err != nil {
		t.Fatalf("%s: %v", SBOMName(bin), err)
	}
	body, err := os.ReadFile(bin)
	if err != nil {
		t.Fatal(err)
	}
	m := bom.Metadata.Component
	if m.Name != "github.com/sds-bridge/sds-bridge" || m.Version != testVersion {
		t.Errorf("%s: main component %s@%s", SBOMName(bin), m.Name, m.Version)
	}
	props := map[string]string{}
	for _, p := range *bom.Metadata.Properties {
		props[p.Name] = p.Value
	}
	goos, goarch, _ := strings.Cut(platform, "/")
	if props["cdx:gomod:build:env:GOOS"] != goos || props["cdx:gomod:build:env:GOARCH"] != goarch {
		t.Errorf("%s: built for %s/%s, want %s", SBOMName(bin), props["cdx:gomod:build:env:GOOS"], props["cdx:gomod:build:env:GOARCH"], platform)
	}
	if strings.Contains(m.PackageURL, "goarch=") && !strings.Contains(m.PackageURL, "goarch="+goarch) {
		t.Errorf("%s: purl %s is not for %s", SBOMName(bin), m.PackageURL, platform)
	}
	if got := props["cdx:gomod:binary:hash:SHA-256"]; got != sha256Hex(body) {
		t.Errorf("%s: binary hash %s, the binary hashes to %s", SBOMName(bin), got, sha256Hex(body))
	}
	found := map[string]string{}
	for _, comp := range *bom.Components {
		found[comp.Name] = comp.Version
	}
	for path, v := range deps {
		if found[path] != v {
			t.Errorf("%s: %s at %q, go.mod requires %s", SBOMName(bin), path, found[path], v)
		}
	}
}

// TestTheReleaseNotesAreTheChangelogEntry: the notes are CHANGELOG.md's
// section for the version, under a title naming it.
func TestTheReleaseNotesAreTheChangelogEntry(t *testing.T) {
	notes, err := os.ReadFile(filepath.Join(released(t), NotesName(testVersion)))
	if err != nil {
		t.Fatal(err)
	}
	log, err := os.ReadFile(filepath.Join(repoRoot(t), "CHANGELOG.md"))
	if err != nil {
		t.Fatal(err)
	}
	title, body, _ := strings.Cut(string(notes), "\n")
	if !strings.HasPrefix(title, "# sds-bridge "+testVersion+" - ") {
		t.Errorf("notes title %q", title)
	}
	if len(body) < 200 || !strings.Contains(string(log), strings.TrimSpace(body)) {
		t.Errorf("the notes are not CHANGELOG.md's entry:\n%s", notes)
	}
	if strings.Contains(string(notes), "Unreleased") {
		t.Error("the notes hold the Unreleased section")
	}
}

// TestAVersionThatIsNotSemverIsRefused, and one without a changelog entry,
// before anything is built.
func TestAVersionThatIsNotSemverIsRefused(t *testing.T) {
	for _, v := range []string{"", "1.2.3", "v1.2", "v1.2.3+build", "dev"} {
		if err := CheckVersion(v); err == nil {
			t.Errorf("CheckVersion(%q) accepted it", v)
		}
	}
	for _, v := range []string{"v0.1.0", "v1.0.0-rc.1"} {
		if err := CheckVersion(v); err != nil {
			t.Errorf("CheckVersion(%q): %v", v, err)
		}
	}
	dist := filepath.Join(t.TempDir(), "dist")
	err := Binaries(Config{Root: repoRoot(t), Version: "v99.0.0", Dist: dist, Platforms: []string{"linux/amd64"}})
	if err == nil || !strings.Contains(err.Error(), "CHANGELOG.md has no") {
		t.Errorf("a version without a changelog entry: %v", err)
	}
	if _, err := os.Stat(dist); !errors.Is(err, os.ErrNotExist) {
		t.Error("a refused release wrote something")
	}
}

// TestTheImageIndexIsPublishedAndPulledBack pushes the release's OCI index
// to an in-process registry, pulls it back by tag and by digest, and checks
// each platform's config and that its /sds-bridge is the release's binary
// for that machine.
func TestTheImageIndexIsPublishedAndPulledBack(t *testing.T) {
	dist := released(t)
	local, err := layout.ImageIndexFromPath(filepath.Join(dist, "sds-bridge_"+testVersion+"_oci"))
	if err != nil {
		t.Fatal(err)
	}
	top, err := local.IndexManifest()
	if err != nil {
		t.Fatal(err)
	}
	if len(top.Manifests) != 1 {
		t.Fatalf("index.json names %d manifests, want the one index", len(top.Manifests))
	}
	idx, err := local.ImageIndex(top.Manifests[0].Digest)
	if err != nil {
		t.Fatal(err)
	}
	srv := httptest.NewServer(registry.New(registry.Logger(log.New(io.Discard, "", 0))))
	defer srv.Close()
	u, err := url.Parse(srv.URL)
	if err != nil {
		t.Fatal(err)
	}
	tag, err := name.NewTag(u.Host + "/sds-bridge/sds-bridge:" + testVersion)
	if err != nil {
		t.Fatal(err)
	}
	if err := remote.WriteIndex(tag, idx); err != nil {
		t.Fatal(err)
	}
	byTag, err := remote.Index(tag)
	if err != nil {
		t.Fatal(err)
	}
	digest := top.Manifests[0].Digest
	if d, _ := byTag.Digest(); d != digest {
		t.Errorf("pulled by tag: %v, pushed %v", d, digest)
	}
	byDigest, err := remote.Index(tag.Context().Digest(digest.String()))
	if err != nil {
		t.Fatal(err)
	}
	checkPlatforms(t, dist, byDigest)
}

func checkPlatforms(t *testing.T, dist string, idx v1.ImageIndex) {
	t.Helper()
	im, err := idx.IndexManifest()
	if err != nil {
		t.Fatal(err)
	}
	var got []string
	for _, d := range im.Manifests {
		p := d.Platform.OS + "/" + d.Platform.Architecture
		got = append(got, p)
		img, err := idx.Image(d.Digest)
		if err != nil {
			t.Fatal(err)
		}
		checkImageConfig(t, img, p)
		bin := imageBinary(t, img)
		f, err := elf.NewFile(bytes.NewReader(bin))
		if err != nil {
			t.Fatalf("%s: /sds-bridge: %v", p, err)
		}
		if f.Machine != platforms[p] {
			t.Errorf("%s: /sds-bridge is ELF machine %v", p, f.Machine)
		}
		want, err := os.ReadFile(filepath.Join(dist, BinaryName("sds-bridge", testVersion, p)))
		if err != nil {
			t.Fatal(err)
		}
		if !bytes.Equal(bin, want) {
			t.Errorf("%s: /sds-bridge is not the release's binary", p)
		}
	}
	slices.Sort(got)
	if !slices.Equal(got, []string{"linux/amd64", "linux/arm64"}) {
		t.Errorf("index platforms %v", got)
	}
}

func checkImageConfig(t *testing.T, img v1.Image, platform string) {
	t.Helper()
	cf, err := img.ConfigFile()
	if err != nil {
		t.Fatal(err)
	}
	if p := cf.OS + "/" + cf.Architecture; p != platform {
		t.Errorf("config platform %s, index says %s", p, platform)
	}
	c := cf.Config
	if c.User != "65532:65532" || !slices.Equal(c.Entrypoint, []string{"/sds-bridge"}) || !slices.Equal(c.Cmd, []string{"run"}) {
		t.Errorf("%s: user %q entrypoint %q cmd %q", platform, c.User, c.Entrypoint, c.Cmd)
	}
	out, err := exec.Command("git", "-C", repoRoot(t), "log", "-1", "--format=%H %cI").Output()
	if err != nil {
		t.Fatal(err)
	}
	rev, when, _ := strings.Cut(strings.TrimSpace(string(out)), " ")
	for k, v := range map[string]string{"licenses": "Apache-2.0", "version": testVersion, "revision": rev, "title": "sds-bridge"} {
		if got := c.Labels["org.opencontainers.image."+k]; got != v {
			t.Errorf("%s: label %s = %q, want %q", platform, k, got, v)
		}
	}
	commit, err := time.Parse(time.RFC3339, when)
	if err != nil {
		t.Fatal(err)
	}
	if !cf.Created.Equal(commit) {
		t.Errorf("%s: created %v, want the commit time %v", platform, cf.Created.Time, commit)
	}
}

// imageBinary is /sds-bridge from the image's single layer.
func imageBinary(t *testing.T, img v1.Image) []byte {
	t.Helper()
	layers, err := img.Layers()
	if err != nil || len(layers) != 1 {
		t.Fatalf("layers %d: %v", len(layers), err)
	}
	rc, err := layers[0].Uncompressed()
	if err != nil {
		t.Fatal(err)
	}
	defer rc.Close()
	tr := tar.NewReader(rc)
	for {
		h, err := tr.Next()
		if errors.Is(err, io.EOF) {
			t.Fatal("the layer has no sds-bridge")
		}
		if err != nil {
			t.Fatal(err)
		}
		if h.Name == "sds-bridge" {
			b, err := io.ReadAll(tr)
			if err != nil {
				t.Fatal(err)
			}
			return b
		}
	}
}

// TestTheTarballHoldsTheSameIndex: the tarball's index.json names the
// layout's index, which podman load and docker load read.
func TestTheTarballHoldsTheSameIndex(t *testing.T) {
	dist := released(t)
	want, err := os.ReadFile(filepath.Join(dist, "sds-bridge_"+testVersion+"_oci", "index.json"))
	if err != nil {
		t.Fatal(err)
	}
	f, err := os.Open(filepath.Join(dist, "sds-bridge_"+testVersion+"_image.tar"))
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	tr := tar.NewReader(f)
	for {
		h, err := tr.Next()
		if err != nil {
			t.Fatalf("no index.json in the tarball: %v", err)
		}
		if h.Name == "index.json" {
			got, err := io.ReadAll(tr)
			if err != nil {
				t.Fatal(err)
			}
			if !bytes.Equal(got, want) {
				t.Errorf("tarball index.json %s, layout's %s", got, want)
			}
			return
		}
	}
}

// TestMakeReleaseTwiceGivesTheSameArtifacts builds the release a second
// time into another directory: SHA256SUMS, which names every artifact's
// hash (binaries, SBOMs, image blobs, notes), comes out byte for byte the
// same, so the image index digest does too. Both builds share the Go build
// cache; a cold-cache rebuild is what `make release` on another machine is.
func TestMakeReleaseTwiceGivesTheSameArtifacts(t *testing.T) {
	first := released(t)
	second := filepath.Join(t.TempDir(), "dist")
	makeRelease(t, second)
	a, err := os.ReadFile(filepath.Join(first, SumsName))
	if err != nil {
		t.Fatal(err)
	}
	b, err := os.ReadFile(filepath.Join(second, SumsName))
	if err != nil {
		t.Fatal(err)
	}
	if !bytes.Equal(a, b) {
		t.Errorf("two builds differ:\n%s\n---\n%s", a, b)
	}
}
