package admin

import (
	"encoding/json"
	"errors"
	"net/http"
	"time"

	"github.com/sds-bridge/sds-bridge/filesink"
	"github.com/sds-bridge/sds-bridge/internal/oneline"
	"github.com/sds-bridge/sds-bridge/internal/statusdoc"
	"github.com/sds-bridge/sds-bridge/reload"
	"github.com/sds-bridge/sds-bridge/rotation"
)

// Status is the JSON document of /status (internal/statusdoc).
type Status = statusdoc.Status

func actionStatus(a reload.ActionStats, now time.Time) statusdoc.ActionStatus {
	st := statusdoc.ActionStatus{Action: a.Action, Generation: a.Generation, Attempts: a.Attempts, At: a.At, Failures: a.Failures}
	if a.Running() {
		st.Running, st.RunningGeneration, st.RunningSince = true, a.RunningGeneration, a.RunningSince
		st.RunningSeconds = now.Sub(a.RunningSince).Seconds()
	}
	switch {
	case a.Generation == 0:
		st.State = statusdoc.ActionNotRun
	case a.NoServer():
		st.State, st.NoServer = statusdoc.ActionNoServer, errText(a.Err)
	case a.Failed():
		st.State, st.Error = statusdoc.ActionFailed, errText(a.Err)
	default:
		st.State, st.OK = statusdoc.ActionOK, true
	}
	return st
}

// Status gathers the document at now.
func (s *Server) Status(now time.Time) Status {
	st := Status{Version: s.cfg.Build.String(), Time: now, SVIDs: []statusdoc.SVIDStatus{}, Bundles: []statusdoc.BundleStatus{},
		Sinks: []statusdoc.SinkStatus{}, Folders: []statusdoc.FolderStatus{}, JWTSVIDs: []statusdoc.JWTSVIDStatus{}}
	cur := s.cfg.Source.Current()
	folders := s.inspectFolders(now, cur)
	st.Problems = s.judge(now, cur, folders)
	st.Ready = len(st.Problems) == 0
	if cur != nil {
		st.Generation, st.ReceivedAt = cur.Generation, cur.ReceivedAt
		st.SVIDs, st.Bundles = svidStatuses(cur), bundleStatuses(cur)
	}
	c := s.cfg.Source.Counters()
	st.WorkloadAPI = statusdoc.WorkloadAPIStatus{Refused: c.Refused, WatchErrors: c.WatchErrors}
	for _, ss := range s.cfg.Source.SinkStatuses() {
		st.Sinks = append(st.Sinks, statusdoc.SinkStatus{
			Name: ss.Name, Generation: ss.Generation, Pending: ss.Pending, AppliedAt: ss.AppliedAt,
			TookSeconds: ss.Took.Seconds(), LatencySeconds: ss.Latency.Seconds(), Failures: ss.Failures, Error: errText(ss.Err),
			RetryingSince: ss.RetryingSince, Attempts: ss.Attempts, NextRetryAt: ss.NextRetryAt, Retries: ss.Retries,
		})
	}
	for i, f := range s.cfg.Folders {
		st.Folders = append(st.Folders, folderStatus(f, folders[i], now))
	}
	if s.cfg.JWT != nil {
		for _, t := range s.cfg.JWT.Tokens() {
			st.JWTSVIDs = append(st.JWTSVIDs, statusdoc.JWTSVIDStatus{
				Dir: t.Dir, File: t.FileName, Audience: t.Audience, SPIFFEID: t.SPIFFEID, Expiry: t.Expiry,
				LastRefresh: t.RefreshedAt, NextRefresh: t.NextRefreshAt, Failures: t.Failures,
				LastError: errText(t.LastError), LastErrorAt: t.LastErrorAt,
			})
		}
	}
	if s.cfg.SDS != nil {
		st.SDS = s.sdsStatus()
	}
	return st
}

func svidStatuses(cur *rotation.Update) []statusdoc.SVIDStatus {
	out := []statusdoc.SVIDStatus{}
	for i, svid := range cur.SVIDs {
		leaf := svid.Certificates[0]
		out = append(out, statusdoc.SVIDStatus{
			SPIFFEID: svid.ID.String(), Default: i == 0, Serial: leaf.SerialNumber.Text(16),
			NotBefore: leaf.NotBefore, NotAfter: leaf.NotAfter, Hint: svid.Hint,
		})
	}
	return out
}

func bundleStatuses(cur *rotation.Update) []statusdoc.BundleStatus {
	out := []statusdoc.BundleStatus{}
	for _, b := range cur.Bundles {
		out = append(out, statusdoc.BundleStatus{TrustDomain: b.TrustDomain().Name(), Authorities: len(b.X509Authorities())})
	}
	return out
}

// folderStatus is what is on disk in f, as readiness read it (checked),
// and what its writer and actions did. It shows what is on disk even when
// it expires within admin.min_validity (readiness says so); only then is
// the folder read a second time, without that limit.
func folderStatus(f Folder, checked folderCheck, now time.Time) statusdoc.FolderStatus {
	fs := statusdoc.FolderStatus{Dir: f.Dir(), Actions: []statusdoc.ActionStatus{}}
	m, err := checked.m, checked.err
	if errors.Is(err, filesink.ErrExpiringSoon) {
		ic := f.InspectConfig(0)
		ic.Now = now
		m, err = filesink.Inspect(ic)
	}
	if err != nil {
		fs.Problem = folderProblem(err)
	} else {
		fs.Material = &statusdoc.MaterialStatus{SPIFFEID: m.SPIFFEID.String(), Serial: m.Serial, NotAfter: m.NotAfter, Generation: m.Generation}
	}
	fst := f.Stats()
	fs.WriteFailures, fs.LastWriteError = fst.WriteFailures, errText(fst.LastWriteErr)
	for _, a := range fst.Actions {
		fs.Actions = append(fs.Actions, actionStatus(a, now))
	}
	fs.ReloadPending = fst.ReloadPending
	return fs
}

// sdsStatus lists the oldest statusdoc.MaxListedClients streams and
// counts the others; what their clients chose is escaped
// (statusdoc.Printable), as the SDS server already cut it to a bound.
func (s *Server) sdsStatus() *statusdoc.SDSStatus {
	ss := s.cfg.SDS.Stats()
	sst := &statusdoc.SDSStatus{Version: ss.Version, Generation: ss.Generation, StreamsOpen: ss.StreamsOpen,
		Pushes: ss.Pushes, NACKs: ss.NACKs, Clients: []statusdoc.ClientStatus{}}
	clients := s.cfg.SDS.Clients()
	if len(clients) > statusdoc.MaxListedClients {
		sst.ClientsNotListed = len(clients) - statusdoc.MaxListedClients
		clients = clients[:statusdoc.MaxListedClients]
	}
	p := statusdoc.Printable
	for _, c := range clients {
		sst.Clients = append(sst.Clients, statusdoc.ClientStatus{
			Node: p(c.Node), Cluster: p(c.Cluster), Stream: c.Stream, Delta: c.Delta, OpenedAt: c.OpenedAt,
			Validation: c.Validation.String(), ValidationReason: p(c.ValidationReason),
			AckedVersion: p(c.AckedVersion), AckedGeneration: c.AckedGeneration, AckedAt: c.AckedAt,
			NACKedVersion: p(c.NACKedVersion), NACK: p(c.NACK), NACKedAt: c.NACKedAt,
		})
	}
	return sst
}

func errText(err error) string {
	if err == nil {
		return ""
	}
	return oneline.Of(err.Error())
}

func (s *Server) status(w http.ResponseWriter, _ *http.Request) {
	w.Header().Set("Content-Type", "application/json")
	w.Header().Set("Cache-Control", "no-store")
	enc := json.NewEncoder(w)
	enc.SetIndent("", "  ")
	if err := enc.Encode(s.Status(s.cfg.Now())); err != nil {
		s.log.Debug("admin endpoint: write /status", "error", err)
	}
}
