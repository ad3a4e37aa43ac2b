#!/bin/sh
# Configure and build into a build directory (default: build/).
#   scripts/build.sh [BUILDDIR] [configure options...]
set -e
top=$(cd "$(dirname "$0")/.." && pwd)
builddir=${1:-$top/build}
[ $# -gt 0 ] && shift
[ -x "$top/configure" ] || "$top/autogen.sh" >/dev/null 2>&1
mkdir -p "$builddir"
cd "$builddir"
if [ ! -f Makefile ] || [ "$top/configure" -nt Makefile ]; then
	"$top/configure" --quiet "$@"
fi
make -j"$(nproc)" >/dev/null
echo "build: $builddir"
