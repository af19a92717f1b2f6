//go:build !linux

package flock

import "fmt"

// replace refuses: an atomic exchange of two names (renameat2's
// RENAME_EXCHANGE) is Linux's; elsewhere the operator removes what is at
// the name.
func (d lockDir) replace() (*Lock, error) {
	return nil, fmt.Errorf("lock %s: something that is not this uid's lock file is there; remove it", d.path)
}
