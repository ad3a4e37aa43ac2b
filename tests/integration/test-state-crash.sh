#!/bin/sh
# test-state-crash.sh: the state survives a kill -9 inside any commit and
# a full disk, driven by state-crash-driver (see its header).
#
# 1. Full disk, in every build: a 256 KiB tmpfs mounted in a private temp
#    dir (root only: CI runs as root; anywhere else this fails and says
#    why), filled up; a commit fails with ENOSPC, leaves the old state
#    and no temp file; once space is freed the same process commits.
# 2. Crash points, in a build configured with --enable-crash-points (the
#    test is skipped, exit 77, without them): for every crash point of
#    commit and every batch, the driver is killed there
#    (TRIBUTARY_CRASH_AT), the state on disk must be exactly the old one
#    (killed before the rename) or the new one (after it), and running the
#    batches left must bring it to the last one: nothing torn, nothing
#    lost.
: "${top_srcdir:=$(cd "$(dirname "$0")/../.." && pwd)}"
: "${top_builddir:=$top_srcdir}"
driver="$top_builddir/tests/integration/state-crash-driver"
batches=6
points="index-append-mid index-append-mid:2 index-append-before-fsync
index-append-before-fsync:2 index-compact-mid index-compact-before-fsync
state-before-temp state-temp-mid state-temp-before-fsync state-before-rename
state-before-dir-fsync state-after-commit"

if [ ! -x "$driver" ]; then
	echo "test-state-crash: $driver is not built" >&2
	exit 99
fi
work=$(mktemp -d "${TMPDIR:-/tmp}/test-state-crash.XXXXXX") || exit 99
mnt="$work/mnt"
mounted=no
cleanup() {
	if [ "$mounted" = yes ]; then
		umount "$mnt" || umount -l "$mnt"
	fi
	rm -rf "$work"
}
trap cleanup EXIT
trap 'exit 130' INT TERM HUP
passed=0

fail() {
	echo "test-state-crash: FAIL: $*" >&2
	for f in "$work/out" "$work/err"; do
		[ -s "$f" ] && sed 's/^/  | /' "$f" >&2
	done
	echo "state_crash: $passed passed, 1 failed"
	exit 1
}

# check DIR WANT: the state in DIR is the one after batch WANT.
check() {
	got=$("$driver" check "$1" 2>"$work/err") || fail "$2: check failed"
	[ "$got" = "$3" ] ||
		fail "$2: the state is after batch $got, expected $3"
	[ ! -e "$1/crash/state.tmp" ] || fail "$2: temp file left"
}

# torn_tail DIR WHAT: some index file in DIR ends in a torn record.
torn_tail() {
	for f in "$1"/crash/index/*; do
		size=$(stat -c %s "$f") || fail "$2: stat $f"
		[ $((size % 20)) -ne 0 ] && return 0
	done
	fail "$2: no index file ends in a torn record"
}

# ---- 1. a full disk ----

mkdir "$mnt" || exit 99
if ! mount -t tmpfs -o size=256k,mode=0700 tmpfs "$mnt" 2>"$work/err"; then
	echo "test-state-crash: cannot mount a tmpfs for the full-disk" \
		"test: $(cat "$work/err"); it needs root (CI runs as root)" >&2
	exit 1
fi
mounted=yes
d="$mnt/state"
"$driver" apply "$d" 1 >"$work/out" 2>"$work/err" || fail "disk: batch 1"
"$driver" apply "$d" 2 >"$work/out" 2>"$work/err" || fail "disk: batch 2"
# Fill every byte left; dd stops at ENOSPC.
dd if=/dev/zero of="$mnt/fill" bs=4096 >/dev/null 2>&1
dd if=/dev/zero of="$mnt/fill2" bs=64 >/dev/null 2>&1
"$driver" apply "$d" 3 >"$work/out" 2>"$work/err"
rc=$?
[ $rc -eq 3 ] || fail "disk: a commit on a full disk exited $rc, not 3"
grep -q "No space left on device" "$work/err" ||
	fail "disk: the error does not say the disk is full"
grep -q "the previous state is kept" "$work/err" ||
	fail "disk: the error does not say the previous state is kept"
[ ! -e "$d/crash/state.tmp" ] || fail "disk: temp file left"
check "$d" "disk, after the failed commit" 2
passed=$((passed + 1))
rm -f "$mnt/fill2"
"$driver" apply-retry "$d" 3 "$mnt/fill" >"$work/out" 2>"$work/err" ||
	fail "disk: the commit after freeing space failed"
grep -q "No space left on device" "$work/err" ||
	fail "disk: the first commit of apply-retry did not hit ENOSPC"
grep -q "committed after a retry" "$work/out" ||
	fail "disk: apply-retry did not retry"
check "$d" "disk, after the retry" 3
passed=$((passed + 1))
umount "$mnt" || fail "cannot unmount $mnt"
mounted=no
echo "test-state-crash: full disk: ENOSPC refused cleanly, old state kept," \
	"later commit of the kept changes succeeded"

# ---- 2. crash points ----

"$driver" has-crash-points
case $? in
0) ;;
77)
	echo "test-state-crash: SKIP the crash-point tests: this build has" \
		"no crash points (configure with --enable-crash-points);" \
		"the full-disk test passed"
	echo "state_crash: $passed passed, 0 failed"
	exit 77
	;;
*) fail "state-crash-driver has-crash-points" ;;
esac

# The state after each batch, to start every run from.
mkdir -p "$work/snap/0"
b=1
while [ $b -le $batches ]; do
	cp -a "$work/snap/$((b - 1))" "$work/snap/$b"
	"$driver" apply "$work/snap/$b" $b >"$work/out" 2>"$work/err" ||
		fail "snapshot $b"
	b=$((b + 1))
done

for point in $points; do
	hits=0
	b=1
	while [ $b -le $batches ]; do
		what="$point, batch $b"
		rm -rf "$work/run"
		cp -a "$work/snap/$((b - 1))" "$work/run"
		TRIBUTARY_CRASH_AT=$point "$driver" apply "$work/run" $b \
			>"$work/out" 2>"$work/err"
		rc=$?
		if [ $rc -eq 137 ]; then
			hits=$((hits + 1))
			case $point in
			index-append-mid*) torn_tail "$work/run" "$what" ;;
			esac
			case $point in
			state-before-dir-fsync* | state-after-commit*)
				want=$b ;;
			*)
				want=$((b - 1)) ;;
			esac
		elif [ $rc -eq 0 ]; then
			want=$b # not reached in this batch
		else
			fail "$what: the driver exited $rc"
		fi
		check "$work/run" "$what" $want
		# Run again what was lost, then the rest: all of it lands.
		n=$((want + 1))
		while [ $n -le $batches ]; do
			"$driver" apply "$work/run" $n >"$work/out" \
				2>"$work/err" || fail "$what: re-running batch $n"
			n=$((n + 1))
		done
		check "$work/run" "$what, after recovery" $batches
		passed=$((passed + 1))
		b=$((b + 1))
	done
	[ $hits -gt 0 ] || fail "crash point $point was never reached"
	echo "test-state-crash: $point: killed in $hits of $batches batches," \
		"state old-or-new every time, nothing lost after recovery"
done
echo "state_crash: $passed passed, 0 failed"
