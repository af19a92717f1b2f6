package admin

import (
	"github.com/prometheus/client_golang/prometheus"
)

// descs are every metric's description, gathered by desc so that
// Describe cannot leave one out.
var descs []*prometheus.Desc

func desc(name, help string, labels ...string) *prometheus.Desc {
	d := prometheus.NewDesc("sds_bridge_"+name, help, labels, nil)
	descs = append(descs, d)
	return d
}

// The metrics read at scrape time. docs/admin.md lists them; keep it in step.
var (
	descBuildInfo = desc("build_info", "Always 1; the labels name the build: version, VCS revision (empty if none was recorded), Go version.", "version", "revision", "goversion")
	descReady     = desc("ready", "1 when /readyz would answer 200, else 0.")

	descRotations = desc("rotations_total", "Validated Workload API updates published to the sinks since start (each is a new generation).")
	descGen       = desc("generation", "The current generation; 0 before the first update.")
	descRefused   = desc("refused_updates_total", "Workload API updates refused by validation (expired, not yet valid, mismatched key, unverifiable chain); the last good update stays.")
	descWatchErrs = desc("workload_api_errors_total", "Workload API watch errors (connection lost, bad response); each is followed by a reconnect with backoff.")
	descNotAfter  = desc("svid_not_after_timestamp_seconds", "NotAfter of each current SVID's leaf, in Unix seconds.", "spiffe_id")

	descReconnects = desc("workload_api_reconnects_total", "Times the Workload API watch came back after losing its connection (an agent restarted or briefly unreachable); the log line says how long it was away.")

	descSinkGen      = desc("sink_generation", "The generation each sink has applied.", "sink")
	descSinkFailures = desc("sink_apply_failures_total", "Failed Applies per sink (for a folder: a failed write or a reload action that gave up).", "sink")
	descSinkRetries  = desc("sink_retries_total", "Applies per sink that repeated an update whose apply had failed (retried with backoff until it succeeds or a newer update replaces it).", "sink")

	descStreams          = desc("sds_streams_open", "Open SDS streams (SotW, Delta, ADS).")
	descPushes           = desc("sds_pushes_total", "SDS responses sent on streams.")
	descNACKs            = desc("sds_nacks_total", "SDS responses a client rejected (NACK); the client keeps its last accepted secrets.")
	descAckedCurrent     = desc("sds_clients_current", "Open SDS streams whose last acknowledged version is the current generation.")
	descRefusedPeers     = desc("sds_refused_peers_total", "SDS connections refused because the peer's uid/gid is not allowed (sds.allowed_uids, sds.allowed_gids).")
	descConnsOpen        = desc("sds_connections_open", "Connections open on the SDS socket now, allowed peers or not.")
	descConnsOverCap     = desc("sds_connections_over_cap_total", "SDS connections closed at once because sds.max_connections (or refused peers' share of it) was reached.")
	descStreamsOverLimit = desc("sds_streams_over_limit_total", "SDS streams ended with ResourceExhausted because they or their peer uid held as many streams or names as one may.")

	descWriteFailures  = desc("file_write_failures_total", "Updates a credential folder refused or failed to write; the consumers keep the previous set.", "folder")
	descActionFailures = desc("reload_action_failures_total", "Failed reload action attempts per folder and action (each is retried with backoff).", "folder", "action")
	descActionRunning  = desc("reload_action_running_seconds", "How long the reload action has been running for its current generation; 0 when it is not running. Swaps go on meanwhile: a consumer that hangs shows here.", "folder", "action")
	descReloadPending  = desc("reload_pending_generation", "The generation swapped in whose reload actions wait for a running one to end; 0 when none waits.", "folder")

	descJWTExpiry   = desc("jwt_svid_expiry_timestamp_seconds", "Expiry (exp claim) of the JWT-SVID each file holds, in Unix seconds; absent before the first token.", "folder", "file")
	descJWTFailures = desc("jwt_refresh_failures_total", "Failed JWT-SVID fetches or writes per file (each is retried with backoff; the file keeps its last token).", "folder", "file")
)

// collector renders the Status of each scrape (a snapshot that reads no
// disk, so a hung disk cannot stall a scrape).
type collector struct {
	build  BuildInfo
	status func() Status
}

func (c *collector) Describe(ch chan<- *prometheus.Desc) {
	for _, d := range descs {
		ch <- d
	}
}

func (c *collector) Collect(ch chan<- prometheus.Metric) {
	st, b := c.status(), c.build
	gauge(ch, descBuildInfo, 1, b.Version, b.Revision, b.GoVersion)
	ready := 0.0
	if st.Ready {
		ready = 1
	}
	gauge(ch, descReady, ready)
	for _, svid := range st.SVIDs {
		gauge(ch, descNotAfter, float64(svid.NotAfter.Unix()), svid.SPIFFEID)
	}
	// Generations count published updates, starting at 1.
	counter(ch, descRotations, float64(st.Generation))
	gauge(ch, descGen, float64(st.Generation))
	counter(ch, descRefused, float64(st.WorkloadAPI.Refused))
	counter(ch, descWatchErrs, float64(st.WorkloadAPI.WatchErrors))
	counter(ch, descReconnects, float64(st.WorkloadAPI.Reconnects))
	for _, sk := range st.Sinks {
		gauge(ch, descSinkGen, float64(sk.Generation), sk.Name)
		counter(ch, descSinkFailures, float64(sk.Failures), sk.Name)
		counter(ch, descSinkRetries, float64(sk.Retries), sk.Name)
	}
	if sds := st.SDS; sds != nil {
		gauge(ch, descStreams, float64(sds.StreamsOpen))
		counter(ch, descPushes, float64(sds.Pushes))
		counter(ch, descNACKs, float64(sds.NACKs))
		counter(ch, descRefusedPeers, float64(sds.RefusedPeers))
		gauge(ch, descConnsOpen, float64(sds.ConnectionsOpen))
		counter(ch, descConnsOverCap, float64(sds.ConnectionsOverCap))
		counter(ch, descStreamsOverLimit, float64(sds.StreamsOverLimit))
		gauge(ch, descAckedCurrent, float64(sds.ClientsCurrent))
	}
	for _, f := range st.Folders {
		collectFolder(ch, f)
	}
	for _, j := range st.JWTSVIDs {
		if !j.Expiry.IsZero() {
			gauge(ch, descJWTExpiry, float64(j.Expiry.Unix()), j.Dir, j.File)
		}
		counter(ch, descJWTFailures, float64(j.Failures), j.Dir, j.File)
	}
}

func gauge(ch chan<- prometheus.Metric, d *prometheus.Desc, v float64, labels ...string) {
	ch <- prometheus.MustNewConstMetric(d, prometheus.GaugeValue, v, labels...)
}

func counter(ch chan<- prometheus.Metric, d *prometheus.Desc, v float64, labels ...string) {
	ch <- prometheus.MustNewConstMetric(d, prometheus.CounterValue, v, labels...)
}

func collectFolder(ch chan<- prometheus.Metric, f FolderStatus) {
	counter(ch, descWriteFailures, float64(f.WriteFailures), f.Dir)
	// Two actions may share a name: one series each, summed.
	failures := map[string]uint64{}
	running := map[string]float64{}
	var names []string
	for _, a := range f.Actions {
		if _, seen := failures[a.Action]; !seen {
			names = append(names, a.Action)
		}
		failures[a.Action] += a.Failures
		running[a.Action] = max(running[a.Action], a.RunningSeconds)
	}
	for _, name := range names {
		counter(ch, descActionFailures, float64(failures[name]), f.Dir, name)
		gauge(ch, descActionRunning, running[name], f.Dir, name)
	}
	gauge(ch, descReloadPending, float64(f.ReloadPending), f.Dir)
}
