package admin

import (
	"net/http"
	"path/filepath"
	"testing"
	"time"

	"github.com/spiffe/go-spiffe/v2/bundle/x509bundle"
	"github.com/spiffe/go-spiffe/v2/spiffeid"
	"github.com/spiffe/go-spiffe/v2/svid/x509svid"

	"github.com/sds-bridge/sds-bridge/filesink"
	"github.com/sds-bridge/sds-bridge/internal/devapi"
)

// A folder that chose a second SVID is ready with that SVID's serial, not
// the default's; when an update lacks it, readiness says so.
func TestReadyzWithAFolderOnASecondSVID(t *testing.T) {
	dir := filepath.Join(t.TempDir(), "admin-db")
	b := startBridge(t, bridgeOptions{folders: []filesink.Config{{Dir: dir, SVID: "admin"}}})
	adminID := spiffeid.RequireFromPath(td, "/db-admin")
	push := func(withAdmin bool) {
		t.Helper()
		svids := []*x509svid.SVID{}
		first, err := b.ca.Issue(dbID, 10*time.Minute)
		if err != nil {
			t.Fatal(err)
		}
		svids = append(svids, first)
		if withAdmin {
			second, err := b.ca.IssueWith(adminID, 10*time.Minute, devapi.SVIDOptions{Hint: "admin"})
			if err != nil {
				t.Fatal(err)
			}
			svids = append(svids, second)
		}
		resp, err := devapi.X509Response(svids, []*x509bundle.Bundle{b.ca.Bundle()})
		if err != nil {
			t.Fatal(err)
		}
		b.wl.SetX509(resp)
	}

	push(true)
	b.waitSinks(1, nil)
	b.expectReadyz(http.StatusOK, "ready: generation 1")

	push(false)
	b.waitSinks(2, map[string]uint64{"files:" + dir: 1})
	b.expectReadyz(http.StatusServiceUnavailable, "sink files:"+dir+": last apply failed", `svid "admin"`)

	push(true)
	b.waitSinks(3, nil)
	b.expectReadyz(http.StatusOK, "ready: generation 3")
}
