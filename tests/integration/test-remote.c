/* test-remote.c: the core's IMAP client against the real "remote"
 * Dovecot of the harness: TLS and STARTTLS, XOAUTH2, OAUTHBEARER and
 * PLAIN, certificate refusals, token refusals, the commands, streaming,
 * IDLE, cancellation, and `tributary check`. */

#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>

#include <cmocka.h>

#include "alloc.h"
#include "imap-commands.h"
#include "itest.h"

#include <event2/buffer.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/wait.h>
#include <time.h>

#define DEADLINE 30

/* ---- a session: one loop, one client, the last reply ---- */

struct session {
	struct trib_loop *loop;
	struct trib_imap_client *client;
	bool done;
	enum trib_imap_status status;
	enum trib_error_class error_class;
	char *error;
	char *code;
	unsigned int callbacks;
	/* events */
	unsigned int exists_events;
	uint32_t last_exists;
	bool disconnected;
};

static void reply_cb(const struct trib_imap_reply *reply, void *context)
{
	struct session *s = context;

	s->callbacks++;
	s->done = true;
	s->status = reply->status;
	s->error_class = reply->error_class;
	free(s->error);
	free(s->code);
	s->error = reply->error != NULL ? trib_strdup(reply->error) : NULL;
	s->code = reply->code != NULL ? trib_strdup(reply->code) : NULL;
}

static void event_cb(const struct trib_imap_event *event, void *context)
{
	struct session *s = context;

	if (event->type == TRIB_IMAP_EVENT_EXISTS) {
		s->exists_events++;
		s->last_exists = event->number;
	} else if (event->type == TRIB_IMAP_EVENT_DISCONNECTED) {
		s->disconnected = true;
	}
}

static void wait_reply(struct session *s)
{
	assert_true(itest_run_until(s->loop, &s->done, DEADLINE));
	s->done = false;
}

static struct session *session_new(enum trib_imap_tls_mode mode,
				   const char *host, unsigned int port)
{
	const struct itest_env *e = itest_env();
	struct trib_imap_client_settings set = {
		.host = host,
		.port = port,
		.tls_mode = mode,
		.ca_file = e->ca,
		.tls_verify = true,
		.connect_timeout_secs = 10,
		.command_timeout_secs = 20,
		.logger = &itest_logger,
		.trace = true,
	};
	struct session *s = trib_calloc(1, sizeof(*s));
	const char *error;

	s->loop = trib_loop_create(&error);
	assert_non_null(s->loop);
	s->client = trib_imap_client_create(s->loop, &set, &error);
	assert_non_null(s->client);
	trib_imap_client_set_event_handler(s->client, event_cb, s);
	return s;
}

static void session_free(struct session **_s)
{
	struct session *s = *_s;

	trib_imap_client_destroy(&s->client);
	trib_loop_destroy(&s->loop);
	free(s->error);
	free(s->code);
	free(s);
	*_s = NULL;
}

static struct session *session_connected(enum trib_imap_tls_mode mode,
					 unsigned int port)
{
	const struct itest_env *e = itest_env();
	/* STARTTLS tests use the strict listener (see itest.h) */
	struct session *s = session_new(mode,
					mode == TRIB_IMAP_TLS_STARTTLS
						? e->starttls_strict_host
						: e->host,
					port);

	trib_imap_client_connect(s->client, reply_cb, s);
	wait_reply(s);
	if (s->status != TRIB_IMAP_STATUS_OK)
		fail_msg("connect failed: %s", s->error);
	assert_true(trib_imap_client_is_tls(s->client));
	return s;
}

static void session_auth(struct session *s, const char *mech, const char *user,
			 const char *secret)
{
	trib_imap_client_authenticate(s->client, mech, user, secret, reply_cb,
				      s);
	wait_reply(s);
}

/* ---- login: every mechanism over both TLS modes ---- */

static void check_logged_in(struct session *s)
{
	if (s->status != TRIB_IMAP_STATUS_OK)
		fail_msg("login failed: %s", s->error);
	assert_true(trib_imap_client_is_authenticated(s->client));
	/* capabilities were refreshed after login */
	assert_true(trib_imap_client_has_capability(s->client, "IMAP4rev1"));
	assert_true(trib_imap_client_has_capability(s->client, "IDLE"));
	assert_true(trib_imap_client_has_capability(s->client, "CONDSTORE"));
	assert_false(trib_imap_client_has_capability(s->client, "STARTTLS"));
}

static void login_with(enum trib_imap_tls_mode mode, unsigned int port,
		       const char *mech)
{
	const struct itest_env *e = itest_env();
	struct session *s = session_connected(mode, port);
	char *token = NULL;

	if (strcasecmp(mech, "PLAIN") == 0) {
		session_auth(s, mech, e->user, e->app_password);
	} else {
		token = itest_mint(e->user, 3600);
		session_auth(s, mech, e->user, token);
	}
	check_logged_in(s);
	/* the secret never reaches the log */
	assert_false(
		itest_log_contains(token != NULL ? token : e->app_password));
	assert_true(itest_log_contains("<redacted>"));
	trib_imap_logout(s->client, reply_cb, s);
	wait_reply(s);
	assert_int_equal(s->status, TRIB_IMAP_STATUS_OK);
	free(token);
	session_free(&s);
}

static void test_xoauth2_tls(void **state)
{
	(void)state;
	login_with(TRIB_IMAP_TLS_IMPLICIT, itest_env()->imaps_port, "XOAUTH2");
}

static void test_oauthbearer_tls(void **state)
{
	(void)state;
	login_with(TRIB_IMAP_TLS_IMPLICIT, itest_env()->imaps_port,
		   "OAUTHBEARER");
}

static void test_plain_tls(void **state)
{
	(void)state;
	login_with(TRIB_IMAP_TLS_IMPLICIT, itest_env()->imaps_port, "PLAIN");
}

static void test_xoauth2_starttls(void **state)
{
	(void)state;
	login_with(TRIB_IMAP_TLS_STARTTLS, itest_env()->starttls_strict_port,
		   "XOAUTH2");
}

static void test_oauthbearer_starttls(void **state)
{
	(void)state;
	login_with(TRIB_IMAP_TLS_STARTTLS, itest_env()->starttls_strict_port,
		   "OAUTHBEARER");
}

static void test_plain_starttls(void **state)
{
	(void)state;
	login_with(TRIB_IMAP_TLS_STARTTLS, itest_env()->starttls_strict_port,
		   "PLAIN");
}

static void test_login_command(void **state)
{
	const struct itest_env *e = itest_env();
	struct session *s =
		session_connected(TRIB_IMAP_TLS_IMPLICIT, e->imaps_port);

	(void)state;
	trib_imap_client_login(s->client, e->user2, e->app_password2, reply_cb,
			       s);
	wait_reply(s);
	check_logged_in(s);
	assert_false(itest_log_contains(e->app_password2));
	session_free(&s);
}

/* ---- refused tokens and passwords ---- */

static void token_refused(void (*spoil)(const char *token), const char *mech)
{
	const struct itest_env *e = itest_env();
	struct session *s =
		session_connected(TRIB_IMAP_TLS_IMPLICIT, e->imaps_port);
	char *token = itest_mint(e->user, 3600);
	time_t start = time(NULL);

	spoil(token);
	session_auth(s, mech, e->user, token);
	assert_int_equal(s->status, TRIB_IMAP_STATUS_NO);
	assert_int_equal(s->error_class, TRIB_ERR_PERM);
	assert_non_null(s->error);
	if (strstr(s->error, "token rejected") == NULL)
		fail_msg("unexpected error: %s", s->error);
	assert_string_equal(s->code, "AUTHENTICATIONFAILED");
	assert_false(trib_imap_client_is_authenticated(s->client));
	/* fast negative auth in the harness: no multi-second stall */
	assert_true(time(NULL) - start < 5);
	free(token);
	session_free(&s);
}

static void test_expired_token_xoauth2(void **state)
{
	(void)state;
	token_refused(itest_expire, "XOAUTH2");
}

static void test_revoked_token_xoauth2(void **state)
{
	(void)state;
	token_refused(itest_revoke, "XOAUTH2");
}

static void test_revoked_token_oauthbearer(void **state)
{
	(void)state;
	token_refused(itest_revoke, "OAUTHBEARER");
}

static void test_wrong_password(void **state)
{
	const struct itest_env *e = itest_env();
	struct session *s =
		session_connected(TRIB_IMAP_TLS_IMPLICIT, e->imaps_port);

	(void)state;
	session_auth(s, "PLAIN", e->user, "not-the-password");
	assert_int_equal(s->status, TRIB_IMAP_STATUS_NO);
	assert_int_equal(s->error_class, TRIB_ERR_PERM);
	assert_non_null(strstr(s->error, "AUTHENTICATE PLAIN failed"));
	assert_null(strstr(s->error, "token rejected"));
	session_free(&s);
}

/* ---- certificates refused before any secret is sent ---- */

static void cert_refused(const char *host, unsigned int port,
			 const char *expected)
{
	const struct itest_env *e = itest_env();
	long before = itest_introspections();
	struct session *s = session_new(TRIB_IMAP_TLS_IMPLICIT, host, port);
	char *token = itest_mint(e->user, 3600);
	trib_imap_client_connect(s->client, reply_cb, s);
	wait_reply(s);
	assert_int_equal(s->status, TRIB_IMAP_STATUS_NONE);
	assert_int_equal(s->error_class, TRIB_ERR_PERM);
	if (strstr(s->error, expected) == NULL)
		fail_msg("expected '%s' in: %s", expected, s->error);
	assert_non_null(strstr(s->error, host));
	assert_true(s->disconnected);

	/* Asking to log in anyway is refused locally, later, once. */
	s->callbacks = 0;
	trib_imap_client_authenticate(s->client, "XOAUTH2", e->user, token,
				      reply_cb, s);
	assert_int_equal(s->callbacks, 0);
	wait_reply(s);
	assert_int_equal(s->callbacks, 1);
	assert_int_not_equal(s->status, TRIB_IMAP_STATUS_OK);
	/* The stand-in never saw the token: nothing was sent. */
	assert_int_equal(itest_introspections(), before);
	free(token);
	session_free(&s);
}

static void test_cert_wrong_host(void **state)
{
	(void)state;
	cert_refused(itest_env()->wronghost_host, itest_env()->wronghost_port,
		     "certificate verify failed");
}

static void test_cert_expired(void **state)
{
	(void)state;
	cert_refused(itest_env()->expired_host, itest_env()->expired_port,
		     "certificate has expired");
}

static void test_cert_unknown_ca(void **state)
{
	(void)state;
	cert_refused(itest_env()->unknownca_host, itest_env()->unknownca_port,
		     "unable to get local issuer certificate");
}

static void test_cert_wrong_host_reason(void **state)
{
	struct session *s =
		session_new(TRIB_IMAP_TLS_IMPLICIT, itest_env()->wronghost_host,
			    itest_env()->wronghost_port);

	(void)state;
	trib_imap_client_connect(s->client, reply_cb, s);
	wait_reply(s);
	if (strstr(s->error, "hostname mismatch") == NULL &&
	    strstr(s->error, "IP address mismatch") == NULL)
		fail_msg("expected a name mismatch: %s", s->error);
	session_free(&s);
}

/* ---- plaintext ---- */

static void test_plaintext_port_refused(void **state)
{
	const struct itest_env *e = itest_env();
	long before = itest_introspections();
	struct session *s = session_new(TRIB_IMAP_TLS_STARTTLS, e->plain_host,
					e->plain_port);

	(void)state;
	trib_imap_client_connect(s->client, reply_cb, s);
	wait_reply(s);
	assert_int_equal(s->error_class, TRIB_ERR_PERM);
	if (strstr(s->error, "does not offer STARTTLS") == NULL)
		fail_msg("unexpected error: %s", s->error);
	session_free(&s);

	/* Without TLS at all, the client connects but never logs in. */
	s = session_new(TRIB_IMAP_TLS_NONE, e->plain_host, e->plain_port);
	trib_imap_client_connect(s->client, reply_cb, s);
	wait_reply(s);
	assert_int_equal(s->status, TRIB_IMAP_STATUS_OK);
	assert_false(trib_imap_client_is_tls(s->client));
	session_auth(s, "PLAIN", e->user, e->app_password);
	assert_int_equal(s->error_class, TRIB_ERR_PERM);
	assert_non_null(strstr(s->error, "unencrypted"));
	trib_imap_client_login(s->client, e->user, e->app_password, reply_cb,
			       s);
	wait_reply(s);
	assert_int_equal(s->error_class, TRIB_ERR_PERM);
	assert_non_null(strstr(s->error, "unencrypted"));
	assert_false(itest_log_contains(e->app_password));
	assert_int_equal(itest_introspections(), before);
	session_free(&s);
}

/* ---- commands on a logged-in session ---- */

static struct session *session_logged_in(void)
{
	const struct itest_env *e = itest_env();
	struct session *s =
		session_connected(TRIB_IMAP_TLS_IMPLICIT, e->imaps_port);

	session_auth(s, "PLAIN", e->user, e->app_password);
	check_logged_in(s);
	return s;
}

struct list_result {
	struct session *s;
	unsigned int count;
	unsigned int inbox, archive_found, sent_flags;
};

static void list_cb(const struct trib_imap_reply *reply,
		    const struct trib_imap_list_entry *entries,
		    unsigned int count, void *context)
{
	struct list_result *r = context;

	r->count = count;
	for (unsigned int i = 0; i < count; i++) {
		if (strcmp(entries[i].name, "INBOX") == 0)
			r->inbox++;
		if (strcmp(entries[i].name, "Archive") == 0)
			r->archive_found++;
		if (strcmp(entries[i].name, "Sent") == 0)
			r->sent_flags = entries[i].flags;
	}
	reply_cb(reply, r->s);
}

static void test_list_special_use(void **state)
{
	struct session *s = session_logged_in();
	struct list_result r = { .s = s };

	(void)state;
	trib_imap_list(s->client, "*", list_cb, &r);
	wait_reply(s);
	assert_int_equal(s->status, TRIB_IMAP_STATUS_OK);
	assert_int_equal(r.inbox, 1);
	assert_int_equal(r.archive_found, 1);
	assert_true((r.sent_flags & TRIB_IMAP_LIST_SENT) != 0);
	assert_true(r.count >= 4);
	session_free(&s);
}

struct status_result {
	struct session *s;
	struct trib_imap_status_info info;
};

static void status_cb(const struct trib_imap_reply *reply,
		      const struct trib_imap_status_info *info, void *context)
{
	struct status_result *r = context;

	r->info = *info;
	reply_cb(reply, r->s);
}

struct select_result {
	struct session *s;
	struct trib_imap_mailbox_info info;
};

static void select_cb(const struct trib_imap_reply *reply,
		      const struct trib_imap_mailbox_info *info, void *context)
{
	struct select_result *r = context;

	r->info = *info;
	reply_cb(reply, r->s);
}

static void test_status_and_select(void **state)
{
	struct session *s = session_logged_in();
	struct status_result st = { .s = s };
	struct select_result sel = { .s = s };

	(void)state;
	trib_imap_status(s->client, "Archive", status_cb, &st);
	wait_reply(s);
	assert_int_equal(s->status, TRIB_IMAP_STATUS_OK);
	assert_true(st.info.has_messages && st.info.has_uidnext &&
		    st.info.has_uidvalidity && st.info.has_highestmodseq);
	assert_int_equal(st.info.messages, 2);
	assert_int_equal(st.info.uidnext, 3);

	trib_imap_select(s->client, "Archive", true, true, select_cb, &sel);
	wait_reply(s);
	assert_int_equal(s->status, TRIB_IMAP_STATUS_OK);
	assert_int_equal(sel.info.exists, 2);
	assert_int_equal(sel.info.uidvalidity, st.info.uidvalidity);
	assert_int_equal(sel.info.uidnext, 3);
	assert_true(sel.info.highestmodseq > 0);
	assert_true(sel.info.read_only);

	/* a folder that does not exist: NO, named in the error (Dovecot
	 * sends no response code here, so the class is "temporary") */
	trib_imap_select(s->client, "No Such Folder", false, false, select_cb,
			 &sel);
	wait_reply(s);
	assert_int_equal(s->status, TRIB_IMAP_STATUS_NO);
	assert_int_equal(s->error_class, TRIB_ERR_TEMP);
	assert_non_null(strstr(s->error, "No Such Folder"));

	/* a name that cannot be sent: refused locally, later, once */
	s->callbacks = 0;
	trib_imap_select(s->client, "bad\r\nname", false, false, select_cb,
			 &sel);
	assert_int_equal(s->callbacks, 0);
	wait_reply(s);
	assert_int_equal(s->callbacks, 1);
	assert_int_equal(s->error_class, TRIB_ERR_PERM);
	session_free(&s);
}

struct search_result {
	struct session *s;
	unsigned int count;
	uint32_t first, last;
};

static void search_cb(const struct trib_imap_reply *reply, const uint32_t *uids,
		      unsigned int count, void *context)
{
	struct search_result *r = context;

	r->count = count;
	if (count > 0) {
		r->first = uids[0];
		r->last = uids[count - 1];
	}
	reply_cb(reply, r->s);
}

/* A FETCH consumer that counts what it was streamed. */
struct fetch_result {
	struct session *s;
	unsigned int messages, literals;
	uint64_t sizes[64];
	uint32_t uids[64];
	uint64_t literal_bytes[64];
	uint64_t literal_declared[64];
	size_t max_chunk;
	unsigned int chunks;
	bool in_literal;
	bool starts_with_header;
};

static void fetch_msg(const struct trib_imap_fetch_msg *msg, void *context)
{
	struct fetch_result *r = context;

	if (r->messages < 64) {
		r->uids[r->messages] = msg->uid;
		r->sizes[r->messages] = msg->has_size ? msg->size : 0;
	}
	r->messages++;
}

static void fetch_lit_begin(const struct trib_imap_literal *lit, void *context)
{
	struct fetch_result *r = context;

	assert_false(r->in_literal);
	r->in_literal = true;
	if (r->literals < 64) {
		r->literal_declared[r->literals] = lit->size;
		r->literal_bytes[r->literals] = 0;
	}
}

static void fetch_lit_data(struct evbuffer *data, void *context)
{
	struct fetch_result *r = context;
	size_t len = evbuffer_get_length(data);
	char head[5] = "";

	assert_true(r->in_literal);
	if (r->literals < 64 && r->literal_bytes[r->literals] == 0 &&
	    len >= 4) {
		evbuffer_copyout(data, head, 4);
		if (strncmp(head, "From", 4) == 0 ||
		    strncmp(head, "Mess", 4) == 0 ||
		    strncmp(head, "Subj", 4) == 0 ||
		    strncmp(head, "Date", 4) == 0 ||
		    strncmp(head, "Retu", 4) == 0 ||
		    strncmp(head, "To: ", 4) == 0)
			r->starts_with_header = true;
	}
	if (r->literals < 64)
		r->literal_bytes[r->literals] += len;
	if (len > r->max_chunk)
		r->max_chunk = len;
	r->chunks++;
	evbuffer_drain(data, len);
}

static void fetch_lit_end(void *context)
{
	struct fetch_result *r = context;

	assert_true(r->in_literal);
	r->in_literal = false;
	r->literals++;
}

static void fetch_done(const struct trib_imap_reply *reply, void *context)
{
	struct fetch_result *r = context;

	reply_cb(reply, r->s);
}

static const struct trib_imap_fetch_handler fetch_handler = {
	.message = fetch_msg,
	.literal_begin = fetch_lit_begin,
	.literal_data = fetch_lit_data,
	.literal_end = fetch_lit_end,
	.done = fetch_done,
};

static void test_search_and_fetch(void **state)
{
	const struct itest_env *e = itest_env();
	struct session *s = session_logged_in();
	struct select_result sel = { .s = s };
	struct search_result sr = { .s = s };
	struct fetch_result *fr = trib_calloc(1, sizeof(*fr));

	(void)state;
	fr->s = s;
	trib_imap_select(s->client, "INBOX", true, true, select_cb, &sel);
	wait_reply(s);
	assert_int_equal(s->status, TRIB_IMAP_STATUS_OK);
	assert_true(sel.info.exists >= e->inbox_count);

	trib_imap_uid_search(s->client, "ALL", search_cb, &sr);
	wait_reply(s);
	assert_int_equal(s->status, TRIB_IMAP_STATUS_OK);
	assert_int_equal(sr.count, sel.info.exists);
	assert_int_equal(sr.first, 1);

	/* metadata and bodies in one pipelined pass, bodies streamed */
	trib_imap_uid_fetch(s->client, "1:3",
			    "UID FLAGS RFC822.SIZE INTERNALDATE BODY.PEEK[]",
			    &fetch_handler, fr);
	wait_reply(s);
	assert_int_equal(s->status, TRIB_IMAP_STATUS_OK);
	assert_int_equal(fr->messages, 3);
	assert_int_equal(fr->literals, 3);
	for (unsigned int i = 0; i < 3; i++) {
		assert_int_equal(fr->uids[i], i + 1);
		assert_true(fr->sizes[i] > 0);
		assert_int_equal(fr->literal_bytes[i], fr->sizes[i]);
		assert_int_equal(fr->literal_declared[i], fr->sizes[i]);
	}
	assert_true(fr->starts_with_header);

	/* UID FETCH n:* past the end still returns the last message: the
	 * caller must drop UIDs at or below its cursor (DESIGN.md). */
	memset(fr, 0, sizeof(*fr));
	fr->s = s;
	trib_imap_uid_fetch(s->client, "999:*", "UID RFC822.SIZE",
			    &fetch_handler, fr);
	wait_reply(s);
	assert_int_equal(s->status, TRIB_IMAP_STATUS_OK);
	assert_int_equal(fr->messages, 1);
	assert_int_equal(fr->uids[0], sr.last);
	free(fr);
	session_free(&s);
}

static void test_large_literal_streams(void **state)
{
	const struct itest_env *e = itest_env();
	struct session *s;
	struct select_result sel = { .s = NULL };
	struct fetch_result *fr = trib_calloc(1, sizeof(*fr));
	const size_t size = 8 * 1024 * 1024;
	char uidset[32];

	(void)state;
	assert_int_equal(itest_seed(e->user, "Big", 1, size), 0);
	s = session_logged_in();
	sel.s = s;
	fr->s = s;
	trib_imap_select(s->client, "Big", true, false, select_cb, &sel);
	wait_reply(s);
	assert_int_equal(s->status, TRIB_IMAP_STATUS_OK);
	snprintf(uidset, sizeof(uidset), "%u", sel.info.uidnext - 1);
	trib_imap_uid_fetch(s->client, uidset, "UID RFC822.SIZE BODY.PEEK[]",
			    &fetch_handler, fr);
	wait_reply(s);
	assert_int_equal(s->status, TRIB_IMAP_STATUS_OK);
	assert_int_equal(fr->literals, 1);
	assert_true(fr->literal_bytes[0] >= size);
	assert_int_equal(fr->literal_bytes[0], fr->sizes[0]);
	/* streamed in pieces, never handed over whole */
	assert_true(fr->chunks > 8);
	assert_true(fr->max_chunk < size / 4);
	free(fr);
	session_free(&s);
}

/* ---- IDLE sees new mail ---- */

static void test_idle_exists(void **state)
{
	const struct itest_env *e = itest_env();
	struct session *s = session_logged_in();
	struct select_result sel = { .s = s };
	struct trib_imap_idle *idle;
	unsigned int exists_before;

	(void)state;
	assert_int_equal(itest_seed(e->user, "Idle", 1, 500), 0);
	trib_imap_select(s->client, "Idle", false, false, select_cb, &sel);
	wait_reply(s);
	assert_int_equal(s->status, TRIB_IMAP_STATUS_OK);
	exists_before = sel.info.exists;
	s->exists_events = 0;

	idle = trib_imap_idle(s->client, reply_cb, s);
	/* let IDLE start, then deliver a message remotely */
	assert_false(itest_run_until(s->loop, &s->done, 1));
	assert_int_equal(itest_seed(e->user, "Idle", 2, 500), 0);
	for (int i = 0; i < 100 && s->last_exists < exists_before + 2; i++)
		(void)itest_run_until(s->loop, &s->done, 1);
	assert_true(s->exists_events > 0);
	assert_int_equal(s->last_exists, exists_before + 2);
	assert_false(s->done);

	trib_imap_idle_done(idle);
	wait_reply(s);
	assert_int_equal(s->status, TRIB_IMAP_STATUS_OK);
	trib_imap_noop(s->client, reply_cb, s);
	wait_reply(s);
	assert_int_equal(s->status, TRIB_IMAP_STATUS_OK);
	session_free(&s);
}

/* ---- every callback fires exactly once ---- */

struct counted {
	unsigned int calls;
	enum trib_error_class error_class;
};

static void counted_cb(const struct trib_imap_reply *reply, void *context)
{
	struct counted *c = context;

	c->calls++;
	c->error_class = reply->error_class;
}

static void test_cancel_on_destroy(void **state)
{
	struct session *s = session_logged_in();
	struct counted c[5];

	(void)state;
	memset(c, 0, sizeof(c));
	for (unsigned int i = 0; i < 5; i++)
		trib_imap_noop(s->client, counted_cb, &c[i]);
	/* Destroy with everything queued or in flight. */
	trib_imap_client_destroy(&s->client);
	assert_null(s->client);
	for (unsigned int i = 0; i < 5; i++) {
		assert_int_equal(c[i].calls, 1);
		assert_int_equal(c[i].error_class, TRIB_ERR_CANCELED);
	}
	session_free(&s);
}

static void test_logout_cancels_later_commands(void **state)
{
	struct session *s = session_logged_in();
	struct counted after = { 0, TRIB_OK };

	(void)state;
	trib_imap_logout(s->client, reply_cb, s);
	wait_reply(s);
	assert_int_equal(s->status, TRIB_IMAP_STATUS_OK);
	/* The server closes after LOGOUT: a command queued now ends
	 * canceled, once, and the disconnect is reported. */
	assert_true(itest_run_until(s->loop, &s->disconnected, DEADLINE));
	trib_imap_noop(s->client, counted_cb, &after);
	(void)itest_run_until(s->loop, &s->done, 1);
	assert_int_equal(after.calls, 1);
	assert_int_equal(after.error_class, TRIB_ERR_CANCELED);
	session_free(&s);
}

/* ---- `tributary check` ---- */

static int run_check(const char *args, char **output_r)
{
	const struct itest_env *e = itest_env();
	char *cmd, buf[4096];
	size_t len = 0, alloc = 0;
	char *out = NULL;
	FILE *p;
	int status;

	cmd = trib_strdup_printf("%s/fetcher/tributary check --ca-file '%s' "
				 "%s 2>&1",
				 e->builddir, e->ca, args);
	p = popen(cmd, "r");
	assert_non_null(p);
	while (fgets(buf, sizeof(buf), p) != NULL) {
		size_t n = strlen(buf);

		if (len + n + 1 > alloc) {
			alloc = (len + n + 1) * 2;
			out = trib_realloc(out, alloc);
		}
		memcpy(out + len, buf, n + 1);
		len += n;
	}
	status = pclose(p);
	free(cmd);
	*output_r = out != NULL ? out : trib_strdup("");
	return WIFEXITED(status) ? WEXITSTATUS(status) : -1;
}

static void test_cli_check(void **state)
{
	const struct itest_env *e = itest_env();
	char *token = itest_mint(e->user, 3600);
	char *secret_file = trib_strdup_printf("%s/check-token", e->dir);
	char *args, *out;
	FILE *f;
	int rc;

	(void)state;
	f = fopen(secret_file, "w");
	assert_non_null(f);
	fprintf(f, "%s\n", token);
	fclose(f);

	args = trib_strdup_printf("--host %s --port %u --user %s --auth "
				  "xoauth2 --secret-file %s",
				  e->host, e->imaps_port, e->user, secret_file);
	rc = run_check(args, &out);
	if (rc != 0)
		fail_msg("check failed (%d): %s", rc, out);
	assert_non_null(strstr(out, "certificate verified"));
	assert_non_null(strstr(out, "Logged in as"));
	assert_non_null(strstr(out, "INBOX"));
	assert_non_null(strstr(out, "\\Sent"));
	assert_null(strstr(out, token));
	free(out);
	free(args);

	/* JSON, over STARTTLS */
	args = trib_strdup_printf("--host %s --port %u --tls starttls --user "
				  "%s --auth oauthbearer --secret-file %s "
				  "--json",
				  e->starttls_strict_host,
				  e->starttls_strict_port, e->user,
				  secret_file);
	rc = run_check(args, &out);
	if (rc != 0)
		fail_msg("check --json failed (%d): %s", rc, out);
	assert_non_null(strstr(out, "\"ok\": true"));
	assert_non_null(strstr(out, "\"name\": \"Archive\""));
	free(out);
	free(args);

	/* a refused certificate: exit 77, one clear line */
	args = trib_strdup_printf("--host %s --port %u --user %s --auth "
				  "xoauth2 --secret-file %s",
				  e->expired_host, e->expired_port, e->user,
				  secret_file);
	rc = run_check(args, &out);
	assert_int_equal(rc, 77);
	assert_non_null(strstr(out, "certificate has expired"));
	assert_null(strstr(out, token));
	free(out);
	free(args);

	/* a revoked token: exit 77, "token rejected" */
	itest_revoke(token);
	args = trib_strdup_printf("--host %s --port %u --user %s --auth "
				  "xoauth2 --secret-file %s",
				  e->host, e->imaps_port, e->user, secret_file);
	rc = run_check(args, &out);
	assert_int_equal(rc, 77);
	assert_non_null(strstr(out, "token rejected"));
	free(out);
	free(args);

	/* usage errors: exit 64 */
	rc = run_check("--host", &out);
	assert_int_equal(rc, 64);
	free(out);
	remove(secret_file);
	free(secret_file);
	free(token);
}

static int teardown_logs(void **state)
{
	(void)state;
	itest_log_clear();
	return 0;
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test_teardown(test_xoauth2_tls, teardown_logs),
		cmocka_unit_test_teardown(test_oauthbearer_tls, teardown_logs),
		cmocka_unit_test_teardown(test_plain_tls, teardown_logs),
		cmocka_unit_test_teardown(test_xoauth2_starttls, teardown_logs),
		cmocka_unit_test_teardown(test_oauthbearer_starttls,
					  teardown_logs),
		cmocka_unit_test_teardown(test_plain_starttls, teardown_logs),
		cmocka_unit_test_teardown(test_login_command, teardown_logs),
		cmocka_unit_test_teardown(test_expired_token_xoauth2,
					  teardown_logs),
		cmocka_unit_test_teardown(test_revoked_token_xoauth2,
					  teardown_logs),
		cmocka_unit_test_teardown(test_revoked_token_oauthbearer,
					  teardown_logs),
		cmocka_unit_test_teardown(test_wrong_password, teardown_logs),
		cmocka_unit_test_teardown(test_cert_wrong_host, teardown_logs),
		cmocka_unit_test_teardown(test_cert_wrong_host_reason,
					  teardown_logs),
		cmocka_unit_test_teardown(test_cert_expired, teardown_logs),
		cmocka_unit_test_teardown(test_cert_unknown_ca, teardown_logs),
		cmocka_unit_test_teardown(test_plaintext_port_refused,
					  teardown_logs),
		cmocka_unit_test_teardown(test_list_special_use, teardown_logs),
		cmocka_unit_test_teardown(test_status_and_select,
					  teardown_logs),
		cmocka_unit_test_teardown(test_search_and_fetch, teardown_logs),
		cmocka_unit_test_teardown(test_large_literal_streams,
					  teardown_logs),
		cmocka_unit_test_teardown(test_idle_exists, teardown_logs),
		cmocka_unit_test_teardown(test_cancel_on_destroy,
					  teardown_logs),
		cmocka_unit_test_teardown(test_logout_cancels_later_commands,
					  teardown_logs),
		cmocka_unit_test_teardown(test_cli_check, teardown_logs),
	};

	itest_env();
	return cmocka_run_group_tests(tests, NULL, NULL);
}
