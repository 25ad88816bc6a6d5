package main

import (
	"bufio"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"regexp"
	"strconv"
	"strings"
)

// The store benchmarks run.sh runs after the servers' rounds, one file per
// benchmark binary with every round's output appended (go test -bench
// format). Each round runs both sides of its ratio, so the ratio is taken
// per round and the report gives the median.
var storeRatios = []storeRatio{
	{
		file: "bench-bolt.txt", title: "bolt rotation throughput, group commits ÷ one transaction per rotation, 64 sessions refreshing at once",
		num: "BenchmarkBoltRotateConcurrent/sessions=64/solo", den: "BenchmarkBoltRotateConcurrent/sessions=64/group",
		target: "≥ 5×", higherIsBetter: true,
	},
	{
		file: "bench-redis.txt", title: "Redis rotation ÷ (one ES256 signature + one round trip), serial",
		num: "BenchmarkRedis/rotate-serial", den: "BenchmarkRedis/baseline-serial",
		target: "≤ 2×",
	},
}

// storeRatio is num's ns/op ÷ den's ns/op: for bolt that is solo time ÷
// group time, the throughput of group ÷ solo.
type storeRatio struct {
	file, title    string
	num, den       string
	target         string
	higherIsBetter bool
}

// goBenchLine matches "BenchmarkX/sub-2   1000   12345 ns/op ...".
var goBenchLine = regexp.MustCompile(`^(Benchmark\S+?)(?:-\d+)?\s+\d+\s+([0-9.]+) ns/op`)

// readGoBench returns each benchmark's ns/op in the order the file has
// them (one per round).
func readGoBench(path string) (map[string][]float64, error) {
	f, err := os.Open(path)
	if err != nil {
		return nil, err
	}
	defer f.Close()
	out := map[string][]float64{}
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		m := goBenchLine.FindStringSubmatch(sc.Text())
		if m == nil {
			continue
		}
		v, err := strconv.ParseFloat(m[2], 64)
		if err != nil {
			return nil, fmt.Errorf("%s: %w", path, err)
		}
		out[m[1]] = append(out[m[1]], v)
	}
	return out, sc.Err()
}

// storeResult is one store ratio over the rounds.
type storeResult struct {
	storeRatio
	numNS, denNS []float64 // ns/op per round
	perRound     []float64
}

// loadStore reads one benchmark file; ok is false when run.sh did not run it.
func loadStore(dir string, sr storeRatio) (storeResult, bool, error) {
	res := storeResult{storeRatio: sr}
	bench, err := readGoBench(filepath.Join(dir, sr.file))
	if errors.Is(err, os.ErrNotExist) {
		return res, false, nil
	}
	if err != nil {
		return res, false, err
	}
	res.numNS, res.denNS = bench[sr.num], bench[sr.den]
	if len(res.numNS) == 0 || len(res.numNS) != len(res.denNS) {
		return res, false, fmt.Errorf("%s: %d results of %s and %d of %s, want the same number, at least one",
			sr.file, len(res.numNS), sr.num, len(res.denNS), sr.den)
	}
	for i := range res.numNS {
		res.perRound = append(res.perRound, res.numNS[i]/res.denNS[i])
	}
	return res, true, nil
}

func (r storeResult) write(b *strings.Builder) {
	fmt.Fprintf(b, "#### %s (go test -bench)\n\n", r.title)
	fmt.Fprintf(b, "| round | %s ns/op | %s ns/op | ratio |\n| ---: | ---: | ---: | ---: |\n", r.num, r.den)
	for i := range r.numNS {
		fmt.Fprintf(b, "| %d | %.0f | %.0f | %.2f× |\n", i+1, r.numNS[i], r.denNS[i], r.perRound[i])
	}
	fmt.Fprintf(b, "\nMedian of the per-round ratios: **%.2f×** (target %s).\n\n", median(r.perRound), r.target)
}
