package admin

import (
	"errors"
	"fmt"
	"path/filepath"
	"time"

	"github.com/sds-bridge/sds-bridge/filesink"
	"github.com/sds-bridge/sds-bridge/internal/oneline"
	"github.com/sds-bridge/sds-bridge/internal/statusdoc"
	"github.com/sds-bridge/sds-bridge/jwtfiles"
	"github.com/sds-bridge/sds-bridge/rotation"
)

// Problems returns why the bridge is not ready at now, one operator-facing
// line each; none means ready. It reads files (one Inspect per folder),
// keeps what it read for /metrics, and takes no lock the delivery path
// holds.
func (s *Server) Problems(now time.Time) []string {
	cur := s.cfg.Source.Current()
	var folders []folderCheck
	if cur != nil {
		folders = s.inspectFolders(now, cur)
	}
	return s.judge(now, cur, folders)
}

// lastProblems is Problems without reading the disk, for a scrape: each
// folder as the last Problems or Status read it, and a folder not read yet
// under the current generation by its sink's state alone (a failed apply,
// a failed action): a read from before a rotation says nothing about the
// folder after it.
func (s *Server) lastProblems(now time.Time) []string {
	cur := s.cfg.Source.Current()
	var folders []folderCheck
	s.mu.Lock()
	if cur != nil && s.lastFoldersGen == cur.Generation {
		folders = s.lastFolders
	}
	s.mu.Unlock()
	return s.problems(now, cur, folders)
}

// folderCheck is one folder's Inspect as readiness judges it (with
// admin.min_validity).
type folderCheck struct {
	m   *filesink.Material
	err error
}

// inspectFolders reads every folder once, in config order, and keeps the
// result for lastProblems, with the generation current at the read (cur;
// nil before the first).
func (s *Server) inspectFolders(now time.Time, cur *rotation.Update) []folderCheck {
	out := make([]folderCheck, len(s.cfg.Folders))
	for i, f := range s.cfg.Folders {
		ic := f.InspectConfig(s.cfg.MinValidity)
		ic.Now = now
		out[i].m, out[i].err = filesink.Inspect(ic)
	}
	s.mu.Lock()
	s.lastFolders, s.lastFoldersGen = out, 0
	if cur != nil {
		s.lastFoldersGen = cur.Generation
	}
	s.mu.Unlock()
	return out
}

// judge is Problems on an Update and folder checks already read, so that
// Status reads each folder once.
func (s *Server) judge(now time.Time, cur *rotation.Update, folders []folderCheck) []string {
	problems := s.problems(now, cur, folders)
	s.noteReadiness(problems)
	return problems
}

// problemList collects one-line problems.
type problemList []string

func (p *problemList) add(format string, args ...any) {
	*p = append(*p, oneline.Of(fmt.Sprintf(format, args...)))
}

// problems judges the current Update, the sinks, the folders (nil: none
// read yet), the JWT-SVID files and, if required, the SDS clients.
func (s *Server) problems(now time.Time, cur *rotation.Update, folders []folderCheck) []string {
	if cur == nil {
		line := "no SVID yet: waiting for the first valid X.509 context from the Workload API"
		if c := s.cfg.Source.Counters(); c.Refused > 0 || c.WatchErrors > 0 {
			line += fmt.Sprintf(" (%d refused, %d watch errors so far; see the log)", c.Refused, c.WatchErrors)
		}
		return []string{line}
	}
	var out problemList
	s.svidProblems(&out, now, cur)
	inGrace := now.Sub(cur.ReceivedAt) < s.cfg.DeliveryGrace
	bySink := s.sinkProblems(&out, now, cur, inGrace)
	s.folderProblems(&out, cur, folders, bySink)
	if s.cfg.JWT != nil {
		for _, t := range s.cfg.JWT.Tokens() {
			if line := s.tokenProblem(t, now); line != "" {
				out = append(out, oneline.Of(line))
			}
		}
	}
	if s.cfg.RequireSDSAck && s.cfg.SDS != nil {
		if line := s.ackProblem(cur.Generation, inGrace); line != "" {
			out = append(out, line)
		}
	}
	return out
}

// svidProblems names each SVID that expired, or is too close to it,
// without a rotation.
func (s *Server) svidProblems(out *problemList, now time.Time, cur *rotation.Update) {
	for i, svid := range cur.SVIDs {
		leaf := svid.Certificates[0]
		// The lifetime counts from when this SVID reached the bridge (or its
		// NotBefore if later): CAs back-date NotBefore (SPIRE and the dev
		// CA by 10 s), which would make a short-lived SVID look old, and an
		// SVID picked up late in its life (a bridge restart) gets judged by
		// what it had left when it arrived.
		state, left, life := s.expiry(leaf.NotAfter, laterOf(leaf.NotBefore, cur.ReceivedAt), now)
		what := fmt.Sprintf("SVID %s (serial %s, generation %d)", svid.ID, leaf.SerialNumber.Text(16), cur.Generation)
		if i == 0 {
			what = "default " + what
		}
		switch state {
		case expired:
			out.add("%s expired at %s and no newer one has arrived: is the SPIRE agent running and reaching its server?",
				what, statusdoc.Stamp(leaf.NotAfter))
		case belowMinValidity:
			out.add("%s expires at %s, in %s, sooner than admin.min_validity %s, and no newer one has arrived",
				what, statusdoc.Stamp(leaf.NotAfter), statusdoc.Round(left), s.cfg.MinValidity)
		case belowMinValidityPercent:
			out.add("%s has %d%% of its lifetime left (expires at %s, in %s; admin.min_validity_percent %d) and no newer one has arrived: SPIRE rotates at 50%%, so rotation is stuck; is the agent reaching its server?",
				what, int(left*100/life), statusdoc.Stamp(leaf.NotAfter), statusdoc.Round(left), s.cfg.MinValidityPercent)
		}
	}
}

// sinkProblems names each sink whose last apply failed, or that has not
// applied the current generation after the delivery grace. It returns
// the sinks' statuses by name.
func (s *Server) sinkProblems(out *problemList, now time.Time, cur *rotation.Update, inGrace bool) map[string]rotation.SinkStatus {
	statuses := s.cfg.Source.SinkStatuses()
	bySink := make(map[string]rotation.SinkStatus, len(statuses))
	for _, st := range statuses {
		bySink[st.Name] = st
		switch {
		case st.Retrying():
			out.add("sink %s: last apply failed (it has generation %d, current is %d), %s",
				st.Name, st.Generation, cur.Generation, statusdoc.RetryText(st.Pending, st.RetryingSince, int(st.Attempts), st.NextRetryAt, errText(st.Err), now))
		case st.Err != nil:
			out.add("sink %s: last apply failed (it has generation %d, current is %d): %v", st.Name, st.Generation, cur.Generation, st.Err)
		case st.Generation < cur.Generation && !inGrace:
			out.add("sink %s has generation %d, current is %d (received %s ago, still not applied)",
				st.Name, st.Generation, cur.Generation, statusdoc.Round(now.Sub(cur.ReceivedAt)))
		}
	}
	return bySink
}

// folderProblems names each folder that is not usable as read (folders;
// nil when none was read yet), holds another serial than its sink wrote,
// or whose reload action failed after an apply that went well.
func (s *Server) folderProblems(out *problemList, cur *rotation.Update, folders []folderCheck, bySink map[string]rotation.SinkStatus) {
	for i, f := range s.cfg.Folders {
		st, ok := bySink[f.Name()]
		if folders != nil {
			if m, err := folders[i].m, folders[i].err; err != nil {
				out.add("folder %s: %s", f.Dir(), folderProblem(err))
				continue
			} else if want := heldSerial(cur, f.SVIDChoice()); ok && st.Err == nil && st.Generation == cur.Generation && m.Serial != want {
				out.add("folder %s holds serial %s, not the current SVID's serial %s (generation %d): something else wrote to it",
					f.Dir(), m.Serial, want, cur.Generation)
			}
		}
		// After an apply that went well, an action can still fail: the
		// reload of a server that appeared later, or a re-run (SIGHUP).
		// The sink's status does not show that; a failed apply it does,
		// above. No server to reload is not a failure.
		if ok && st.Err == nil {
			for _, a := range f.Stats().Actions {
				if a.Failed() {
					out.add("folder %s: reload action %s failed for generation %d: %v", f.Dir(), a.Action, a.Generation, a.Err)
				}
			}
		}
	}
}

// heldSerial is the serial a folder must hold: the default SVID's, or
// that of the SVID it chose (files[].svid). When the chosen SVID is
// missing its apply failed, which is reported with the sinks.
func heldSerial(cur *rotation.Update, choice string) string {
	if choice != "" {
		if i := rotation.FindSVID(cur.SVIDs, choice); i >= 0 {
			return cur.SVIDs[i].Certificates[0].SerialNumber.Text(16)
		}
	}
	return cur.Leaf().SerialNumber.Text(16)
}

// expiryState is how close a credential is to its expiry.
type expiryState int

const (
	fresh expiryState = iota
	expired
	belowMinValidity        // admin.min_validity
	belowMinValidityPercent // admin.min_validity_percent
)

// expiry is the one rule for X.509 SVIDs and JWT-SVIDs alike: expired at
// notAfter, or too close to it by admin.min_validity, or by
// admin.min_validity_percent of the lifetime counted from start.
func (s *Server) expiry(notAfter, start, now time.Time) (state expiryState, left, life time.Duration) {
	left, life = notAfter.Sub(now), notAfter.Sub(start)
	switch {
	case left <= 0:
		return expired, left, life
	case left < s.cfg.MinValidity:
		return belowMinValidity, left, life
	case s.cfg.MinValidityPercent > 0 && life > 0 && left*100 < life*time.Duration(s.cfg.MinValidityPercent):
		return belowMinValidityPercent, left, life
	}
	return fresh, left, life
}

// tokenProblem says why a JWT-SVID file is not good at now; "" when it
// is. A failed refresh is not a problem while the token in the file is
// good by the rules for X.509 SVIDs (it is refreshed at half its
// lifetime, so a failure leaves time to recover); it is named when the
// token is not.
func (s *Server) tokenProblem(t jwtfiles.TokenStatus, now time.Time) string {
	what := fmt.Sprintf("JWT-SVID %s (audience %q)", filepath.Join(t.Dir, t.FileName), t.Audience)
	failing := ""
	if t.LastError != nil {
		failing = fmt.Sprintf("; refreshing it failed %s, last at %s: %s", statusdoc.Plural(int(t.Failures), "time"), statusdoc.Stamp(t.LastErrorAt), errText(t.LastError))
	}
	if t.RefreshedAt.IsZero() {
		if failing == "" {
			return what + ": none written yet, waiting for the first fetch from the Workload API"
		}
		return what + ": none written yet" + failing + ": is there a registration entry for this workload, and does the agent issue JWT-SVIDs?"
	}
	// As for X.509: from when the token reached the bridge, or its iat if
	// later.
	state, left, life := s.expiry(t.Expiry, laterOf(t.IssuedAt, t.FetchedAt), now)
	switch state {
	case expired:
		return fmt.Sprintf("%s expired at %s and no new token has been written%s", what, statusdoc.Stamp(t.Expiry), failing)
	case belowMinValidity:
		return fmt.Sprintf("%s expires at %s, in %s, sooner than admin.min_validity %s, and no new token has been written%s",
			what, statusdoc.Stamp(t.Expiry), statusdoc.Round(left), s.cfg.MinValidity, failing)
	case belowMinValidityPercent:
		return fmt.Sprintf("%s has %d%% of its lifetime left (expires at %s, in %s; admin.min_validity_percent %d) and no new token has been written: it is refreshed at 50%%, so refreshing is stuck%s",
			what, int(left*100/life), statusdoc.Stamp(t.Expiry), statusdoc.Round(left), s.cfg.MinValidityPercent, failing)
	}
	return ""
}

// ackProblem says why no SDS client counts as having the current
// generation. Within the delivery grace, a client that acknowledged an
// earlier generation of this process still counts.
func (s *Server) ackProblem(gen uint64, inGrace bool) string {
	clients := s.cfg.SDS.Clients()
	var newest uint64
	for _, c := range clients {
		if c.AckedGeneration == gen || (inGrace && c.AckedGeneration > 0) {
			return ""
		}
		newest = max(newest, c.AckedGeneration)
	}
	switch {
	case len(clients) == 0:
		return fmt.Sprintf("no SDS client connected: nobody has acknowledged generation %d (admin.require_sds_ack)", gen)
	case newest == 0:
		return fmt.Sprintf("no SDS client has acknowledged any secrets yet (%d connected; admin.require_sds_ack)", len(clients))
	default:
		return fmt.Sprintf("no SDS client has acknowledged generation %d (%d connected, newest acknowledged %d; admin.require_sds_ack)",
			gen, len(clients), newest)
	}
}

// noteReadiness logs when readiness changes, so the log shows when and why
// the bridge stopped (or started) being ready.
func (s *Server) noteReadiness(problems []string) {
	ready := len(problems) == 0
	s.mu.Lock()
	changed := s.lastReady == nil || *s.lastReady != ready
	s.lastReady = &ready
	s.mu.Unlock()
	if !changed {
		return
	}
	if ready {
		s.log.Info("ready")
		return
	}
	s.log.Warn("not ready", "problems", problems)
}

func laterOf(a, b time.Time) time.Time {
	if a.After(b) {
		return a
	}
	return b
}

// folderProblem is the operator's line for a folder Inspect refused: the
// reader's one-line detail, without the package prefix the error carries
// for logs.
func folderProblem(err error) string {
	var me *filesink.MaterialError
	if errors.As(err, &me) {
		return me.Detail
	}
	return err.Error()
}
