#!/bin/sh
# Integration tests of the LMTP client against the real local Dovecot's
# LMTP (UNIX socket and TCP), started (and stopped by PID) by
# with-servers.sh.
set -e
: "${top_srcdir:=$(cd "$(dirname "$0")/../.." && pwd)}"
: "${top_builddir:=$top_srcdir}"
export top_srcdir top_builddir
exec "$top_srcdir/tests/harness/with-servers.sh" \
	"$top_builddir/tests/integration/test-lmtp"
