package rotation

import (
	"slices"
	"strings"

	"github.com/spiffe/go-spiffe/v2/svid/x509svid"
)

// FindSVID returns the index of the SVID that hintOrID names: the first
// whose Workload API hint equals it, else the first whose SPIFFE ID does.
// Hints win because they are what an operator sets on a registration entry
// to tell two SVIDs of one workload apart; the SPIFFE ID is the fallback
// when entries carry no hint. It returns -1 when nothing matches.
func FindSVID(svids []*x509svid.SVID, hintOrID string) int {
	if hintOrID == "" {
		return -1
	}
	if i := slices.IndexFunc(svids, func(s *x509svid.SVID) bool { return s.Hint == hintOrID }); i >= 0 {
		return i
	}
	return slices.IndexFunc(svids, func(s *x509svid.SVID) bool { return s.ID.String() == hintOrID })
}

// DescribeSVIDs lists the SVIDs as "hint=<hint> id=<id>" (hint omitted when
// empty), for messages that must tell an operator what there is to choose.
func DescribeSVIDs(svids []*x509svid.SVID) string {
	parts := make([]string, 0, len(svids))
	for _, s := range svids {
		if s.Hint != "" {
			parts = append(parts, "hint="+s.Hint+" id="+s.ID.String())
		} else {
			parts = append(parts, "id="+s.ID.String())
		}
	}
	return strings.Join(parts, ", ")
}

// orderSVIDs moves the SVID that hint names to the front, keeping the
// others in Workload API order, so that SVIDs[0] is the default everywhere.
// It never modifies svids. matched is false when a hint was given but
// matches nothing; the Workload API's first SVID then stays the default.
func orderSVIDs(svids []*x509svid.SVID, hint string) (ordered []*x509svid.SVID, matched bool) {
	if hint == "" {
		return svids, true
	}
	i := FindSVID(svids, hint)
	switch {
	case i < 0:
		return svids, false
	case i == 0:
		return svids, true
	}
	ordered = make([]*x509svid.SVID, 0, len(svids))
	ordered = append(ordered, svids[i])
	ordered = append(ordered, svids[:i]...)
	ordered = append(ordered, svids[i+1:]...)
	return ordered, true
}
