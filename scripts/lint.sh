#!/bin/sh
# make lint: ban the unsafe C calls; check formatting with the checked-in
# .clang-format when clang-format is installed.
top=${1:-.}
cd "$top" || exit 1
status=0
files=$(git ls-files '*.c' '*.h' 2>/dev/null || find shared fetcher plugin sieve-ext tests bench -name '*.[ch]' 2>/dev/null)
banned='(^|[^A-Za-z0-9_])(sprintf|vsprintf|strcpy|strcat|strtok|gets)[[:space:]]*\('
if grep -nE "$banned" $files; then
	echo "lint: banned call above (use snprintf, memcpy with a length, strtok_r...)" >&2
	status=1
fi
if command -v clang-format >/dev/null 2>&1; then
	for f in $files; do
		if ! clang-format --style=file --dry-run --Werror "$f" >/dev/null 2>&1; then
			echo "lint: $f is not formatted (clang-format -i $f)" >&2
			status=1
		fi
	done
fi
[ $status -eq 0 ] && echo "lint: ok ($(echo $files | wc -w) files)"
exit $status
