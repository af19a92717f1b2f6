package admin

import (
	"fmt"
	"path/filepath"
	"time"

	"github.com/sds-bridge/sds-bridge/jwtfiles"
	"github.com/sds-bridge/sds-bridge/rotation"
)

type problemList []string

func (p *problemList) add(format string, args ...any) {
	*p = append(*p, oneLine(fmt.Sprintf(format, args...)))
}

// problems judges r: the current Update, the sinks, the folders, the
// JWT-SVID files and, if required, the SDS clients.
func (s *Server) problems(r reading) []string {
	if r.cur == nil {
		line := "no SVID yet: waiting for the first valid X.509 context from the Workload API"
		if c := r.counts; c.Refused > 0 || c.WatchErrors > 0 {
			line += fmt.Sprintf(" (%d refused, %d watch errors so far; see the log)", c.Refused, c.WatchErrors)
		}
		return []string{line}
	}
	var out problemList
	s.svidProblems(&out, r)
	inGrace := r.now.Sub(r.cur.ReceivedAt) < s.cfg.DeliveryGrace
	bySink := s.sinkProblems(&out, r, inGrace)
	folderProblems(&out, r, bySink)
	for _, t := range r.tokens {
		if line := s.tokenProblem(t, r.now); line != "" {
			out.add("%s", line)
		}
	}
	if s.cfg.RequireSDSAck && r.sds != nil {
		if line := ackProblem(r.sds, r.cur.Generation, inGrace); line != "" {
			out = append(out, line)
		}
	}
	return out
}

// svidProblems names each SVID that expired, or is too close to it.
func (s *Server) svidProblems(out *problemList, r reading) {
	for i, svid := range r.cur.SVIDs {
		leaf := svid.Certificates[0]
		what := fmt.Sprintf("SVID %s (serial %s, generation %d)", svid.ID, leaf.SerialNumber.Text(16), r.cur.Generation)
		if i == 0 {
			what = "default " + what
		}
		// The lifetime counts from when the SVID arrived (or NotBefore if
		// later): CAs back-date NotBefore, which would make a short-lived
		// SVID look old, and one picked up late in its life (a restart) is
		// judged by what it had left on arrival.
		if line := s.expiryProblem(what, leaf.NotAfter, laterOf(leaf.NotBefore, r.cur.ReceivedAt), r.now, staleness{
			none:    "no newer one has arrived",
			expired: ": is the SPIRE agent running and reaching its server?",
			stuck:   ": SPIRE rotates at 50%, so rotation is stuck; is the agent reaching its server?",
		}); line != "" {
			out.add("%s", line)
		}
	}
}

// sinkProblems names each sink whose last apply failed, or that has not
// applied the current generation after the delivery grace, and returns
// the sinks' statuses by name.
func (s *Server) sinkProblems(out *problemList, r reading, inGrace bool) map[string]rotation.SinkStatus {
	cur := r.cur
	bySink := make(map[string]rotation.SinkStatus, len(r.sinks))
	for _, st := range r.sinks {
		bySink[st.Name] = st
		switch {
		case st.Retrying():
			out.add("sink %s: last apply failed (it has generation %d, current is %d), %s",
				st.Name, st.Generation, cur.Generation, retryText(st.Pending, st.RetryingSince, int(st.Attempts), st.NextRetryAt, errText(st.Err), r.now))
		case st.Err != nil:
			out.add("sink %s: last apply failed (it has generation %d, current is %d): %v", st.Name, st.Generation, cur.Generation, st.Err)
		case st.Generation < cur.Generation && !inGrace:
			out.add("sink %s has generation %d, current is %d (received %s ago, still not applied)",
				st.Name, st.Generation, cur.Generation, round(r.now.Sub(cur.ReceivedAt)))
		}
	}
	return bySink
}

// folderProblems names each folder not usable as read, holding another
// serial than its sink wrote, or whose reload action failed after a good
// apply.
func folderProblems(out *problemList, r reading, bySink map[string]rotation.SinkStatus) {
	cur := r.cur
	for _, f := range r.folders {
		st, ok := bySink[f.Name()]
		if d := f.disk; d != nil {
			if d.err != nil {
				out.add("folder %s: %v", f.Dir(), d.err)
				continue
			} else if want := heldSerial(cur, f.SVIDChoice()); ok && st.Err == nil && st.Generation == cur.Generation && d.m.Serial != want {
				out.add("folder %s holds serial %s, not the current SVID's serial %s (generation %d): something else wrote to it",
					f.Dir(), d.m.Serial, want, cur.Generation)
			}
		}
		// An action can fail after a good apply (a re-run on SIGHUP), which
		// the sink's status does not show.
		if ok && st.Err == nil {
			for _, a := range f.stats.Actions {
				if a.Failed() {
					out.add("folder %s: reload action %s failed for generation %d: %v", f.Dir(), a.Action, a.Generation, a.Err)
				}
			}
		}
	}
}

// heldSerial is the serial a folder must hold: the SVID it chose
// (files[].svid) or the default. A missing choice failed its apply.
func heldSerial(cur *rotation.Update, choice string) string {
	if choice != "" {
		if i := rotation.FindSVID(cur.SVIDs, choice); i >= 0 {
			return cur.SVIDs[i].Certificates[0].SerialNumber.Text(16)
		}
	}
	return cur.Leaf().SerialNumber.Text(16)
}

// staleness words an expiry problem for one kind of credential: what has
// not happened (none), and what ends the line when it expired, is within
// admin.min_validity, or below admin.min_validity_percent.
type staleness struct{ none, expired, tooClose, stuck string }

// expiryProblem is the one expiry rule for X.509 SVIDs and JWT-SVIDs; the
// lifetime counts from start. "" when what is good.
func (s *Server) expiryProblem(what string, notAfter, start, now time.Time, w staleness) string {
	left, life := notAfter.Sub(now), notAfter.Sub(start)
	switch {
	case left <= 0:
		return fmt.Sprintf("%s expired at %s and %s%s", what, stamp(notAfter), w.none, w.expired)
	case left < s.cfg.MinValidity:
		return fmt.Sprintf("%s expires at %s, in %s, sooner than admin.min_validity %s, and %s%s",
			what, stamp(notAfter), round(left), s.cfg.MinValidity, w.none, w.tooClose)
	case s.cfg.MinValidityPercent > 0 && life > 0 && left*100 < life*time.Duration(s.cfg.MinValidityPercent):
		return fmt.Sprintf("%s has %d%% of its lifetime left (expires at %s, in %s; admin.min_validity_percent %d) and %s%s",
			what, int(left*100/life), stamp(notAfter), round(left), s.cfg.MinValidityPercent, w.none, w.stuck)
	}
	return ""
}

// tokenProblem says why a JWT-SVID file is not good at now; "" when it
// is. A failed refresh is named only once the token is not good (it is
// refreshed at half its lifetime, which leaves time to recover).
func (s *Server) tokenProblem(t jwtfiles.TokenStatus, now time.Time) string {
	what := fmt.Sprintf("JWT-SVID %s (audience %q)", filepath.Join(t.Dir, t.FileName), t.Audience)
	failing := ""
	if t.LastError != nil {
		failing = fmt.Sprintf("; refreshing it failed %s, last at %s: %s", plural(int(t.Failures), "time"), stamp(t.LastErrorAt), errText(t.LastError))
	}
	if t.RefreshedAt.IsZero() {
		if failing == "" {
			return what + ": none written yet, waiting for the first fetch from the Workload API"
		}
		return what + ": none written yet" + failing + ": is there a registration entry for this workload, and does the agent issue JWT-SVIDs?"
	}
	return s.expiryProblem(what, t.Expiry, laterOf(t.IssuedAt, t.FetchedAt), now, staleness{
		none: "no new token has been written", expired: failing, tooClose: failing,
		stuck: ": it is refreshed at 50%, so refreshing is stuck" + failing,
	})
}

// ackProblem says why no SDS client counts as having generation gen;
// within the delivery grace, any acknowledged generation counts.
func ackProblem(sds *SDSStatus, gen uint64, inGrace bool) string {
	if sds.ClientsCurrent > 0 || (inGrace && sds.NewestAcked > 0) {
		return ""
	}
	switch connected := len(sds.Clients) + sds.ClientsNotListed; {
	case connected == 0:
		return fmt.Sprintf("no SDS client connected: nobody has acknowledged generation %d (admin.require_sds_ack)", gen)
	case sds.NewestAcked == 0:
		return fmt.Sprintf("no SDS client has acknowledged any secrets yet (%d connected; admin.require_sds_ack)", connected)
	default:
		return fmt.Sprintf("no SDS client has acknowledged generation %d (%d connected, newest acknowledged %d; admin.require_sds_ack)",
			gen, connected, sds.NewestAcked)
	}
}

// noteReadiness logs when, and why, readiness changes.
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
