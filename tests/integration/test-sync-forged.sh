#!/bin/sh
# Remote messages topped by forged X-Tributary-Trace headers: each
# delivered once, byte for byte, under Tributary's own header, with and
# without the LMTP plugin (see test_sync_forged.py).
set -e
: "${top_srcdir:=$(cd "$(dirname "$0")/../.." && pwd)}"
: "${top_builddir:=$top_srcdir}"
export top_srcdir top_builddir
exec "$top_srcdir/tests/harness/with-servers.sh" \
	"${PYTHON3:-python3}" "$top_srcdir/tests/integration/test_sync_forged.py"
