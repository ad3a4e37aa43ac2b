/* test-imap-client.c: the IMAP client's session and queue logic against a
 * scripted fake server, for the faults a real server won't produce: a
 * malformed response, a connection dropped mid-literal, an unknown tag, a
 * BYE, a THROTTLED reply, a PREAUTH in clear. The fake server speaks
 * plain TCP on 127.0.0.1 (TRIB_IMAP_TLS_NONE: these tests never log in;
 * TLS and login are tested against the real Dovecot). */

#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>

#include <cmocka.h>

#include "alloc.h"
#include "fake-peer.h"
#include "imap-commands.h"
#include "loop.h"

#include <arpa/inet.h>
#include <event2/buffer.h>
#include <event2/event.h>
#include <netinet/in.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

/* ---- the scripted server ---- */

/* The script (fake-peer.h) sees a client line after its tag; a step's
 * send has every "%T" replaced by that tag. The fake serves one
 * connection. */
struct fake {
	struct fake_peer *peer;
	struct fake_peer_conn *conn;
	struct fake_peer_script script;
};

static void fake_send(struct fake *f, const char *text, const char *tag)
{
	const char *p;

	while ((p = strstr(text, "%T")) != NULL) {
		fake_peer_conn_write(f->conn, text, (size_t)(p - text));
		fake_peer_conn_send(f->conn, tag);
		text = p + 2;
	}
	fake_peer_conn_send(f->conn, text);
}

static void fake_run_steps(struct fake *f, const char *tag, const char *rest)
{
	const struct fake_peer_step *st;

	while ((st = fake_peer_script_next(&f->script, f->conn, &rest)) != NULL)
		fake_send(f, st->send, tag);
}

static void fake_input(struct fake_peer_conn *conn, void *context)
{
	struct fake *f = context;
	char *line;
	size_t len;

	while (fake_peer_conn_is_open(conn) &&
	       (line = evbuffer_readln(fake_peer_conn_input(conn), &len,
				       EVBUFFER_EOL_CRLF_STRICT)) != NULL) {
		char tag[32] = "";
		const char *rest = line;
		const char *sp = strchr(line, ' ');

		fake_peer_transcript_add(f->peer, line);
		if (sp != NULL && (size_t)(sp - line) < sizeof(tag)) {
			memcpy(tag, line, (size_t)(sp - line));
			rest = sp + 1;
		}
		fake_run_steps(f, tag, rest);
		free(line);
	}
}

static void fake_accepted(struct fake_peer_conn *conn, void *context)
{
	struct fake *f = context;

	assert_null(f->conn); /* the client connects once */
	f->conn = conn;
	fake_run_steps(f, "*", NULL);
}

static const struct fake_peer_callbacks fake_callbacks = {
	.accepted = fake_accepted,
	.input = fake_input,
};

static struct fake *fake_new(struct trib_loop *loop,
			     const struct fake_peer_step *script,
			     unsigned int count)
{
	struct fake *f = trib_calloc(1, sizeof(*f));

	f->script.steps = script;
	f->script.count = count;
	f->peer = fake_peer_create(loop, NULL, &fake_callbacks, f);
	return f;
}

static void fake_free(struct fake **f)
{
	fake_peer_destroy(&(*f)->peer);
	free(*f);
	*f = NULL;
}

/* ---- the client side ---- */

struct result {
	unsigned int calls;
	enum trib_imap_status status;
	enum trib_error_class error_class;
	char error[512];
};

struct fixture {
	struct trib_loop *loop;
	struct fake *fake;
	struct trib_imap_client *client;
	struct result connect;
	unsigned int events[6];
	char bye[128], alert[128];
};

static void record(struct result *r, const struct trib_imap_reply *reply)
{
	r->calls++;
	r->status = reply->status;
	r->error_class = reply->error_class;
	snprintf(r->error, sizeof(r->error), "%s",
		 reply->error != NULL ? reply->error : "");
}

static void result_cb(const struct trib_imap_reply *reply, void *context)
{
	record(context, reply);
}

static void event_cb(const struct trib_imap_event *event, void *context)
{
	struct fixture *fx = context;

	fx->events[event->type]++;
	if (event->type == TRIB_IMAP_EVENT_BYE)
		snprintf(fx->bye, sizeof(fx->bye), "%s", event->text);
	if (event->type == TRIB_IMAP_EVENT_ALERT)
		snprintf(fx->alert, sizeof(fx->alert), "%s", event->text);
}

static void run_loop(struct fixture *fx, unsigned int ms)
{
	struct timeval tv = { 0, (suseconds_t)ms * 1000 };

	event_base_loopexit(trib_loop_base(fx->loop), &tv);
	event_base_dispatch(trib_loop_base(fx->loop));
}

static struct fixture *fixture_new(const struct fake_peer_step *script,
				   unsigned int count)
{
	struct fixture *fx = trib_calloc(1, sizeof(*fx));
	struct trib_imap_client_settings set = {
		.host = "127.0.0.1",
		.tls_mode = TRIB_IMAP_TLS_NONE,
		.command_timeout_secs = 5,
	};
	const char *error;

	fx->loop = trib_loop_create(&error);
	assert_non_null(fx->loop);
	fx->fake = fake_new(fx->loop, script, count);
	set.port = fake_peer_port(fx->fake->peer);
	fx->client = trib_imap_client_create(fx->loop, &set, &error);
	assert_non_null(fx->client);
	trib_imap_client_set_event_handler(fx->client, event_cb, fx);
	trib_imap_client_connect(fx->client, result_cb, &fx->connect);
	run_loop(fx, 200);
	return fx;
}

static void fixture_free(struct fixture **fx)
{
	trib_imap_client_destroy(&(*fx)->client);
	fake_free(&(*fx)->fake);
	trib_loop_destroy(&(*fx)->loop);
	free(*fx);
	*fx = NULL;
}

#define GREETING "* OK [CAPABILITY IMAP4rev1 IDLE LITERAL+] ready\r\n"

/* ---- tests ---- */

static void test_greeting_and_noop(void **state)
{
	static const struct fake_peer_step script[] = {
		{ NULL, GREETING },
		{ "NOOP", "* 4 EXISTS\r\n* 2 EXPUNGE\r\n"
			  "* OK [ALERT] maintenance at 5\r\n"
			  "* NO [THROTTLED] easy\r\n"
			  "%T OK done\r\n" },
	};
	struct fixture *fx = fixture_new(script, 2);
	struct result noop = { 0 };

	(void)state;
	assert_int_equal(fx->connect.calls, 1);
	assert_int_equal(fx->connect.status, TRIB_IMAP_STATUS_OK);
	assert_true(trib_imap_client_has_capability(fx->client, "idle"));
	trib_imap_noop(fx->client, result_cb, &noop);
	assert_int_equal(noop.calls, 0); /* never inside the call */
	run_loop(fx, 200);
	assert_int_equal(noop.calls, 1);
	assert_int_equal(noop.status, TRIB_IMAP_STATUS_OK);
	assert_int_equal(fx->events[TRIB_IMAP_EVENT_EXISTS], 1);
	assert_int_equal(fx->events[TRIB_IMAP_EVENT_EXPUNGE], 1);
	assert_int_equal(fx->events[TRIB_IMAP_EVENT_ALERT], 1);
	assert_int_equal(fx->events[TRIB_IMAP_EVENT_THROTTLED], 1);
	assert_string_equal(fx->alert, "maintenance at 5");
	assert_string_equal(fake_peer_transcript(fx->fake->peer), "t1 NOOP|");
	fixture_free(&fx);
}

static void test_capability_asked_when_not_in_greeting(void **state)
{
	static const struct fake_peer_step script[] = {
		{ NULL, "* OK hello\r\n" },
		{ "CAPABILITY", "* CAPABILITY IMAP4rev1 AUTH=PLAIN\r\n"
				"%T OK\r\n" },
	};
	struct fixture *fx = fixture_new(script, 2);

	(void)state;
	assert_int_equal(fx->connect.status, TRIB_IMAP_STATUS_OK);
	assert_true(trib_imap_client_has_capability(fx->client, "AUTH=PLAIN"));
	assert_string_equal(fake_peer_transcript(fx->fake->peer),
			    "t1 CAPABILITY|");
	fixture_free(&fx);
}

static void test_malformed_response_drops_connection(void **state)
{
	static const struct fake_peer_step script[] = {
		{ NULL, GREETING },
		{ "NOOP", "* 3 FETCH (UID {99999999999999999999}\r\n" },
	};
	struct fixture *fx = fixture_new(script, 2);
	struct result noop = { 0 };

	(void)state;
	trib_imap_noop(fx->client, result_cb, &noop);
	run_loop(fx, 200);
	assert_int_equal(noop.calls, 1);
	assert_int_equal(noop.error_class, TRIB_ERR_CANCELED);
	assert_non_null(strstr(noop.error, "malformed response"));
	assert_int_equal(fx->events[TRIB_IMAP_EVENT_DISCONNECTED], 1);
	fixture_free(&fx);
}

struct fetch_seen {
	unsigned int messages, begun, ended;
	size_t bytes;
	struct result done;
};

static void seen_msg(const struct trib_imap_fetch_msg *msg, void *context)
{
	struct fetch_seen *s = context;

	(void)msg;
	s->messages++;
}

static void seen_begin(const struct trib_imap_literal *lit, void *context)
{
	struct fetch_seen *s = context;

	(void)lit;
	s->begun++;
}

static void seen_data(struct evbuffer *data, void *context)
{
	struct fetch_seen *s = context;

	s->bytes += evbuffer_get_length(data);
	evbuffer_drain(data, evbuffer_get_length(data));
}

static void seen_end(void *context)
{
	struct fetch_seen *s = context;

	s->ended++;
}

static void seen_done(const struct trib_imap_reply *reply, void *context)
{
	struct fetch_seen *s = context;

	record(&s->done, reply);
}

static const struct trib_imap_fetch_handler seen_handler = {
	.message = seen_msg,
	.literal_begin = seen_begin,
	.literal_data = seen_data,
	.literal_end = seen_end,
	.done = seen_done,
};

static void test_drop_mid_literal(void **state)
{
	static const struct fake_peer_step script[] = {
		{ NULL, GREETING },
		{ "UID FETCH", "* 1 FETCH (UID 7 BODY[] {100}\r\n"
			       "From: a@example.com\r\n\r\nonly part" },
		{ NULL, FAKE_PEER_CLOSE },
	};
	struct fixture *fx = fixture_new(script, 3);
	struct fetch_seen seen = { 0 };

	(void)state;
	trib_imap_uid_fetch(fx->client, "7", "UID BODY.PEEK[]", &seen_handler,
			    &seen);
	run_loop(fx, 300);
	/* the body began, never completed: no message reported, the
	 * command canceled once */
	assert_int_equal(seen.begun, 1);
	assert_int_equal(seen.ended, 0);
	assert_int_equal(seen.messages, 0);
	assert_true(seen.bytes > 0 && seen.bytes < 100);
	assert_int_equal(seen.done.calls, 1);
	assert_int_equal(seen.done.error_class, TRIB_ERR_CANCELED);
	assert_non_null(strstr(seen.done.error, "connection closed"));
	fixture_free(&fx);
}

static void test_literal_streamed_and_message_reported(void **state)
{
	static const struct fake_peer_step script[] = {
		{ NULL, GREETING },
		{ "UID FETCH",
		  "* 1 FETCH (UID 7 RFC822.SIZE 10 BODY[] {10}\r\n0123456789 "
		  "FLAGS (\\Seen))\r\n* 2 FETCH (FLAGS (\\Seen))\r\n"
		  "%T OK done\r\n" },
	};
	struct fixture *fx = fixture_new(script, 2);
	struct fetch_seen seen = { 0 };

	(void)state;
	trib_imap_uid_fetch(fx->client, "7", "UID BODY.PEEK[]", &seen_handler,
			    &seen);
	run_loop(fx, 200);
	assert_int_equal(seen.begun, 1);
	assert_int_equal(seen.ended, 1);
	assert_int_equal(seen.bytes, 10);
	/* the FETCH without UID is unsolicited, not ours */
	assert_int_equal(seen.messages, 1);
	assert_int_equal(seen.done.status, TRIB_IMAP_STATUS_OK);
	fixture_free(&fx);
}

static void test_unknown_tag(void **state)
{
	static const struct fake_peer_step script[] = {
		{ NULL, GREETING },
		{ "NOOP", "zz9 OK what\r\n" },
	};
	struct fixture *fx = fixture_new(script, 2);
	struct result noop = { 0 };

	(void)state;
	trib_imap_noop(fx->client, result_cb, &noop);
	run_loop(fx, 200);
	assert_int_equal(noop.calls, 1);
	assert_int_equal(noop.error_class, TRIB_ERR_CANCELED);
	assert_non_null(strstr(noop.error, "unknown tag"));
	fixture_free(&fx);
}

static void test_bye_then_close(void **state)
{
	static const struct fake_peer_step script[] = {
		{ NULL, GREETING },
		{ "NOOP",
		  "* BYE Session invalidated - AccessTokenExpired\r\n" },
		{ NULL, FAKE_PEER_CLOSE },
	};
	struct fixture *fx = fixture_new(script, 3);
	struct result noop = { 0 }, later = { 0 };

	(void)state;
	trib_imap_noop(fx->client, result_cb, &noop);
	run_loop(fx, 200);
	assert_int_equal(fx->events[TRIB_IMAP_EVENT_BYE], 1);
	assert_string_equal(fx->bye,
			    "Session invalidated - AccessTokenExpired");
	assert_int_equal(noop.calls, 1);
	assert_int_equal(noop.error_class, TRIB_ERR_CANCELED);
	assert_non_null(strstr(noop.error, "AccessTokenExpired"));
	/* after the end, new commands are canceled, later, once */
	trib_imap_noop(fx->client, result_cb, &later);
	assert_int_equal(later.calls, 0);
	run_loop(fx, 50);
	assert_int_equal(later.calls, 1);
	assert_int_equal(later.error_class, TRIB_ERR_CANCELED);
	fixture_free(&fx);
}

static void test_throttled_is_wait(void **state)
{
	static const struct fake_peer_step script[] = {
		{ NULL, GREETING },
		{ "NOOP", "%T NO [THROTTLED] slow down\r\n" },
		{ "NOOP", "%T NO [UNAVAILABLE] try later\r\n" },
		{ "NOOP", "%T BAD what\r\n" },
	};
	struct fixture *fx = fixture_new(script, 4);
	struct result r[3];

	(void)state;
	memset(r, 0, sizeof(r));
	for (unsigned int i = 0; i < 3; i++)
		trib_imap_noop(fx->client, result_cb, &r[i]);
	run_loop(fx, 200);
	assert_int_equal(r[0].status, TRIB_IMAP_STATUS_NO);
	assert_int_equal(r[0].error_class, TRIB_ERR_WAIT);
	assert_int_equal(r[1].error_class, TRIB_ERR_TEMP);
	assert_int_equal(r[2].status, TRIB_IMAP_STATUS_BAD);
	assert_int_equal(r[2].error_class, TRIB_ERR_PERM);
	assert_non_null(strstr(r[0].error, "NOOP failed: NO [THROTTLED]"));
	/* pipelined: all three were sent before any reply */
	assert_string_equal(fake_peer_transcript(fx->fake->peer),
			    "t1 NOOP|t2 NOOP|t3 NOOP|");
	fixture_free(&fx);
}

static void select_cb(const struct trib_imap_reply *reply,
		      const struct trib_imap_mailbox_info *info, void *context)
{
	(void)info;
	record(context, reply);
}

static void test_barrier_waits(void **state)
{
	static const struct fake_peer_step script[] = {
		{ NULL, GREETING },
		{ "NOOP", "" },
		{ "SELECT", "* 2 EXISTS\r\n* OK [UIDVALIDITY 9] x\r\n"
			    "* OK [UIDNEXT 3] x\r\n" },
	};
	struct fixture *fx = fixture_new(script, 3);
	struct result noop = { 0 }, select = { 0 }, after = { 0 };

	(void)state;
	trib_imap_noop(fx->client, result_cb, &noop);
	trib_imap_select(fx->client, "INBOX", false, false, select_cb, &select);
	trib_imap_noop(fx->client, result_cb, &after);
	run_loop(fx, 200);
	/* SELECT waits for the NOOP in flight; nothing follows SELECT */
	assert_string_equal(fake_peer_transcript(fx->fake->peer), "t1 NOOP|");
	fixture_free(&fx);
	assert_int_equal(noop.calls, 1);
	assert_int_equal(select.calls, 1);
	assert_int_equal(select.error_class, TRIB_ERR_CANCELED);
	assert_int_equal(after.calls, 1);
	assert_int_equal(after.error_class, TRIB_ERR_CANCELED);
}

static void test_preauth_in_clear_refused(void **state)
{
	static const struct fake_peer_step script[] = {
		{ NULL, "* PREAUTH [CAPABILITY IMAP4rev1] welcome\r\n" },
	};
	struct fixture *fx = fixture_new(script, 1);

	(void)state;
	assert_int_equal(fx->connect.calls, 1);
	assert_int_equal(fx->connect.error_class, TRIB_ERR_PERM);
	assert_non_null(strstr(fx->connect.error, "PREAUTH"));
	fixture_free(&fx);
}

static void test_bye_greeting(void **state)
{
	static const struct fake_peer_step script[] = {
		{ NULL, "* BYE too many connections\r\n" },
	};
	struct fixture *fx = fixture_new(script, 1);

	(void)state;
	assert_int_equal(fx->connect.calls, 1);
	assert_int_equal(fx->connect.error_class, TRIB_ERR_TEMP);
	assert_non_null(strstr(fx->connect.error, "too many connections"));
	fixture_free(&fx);
}

static void test_connection_refused(void **state)
{
	struct trib_imap_client_settings set = {
		.host = "127.0.0.1",
		.tls_mode = TRIB_IMAP_TLS_NONE,
	};
	union {
		struct sockaddr sa;
		struct sockaddr_in sin;
	} addr;
	socklen_t len = sizeof(addr);
	struct result r = { 0 };
	struct trib_imap_client *client;
	struct trib_loop *loop;
	const char *error;
	int fd;

	(void)state;
	/* a port that was just free: bound, never listened on, closed */
	fd = socket(AF_INET, SOCK_STREAM, 0);
	memset(&addr, 0, sizeof(addr));
	addr.sin.sin_family = AF_INET;
	addr.sin.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
	assert_int_equal(bind(fd, &addr.sa, sizeof(addr.sin)), 0);
	getsockname(fd, &addr.sa, &len);
	close(fd);
	set.port = ntohs(addr.sin.sin_port);

	loop = trib_loop_create(&error);
	client = trib_imap_client_create(loop, &set, &error);
	trib_imap_client_connect(client, result_cb, &r);
	while (r.calls == 0)
		event_base_loop(trib_loop_base(loop), EVLOOP_ONCE);
	assert_int_equal(r.calls, 1);
	assert_int_equal(r.error_class, TRIB_ERR_TEMP);
	assert_non_null(strstr(r.error, "refused"));
	assert_non_null(strstr(r.error, "127.0.0.1"));
	trib_imap_client_destroy(&client);
	trib_loop_destroy(&loop);
}

static void test_quote(void **state)
{
	char buf[32];

	(void)state;
	assert_int_equal(trib_imap_quote(buf, sizeof(buf), "a \"b\" \\c"), 0);
	assert_string_equal(buf, "\"a \\\"b\\\" \\\\c\"");
	assert_int_equal(trib_imap_quote(buf, sizeof(buf), "x\r\ny"), -1);
	assert_int_equal(trib_imap_quote(buf, sizeof(buf), "caf\xc3\xa9"), -1);
	assert_int_equal(trib_imap_quote(buf, 8, "1234567"), -1);
	assert_int_equal(trib_imap_quote(buf, 8, "12345"), 0);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_greeting_and_noop),
		cmocka_unit_test(test_capability_asked_when_not_in_greeting),
		cmocka_unit_test(test_malformed_response_drops_connection),
		cmocka_unit_test(test_drop_mid_literal),
		cmocka_unit_test(test_literal_streamed_and_message_reported),
		cmocka_unit_test(test_unknown_tag),
		cmocka_unit_test(test_bye_then_close),
		cmocka_unit_test(test_throttled_is_wait),
		cmocka_unit_test(test_barrier_waits),
		cmocka_unit_test(test_preauth_in_clear_refused),
		cmocka_unit_test(test_bye_greeting),
		cmocka_unit_test(test_connection_refused),
		cmocka_unit_test(test_quote),
	};

	signal(SIGPIPE, SIG_IGN);
	return cmocka_run_group_tests(tests, NULL, NULL);
}
