#!/bin/sh
# Everything CI checks, from a fresh clone on a fresh Debian 12:
# packages, a -Werror build, make lint, make check (unit + integration
# against real Dovecot), the ASan/UBSan build's make check, valgrind over
# the unit tests (leaks are errors) and a 60 s fuzz run over the parsers.
set -e
top=$(cd "$(dirname "$0")/.." && pwd)
cd "$top"
step() { printf '\n==== %s ====\n' "$*"; }

step "Debian packages"
"$top/scripts/install-deps.sh"

step "build (-Werror, with crash points for the crash tests)"
rm -f "$top/configure"
"$top/autogen.sh" >/dev/null 2>&1
"$top/scripts/build.sh" "$top/build" --enable-werror --enable-crash-points

step "make lint"
make -C "$top/build" lint

# Sum the passed/failed counts of a build's test logs: cmocka's
# "[  PASSED  ] N test(s)." lines and the Python tests' "name: N passed,
# M failed" lines.
count() {
	cat "$1"/tests/unit/*.log "$1"/tests/integration/*.log 2>/dev/null |
		awk -v what="$2" '
			what == "PASSED" && /^\[  PASSED  \] [0-9]+ test/ { n += $4 }
			what == "FAILED" && /^\[  FAILED  \] [0-9]+ test/ { n += $4 }
			/^[a-z_]+: [0-9]+ passed, [0-9]+ failed$/ {
				n += (what == "PASSED") ? $2 : $4
			}
			END { print n + 0 }'
}

step "make check"
make -C "$top/build" check || { cat "$top"/build/tests/test-suite.log; exit 1; }

step "valgrind over the unit tests"
make -C "$top/build" check-valgrind

step "make check with ASan + UBSan"
"$top/scripts/build.sh" "$top/build-asan" --enable-werror --enable-sanitizers
ASAN_OPTIONS=detect_leaks=1:abort_on_error=1 \
UBSAN_OPTIONS=print_stacktrace=1:halt_on_error=1 \
	make -C "$top/build-asan" check ||
	{ cat "$top"/build-asan/tests/test-suite.log; exit 1; }

step "the demo (README's first command) on this build"
demo_out=$(PYTHON3="${PYTHON3:-python3}" top_builddir="$top/build" \
	"$top/tests/harness/with-servers.sh" "$top/scripts/demo.sh" --inside 2>&1) ||
	{ echo "$demo_out"; exit 1; }
for want in "Logged in as alice@example.com (xoauth2)" \
	"alice/home: 0 new, 0 delivered, 0 rejected, 0 deferred" \
	"alice/home  ok  last pass" "certificate has expired"; do
	case "$demo_out" in
	*"$want"*) ;;
	*) echo "$demo_out"; echo "demo: no '$want' in its output"; exit 1 ;;
	esac
done
echo "demo: ok"

step "fuzz the parsers (${FUZZ_SECONDS:-60} s in all)"
make -C "$top/build" fuzz FUZZ_SECONDS="${FUZZ_SECONDS:-60}"

step "all tests passed"
echo "make check: $(count "$top/build" PASSED) passed, ASan+UBSan make check: $(count "$top/build-asan" PASSED) passed"
echo "tests: $(( $(count "$top/build" PASSED) + $(count "$top/build-asan" PASSED) )) passed, $(( $(count "$top/build" FAILED) + $(count "$top/build-asan" FAILED) )) failed"
