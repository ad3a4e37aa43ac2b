#!/bin/sh
# The LMTP plugin exports only what Dovecot's module loader looks up
# (init, deinit, version, binary dependency): the core slice inside it is
# hidden, so nothing of ours can clash with libdovecot's symbols or
# another plugin's. And it links no libevent, libcurl, json-c or libssl
# (DESIGN.md item 8): only libcrypto and libc.
so="${top_builddir:-.}/plugin/.libs/lib95_tributary_lmtp_plugin.so"
if [ ! -f "$so" ]; then
	echo "check-plugin-symbols: $so not built" >&2
	exit 1
fi
want="tributary_lmtp_plugin_binary_dependency
tributary_lmtp_plugin_deinit
tributary_lmtp_plugin_init
tributary_lmtp_plugin_version"
got=$(nm -D --defined-only "$so" | awk 'NF == 3 { print $3 }' | sort -u)
status=0
if [ "$got" != "$want" ]; then
	echo "check-plugin-symbols: $so exports:" >&2
	echo "$got" >&2
	echo "check-plugin-symbols: expected exactly:" >&2
	echo "$want" >&2
	status=1
fi
bad=$(objdump -p "$so" | awk '$1 == "NEEDED" { print $2 }' |
	grep -E '^lib(event|curl|json-c|ssl)[.-]')
if [ -n "$bad" ]; then
	echo "check-plugin-symbols: $so needs $bad" >&2
	status=1
fi
[ $status -eq 0 ] && echo "check-plugin-symbols: 4 symbols exported, no libevent/libcurl/json-c/libssl"
exit $status
