#!/bin/bash
# with-servers.sh CMD [ARGS...]
#
# Run CMD with Tributary's integration-test servers up: a private temp dir,
# `harness.py start` (test CA, OAuth stand-in, remote Dovecot), every
# variable of DIR/env.sh exported, CMD, and then always `harness.py stop`:
# on success, on failure, on INT/TERM/HUP.
#
# Exit status: CMD's (128+N if CMD died of signal N, or if this script got
# signal N first). The temp dir is removed on success and kept (path printed,
# with the tails of the Dovecot logs) on failure.
#
# CMD runs in its own process group when stdin is not a terminal (CI): when
# the script is interrupted, or CMD exits, anything CMD left running in that
# group gets SIGTERM, then SIGKILL after 5 s. With a terminal on stdin (by
# hand, e.g. `with-servers.sh bash`) CMD stays in our group so it can read
# the terminal; then only CMD itself is signalled.
#
# Environment: PYTHON3 (default python3), TMPDIR, TRIB_KEEP_DIR=1 (keep the
# temp dir even on success).

if [ $# -lt 1 ]; then
	echo "usage: $0 CMD [ARGS...]" >&2
	exit 2
fi

here=$(cd "$(dirname "$0")" && pwd) || exit 2
PY=${PYTHON3:-python3}
harness="$here/harness.py"

dir=$(mktemp -d "${TMPDIR:-/tmp}/tributary-test.XXXXXX") || {
	echo "with-servers: mktemp failed" >&2
	exit 2
}

status=
cmd_pid=
own_group=
finished=

# true while pid exists and is not a zombie (Linux /proc)
running() {
	local st
	st=$(sed 's/.*) //' "/proc/$1/stat" 2>/dev/null) || return 1
	[ -n "$st" ] && [ "${st:0:1}" != Z ]
}

stop_cmd() {
	# $1: 1 = CMD may still run (signal path), 0 = CMD has exited
	[ -n "$cmd_pid" ] || return 0
	if [ -n "$own_group" ]; then
		kill -TERM -- "-$cmd_pid" 2>/dev/null
	elif [ "$1" = 1 ]; then
		kill -TERM "$cmd_pid" 2>/dev/null
	fi
	if [ "$1" = 1 ]; then
		local n=0
		while running "$cmd_pid" && [ $n -lt 50 ]; do
			sleep 0.1
			n=$((n + 1))
		done
		kill -KILL "$cmd_pid" 2>/dev/null
		wait "$cmd_pid" 2>/dev/null
	fi
	if [ -n "$own_group" ] && kill -0 -- "-$cmd_pid" 2>/dev/null; then
		# leftovers of CMD: a moment to exit on the TERM, then KILL
		sleep 0.2
		kill -KILL -- "-$cmd_pid" 2>/dev/null
	fi
	cmd_pid=
}

finish() {
	# Runs once: from the normal path, the EXIT trap, or a signal trap.
	[ -n "$finished" ] && return
	finished=1
	trap '' INT TERM HUP
	stop_cmd 1
	if ! "$PY" "$harness" stop "$dir"; then
		echo "with-servers: WARNING: harness stop failed ($dir)" >&2
		[ "$status" -eq 0 ] && status=1
	fi
	if [ "$status" -eq 0 ] && [ -z "${TRIB_KEEP_DIR:-}" ]; then
		rm -rf "$dir"
	else
		if [ "$status" -ne 0 ]; then
			for log in "$dir/remote/dovecot.log" "$dir/local/dovecot.log"; do
				[ -f "$log" ] || continue
				echo "with-servers: ---- tail of $log ----" >&2
				tail -n 40 "$log" >&2
				echo "with-servers: ----" >&2
			done
		fi
		echo "with-servers: exit status $status; kept $dir" >&2
	fi
}

trap 'status=${status:-$?}; finish; exit $status' EXIT
trap 'status=130; finish; exit 130' INT
trap 'status=143; finish; exit 143' TERM
trap 'status=129; finish; exit 129' HUP

if ! "$PY" "$harness" start "$dir"; then
	echo "with-servers: harness start failed" >&2
	status=1
	exit 1
fi

set -a
. "$dir/env.sh"
set +a

# CMD runs in the background so that a signal to this script is handled at
# once (bash runs a trap only after a foreground child exits). Its stdin goes
# through fd 3: a background job's stdin is /dev/null otherwise.
exec 3<&0
if [ -t 0 ]; then
	"$@" <&3 3<&- &
else
	own_group=1
	"$PY" -c '
import os, sys
os.setpgid(0, 0)
try:
    os.execvp(sys.argv[1], sys.argv[1:])
except OSError as e:
    sys.stderr.write("with-servers: %s: %s\n" % (sys.argv[1], e.strerror))
    sys.exit(127)
' "$@" <&3 3<&- &
fi
cmd_pid=$!
exec 3<&-
wait "$cmd_pid"
status=$?
# (A trapped signal interrupts wait; finish() then runs from the trap.)
stop_cmd 0
exit "$status"
