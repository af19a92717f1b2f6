package filesink

import (
	"encoding/json"
	"errors"
	"fmt"
	"io/fs"
	"log/slog"
	"os"
	"path/filepath"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/spiffe/go-spiffe/v2/svid/x509svid"

	"github.com/sds-bridge/sds-bridge/internal/certcheck"
	"github.com/sds-bridge/sds-bridge/internal/devapi"
)

// swapStats counts what the concurrent readers saw.
type swapStats struct {
	stableSets, stablePartial, stableCrossGen, stableVanished atomic.Int64
	dataSets, dataMismatch, dataVanished                      atomic.Int64

	mu       sync.Mutex
	failures []string
}

func (s *swapStats) fail(format string, args ...any) {
	s.mu.Lock()
	defer s.mu.Unlock()
	if len(s.failures) < 10 {
		s.failures = append(s.failures, fmt.Sprintf(format, args...))
	}
}

// TestSwapIsAtomicAsASet applies many generations while readers keep
// reading: through the stable names no file is ever partial, and through
// ..data resolved once the certificate, key and marker always belong
// together.
func TestSwapIsAtomicAsASet(t *testing.T) {
	const (
		applies  = 1000
		poolSize = 20
		readers  = 2 // of each kind
	)
	c := newCA(t, "example.org")
	pool := make([]*x509svid.SVID, poolSize)
	for i := range pool {
		pool[i] = c.issue(t, devapi.SVIDOptions{})
	}
	// Only warnings: a thousand "swapped in" lines would drown a failure.
	logs := &syncBuffer{}
	f, _ := newFolder(t, Config{
		Dir:    filepath.Join(memTempDir(t), "creds"),
		Logger: slog.New(slog.NewTextHandler(logs, &slog.HandlerOptions{Level: slog.LevelWarn})),
	})
	t.Cleanup(func() {
		if t.Failed() {
			t.Logf("filesink warnings:\n%s", logs)
		}
	})
	dir := f.Dir()
	if err := f.Apply(t.Context(), update(1, pool[0], c.Bundle())); err != nil {
		t.Fatal(err)
	}

	var (
		stats swapStats
		stop  atomic.Bool
		wg    sync.WaitGroup
	)
	for range readers {
		wg.Go(func() {
			for !stop.Load() {
				readStable(dir, &stats)
			}
		})
		wg.Go(func() {
			for !stop.Load() {
				readResolved(dir, &stats)
			}
		})
	}

	start := time.Now()
	var applyErr error
	for i := 1; i <= applies && applyErr == nil; i++ {
		applyErr = f.Apply(t.Context(), update(uint64(i+1), pool[i%poolSize], c.Bundle()))
	}
	elapsed := time.Since(start)
	stop.Store(true)
	wg.Wait()
	if applyErr != nil {
		t.Fatal(applyErr)
	}

	t.Logf("%d applies in %s (%s each); stable names: %d sets read, %d partial, %d mixing two generations, %d vanished mid-read; via ..data: %d sets read, %d mismatched, %d vanished",
		applies, elapsed.Round(time.Millisecond), (elapsed / applies).Round(time.Microsecond),
		stats.stableSets.Load(), stats.stablePartial.Load(), stats.stableCrossGen.Load(), stats.stableVanished.Load(),
		stats.dataSets.Load(), stats.dataMismatch.Load(), stats.dataVanished.Load())
	for _, f := range stats.failures {
		t.Error(f)
	}
	if stats.stableSets.Load() == 0 || stats.dataSets.Load() == 0 {
		t.Error("the readers did not complete a single read; the test proves nothing")
	}
	m, err := Inspect(InspectConfig{Dir: dir})
	if err != nil {
		t.Fatal(err)
	}
	if m.Generation != applies+1 {
		t.Errorf("final generation = %d, want %d", m.Generation, applies+1)
	}
}

// memTempDir is a temporary directory on tmpfs when the machine has one.
// The swap relies on rename(2) and symlink semantics, which tmpfs shares
// with disk file systems; only fsync is free there, which keeps a thousand
// generations within a few seconds (the disk's cost is in the benchmarks).
func memTempDir(t testing.TB) string {
	const tmpfsMagic = 0x01021994
	var st syscall.Statfs_t
	if err := syscall.Statfs("/dev/shm", &st); err != nil || st.Type != tmpfsMagic {
		t.Logf("no tmpfs at /dev/shm (%v): using the disk", err)
		return t.TempDir()
	}
	dir, err := os.MkdirTemp("/dev/shm", "filesink-test-")
	if err != nil {
		t.Logf("no tmpfs at /dev/shm (%v): using the disk", err)
		return t.TempDir()
	}
	t.Cleanup(func() {
		if err := os.RemoveAll(dir); err != nil {
			t.Error(err)
		}
	})
	return dir
}

// readStable reads the files as a consumer that opens the stable names
// does. A file may vanish (its generation was removed between the lookup
// of ..data and the open) and cert and key may come from two adjacent
// generations; a partial file is a failure.
func readStable(dir string, s *swapStats) {
	var data [3][]byte
	for i, name := range []string{"svid.pem", "svid_key.pem", "svid_bundle.pem"} {
		b, err := os.ReadFile(filepath.Join(dir, name))
		if errors.Is(err, fs.ErrNotExist) {
			s.stableVanished.Add(1)
			return
		}
		if err != nil {
			s.fail("read %s: %v", name, err)
			return
		}
		data[i] = b
	}
	certs, err := certcheck.ParseCerts(data[0])
	if err != nil {
		s.stablePartial.Add(1)
		s.fail("svid.pem read through the stable name does not parse: %v (%d bytes)", err, len(data[0]))
		return
	}
	key, err := certcheck.ParseKey(data[1])
	if err != nil {
		s.stablePartial.Add(1)
		s.fail("svid_key.pem read through the stable name does not parse: %v (%d bytes)", err, len(data[1]))
		return
	}
	if _, err := certcheck.ParseCerts(data[2]); err != nil {
		s.stablePartial.Add(1)
		s.fail("svid_bundle.pem read through the stable name does not parse: %v", err)
		return
	}
	if certcheck.KeyMatches(key, certs[0]) != nil {
		s.stableCrossGen.Add(1) // documented: use ..data for a matching pair
	}
	s.stableSets.Add(1)
}

// readResolved resolves ..data once and reads the whole set from that
// generation directory, as the package doc tells consumers to.
func readResolved(dir string, s *swapStats) {
	target, err := os.Readlink(filepath.Join(dir, DataLink))
	if err != nil {
		s.fail("readlink ..data: %v", err)
		return
	}
	gen := filepath.Join(dir, target)
	var data [3][]byte
	for i, name := range []string{"svid.pem", "svid_key.pem", MarkerFileName} {
		b, err := os.ReadFile(filepath.Join(gen, name))
		if errors.Is(err, fs.ErrNotExist) {
			s.dataVanished.Add(1) // the generation was retired; read again
			return
		}
		if err != nil {
			s.fail("read %s/%s: %v", target, name, err)
			return
		}
		data[i] = b
	}
	svid, err := x509svid.Parse(data[0], data[1])
	if err != nil {
		s.dataMismatch.Add(1)
		s.fail("%s: certificate and key do not form an SVID: %v", target, err)
		return
	}
	var m marker
	if err := json.Unmarshal(data[2], &m); err != nil {
		s.dataMismatch.Add(1)
		s.fail("%s: marker: %v", target, err)
		return
	}
	if serial := svid.Certificates[0].SerialNumber.Text(16); m.Serial != serial {
		s.dataMismatch.Add(1)
		s.fail("%s: marker describes serial %s, certificate is %s", target, m.Serial, serial)
		return
	}
	if want := fmt.Sprintf("-g%d", m.Generation); len(target) < len(want) || target[len(target)-len(want):] != want {
		s.dataMismatch.Add(1)
		s.fail("%s: marker says generation %d", target, m.Generation)
		return
	}
	s.dataSets.Add(1)
}
