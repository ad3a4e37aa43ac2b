#!/bin/sh
# 1,000 generated messages (1 KB to 25 MB, ~200 MB, 8-bit, malformed
# MIME) in one `tributary sync` pass, byte for byte, Sieve filing and
# :copy (see test_sync_bulk.py).
set -e
: "${top_srcdir:=$(cd "$(dirname "$0")/../.." && pwd)}"
: "${top_builddir:=$top_srcdir}"
export top_srcdir top_builddir
exec "$top_srcdir/tests/harness/with-servers.sh" \
	"${PYTHON3:-python3}" "$top_srcdir/tests/integration/test_sync_bulk.py"
