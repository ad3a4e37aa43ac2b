#!/bin/sh
# The main job on a self-contained sandbox: install the Debian packages,
# build, start a private "cloud" IMAP server (a real Dovecot with an OAuth
# 2.0 stand-in, on 127.0.0.0/8, in a temp dir) and a local Dovecot with
# the Tributary drop-in; let `tributary check` log in with XOAUTH2 and list
# the remote mailbox, `tributary accounts` show the local users' accounts,
# and `tributary sync` bring the remote mail into the local mailbox over
# LMTP, twice (the second run delivers nothing). Everything it starts is
# stopped by PID when it ends.
set -e
top=$(cd "$(dirname "$0")/.." && pwd)

demo() {
	token_file="$TRIB_TEST_DIR/demo-token"
	umask 077
	"${PYTHON3:-python3}" "$top/tests/harness/harness.py" mint \
		"$TRIB_TEST_DIR" --user "$TRIB_TEST_USER" > "$token_file"
	echo
	echo "== a cloud mailbox (Dovecot on $TRIB_TEST_HOST:$TRIB_TEST_IMAPS_PORT," \
		"OAuth 2.0 via $TRIB_TEST_OAUTH_URL)"
	echo "== tributary check --auth xoauth2 (token read from a file, never argv)"
	echo
	"$top/build/fetcher/tributary" check \
		--host "$TRIB_TEST_HOST" --port "$TRIB_TEST_IMAPS_PORT" \
		--ca-file "$TRIB_TEST_CA" --user "$TRIB_TEST_USER" \
		--auth xoauth2 --secret-file "$token_file"
	echo
	echo "== the same account over STARTTLS with OAUTHBEARER, as JSON"
	"$top/build/fetcher/tributary" check \
		--host "$TRIB_TEST_IMAP_STARTTLS_STRICT_HOST" \
		--port "$TRIB_TEST_IMAP_STARTTLS_STRICT_PORT" \
		--tls starttls --ca-file "$TRIB_TEST_CA" \
		--user "$TRIB_TEST_USER" --auth oauthbearer \
		--secret-file "$token_file" --json | head -8
	echo "  ..."
	echo
	echo "== the local Dovecot's users and their accounts, as the tributary"
	echo "== user sees them (doveconf + the tributary-userdb listener)"
	runuser -u tributary -- "$top/build/fetcher/tributary" accounts \
		-c "$TRIB_TEST_LOCAL_CONF" -A
	echo
	echo "== tributary sync: alice's remote INBOX into her local Dovecot over"
	echo "== LMTP (Sieve runs), each message behind a signed trace header"
	"$top/build/fetcher/tributary" init -c "$TRIB_TEST_LOCAL_CONF"
	"${PYTHON3:-python3}" "$top/tests/harness/harness.py" seed \
		"$TRIB_TEST_DIR" --user "$TRIB_TEST_USER" --mailbox INBOX \
		--count 200 >/dev/null
	"$top/build/fetcher/tributary" sync -c "$TRIB_TEST_LOCAL_CONF" \
		-u alice home || true
	echo "local maildir of alice now holds" \
		"$(find "$TRIB_TEST_DIR/local/home/alice/Maildir" -path '*/new/*' \
			-type f | wc -l) new messages"
	echo "== run again: nothing new, nothing duplicated"
	"$top/build/fetcher/tributary" sync -c "$TRIB_TEST_LOCAL_CONF" \
		-u alice home || true
	echo "== what tributary status says about alice's accounts"
	"$top/build/fetcher/tributary" status -c "$TRIB_TEST_LOCAL_CONF" \
		-u alice || true
	echo
	echo "== a server whose certificate has expired is refused before login"
	"$top/build/fetcher/tributary" check \
		--host "$TRIB_TEST_EXPIRED_HOST" --port "$TRIB_TEST_EXPIRED_PORT" \
		--ca-file "$TRIB_TEST_CA" --user "$TRIB_TEST_USER" \
		--auth xoauth2 --secret-file "$token_file" || true
}

if [ "${1:-}" = "--inside" ]; then
	demo
else
	"$top/scripts/install-deps.sh"
	"$top/scripts/build.sh" "$top/build"
	export PYTHON3="${PYTHON3:-python3}"
	# the harness loads the LMTP plugin from the build tree
	export top_builddir="$top/build"
	exec "$top/tests/harness/with-servers.sh" "$0" --inside
fi
