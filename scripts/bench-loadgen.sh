#!/usr/bin/env bash
# bench-loadgen.sh — measures parley load against autocannon (npm) and wrk
# (Debian package) on the same trivial endpoint, each generator pinned to one
# core and the target to another (taskset -c). Reports requests per generator
# CPU-second and the peak rate, as a markdown section on stdout (progress on
# stderr). Run from the repository root:
#
#   scripts/bench-loadgen.sh            # 10 s per run, 50 connections
#   DURATION=20 CONNS=100 scripts/bench-loadgen.sh
#
# PARLEY_BIN=path uses a prebuilt binary instead of building ./cmd/parley.
# Needs: go, taskset, /usr/bin/time, jq, wrk, node + npm (autocannon is
# installed into a cache directory on first use).
set -euo pipefail

DURATION=${DURATION:-10}      # seconds per run
CONNS=${CONNS:-50}            # connections per run
PIPE=${PIPE:-10}              # pipelining depth of the pipelined runs
ROUNDS=${ROUNDS:-2}           # parley/wrk rounds (alternated)
OPEN_RATE=${OPEN_RATE:-20000} # parley's open-model run: requests per second
HOLD=${HOLD:-5000}            # connections of the memory run
GEN_CPU=${GEN_CPU:-0}         # core for the generator
SRV_CPU=${SRV_CPU:-1}         # core for the target server
AC_VERSION=${AC_VERSION:-8}
CACHE=${CACHE:-${XDG_CACHE_HOME:-$HOME/.cache}/parley-bench}

log() { echo "bench: $*" >&2; }
need() { command -v "$1" >/dev/null || { log "missing $1${2:+ ($2)}"; exit 1; }; }
need go; need taskset; need jq "apt-get install jq"; need wrk "apt-get install wrk"; need node; need npm
[ -x /usr/bin/time ] || { log "missing /usr/bin/time (apt-get install time)"; exit 1; }

work=$(mktemp -d)
srv_pid=""
cleanup() {
	[ -n "$srv_pid" ] && kill "$srv_pid" 2>/dev/null && wait "$srv_pid" 2>/dev/null
	rm -rf "$work"
}
trap cleanup EXIT

if [ -n "${PARLEY_BIN:-}" ]; then
	cp "$PARLEY_BIN" "$work/parley"
else
	log "building parley"
	go build -o "$work/parley" ./cmd/parley
fi

if [ ! -x "$CACHE/node_modules/.bin/autocannon" ]; then
	log "installing autocannon@$AC_VERSION from npm into $CACHE"
	mkdir -p "$CACHE"
	npm install --silent --no-audit --no-fund --prefix "$CACHE" "autocannon@$AC_VERSION" >&2
fi
AUTOCANNON="$CACHE/node_modules/.bin/autocannon"
ac_version=$(node -p "require('$CACHE/node_modules/autocannon/package.json').version")

port=$((20000 + RANDOM % 20000))
addr="127.0.0.1:$port"
url="http://$addr/"
taskset -c "$SRV_CPU" "$work/parley" load --trivial-server "$addr" 2>/dev/null &
srv_pid=$!
for _ in $(seq 50); do
	if (exec 3<>"/dev/tcp/127.0.0.1/$port") 2>/dev/null; then break; fi
	sleep 0.1
done

cat >"$work/pipeline.lua" <<EOF
init = function(args)
  local r = {}
  for i = 1, $PIPE do r[i] = wrk.format(nil, "/") end
  req = table.concat(r)
end
request = function() return req end
EOF

# run NAME CMD...: runs CMD on the generator core under /usr/bin/time;
# leaves stdout in $work/NAME.out and "elapsed user sys maxrss-KB" in $work/NAME.time.
run() {
	local name=$1
	shift
	sleep 2 # let the target settle after the previous run
	log "$name: $*"
	/usr/bin/time -f "%e %U %S %M" -o "$work/$name.time" taskset -c "$GEN_CPU" "$@" >"$work/$name.out" 2>"$work/$name.err" || {
		log "$name failed:"
		cat "$work/$name.err" >&2
		return 1
	}
}

rows=()
# row NAME TOOL REQUESTS PEAK P50 P99
row() {
	local name=$1 tool=$2 reqs=$3 peak=$4 p50=$5 p99=$6
	read -r elapsed user sys rss <"$work/$name.time"
	local cpu rps per
	cpu=$(awk -v u="$user" -v s="$sys" 'BEGIN{printf "%.2f", u+s}')
	rps=$(awk -v r="$reqs" -v d="$DURATION" 'BEGIN{printf "%.0f", r/d}')
	per=$(awk -v r="$reqs" -v c="$cpu" 'BEGIN{ if (c > 0) printf "%.0f", r/c; else print "n/a" }')
	rows+=("| $tool | $reqs | $rps | $peak | $cpu | **$per** | $p50 | $p99 | $((rss / 1024)) MiB |")
}

parley_row() {
	local name=$1 tool=$2
	local j="$work/$name.json"
	row "$name" "$tool" "$(jq '.scenarios[0].requests' "$j")" \
		"$(jq '[.scenarios[0].timeline[] | select(.t <= '"$DURATION"') | .rps] | max | floor' "$j")" \
		"$(jq '.scenarios[0].latency_ms.p50' "$j") ms" "$(jq '.scenarios[0].latency_ms.p99' "$j") ms"
}

wrk_row() {
	local name=$1 tool=$2
	local reqs p50 p99
	reqs=$(awk '/requests in/ {print $1}' "$work/$name.out")
	p50=$(awk '$1 == "50%" {print $2}' "$work/$name.out")
	p99=$(awk '$1 == "99%" {print $2}' "$work/$name.out")
	row "$name" "$tool" "$reqs" "n/a (mean only)" "${p50:-?}" "${p99:-?}"
}

ac_row() {
	local name=$1 tool=$2
	local j="$work/$name.out"
	row "$name" "$tool" "$(jq '.requests.total' "$j")" "$(jq '.requests.max' "$j")" \
		"$(jq '.latency.p50' "$j") ms" "$(jq '.latency.p99' "$j") ms"
}

pl=("$work/parley" load --url "$url" --quiet --duration "${DURATION}s" --connections "$CONNS")

# eff NAME: "requests cpu-seconds" of a finished run, for the ratios.
eff() {
	local reqs
	case $1 in
	parley*) reqs=$(jq '.scenarios[0].requests' "$work/$1.json") ;;
	wrk*) reqs=$(awk '/requests in/ {print $1}' "$work/$1.out") ;;
	esac
	read -r _ user sys _ <"$work/$1.time"
	echo "$reqs $(awk -v u="$user" -v s="$sys" 'BEGIN{print u+s}')"
}
declare -A sum_req=() sum_cpu=()
add() { # add KEY NAME: adds a run's requests and CPU to KEY's sums
	local r c
	read -r r c < <(eff "$2")
	sum_req[$1]=$(awk -v a="${sum_req[$1]:-0}" -v b="$r" 'BEGIN{print a+b}')
	sum_cpu[$1]=$(awk -v a="${sum_cpu[$1]:-0}" -v b="$c" 'BEGIN{print a+b}')
}
load_start=$(cut -d' ' -f1-3 /proc/loadavg)
# parley and wrk alternate, ROUNDS times, so that the noise of a shared
# machine weighs on both; autocannon runs once.
for r in $(seq "$ROUNDS"); do
	run "parley_c$r" "${pl[@]}" --closed --pipelining 1 --json "$work/parley_c$r.json" && parley_row "parley_c$r" "parley load --closed, pipelining 1 (round $r)" && add parley_c "parley_c$r"
	run "wrk_c$r" wrk -t1 -c"$CONNS" -d"${DURATION}s" --latency "$url" && wrk_row "wrk_c$r" "wrk -t1 (round $r)" && add wrk_c "wrk_c$r"
	run "parley_p$r" "${pl[@]}" --closed --pipelining "$PIPE" --json "$work/parley_p$r.json" && parley_row "parley_p$r" "parley load --closed, pipelining $PIPE (round $r)" && add parley_p "parley_p$r"
	run "wrk_p$r" wrk -t1 -c"$CONNS" -d"${DURATION}s" --latency -s "$work/pipeline.lua" "$url" && wrk_row "wrk_p$r" "wrk -t1, pipeline.lua depth $PIPE (round $r)" && add wrk_p "wrk_p$r"
done
run ac_c "$AUTOCANNON" -c "$CONNS" -d "$DURATION" --json "$url" && ac_row ac_c "autocannon"
run ac_p "$AUTOCANNON" -c "$CONNS" -p "$PIPE" -d "$DURATION" --json "$url" && ac_row ac_p "autocannon -p $PIPE"
run parley_o "${pl[@]}" --rate "$OPEN_RATE" --json "$work/parley_o.json" && parley_row parley_o "parley load, open model at $OPEN_RATE/s"
load_end=$(cut -d' ' -f1-3 /proc/loadavg)
ratio() { # ratio A B: (requests per CPU-second of A) / (of B), from the sums
	awk -v ra="${sum_req[$1]:-0}" -v ca="${sum_cpu[$1]:-0}" -v rb="${sum_req[$2]:-0}" -v cb="${sum_cpu[$2]:-0}" \
		'BEGIN{ if (ca > 0 && cb > 0 && rb > 0) printf "%.2f", (ra/ca)/(rb/cb); else print "n/a" }'
}
per_cpu() { awk -v r="${sum_req[$1]:-0}" -v c="${sum_cpu[$1]:-0}" 'BEGIN{ if (c > 0) printf "%.0f", r/c; else print "n/a" }'; }

# Memory per held connection: the open model holding $HOLD connections at a
# low rate, and the closed model keeping $HOLD connections busy.
mem_rows=()
for model in open closed; do
	args=(--rate 200)
	[ "$model" = closed ] && args=(--closed)
	run "hold_$model" "$work/parley" load --url "$url" --quiet --duration 5s --connections "$HOLD" "${args[@]}" --json "$work/hold_$model.json" || continue
	read -r _ _ _ rss <"$work/hold_$model.time"
	est=$(jq '.scenarios[0].connections.established' "$work/hold_$model.json")
	mem_rows+=("| $model | $HOLD | $est | $((rss / 1024)) MiB | $(awk -v r="$rss" -v n="$est" 'BEGIN{ if (n > 0) printf "%.1f", r/n; else print "n/a" }') KiB |")
done

cpu_model=$(awk -F: '/model name/ {gsub(/^ +/, "", $2); print $2; exit}' /proc/cpuinfo)
cat <<EOF
## Generator efficiency: parley load vs wrk vs autocannon

Measured by \`scripts/bench-loadgen.sh\` on $(date -u +"%Y-%m-%d %H:%M UTC") at commit $(git rev-parse --short HEAD 2>/dev/null || echo unknown); machine: $(nproc) cores, ${cpu_model:-unknown CPU}, shared with other work (load average $load_start before, $load_end after: compare within one run);
$(go version | awk '{print $3}'), $(wrk --version 2>&1 | head -1 | awk '{print "wrk " $2}'), autocannon $ac_version on node $(node --version).
Target: \`parley load --trivial-server\` (net/http, 3-byte body) pinned to core $SRV_CPU; each generator pinned to
core $GEN_CPU with \`taskset -c\`; $CONNS connections, ${DURATION} s per run. CPU is the generator's user+system time
(\`/usr/bin/time\`). "req per CPU-s" is the generator's efficiency; the rate itself is bounded by the one-core target.
Peak is the best one-second rate (wrk reports only its mean). Latency columns are each tool's own figures:
wrk times a pipelined batch once, autocannon and parley time every request.

| generator | requests | mean req/s | peak req/s | generator CPU-s | req per CPU-s | p50 | p99 | max RSS |
|---|---|---|---|---|---|---|---|---|
$(printf '%s\n' "${rows[@]}")

**parley load / wrk, requests per generator CPU-second** (sums over the $ROUNDS alternated rounds):
pipelining 1: **$(ratio parley_c wrk_c)×** ($(per_cpu parley_c) vs $(per_cpu wrk_c)); pipelining $PIPE: **$(ratio parley_p wrk_p)×** ($(per_cpu parley_p) vs $(per_cpu wrk_p)).

Memory of \`parley load\` holding many connections (max RSS of the whole process, histograms included, divided
by the connections established; 5 s runs):

| model | connections requested | established | max RSS | per connection |
|---|---|---|---|---|
$(printf '%s\n' "${mem_rows[@]}")
EOF
