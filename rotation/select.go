package rotation

import (
	"slices"
	"strings"

	"github.com/spiffe/go-spiffe/v2/svid/x509svid"
)

// FindSVID returns the index of the first SVID whose hint, else whose
// SPIFFE ID, is hintOrID (hints are what tells two SVIDs of one workload
// apart); -1 if none.
func FindSVID(svids []*x509svid.SVID, hintOrID string) int {
	if hintOrID == "" {
		return -1
	}
	if i := slices.IndexFunc(svids, func(s *x509svid.SVID) bool { return s.Hint == hintOrID }); i >= 0 {
		return i
	}
	return slices.IndexFunc(svids, func(s *x509svid.SVID) bool { return s.ID.String() == hintOrID })
}

// DescribeSVIDs lists the SVIDs as "hint=<hint> id=<id>", for messages
// that tell an operator what there is to choose.
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

// orderSVIDs moves the SVID hint names to the front of a copy; matched is
// false when a given hint matches none.
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
	return slices.Concat([]*x509svid.SVID{svids[i]}, svids[:i], svids[i+1:]), true
}
