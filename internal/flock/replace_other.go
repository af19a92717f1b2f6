//go:build !linux

package flock

import "fmt"

// replace refuses: RENAME_EXCHANGE is Linux's.
func (d lockDir) replace() (*Lock, error) {
	return nil, fmt.Errorf("lock %s: something that is not this uid's lock file is there; remove it", d.path)
}
