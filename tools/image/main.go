// Command image builds the sds-bridge container image from static binaries
// with Go tooling only (no Docker engine, no base image to pull): an empty
// base, one layer holding /sds-bridge and a passwd/group entry for the
// non-root user, and the same config and labels as the repository's
// Dockerfile. `make image` runs it with one binary for the host; `make
// release` with one per platform (linux/amd64, linux/arm64), which makes a
// multi-platform image index. The output is a tarball that is both an OCI
// image layout (oci-layout, index.json, blobs/) and a `docker save` archive
// (manifest.json pointing at the same blobs), the shape `docker save` itself
// writes since Docker 25, so `docker load` and `podman load` accept it; with
// -layout, the same layout is also written as a directory.
//
// Everything that goes into the image is an input (the binaries, the flags,
// SOURCE_DATE_EPOCH or the Unix epoch for every timestamp), so the same
// inputs give the same image digest.
package main

import (
	"archive/tar"
	"bytes"
	"debug/elf"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"maps"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"time"

	"github.com/google/go-containerregistry/pkg/name"
	v1 "github.com/google/go-containerregistry/pkg/v1"
	"github.com/google/go-containerregistry/pkg/v1/empty"
	"github.com/google/go-containerregistry/pkg/v1/mutate"
	"github.com/google/go-containerregistry/pkg/v1/partial"
	"github.com/google/go-containerregistry/pkg/v1/tarball"
	"github.com/google/go-containerregistry/pkg/v1/types"
)

// The non-root user the image runs as, and the labels' fixed values; the
// Dockerfile says the same (image_test.go compares them).
const (
	user            = "65532:65532"
	passwdEntry     = "sds-bridge:x:65532:65532:sds-bridge:/:/sbin/nologin\n"
	groupEntry      = "sds-bridge:x:65532:\n"
	defaultSource   = "https://github.com/sds-bridge/sds-bridge"
	defaultLicenses = "Apache-2.0" // LICENSE
)

// Config is what one image is built from.
type Config struct {
	Binaries []string  // static sds-bridge executables, one per platform (read from the ELF header)
	Out      string    // the tarball to write
	Layout   string    // also write the OCI image layout into this new directory ("" for none)
	Tag      string    // e.g. sds-bridge:v1.2.3
	Version  string    // org.opencontainers.image.version
	Revision string    // org.opencontainers.image.revision (VCS commit)
	Source   string    // org.opencontainers.image.source
	Licenses string    // org.opencontainers.image.licenses (SPDX expression)
	Created  time.Time // every timestamp in the image
}

func main() {
	if err := run(os.Args[1:]); err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(1)
	}
}

func run(args []string) error {
	fs := flag.NewFlagSet("image", flag.ContinueOnError)
	var c Config
	fs.Func("binary", "static sds-bridge binary (required; repeat for one per platform)", func(s string) error {
		c.Binaries = append(c.Binaries, s)
		return nil
	})
	fs.StringVar(&c.Out, "out", "", "tarball to write (required)")
	fs.StringVar(&c.Layout, "layout", "", "directory to write the OCI image layout into as well (must not exist)")
	fs.StringVar(&c.Tag, "tag", "sds-bridge:dev", "image name and tag recorded in the tarball")
	fs.StringVar(&c.Version, "version", "dev", "version label")
	fs.StringVar(&c.Revision, "revision", "", "VCS revision label")
	fs.StringVar(&c.Source, "source", defaultSource, "source label")
	fs.StringVar(&c.Licenses, "licenses", defaultLicenses, "licenses label (SPDX)")
	if err := fs.Parse(args); err != nil {
		return err
	}
	if len(c.Binaries) == 0 || c.Out == "" {
		return errors.New("image: -binary and -out are required")
	}
	created, err := sourceDateEpoch(os.Getenv("SOURCE_DATE_EPOCH"))
	if err != nil {
		return err
	}
	c.Created = created
	digest, err := Build(c)
	if err != nil {
		return err
	}
	fmt.Printf("%s %s %s\n", c.Out, c.Tag, digest)
	return nil
}

// sourceDateEpoch follows reproducible-builds.org: unset means the Unix epoch.
func sourceDateEpoch(s string) (time.Time, error) {
	if s == "" {
		return time.Unix(0, 0).UTC(), nil
	}
	n, err := strconv.ParseInt(s, 10, 64)
	if err != nil {
		return time.Time{}, fmt.Errorf("image: SOURCE_DATE_EPOCH %q: not a number of seconds", s)
	}
	return time.Unix(n, 0).UTC(), nil
}

// Labels are the OCI annotations the Dockerfile sets too.
func Labels(c Config) map[string]string {
	return map[string]string{
		"org.opencontainers.image.title":       "sds-bridge",
		"org.opencontainers.image.description": "SPIFFE Workload API to Envoy SDS and credential folders",
		"org.opencontainers.image.source":      c.Source,
		"org.opencontainers.image.version":     c.Version,
		"org.opencontainers.image.revision":    c.Revision,
		"org.opencontainers.image.licenses":    c.Licenses,
	}
}

// Build writes the image tarball (and the layout directory, if asked) and
// returns the digest that names the whole: the image manifest's for one
// binary, the image index's for several.
func Build(c Config) (v1.Hash, error) {
	if len(c.Binaries) == 0 {
		return v1.Hash{}, errors.New("image: no binary")
	}
	tag, err := name.NewTag(c.Tag)
	if err != nil {
		return v1.Hash{}, fmt.Errorf("image: tag %q: %w", c.Tag, err)
	}
	imgs, err := platformImages(c)
	if err != nil {
		return v1.Hash{}, err
	}
	a, err := newArchive(imgs, tag)
	if err != nil {
		return v1.Hash{}, fmt.Errorf("image: %w", err)
	}
	if c.Layout != "" {
		if err := a.writeDir(c.Layout); err != nil {
			return v1.Hash{}, fmt.Errorf("image: write layout %s: %w", c.Layout, err)
		}
	}
	if err := a.writeTar(c.Out, c.Created); err != nil {
		return v1.Hash{}, fmt.Errorf("image: write %s: %w", c.Out, err)
	}
	return a.top.Digest, nil
}

// platformImages is one image per binary, in GOARCH order so that the
// index does not depend on the order of the flags; two binaries for one
// platform are refused.
func platformImages(c Config) ([]v1.Image, error) {
	byArch := map[string]v1.Image{}
	for _, path := range c.Binaries {
		bin, err := os.ReadFile(path)
		if err != nil {
			return nil, fmt.Errorf("image: read binary: %w", err)
		}
		arch, err := staticELF(bin)
		if err != nil {
			return nil, fmt.Errorf("image: %s: %w", path, err)
		}
		if _, dup := byArch[arch]; dup {
			return nil, fmt.Errorf("image: %s: a second binary for linux/%s", path, arch)
		}
		if byArch[arch], err = image(c, bin, arch); err != nil {
			return nil, fmt.Errorf("image: %w", err)
		}
	}
	imgs := make([]v1.Image, 0, len(byArch))
	for _, arch := range slices.Sorted(maps.Keys(byArch)) {
		imgs = append(imgs, byArch[arch])
	}
	return imgs, nil
}

// staticELF refuses anything a scratch image cannot run: not ELF, a program
// interpreter (dynamic loader) or a needed shared library. It returns the
// GOARCH the binary was built for.
func staticELF(bin []byte) (string, error) {
	f, err := elf.NewFile(bytes.NewReader(bin))
	if err != nil {
		return "", fmt.Errorf("not an ELF executable: %w", err)
	}
	defer f.Close()
	for _, p := range f.Progs {
		if p.Type == elf.PT_INTERP {
			return "", errors.New("dynamically linked (has PT_INTERP): build it with CGO_ENABLED=0")
		}
	}
	if libs, err := f.ImportedLibraries(); err == nil && len(libs) > 0 {
		return "", fmt.Errorf("needs shared libraries %v: build it with CGO_ENABLED=0", libs)
	}
	switch f.Machine {
	case elf.EM_X86_64:
		return "amd64", nil
	case elf.EM_AARCH64:
		return "arm64", nil
	case elf.EM_RISCV:
		return "riscv64", nil
	case elf.EM_PPC64:
		return "ppc64le", nil
	case elf.EM_S390:
		return "s390x", nil
	}
	return "", fmt.Errorf("unsupported ELF machine %v", f.Machine)
}

func image(c Config, bin []byte, arch string) (v1.Image, error) {
	layerTar, err := rootfs(bin, c.Created)
	if err != nil {
		return nil, err
	}
	layer, err := tarball.LayerFromOpener(func() (io.ReadCloser, error) {
		return io.NopCloser(bytes.NewReader(layerTar)), nil
	}, tarball.WithMediaType(types.OCILayer))
	if err != nil {
		return nil, err
	}
	base := mutate.MediaType(empty.Image, types.OCIManifestSchema1)
	base = mutate.ConfigMediaType(base, types.OCIConfigJSON)
	created := v1.Time{Time: c.Created}
	img, err := mutate.Append(base, mutate.Addendum{
		Layer:   layer,
		History: v1.History{Created: created, CreatedBy: "sds-bridge tools/image", Comment: "/sds-bridge, /etc/passwd, /etc/group"},
	})
	if err != nil {
		return nil, err
	}
	cf, err := img.ConfigFile()
	if err != nil {
		return nil, err
	}
	cf = cf.DeepCopy()
	cf.Created = created
	cf.OS = "linux"
	cf.Architecture = arch
	cf.Config = v1.Config{
		User:       user,
		Entrypoint: []string{"/sds-bridge"},
		Cmd:        []string{"run"},
		WorkingDir: "/",
		Labels:     Labels(c),
	}
	return mutate.ConfigFile(img, cf)
}

// rootfs is the one layer: everything the binary needs and nothing else.
func rootfs(bin []byte, mtime time.Time) ([]byte, error) {
	var buf bytes.Buffer
	tw := tar.NewWriter(&buf)
	entries := []struct {
		name string
		mode int64
		body []byte
		dir  bool
	}{
		{name: "etc/", mode: 0o755, dir: true},
		{name: "etc/group", mode: 0o644, body: []byte(groupEntry)},
		{name: "etc/passwd", mode: 0o644, body: []byte(passwdEntry)},
		{name: "sds-bridge", mode: 0o755, body: bin},
	}
	for _, e := range entries {
		h := &tar.Header{Name: e.name, Mode: e.mode, ModTime: mtime, Typeflag: tar.TypeReg, Size: int64(len(e.body)), Format: tar.FormatPAX}
		if e.dir {
			h.Typeflag = tar.TypeDir
		}
		if err := tw.WriteHeader(h); err != nil {
			return nil, err
		}
		if _, err := tw.Write(e.body); err != nil {
			return nil, err
		}
	}
	if err := tw.Close(); err != nil {
		return nil, err
	}
	return buf.Bytes(), nil
}

// archive is what the tarball and the layout directory hold: every blob by
// digest, index.json naming the top (the one image, or the index of all),
// and a docker-save manifest.json.
type archive struct {
	top            v1.Descriptor
	blobs          map[v1.Hash][]byte
	index          []byte
	dockerManifest []byte
}

func newArchive(imgs []v1.Image, tag name.Tag) (*archive, error) {
	a := &archive{blobs: map[v1.Hash][]byte{}}
	descs := make([]imageDescriptor, 0, len(imgs))
	var dockerImages []tarball.Descriptor
	for _, img := range imgs {
		d, layerPaths, err := a.addImage(img)
		if err != nil {
			return nil, err
		}
		descs = append(descs, d)
		dockerImages = append(dockerImages, tarball.Descriptor{Config: blobPath(d.configName), Layers: layerPaths})
	}
	a.top = descs[0].Descriptor
	if len(descs) > 1 {
		top, err := a.addIndex(descs)
		if err != nil {
			return nil, err
		}
		a.top = top
	}
	a.top.Annotations = map[string]string{
		// Both names, as `docker save` writes them: containerd
		// (and Docker on it) reads the first, podman the second.
		"io.containerd.image.name":          fullName(tag),
		"org.opencontainers.image.ref.name": tag.TagStr(),
	}
	var err error
	if a.index, err = json.Marshal(v1.IndexManifest{SchemaVersion: 2, MediaType: types.OCIImageIndex, Manifests: []v1.Descriptor{a.top}}); err != nil {
		return nil, err
	}
	// Docker's classic image store holds one platform per tag, so the
	// docker-save view names the first (linux/amd64 in a release), as
	// `docker save` of a multi-platform image names one; an engine that
	// reads index.json (containerd, podman) gets the index.
	dockerImages[0].RepoTags = []string{tag.String()}
	if a.dockerManifest, err = json.Marshal(dockerImages[:1]); err != nil {
		return nil, err
	}
	return a, nil
}

type imageDescriptor struct {
	v1.Descriptor
	configName v1.Hash
}

// addImage adds an image's manifest, config and layers to the blobs and
// returns its descriptor (with its platform) and its layers' paths.
func (a *archive) addImage(img v1.Image) (imageDescriptor, []string, error) {
	manifest, err := img.RawManifest()
	if err != nil {
		return imageDescriptor{}, nil, err
	}
	config, err := img.RawConfigFile()
	if err != nil {
		return imageDescriptor{}, nil, err
	}
	cf, err := img.ConfigFile()
	if err != nil {
		return imageDescriptor{}, nil, err
	}
	desc, err := partial.Descriptor(img)
	if err != nil {
		return imageDescriptor{}, nil, err
	}
	desc.Platform = cf.Platform()
	configName, err := img.ConfigName()
	if err != nil {
		return imageDescriptor{}, nil, err
	}
	a.blobs[desc.Digest], a.blobs[configName] = manifest, config
	layers, err := img.Layers()
	if err != nil {
		return imageDescriptor{}, nil, err
	}
	var layerPaths []string
	for _, l := range layers {
		d, err := l.Digest()
		if err != nil {
			return imageDescriptor{}, nil, err
		}
		rc, err := l.Compressed()
		if err != nil {
			return imageDescriptor{}, nil, err
		}
		b, err := io.ReadAll(rc)
		rc.Close()
		if err != nil {
			return imageDescriptor{}, nil, err
		}
		a.blobs[d] = b
		layerPaths = append(layerPaths, blobPath(d))
	}
	return imageDescriptor{*desc, configName}, layerPaths, nil
}

// addIndex adds the OCI image index over the platform images.
func (a *archive) addIndex(descs []imageDescriptor) (v1.Descriptor, error) {
	im := v1.IndexManifest{SchemaVersion: 2, MediaType: types.OCIImageIndex}
	for _, d := range descs {
		im.Manifests = append(im.Manifests, d.Descriptor)
	}
	raw, err := json.Marshal(im)
	if err != nil {
		return v1.Descriptor{}, err
	}
	h, size, err := v1.SHA256(bytes.NewReader(raw))
	if err != nil {
		return v1.Descriptor{}, err
	}
	a.blobs[h] = raw
	return v1.Descriptor{MediaType: types.OCIImageIndex, Digest: h, Size: size}, nil
}

// entries are the archive's files in the order the tarball holds them; a
// nil body is a directory.
func (a *archive) entries() []entry {
	es := []entry{{name: "blobs/"}, {name: "blobs/sha256/"}}
	for _, d := range sortedHashes(a.blobs) {
		es = append(es, entry{name: blobPath(d), body: a.blobs[d]})
	}
	return append(es,
		entry{name: "index.json", body: a.index},
		entry{name: "manifest.json", body: a.dockerManifest},
		entry{name: "oci-layout", body: []byte(`{"imageLayoutVersion":"1.0.0"}`)},
	)
}

type entry struct {
	name string
	body []byte
}

// writeTar writes the archive in a fixed order with fixed times.
func (a *archive) writeTar(path string, mtime time.Time) (err error) {
	if err := os.MkdirAll(filepath.Dir(path), 0o755); err != nil {
		return err
	}
	tmp, err := os.CreateTemp(filepath.Dir(path), ".image-*.tar")
	if err != nil {
		return err
	}
	defer func() {
		if err != nil {
			tmp.Close()
			os.Remove(tmp.Name())
		}
	}()
	tw := tar.NewWriter(tmp)
	for _, e := range a.entries() {
		h := &tar.Header{Name: e.name, Mode: 0o644, ModTime: mtime, Typeflag: tar.TypeReg, Size: int64(len(e.body)), Format: tar.FormatPAX}
		if e.body == nil {
			h.Typeflag, h.Mode = tar.TypeDir, 0o755
		}
		if err := tw.WriteHeader(h); err != nil {
			return err
		}
		if _, err := tw.Write(e.body); err != nil {
			return err
		}
	}
	if err := tw.Close(); err != nil {
		return err
	}
	if err := tmp.Chmod(0o644); err != nil {
		return err
	}
	if err := tmp.Close(); err != nil {
		return err
	}
	return os.Rename(tmp.Name(), path)
}

// writeDir writes the same files into dir, which must not exist yet: a
// layout merged into an older one would hold blobs no index names.
func (a *archive) writeDir(dir string) (err error) {
	if err := os.Mkdir(dir, 0o755); err != nil {
		return err
	}
	defer func() {
		if err != nil {
			os.RemoveAll(dir)
		}
	}()
	for _, e := range a.entries() {
		p := filepath.Join(dir, filepath.FromSlash(e.name))
		if e.body == nil {
			err = os.MkdirAll(p, 0o755)
		} else {
			err = os.WriteFile(p, e.body, 0o644)
		}
		if err != nil {
			return err
		}
	}
	return nil
}

// fullName is the tag as Docker writes it: docker.io/library/sds-bridge:v1,
// where go-containerregistry says index.docker.io.
func fullName(tag name.Tag) string {
	reg := tag.RegistryStr()
	if reg == name.DefaultRegistry {
		reg = "docker.io"
	}
	return reg + "/" + tag.RepositoryStr() + ":" + tag.TagStr()
}

func blobPath(h v1.Hash) string { return "blobs/" + h.Algorithm + "/" + h.Hex }

func sortedHashes(m map[v1.Hash][]byte) []v1.Hash {
	hs := make([]v1.Hash, 0, len(m))
	for h := range m {
		hs = append(hs, h)
	}
	slices.SortFunc(hs, func(a, b v1.Hash) int { return strings.Compare(a.String(), b.String()) })
	return hs
}
