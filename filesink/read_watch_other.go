//go:build !linux

package filesink

import "errors"

// watchFolderChanges is only implemented with inotify; elsewhere Wait
// looks at the folder on every tick.
func watchFolderChanges(string) (<-chan struct{}, func(), error) {
	return nil, nil, errors.New("folder change notification is only implemented on Linux")
}
