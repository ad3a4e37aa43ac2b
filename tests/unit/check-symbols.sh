#!/bin/sh
# Every global symbol the core defines starts with trib_: the plugins will
# be loaded into Dovecot processes, and libdovecot already exports
# imap_parser_*, oauth2_*, dsasl_* and more.
lib="${top_builddir:-.}/shared/.libs/libtributary.a"
if [ ! -f "$lib" ]; then
	echo "check-symbols: $lib not built" >&2
	exit 1
fi
bad=$(nm -g --defined-only "$lib" | awk 'NF == 3 { print $3 }' |
	grep -v '^trib_' | sort -u)
total=$(nm -g --defined-only "$lib" | awk 'NF == 3' | wc -l)
if [ -n "$bad" ]; then
	echo "check-symbols: global symbols without the trib_ prefix:" >&2
	echo "$bad" >&2
	echo "1..1"
	echo "not ok 1 - $total global symbols, some unprefixed"
	exit 1
fi
echo "check-symbols: $total global symbols, all trib_*"
