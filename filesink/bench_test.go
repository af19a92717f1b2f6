package filesink

import (
	"fmt"
	"log/slog"
	"os"
	"path/filepath"
	"testing"

	"github.com/spiffe/go-spiffe/v2/svid/x509svid"

	"github.com/sds-bridge/sds-bridge/internal/devapi"
)

// BenchmarkApply measures one Update until the folder is durable and
// swapped (no reload actions), on the disk behind t.TempDir.
func BenchmarkApply(b *testing.B) { benchmarkApply(b, b.TempDir) }

// BenchmarkApplyTmpfs is the same on tmpfs, where fsync is free: the CPU
// and syscall cost without the disk.
func BenchmarkApplyTmpfs(b *testing.B) { benchmarkApply(b, func() string { return memTempDir(b) }) }

func benchmarkApply(b *testing.B, tempDir func() string) {
	c := newCA(b, "example.org")
	fed := newCA(b, "partner.net")
	pool := make([]*x509svid.SVID, 20)
	for i := range pool {
		pool[i] = c.issue(b, devapi.SVIDOptions{})
	}
	for _, layout := range []Layout{LayoutSPIFFEHelper, LayoutSPIFFE} {
		b.Run(string(layout), func(b *testing.B) {
			f, err := New(Config{
				Dir:    filepath.Join(tempDir(), "creds"),
				Layout: layout,
				Logger: slog.New(slog.DiscardHandler),
			})
			if err != nil {
				b.Fatal(err)
			}
			gen := uint64(0)
			for b.Loop() {
				gen++
				if err := f.Apply(b.Context(), update(gen, pool[gen%uint64(len(pool))], c.Bundle(), fed.Bundle())); err != nil {
					b.Fatal(err)
				}
			}
			// Every file, the generation directory, and the folder twice
			// (before and after the swap).
			files, err := os.ReadDir(filepath.Join(f.Dir(), DataLink))
			if err != nil {
				b.Fatal(err)
			}
			b.ReportMetric(float64(len(files)+3), "fsyncs/op")
		})
	}
}

// BenchmarkFsyncRename is the physical floor of any durable atomic
// replacement on this disk: write a small file, fsync it, rename it into
// place, fsync the directory.
func BenchmarkFsyncRename(b *testing.B) {
	dir := b.TempDir()
	data := make([]byte, 1024)
	target := filepath.Join(dir, "target")
	root, err := os.OpenRoot(dir)
	if err != nil {
		b.Fatal(err)
	}
	defer root.Close()
	i := 0
	for b.Loop() {
		i++
		tmp := filepath.Join(dir, fmt.Sprintf("tmp-%d", i))
		fh, err := os.OpenFile(tmp, os.O_WRONLY|os.O_CREATE|os.O_EXCL, 0o600)
		if err != nil {
			b.Fatal(err)
		}
		if _, err := fh.Write(data); err != nil {
			b.Fatal(err)
		}
		if err := fh.Sync(); err != nil {
			b.Fatal(err)
		}
		if err := fh.Close(); err != nil {
			b.Fatal(err)
		}
		if err := os.Rename(tmp, target); err != nil {
			b.Fatal(err)
		}
		if err := syncDir(root); err != nil {
			b.Fatal(err)
		}
	}
}
