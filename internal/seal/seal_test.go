package seal_test

import (
	"bytes"
	"encoding/base64"
	"errors"
	"os"
	"path/filepath"
	"regexp"
	"slices"
	"strings"
	"sync"
	"testing"

	"github.com/tokenhub/tokenhub/internal/seal"
)

func key(b byte) []byte { return bytes.Repeat([]byte{b}, seal.KeySize) }

func mustKeyring(t *testing.T, primary []byte, old ...[]byte) *seal.Keyring {
	t.Helper()
	k, err := seal.NewKeyring(primary, old...)
	if err != nil {
		t.Fatalf("NewKeyring: %v", err)
	}
	return k
}

func TestSealOpen(t *testing.T) {
	k := mustKeyring(t, key(1))
	for _, pt := range []string{"", "s3cret", strings.Repeat("x", 10000)} {
		ct, err := k.Seal([]byte(pt), []byte("connection:acme/reports:config"))
		if err != nil {
			t.Fatalf("Seal: %v", err)
		}
		if len(pt) > 0 && bytes.Contains(ct, []byte(pt)) {
			t.Fatalf("ciphertext contains the plaintext")
		}
		got, err := k.Open(ct, []byte("connection:acme/reports:config"))
		if err != nil {
			t.Fatalf("Open: %v", err)
		}
		if string(got) != pt {
			t.Fatalf("Open: got %q, want %q", got, pt)
		}
		if !k.IsPrimary(ct) {
			t.Fatalf("IsPrimary: got false, want true")
		}
	}
}

func TestSealFreshNonce(t *testing.T) {
	k := mustKeyring(t, key(1))
	a, _ := k.Seal([]byte("same"), nil)
	b, _ := k.Seal([]byte("same"), nil)
	if bytes.Equal(a, b) {
		t.Fatal("two seals of the same plaintext are identical; the nonce is not fresh")
	}
}

func TestOpenErrors(t *testing.T) {
	k := mustKeyring(t, key(1))
	ad := []byte("connection:acme/reports:token")
	ct, err := k.Seal([]byte("refresh-token-value"), ad)
	if err != nil {
		t.Fatal(err)
	}
	flip := func(i int) []byte {
		c := bytes.Clone(ct)
		c[i] ^= 0x01
		return c
	}
	other := mustKeyring(t, key(2))

	tests := []struct {
		name    string
		k       *seal.Keyring
		ct, ad  []byte
		is      error
		message string
	}{
		{"truncated", k, ct[:20], ad, seal.ErrTruncated, "truncated ciphertext"},
		{"empty", k, nil, ad, seal.ErrTruncated, "truncated ciphertext"},
		{"tampered body", k, flip(len(ct) - 20), ad, seal.ErrAuth, "wrong key or corrupt data (authentication failed)"},
		{"tampered tag", k, flip(len(ct) - 1), ad, seal.ErrAuth, "authentication failed"},
		{"tampered nonce", k, flip(6), ad, seal.ErrAuth, "authentication failed"},
		{"other row", k, ct, []byte("connection:acme/other:token"), seal.ErrAuth, "authentication failed"},
		{"other field", k, ct, []byte("connection:acme/reports:config"), seal.ErrAuth, "authentication failed"},
		{"unknown key", other, ct, ad, seal.ErrUnknownKey,
			"sealed with key " + seal.KeyID(key(1)) + ", which is not in the keyring (wrong TOKENHUB_KEY or key file?)"},
		{"tampered key id", k, flip(2), ad, seal.ErrUnknownKey, "which is not in the keyring"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got, err := tt.k.Open(tt.ct, tt.ad)
			if err == nil {
				t.Fatalf("Open: got %q, nil error; want error %q", got, tt.is)
			}
			if !errors.Is(err, tt.is) {
				t.Fatalf("Open: got error %q, want errors.Is %q", err, tt.is)
			}
			if !strings.Contains(err.Error(), tt.message) {
				t.Fatalf("Open: got error %q, want it to contain %q", err, tt.message)
			}
		})
	}

	t.Run("bad version", func(t *testing.T) {
		c := bytes.Clone(ct)
		c[0] = 9
		_, err := k.Open(c, ad)
		var ve *seal.VersionError
		if !errors.As(err, &ve) || ve.Version != 9 {
			t.Fatalf("Open: got %v, want a *VersionError for version 9", err)
		}
	})
}

func TestNewKeyringErrors(t *testing.T) {
	tests := []struct {
		name    string
		primary []byte
		old     [][]byte
		want    string
	}{
		{"short primary", make([]byte, 16), nil, "key 1 (the primary): must be 32 bytes, got 16"},
		{"nil primary", nil, nil, "key 1 (the primary): must be 32 bytes, got 0"},
		{"long old key", key(1), [][]byte{key(2), make([]byte, 33)}, "key 3: must be 32 bytes, got 33"},
		{"duplicate", key(1), [][]byte{key(2), key(1)}, "key 3 has the same id " + seal.KeyID(key(1)) + " as key 1 (the primary)"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			_, err := seal.NewKeyring(tt.primary, tt.old...)
			if err == nil || !strings.Contains(err.Error(), tt.want) {
				t.Fatalf("NewKeyring: got error %v, want one containing %q", err, tt.want)
			}
		})
	}
}

func TestKeyID(t *testing.T) {
	id := seal.KeyID(key(1))
	if !regexp.MustCompile(`^[0-9a-f]{8}$`).MatchString(id) {
		t.Fatalf("KeyID: got %q, want 8 hex digits", id)
	}
	if again := seal.KeyID(key(1)); again != id {
		t.Fatalf("KeyID is not stable: got %q then %q", id, again)
	}
	if other := seal.KeyID(key(2)); other == id {
		t.Fatalf("KeyID: two keys share id %q", id)
	}
	k := mustKeyring(t, key(1), key(2))
	if got, want := k.PrimaryID(), id; got != want {
		t.Fatalf("PrimaryID: got %q, want %q", got, want)
	}
	if got, want := k.IDs(), []string{id, seal.KeyID(key(2))}; !slices.Equal(got, want) {
		t.Fatalf("IDs: got %q, want %q", got, want)
	}
}

func TestRotation(t *testing.T) {
	oldRing := mustKeyring(t, key(1))
	ad := []byte("ad")
	oldCT, err := oldRing.Seal([]byte("old secret"), ad)
	if err != nil {
		t.Fatal(err)
	}
	rotated := mustKeyring(t, key(2), key(1))
	if rotated.IsPrimary(oldCT) {
		t.Fatal("IsPrimary: got true for a value sealed under the old key")
	}
	got, err := rotated.Open(oldCT, ad)
	if err != nil || string(got) != "old secret" {
		t.Fatalf("Open old value after rotation: got %q, %v; want %q", got, err, "old secret")
	}
	newCT, err := rotated.Seal(got, ad)
	if err != nil {
		t.Fatal(err)
	}
	if !rotated.IsPrimary(newCT) {
		t.Fatal("IsPrimary: got false for a value sealed under the new primary")
	}
	newOnly := mustKeyring(t, key(2))
	if got, err := newOnly.Open(newCT, ad); err != nil || string(got) != "old secret" {
		t.Fatalf("Open resealed value with only the new key: got %q, %v", got, err)
	}
	if _, err := newOnly.Open(oldCT, ad); !errors.Is(err, seal.ErrUnknownKey) {
		t.Fatalf("Open old value with only the new key: got %v, want ErrUnknownKey", err)
	}
	if rotated.IsPrimary([]byte("short")) {
		t.Fatal("IsPrimary: got true for garbage")
	}
}

func TestConcurrentUse(t *testing.T) {
	k := mustKeyring(t, key(1), key(2))
	var wg sync.WaitGroup
	errs := make(chan error, 16)
	for i := range 16 {
		wg.Add(1)
		go func() {
			defer wg.Done()
			pt := []byte(strings.Repeat("p", i))
			for range 100 {
				ct, err := k.Seal(pt, []byte("ad"))
				if err != nil {
					errs <- err
					return
				}
				got, err := k.Open(ct, []byte("ad"))
				if err != nil || !bytes.Equal(got, pt) {
					errs <- errors.New("round trip failed")
					return
				}
			}
		}()
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		t.Fatal(err)
	}
}

func TestParseKeys(t *testing.T) {
	k1, k2 := key(0xfb), key(0xff) // bytes that encode to + / (std) and - _ (url)
	std, url := base64.StdEncoding.EncodeToString(k1), base64.URLEncoding.EncodeToString(k2)
	rawURL := base64.RawURLEncoding.EncodeToString(k2)
	rawStd := base64.RawStdEncoding.EncodeToString(k1)

	ok := []struct {
		name string
		in   string
		want [][]byte
	}{
		{"one std", std, [][]byte{k1}},
		{"one url", url, [][]byte{k2}},
		{"raw url", rawURL, [][]byte{k2}},
		{"raw std", rawStd, [][]byte{k1}},
		{"comma list", std + "," + url, [][]byte{k1, k2}},
		{"spaces and newline", " " + url + " \n" + std + "\n", [][]byte{k2, k1}},
		{"crlf and comment", "# primary\r\n" + std + "\r\n\r\n" + rawURL + "\r\n", [][]byte{k1, k2}},
	}
	for _, tt := range ok {
		t.Run(tt.name, func(t *testing.T) {
			got, err := seal.ParseKeys(tt.in)
			if err != nil {
				t.Fatalf("ParseKeys: %v", err)
			}
			if len(got) != len(tt.want) {
				t.Fatalf("ParseKeys: got %d keys, want %d", len(got), len(tt.want))
			}
			for i := range got {
				if !bytes.Equal(got[i], tt.want[i]) {
					t.Fatalf("ParseKeys: key %d: got id %s, want id %s", i+1, seal.KeyID(got[i]), seal.KeyID(tt.want[i]))
				}
			}
		})
	}

	short := base64.StdEncoding.EncodeToString(make([]byte, 16))
	bad := []struct {
		name, in, want string
	}{
		{"empty", "", "no keys"},
		{"only separators", " ,\n, ", "no keys"},
		{"not base64", "this is not base64!", "key 1 (the primary): not valid base64"},
		{"short second", std + "," + short, "key 2: decodes to 16 bytes, want 32"},
	}
	for _, tt := range bad {
		t.Run(tt.name, func(t *testing.T) {
			_, err := seal.ParseKeys(tt.in)
			if err == nil || !strings.Contains(err.Error(), tt.want) {
				t.Fatalf("ParseKeys: got error %v, want one containing %q", err, tt.want)
			}
			if tt.in != "" && strings.Contains(err.Error(), strings.TrimSpace(tt.in)) {
				t.Fatalf("ParseKeys: error %q shows the input", err)
			}
		})
	}
}

func TestLoadOrCreateKeyFile(t *testing.T) {
	path := filepath.Join(t.TempDir(), "tokenhub.key")
	keys, created, err := seal.LoadOrCreateKeyFile(path)
	if err != nil {
		t.Fatalf("first LoadOrCreateKeyFile: %v", err)
	}
	if !created || len(keys) != 1 || len(keys[0]) != seal.KeySize {
		t.Fatalf("first LoadOrCreateKeyFile: got %d keys, created=%v; want 1 new %d-byte key", len(keys), created, seal.KeySize)
	}
	fi, err := os.Stat(path)
	if err != nil {
		t.Fatal(err)
	}
	if got, want := fi.Mode().Perm(), os.FileMode(0o600); got != want {
		t.Fatalf("key file mode: got %04o, want %04o", got, want)
	}

	again, created, err := seal.LoadOrCreateKeyFile(path)
	if err != nil {
		t.Fatalf("second LoadOrCreateKeyFile: %v", err)
	}
	if created || len(again) != 1 || !bytes.Equal(again[0], keys[0]) {
		t.Fatalf("second LoadOrCreateKeyFile: created=%v, %d keys; want the same single key, not created", created, len(again))
	}

	other, _, err := seal.LoadOrCreateKeyFile(filepath.Join(t.TempDir(), "other.key"))
	if err != nil {
		t.Fatal(err)
	}
	if bytes.Equal(other[0], keys[0]) {
		t.Fatal("two created key files hold the same key")
	}
}

func TestLoadOrCreateKeyFileErrors(t *testing.T) {
	dir := t.TempDir()
	goodKey := base64.StdEncoding.EncodeToString(key(7)) + "\n"
	write := func(name, content string, mode os.FileMode) string {
		p := filepath.Join(dir, name)
		if err := os.WriteFile(p, []byte(content), mode); err != nil {
			t.Fatal(err)
		}
		if err := os.Chmod(p, mode); err != nil { // WriteFile's mode is subject to umask
			t.Fatal(err)
		}
		return p
	}
	tests := []struct {
		name string
		path string
		want string
	}{
		{"group readable", write("g.key", goodKey, 0o640), "mode 0640 lets group or others access it"},
		{"world readable", write("w.key", goodKey, 0o604), "chmod 600"},
		{"bad content", write("bad.key", "nope nope\n", 0o600), "key 1 (the primary): not valid base64"},
		{"empty file", write("empty.key", "", 0o600), "no keys"},
		{"missing parent", filepath.Join(dir, "nodir", "x.key"), "no such file or directory"},
		{"a directory", dir, "not a regular file"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			_, _, err := seal.LoadOrCreateKeyFile(tt.path)
			if err == nil || !strings.Contains(err.Error(), tt.want) {
				t.Fatalf("LoadOrCreateKeyFile: got error %v, want one containing %q", err, tt.want)
			}
			if strings.Contains(err.Error(), strings.TrimSpace(goodKey)) {
				t.Fatalf("error %q shows the key", err)
			}
		})
	}
}

func TestRotateKeyFile(t *testing.T) {
	path := filepath.Join(t.TempDir(), "tokenhub.key")
	first, _, err := seal.LoadOrCreateKeyFile(path)
	if err != nil {
		t.Fatal(err)
	}
	ring1 := mustKeyring(t, first[0])
	ct, err := ring1.Seal([]byte("secret"), []byte("ad"))
	if err != nil {
		t.Fatal(err)
	}

	newID, err := seal.RotateKeyFile(path)
	if err != nil {
		t.Fatalf("RotateKeyFile: %v", err)
	}
	keys, created, err := seal.LoadOrCreateKeyFile(path)
	if err != nil || created {
		t.Fatalf("LoadOrCreateKeyFile after rotation: created=%v, %v", created, err)
	}
	if len(keys) != 2 {
		t.Fatalf("after rotation: got %d keys, want 2", len(keys))
	}
	if got := seal.KeyID(keys[0]); got != newID {
		t.Fatalf("primary after rotation: got id %s, want the returned id %s", got, newID)
	}
	if !bytes.Equal(keys[1], first[0]) {
		t.Fatal("after rotation: the old key is not kept second")
	}
	fi, err := os.Stat(path)
	if err != nil {
		t.Fatal(err)
	}
	if got, want := fi.Mode().Perm(), os.FileMode(0o600); got != want {
		t.Fatalf("key file mode after rotation: got %04o, want %04o", got, want)
	}
	ring2 := mustKeyring(t, keys[0], keys[1:]...)
	if ring2.IsPrimary(ct) {
		t.Fatal("a value sealed before rotation reports IsPrimary")
	}
	if got, err := ring2.Open(ct, []byte("ad")); err != nil || string(got) != "secret" {
		t.Fatalf("Open after rotation: got %q, %v", got, err)
	}

	if _, err := seal.RotateKeyFile(path); err != nil {
		t.Fatal(err)
	}
	keys3, _, err := seal.LoadOrCreateKeyFile(path)
	if err != nil || len(keys3) != 3 {
		t.Fatalf("after a second rotation: got %d keys, %v; want 3", len(keys3), err)
	}
	entries, err := os.ReadDir(filepath.Dir(path))
	if err != nil {
		t.Fatal(err)
	}
	if len(entries) != 1 {
		t.Fatalf("directory holds %d entries after rotation, want only the key file (temp files left behind?)", len(entries))
	}

	if _, err := seal.RotateKeyFile(filepath.Join(t.TempDir(), "missing.key")); err == nil {
		t.Fatal("RotateKeyFile of a missing file: got nil error")
	}
	if err := os.Chmod(path, 0o644); err != nil {
		t.Fatal(err)
	}
	if _, err := seal.RotateKeyFile(path); err == nil || !strings.Contains(err.Error(), "chmod 600") {
		t.Fatalf("RotateKeyFile of a readable file: got %v, want a mode error", err)
	}
}
