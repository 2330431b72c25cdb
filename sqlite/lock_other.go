//go:build !unix

package sqlite

// unlocker releases a file lock.
type unlocker interface{ Unlock() error }

type noLock struct{}

func (noLock) Unlock() error { return nil }

// lockFile takes no lock on platforms without flock: there, keeping to one
// process per store file is up to the operator.
func lockFile(path string) (unlocker, error) { return noLock{}, nil }
