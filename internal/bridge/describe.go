package bridge

import (
	"fmt"
	"io"
	"strings"

	"github.com/spiffe/go-spiffe/v2/spiffeid"

	"github.com/sds-bridge/sds-bridge/internal/config"
	"github.com/sds-bridge/sds-bridge/reload/pgreload"
)

// Describe tells a person at a terminal what the bridge serves and where;
// the SDS names are those served for SVIDs of ids and bundles of domains.
func (b *Bridge) Describe(w io.Writer, ids []spiffeid.ID, domains []spiffeid.TrustDomain) {
	cfg := b.Config
	if b.sds != nil {
		names := cfg.SDS.Names.WithDefaults().Served(ids, domains)
		fmt.Fprintf(w, "  Envoy SDS socket:   %s  (names: %s)\n", cfg.SDS.SocketPath, strings.Join(names, ", "))
	}
	for _, f := range cfg.Files {
		fmt.Fprintf(w, "  credential folder:  %s  (layout %s)\n", f.Dir, f.WithDefaults().Layout)
		for _, a := range f.OnRotate {
			switch {
			case a.Signal != nil:
				fmt.Fprintf(w, "    on rotate: %s to the pid in %s\n", config.Signal(a.Signal.Sent()), a.Signal.PIDFile)
			case a.Exec != nil:
				fmt.Fprintf(w, "    on rotate: run %q\n", a.Exec.Command)
			case a.Postgres != nil:
				fmt.Fprintf(w, "    on rotate: SELECT pg_reload_conf() on %s\n", pgreload.RedactDSN(a.Postgres.DSN))
			}
		}
	}
	if sv := cfg.Supervise; sv.On() {
		fmt.Fprintf(w, "  supervised program: %q  (starts once every folder holds a set; %s after each swap; restart %s)\n", sv.Command, sv.RenewSignal, sv.Restart)
	}
	if b.Once {
		fmt.Fprintln(w, "  --once: writes every folder once, runs its reload actions and exits; no Envoy SDS, no admin")
	}
	if addr := b.adminAddr(); addr != "" {
		fmt.Fprintf(w, "  admin:              http://%s  (%s)\n", addr, b.admin.Paths())
	}
}
