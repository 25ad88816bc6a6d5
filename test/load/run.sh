#!/usr/bin/env bash
# Load harness for `tokengate extauthz`: in one run, drive tokengate and a
# no-op Authorization server (always OK, test/load/noopauthz) with the same
# load generator and settings, interleaved over several rounds, and print
# requests/s, p50/p99, server CPU per request, the medians and the ratio
# tokengate/noop as Markdown. See test/load/README.md.
#
#   test/load/run.sh            # full run (a few minutes; longer on a busy machine)
#   test/load/run.sh --smoke    # one tiny round: checks the harness works
#
# Tunables (environment): ROUNDS (5), REQUESTS per gRPC round (20000),
# CONCURRENCY (32), CONNECTIONS (2), WARMUP requests (2000), HTTP (1: also
# forward-auth with wrk), HTTP_DURATION per wrk round (10s), NOOP_HEADERS (1:
# noop's HTTP answer carries tokengate's response headers; 0: a bare 200), UNCACHED (1:
# also the uncached Check, a distinct token per request), UNCACHED_REQUESTS
# per uncached round (10000), RSS_TOKENS (0: off; N: afterwards send
# tokengate N distinct tokens and report its RSS every RSS_EVERY, default
# N/10), STORES (1: also the refresher's store benchmarks, bolt group
# commits and Redis rotation, one run of each per round), PIN (auto|0|1:
# servers on one CPU, load generator on another), PROFILE (0|1: CPU profile
# of tokengate under gRPC and HTTP load after the rounds), OUT (result directory, default a new
# temporary one), REV (build tokengate from this commit instead of the
# working tree), GHZ (path of ghz), AA (1: calibration, the second server
# is another noopauthz instead of tokengate, so the ratio shows the noise).
set -euo pipefail

readonly GHZ_VERSION=v0.120.0

smoke=0
for arg in "$@"; do
	case "$arg" in
	--smoke) smoke=1 ;;
	-h | --help) awk 'NR > 1 && /^#/ { sub(/^# ?/, ""); print; next } NR > 1 { exit }' "$0"; exit 0 ;;
	*) echo "run.sh: unknown argument $arg (want --smoke or --help)" >&2; exit 2 ;;
	esac
done

ROUNDS=${ROUNDS:-5}
REQUESTS=${REQUESTS:-20000}
CONCURRENCY=${CONCURRENCY:-32}
CONNECTIONS=${CONNECTIONS:-2}
WARMUP=${WARMUP:-2000}
HTTP=${HTTP:-1}
HTTP_DURATION=${HTTP_DURATION:-10s}
NOOP_HEADERS=${NOOP_HEADERS:-1}
UNCACHED=${UNCACHED:-1}
UNCACHED_REQUESTS=${UNCACHED_REQUESTS:-10000}
RSS_TOKENS=${RSS_TOKENS:-0}
STORES=${STORES:-1}
STORE_BENCHTIME=${STORE_BENCHTIME:-1s}
RSS_EVERY=${RSS_EVERY:-$((RSS_TOKENS > 10 ? RSS_TOKENS / 10 : 1))}
PIN=${PIN:-auto}
PROFILE=${PROFILE:-0}
AA=${AA:-0}
if [[ $smoke == 1 ]]; then
	ROUNDS=1 REQUESTS=300 WARMUP=50 HTTP_DURATION=1s PROFILE=0 UNCACHED_REQUESTS=300 STORE_BENCHTIME=20x
fi
# Bounds, so a hung server cannot hang the harness.
readonly ROUND_TIMEOUT=300 START_TIMEOUT=30

cd "$(dirname "$0")/../.."
root=$PWD
OUT=${OUT:-$(mktemp -d /tmp/tokengate-load.XXXXXX)}
mkdir -p "$OUT/bin"
log() { printf '%s\n' "$*" >&2; }

# --- tools -----------------------------------------------------------------
GHZ=${GHZ:-$(command -v ghz || echo "$(go env GOPATH)/bin/ghz")}
if ! go version -m "$GHZ" 2>/dev/null | grep -q "mod[[:space:]]*github.com/bojand/ghz[[:space:]]*$GHZ_VERSION"; then
	log "installing ghz $GHZ_VERSION (go install; not part of go.mod)"
	(cd /tmp && GOFLAGS= go install "github.com/bojand/ghz/cmd/ghz@$GHZ_VERSION")
	GHZ="$(go env GOPATH)/bin/ghz"
fi
if [[ $HTTP == 1 ]] && ! command -v wrk >/dev/null; then
	log "wrk not found (apt-get install -y wrk); skipping the HTTP forward-auth part"
	HTTP=0
fi

# Pinning: on two or more CPUs the servers share one CPU and the load
# generator gets another, the same for both servers, so the generator's own
# work does not take CPU from the server it measures. Go sizes GOMAXPROCS from
# the affinity mask, so each side runs with GOMAXPROCS=1. The prefixes are
# arrays, not functions: a backgrounded function would be a forked shell, and
# $! (whose CPU time is measured and which is stopped at exit) must be the
# server itself.
ncpu=$(nproc)
if [[ $PIN == auto ]]; then
	if command -v taskset >/dev/null && ((ncpu >= 2)); then PIN=1; else PIN=0; fi
fi
if [[ $PIN == 1 ]]; then
	server_cpu=$((ncpu - 1)) gen_cpu=0
	on_server=(taskset -c "$server_cpu")
	on_gen=(taskset -c "$gen_cpu")
	pinning="servers on CPU $server_cpu, load generator on CPU $gen_cpu (GOMAXPROCS=1 each)"
else
	on_server=()
	on_gen=()
	pinning="not pinned: servers and load generator share all $ncpu CPUs"
fi

# --- build and prepare -----------------------------------------------------
# REV=<commit> builds tokengate from that commit (git archive, the working
# tree untouched) so published figures name exactly what they measured.
if [[ -n ${REV:-} ]]; then
	rm -rf "$OUT/src" && mkdir -p "$OUT/src"
	git -C "$root" archive "$REV" | tar -x -C "$OUT/src"
	tree="commit $(git -C "$root" rev-parse --short "$REV")"
	src=$OUT/src
	log "building tokengate from $tree"
else
	tree="working tree $(git -C "$root" describe --always --dirty 2>/dev/null || echo '(not a git checkout)')"
	src=$root
fi
(cd "$src" && go build -o "$OUT/bin/tokengate" ./cmd/tokengate)
# The store benchmarks are test binaries of the same tree.
if [[ $STORES == 1 ]]; then
	if ! command -v redis-server >/dev/null; then
		log "redis-server not found: skipping the store benchmarks"
		STORES=0
	else
		for pkg in boltstore redisstore; do
			(cd "$src" && go test -c -o "$OUT/bin/$pkg.test" "./refresher/store/$pkg")
		done
	fi
fi
log "building noopauthz and the harness into $OUT/bin"
go build -o "$OUT/bin/noopauthz" ./test/load/noopauthz
go build -o "$OUT/bin/harness" ./test/load/harness
harness=$OUT/bin/harness

issuer=https://issuer.load.test audience=load-api
"$harness" prep --dir "$OUT" --issuer "$issuer" --audience "$audience" --ttl 2h >&2
if [[ $UNCACHED == 1 ]]; then
	# One file of distinct tokens per round (and one for profiling): no token
	# is sent to tokengate twice in the whole run, so every one is a cache miss.
	"$harness" tokens --dir "$OUT" --issuer "$issuer" --audience "$audience" --ttl 2h \
		--files $((ROUNDS + 1)) --per-file "$UNCACHED_REQUESTS" >&2
fi
mapfile -t ports < <("$harness" ports -n 4)
noop_grpc=127.0.0.1:${ports[0]} noop_http=127.0.0.1:${ports[1]}
ours_grpc=127.0.0.1:${ports[2]} ours_http=127.0.0.1:${ports[3]}

pids=()
cleanup() {
	for pid in "${pids[@]}"; do kill -TERM "$pid" 2>/dev/null || true; done
	for pid in "${pids[@]}"; do wait "$pid" 2>/dev/null || true; done
}
trap cleanup EXIT

if [[ $AA == 1 ]]; then
	"${on_server[@]}" "$OUT/bin/noopauthz" --grpc-listen "$ours_grpc" --http-listen "$ours_http" >"$OUT/tokengate.log" 2>&1 &
else
	"${on_server[@]}" "$OUT/bin/tokengate" extauthz --grpc-listen "$ours_grpc" --http-listen "$ours_http" \
		--jwks-file "$OUT/jwks.json" --issuer "$issuer" --audience "$audience" --log-level warn \
		>"$OUT/tokengate.log" 2>&1 &
fi
ours_pid=$!
pids+=("$ours_pid")

ours_ready() {
	if [[ $AA == 1 ]]; then
		"$harness" preflight --addr "$ours_grpc" --data "$OUT/check.json" >/dev/null 2>&1
	else
		curl -fsS -o /dev/null "http://$ours_http/readyz" 2>/dev/null
	fi
}
# tokengate first: with NOOP_HEADERS=1 noop's HTTP answer is tokengate's own
# (its response headers, taken from the forward-auth preflight below), so
# that both write the same headers and the ratio isolates the decision.
deadline=$((SECONDS + START_TIMEOUT))
until ours_ready; do
	if ! kill -0 "$ours_pid" 2>/dev/null; then
		log "tokengate exited during start-up:"; tail -n 20 "$OUT/tokengate.log" >&2; exit 1
	fi
	if ((SECONDS > deadline)); then
		log "tokengate not ready within ${START_TIMEOUT}s:"; tail -n 20 "$OUT/tokengate.log" >&2; exit 1
	fi
	sleep 0.2
done
token=$(<"$OUT/token")
authz_path=/authz/api/orders/42
noop_http_args=()
if [[ $HTTP == 1 && $AA != 1 ]]; then
	code=$(curl -sS -o /dev/null -D "$OUT/http-preflight.headers" -w '%{http_code}' \
		-H "Authorization: Bearer $token" "http://$ours_http$authz_path")
	if [[ $code != 200 ]] || ! grep -qi '^x-user-id: user-4711' "$OUT/http-preflight.headers"; then
		log "HTTP forward-auth preflight: status $code, want 200 with x-user-id"; exit 1
	fi
	if [[ $NOOP_HEADERS == 1 ]]; then noop_http_args=(--http-headers-file "$OUT/http-preflight.headers"); fi
fi
"${on_server[@]}" "$OUT/bin/noopauthz" --grpc-listen "$noop_grpc" --http-listen "$noop_http" "${noop_http_args[@]}" \
	>"$OUT/noopauthz.log" 2>&1 &
noop_pid=$!
pids+=("$noop_pid")
# Start-up polling only; every measurement below waits on the generator.
deadline=$((SECONDS + START_TIMEOUT))
until ours_ready && "$harness" preflight --addr "$noop_grpc" --data "$OUT/check.json" >/dev/null 2>&1; do
	for pid in "$noop_pid" "$ours_pid"; do
		if ! kill -0 "$pid" 2>/dev/null; then
			log "a server exited during start-up:"; tail -n 20 "$OUT/noopauthz.log" "$OUT/tokengate.log" >&2; exit 1
		fi
	done
	if ((SECONDS > deadline)); then
		log "servers not ready within ${START_TIMEOUT}s:"; tail -n 20 "$OUT/noopauthz.log" "$OUT/tokengate.log" >&2; exit 1
	fi
	sleep 0.2
done

# The PIDs must be the servers themselves (their CPU time is measured).
for pid in "$noop_pid" "$ours_pid"; do
	exe=$(readlink "/proc/$pid/exe")
	if [[ $exe != "$OUT/bin/noopauthz" && $exe != "$OUT/bin/tokengate" ]]; then
		log "PID $pid is $exe, not a server"; exit 1
	fi
done

# Both must allow the exact request the generator sends; tokengate must also
# inject the token's identity, so what is measured is a verified allow.
identity=--identity
if [[ $AA == 1 ]]; then identity=; fi
"$harness" preflight --addr "$noop_grpc" --data "$OUT/check.json" >&2
"$harness" preflight --addr "$ours_grpc" --data "$OUT/check.json" $identity >&2
if ((${#noop_http_args[@]})); then
	# noop must answer with tokengate's headers (the values of Date and of
	# the seconds-left header move on).
	curl -sS -o /dev/null -D "$OUT/http-preflight-noop.headers" "http://$noop_http$authz_path"
	if ! diff <(cut -d: -f1 "$OUT/http-preflight.headers") <(cut -d: -f1 "$OUT/http-preflight-noop.headers") >&2; then
		log "noop's HTTP answer differs from tokengate's (above)"; exit 1
	fi
fi

cpu_ticks() { sed 's/.*) //' "/proc/$1/stat" | awk '{print $12 + $13}'; }
pid_of() { if [[ $1 == noop ]]; then echo "$noop_pid"; else echo "$ours_pid"; fi; }
grpc_addr() { if [[ $1 == noop ]]; then echo "$noop_grpc"; else echo "$ours_grpc"; fi; }
http_url() { if [[ $1 == noop ]]; then echo "http://$noop_http$authz_path"; else echo "http://$ours_http$authz_path"; fi; }

ghz_run() { # target requests output [data file]
	"${on_gen[@]}" timeout "$ROUND_TIMEOUT" "$GHZ" --insecure --protoset "$OUT/authz.protoset" \
		--call envoy.service.auth.v3.Authorization.Check --data-file "${4:-$OUT/check.json}" \
		-n "$2" -c "$CONCURRENCY" --connections "$CONNECTIONS" -O json -o "$3" "$(grpc_addr "$1")"
}
wrk_run() { # target duration output
	"${on_gen[@]}" timeout "$ROUND_TIMEOUT" wrk -t1 -c"$CONCURRENCY" -d"$2" --latency \
		-s "$root/test/load/wrk_report.lua" -H "Authorization: Bearer $token" "$(http_url "$1")" >"$3.txt"
	grep '^{' "$3.txt" | tail -n 1 >"$3"
}

# measure KIND ROUND TARGET: one run, with the server's CPU before and after.
measure() {
	local kind=$1 round=$2 target=$3 base before
	base="$OUT/$kind-r$round-$target"
	before=$(cpu_ticks "$(pid_of "$target")")
	if [[ $kind == grpc ]]; then
		ghz_run "$target" "$REQUESTS" "$base.json"
	elif [[ $kind == uncached ]]; then
		# Both servers get the round's file; only tokengate caches, and it
		# sees each of its tokens exactly once in the run.
		ghz_run "$target" "$UNCACHED_REQUESTS" "$base.json" "$OUT/uncached-$round.json"
	else
		wrk_run "$target" "$HTTP_DURATION" "$base.json"
	fi
	echo "$before $(cpu_ticks "$(pid_of "$target")")" >"$base.cpu"
	log "  $kind round $round $target done"
}

log "warm-up: $WARMUP requests to each server (not reported)"
for target in noop tokengate; do ghz_run "$target" "$WARMUP" /dev/null; done
if [[ $HTTP == 1 ]]; then
	for target in noop tokengate; do wrk_run "$target" 1s "$OUT/http-warmup-$target.json"; done
fi

# Rounds alternate the order (noop first, then tokengate first) so drift in
# the machine's load hits both sides alike.
for ((r = 1; r <= ROUNDS; r++)); do
	if ((r % 2)); then order=(noop tokengate); else order=(tokengate noop); fi
	for target in "${order[@]}"; do measure grpc "$r" "$target"; done
	if [[ $UNCACHED == 1 ]]; then
		for target in "${order[@]}"; do measure uncached "$r" "$target"; done
	fi
	if [[ $HTTP == 1 ]]; then
		for target in "${order[@]}"; do measure http "$r" "$target"; done
	fi
	if [[ $STORES == 1 ]]; then
		# Each benchmark runs both sides of its ratio in this round: bolt's
		# one transaction per rotation and group commits with 64 sessions
		# refreshing at once; Redis's rotation and its floor (one ES256
		# signature plus one PING) on one redis-server the benchmark starts.
		(cd "$src/refresher/store/boltstore" && timeout "$ROUND_TIMEOUT" "$OUT/bin/boltstore.test" \
			-test.run '^$' -test.bench 'BoltRotateConcurrent/sessions=64/' -test.benchtime "$STORE_BENCHTIME") >>"$OUT/bench-bolt.txt"
		(cd "$src/refresher/store/redisstore" && timeout "$ROUND_TIMEOUT" "$OUT/bin/redisstore.test" \
			-test.run '^$' -test.bench 'BenchmarkRedis/(baseline|rotate)-serial$' -test.benchtime "$STORE_BENCHTIME") >>"$OUT/bench-redis.txt"
		log "  store benchmarks round $r done"
	fi
done

# load_for TARGET KIND SECONDS: keep a server busy for a while (for the profiler).
load_for() {
	if [[ $2 == grpc ]]; then
		"${on_gen[@]}" timeout "$ROUND_TIMEOUT" "$GHZ" --insecure --protoset "$OUT/authz.protoset" \
			--call envoy.service.auth.v3.Authorization.Check --data-file "$OUT/check.json" \
			-z "${3}s" -c "$CONCURRENCY" --connections "$CONNECTIONS" -O json -o /dev/null "$(grpc_addr "$1")"
	elif [[ $2 == uncached ]]; then
		# A count, not a duration: the profiling file's tokens, each once
		# (the profile covers the part of the window the load lasts).
		ghz_run "$1" "$UNCACHED_REQUESTS" /dev/null "$OUT/uncached-$((ROUNDS + 1)).json"
	else
		"${on_gen[@]}" timeout "$ROUND_TIMEOUT" wrk -t1 -c"$CONCURRENCY" -d"${3}s" \
			-H "Authorization: Bearer $token" "$(http_url "$1")" >/dev/null
	fi
}
# The blocks a Check's CPU goes to, as symbols whose cumulative share the
# profile summary lists for both servers: the difference between the two
# columns is what tokengate adds.
blocks=(
	'runtime.goexit'                                            # all Go code
	'entry_SYSCALL_64_after_hwframe'                            # the kernel: loopback I/O, futex
	'grpc.(*Server).processRPC'                                 # one gRPC call, transport excluded
	'proto.(*codecV2).Unmarshal'                                # decoding the CheckRequest
	'proto.(*codecV2).Marshal'                                  # encoding the CheckResponse
	'_Authorization_Check_Handler'                              # the Check handler
	'net/http.(*conn).serve'                                    # one HTTP connection's work
	'net/http.(*conn).readRequest'                              # parsing the HTTP request
	'net/http.(*response).finishRequest'                        # writing the HTTP response
	'net/http.serverHandler.ServeHTTP'                          # the HTTP handler
	'runtime.gcBgMarkWorker'                                    # garbage collection
	'runtime.mallocgc'                                          # allocation
	'extauthz.(*Server).Check'                                  # tokengate's Check
	'extauthz.(*state).verify'                                  # parsing and verifying a new token, the cache
	'ecdsa.Verify'                                              # the ES256 signature verification
)
# profile TARGET KIND: a CPU profile of one server under KIND load, with perf
# (both servers the same way), else from tokengate's /debug/pprof if it
# serves one. The summary gives the blocks above, tokengate's own functions
# (extauthz.*) and the top cumulative and flat symbols.
profile() {
	local target=$1 kind=$2 seconds=10 out="$OUT/profile-$1-$2.txt" prof pid sym
	pid=$(pid_of "$target")
	log "profiling $target under $kind load for ${seconds}s"
	if command -v perf >/dev/null; then
		perf record -F 999 -g -o "$OUT/perf-$target-$kind.data" -p "$pid" -- sleep "$seconds" >/dev/null 2>&1 &
		prof=$!
		load_for "$target" "$kind" $((seconds + 2)) || true
		wait "$prof" || true
		perf report -i "$OUT/perf-$target-$kind.data" --children --sort symbol --stdio -g none 2>/dev/null |
			grep -E '^ +[0-9]' >"$OUT/perf-$target-$kind.children" || true
		{
			echo "== $target under $kind load: blocks (cumulative share of the server's CPU) =="
			for sym in "${blocks[@]}"; do
				grep -F "$sym" "$OUT/perf-$target-$kind.children" | awk -v s="$sym" 'NR == 1 {print "  " $1 "  " s}' || true
			done
			echo "== cumulative, tokengate's own code =="
			grep -E 'tokengate/tokengate' "$OUT/perf-$target-$kind.children" | awk 'NR <= 40' || true
			echo "== cumulative, top 60 =="
			awk 'NR <= 60' "$OUT/perf-$target-$kind.children"
			echo "== flat (self), top 40 =="
			perf report -i "$OUT/perf-$target-$kind.data" --no-children --sort symbol --stdio -g none 2>/dev/null |
				grep -E '^ +[0-9]' | awk 'NR <= 40' || true
		} >"$out"
	elif [[ $target == tokengate ]] && curl -fsS -o /dev/null "http://$ours_http/debug/pprof/" 2>/dev/null; then
		curl -fsS -o "$OUT/tokengate-$kind.pprof" "http://$ours_http/debug/pprof/profile?seconds=$seconds" &
		prof=$!
		load_for "$target" "$kind" $((seconds + 2)) || true
		wait "$prof"
		{
			go tool pprof -top -cum -nodecount=60 "$OUT/bin/tokengate" "$OUT/tokengate-$kind.pprof"
			go tool pprof -top -nodecount=40 "$OUT/bin/tokengate" "$OUT/tokengate-$kind.pprof"
		} >"$out" 2>&1
	else
		log "no perf (and no /debug/pprof on $target): no profile"
		return
	fi
	log "profile: $out"
}
if [[ $PROFILE == 1 && $AA != 1 ]]; then
	kinds=(grpc)
	if [[ $UNCACHED == 1 ]]; then kinds+=(uncached); fi
	if [[ $HTTP == 1 ]]; then kinds+=(http); fi
	for kind in "${kinds[@]}"; do
		for target in noop tokengate; do profile "$target" "$kind"; done
	done
fi

# Memory: a stream of distinct tokens (each a cache miss once the cache is
# full) must leave tokengate's RSS flat. Not pinned: the signing client is
# the bottleneck and only the RSS is measured.
if ((RSS_TOKENS > 0)) && [[ $AA != 1 ]]; then
	log "rss: sending tokengate $RSS_TOKENS distinct tokens, RSS every $RSS_EVERY"
	"$harness" rss --dir "$OUT" --addr "$ours_grpc" --pid "$ours_pid" --issuer "$issuer" --audience "$audience" \
		--tokens "$RSS_TOKENS" --every "$RSS_EVERY" >"$OUT/rss.md"
fi

# What tokengate itself counted: every Check of the run must be an allow.
# Its heap (objects and bytes, after the last collection) shows what its
# full cache costs each collection to mark.
[[ $AA == 1 ]] || curl -fsS "http://$ours_http/metrics" | grep -E '^(tokengate_extauthz_(checks_total|cache)|go_memstats_heap_(objects|alloc_bytes) )' >"$OUT/metrics.txt" || true

cpu_model=$(grep -m1 'model name' /proc/cpuinfo | sed 's/.*: //' || echo unknown)
{
	echo "Run $(date -u +%Y-%m-%dT%H:%MZ), $ncpu × $cpu_model, $(go version | awk '{print $3}'), ghz $GHZ_VERSION, $(wrk -v 2>&1 | awk 'NR == 1 {print $1, $2}');"
	echo "tokengate built from the $tree;"
	echo "$pinning; gRPC: $ROUNDS rounds × $REQUESTS requests, concurrency $CONCURRENCY over $CONNECTIONS connections, after $WARMUP warm-up requests;"
	if [[ $HTTP == 1 ]]; then echo "HTTP: $ROUNDS rounds × $HTTP_DURATION, wrk -t1 -c$CONCURRENCY."; fi
	if [[ $AA == 1 ]]; then echo "A/A calibration: the server labelled tokengate is a second noopauthz."; fi
	echo
	"$harness" report --dir "$OUT" --clk-tck "$(getconf CLK_TCK)"
	if [[ -s $OUT/rss.md ]]; then cat "$OUT/rss.md"; fi
	if [[ -s $OUT/metrics.txt ]]; then
		echo "tokengate's own counters and heap after the run:"
		echo
		echo '```'
		cat "$OUT/metrics.txt"
		echo '```'
	fi
} | tee "$OUT/report.md"
log "results: $OUT"

# A deny is gRPC OK on the wire, so ghz counts it as a success: tokengate's
# own counters must show that nothing but allows was measured.
if [[ $AA != 1 ]] && awk '/^tokengate_extauthz_checks_total/ && !/decision="allow"/ && $NF > 0 { bad = 1 } END { exit !bad }' "$OUT/metrics.txt"; then
	log "tokengate answered some checks with something other than allow (see its counters above): the figures are not of the cached allow path"
	exit 1
fi
