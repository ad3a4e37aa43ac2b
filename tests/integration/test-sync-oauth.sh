#!/bin/sh
# `tributary sync` of oauth2 accounts against the harness's remote Dovecot
# and the OAuth stand-in. The CLI runs as root in this pass.
set -e
: "${top_srcdir:=$(cd "$(dirname "$0")/../.." && pwd)}"
: "${top_builddir:=$top_srcdir}"
export top_srcdir top_builddir
exec "$top_srcdir/tests/harness/with-servers.sh" \
	"${PYTHON3:-python3}" "$top_srcdir/tests/integration/test_sync_oauth.py"
