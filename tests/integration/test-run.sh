#!/bin/sh
# `tributary run`, the daemon, against the harness's remote and local
# Dovecots. It runs as root in this pass.
set -e
: "${top_srcdir:=$(cd "$(dirname "$0")/../.." && pwd)}"
: "${top_builddir:=$top_srcdir}"
export top_srcdir top_builddir
exec "$top_srcdir/tests/harness/with-servers.sh" \
	"${PYTHON3:-python3}" "$top_srcdir/tests/integration/test_run.py"
