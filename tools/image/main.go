// Command image builds the sds-bridge container image from a static binary
// with Go tooling only (no Docker engine, no base image to pull): an empty
// base, one layer holding /sds-bridge and a passwd/group entry for the
// non-root user, and the same config and labels as the repository's
// Dockerfile. `make image` runs it; the output is a tarball that is both an
// OCI image layout (oci-layout, index.json, blobs/) and a `docker save`
// archive (manifest.json pointing at the same blobs), the shape `docker save`
// itself writes since Docker 25, so `docker load` and `podman load` accept it.
//
// Everything that goes into the image is an input (the binary, the flags,
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
	defaultLicenses = "NOASSERTION" // the repository has no licence file yet
)

// Config is what one image is built from.
type Config struct {
	Binary   string    // the static sds-bridge executable
	Out      string    // the tarball to write
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
	fs.StringVar(&c.Binary, "binary", "", "static sds-bridge binary (required)")
	fs.StringVar(&c.Out, "out", "", "tarball to write (required)")
	fs.StringVar(&c.Tag, "tag", "sds-bridge:dev", "image name and tag recorded in the tarball")
	fs.StringVar(&c.Version, "version", "dev", "version label")
	fs.StringVar(&c.Revision, "revision", "", "VCS revision label")
	fs.StringVar(&c.Source, "source", defaultSource, "source label")
	fs.StringVar(&c.Licenses, "licenses", defaultLicenses, "licenses label (SPDX)")
	if err := fs.Parse(args); err != nil {
		return err
	}
	if c.Binary == "" || c.Out == "" {
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

// Build writes the image tarball and returns the image (manifest) digest.
func Build(c Config) (v1.Hash, error) {
	bin, err := os.ReadFile(c.Binary)
	if err != nil {
		return v1.Hash{}, fmt.Errorf("image: read binary: %w", err)
	}
	arch, err := staticELF(bin)
	if err != nil {
		return v1.Hash{}, fmt.Errorf("image: %s: %w", c.Binary, err)
	}
	tag, err := name.NewTag(c.Tag)
	if err != nil {
		return v1.Hash{}, fmt.Errorf("image: tag %q: %w", c.Tag, err)
	}
	img, err := image(c, bin, arch)
	if err != nil {
		return v1.Hash{}, fmt.Errorf("image: %w", err)
	}
	if err := writeArchive(c.Out, img, tag, c.Created); err != nil {
		return v1.Hash{}, fmt.Errorf("image: write %s: %w", c.Out, err)
	}
	return img.Digest()
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

// writeArchive writes img as an OCI image layout plus a docker-save
// manifest.json over the same blobs, in a fixed order with fixed times.
func writeArchive(path string, img v1.Image, tag name.Tag, mtime time.Time) (err error) {
	manifest, err := img.RawManifest()
	if err != nil {
		return err
	}
	digest, err := img.Digest()
	if err != nil {
		return err
	}
	config, err := img.RawConfigFile()
	if err != nil {
		return err
	}
	configName, err := img.ConfigName()
	if err != nil {
		return err
	}
	layers, err := img.Layers()
	if err != nil {
		return err
	}
	blobs := map[v1.Hash][]byte{digest: manifest, configName: config}
	var layerPaths []string
	for _, l := range layers {
		d, err := l.Digest()
		if err != nil {
			return err
		}
		rc, err := l.Compressed()
		if err != nil {
			return err
		}
		b, err := io.ReadAll(rc)
		rc.Close()
		if err != nil {
			return err
		}
		blobs[d] = b
		layerPaths = append(layerPaths, blobPath(d))
	}
	mt, err := img.MediaType()
	if err != nil {
		return err
	}
	index, err := json.Marshal(v1.IndexManifest{
		SchemaVersion: 2,
		MediaType:     types.OCIImageIndex,
		Manifests: []v1.Descriptor{{
			MediaType: mt,
			Digest:    digest,
			Size:      int64(len(manifest)),
			Annotations: map[string]string{
				// Both names, as `docker save` writes them: containerd
				// (and Docker on it) reads the first, podman the second.
				"io.containerd.image.name":          fullName(tag),
				"org.opencontainers.image.ref.name": tag.TagStr(),
			},
		}},
	})
	if err != nil {
		return err
	}
	dockerManifest, err := json.Marshal([]tarball.Descriptor{{
		Config:   blobPath(configName),
		RepoTags: []string{tag.String()},
		Layers:   layerPaths,
	}})
	if err != nil {
		return err
	}

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
	add := func(name string, body []byte) error {
		h := &tar.Header{Name: name, Mode: 0o644, ModTime: mtime, Typeflag: tar.TypeReg, Size: int64(len(body)), Format: tar.FormatPAX}
		if body == nil {
			h.Typeflag, h.Mode = tar.TypeDir, 0o755
		}
		if err := tw.WriteHeader(h); err != nil {
			return err
		}
		_, err := tw.Write(body)
		return err
	}
	if err := add("blobs/", nil); err != nil {
		return err
	}
	if err := add("blobs/sha256/", nil); err != nil {
		return err
	}
	for _, d := range sortedHashes(blobs) {
		if err := add(blobPath(d), blobs[d]); err != nil {
			return err
		}
	}
	if err := add("index.json", index); err != nil {
		return err
	}
	if err := add("manifest.json", dockerManifest); err != nil {
		return err
	}
	if err := add("oci-layout", []byte(`{"imageLayoutVersion":"1.0.0"}`)); err != nil {
		return err
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
