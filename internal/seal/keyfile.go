package seal

import (
	"encoding/base64"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"strings"
)

// ParseKeys reads keys written in base64 (standard or URL alphabet, padding
// optional), separated by commas or newlines, as in TOKENHUB_KEY or a key
// file. The first key is the primary. Blank entries and lines starting with
// '#' are skipped. Every key must decode to KeySize bytes. Errors name a bad
// key by its position and never show it.
func ParseKeys(s string) ([][]byte, error) {
	var keys [][]byte
	for _, line := range strings.Split(strings.ReplaceAll(s, "\r", ""), "\n") {
		if strings.HasPrefix(strings.TrimSpace(line), "#") {
			continue
		}
		for _, f := range strings.Split(line, ",") {
			f = strings.TrimSpace(f)
			if f == "" {
				continue
			}
			key, err := decodeKey(f)
			if err != nil {
				return nil, fmt.Errorf("%s: not valid base64", keyName(len(keys)))
			}
			if len(key) != KeySize {
				return nil, fmt.Errorf("%s: decodes to %d bytes, want %d (make one with: openssl rand -base64 32)", keyName(len(keys)), len(key), KeySize)
			}
			keys = append(keys, key)
		}
	}
	if len(keys) == 0 {
		return nil, errors.New("no keys: want one or more base64-encoded 32-byte keys, separated by commas or newlines")
	}
	return keys, nil
}

func decodeKey(s string) ([]byte, error) {
	s = strings.TrimRight(s, "=")
	if strings.ContainsAny(s, "-_") {
		return base64.RawURLEncoding.DecodeString(s)
	}
	return base64.RawStdEncoding.DecodeString(s)
}

func encodeKey(key []byte) string { return base64.StdEncoding.EncodeToString(key) }

// LoadOrCreateKeyFile reads the keys in the file at path, one per line, the
// primary first. When the file does not exist it is created, exclusively and
// with mode 0600, holding one new random key, and created is true; the
// parent directory must exist. A file that group or others may read or write
// is refused, since anyone who can read it can read every secret.
func LoadOrCreateKeyFile(path string) (keys [][]byte, created bool, err error) {
	f, err := os.OpenFile(path, os.O_WRONLY|os.O_CREATE|os.O_EXCL, 0o600)
	switch {
	case err == nil:
		key, err := NewKey()
		if err == nil {
			err = writeAndSync(f, encodeKey(key)+"\n")
		} else {
			f.Close()
		}
		if err != nil {
			os.Remove(path)
			return nil, false, fmt.Errorf("create key file %s: %w", path, err)
		}
		if err := syncDir(filepath.Dir(path)); err != nil {
			return nil, false, fmt.Errorf("create key file %s: %w", path, err)
		}
		return [][]byte{key}, true, nil
	case errors.Is(err, fs.ErrExist):
		keys, err := readKeyFile(path)
		return keys, false, err
	default:
		return nil, false, fmt.Errorf("create key file %s: %w", path, err)
	}
}

// readKeyFile reads and checks an existing key file.
func readKeyFile(path string) ([][]byte, error) {
	fi, err := os.Stat(path)
	if err != nil {
		return nil, fmt.Errorf("key file: %w", err)
	}
	if !fi.Mode().IsRegular() {
		return nil, fmt.Errorf("key file %s: not a regular file", path)
	}
	if perm := fi.Mode().Perm(); perm&0o077 != 0 {
		return nil, fmt.Errorf("key file %s: mode %04o lets group or others access it; it must be private to its owner (chmod 600 %s)", path, perm, path)
	}
	b, err := os.ReadFile(path)
	if err != nil {
		return nil, fmt.Errorf("key file: %w", err)
	}
	keys, err := ParseKeys(string(b))
	if err != nil {
		return nil, fmt.Errorf("key file %s: %w", path, err)
	}
	return keys, nil
}

// RotateKeyFile puts a new random primary key at the top of the key file at
// path, keeping the old keys below it so values sealed under them still open.
// The file is replaced atomically (a temporary file in the same directory,
// synced, then renamed) and keeps mode 0600. It returns the new key's id.
// Values already sealed stay under their old keys until a store reseals them.
//
// RotateKeyFile is not safe to run concurrently on the same file.
func RotateKeyFile(path string) (newID string, err error) {
	keys, err := readKeyFile(path)
	if err != nil {
		return "", err
	}
	key, err := NewKey()
	if err != nil {
		return "", err
	}
	var b strings.Builder
	for _, k := range append([][]byte{key}, keys...) {
		b.WriteString(encodeKey(k))
		b.WriteByte('\n')
	}
	dir := filepath.Dir(path)
	tmp, err := os.CreateTemp(dir, "."+filepath.Base(path)+".tmp-*")
	if err != nil {
		return "", fmt.Errorf("rotate key file %s: %w", path, err)
	}
	defer os.Remove(tmp.Name()) // fails harmlessly after the rename
	if err := tmp.Chmod(0o600); err != nil {
		tmp.Close()
		return "", fmt.Errorf("rotate key file %s: %w", path, err)
	}
	if err := writeAndSync(tmp, b.String()); err != nil {
		return "", fmt.Errorf("rotate key file %s: %w", path, err)
	}
	if err := os.Rename(tmp.Name(), path); err != nil {
		return "", fmt.Errorf("rotate key file %s: %w", path, err)
	}
	if err := syncDir(dir); err != nil {
		return "", fmt.Errorf("rotate key file %s: %w", path, err)
	}
	return KeyID(key), nil
}

// writeAndSync writes s to f, syncs and closes it.
func writeAndSync(f *os.File, s string) error {
	if _, err := f.WriteString(s); err != nil {
		f.Close()
		return err
	}
	if err := f.Sync(); err != nil {
		f.Close()
		return err
	}
	return f.Close()
}

// syncDir makes a file's creation or rename in dir durable.
func syncDir(dir string) error {
	d, err := os.Open(dir)
	if err != nil {
		return err
	}
	defer d.Close()
	if err := d.Sync(); err != nil {
		return fmt.Errorf("sync directory %s: %w", dir, err)
	}
	return nil
}
