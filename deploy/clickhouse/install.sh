#!/usr/bin/env bash
# Makes sure a clickhouse-server binary exists for `make test` and
# `make demo`, unless CLICKHOUSE_ADDR names a server to use instead.
# Installs Debian's clickhouse-server package when it is missing and the
# machine allows it (root and apt-get); otherwise explains what to do.
set -euo pipefail

if [[ -n "${CLICKHOUSE_ADDR:-}" ]]; then
	exit 0 # an existing server is configured
fi
if command -v clickhouse-server >/dev/null 2>&1 || command -v clickhouse >/dev/null 2>&1; then
	exit 0
fi
fail() {
	echo "cartlift: no ClickHouse server: $1" >&2
	echo "  either set CLICKHOUSE_ADDR=host:9000 to use a running server," >&2
	echo "  or install ClickHouse (Debian/Ubuntu: apt-get install clickhouse-server;" >&2
	echo "  elsewhere: https://clickhouse.com/docs/install) and run make again." >&2
	exit 1
}
command -v apt-get >/dev/null 2>&1 || fail "clickhouse-server is not installed and this machine has no apt-get"
if [[ $(id -u) -ne 0 ]]; then
	if command -v sudo >/dev/null 2>&1 && sudo -n true 2>/dev/null; then
		SUDO=sudo
	else
		fail "clickhouse-server is not installed and installing it needs root"
	fi
fi
echo "cartlift: installing clickhouse-server (Debian package) ..." >&2
export DEBIAN_FRONTEND=noninteractive
install() { ${SUDO:-} apt-get install -y -q --no-install-recommends clickhouse-server >/tmp/cartlift-clickhouse-install.log 2>&1; }
if ! install; then
	${SUDO:-} apt-get update -q >>/tmp/cartlift-clickhouse-install.log 2>&1 || true
	install || fail "apt-get install clickhouse-server failed (see /tmp/cartlift-clickhouse-install.log)"
fi
command -v clickhouse-server >/dev/null 2>&1 || fail "the package installed no clickhouse-server binary"
echo "cartlift: clickhouse-server installed" >&2
