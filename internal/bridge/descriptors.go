package bridge

import (
	"log/slog"
	"math"

	"golang.org/x/sys/unix"

	"github.com/sds-bridge/sds-bridge/internal/config"
)

// minDescriptorsLeft is what the connection caps must leave of the
// descriptor limit for swaps, reload actions, listeners and logs.
const minDescriptorsLeft = 256

// logDescriptorBudget logs how the descriptor limit is shared, and warns
// when the connection caps leave too little. There is nothing to raise:
// the Go runtime already set the soft RLIMIT_NOFILE to the hard one.
func logDescriptorBudget(cfg *config.Config, log *slog.Logger) {
	var lim unix.Rlimit
	if err := unix.Getrlimit(unix.RLIMIT_NOFILE, &lim); err != nil {
		log.Warn("descriptors: cannot read RLIMIT_NOFILE", "error", err)
		return
	}
	var sdsMax, adminMax int
	if cfg.SDS.On() {
		sdsMax = cfg.SDS.WithDefaults().MaxConnections
	}
	if cfg.Admin.Address() != "" {
		adminMax = cfg.Admin.ServerConfig().WithDefaults().MaxConnections
	}
	limit := int64(min(lim.Cur, math.MaxInt64))
	left := limit - int64(sdsMax) - int64(adminMax)
	attrs := []any{"limit", limit, "sds_max_connections", sdsMax, "admin_max_connections", adminMax, "left", left}
	if left < minDescriptorsLeft {
		log.Warn("descriptors: the connection caps leave too few for folder swaps and reload actions; "+
			"lower sds.max_connections or admin.max_connections, or raise the limit (ulimit -n, LimitNOFILE)",
			append(attrs, "want_left", minDescriptorsLeft)...)
		return
	}
	log.Info("descriptors", attrs...)
}
