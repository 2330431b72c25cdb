package main

import (
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/tokenhub/tokenhub/bench/internal/load"
)

// TestMain makes this test binary the benchmark's children as well: run
// starts them with -role as the first argument, and then it serves as main
// does.
func TestMain(m *testing.M) {
	if len(os.Args) > 1 && os.Args[1] == "-role" {
		main()
		os.Exit(0)
	}
	os.Exit(m.Run())
}

// The whole benchmark, in short, with each generator: the three children
// start, every target answers the upstream's page with the header injected,
// no request fails, the report has its figures, and -cpuprofile leaves a
// profile per child. It asserts nothing about speed.
func TestRunSmoke(t *testing.T) {
	if testing.Short() {
		t.Skip("starts three servers and loads them for a few seconds")
	}
	for _, gen := range []string{"http", "raw"} {
		t.Run(gen, func(t *testing.T) {
			prof := ""
			if gen == "http" {
				prof = filepath.Join(t.TempDir(), "prof")
			}
			var out strings.Builder
			p := load.Plan{Conns: 8, Duration: 200 * time.Millisecond, Warmup: 50 * time.Millisecond, Rounds: 2, MaxRequests: 2000}
			if err := run(&out, p, gen, prof); err != nil {
				t.Fatalf("run: %v\n%s", err, out.String())
			}
			for _, want := range []string{
				"round 1 direct", "round 1 bare", "round 1 ours", "round 2 ours", "round 2 direct",
				"ours/bare", "throughput", "p99", "cpu/req", "median", "1 login(s), 0 refresh(es)",
			} {
				if !strings.Contains(out.String(), want) {
					t.Errorf("the report lacks %q:\n%s", want, out.String())
				}
			}
			if prof == "" {
				return
			}
			for _, role := range []string{"upstream", "bare", "ours"} {
				fi, err := os.Stat(filepath.Join(prof, role+".pprof"))
				if err != nil || fi.Size() == 0 {
					t.Errorf("no CPU profile for %s: %v", role, err)
				}
			}
		})
	}
}
