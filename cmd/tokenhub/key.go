package main

import (
	"context"
	"errors"
	"fmt"

	"github.com/tokenhub/tokenhub/internal/seal"
	"github.com/tokenhub/tokenhub/sqlite"
)

// keyFlags are the flags of the key commands: where the store and the keys are.
type keyFlags struct {
	Store   string
	KeyFile string
	Key     string // TOKENHUB_KEY
}

func (k *keyFlags) bind(f *flags) {
	d := DefaultConfig()
	f.String(&k.Store, "store", "TOKENHUB_STORE", d.Store, "the store: `sqlite:PATH`")
	f.String(&k.KeyFile, "key-file", "TOKENHUB_KEY_FILE", d.KeyFile, "the `file` of encryption keys")
	if v, ok := f.lookup("TOKENHUB_KEY"); ok {
		k.Key = v
	}
}

func (k *keyFlags) Validate() error {
	if _, err := storePath(k.Store); err != nil {
		return flagErrorf("store", "%s", err)
	}
	if k.KeyFile == "" && k.Key == "" {
		return flagErrorf("key-file", "required when TOKENHUB_KEY is not set")
	}
	return nil
}

// keys reads the current keys: TOKENHUB_KEY, or else the key file, which
// must exist.
func (k *keyFlags) keys() (*seal.Keyring, error) {
	var keys [][]byte
	var err error
	if k.Key != "" {
		keys, err = seal.ParseKeys(k.Key)
		if err != nil {
			return nil, fmt.Errorf("TOKENHUB_KEY: %w", err)
		}
	} else {
		var created bool
		keys, created, err = seal.LoadOrCreateKeyFile(k.KeyFile)
		if err != nil {
			return nil, fmt.Errorf("--key-file: %w", err)
		}
		if created {
			return nil, fmt.Errorf("--key-file: %s did not exist, so a new one was made; is this the key file the server uses?", k.KeyFile)
		}
	}
	if len(keys) == 0 {
		return nil, errors.New("no encryption key")
	}
	return seal.NewKeyring(keys[0], keys[1:]...)
}

// openStore opens the store with keys, saying so plainly when a running
// server holds it.
func (k *keyFlags) openStore(keys *seal.Keyring) (*sqlite.Store, error) {
	path, _ := storePath(k.Store)
	s, err := sqlite.Open(path, keys)
	if errors.Is(err, sqlite.ErrLocked) {
		return nil, fmt.Errorf("store %s is in use: stop tokenhub serve first", path)
	} else if err != nil {
		return nil, fmt.Errorf("opening store %s: %w", path, err)
	}
	return s, nil
}

func keyCommand() *Command {
	return &Command{
		Name:    "key",
		Summary: "Manage the encryption keys",
		Help: "Every secret in the store is encrypted with the primary key of the key file\n" +
			"(or of TOKENHUB_KEY). Older keys in the file are kept to decrypt what they sealed.",
		Sub: []*Command{{
			Name:    "rotate",
			Args:    "[--store sqlite:PATH] [--key-file FILE]",
			Summary: "Add a new primary key and re-encrypt the store with it",
			Help: `Puts a new primary key at the top of the key file, keeping the old keys below it,
and re-encrypts every secret in the store under the new key. The server must be
stopped: the store's lock tells. Back up the key file again afterwards.

With TOKENHUB_KEY instead of a key file, put a new key first in the list
yourself (base64 of 32 random bytes) and run 'tokenhub key reseal'.`,
			Example: "tokenhub key rotate --store sqlite:./tokenhub.db --key-file ./tokenhub.key",
			New: func(f *flags) func(context.Context, *Env, []string) error {
				var k keyFlags
				k.bind(f)
				return func(ctx context.Context, e *Env, args []string) error {
					if err := needArgs(args, 0, ""); err != nil {
						return err
					}
					if err := k.Validate(); err != nil {
						return err
					}
					if k.Key != "" {
						return errors.New("TOKENHUB_KEY is set: rotate by putting a new key first in it, then run 'tokenhub key reseal'")
					}
					old, err := k.keys()
					if err != nil {
						return err
					}
					// Take the store's lock before touching the key file, so a
					// running server is found before anything changes.
					s, err := k.openStore(old)
					if err != nil {
						return err
					}
					s.Close()
					// The new key is on disk before anything is sealed with
					// it: a crash after this leaves a store that the file
					// still opens.
					id, err := seal.RotateKeyFile(k.KeyFile)
					if err != nil {
						return fmt.Errorf("rotating %s: %w", k.KeyFile, err)
					}
					fmt.Fprintf(e.Stdout, "added primary key %s to %s\n", id, k.KeyFile)
					n, err := k.reseal(ctx)
					if err != nil {
						return fmt.Errorf("%w; the new key is in the file: run 'tokenhub key reseal' to finish", err)
					}
					fmt.Fprintf(e.Stdout, "re-encrypted %d values under key %s; back up %s again\n", n, id, k.KeyFile)
					return nil
				}
			},
		}, {
			Name:    "reseal",
			Args:    "[--store sqlite:PATH] [--key-file FILE]",
			Summary: "Re-encrypt the store under the current primary key",
			Help: `Re-encrypts every secret that an older key sealed under the current primary key
(the first in the key file or in TOKENHUB_KEY). The server must be stopped.`,
			Example: "TOKENHUB_KEY=new,old tokenhub key reseal",
			New: func(f *flags) func(context.Context, *Env, []string) error {
				var k keyFlags
				k.bind(f)
				return func(ctx context.Context, e *Env, args []string) error {
					if err := needArgs(args, 0, ""); err != nil {
						return err
					}
					if err := k.Validate(); err != nil {
						return err
					}
					n, err := k.reseal(ctx)
					if err != nil {
						return err
					}
					fmt.Fprintf(e.Stdout, "re-encrypted %d values\n", n)
					return nil
				}
			},
		}},
	}
}

func (k *keyFlags) reseal(ctx context.Context) (int, error) {
	keys, err := k.keys()
	if err != nil {
		return 0, err
	}
	s, err := k.openStore(keys)
	if err != nil {
		return 0, err
	}
	n, err := s.Reseal(ctx)
	if cerr := s.Close(); err == nil && cerr != nil {
		err = fmt.Errorf("closing the store: %w", cerr)
	}
	if err != nil {
		return 0, fmt.Errorf("re-encrypting: %w", err)
	}
	return n, nil
}
