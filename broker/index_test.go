package broker

import (
	"fmt"
	"hash/maphash"
	"testing"
)

func TestIndex(t *testing.T) {
	for _, n := range []int{0, 1, 7, 100, 1000} {
		m := map[key]*entry{}
		for i := range n {
			k := key{fmt.Sprintf("ws%d", i%13), fmt.Sprintf("conn%d", i)}
			m[k] = &entry{key: k}
		}
		ix := newIndex(maphash.MakeSeed(), m)
		for k, e := range m {
			if got := ix.get(k.ws, k.name); got != e {
				t.Fatalf("n=%d: get(%v) = %v, want its entry", n, k, got)
			}
		}
		for _, k := range []key{{"ws1", "nope"}, {"", ""}, {"ws1conn1", ""}, {"ws", "1conn1"}} {
			if got := ix.get(k.ws, k.name); got != nil {
				t.Fatalf("n=%d: get(%v) = %v, want nil", n, k, got)
			}
		}
	}
}
