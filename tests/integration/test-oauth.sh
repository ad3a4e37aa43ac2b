#!/bin/sh
# The OAuth engine (shared/oauth.c, shared/http.c) against the harness's
# OAuth stand-in over TLS, and a token it obtained logging in to the
# remote Dovecot; all started (and stopped by PID) by with-servers.sh.
set -e
: "${top_srcdir:=$(cd "$(dirname "$0")/../.." && pwd)}"
: "${top_builddir:=$top_srcdir}"
export top_srcdir top_builddir
exec "$top_srcdir/tests/harness/with-servers.sh" \
	"$top_builddir/tests/integration/test-oauth"
