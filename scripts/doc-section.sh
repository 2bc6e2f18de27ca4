# Sourced by the perf-*.sh scripts (and chaos-report.sh). machine_facts sets
# cpu, cores and mem for a section's machine line. build_parley builds
# bin/parley from the working tree, or takes PARLEY_BIN, and sets bin,
# commit and built (how the binary was made, for the section's header).
# http_json, history_fixture, history_rollout and read_source are the
# history benchmarks' API calls (their comments below).
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

# http_json METHOD URL TOKEN [BODY] prints the answer's body; it fails on an
# HTTP status of 400 or more.
http_json() {
	curl -fsS -X "$1" -H "Authorization: Bearer $3" -H 'Content-Type: application/json' ${4:+-d "$4"} "$2"
}

# history_fixture BIN BASE ADMIN_TOKEN NAME SEED [JSON] makes the history
# benchmarks' data through the API at BASE: users NAME_alice and NAME_bob in
# one conversation, which BIN's `parley load` fills with sends of an ordinary
# length for SEED (closed model, 8 connections; JSON keeps its report). It
# sets alice_token, bob_token and bob_id (the reader), conv and hpath (the
# conversation's history path). It fails when the API calls do; a seeding
# load that ends in error is reported and the run goes on with the messages
# it made.
history_fixture() {
	local bin=$1 base=$2 admin=$3 name=$4 seed=$5 json=${6:-/dev/null} alice bob me
	me=$(basename "$0" .sh)
	alice=$(http_json POST "$base/v1/users" "$admin" "{\"handle\":\"${name}_alice\"}") || return 1
	bob=$(http_json POST "$base/v1/users" "$admin" "{\"handle\":\"${name}_bob\"}") || return 1
	alice_token=$(jq -r .token <<<"$alice")
	bob_token=$(jq -r .token <<<"$bob")
	bob_id=$(jq -r .id <<<"$bob")
	conv=$(http_json POST "$base/v1/conversations" "$alice_token" "{\"title\":\"$name\",\"member_ids\":[\"$bob_id\"]}" | jq -r .id) || return 1
	hpath="/v1/conversations/$conv/messages"
	echo "$me: seeding conversation $conv (sends for $seed)" >&2
	"$bin" load --url "$base$hpath" --method POST --body '{"body":"a message of an ordinary length, about sixty characters long"}' \
		--header "Authorization: Bearer $alice_token" --header 'Content-Type: application/json' \
		--closed --connections 8 --duration "$seed" --quiet --json "$json" >&2 ||
		echo "$me: the seeding load exited $? (going on with what it sent)" >&2
}

# history_rollout CONFIG prints the message_history rollout (the body of
# PUT /admin/rollouts/message_history) of a history benchmark configuration:
# baseline (rollout 0 %: the primary through PgBouncer), replica (100 %, the
# replica, no cache) or cache (100 %, the cache, no replica).
history_rollout() {
	case $1 in
	baseline) echo '{"percent":0,"cache":false,"replica":false}' ;;
	replica) echo '{"percent":100,"cache":false,"replica":true}' ;;
	cache) echo '{"percent":100,"cache":true,"replica":false}' ;;
	*) echo "history_rollout: unknown configuration $1" >&2; return 1 ;;
	esac
}

# read_source URL TOKEN prints the X-Read-Source of a GET of URL as TOKEN.
read_source() {
	curl -fsS -D - -o /dev/null -H "Authorization: Bearer $2" "$1" | tr -d '\r' | awk -F': ' 'tolower($1) == "x-read-source" {print $2}'
}
