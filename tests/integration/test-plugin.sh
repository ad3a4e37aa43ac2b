#!/bin/sh
# The LMTP plugin (exactly-once delivery) in the harness's local Dovecot,
# with Sieve (see test_plugin.py). Needs root.
set -e
: "${top_srcdir:=$(cd "$(dirname "$0")/../.." && pwd)}"
: "${top_builddir:=$top_srcdir}"
export top_srcdir top_builddir
exec "$top_srcdir/tests/harness/with-servers.sh" \
	"${PYTHON3:-python3}" "$top_srcdir/tests/integration/test_plugin.py"
