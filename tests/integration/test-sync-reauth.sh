#!/bin/sh
# Reauthorization incidents of `tributary sync` (the notify command, the
# notice message) against the harness's remote Dovecot, the OAuth
# stand-in and the local Dovecot's LMTP. The CLI runs as root in this
# pass.
set -e
: "${top_srcdir:=$(cd "$(dirname "$0")/../.." && pwd)}"
: "${top_builddir:=$top_srcdir}"
export top_srcdir top_builddir
exec "$top_srcdir/tests/harness/with-servers.sh" \
	"${PYTHON3:-python3}" "$top_srcdir/tests/integration/test_sync_reauth.py"
