package main

import (
	"archive/tar"
	"bytes"
	"debug/elf"
	"errors"
	"io"
	"io/fs"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"slices"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	v1 "github.com/google/go-containerregistry/pkg/v1"
	"github.com/google/go-containerregistry/pkg/v1/layout"
	"github.com/google/go-containerregistry/pkg/v1/tarball"
)

const testVersion = "v9.8.7-imagetest"

// repoRoot is the sds-bridge checkout this tools module sits in.
func repoRoot(t *testing.T) string {
	t.Helper()
	root, err := filepath.Abs(filepath.Join("..", ".."))
	if err != nil {
		t.Fatal(err)
	}
	if _, err := os.Stat(filepath.Join(root, "cmd", "sds-bridge")); err != nil {
		t.Fatalf("not the sds-bridge checkout: %v", err)
	}
	return root
}

// makeImage runs the real `make image` (the recipe users run) with its
// output under dir, and returns the tarball's path and the image (OCI
// manifest) digest it printed.
func makeImage(t *testing.T, dir string) (path, digest string) {
	t.Helper()
	cmd := exec.Command("make", "--no-print-directory", "-C", repoRoot(t), "image", "BIN="+dir, "VERSION="+testVersion)
	cmd.Env = append(os.Environ(), "MAKEFLAGS=")
	out, err := cmd.CombinedOutput()
	if err != nil {
		t.Fatalf("make image: %v\n%s", err, out)
	}
	path = filepath.Join(dir, "sds-bridge-image.tar")
	lines := strings.Split(strings.TrimSpace(string(out)), "\n")
	f := strings.Fields(lines[len(lines)-1])
	if len(f) != 3 || f[0] != path || !strings.HasPrefix(f[2], "sha256:") {
		t.Fatalf("make image did not end with %q <tag> <digest>:\n%s", path, out)
	}
	return path, f[2]
}

var (
	firstOnce   sync.Once
	firstImage  string
	firstDigest string
	firstDir    string
)

// builtImage is one `make image` shared by the tests that only read it.
func builtImage(t *testing.T) (path, digest string) {
	firstOnce.Do(func() {
		dir, err := os.MkdirTemp("", "sds-bridge-image-test-")
		if err != nil {
			t.Fatal(err)
		}
		firstDir = dir
		firstImage, firstDigest = makeImage(t, dir)
	})
	if firstImage == "" {
		t.Fatal("make image failed in an earlier test")
	}
	return firstImage, firstDigest
}

func TestMain(m *testing.M) {
	code := m.Run()
	if firstDir != "" {
		os.RemoveAll(firstDir)
	}
	os.Exit(code)
}

// contentIDs are what both views of the tarball share: the config digest
// (Docker's image ID) and the layer digests. The docker-save view has no
// manifest of its own (go-containerregistry synthesizes one), so its
// manifest digest is not the image's.
func contentIDs(t *testing.T, img v1.Image) []v1.Hash {
	t.Helper()
	cfg, err := img.ConfigName()
	if err != nil {
		t.Fatal(err)
	}
	ids := []v1.Hash{cfg}
	layers, err := img.Layers()
	if err != nil {
		t.Fatal(err)
	}
	for _, l := range layers {
		d, err := l.Digest()
		if err != nil {
			t.Fatal(err)
		}
		ids = append(ids, d)
	}
	return ids
}

// TestImageRunsTheStaticBinaryAsTheNonRootUser opens what `make image`
// wrote, as `docker load` would (manifest.json), and checks the config the
// Dockerfile sets: user, entrypoint, cmd, working dir, every OCI label.
func TestImageRunsTheStaticBinaryAsTheNonRootUser(t *testing.T) {
	path, _ := builtImage(t)
	img, err := tarball.ImageFromPath(path, nil)
	if err != nil {
		t.Fatal(err)
	}
	cf, err := img.ConfigFile()
	if err != nil {
		t.Fatal(err)
	}
	c := cf.Config
	if c.User != "65532:65532" {
		t.Errorf("User = %q, want 65532:65532", c.User)
	}
	if !slices.Equal(c.Entrypoint, []string{"/sds-bridge"}) || !slices.Equal(c.Cmd, []string{"run"}) {
		t.Errorf("Entrypoint %q Cmd %q, want [/sds-bridge] [run]", c.Entrypoint, c.Cmd)
	}
	if c.WorkingDir != "/" {
		t.Errorf("WorkingDir = %q", c.WorkingDir)
	}
	if cf.OS != "linux" || cf.Architecture == "" {
		t.Errorf("platform %s/%s", cf.OS, cf.Architecture)
	}
	rev, err := exec.Command("git", "-C", repoRoot(t), "rev-parse", "HEAD").Output()
	if err != nil {
		t.Fatal(err)
	}
	want := map[string]string{
		"org.opencontainers.image.title":       "sds-bridge",
		"org.opencontainers.image.description": "SPIFFE Workload API to Envoy SDS and credential folders",
		"org.opencontainers.image.source":      "https://github.com/sds-bridge/sds-bridge",
		"org.opencontainers.image.version":     testVersion,
		"org.opencontainers.image.revision":    strings.TrimSpace(string(rev)),
		"org.opencontainers.image.licenses":    "Apache-2.0",
	}
	for k, v := range want {
		if c.Labels[k] != v {
			t.Errorf("label %s = %q, want %q", k, c.Labels[k], v)
		}
	}
	if len(c.Labels) != len(want) {
		t.Errorf("labels %v, want exactly %v", c.Labels, want)
	}
	// The commit's time, not 1970 ("created 56 years ago").
	ct, err := exec.Command("git", "-C", repoRoot(t), "log", "-1", "--format=%ct").Output()
	if err != nil {
		t.Fatal(err)
	}
	if got := strconv.FormatInt(cf.Created.Unix(), 10); got != strings.TrimSpace(string(ct)) {
		t.Errorf("created %v (%s), want the commit time %s", cf.Created, got, ct)
	}
}

// TestTheLayerHoldsOneStaticBinaryAndTheUserEntriesOnly reads the single
// layer: exactly /etc, /etc/group, /etc/passwd and /sds-bridge, all owned
// by root; the passwd entry is the config's user; the binary has no program
// interpreter and no needed library, and running its `version` prints the
// version make stamped.
func TestTheLayerHoldsOneStaticBinaryAndTheUserEntriesOnly(t *testing.T) {
	path, _ := builtImage(t)
	img, err := tarball.ImageFromPath(path, nil)
	if err != nil {
		t.Fatal(err)
	}
	layers, err := img.Layers()
	if err != nil {
		t.Fatal(err)
	}
	if len(layers) != 1 {
		t.Fatalf("%d layers, want 1", len(layers))
	}
	rc, err := layers[0].Uncompressed()
	if err != nil {
		t.Fatal(err)
	}
	defer rc.Close()
	type entry struct {
		hdr  *tar.Header
		body []byte
	}
	files := map[string]entry{}
	var names []string
	tr := tar.NewReader(rc)
	for {
		h, err := tr.Next()
		if errors.Is(err, io.EOF) {
			break
		}
		if err != nil {
			t.Fatal(err)
		}
		b, err := io.ReadAll(tr)
		if err != nil {
			t.Fatal(err)
		}
		files[h.Name] = entry{h, b}
		names = append(names, h.Name)
	}
	wantModes := map[string]fs.FileMode{
		"etc/":       fs.ModeDir | 0o755,
		"etc/group":  0o644,
		"etc/passwd": 0o644,
		"sds-bridge": 0o755,
	}
	if len(names) != len(wantModes) {
		t.Fatalf("layer holds %q, want exactly %d entries", names, len(wantModes))
	}
	for n, mode := range wantModes {
		e, ok := files[n]
		if !ok {
			t.Fatalf("layer lacks %s (has %q)", n, names)
		}
		if got := e.hdr.FileInfo().Mode(); got != mode {
			t.Errorf("%s mode %v, want %v", n, got, mode)
		}
		if e.hdr.Uid != 0 || e.hdr.Gid != 0 {
			t.Errorf("%s owned by %d:%d, want root", n, e.hdr.Uid, e.hdr.Gid)
		}
	}
	if p := string(files["etc/passwd"].body); p != "sds-bridge:x:65532:65532:sds-bridge:/:/sbin/nologin\n" {
		t.Errorf("passwd %q", p)
	}
	if g := string(files["etc/group"].body); g != "sds-bridge:x:65532:\n" {
		t.Errorf("group %q", g)
	}

	bin := files["sds-bridge"].body
	f, err := elf.NewFile(bytes.NewReader(bin))
	if err != nil {
		t.Fatalf("/sds-bridge is not ELF: %v", err)
	}
	defer f.Close()
	if f.Type != elf.ET_EXEC {
		t.Errorf("ELF type %v, want a static ET_EXEC", f.Type)
	}
	for _, p := range f.Progs {
		if p.Type == elf.PT_INTERP || p.Type == elf.PT_DYNAMIC {
			t.Errorf("/sds-bridge has %v: not static", p.Type)
		}
	}
	if libs, _ := f.ImportedLibraries(); len(libs) > 0 {
		t.Errorf("/sds-bridge needs %v", libs)
	}

	exe := filepath.Join(t.TempDir(), "sds-bridge")
	if err := os.WriteFile(exe, bin, 0o755); err != nil {
		t.Fatal(err)
	}
	out, err := exec.Command(exe, "version").CombinedOutput()
	if err != nil {
		t.Fatalf("sds-bridge version: %v\n%s", err, out)
	}
	if !strings.HasPrefix(string(out), "sds-bridge "+testVersion+" (") {
		t.Errorf("sds-bridge version printed %q, want it to start with %q", out, "sds-bridge "+testVersion+" (")
	}
}

// TestTheTarballIsAnOCILayoutOfTheSameImage unpacks the tarball and opens it
// as an OCI image layout (what podman load and containerd read): one
// manifest, named by tag, whose digest is the one make printed, holding the
// same config and layer as the docker-save view.
func TestTheTarballIsAnOCILayoutOfTheSameImage(t *testing.T) {
	path, printed := builtImage(t)
	dir := t.TempDir()
	untar(t, path, dir)
	idx, err := layout.ImageIndexFromPath(dir)
	if err != nil {
		t.Fatal(err)
	}
	im, err := idx.IndexManifest()
	if err != nil {
		t.Fatal(err)
	}
	if len(im.Manifests) != 1 {
		t.Fatalf("index has %d manifests, want 1", len(im.Manifests))
	}
	d := im.Manifests[0]
	if got := d.Annotations["io.containerd.image.name"]; got != "docker.io/library/sds-bridge:"+testVersion {
		t.Errorf("io.containerd.image.name = %q", got)
	}
	if got := d.Annotations["org.opencontainers.image.ref.name"]; got != testVersion {
		t.Errorf("org.opencontainers.image.ref.name = %q", got)
	}
	fromLayout, err := idx.Image(d.Digest)
	if err != nil {
		t.Fatal(err)
	}
	fromDocker, err := tarball.ImageFromPath(path, nil)
	if err != nil {
		t.Fatal(err)
	}
	if d.Digest.String() != printed {
		t.Errorf("index names %v, make image printed %v", d.Digest, printed)
	}
	if a, b := contentIDs(t, fromLayout), contentIDs(t, fromDocker); !slices.Equal(a, b) {
		t.Errorf("OCI layout holds config+layers %v, docker-save view %v", a, b)
	}
	// Every blob the layout names is readable and matches its digest.
	if err := validateLayers(fromLayout); err != nil {
		t.Error(err)
	}
}

func validateLayers(img v1.Image) error {
	layers, err := img.Layers()
	if err != nil {
		return err
	}
	for _, l := range layers {
		rc, err := l.Compressed()
		if err != nil {
			return err
		}
		_, err = io.Copy(io.Discard, rc) // the layout reader verifies the digest at EOF
		rc.Close()
		if err != nil {
			return err
		}
	}
	return nil
}

func untar(t *testing.T, path, dir string) {
	t.Helper()
	f, err := os.Open(path)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	tr := tar.NewReader(f)
	for {
		h, err := tr.Next()
		if errors.Is(err, io.EOF) {
			return
		}
		if err != nil {
			t.Fatal(err)
		}
		target := filepath.Join(dir, filepath.FromSlash(h.Name))
		if !strings.HasPrefix(target, dir+string(filepath.Separator)) {
			t.Fatalf("entry %q escapes", h.Name)
		}
		if h.Typeflag == tar.TypeDir {
			if err := os.MkdirAll(target, 0o755); err != nil {
				t.Fatal(err)
			}
			continue
		}
		b, err := io.ReadAll(tr)
		if err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(target, b, 0o644); err != nil {
			t.Fatal(err)
		}
	}
}

// TestMakeImageTwiceGivesTheSameDigest builds a second time from scratch
// into another directory: the binary and the tarball come out byte for byte
// the same, so the digest is a function of the inputs.
func TestMakeImageTwiceGivesTheSameDigest(t *testing.T) {
	first, d1 := builtImage(t)
	second, d2 := makeImage(t, t.TempDir())
	if d1 != d2 {
		t.Fatalf("two builds, two digests: %v and %v", d1, d2)
	}
	a, err := os.ReadFile(first)
	if err != nil {
		t.Fatal(err)
	}
	b, err := os.ReadFile(second)
	if err != nil {
		t.Fatal(err)
	}
	if !bytes.Equal(a, b) {
		t.Error("same digest but the tarballs differ")
	}
}

// TestTheDigestFollowsTheInputs guards the test above against proving
// nothing: the same inputs give one digest, a changed label or timestamp
// another.
func TestTheDigestFollowsTheInputs(t *testing.T) {
	static := staticBinary(t)
	dir := t.TempDir()
	base := Config{Binaries: []string{static}, Tag: "sds-bridge:x", Version: "v1", Revision: "abc", Source: "s", Licenses: "NOASSERTION", Created: time.Unix(0, 0).UTC()}
	build := func(name string, c Config) v1.Hash {
		c.Out = filepath.Join(dir, name)
		d, err := Build(c)
		if err != nil {
			t.Fatal(err)
		}
		return d
	}
	same1, same2 := build("a.tar", base), build("b.tar", base)
	if same1 != same2 {
		t.Fatalf("same inputs, digests %v and %v", same1, same2)
	}
	other := base
	other.Version = "v2"
	if build("c.tar", other) == same1 {
		t.Error("another version label, same digest")
	}
	other = base
	other.Created = time.Unix(1, 0).UTC()
	if build("d.tar", other) == same1 {
		t.Error("another timestamp, same digest")
	}
}

// staticBinary is a tiny CGO_ENABLED=0 program, for tests that need any
// static ELF rather than sds-bridge itself.
func staticBinary(t *testing.T) string {
	t.Helper()
	return staticBinaryFor(t, runtime.GOARCH)
}

// staticBinaryFor is staticBinary for linux/goarch.
func staticBinaryFor(t *testing.T, goarch string) string {
	t.Helper()
	dir := t.TempDir()
	src := filepath.Join(dir, "main.go")
	if err := os.WriteFile(src, []byte("package main\nfunc main() {}\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	out := filepath.Join(dir, "tiny")
	cmd := exec.Command("go", "build", "-o", out, src)
	cmd.Env = append(os.Environ(), "CGO_ENABLED=0", "GOOS=linux", "GOARCH="+goarch)
	cmd.Dir = dir
	if b, err := cmd.CombinedOutput(); err != nil {
		t.Fatalf("go build: %v\n%s", err, b)
	}
	return out
}

// TestADynamicBinaryIsRefused: a scratch image has no loader and no libc,
// so the builder refuses a binary that needs them, and one that is not ELF,
// and writes nothing.
func TestADynamicBinaryIsRefused(t *testing.T) {
	dynamic := "/bin/true"
	f, err := elf.Open(dynamic)
	if err != nil {
		t.Skipf("no %s to try: %v", dynamic, err)
	}
	hasInterp := slices.ContainsFunc(f.Progs, func(p *elf.Prog) bool { return p.Type == elf.PT_INTERP })
	f.Close()
	if !hasInterp {
		t.Skipf("%s is static here; nothing to refuse", dynamic)
	}
	notELF := filepath.Join(t.TempDir(), "script")
	if err := os.WriteFile(notELF, []byte("#!/bin/sh\n"), 0o755); err != nil {
		t.Fatal(err)
	}
	for bin, want := range map[string]string{dynamic: "PT_INTERP", notELF: "not an ELF"} {
		out := filepath.Join(t.TempDir(), "img.tar")
		_, err := Build(Config{Binaries: []string{bin}, Out: out, Tag: "sds-bridge:x", Created: time.Unix(0, 0)})
		if err == nil || !strings.Contains(err.Error(), want) {
			t.Errorf("Build(%s) = %v, want an error saying %q", bin, err, want)
		}
		if _, err := os.Stat(out); !errors.Is(err, fs.ErrNotExist) {
			t.Errorf("Build(%s) left %s behind", bin, out)
		}
	}
}

// TestTheDockerfileBuildsTheSameImage keeps the Dockerfile, which cannot be
// built here, in step with the builder: the same passwd and group entries,
// user, entrypoint, cmd, working dir and labels, and a scratch final stage
// fed by a static build.
func TestTheDockerfileBuildsTheSameImage(t *testing.T) {
	b, err := os.ReadFile(filepath.Join(repoRoot(t), "Dockerfile"))
	if err != nil {
		t.Fatal(err)
	}
	df := string(b)
	want := []string{
		"printf '" + strings.ReplaceAll(passwdEntry, "\n", `\n`) + "' > /rootfs/etc/passwd",
		"printf '" + strings.ReplaceAll(groupEntry, "\n", `\n`) + "' > /rootfs/etc/group",
		"CGO_ENABLED=0 ",
		"-trimpath",
		`-X main.version=${VERSION}`,
		"\nFROM scratch\n",
		"\nCOPY --from=build /rootfs/ /\n",
		"\nWORKDIR /\n",
		"\nUSER " + user + "\n",
		"\nENTRYPOINT [\"/sds-bridge\"]\n",
		"\nCMD [\"run\"]\n",
	}
	labels := Labels(Config{Version: "${VERSION}", Revision: "${REVISION}", Source: defaultSource, Licenses: defaultLicenses})
	for k, v := range labels {
		want = append(want, k+`="`+v+`"`)
	}
	for _, w := range want {
		if !strings.Contains(df, w) {
			t.Errorf("Dockerfile lacks %q", w)
		}
	}
	if n := strings.Count(df, "org.opencontainers.image."); n != len(labels) {
		t.Errorf("Dockerfile has %d OCI labels, the builder %d", n, len(labels))
	}
	if n := strings.Count(df, "\nCOPY --from="); n != 1 {
		t.Errorf("Dockerfile's final stage has %d COPY --from lines, want one layer", n)
	}
}

// TestSeveralBinariesMakeOneIndexOfTheirPlatforms: one binary per
// platform gives an OCI image index, in GOARCH order whatever the order of
// the flags, written both as the tarball and as a layout directory whose
// index.json names that index; two binaries for one platform, or a layout
// directory that exists, are refused.
func TestSeveralBinariesMakeOneIndexOfTheirPlatforms(t *testing.T) {
	amd, arm := staticBinaryFor(t, "amd64"), staticBinaryFor(t, "arm64")
	dir := t.TempDir()
	c := Config{Binaries: []string{arm, amd}, Out: filepath.Join(dir, "img.tar"), Layout: filepath.Join(dir, "oci"),
		Tag: "sds-bridge:v1", Version: "v1", Licenses: defaultLicenses, Created: time.Unix(1795960495, 0).UTC()}
	digest, err := Build(c)
	if err != nil {
		t.Fatal(err)
	}
	top, err := layout.ImageIndexFromPath(c.Layout)
	if err != nil {
		t.Fatal(err)
	}
	tm, err := top.IndexManifest()
	if err != nil {
		t.Fatal(err)
	}
	if len(tm.Manifests) != 1 || tm.Manifests[0].Digest != digest || !tm.Manifests[0].MediaType.IsIndex() {
		t.Fatalf("index.json %+v, want the one image index %v", tm.Manifests, digest)
	}
	idx, err := top.ImageIndex(digest)
	if err != nil {
		t.Fatal(err)
	}
	im, err := idx.IndexManifest()
	if err != nil {
		t.Fatal(err)
	}
	var got []string
	for _, d := range im.Manifests {
		got = append(got, d.Platform.String())
		img, err := idx.Image(d.Digest)
		if err != nil {
			t.Fatal(err)
		}
		if cf, err := img.ConfigFile(); err != nil || cf.Architecture != d.Platform.Architecture || !cf.Created.Time.Equal(c.Created) {
			t.Errorf("%s: config %+v (%v)", d.Platform, cf, err)
		}
	}
	if !slices.Equal(got, []string{"linux/amd64", "linux/arm64"}) {
		t.Errorf("platforms %v", got)
	}
	untarred := t.TempDir()
	untar(t, c.Out, untarred)
	a, _ := os.ReadFile(filepath.Join(untarred, "index.json"))
	b, _ := os.ReadFile(filepath.Join(c.Layout, "index.json"))
	if len(a) == 0 || !bytes.Equal(a, b) {
		t.Errorf("the tarball's index.json %s, the layout's %s", a, b)
	}

	if _, err := Build(c); err == nil {
		t.Error("a second build into the same layout directory was accepted")
	}
	dup := c
	dup.Binaries, dup.Layout, dup.Out = []string{amd, amd}, "", filepath.Join(dir, "dup.tar")
	if _, err := Build(dup); err == nil || !strings.Contains(err.Error(), "a second binary for linux/amd64") {
		t.Errorf("two amd64 binaries: %v", err)
	}
}
