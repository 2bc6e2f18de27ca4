# Sourced by the perf-*.sh scripts: write_doc_section DOC BEGIN END FILE
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
