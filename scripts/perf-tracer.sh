#!/usr/bin/env bash
# perf-tracer.sh — runs the query tracer benchmarks (internal/monitor:
# BenchmarkQueryTracer, the tracer's own start + end without a database, and
# BenchmarkQueryTracerRoundTrip, SELECT 1 on the primary without and with the
# tracer, interleaved query by query) against a throwaway stack that the test
# binary starts, and writes the bench:querytracer section of
# docs/monitoring.md (between its markers; the rest of the file is kept).
# Run from anywhere:
#
#   scripts/perf-tracer.sh                 # 2 s per benchmark
#   BENCHTIME=5s scripts/perf-tracer.sh
#   DOC=/tmp/monitoring.md scripts/perf-tracer.sh
#
# Needs: go, and what the stack needs (scripts/install-deps.sh --test).
# Progress and raw output go to stderr.
set -euo pipefail
. "$(dirname "$0")/doc-section.sh"
cd "$(dirname "$0")/.."

BENCHTIME=${BENCHTIME:-2s}
DOC=${DOC:-docs/monitoring.md}
BEGIN='<!-- bench:querytracer:begin -->'
END='<!-- bench:querytracer:end -->'

raw=$(mktemp)
section=$(mktemp)
trap 'rm -f "$raw" "$section" "$section.doc"' EXIT

echo "perf-tracer: go test -bench BenchmarkQueryTracer -benchtime $BENCHTIME (load average $(cut -d' ' -f1-3 /proc/loadavg))" >&2
go test -run '^$' -bench '^BenchmarkQueryTracer' -benchmem -benchtime "$BENCHTIME" -count 1 ./internal/monitor/ | tee "$raw" >&2

awk -v date="$(date -u +%Y-%m-%d)" -v os="$(go env GOOS)/$(go env GOARCH)" -v cpus="$(nproc)" \
	-v gover="$(go env GOVERSION)" -v bt="$BENCHTIME" -v begin="$BEGIN" -v end="$END" '
# value of the metric named unit on a benchmark line ("<value> <unit>" pairs)
function metric(unit,   i) { for (i = 3; i < NF; i += 2) if ($(i + 1) == unit) return $i; return "" }
/^BenchmarkQueryTracer\// {
	name = $1; sub(/^BenchmarkQueryTracer\//, "", name); sub(/-[0-9]+$/, "", name)
	row[name] = sprintf("| %s | %d | %s | %s |", label[name], metric("ns/op"), metric("allocs/op"), metric("B/op"))
	if (name == "ctx_name") own = metric("ns/op")
}
/^BenchmarkQueryTracerRoundTrip/ { n = $2; untraced = metric("untraced-ns/query"); traced = metric("traced-ns/query") }
BEGIN {
	label["ctx_name"] = "tracer, name in context"
	label["sql_comment"] = "tracer, name in SQL comment"
	label["unnamed"] = "tracer, unnamed (other)"
}
END {
	if (untraced == "" || own == "") { print "perf-tracer: benchmark output incomplete" > "/dev/stderr"; exit 1 }
	print begin
	printf "Measured %s on %s, %d CPUs, %s (`scripts/perf-tracer.sh`, -benchtime %s):\n\n", date, os, cpus, gover, bt
	print "| benchmark | ns/op | allocs/op | B/op |"
	print "|---|---|---|---|"
	print row["ctx_name"]; print row["sql_comment"]; print row["unnamed"]
	printf "| `SELECT 1` on the primary, untraced (interleaved, %d each) | %d | | |\n", n, untraced
	printf "| `SELECT 1` on the primary, traced (interleaved, %d each) | %d | | |\n", n, traced
	printf "\nThe tracer'"'"'s own cost (first row) is %.2f %% of an untraced `SELECT 1` round trip; the two round-trip rows differ by %+d ns in this run (machine noise included).\n", 100 * own / untraced, traced - untraced
	print end
}' "$raw" >"$section"

write_doc_section "$DOC" "$BEGIN" "$END" "$section"
echo "perf-tracer: wrote the bench:querytracer section of $DOC" >&2
