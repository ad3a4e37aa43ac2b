#!/bin/sh
# `tributary sync` stopped by SIGTERM/SIGINT mid-stream, while waiting
# for the token endpoint and while the notify command runs: exit 75 (77),
# committed, nothing lost or duplicated (see test_sync_stop.py).
set -e
: "${top_srcdir:=$(cd "$(dirname "$0")/../.." && pwd)}"
: "${top_builddir:=$top_srcdir}"
export top_srcdir top_builddir
exec "$top_srcdir/tests/harness/with-servers.sh" \
	"${PYTHON3:-python3}" "$top_srcdir/tests/integration/test_sync_stop.py"
