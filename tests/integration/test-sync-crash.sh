#!/bin/sh
# kill -9 of `tributary sync` at every crash point, then a re-run (see
# test_sync_crash.py). Skipped (77) without --enable-crash-points.
set -e
: "${top_srcdir:=$(cd "$(dirname "$0")/../.." && pwd)}"
: "${top_builddir:=$top_srcdir}"
export top_srcdir top_builddir
exec "$top_srcdir/tests/harness/with-servers.sh" \
	"${PYTHON3:-python3}" "$top_srcdir/tests/integration/test_sync_crash.py"
