package broker

import "hash/maphash"

// index maps (workspace, name) to an entry. It is immutable: the broker
// builds a new one whenever a connection appears or goes, and readers load
// the current one with a single atomic load.
//
// It exists because it is the read path's only cost besides that load: a
// built-in map keyed by a two-string struct hashes through the generic
// struct hasher, while this open-addressing table hashes each string with
// maphash and probes a flat slice, about twice as fast.
type index struct {
	seed  maphash.Seed
	mask  uint64
	slots []slot
}

type slot struct {
	ws, name string
	e        *entry
}

// newIndex builds an index of m with a load factor of at most one half.
func newIndex(seed maphash.Seed, m map[key]*entry) *index {
	size := 8
	for size < 2*len(m) {
		size *= 2
	}
	ix := &index{seed: seed, mask: uint64(size - 1), slots: make([]slot, size)}
	for k, e := range m {
		i := ix.hash(k.ws, k.name) & ix.mask
		for ix.slots[i].e != nil {
			i = (i + 1) & ix.mask
		}
		ix.slots[i] = slot{k.ws, k.name, e}
	}
	return ix
}

func (ix *index) hash(ws, name string) uint64 {
	return maphash.String(ix.seed, ws) ^ (maphash.String(ix.seed, name) * 0x9e3779b97f4a7c15)
}

// get returns the entry of ws/name, or nil.
func (ix *index) get(ws, name string) *entry {
	i := ix.hash(ws, name) & ix.mask
	for {
		s := &ix.slots[i]
		if s.e == nil {
			return nil
		}
		if s.ws == ws && s.name == name {
			return s.e
		}
		i = (i + 1) & ix.mask
	}
}
