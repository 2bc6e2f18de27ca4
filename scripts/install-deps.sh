#!/usr/bin/env bash
# Installs the Debian packages Parley's stack and tests need, when missing.
# As root it runs apt-get; otherwise it prints the one command to run.
set -euo pipefail

need=()
have_pg() { [ -x /usr/lib/postgresql/15/bin/postgres ] || { command -v pg_config >/dev/null && [ -x "$(pg_config --bindir)/postgres" ]; }; }
have_pg || need+=(postgresql-15)
command -v pgbouncer >/dev/null || [ -x /usr/sbin/pgbouncer ] || need+=(pgbouncer)
command -v redis-server >/dev/null || need+=(redis-server)
# The stack's Prometheus (the canary judges on it); the package also brings
# promtool, which checks deploy/'s config and alert rules in the tests.
{ command -v prometheus >/dev/null && command -v promtool >/dev/null; } || need+=(prometheus)
# Headless Chromium drives the dashboard's browser test (test/integration).
if [ "${1:-}" = "--test" ]; then
  command -v chromium >/dev/null || need+=(chromium)
fi

if [ ${#need[@]} -eq 0 ]; then
  exit 0
fi
if [ "$(id -u)" -ne 0 ]; then
  echo "parley: missing Debian packages: ${need[*]}" >&2
  echo "parley: install them as root: apt-get update && apt-get install -y ${need[*]}" >&2
  exit 1
fi
echo "parley: installing ${need[*]} (apt-get)..." >&2
export DEBIAN_FRONTEND=noninteractive
apt-get update -qq
apt-get install -y -qq --no-install-recommends "${need[@]}" >/dev/null
# Debian's packages may start their own services; Parley runs its own.
for svc in postgresql pgbouncer redis-server prometheus; do
  if command -v service >/dev/null 2>&1; then service "$svc" stop >/dev/null 2>&1 || true; fi
done
echo "parley: installed ${need[*]}" >&2
