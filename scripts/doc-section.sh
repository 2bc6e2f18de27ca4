# Sourced by the perf-*.sh scripts (and chaos-report.sh). machine_facts sets
# cpu, cores and mem for a section's machine line. build_parley builds
# bin/parley from the working tree, or takes PARLEY_BIN, and sets bin,
# commit and built (how the binary was made, for the section's header).
# write_doc_section DOC BEGIN END FILE
# replaces the lines from BEGIN to END (marker lines, inclusive) in DOC with
# FILE's content (which carries the markers itself), or appends FILE when
# DOC has no such section yet; a missing DOC is created with its heading.
write_doc_section() {
	local doc=$1 begin=$2 end=$3 section=$4
	mkdir -p "$(dirname "$doc")"
	if [ ! -f "$doc" ]; then
		printf '# Performance\n\nEvery figure here is written by the script that measured it; rerun the script instead of editing.\n\n' >"$doc"
	fi
	if grep -qF "$begin" "$doc"; then
		awk -v begin="$begin" -v end="$end" -v sec="$section" '
			$0 == begin { while ((getline line < sec) > 0) print line; skip = 1; next }
			skip && $0 == end { skip = 0; next }
			!skip { print }' "$doc" >"$section.doc"
		cat "$section.doc" >"$doc"
	else
		{ echo; cat "$section"; } >>"$doc"
	fi
}

machine_facts() {
	cpu=$(awk -F': ' '/^model name/ {print $2; exit}' /proc/cpuinfo)
	cores=$(nproc)
	mem=$(awk '/^MemTotal/ {printf "%.0f GiB", $2/1048576}' /proc/meminfo)
}

build_parley() {
	commit=$(git rev-parse --short HEAD 2>/dev/null || echo unknown)
	if [ -n "${PARLEY_BIN:-}" ]; then
		bin=$(realpath "$PARLEY_BIN")
		built="the prebuilt binary \`$PARLEY_BIN\`"
		return
	fi
	echo "$(basename "$0" .sh): building bin/parley from the working tree" >&2
	mkdir -p bin
	go build -o bin/parley ./cmd/parley
	bin=$(realpath bin/parley)
	local dirty
	dirty=$(git status --porcelain -- cmd internal go.mod go.sum 2>/dev/null | awk '{print $NF}' | grep -v '_test\.go$' | tr '\n' ' ' | sed 's/ $//' || true)
	built="\`bin/parley\` built from the working tree at commit $commit${dirty:+, with uncommitted changes in: $dirty}"
}
