package filesink

import (
	"log/slog"
	"os"
	"path/filepath"
	"testing"
	"time"

	"github.com/spiffe/go-spiffe/v2/svid/x509svid"

	"github.com/sds-bridge/sds-bridge/internal/devapi"
)

// BenchmarkApplyFederated is BenchmarkApply for a spiffe-helper folder
// with include_federated_domains and two SVIDs, the folder on the second:
// what the federated/ subdirectory (one more directory fsync) and picking
// an SVID cost.
func BenchmarkApplyFederated(b *testing.B) {
	c := newCA(b, "example.org")
	feds := []testCA{newCA(b, "partner.net"), newCA(b, "other.test")}
	pool := make([][]*x509svid.SVID, 20)
	for i := range pool {
		second, err := c.IssueWith(c.id("/admin"), time.Hour, devapi.SVIDOptions{Hint: "admin"})
		if err != nil {
			b.Fatal(err)
		}
		pool[i] = []*x509svid.SVID{c.issue(b, devapi.SVIDOptions{}), second}
	}
	for _, where := range []struct {
		name    string
		tempDir func() string
	}{{"disk", b.TempDir}, {"tmpfs", func() string { return memTempDir(b) }}} {
		b.Run(where.name, func(b *testing.B) {
			f, err := New(Config{
				Dir:                     filepath.Join(where.tempDir(), "creds"),
				SVID:                    "admin",
				IncludeFederatedDomains: true,
				Logger:                  slog.New(slog.DiscardHandler),
			})
			if err != nil {
				b.Fatal(err)
			}
			gen := uint64(0)
			for b.Loop() {
				gen++
				u := multiUpdate(gen, pool[gen%uint64(len(pool))], c.Bundle(), feds[0].Bundle(), feds[1].Bundle())
				if err := f.Apply(b.Context(), u); err != nil {
					b.Fatal(err)
				}
			}
			top, err := os.ReadDir(filepath.Join(f.Dir(), DataLink))
			if err != nil {
				b.Fatal(err)
			}
			fed, err := os.ReadDir(filepath.Join(f.Dir(), DataLink, FederatedDirName))
			if err != nil {
				b.Fatal(err)
			}
			// Files (the federated/ entry counts as its directory's fsync),
			// federated files, the generation directory, the folder twice.
			b.ReportMetric(float64(len(top)+len(fed)+3), "fsyncs/op")
		})
	}
}
