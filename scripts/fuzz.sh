#!/usr/bin/env bash
# fuzz.sh — runs every fuzz target of the module (func Fuzz… in a _test.go
# file) for FUZZTIME each, one after the other, and reports each target's
# exec rate: overall, and the slowest, median and fastest of go's 3-second
# progress lines. Used by `make fuzz`. Run from anywhere:
#
#   scripts/fuzz.sh                      # FUZZTIME=10s
#   FUZZTIME=5m scripts/fuzz.sh
#   FUZZ='^FuzzReadResponse$' scripts/fuzz.sh   # only the targets matching
#
# It fails when a target fails (not for Go's own end-of-run deadline race,
# golang/go#75804: see deadline_race), when a package with fuzz targets starts a
# test stack (stacktest.Main: every fuzz worker would start one, and the
# target would sit at 0 execs/s), or when a target runs slower than
# FUZZMINRATE execs/s overall. A new interesting input is minimized for at
# most FUZZMINIMIZETIME (go's default is 60 s, which stalls a short run).
set -euo pipefail
cd "$(dirname "$0")/.."

GO=${GO:-go}
FUZZTIME=${FUZZTIME:-10s}
FUZZMINRATE=${FUZZMINRATE:-100}
FUZZMINIMIZETIME=${FUZZMINIMIZETIME:-1s}
FUZZ=${FUZZ:-.}

# deadline_race reports whether the log's only failure is Go 1.26's fuzz
# coordinator race (golang/go#75804, fixed in Go 1.27): when a duration
# -fuzztime ends, a worker's shutdown can be reported as the target failing
# with a bare "context deadline exceeded", on a busy machine (seen in CI:
# FuzzParseStage after 71 902 execs). A real finding writes its input
# ("Failing input written to …"), a panic or a t.Error prints more than that
# line: those, and anything else, still fail. The rate floor still catches a
# target that stalls.
deadline_race() {
	grep -q "^--- FAIL: $1 " "$log" || return 1
	grep -q 'Failing input written' "$log" && return 1
	[ "$(sed -n "/^--- FAIL: $1 /,/^FAIL\$/p" "$log" |
		grep -v -e "^--- FAIL: $1 " -e '^FAIL$' -e '^[[:space:]]*context deadline exceeded$' | wc -l)" -eq 0 ]
}

summary=$(mktemp)
log=$(mktemp)
trap 'rm -f "$summary" "$log"' EXIT
failed=0

for dir in $(grep -rl --include='*_test.go' '^func Fuzz' . | xargs -r dirname | sort -u); do
	if grep -q 'stacktest\.Main(' "$dir"/*_test.go; then
		echo "fuzz: $dir has fuzz targets and a TestMain that starts a test stack: every fuzz worker would start one; move the targets to a package without one" >&2
		failed=1
		continue
	fi
	for f in $(grep -h -o '^func Fuzz[A-Za-z0-9_]*' "$dir"/*_test.go | sed 's/func //' | grep -E -- "$FUZZ"); do
		echo "fuzz $dir $f ($FUZZTIME)" >&2
		status=ok
		if ! "$GO" test -run='^$' -fuzz="^$f\$" -fuzztime="$FUZZTIME" -fuzzminimizetime="$FUZZMINIMIZETIME" "$dir" >"$log" 2>&1; then
			if deadline_race "$f"; then
				status="ok (go#75804 deadline race at the end, no failing input)"
			else
				status=FAILED
				failed=1
			fi
			cat "$log" >&2
		fi
		# "fuzz: elapsed: 6s, execs: 29189 (6130/sec), new interesting: ..."
		awk -v dir="$dir" -v f="$f" -v status="$status" -v minrate="$FUZZMINRATE" '
			/^fuzz: elapsed: .*execs: / {
				el = $3; sub(/s,$/, "", el)
				ex = $5; sub(/,$/, "", ex)
				r = $6; gsub(/[(]|\/sec[)],?/, "", r)
				if (el + 0 > last_el) { n++; rates[n] = r + 0 }
				last_el = el + 0; execs = ex + 0
			}
			END {
				if (n > 1) n--   # the last line is the partial interval at the end
				if (n > 0) {
					# sort the interval rates (insertion sort: a few dozen)
					for (i = 2; i <= n; i++) { v = rates[i]; j = i - 1; while (j > 0 && rates[j] > v) { rates[j + 1] = rates[j]; j-- }; rates[j + 1] = v }
					lo = rates[1]; med = rates[int((n + 1) / 2)]; hi = rates[n]
				}
				overall = last_el > 0 ? execs / last_el : 0
				if (status ~ /^ok/ && overall < minrate) status = sprintf("TOO SLOW (< %d/s)", minrate)
				printf "%-22s %-22s %10d execs %8.0f/s   3 s intervals: min %6d  median %6d  max %6d /s   %s\n", dir, f, execs, overall, lo, med, hi, status
			}' "$log" | tee -a "$summary" >&2
		if grep -q 'TOO SLOW' "$summary"; then failed=1; fi
	done
done

echo >&2
echo "fuzz summary (FUZZTIME=$FUZZTIME, load average $(cut -d' ' -f1-3 /proc/loadavg)):" >&2
cat "$summary" >&2
exit "$failed"
