//go:build unix

package sqlite

import (
	"errors"
	"os"
	"syscall"
)

// unlocker releases a file lock.
type unlocker interface{ Unlock() error }

type flock struct{ f *os.File }

// Unlock releases the lock by closing the file. The lock file itself stays,
// since removing it would let two processes lock two different files.
func (l flock) Unlock() error { return l.f.Close() }

// lockFile takes an exclusive, non-blocking flock on path, creating it with
// mode 0600 when absent. It fails with ErrLocked when another open file
// description holds the lock, be it another process or another Open in this
// one. The kernel drops the lock if the process dies.
func lockFile(path string) (unlocker, error) {
	f, err := os.OpenFile(path, os.O_RDWR|os.O_CREATE, 0o600)
	if err != nil {
		return nil, err
	}
	if err := syscall.Flock(int(f.Fd()), syscall.LOCK_EX|syscall.LOCK_NB); err != nil {
		f.Close()
		if errors.Is(err, syscall.EWOULDBLOCK) {
			return nil, ErrLocked
		}
		return nil, err
	}
	return flock{f}, nil
}
