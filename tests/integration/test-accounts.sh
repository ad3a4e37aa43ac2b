#!/bin/sh
# Accounts from Dovecot's settings, against the harness's local Dovecot
# (with the shipped drop-in included), the CLI running as `tributary`.
set -e
: "${top_srcdir:=$(cd "$(dirname "$0")/../.." && pwd)}"
: "${top_builddir:=$top_srcdir}"
export top_srcdir top_builddir
exec "$top_srcdir/tests/harness/with-servers.sh" \
	"${PYTHON3:-python3}" "$top_srcdir/tests/integration/test_accounts.py"
