package sds

import (
	"slices"

	discoveryv3 "github.com/envoyproxy/go-control-plane/envoy/service/discovery/v3"
)

// subscription is what one stream asks for and holds, by the rules of
// go-control-plane v0.14's stream.Subscription with legacy wildcard: a
// first request without names subscribes to everything until the client
// names some; "*" names everything explicitly.
type subscription struct {
	wildcard       bool
	legacyWildcard bool // until the client names a secret
	names          map[string]struct{}
	// returned is what the client holds: name → version (SotW: the
	// snapshot's; Delta: the secret's hash).
	returned map[string]string
}

const wildcardName = "*"

// newSubscription starts a subscription; returned is what the client says
// it holds. The first request's names are taken after.
func newSubscription(noNames bool, returned map[string]string) *subscription {
	if returned == nil {
		returned = make(map[string]string)
	}
	return &subscription{wildcard: noNames, legacyWildcard: true, names: map[string]struct{}{}, returned: returned}
}

// setSotw replaces the subscription. What the client no longer asks for
// is forgotten, so that asking again sends it.
func (s *subscription) setSotw(names []string) {
	if s.legacyWildcard {
		if len(names) == 0 {
			return
		}
		s.legacyWildcard = false
	}
	subscribed := make(map[string]struct{}, len(names))
	explicit := false
	for _, n := range names {
		if n == wildcardName {
			explicit = true
		} else {
			subscribed[n] = struct{}{}
		}
	}
	if !explicit {
		for n := range s.returned {
			if _, ok := subscribed[n]; !ok {
				delete(s.returned, n)
			}
		}
	}
	s.wildcard = explicit
	s.names = subscribed
}

// updateDelta takes a Delta request's changes to the subscription.
func (s *subscription) updateDelta(subscribe, unsubscribe []string) {
	if s.legacyWildcard {
		if len(subscribe) == 0 {
			return
		}
		s.legacyWildcard = false
	}
	for _, n := range subscribe {
		if n == wildcardName {
			s.wildcard = true
			continue
		}
		s.names[n] = struct{}{}
	}
	for _, n := range unsubscribe {
		if n == wildcardName {
			s.wildcard = false
			continue
		}
		if _, ok := s.names[n]; ok && s.wildcard {
			// Still covered by the wildcard: sent again.
			s.returned[n] = ""
		} else {
			delete(s.returned, n)
		}
		delete(s.names, n)
	}
}

// changes compares what s holds with sv, as LinearCache does: changed are
// the subscribed secrets the client lacks at their version, removed those
// it holds that are no longer served or subscribed. Both are sorted.
func (s *subscription) changes(sv *served, version func(*discoveryv3.Resource) string) (changed, removed []string) {
	lacks := func(name string, sec *discoveryv3.Resource) bool {
		v, ok := s.returned[name]
		return !ok || v != version(sec)
	}
	if s.wildcard {
		for _, name := range sv.names {
			if lacks(name, sv.secrets[name]) {
				changed = append(changed, name)
			}
		}
		for name := range s.returned {
			if !sv.has(name) {
				removed = append(removed, name)
			}
		}
	} else {
		for name := range s.names {
			if sec, ok := sv.secrets[name]; ok && lacks(name, sec) {
				changed = append(changed, name)
			}
		}
		for name := range s.returned {
			if _, ok := s.names[name]; !ok || !sv.has(name) {
				removed = append(removed, name)
			}
		}
	}
	slices.Sort(changed)
	slices.Sort(removed)
	return changed, removed
}
