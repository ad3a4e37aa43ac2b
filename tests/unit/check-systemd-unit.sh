#!/bin/sh
# packaging/systemd/tributary.service.in: `systemd-analyze verify` takes
# it without a word (an unknown key or a bad value is only a warning
# there, so any output fails), the settings docs/daemon.md explains are
# all in it, and `systemd-analyze security --offline` rates it no worse
# than 2.0 (where that systemd has --offline and --threshold). Skipped
# (77) without systemd-analyze.
: "${top_srcdir:=$(cd "$(dirname "$0")/../.." && pwd)}"
: "${top_builddir:=$top_srcdir}"
unit_in="$top_srcdir/packaging/systemd/tributary.service.in"

if ! command -v systemd-analyze >/dev/null 2>&1; then
	echo "check-systemd-unit: no systemd-analyze, skipped"
	exit 77
fi
if [ ! -x "$top_builddir/fetcher/tributary" ]; then
	echo "check-systemd-unit: $top_builddir/fetcher/tributary not built" >&2
	exit 1
fi
dir=$(mktemp -d "${TMPDIR:-/tmp}/check-systemd-unit.XXXXXX") || exit 1
trap 'rm -rf "$dir"' EXIT
unit="$dir/tributary.service"
sed -e "s|@bindir@|$(cd "$top_builddir/fetcher" && pwd)|g" "$unit_in" >"$unit"
failed=0

out=$(systemd-analyze verify "$unit" 2>&1)
status=$?
if [ $status -ne 0 ] || [ -n "$out" ]; then
	echo "check-systemd-unit: systemd-analyze verify (exit $status):" >&2
	echo "$out" >&2
	failed=1
fi

for line in 'User=tributary' 'Group=tributary' \
	'SupplementaryGroups=tributary-trace' 'ExecStart=.*/tributary run' \
	'ExecReload=/bin/kill -HUP $MAINPID' 'Restart=on-failure' \
	'RestartSec=' 'TimeoutStopSec=' 'NoNewPrivileges=yes' \
	'ProtectSystem=strict' 'ReadWritePaths=/var/lib/tributary' \
	'StateDirectory=tributary' 'StateDirectoryMode=0700' \
	'ProtectHome=yes' 'PrivateTmp=yes' 'PrivateDevices=yes' \
	'ProtectKernelTunables=yes' 'ProtectKernelModules=yes' \
	'ProtectKernelLogs=yes' 'ProtectControlGroups=yes' \
	'ProtectClock=yes' 'ProtectHostname=yes' \
	'RestrictAddressFamilies=AF_UNIX AF_INET AF_INET6' \
	'RestrictNamespaces=yes' 'LockPersonality=yes' \
	'MemoryDenyWriteExecute=yes' 'RestrictRealtime=yes' \
	'RestrictSUIDSGID=yes' 'SystemCallArchitectures=native' \
	'SystemCallFilter=@system-service' 'CapabilityBoundingSet=' \
	'UMask=0077'; do
	if ! grep -qx -- "$line" "$unit" && ! grep -qx -- "$line.*" "$unit"; then
		echo "check-systemd-unit: no line '$line'" >&2
		failed=1
	fi
done
# an empty CapabilityBoundingSet= is the point: no capabilities at all
if ! grep -qx 'CapabilityBoundingSet=' "$unit"; then
	echo "check-systemd-unit: CapabilityBoundingSet= is not empty" >&2
	failed=1
fi

if systemd-analyze security --help 2>/dev/null | grep -q -- '--offline' &&
	systemd-analyze security --help 2>/dev/null | grep -q -- '--threshold'; then
	if ! out=$(systemd-analyze security --offline=yes --threshold=20 \
		--no-pager "$unit" 2>&1); then
		echo "check-systemd-unit: exposure over 2.0:" >&2
		echo "$out" | tail -25 >&2
		failed=1
	else
		echo "check-systemd-unit: $(echo "$out" | tail -1)"
	fi
fi
if [ $failed -ne 0 ]; then
	exit 1
fi
echo "check-systemd-unit: verified"
