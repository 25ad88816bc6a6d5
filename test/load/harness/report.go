package main

import (
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"time"
)

// The two servers every round drives, baseline first. run.sh names its result
// files <kind>-r<round>-<target>.{json,cpu}.
var targets = []string{"noop", "tokengate"}

// sample is one load-generator run against one target.
type sample struct {
	Requests int64
	Errors   int64 // gRPC statuses other than OK, HTTP non-2xx, socket errors
	RPS      float64
	P50, P99 time.Duration
	Wall     time.Duration
	CPU      time.Duration // server user+system CPU during the run; 0 if unknown
}

// cpuPerRequest is the server's CPU time per request, the load generator's
// own speed taken out.
func (s sample) cpuPerRequest() time.Duration {
	if s.CPU == 0 || s.Requests == 0 {
		return 0
	}
	return s.CPU / time.Duration(s.Requests)
}

// busy is the share of one core the server used during the run.
func (s sample) busy() float64 {
	if s.Wall == 0 {
		return 0
	}
	return float64(s.CPU) / float64(s.Wall)
}

// ghzReport is the part of ghz's `-O json` output the report needs.
type ghzReport struct {
	Count   int64   `json:"count"`
	Total   int64   `json:"total"` // ns
	RPS     float64 `json:"rps"`
	Latency []struct {
		Percentage int   `json:"percentage"`
		Latency    int64 `json:"latency"` // ns
	} `json:"latencyDistribution"`
	StatusCodes map[string]int64 `json:"statusCodeDistribution"`
	Errors      map[string]int64 `json:"errorDistribution"`
}

// wrkReport is what test/load/wrk_report.lua prints when wrk is done.
type wrkReport struct {
	Requests     int64 `json:"requests"`
	DurationUS   int64 `json:"duration_us"`
	P50US        int64 `json:"p50_us"`
	P99US        int64 `json:"p99_us"`
	Non2xx       int64 `json:"non2xx"`
	SocketErrors int64 `json:"socket_errors"`
}

func readGHZ(path string) (sample, error) {
	var r ghzReport
	if err := readJSON(path, &r); err != nil {
		return sample{}, err
	}
	s := sample{Requests: r.Count, RPS: r.RPS, Wall: time.Duration(r.Total)}
	for code, n := range r.StatusCodes {
		if code != "OK" {
			s.Errors += n
		}
	}
	if len(r.StatusCodes) == 0 {
		for _, n := range r.Errors {
			s.Errors += n
		}
	}
	for _, l := range r.Latency {
		switch l.Percentage {
		case 50:
			s.P50 = time.Duration(l.Latency)
		case 99:
			s.P99 = time.Duration(l.Latency)
		}
	}
	if s.Requests == 0 || s.P50 == 0 {
		return s, fmt.Errorf("%s: no requests or no latency distribution", path)
	}
	return s, nil
}

func readWRK(path string) (sample, error) {
	var r wrkReport
	if err := readJSON(path, &r); err != nil {
		return sample{}, err
	}
	if r.Requests == 0 || r.DurationUS == 0 {
		return sample{}, fmt.Errorf("%s: no requests", path)
	}
	wall := time.Duration(r.DurationUS) * time.Microsecond
	return sample{
		Requests: r.Requests,
		Errors:   r.Non2xx + r.SocketErrors,
		RPS:      float64(r.Requests) / wall.Seconds(),
		P50:      time.Duration(r.P50US) * time.Microsecond,
		P99:      time.Duration(r.P99US) * time.Microsecond,
		Wall:     wall,
	}, nil
}

func readJSON(path string, v any) error {
	data, err := os.ReadFile(path)
	if err != nil {
		return err
	}
	if err := json.Unmarshal(data, v); err != nil {
		return fmt.Errorf("%s: %w", path, err)
	}
	return nil
}

// readCPU reads a .cpu file: the server's utime+stime in clock ticks before
// and after the run, as run.sh took them from /proc/PID/stat.
func readCPU(path string, clkTck int) (time.Duration, error) {
	data, err := os.ReadFile(path)
	if errors.Is(err, os.ErrNotExist) {
		return 0, nil
	}
	if err != nil {
		return 0, err
	}
	var before, after int64
	if _, err := fmt.Sscan(string(data), &before, &after); err != nil {
		return 0, fmt.Errorf("%s: want \"TICKS_BEFORE TICKS_AFTER\": %w", path, err)
	}
	if after < before {
		return 0, fmt.Errorf("%s: CPU ticks went backwards (%d → %d)", path, before, after)
	}
	return time.Duration(after-before) * time.Second / time.Duration(clkTck), nil
}

// series is every round of one kind (grpc or http) for every target.
type series struct {
	kind   string
	rounds []map[string]sample // rounds[i][target]
}

func loadSeries(dir, kind string, clkTck int) (series, error) {
	s := series{kind: kind}
	read := readGHZ
	if kind == "http" {
		read = readWRK
	}
	for round := 1; ; round++ {
		r := map[string]sample{}
		for _, target := range targets {
			base := filepath.Join(dir, fmt.Sprintf("%s-r%d-%s", kind, round, target))
			if _, err := os.Stat(base + ".json"); errors.Is(err, os.ErrNotExist) {
				if len(r) > 0 {
					return s, fmt.Errorf("round %d of %s has no result for %s", round, kind, target)
				}
				return s, nil
			}
			smp, err := read(base + ".json")
			if err != nil {
				return s, err
			}
			if smp.CPU, err = readCPU(base+".cpu", clkTck); err != nil {
				return s, err
			}
			r[target] = smp
		}
		s.rounds = append(s.rounds, r)
	}
}

func runReport(args []string, stdout io.Writer) error {
	fs := flag.NewFlagSet("report", flag.ContinueOnError)
	dir := fs.String("dir", "", "directory with the rounds' result files (required)")
	clkTck := fs.Int("clk-tck", 100, "clock ticks per second of /proc/PID/stat (getconf CLK_TCK)")
	if err := fs.Parse(args); err != nil {
		return err
	}
	if *dir == "" {
		return fmt.Errorf("report: --dir is required")
	}
	var b strings.Builder
	var errs []error
	var all []series
	for _, kind := range kinds {
		s, err := loadSeries(*dir, kind, *clkTck)
		if err != nil {
			return fmt.Errorf("report: %w", err)
		}
		if len(s.rounds) == 0 {
			continue
		}
		all = append(all, s)
		errs = append(errs, s.write(&b))
	}
	var stores []storeResult
	for _, sr := range storeRatios {
		r, ok, err := loadStore(*dir, sr)
		if err != nil {
			return fmt.Errorf("report: %w", err)
		}
		if ok {
			stores = append(stores, r)
			r.write(&b)
		}
	}
	if len(all) == 0 && len(stores) == 0 {
		return fmt.Errorf("report: no results in %s", *dir)
	}
	if _, err := io.WriteString(stdout, summary(all, stores)+b.String()); err != nil {
		return err
	}
	return errors.Join(errs...)
}

// kinds are the series run.sh measures, in the report's order.
var kinds = []string{"grpc", "uncached", "http"}

var kindTitle = map[string]string{
	"grpc":     "gRPC `envoy.service.auth.v3.Authorization/Check`, cached token (ghz)",
	"uncached": "gRPC `Check`, uncached: a distinct token per request, none sent twice in the run (ghz)",
	"http":     "HTTP forward-auth `/authz/` (wrk)",
}

// write renders one series as Markdown: every round, then medians and ratios.
// It returns an error if any request failed, after writing the tables.
func (s series) write(b *strings.Builder) error {
	fmt.Fprintf(b, "#### %s\n\n", kindTitle[s.kind])
	b.WriteString("| round | server | requests/s | p50 | p99 | server CPU / request | server busy | errors |\n")
	b.WriteString("| ---: | --- | ---: | ---: | ---: | ---: | ---: | ---: |\n")
	var failed []string
	for i, r := range s.rounds {
		for _, target := range targets {
			smp := r[target]
			fmt.Fprintf(b, "| %d | %s | %.0f | %s | %s | %s | %s | %d |\n", i+1, target, smp.RPS,
				ms(smp.P50), ms(smp.P99), us(smp.cpuPerRequest()), pct(smp.busy()), smp.Errors)
			if smp.Errors > 0 {
				failed = append(failed, fmt.Sprintf("%s round %d %s: %d failed requests", s.kind, i+1, target, smp.Errors))
			}
		}
	}

	med := map[string]sample{}
	for _, target := range targets {
		med[target] = s.median(target)
	}
	noop, ours := med["noop"], med["tokengate"]
	if len(s.rounds) == 1 {
		b.WriteString("\nOne round only (medians need several):\n\n")
	} else {
		fmt.Fprintf(b, "\nMedians of %d rounds:\n\n", len(s.rounds))
	}
	b.WriteString("| server | requests/s | p50 | p99 | server CPU / request |\n")
	b.WriteString("| --- | ---: | ---: | ---: | ---: |\n")
	for _, target := range targets {
		m := med[target]
		fmt.Fprintf(b, "| %s | %.0f | %s | %s | %s |\n", target, m.RPS, ms(m.P50), ms(m.P99), us(m.cpuPerRequest()))
	}
	fmt.Fprintf(b, "| **tokengate / noop** | **%s** | %s | %s | %s |\n",
		ratio(ours.RPS, noop.RPS), ratio(float64(ours.P50), float64(noop.P50)),
		ratio(float64(ours.P99), float64(noop.P99)), ratio(float64(ours.cpuPerRequest()), float64(noop.cpuPerRequest())))

	paired := make([]float64, 0, len(s.rounds))
	for _, r := range s.rounds {
		paired = append(paired, r["tokengate"].RPS/r["noop"].RPS)
	}
	fmt.Fprintf(b, "\nThroughput ratio tokengate/noop: %s (ratio of medians); per round %s, median %s.\n",
		ratio(ours.RPS, noop.RPS), list(paired), fmt.Sprintf("%.2f×", median(paired)))
	if c := ours.cpuPerRequest(); c > 0 && noop.cpuPerRequest() > 0 {
		fmt.Fprintf(b, "Server-bound capacity ratio (noop CPU per request ÷ tokengate CPU per request): %s.\n",
			ratio(float64(noop.cpuPerRequest()), float64(c)))
	}
	b.WriteString("\n")
	if len(failed) > 0 {
		return errors.New(strings.Join(failed, "; "))
	}
	return nil
}

// summaryRows are the ratios the summary leads with: the paths furthest
// from their floor.
var summaryRows = []struct{ kind, title, target string }{
	{"uncached", "uncached Check ÷ no-op gRPC server (distinct tokens)", "≥ 0.5×"},
	{"http", "forward-auth ÷ no-op HTTP server (cached token)", "≥ 0.85×"},
	{"grpc", "cached Check ÷ no-op gRPC server", "≥ 0.85×"},
}

// summary is the table of the run's ratios, one line each: the throughput
// ratio (median of the per-round ratios, and the ratio of the medians), the
// capacity ratio (server CPU per request), and tokengate's p50/p99; then the
// store benchmarks' ratios.
func summary(all []series, stores []storeResult) string {
	var b strings.Builder
	b.WriteString("#### Summary: the ratios of this run\n\n")
	b.WriteString("| ratio | target | throughput, median of rounds (ratio of medians) | capacity (CPU per request) | tokengate p50 / p99 |\n")
	b.WriteString("| --- | --- | ---: | ---: | ---: |\n")
	for _, row := range summaryRows {
		for _, s := range all {
			if s.kind != row.kind {
				continue
			}
			noop, ours := s.median("noop"), s.median("tokengate")
			paired := make([]float64, 0, len(s.rounds))
			for _, r := range s.rounds {
				paired = append(paired, r["tokengate"].RPS/r["noop"].RPS)
			}
			fmt.Fprintf(&b, "| %s | %s | **%.2f×** (%s) | %s | %s / %s |\n", row.title, row.target, median(paired),
				ratio(ours.RPS, noop.RPS), ratio(float64(noop.cpuPerRequest()), float64(ours.cpuPerRequest())), ms(ours.P50), ms(ours.P99))
		}
	}
	for _, r := range stores {
		fmt.Fprintf(&b, "| %s | %s | **%.2f×** (%s) | | |\n", r.title, r.target, median(r.perRound), ratio(median(r.numNS), median(r.denNS)))
	}
	b.WriteString("\n")
	return b.String()
}

// median returns, per field, the median over the rounds of one target (so the
// row is not one particular round).
func (s series) median(target string) sample {
	var rps, p50, p99, cpu []float64
	for _, r := range s.rounds {
		smp := r[target]
		rps = append(rps, smp.RPS)
		p50 = append(p50, float64(smp.P50))
		p99 = append(p99, float64(smp.P99))
		// Per-request CPU is a ratio; take its median, then carry it as CPU
		// over one request so cpuPerRequest returns it.
		cpu = append(cpu, float64(smp.cpuPerRequest()))
	}
	return sample{
		Requests: 1,
		RPS:      median(rps),
		P50:      time.Duration(median(p50)),
		P99:      time.Duration(median(p99)),
		CPU:      time.Duration(median(cpu)),
	}
}

func median(xs []float64) float64 {
	if len(xs) == 0 {
		return 0
	}
	s := slices.Clone(xs)
	slices.Sort(s)
	n := len(s)
	if n%2 == 1 {
		return s[n/2]
	}
	return (s[n/2-1] + s[n/2]) / 2
}

func ratio(a, b float64) string {
	if a == 0 || b == 0 {
		return "n/a"
	}
	return fmt.Sprintf("%.2f×", a/b)
}

func list(xs []float64) string {
	parts := make([]string, len(xs))
	for i, x := range xs {
		parts[i] = fmt.Sprintf("%.2f", x)
	}
	return strings.Join(parts, ", ")
}

func ms(d time.Duration) string { return fmt.Sprintf("%.2f ms", float64(d)/float64(time.Millisecond)) }

func us(d time.Duration) string {
	if d == 0 {
		return "n/a"
	}
	return fmt.Sprintf("%.1f µs", float64(d)/float64(time.Microsecond))
}

func pct(f float64) string {
	if f == 0 {
		return "n/a"
	}
	return fmt.Sprintf("%.0f%%", f*100)
}
