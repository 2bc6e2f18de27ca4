#!/usr/bin/env bash
# perf-ab-history.sh — two parley binaries side by side on the uncached
# history read (issue 12, target 1): `GET /v1/conversations/{id}/messages`,
# the newest page of 50, on one throwaway stack. Both binaries run as
# `parley serve` with the same flags against the same PostgreSQL, PgBouncer,
# replica and Redis; only the one being measured gets load. The runs are
# interleaved (A B, B A, A B, ...) with `wrk -t1 -c$WRK_CONNS` so that the
# noise of a shared machine weighs on both; the answer is the ratio of the
# means (B / A), not the absolute rates; besides req/s it reports the
# server's own CPU time (utime + stime from /proc) per request, which the
# other load on the machine disturbs less. Before the runs it checks that both
# answer the page with the same bytes. Nothing is written to docs/.
#
#   BIN_A=/tmp/parley-before BIN_B=bin/parley scripts/perf-ab-history.sh
#   ROUNDS=6 DURATION=10s CONFIG=baseline scripts/perf-ab-history.sh
#   PROFILE=1 ...   # + a `perf record -g` run of each server first (not counted)
#
# Knobs (environment): BIN_A, BIN_B (required), ROUNDS (5), DURATION (10s),
# WRK_CONNS (64), CONFIG (replica: rollout 100 %, replica on, cache off;
# baseline: rollout 0 %, the primary through PgBouncer), SEED (5s of sends),
# REPORTS (a folder to keep the wrk outputs, logs and profiles in).
# Needs: wrk, jq, curl; perf for PROFILE=1.
set -euo pipefail
. "$(dirname "$0")/doc-section.sh"
cd "$(dirname "$0")/.."

: "${BIN_A:?set BIN_A to the before binary}" "${BIN_B:?set BIN_B to the after binary}"
ROUNDS=${ROUNDS:-5}
DURATION=${DURATION:-10s}
WRK_CONNS=${WRK_CONNS:-64}
CONFIG=${CONFIG:-replica}
SEED=${SEED:-5s}
PROFILE=${PROFILE:-0}
REPORTS=${REPORTS:-}
bin_a=$(realpath "$BIN_A")
bin_b=$(realpath "$BIN_B")

log() { echo "perf-ab: $*" >&2; }
for t in wrk jq curl; do command -v $t >/dev/null || { log "missing $t"; exit 1; }; done

work=$(mktemp -d)
chmod 755 "$work" # the stack's daemons run as another user when this runs as root
data="$work/data"
pids=()
cleanup() {
	set +e
	for p in "${pids[@]}"; do kill -INT "$p" 2>/dev/null; done
	for p in "${pids[@]}"; do wait "$p" 2>/dev/null; done
	[ -f "$data/stack.json" ] && "$bin_a" stack down --data-dir "$data" >/dev/null 2>&1
	if [ -n "$REPORTS" ]; then
		mkdir -p "$REPORTS"
		cp "$work"/*.txt "$work"/*.log "$work"/*.perf "$REPORTS"/ 2>/dev/null
		log "reports kept in $REPORTS"
	fi
	rm -rf "$work"
}
trap cleanup EXIT
trap 'exit 130' INT TERM

free_port() {
	local p
	for _ in $(seq 100); do
		p=$((20000 + RANDOM % 10000))
		if ! (exec 3<>"/dev/tcp/127.0.0.1/$p") 2>/dev/null; then echo "$p"; return; fi
	done
	return 1
}

load_start=$(cut -d' ' -f1-3 /proc/loadavg)
log "stack up in $data (load average $load_start)"
"$bin_a" stack up --data-dir "$data" >"$work/stack.log" 2>&1
set -a
eval "$("$bin_a" stack env --data-dir "$data")"
set +a
"$bin_a" migrate --primary-url "$PARLEY_PRIMARY_URL" >>"$work/stack.log" 2>&1
admin=$(head -c 24 /dev/urandom | base64 | tr -d '/+=')

declare -A url=() pid=()
for side in A B; do
	b=$bin_a
	[ $side = B ] && b=$bin_b
	port=$(free_port)
	PARLEY_ADMIN_TOKEN=$admin PARLEY_PRIMARY_URL=$PARLEY_PGBOUNCER_URL PARLEY_REPLICA_URLS=$PARLEY_REPLICA_URLS \
		PARLEY_REDIS_URL=$PARLEY_REDIS_URL PARLEY_PGBOUNCER_ADMIN_URL=${PARLEY_PGBOUNCER_ADMIN_URL:-} \
		"$b" serve --http-addr "127.0.0.1:$port" --admission=false >"$work/serve-$side.log" 2>&1 &
	pid[$side]=$!
	pids+=("$!")
	url[$side]="http://127.0.0.1:$port"
done
for side in A B; do
	for _ in $(seq 200); do
		kill -0 "${pid[$side]}" 2>/dev/null || { log "server $side exited:"; tail -20 "$work/serve-$side.log" >&2; exit 1; }
		[ "$(curl -s -o /dev/null -w '%{http_code}' "${url[$side]}/readyz" || true)" = 200 ] && break
		sleep 0.3
	done
done

history_fixture "$bin_a" "${url[A]}" "$admin" ab "$SEED"
# A few bodies that need escaping, so that the byte comparison means something.
for body in '"<b>&amp;</b> \u2028 \u2029 \u0001 tab\t nl\n quote\" backslash\\ é 日本語 😀"' '"x"'; do
	http_json POST "${url[A]}$hpath" "$alice_token" "{\"body\":$body}" >/dev/null
done
case $CONFIG in
replica) want=replica ;;
baseline) want=primary ;;
*) log "CONFIG must be replica or baseline"; exit 2 ;;
esac
http_json PUT "${url[A]}/admin/rollouts/message_history" "$admin" "$(history_rollout "$CONFIG")" >/dev/null
sleep 3 # both instances poll the rollout table; the replica replays the sends
for side in A B; do
	for _ in $(seq 30); do
		src=$(curl -fsS -D "$work/headers-$side.txt" -o "$work/page-$side.json" -H "Authorization: Bearer $bob_token" "${url[$side]}$hpath" &&
			tr -d '\r' <"$work/headers-$side.txt" | awk -F': ' 'tolower($1) == "x-read-source" {print $2}')
		[ "$src" = "$want" ] && break
		sleep 1
	done
	[ "$src" = "$want" ] || { log "server $side reads from '$src', not $want"; exit 1; }
done
if cmp -s "$work/page-A.json" "$work/page-B.json"; then
	log "the page is the same $(wc -c <"$work/page-A.json") bytes from A and B"
else
	log "A and B answer different bytes:"
	diff <(jq . "$work/page-A.json") <(jq . "$work/page-B.json") | head -20 >&2
	exit 1
fi

declare -A runs=() cpus=()
cpu_ticks() { awk '{print $14 + $15}' "/proc/$1/stat"; } # utime + stime, in clock ticks
hz=$(getconf CLK_TCK)
run() { # run SIDE ROUND (round 0: the profile, not counted)
	local side=$1 r=$2 out="$work/wrk-$1-$2.txt" perf_pid="" v c0 c1 cpu
	if [ "$r" = 0 ]; then
		perf record -g -p "${pid[$side]}" -o "$work/profile-$side.perf" >/dev/null 2>&1 &
		perf_pid=$!
	fi
	c0=$(cpu_ticks "${pid[$side]}")
	wrk -t1 -c"$WRK_CONNS" -d"$DURATION" -H "Authorization: Bearer $bob_token" "${url[$side]}$hpath" >"$out" 2>&1 || true
	c1=$(cpu_ticks "${pid[$side]}")
	if [ -n "$perf_pid" ]; then
		kill -INT "$perf_pid" 2>/dev/null
		wait "$perf_pid" 2>/dev/null || true
		log "profile run $side done"
		return
	fi
	# Successful responses only; the server's CPU time per request (all
	# answers) in microseconds.
	read -r v cpu < <(awk -v ticks=$((c1 - c0)) -v hz="$hz" '/ requests in / {n = $1; d = $4; sub(/s,?$/, "", d)} /^  Non-2xx or 3xx responses:/ {bad = $5}
		END {if (d > 0 && n > 0) printf "%.1f %.1f\n", (n - bad) / d, ticks / hz * 1e6 / n; else print "0 0"}' "$out")
	grep -q 'Non-2xx' "$out" && log "  $side: $(grep 'Non-2xx' "$out") (not counted)"
	runs[$side]="${runs[$side]:-} $v"
	cpus[$side]="${cpus[$side]:-} $cpu"
	log "round $r $side: $v/s, server CPU $cpu us/request (load average $(cut -d' ' -f1-3 /proc/loadavg))"
}
if [ "$PROFILE" = 1 ]; then run A 0; run B 0; fi
for r in $(seq "$ROUNDS"); do
	if [ $((r % 2)) = 1 ]; then run A "$r"; run B "$r"; else run B "$r"; run A "$r"; fi
done
mean() { printf '%s\n' $1 | awk '{s += $1; n++} END {if (n) printf "%.1f", s / n; else print 0}'; }
ratios() { # ratios "A values" "B values" → B/A per round
	local -a xa xb
	read -ra xa <<<"$1"
	read -ra xb <<<"$2"
	for i in "${!xa[@]}"; do awk -v a="${xa[$i]}" -v b="${xb[$i]}" 'BEGIN {printf " %.3f", (a > 0) ? b / a : 0}'; done
}
ma=$(mean "${runs[A]}") mb=$(mean "${runs[B]}")
ca=$(mean "${cpus[A]}") cb=$(mean "${cpus[B]}")
echo "config=$CONFIG wrk -t1 -c$WRK_CONNS -d$DURATION rounds=$ROUNDS page=$(wc -c <"$work/page-A.json")B"
echo "load average: start $load_start, end $(cut -d' ' -f1-3 /proc/loadavg)"
echo "A ($BIN_A) req/s:${runs[A]}  mean $ma; server CPU us/request:${cpus[A]}  mean $ca"
echo "B ($BIN_B) req/s:${runs[B]}  mean $mb; server CPU us/request:${cpus[B]}  mean $cb"
echo "req/s B/A per round:$(ratios "${runs[A]}" "${runs[B]}"); of the means: $(awk -v a="$ma" -v b="$mb" 'BEGIN {printf "%.3f", (a > 0) ? b / a : 0}')"
echo "CPU/request B/A per round:$(ratios "${cpus[A]}" "${cpus[B]}"); of the means: $(awk -v a="$ca" -v b="$cb" 'BEGIN {printf "%.3f", (a > 0) ? b / a : 0}')"
if [ "$PROFILE" = 1 ]; then
	for side in A B; do
		[ -s "$work/profile-$side.perf" ] || continue
		perf report -i "$work/profile-$side.perf" --no-children --sort dso,sym -g none 2>/dev/null | grep '%' | head -40 >"$work/profile-$side.txt" || true
		log "profile $side: top items"
		head -25 "$work/profile-$side.txt" >&2
	done
fi
