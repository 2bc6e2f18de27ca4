#!/usr/bin/env bash
# perf-scenarios.sh — runs the load generator's four built-in scenarios
# (history, send, mixed, spike) at the seed's connection counts (5k, 5k, 8k,
# 5k → 10k) against `parley dev` (the API on a throwaway local stack:
# PostgreSQL primary + streaming replica, PgBouncer, Redis), then --find-max
# for history, send and mixed, and writes the "Load scenarios" section of
# docs/performance.md (between its markers; the rest of the file is kept).
# Run from anywhere:
#
#   scripts/perf-scenarios.sh                      # about 9 minutes
#   DURATION=5m SPIKE_DURATION=9m scripts/perf-scenarios.sh   # the seed's full lengths
#   REPORTS=/tmp/perf scripts/perf-scenarios.sh    # keep the JSON and HTML reports
#   DOC=/tmp/perf.md scripts/perf-scenarios.sh
#
# The server and the generator run as two processes (one process may hold at
# most `ulimit -Hn` open files: 20000 here, and 10k connections need a socket
# at each end). Both share this machine's cores with the databases.
#
# Knobs (environment): DURATION (history/send/mixed, default 45s),
# SPIKE_DURATION (the spike's 2m/1m/5m/1m stages compressed into it, default
# 60s), STEP and MAX_STEPS (--find-max step length and budget, default 8s and
# 8), SOURCE (worktree, the default, builds the working tree; head builds the
# committed HEAD from a clean export), PARLEY_BIN (use this binary instead of
# building), REPORTS (directory that keeps the reports), DOC.
#
# Needs: go, jq, curl, and what the stack needs (postgresql-15, pgbouncer,
# redis-server: scripts/install-deps.sh). Progress goes to stderr.
set -euo pipefail
. "$(dirname "$0")/doc-section.sh"
cd "$(dirname "$0")/.."

DURATION=${DURATION:-45s}
SPIKE_DURATION=${SPIKE_DURATION:-60s}
STEP=${STEP:-8s}
MAX_STEPS=${MAX_STEPS:-8}
SOURCE=${SOURCE:-worktree}
DOC=${DOC:-docs/performance.md}
REPORTS=${REPORTS:-}
BEGIN='<!-- BEGIN load-scenarios -->'
END='<!-- END load-scenarios -->'

log() { echo "perf-scenarios: $*" >&2; }
need() { command -v "$1" >/dev/null || { log "missing $1${2:+ ($2)}"; exit 1; }; }
need go; need jq "apt-get install jq"; need curl "apt-get install curl"

# Every held connection is a file descriptor: take the hard limit.
ulimit -n "$(ulimit -Hn)" 2>/dev/null || true
nofile=$(ulimit -n)

work=$(mktemp -d)
chmod 755 "$work" # as root the stack's daemons run as user parley: they must enter it
data="$work/data"
dev_pid=""
load_pid=""
bin=""

cleanup() {
	set +e
	if [ -n "$load_pid" ] && kill -0 "$load_pid" 2>/dev/null; then
		kill -INT "$load_pid"
		wait "$load_pid" 2>/dev/null
	fi
	if [ -n "$dev_pid" ] && kill -0 "$dev_pid" 2>/dev/null; then
		log "stopping parley dev (pid $dev_pid): server, then the stack"
		kill -INT "$dev_pid"
		for _ in $(seq 60); do kill -0 "$dev_pid" 2>/dev/null || break; sleep 1; done
		if kill -0 "$dev_pid" 2>/dev/null; then
			log "parley dev did not stop within 60s: SIGKILL"
			kill -KILL "$dev_pid"
		fi
		wait "$dev_pid" 2>/dev/null
	fi
	# Fallback: whatever of the stack is still up (nothing, normally).
	if [ -n "$bin" ] && [ -f "$data/stack.json" ]; then
		"$bin" stack down --data-dir "$data" >/dev/null 2>&1
	fi
	if [ -n "$REPORTS" ]; then
		mkdir -p "$REPORTS"
		cp "$work"/*.json "$work"/*.html "$work"/*.txt "$REPORTS"/ 2>/dev/null
		cp "$work/dev.log" "$REPORTS"/ 2>/dev/null
		log "reports kept in $REPORTS"
	fi
	rm -rf "$work"
}
trap cleanup EXIT
trap 'exit 130' INT TERM

# --- build -------------------------------------------------------------------
commit=$(git rev-parse --short HEAD 2>/dev/null || echo unknown)
mkdir -p bin
if [ -n "${PARLEY_BIN:-}" ]; then
	bin=$(realpath "$PARLEY_BIN")
	built="the prebuilt binary \`$PARLEY_BIN\`"
elif [ "$SOURCE" = head ]; then
	log "building bin/parley from a clean export of HEAD ($commit)"
	mkdir "$work/src"
	git archive HEAD | tar -x -C "$work/src"
	(cd "$work/src" && go build -o "$OLDPWD/bin/parley" ./cmd/parley)
	bin=$(realpath bin/parley)
	built="\`bin/parley\` built from commit $commit (clean export of HEAD)"
else
	log "building bin/parley from the working tree"
	go build -o bin/parley ./cmd/parley
	bin=$(realpath bin/parley)
	# What goes into the binary: every file under cmd/ and internal/ but tests.
	dirty=$(git status --porcelain -- cmd internal go.mod go.sum 2>/dev/null | awk '{print $NF}' | grep -v '_test\.go$' | tr '\n' ' ' | sed 's/ $//' || true)
	if [ -n "$dirty" ]; then
		built="\`bin/parley\` built from the working tree at commit $commit, with uncommitted changes in: $dirty"
	else
		built="\`bin/parley\` built from the working tree at commit $commit (no uncommitted changes to cmd/ or internal/)"
	fi
fi

# --- machine -----------------------------------------------------------------
load_start=$(cut -d' ' -f1-3 /proc/loadavg)
started=$(date -u +"%Y-%m-%d %H:%M UTC")
machine_facts
gover=$(go env GOVERSION)
pg=$(ls /usr/lib/postgresql/*/bin/postgres 2>/dev/null | sort -V | tail -1)
versions="PostgreSQL $({ [ -n "$pg" ] && "$pg" --version; } | awk '{print $3}'), PgBouncer $(pgbouncer --version 2>/dev/null | awk 'NR == 1 {print $2}'), Redis $(redis-server --version 2>/dev/null | sed -n 's/.* v=\([^ ]*\).*/\1/p')"
t0=$(date +%s)

# --- server ------------------------------------------------------------------
# A port below the ephemeral range (the generator's 10k client sockets take
# ports from that range), free as far as ss (or a connect) can tell; parley dev
# is started again on another port if the bind fails all the same.
eph_low=$(awk '{print $1}' /proc/sys/net/ipv4/ip_local_port_range 2>/dev/null || echo 32768)
pick_port() {
	local p
	for _ in $(seq 100); do
		p=$((10000 + RANDOM % (eph_low - 10000)))
		if command -v ss >/dev/null; then
			[ -z "$(ss -Htan "( sport = :$p )" 2>/dev/null)" ] && { echo "$p"; return; }
		elif ! (exec 3<>"/dev/tcp/127.0.0.1/$p") 2>/dev/null; then
			echo "$p"
			return
		fi
	done
	return 1
}
ready=""
for attempt in 1 2 3; do
	port=$(pick_port) || { log "no free port found"; exit 1; }
	target="http://127.0.0.1:$port"
	log "starting parley dev on $target (data dir $data; log $work/dev.log; load average $load_start)"
	"$bin" dev --data-dir "$data" --http-addr "127.0.0.1:$port" >"$work/dev.log" 2>&1 &
	dev_pid=$!
	for _ in $(seq 600); do
		kill -0 "$dev_pid" 2>/dev/null || break
		if [ "$(curl -s -o /dev/null -w '%{http_code}' "$target/readyz" || true)" = 200 ]; then ready=1; break; fi
		sleep 0.5
	done
	[ -n "$ready" ] && break
	if kill -0 "$dev_pid" 2>/dev/null; then
		log "parley dev not ready within 300s"
		tail -20 "$work/dev.log" >&2
		exit 1
	fi
	wait "$dev_pid" 2>/dev/null || true
	dev_pid=""
	if [ "$attempt" -lt 3 ] && grep -q 'address already in use' "$work/dev.log"; then
		log "port $port was taken: trying another"
		continue
	fi
	log "parley dev exited before it was ready:"
	tail -20 "$work/dev.log" >&2
	exit 1
done
token=$(tr -d '[:space:]' <"$data/admin-token")
log "ready after $(($(date +%s) - t0))s"

# --- runs --------------------------------------------------------------------
# run NAME ARGS...: one `parley load` run; its JSON report is $work/NAME.json.
# Exit status 99 (a gate failed) is a result, not a failure of the script.
declare -a commands=()
declare -A exitcode=()
run() {
	local name=$1
	shift
	local args=(load --target "$target" --admin-token "$token" "$@" --json "$work/$name.json" --html "$work/$name.html")
	commands+=("parley load --target $target --admin-token \"\$TOKEN\" $* --json $name.json")
	log "$name: parley load $* (load average $(cut -d' ' -f1-3 /proc/loadavg))"
	local rc=0
	"$bin" "${args[@]}" >"$work/$name.txt" 2>"$work/$name.progress" &
	load_pid=$!
	wait "$load_pid" || rc=$?
	load_pid=""
	exitcode[$name]=$rc
	case $rc in
	0) log "$name: passed" ;;
	99) log "$name: a gate failed: $(jq -r '[.scenarios[].thresholds[] | select(.ok | not) | .expr] | join(", ")' "$work/$name.json" 2>/dev/null)" ;;
	*)
		log "$name: parley load exited $rc"
		tail -5 "$work/$name.progress" >&2
		;;
	esac
	grep -E '^(requests|errors|latency|connections)' "$work/$name.txt" | sed "s/^/  [$name] /" >&2 || true
}

run history --scenario history --duration "$DURATION"
run send --scenario send --duration "$DURATION"
run mixed --scenario mixed --duration "$DURATION"
run spike --scenario spike --duration "$SPIKE_DURATION"
for s in history send mixed; do
	run "$s-max" --scenario "$s" --find-max --step-duration "$STEP" --max-steps "$MAX_STEPS"
done
load_end=$(cut -d' ' -f1-3 /proc/loadavg)
total=$(($(date +%s) - t0))

# --- the doc section -----------------------------------------------------------
# Seed targets: history p95 ≤ 350 ms, send p95 ≤ 250 ms, mixed p95 ≤ 300 ms
# (spike: no errors, p95 within each SLO), ≥ 100 req/s, 5k–10k connections,
# < 1% errors. The scenarios' own gates are exactly these SLOs, plus
# rps ≥ 90% of the offered rate (the server kept up).
declare -A target_text=(
	[history]="p95 ≤ 350 ms, < 1% errors, ≥ 100 req/s"
	[send]="p95 ≤ 250 ms, < 1% errors, ≥ 100 req/s"
	[mixed]="p95 ≤ 300 ms, < 1% errors, ≥ 100 req/s"
	[spike]="p95 ≤ 300 ms (history ≤ 350, send ≤ 250), 0 errors, ≥ 100 req/s"
)

# ms: a latency in ms, 3 significant figures at most.
JQ_DEFS='
def ms: if . == null then "—" elif . >= 100 then (round | tostring) elif . >= 10 then ((. * 10 | round) / 10 | tostring) else ((. * 100 | round) / 100 | tostring) end;
def pct: ((. * 10000 | round) / 100 | tostring) + "%";
def num1: if . == null then "—" else ((. * 10 | round) / 10 | tostring) end;
'

row() {
	local name=$1 j="$work/$1.json" m="$work/$1-max.json"
	if [ ! -s "$j" ] || ! jq -e '.scenarios | length > 0' "$j" >/dev/null 2>&1; then
		echo "| $name | ${target_text[$name]} | run failed (exit ${exitcode[$name]:-?}) | | | | | | | | | |"
		return
	fi
	local cap="—"
	if [ -s "$m" ]; then
		cap=$(jq -r "$JQ_DEFS"'.scenarios[0] | if .capacity_rps == null then "—" else "\(.capacity_rps | num1) (p95 \(.latency_ms.p95 | ms) ms)" + (if .generator.bound then ", generator-bound: lower bound" else "" end) end' "$m" 2>/dev/null || echo "—")
	elif [ "$name" != spike ]; then
		cap="run failed (exit ${exitcode[$name-max]:-?})"
	fi
	jq -r --arg target "${target_text[$name]}" --arg cap "$cap" "$JQ_DEFS"'
		.scenarios[0] as $s
		| ([$s.thresholds[] | select((.expr | startswith("rps")) | not) | .ok] | all) as $slo
		| ($slo and $s.error_rate < 0.01 and $s.connections.established >= $s.connections.requested and $s.rps >= 100) as $seed
		| "| \($s.name) | \($target) | \($s.connections.requested) / \($s.connections.established) | \($s.offered_rps | num1) | \($s.rps | num1) | \($s.latency_ms.p50 | ms) | \($s.latency_ms.p95 | ms) | \($s.latency_ms.p99 | ms) | \($s.error_rate | pct) | \(if $s.passed then "pass" else "**fail**: " + ([$s.thresholds[] | select(.ok | not) | .expr] | join(", ")) end) | \(if $seed then "**met**" else "**missed**" end) | \($cap) |"
	' "$j"
}

steps_line() {
	local m="$work/$1-max.json"
	[ -s "$m" ] || return 0
	jq -r --arg name "$1" "$JQ_DEFS"'
		.scenarios[0] as $s
		| "- `\($name)` (\($s.connections.requested) connections held): "
		  + ([$s.steps[] | "\(.offered_rps | num1) → \(.rps | num1) req/s, p95 \(.p95_ms | ms) ms\(if .error_rate > 0 then ", errors " + (.error_rate | pct) else "" end) " + (if .passed then "✓" else "✗" end)] | join("; "))
		  + " ⇒ capacity_rps **\($s.capacity_rps | num1)**"
		  + (if any($s.warnings[]?; test("GENERATOR")) then " (a lower bound: the generator was the bottleneck)"
		     elif any($s.warnings[]?; test("every step met")) then " (a lower bound: every step met the gates; raise MAX_STEPS)"
		     else "" end)
	' "$m" 2>/dev/null || true
}

warnings_lines() {
	local name j
	for name in history send mixed spike history-max send-max mixed-max; do
		j="$work/$name.json"
		[ -s "$j" ] || continue
		# (find-max's "lower bound" notes are in the steps list already)
		jq -r --arg name "$name" '.scenarios[0].warnings // [] | .[] | select(test("lower bound") | not) | "- `\($name)`: \(.)"' "$j" 2>/dev/null || true
	done
}

section="$work/section.md"
{
	echo "$BEGIN"
	echo "## Load scenarios"
	echo
	echo "Measured by \`scripts/perf-scenarios.sh\` on $started ($total s in all): the four built-in scenarios of \`parley load\` (docs/loadgen.md) at the seed's connection counts against \`parley dev\` — the API on a throwaway local stack (PostgreSQL primary + streaming replica, PgBouncer in transaction pooling, Redis), default settings, access log on (one JSON line per request, to a file). $built; $gover; $versions."
	echo
	echo "Machine: $cores cores ($cpu), $mem RAM. **The generator and the server shared this $cores-core machine** — \`parley load\` in one process, \`parley dev\` (API server) in another, the four database daemons in theirs (one process may hold at most $nofile open files here; 10k connections need a socket at each end) — and other work may have been running on it too: load average $load_start at the start, $load_end at the end. Absolute figures vary between runs; capacity in particular is the capacity of this shared box, not of the server alone."
	echo
	echo "**Durations are shortened** from the seed's 5 minutes (9 for the spike): history, send and mixed run $DURATION each at the built-in rates; the spike's 2m / 1m ramp / 5m / 1m ramp stages are compressed into $SPIKE_DURATION with the same shape (5k → 10k → 5k connections, 200 → 400 → 200 req/s). Each run first creates its own data through the API (500 users, 200 conversations, 5000 Zipf-skewed messages) and dials and primes its connections; neither is timed. Latency is the open model's: from each request's intended send time. capacity_rps: \`--find-max\` — constant-rate steps of $STEP (at most $MAX_STEPS), doubling from the scenario's rate until a step misses a gate, then bisecting to within 10%; the highest step that met every gate (the scenario's SLOs, < 1% errors, served ≥ 90% of offered), with the scenario's connections held throughout."
	echo
	echo "| scenario | seed target | connections requested / established | offered req/s | achieved req/s | p50 ms | p95 ms | p99 ms | error rate | gates | seed targets | capacity_rps (p95 at it) |"
	echo "|---|---|---:|---:|---:|---:|---:|---:|---:|---|---|---:|"
	for s in history send mixed spike; do row "$s"; done
	echo
	echo "*offered*: the open model's intended sends per second (the spike: its mean over the stages). *gates*: the run's own gates (\`parley load\` exit status 0 or 99): the scenario's SLOs and rps ≥ 90% of the offered rate. *seed targets*: the SLO gates, < 1% errors, every requested connection established, ≥ 100 req/s achieved."
	echo
	echo "find-max steps (offered → served, p95; ✓ met every gate, ✗ missed one):"
	echo
	for s in history send mixed; do steps_line "$s"; done
	w=$(warnings_lines)
	if [ -n "$w" ]; then
		echo
		echo "The generator's warnings:"
		echo
		echo "$w"
	fi
	echo
	echo "Commands (\`TOKEN\` is the admin token \`parley dev\` wrote to \`<data dir>/admin-token\`):"
	echo
	echo '```sh'
	echo "ulimit -n $nofile"
	echo "parley dev --data-dir <temp dir> --http-addr 127.0.0.1:$port &"
	for c in "${commands[@]}"; do echo "$c"; done
	echo '```'
	echo
	echo "$END"
} >"$section"

ran=0
for s in history send mixed spike; do [ -s "$work/$s.json" ] && ran=$((ran + 1)); done
if [ "$ran" -eq 0 ]; then
	log "no scenario produced a report; $DOC left as it was"
	exit 1
fi

write_doc_section "$DOC" "$BEGIN" "$END" "$section"
log "wrote the Load scenarios section of $DOC ($total s):"
sed -n '/^| scenario/,/^$/p' "$section" >&2
