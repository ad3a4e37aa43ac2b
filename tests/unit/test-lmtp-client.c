/* test-lmtp-client.c: the LMTP client against a scripted fake server, on
 * 127.0.0.1 or a UNIX socket, asserting the exact client transcript:
 * pipelining, BDAT framing, DATA with dot-stuffing, 4xx and 5xx replies,
 * a refused RCPT for a large message, aborts, the server closing
 * mid-message, malformed and huge reply lines, timeouts, destroy with
 * messages pending. The real Dovecot is in tests/integration/test-lmtp.c. */

#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>

#include <cmocka.h>

#include "alloc.h"
#include "fake-peer.h"
#include "lmtp-client.h"
#include "loop.h"

#include <event2/buffer.h>
#include <event2/event.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

/* ---- the scripted server ---- */

/* The script (fake-peer.h) sees client commands: a BDAT command counts
 * once its data is read; the end of DATA's data is the command ".". A
 * step whose expect is "DATA" and whose send starts with 354 switches to
 * reading the data. */
#define MAX_BODIES 16

struct fake {
	struct fake_peer *peer;
	struct fake_peer_conn *conn; /* the one connection */
	struct fake_peer_script script;

	bool in_bdat, in_data;
	size_t bdat_left;
	char bdat_line[128];
	struct evbuffer *input; /* read, not yet handled */
	struct evbuffer *body;
	char *bodies[MAX_BODIES];
	size_t body_len[MAX_BODIES];
	unsigned int body_count;
};

static void fake_push(struct fake *f, const char *text)
{
	if (f->conn != NULL)
		fake_peer_conn_send(f->conn, text);
}

static void fake_command(struct fake *f, const char *cmd)
{
	const struct fake_peer_step *st;

	while ((st = fake_peer_script_next(&f->script, f->conn, &cmd)) !=
	       NULL) {
		if (st->expect != NULL && strcmp(st->expect, "DATA") == 0 &&
		    strncmp(st->send, "354", 3) == 0)
			f->in_data = true;
		fake_push(f, st->send);
	}
}

static void fake_body_done(struct fake *f, size_t len)
{
	assert_true(f->body_count < MAX_BODIES);
	f->bodies[f->body_count] = trib_malloc(len + 1);
	evbuffer_remove(f->body, f->bodies[f->body_count], len);
	f->bodies[f->body_count][len] = '\0';
	f->body_len[f->body_count++] = len;
}

/* DATA: everything up to and including the end marker is the body. */
static bool fake_read_data(struct fake *f, struct evbuffer *input)
{
	struct evbuffer_ptr end;
	size_t len;
	char head[3];

	struct evbuffer *data;

	evbuffer_add_buffer(f->body, input);
	if (evbuffer_copyout(f->body, head, 3) == 3 &&
	    memcmp(head, ".\r\n", 3) == 0) {
		len = 3;
	} else {
		end = evbuffer_search(f->body, "\r\n.\r\n", 5, NULL);
		if (end.pos < 0)
			return false;
		len = (size_t)end.pos + 5;
	}
	/* what follows the end marker is the next commands */
	data = evbuffer_new();
	evbuffer_remove_buffer(f->body, data, len);
	evbuffer_add_buffer(input, f->body);
	evbuffer_add_buffer(f->body, data);
	evbuffer_free(data);
	f->in_data = false;
	fake_body_done(f, len);
	fake_peer_transcript_add(f->peer, ".");
	fake_command(f, ".");
	return true;
}

static void fake_input(struct fake_peer_conn *conn, void *context)
{
	struct fake *f = context;
	struct evbuffer *input = f->input;
	char *line;
	size_t len;

	/* bufferevent input can't be appended to: work on our own */
	evbuffer_add_buffer(input, fake_peer_conn_input(conn));
	while (fake_peer_conn_is_open(conn)) {
		if (f->in_bdat) {
			len = evbuffer_get_length(input);
			if (len > f->bdat_left)
				len = f->bdat_left;
			evbuffer_remove_buffer(input, f->body, len);
			f->bdat_left -= len;
			if (f->bdat_left > 0)
				break;
			f->in_bdat = false;
			fake_body_done(f, evbuffer_get_length(f->body));
			fake_command(f, f->bdat_line);
			continue;
		}
		if (f->in_data) {
			if (!fake_read_data(f, input))
				break;
			continue;
		}
		line = evbuffer_readln(input, &len, EVBUFFER_EOL_CRLF_STRICT);
		if (line == NULL)
			break;
		fake_peer_transcript_add(f->peer, line);
		if (strncmp(line, "BDAT ", 5) == 0) {
			f->in_bdat = true;
			f->bdat_left = strtoul(line + 5, NULL, 10);
			snprintf(f->bdat_line, sizeof(f->bdat_line), "%s",
				 line);
		} else {
			fake_command(f, line);
		}
		free(line);
	}
}

static void fake_accepted(struct fake_peer_conn *conn, void *context)
{
	struct fake *f = context;

	assert_null(f->conn); /* the client never connects again */
	f->conn = conn;
	fake_command(f, NULL);
}

static const struct fake_peer_callbacks fake_callbacks = {
	.accepted = fake_accepted,
	.input = fake_input,
};

static struct fake *fake_new(struct trib_loop *loop,
			     const struct fake_peer_step *script,
			     unsigned int count, bool unix_socket)
{
	struct fake *f = trib_calloc(1, sizeof(*f));

	f->script.steps = script;
	f->script.count = count;
	f->body = evbuffer_new();
	f->input = evbuffer_new();
	f->peer = fake_peer_create(loop, unix_socket ? "lmtp" : NULL,
				   &fake_callbacks, f);
	return f;
}

static void fake_free(struct fake **_f)
{
	struct fake *f = *_f;

	fake_peer_destroy(&f->peer);
	for (unsigned int i = 0; i < f->body_count; i++)
		free(f->bodies[i]);
	evbuffer_free(f->body);
	evbuffer_free(f->input);
	free(f);
	*_f = NULL;
}

/* ---- the client side ---- */

struct outcome {
	unsigned int calls;
	enum trib_error_class error_class;
	unsigned int code;
	char enhanced[16];
	char text[256];
	char error[512];
	bool has_error;
};

struct fixture {
	struct trib_loop *loop;
	struct fake *fake;
	struct trib_lmtp_client *client;
	unsigned int ready, closed, drained;
	enum trib_error_class closed_class;
	char closed_error[512];
};

static void outcome_cb(const struct trib_lmtp_reply *reply, void *context)
{
	struct outcome *o = context;

	o->calls++;
	o->error_class = reply->error_class;
	o->code = reply->code;
	snprintf(o->enhanced, sizeof(o->enhanced), "%s", reply->enhanced);
	snprintf(o->text, sizeof(o->text), "%s", reply->text);
	o->has_error = reply->error != NULL;
	snprintf(o->error, sizeof(o->error), "%s",
		 reply->error != NULL ? reply->error : "");
}

static void ready_cb(void *context)
{
	struct fixture *fx = context;

	fx->ready++;
}

static void closed_cb(enum trib_error_class error_class, const char *error,
		      void *context)
{
	struct fixture *fx = context;

	fx->closed++;
	fx->closed_class = error_class;
	snprintf(fx->closed_error, sizeof(fx->closed_error), "%s", error);
}

static void drained_cb(void *context)
{
	struct fixture *fx = context;

	fx->drained++;
}

static const struct trib_lmtp_client_handlers handlers = {
	.ready = ready_cb,
	.closed = closed_cb,
	.drained = drained_cb,
};

static void run_loop(struct fixture *fx, unsigned int ms)
{
	struct timeval tv = { 0, (suseconds_t)ms * 1000 };

	event_base_loopexit(trib_loop_base(fx->loop), &tv);
	event_base_dispatch(trib_loop_base(fx->loop));
}

/* Run the loop until expr holds (at most 5 s: valgrind is slow). */
#define RUN_UNTIL(fx, expr)                                                    \
	do {                                                                   \
		for (unsigned int i_ = 0; i_ < 1000 && !(expr); i_++)          \
			run_loop(fx, 5);                                       \
	} while (0)

static struct fixture *fixture_new_ex(const struct fake_peer_step *script,
				      unsigned int count,
				      const struct trib_lmtp_client_settings *s,
				      bool unix_socket)
{
	struct fixture *fx = trib_calloc(1, sizeof(*fx));
	struct trib_lmtp_client_settings set = { 0 };
	char address[160];
	const char *error;

	if (s != NULL)
		set = *s;
	fx->loop = trib_loop_create(&error);
	assert_non_null(fx->loop);
	fx->fake = fake_new(fx->loop, script, count, unix_socket);
	if (unix_socket)
		snprintf(address, sizeof(address), "unix:%s",
			 fake_peer_unix_path(fx->fake->peer));
	else
		snprintf(address, sizeof(address), "127.0.0.1:%u",
			 fake_peer_port(fx->fake->peer));
	set.address = address;
	if (set.reply_timeout_secs == 0)
		set.reply_timeout_secs = 10;
	fx->client =
		trib_lmtp_client_create(fx->loop, &set, &handlers, fx, &error);
	assert_non_null(fx->client);
	return fx;
}

static struct fixture *fixture_new(const struct fake_peer_step *script,
				   unsigned int count,
				   const struct trib_lmtp_client_settings *s)
{
	struct fixture *fx = fixture_new_ex(script, count, s, false);

	RUN_UNTIL(fx, fx->ready > 0 || fx->closed > 0);
	return fx;
}

static void fixture_free(struct fixture **fx)
{
	trib_lmtp_client_destroy(&(*fx)->client);
	fake_free(&(*fx)->fake);
	trib_loop_destroy(&(*fx)->loop);
	free(*fx);
	*fx = NULL;
}

static void write_str(struct trib_lmtp_message *msg, const char *data,
		      size_t len)
{
	struct evbuffer *buf = evbuffer_new();

	evbuffer_add(buf, data, len);
	trib_lmtp_message_write(msg, buf);
	/* moved, not copied */
	assert_int_equal(evbuffer_get_length(buf), 0);
	evbuffer_free(buf);
}

/* begin + write + finish */
static void send_message(struct fixture *fx, const char *rcpt, const char *body,
			 size_t len, struct outcome *o)
{
	struct trib_lmtp_message *msg;

	msg = trib_lmtp_message_begin(fx->client, rcpt, len, outcome_cb, o);
	write_str(msg, body, len);
	trib_lmtp_message_finish(&msg);
	assert_null(msg);
}

#define GREETING "220 fake LMTP ready\r\n"
#define LHLO_ALL                                                               \
	"250-fake\r\n250-8BITMIME\r\n250-CHUNKING\r\n"                         \
	"250-ENHANCEDSTATUSCODES\r\n250 PIPELINING\r\n"
#define LHLO_NO_CHUNKING                                                       \
	"250-fake\r\n250-ENHANCEDSTATUSCODES\r\n250 PIPELINING\r\n"
#define HELLO                                                                  \
	{ NULL, GREETING },                                                    \
	{                                                                      \
		"LHLO localhost", LHLO_ALL                                     \
	}
#define MAIL8 "MAIL FROM:<> BODY=8BITMIME"
#define OK_MAIL "250 2.1.0 OK\r\n"
#define OK_RCPT "250 2.1.5 OK\r\n"
#define OK_RSET "250 2.0.0 OK\r\n"
#define HELLO_T "LHLO localhost|"

/* ---- tests ---- */

static void test_pipelined_bdat(void **state)
{
	/* nothing is answered before every command of both messages is in:
	 * a client that waited for replies would never finish */
	static const struct fake_peer_step script[] = {
		HELLO,
		{ MAIL8, "" },
		{ "RCPT TO:<alice>", "" },
		{ "BDAT 6 LAST", "" },
		{ "RSET", "" },
		{ MAIL8, "" },
		{ "RCPT TO:<alice+Work>", "" },
		{ "BDAT 9 LAST", OK_MAIL OK_RCPT
		  "250 2.0.0 <alice> id1 Saved\r\n" OK_RSET OK_MAIL OK_RCPT
		  "250 2.0.0 <alice+Work> id2 Saved\r\n" },
	};
	static const char body2[9] = "a\r\n.\xe9\0\r\nb";
	struct fixture *fx = fixture_new(script, TRIB_N_ELEMENTS(script), NULL);
	struct outcome o1 = { 0 }, o2 = { 0 };

	(void)state;
	assert_int_equal(fx->ready, 1);
	assert_true(trib_lmtp_client_has_capability(fx->client, "chunking"));
	assert_true(trib_lmtp_client_is_ready(fx->client));
	send_message(fx, "alice", "hello\n", 6, &o1);
	send_message(fx, "alice+Work", body2, sizeof(body2), &o2);
	assert_int_equal(o1.calls + o2.calls, 0); /* never inside a call */
	assert_int_equal(trib_lmtp_client_messages_pending(fx->client), 2);
	RUN_UNTIL(fx, o1.calls > 0 && o2.calls > 0);
	assert_string_equal(fake_peer_transcript(fx->fake->peer), HELLO_T MAIL8
			    "|RCPT TO:<alice>|BDAT 6 LAST|RSET|" MAIL8
			    "|RCPT TO:<alice+Work>|BDAT 9 LAST|");
	assert_int_equal(o1.calls, 1);
	assert_int_equal(o1.error_class, TRIB_OK);
	assert_int_equal(o1.code, 250);
	assert_string_equal(o1.enhanced, "2.0.0");
	assert_string_equal(o1.text, "<alice> id1 Saved");
	assert_false(o1.has_error);
	assert_int_equal(o2.calls, 1);
	assert_int_equal(o2.error_class, TRIB_OK);
	/* byte-exact, 8-bit and NUL included */
	assert_int_equal(fx->fake->body_count, 2);
	assert_int_equal(fx->fake->body_len[0], 6);
	assert_memory_equal(fx->fake->bodies[0], "hello\n", 6);
	assert_int_equal(fx->fake->body_len[1], sizeof(body2));
	assert_memory_equal(fx->fake->bodies[1], body2, sizeof(body2));
	assert_int_equal(trib_lmtp_client_messages_pending(fx->client), 0);
	fixture_free(&fx);
}

static void test_large_waits_for_rcpt_then_chunks(void **state)
{
	static const struct fake_peer_step script[] = {
		HELLO,
		{ MAIL8, OK_MAIL },
		{ "RCPT TO:<alice>", "" }, /* withheld: pushed below */
		{ "BDAT 20", "250 2.0.0 Added 20 octets\r\n" },
		{ "BDAT 5", "250 2.0.0 Added 5 octets\r\n" },
		{ "BDAT 0 LAST", "250 2.0.0 <alice> Saved\r\n" },
	};
	struct trib_lmtp_client_settings set = { .pipeline_max_size = 16 };
	struct fixture *fx = fixture_new(script, TRIB_N_ELEMENTS(script), &set);
	struct trib_lmtp_message *msg;
	struct outcome o = { 0 };

	(void)state;
	msg = trib_lmtp_message_begin(fx->client, "alice", 25, outcome_cb, &o);
	write_str(msg, "0123456789", 10);
	run_loop(fx, 50);
	write_str(msg, "abcdefghij", 10);
	run_loop(fx, 50);
	/* no body byte before the RCPT reply */
	assert_string_equal(fake_peer_transcript(fx->fake->peer),
			    HELLO_T MAIL8 "|RCPT TO:<alice>|");
	assert_int_equal(trib_lmtp_client_queued(fx->client), 20);
	fake_push(fx->fake, OK_RCPT);
	RUN_UNTIL(fx, strstr(fake_peer_transcript(fx->fake->peer),
			     "BDAT 20|") != NULL);
	write_str(msg, "klmno", 5);
	RUN_UNTIL(fx, strstr(fake_peer_transcript(fx->fake->peer), "BDAT 5|") !=
			      NULL);
	trib_lmtp_message_finish(&msg);
	RUN_UNTIL(fx, o.calls > 0);
	assert_string_equal(fake_peer_transcript(fx->fake->peer),
			    HELLO_T MAIL8 "|RCPT TO:<alice>|BDAT 20|BDAT "
					  "5|BDAT 0 LAST|");
	assert_int_equal(o.calls, 1);
	assert_int_equal(o.error_class, TRIB_OK);
	assert_memory_equal(fx->fake->bodies[0], "0123456789abcdefghij", 20);
	assert_memory_equal(fx->fake->bodies[1], "klmno", 5);
	assert_int_equal(fx->fake->body_len[2], 0);
	fixture_free(&fx);
}

static void test_rcpt_refused_large_sends_no_body(void **state)
{
	static const struct fake_peer_step script[] = {
		HELLO,
		{ MAIL8, OK_MAIL },
		{ "RCPT TO:<nobody>",
		  "550 5.1.1 <nobody> User doesn't exist: nobody\r\n" },
		{ "RSET", OK_RSET },
		{ MAIL8, OK_MAIL },
		{ "RCPT TO:<alice>", OK_RCPT },
		{ "BDAT 3 LAST", "250 2.0.0 <alice> Saved\r\n" },
	};
	struct trib_lmtp_client_settings set = { .pipeline_max_size = 16 };
	struct fixture *fx = fixture_new(script, TRIB_N_ELEMENTS(script), &set);
	struct trib_lmtp_message *msg;
	struct outcome o = { 0 }, o2 = { 0 };

	(void)state;
	msg = trib_lmtp_message_begin(fx->client, "nobody", 100, outcome_cb,
				      &o);
	write_str(msg, "0123456789", 10);
	RUN_UNTIL(fx, o.calls > 0);
	/* reported while the body still comes: the rest is dropped */
	assert_int_equal(o.error_class, TRIB_ERR_PERM);
	assert_int_equal(o.code, 550);
	assert_string_equal(o.enhanced, "5.1.1");
	assert_string_equal(o.text, "<nobody> User doesn't exist: nobody");
	assert_non_null(strstr(o.error, "127.0.0.1:"));
	assert_non_null(strstr(o.error, "<nobody>: RCPT TO refused: 550 "
					"5.1.1 <nobody> User doesn't exist"));
	write_str(msg, "abcdefghij", 10);
	assert_int_equal(trib_lmtp_client_queued(fx->client), 0);
	trib_lmtp_message_finish(&msg);
	send_message(fx, "alice", "abc", 3, &o2);
	RUN_UNTIL(fx, o2.calls > 0);
	assert_string_equal(fake_peer_transcript(fx->fake->peer),
			    HELLO_T MAIL8 "|RCPT TO:<nobody>|RSET|" MAIL8
					  "|RCPT TO:<alice>|BDAT 3 LAST|");
	assert_int_equal(o.calls, 1);
	assert_int_equal(o2.error_class, TRIB_OK);
	fixture_free(&fx);
}

/* The second of three pipelined messages is refused at RCPT; its BDAT
 * LAST is answered with a 503 (Dovecot) or not at all (RFC 2033 4.3). */
static void five_xx_one_of_three(const char *bdat_reply)
{
	const struct fake_peer_step script[] = {
		HELLO,
		{ MAIL8, OK_MAIL },
		{ "RCPT TO:<alice>", OK_RCPT },
		{ "BDAT 2 LAST", "250 2.0.0 <alice> Saved\r\n" },
		{ "RSET", OK_RSET },
		{ MAIL8, OK_MAIL },
		{ "RCPT TO:<bob>", "550 5.1.1 <bob> User doesn't exist\r\n" },
		{ "BDAT 2 LAST", bdat_reply },
		{ "RSET", OK_RSET },
		{ MAIL8, OK_MAIL },
		{ "RCPT TO:<carol>", OK_RCPT },
		{ "BDAT 2 LAST", "250 2.0.0 <carol> Saved\r\n" },
	};
	struct fixture *fx = fixture_new(script, TRIB_N_ELEMENTS(script), NULL);
	struct outcome o[3];

	memset(o, 0, sizeof(o));
	send_message(fx, "alice", "a\n", 2, &o[0]);
	send_message(fx, "bob", "b\n", 2, &o[1]);
	send_message(fx, "carol", "c\n", 2, &o[2]);
	RUN_UNTIL(fx, o[2].calls > 0);
	assert_int_equal(o[0].calls, 1);
	assert_int_equal(o[0].error_class, TRIB_OK);
	assert_int_equal(o[1].calls, 1);
	assert_int_equal(o[1].error_class, TRIB_ERR_PERM);
	assert_int_equal(o[1].code, 550);
	assert_non_null(strstr(o[1].error, "<bob>: RCPT TO refused"));
	assert_int_equal(o[2].calls, 1);
	assert_int_equal(o[2].error_class, TRIB_OK);
	assert_string_equal(o[2].text, "<carol> Saved");
	assert_true(trib_lmtp_client_is_ready(fx->client));
	fixture_free(&fx);
}

static void test_5xx_one_of_several(void **state)
{
	(void)state;
	five_xx_one_of_three("503 5.5.0 No valid recipients\r\n");
	five_xx_one_of_three("");
}

static void test_4xx_then_250(void **state)
{
	static const struct fake_peer_step script[] = {
		HELLO,
		{ MAIL8, OK_MAIL },
		{ "RCPT TO:<alice>", OK_RCPT },
		{ "BDAT 4 LAST",
		  "451 4.3.0 <alice> Temporary internal failure\r\n" },
		{ "RSET", OK_RSET },
		{ MAIL8, OK_MAIL },
		{ "RCPT TO:<alice>", OK_RCPT },
		{ "BDAT 4 LAST", "250 2.0.0 <alice> Saved\r\n" },
	};
	struct fixture *fx = fixture_new(script, TRIB_N_ELEMENTS(script), NULL);
	struct outcome o1 = { 0 }, o2 = { 0 };

	(void)state;
	send_message(fx, "alice", "x\r\n\r", 4, &o1);
	RUN_UNTIL(fx, o1.calls > 0);
	assert_int_equal(o1.error_class, TRIB_ERR_TEMP);
	assert_int_equal(o1.code, 451);
	assert_string_equal(o1.enhanced, "4.3.0");
	assert_non_null(strstr(o1.error, "<alice>: delivery failed: 451 4.3.0 "
					 "<alice> Temporary internal failure"));
	/* the retry */
	send_message(fx, "alice", "x\r\n\r", 4, &o2);
	RUN_UNTIL(fx, o2.calls > 0);
	assert_int_equal(o2.error_class, TRIB_OK);
	assert_int_equal(o1.calls + o2.calls, 2);
	assert_string_equal(fake_peer_transcript(fx->fake->peer), HELLO_T MAIL8
			    "|RCPT TO:<alice>|BDAT 4 LAST|RSET|" MAIL8
			    "|RCPT TO:<alice>|BDAT 4 LAST|");
	fixture_free(&fx);
}

static void test_data_dot_stuffing(void **state)
{
	static const struct fake_peer_step script[] = {
		{ NULL, GREETING },
		{ "LHLO localhost", LHLO_NO_CHUNKING },
		{ "MAIL FROM:<>", OK_MAIL },
		{ "RCPT TO:<alice>", OK_RCPT },
		{ "DATA", "354 OK\r\n" },
		{ ".", "250 2.0.0 <alice> Saved\r\n" },
		{ "RSET", OK_RSET },
		{ "MAIL FROM:<>", OK_MAIL },
		{ "RCPT TO:<alice>", OK_RCPT },
		{ "DATA", "354 OK\r\n" },
		{ ".", "250 2.0.0 <alice> Saved\r\n" },
		{ "RSET", OK_RSET },
		{ "MAIL FROM:<>", OK_MAIL },
		{ "RCPT TO:<alice>", OK_RCPT },
		{ "DATA", "354 OK\r\n" },
		{ ".", "250 2.0.0 <alice> Saved\r\n" },
	};
	static const char stuffed[] = "..x\r\n..y\r\nz\n..w\r\n...\r\ntail\r\n"
				      ".\r\n";
	struct fixture *fx = fixture_new(script, TRIB_N_ELEMENTS(script), NULL);
	struct trib_lmtp_message *msg;
	struct outcome o[3];

	(void)state;
	memset(o, 0, sizeof(o));
	assert_false(trib_lmtp_client_has_capability(fx->client, "CHUNKING"));
	msg = trib_lmtp_message_begin(fx->client, "alice", 30, outcome_cb,
				      &o[0]);
	/* before the 354: held */
	write_str(msg, ".x\r\n", 4);
	RUN_UNTIL(fx, strstr(fake_peer_transcript(fx->fake->peer), "DATA|") !=
			      NULL);
	run_loop(fx, 20);
	/* a chunk boundary right after CRLF, a dot after a bare LF, a line
	 * that is only dots, and no final line break */
	write_str(msg, ".y\r\nz\n.w\r\n", 10);
	run_loop(fx, 20);
	write_str(msg, "..\r", 3);
	run_loop(fx, 20);
	write_str(msg, "\ntail", 5);
	trib_lmtp_message_finish(&msg);
	/* a body ending in a line break gets no extra one; an empty body */
	send_message(fx, "alice", "a\r\n.\r\n", 6, &o[1]);
	msg = trib_lmtp_message_begin(fx->client, "alice", 0, outcome_cb,
				      &o[2]);
	trib_lmtp_message_finish(&msg);
	RUN_UNTIL(fx, o[2].calls > 0);
	assert_string_equal(fake_peer_transcript(fx->fake->peer),
			    HELLO_T "MAIL FROM:<>|RCPT TO:<alice>|DATA|.|RSET|"
				    "MAIL FROM:<>|RCPT TO:<alice>|DATA|.|RSET|"
				    "MAIL FROM:<>|RCPT TO:<alice>|DATA|.|");
	for (unsigned int i = 0; i < 3; i++) {
		assert_int_equal(o[i].calls, 1);
		assert_int_equal(o[i].error_class, TRIB_OK);
	}
	assert_int_equal(fx->fake->body_count, 3);
	assert_string_equal(fx->fake->bodies[0], stuffed);
	assert_string_equal(fx->fake->bodies[1], "a\r\n..\r\n.\r\n");
	assert_string_equal(fx->fake->bodies[2], ".\r\n");
	fixture_free(&fx);
}

static void test_server_closes_mid_message(void **state)
{
	static const struct fake_peer_step script[] = {
		HELLO,
		{ MAIL8, OK_MAIL },
		{ "RCPT TO:<alice>", OK_RCPT },
		{ "BDAT 10", "250 2.0.0 Added 10 octets\r\n" },
		{ NULL, FAKE_PEER_CLOSE },
	};
	struct trib_lmtp_client_settings set = { .pipeline_max_size = 5 };
	struct fixture *fx = fixture_new(script, TRIB_N_ELEMENTS(script), &set);
	struct trib_lmtp_message *msg;
	struct outcome o = { 0 }, o2 = { 0 };

	(void)state;
	msg = trib_lmtp_message_begin(fx->client, "alice", 30, outcome_cb, &o);
	/* a small message queued behind: never sent */
	send_message(fx, "bob", "b\n", 2, &o2);
	write_str(msg, "0123456789", 10);
	RUN_UNTIL(fx, o.calls > 0);
	assert_int_equal(o.calls, 1);
	assert_int_equal(o.error_class, TRIB_ERR_TEMP);
	assert_int_equal(o.code, 0);
	assert_non_null(strstr(o.error, "<alice>: not delivered: connection "
					"closed by server"));
	assert_int_equal(o2.calls, 1);
	assert_int_equal(o2.error_class, TRIB_ERR_TEMP);
	assert_non_null(strstr(o2.error, "<bob>: not delivered"));
	assert_int_equal(fx->closed, 1);
	assert_int_equal(fx->closed_class, TRIB_ERR_TEMP);
	assert_true(trib_lmtp_client_is_closed(fx->client));
	/* the handle outlives the session: writes are dropped */
	write_str(msg, "more", 4);
	trib_lmtp_message_finish(&msg);
	assert_string_equal(fake_peer_transcript(fx->fake->peer),
			    HELLO_T MAIL8 "|RCPT TO:<alice>|BDAT 10|");
	fixture_free(&fx);
	assert_int_equal(o.calls, 1);
}

static void test_lost_before_final_reply(void **state)
{
	/* the data went out in full, the reply never came */
	static const struct fake_peer_step script[] = {
		HELLO,
		{ MAIL8, OK_MAIL },
		{ "RCPT TO:<alice>", OK_RCPT },
		{ "BDAT 5 LAST", FAKE_PEER_CLOSE },
	};
	struct fixture *fx = fixture_new(script, TRIB_N_ELEMENTS(script), NULL);
	struct outcome o = { 0 };

	(void)state;
	send_message(fx, "alice", "hello", 5, &o);
	RUN_UNTIL(fx, o.calls > 0);
	assert_int_equal(o.calls, 1);
	assert_int_equal(o.error_class, TRIB_ERR_TEMP);
	assert_non_null(strstr(o.error, "not delivered"));
	/* after the end, new messages are reported later, once */
	send_message(fx, "alice", "again", 5, &o);
	assert_int_equal(o.calls, 1);
	RUN_UNTIL(fx, o.calls > 1);
	assert_int_equal(o.calls, 2);
	assert_int_equal(o.error_class, TRIB_ERR_TEMP);
	fixture_free(&fx);
}

static void test_malformed_reply(void **state)
{
	static const struct fake_peer_step script[] = {
		HELLO,
		{ MAIL8, "25O 2.1.0 OK\r\n" },
	};
	struct fixture *fx = fixture_new(script, TRIB_N_ELEMENTS(script), NULL);
	struct outcome o = { 0 };

	(void)state;
	send_message(fx, "alice", "hello", 5, &o);
	RUN_UNTIL(fx, o.calls > 0);
	assert_int_equal(o.error_class, TRIB_ERR_TEMP);
	assert_non_null(strstr(o.error, "malformed reply line \"25O 2.1.0"));
	assert_int_equal(fx->closed, 1);
	fixture_free(&fx);
}

static void test_huge_reply_line(void **state)
{
	static char huge[100 * 1024];
	static const struct fake_peer_step script[] = {
		HELLO,
		{ MAIL8, huge },
	};
	struct fixture *fx;
	struct outcome o = { 0 };

	(void)state;
	memcpy(huge, "250 ", 4);
	memset(huge + 4, 'x', sizeof(huge) - 5);
	fx = fixture_new(script, TRIB_N_ELEMENTS(script), NULL);
	send_message(fx, "alice", "hello", 5, &o);
	RUN_UNTIL(fx, o.calls > 0);
	assert_int_equal(o.calls, 1);
	assert_int_equal(o.error_class, TRIB_ERR_TEMP);
	assert_non_null(strstr(o.error, "reply line longer than 2048 bytes"));
	fixture_free(&fx);
}

static void test_multiline_reply_and_unexpected(void **state)
{
	static const struct fake_peer_step script[] = {
		HELLO,
		{ MAIL8, OK_MAIL },
		{ "RCPT TO:<alice>", "452-4.2.2 <alice> Mailbox is full\r\n"
				     "452 4.2.2 try later\r\n" },
		{ "BDAT 5 LAST", "250 2.0.0 what\r\n" },
	};
	struct fixture *fx = fixture_new(script, TRIB_N_ELEMENTS(script), NULL);
	struct outcome o = { 0 };

	(void)state;
	send_message(fx, "alice", "hello", 5, &o);
	RUN_UNTIL(fx, fx->closed > 0);
	assert_int_equal(o.calls, 1);
	assert_int_equal(o.error_class, TRIB_ERR_TEMP);
	assert_int_equal(o.code, 452);
	assert_string_equal(o.enhanced, "4.2.2");
	assert_string_equal(o.text, "<alice> Mailbox is full try later");
	/* a 2xx can't be the BDAT's after a refused RCPT, and nothing else
	 * was sent: a protocol error */
	assert_non_null(strstr(fx->closed_error, "unexpected reply 250"));
	fixture_free(&fx);
}

static void test_unsolicited_replies(void **state)
{
	static const struct fake_peer_step script[] = { HELLO };
	struct fixture *fx;

	(void)state;
	/* Dovecot's idle timeout: a 421 nothing asked for */
	fx = fixture_new(script, TRIB_N_ELEMENTS(script), NULL);
	fake_push(fx->fake, "421 4.4.2 fake Disconnected for inactivity\r\n");
	RUN_UNTIL(fx, fx->closed > 0);
	assert_int_equal(fx->closed_class, TRIB_ERR_TEMP);
	assert_non_null(strstr(fx->closed_error,
			       "server closing the session: 421 4.4.2 fake "
			       "Disconnected for inactivity"));
	fixture_free(&fx);
	/* anything else is a protocol error */
	fx = fixture_new(script, TRIB_N_ELEMENTS(script), NULL);
	fake_push(fx->fake, "250 2.0.0 surprise\r\n");
	RUN_UNTIL(fx, fx->closed > 0);
	assert_non_null(strstr(fx->closed_error, "unexpected reply 250"));
	fixture_free(&fx);
}

static void test_abort_mid_bdat_sends_rset(void **state)
{
	static const struct fake_peer_step script[] = {
		HELLO,
		{ MAIL8, OK_MAIL },
		{ "RCPT TO:<alice>", OK_RCPT },
		{ "BDAT 10", "250 2.0.0 Added 10 octets\r\n" },
		{ "RSET", OK_RSET },
		{ MAIL8, OK_MAIL },
		{ "RCPT TO:<alice>", OK_RCPT },
		{ "BDAT 5 LAST", "250 2.0.0 <alice> Saved\r\n" },
	};
	struct trib_lmtp_client_settings set = { .pipeline_max_size = 5 };
	struct fixture *fx = fixture_new(script, TRIB_N_ELEMENTS(script), &set);
	struct trib_lmtp_message *msg;
	struct outcome o = { 0 }, o2 = { 0 };

	(void)state;
	msg = trib_lmtp_message_begin(fx->client, "alice", 30, outcome_cb, &o);
	write_str(msg, "0123456789", 10);
	RUN_UNTIL(fx, strstr(fake_peer_transcript(fx->fake->peer),
			     "BDAT 10|") != NULL);
	trib_lmtp_message_abort(&msg, "remote literal cut");
	assert_null(msg);
	assert_int_equal(o.calls, 0);
	send_message(fx, "alice", "fresh", 5, &o2);
	RUN_UNTIL(fx, o2.calls > 0);
	assert_int_equal(o.calls, 1);
	assert_int_equal(o.error_class, TRIB_ERR_CANCELED);
	assert_non_null(strstr(o.error, "<alice>: not delivered: aborted: "
					"remote literal cut"));
	assert_int_equal(o2.error_class, TRIB_OK);
	/* never "BDAT ... LAST" for the aborted one */
	assert_string_equal(fake_peer_transcript(fx->fake->peer),
			    HELLO_T MAIL8 "|RCPT TO:<alice>|BDAT 10|RSET|" MAIL8
					  "|RCPT TO:<alice>|BDAT 5 LAST|");
	fixture_free(&fx);
}

static void test_abort_small_before_finish(void **state)
{
	static const struct fake_peer_step script[] = {
		HELLO,
		{ MAIL8, OK_MAIL },
		{ "RCPT TO:<alice>", OK_RCPT },
		{ "RSET", OK_RSET },
	};
	struct fixture *fx = fixture_new(script, TRIB_N_ELEMENTS(script), NULL);
	struct trib_lmtp_message *msg;
	struct outcome o = { 0 };

	(void)state;
	msg = trib_lmtp_message_begin(fx->client, "alice", 100, outcome_cb, &o);
	write_str(msg, "part", 4);
	RUN_UNTIL(fx,
		  strstr(fake_peer_transcript(fx->fake->peer), "RCPT") != NULL);
	trib_lmtp_message_abort(&msg, "cut");
	RUN_UNTIL(fx,
		  strstr(fake_peer_transcript(fx->fake->peer), "RSET") != NULL);
	run_loop(fx, 20);
	assert_int_equal(o.calls, 1);
	assert_int_equal(o.error_class, TRIB_ERR_CANCELED);
	assert_string_equal(fake_peer_transcript(fx->fake->peer),
			    HELLO_T MAIL8 "|RCPT TO:<alice>|RSET|");
	assert_int_equal(fx->fake->body_count, 0);
	fixture_free(&fx);
}

static void test_abort_during_data_closes(void **state)
{
	static const struct fake_peer_step script[] = {
		{ NULL, GREETING },
		{ "LHLO localhost", LHLO_NO_CHUNKING },
		{ "MAIL FROM:<>", OK_MAIL },
		{ "RCPT TO:<alice>", OK_RCPT },
		{ "DATA", "354 OK\r\n" },
	};
	struct fixture *fx = fixture_new(script, TRIB_N_ELEMENTS(script), NULL);
	struct trib_lmtp_message *msg;
	struct outcome o = { 0 }, o2 = { 0 };

	(void)state;
	msg = trib_lmtp_message_begin(fx->client, "alice", 100, outcome_cb, &o);
	send_message(fx, "bob", "b\n", 2, &o2);
	write_str(msg, "part of it\r\n", 12);
	RUN_UNTIL(fx, strstr(fake_peer_transcript(fx->fake->peer), "DATA|") !=
			      NULL);
	run_loop(fx, 50);
	trib_lmtp_message_abort(&msg, "cut");
	RUN_UNTIL(fx, fx->closed > 0);
	run_loop(fx, 50);
	assert_int_equal(o.calls, 1);
	assert_int_equal(o.error_class, TRIB_ERR_CANCELED);
	assert_int_equal(o2.calls, 1);
	assert_int_equal(o2.error_class, TRIB_ERR_TEMP);
	assert_non_null(strstr(fx->closed_error, "aborted during DATA"));
	/* the end marker never went out */
	assert_string_equal(fake_peer_transcript(fx->fake->peer),
			    HELLO_T "MAIL FROM:<>|RCPT TO:<alice>|DATA|");
	assert_true(fx->fake->in_data);
	fixture_free(&fx);
}

static void test_destroy_with_messages_pending(void **state)
{
	static const struct fake_peer_step script[] = {
		HELLO,
		{ MAIL8, "" },
	};
	struct fixture *fx = fixture_new(script, TRIB_N_ELEMENTS(script), NULL);
	struct trib_lmtp_message *msg;
	struct outcome o[3];

	(void)state;
	memset(o, 0, sizeof(o));
	send_message(fx, "alice", "a", 1, &o[0]);
	send_message(fx, "bob", "b", 1, &o[1]);
	msg = trib_lmtp_message_begin(fx->client, "carol", 10, outcome_cb,
				      &o[2]);
	write_str(msg, "c", 1);
	run_loop(fx, 50);
	trib_lmtp_client_destroy(&fx->client);
	assert_null(fx->client);
	for (unsigned int i = 0; i < 3; i++) {
		assert_int_equal(o[i].calls, 1);
		assert_int_equal(o[i].error_class, TRIB_ERR_CANCELED);
		assert_non_null(strstr(o[i].error, "not delivered: client "
						   "closed"));
	}
	/* no handler after destroy */
	assert_int_equal(fx->closed, 0);
	/* the unfinished handle stays the caller's */
	write_str(msg, "more", 4);
	trib_lmtp_message_finish(&msg);
	run_loop(fx, 20);
	fixture_free(&fx);
	for (unsigned int i = 0; i < 3; i++)
		assert_int_equal(o[i].calls, 1);
}

struct destroyer {
	struct fixture *fx;
	struct outcome o;
};

static void destroy_in_callback(const struct trib_lmtp_reply *reply,
				void *context)
{
	struct destroyer *d = context;

	outcome_cb(reply, &d->o);
	trib_lmtp_client_destroy(&d->fx->client);
}

static void test_destroy_inside_callback(void **state)
{
	static const struct fake_peer_step script[] = {
		HELLO,
		{ MAIL8, OK_MAIL },
		{ "RCPT TO:<alice>", "550 5.1.1 no\r\n" },
	};
	struct fixture *fx = fixture_new(script, TRIB_N_ELEMENTS(script), NULL);
	struct trib_lmtp_message *msg;
	struct destroyer d = { .fx = fx };
	struct outcome o2 = { 0 };

	(void)state;
	msg = trib_lmtp_message_begin(fx->client, "alice", 5,
				      destroy_in_callback, &d);
	write_str(msg, "hello", 5);
	trib_lmtp_message_finish(&msg);
	send_message(fx, "bob", "b", 1, &o2);
	RUN_UNTIL(fx, d.o.calls > 0);
	assert_int_equal(d.o.calls, 1);
	assert_int_equal(d.o.error_class, TRIB_ERR_PERM);
	assert_null(fx->client);
	assert_int_equal(o2.calls, 1);
	assert_int_equal(o2.error_class, TRIB_ERR_CANCELED);
	fixture_free(&fx);
}

static void test_recipients(void **state)
{
	static const struct fake_peer_step script[] = {
		HELLO,
		{ MAIL8, OK_MAIL },
		{ "RCPT TO:<\"alice+My \\\"Folder\\\"\">", OK_RCPT },
		{ "BDAT 1 LAST", "250 2.0.0 Saved\r\n" },
		{ "RSET", OK_RSET },
		{ MAIL8, OK_MAIL },
		{ "RCPT TO:<alice+Lists/Tributary@example.com>", OK_RCPT },
		{ "BDAT 1 LAST", "250 2.0.0 Saved\r\n" },
	};
	struct fixture *fx = fixture_new(script, TRIB_N_ELEMENTS(script), NULL);
	struct outcome o[3];

	(void)state;
	memset(o, 0, sizeof(o));
	send_message(fx, "alice+My \"Folder\"", "1", 1, &o[0]);
	send_message(fx, "bad>\r\nRSET", "2", 1, &o[1]);
	send_message(fx, "alice+Lists/Tributary@example.com", "3", 1, &o[2]);
	RUN_UNTIL(fx, o[0].calls > 0 && o[1].calls > 0 && o[2].calls > 0);
	assert_int_equal(o[0].error_class, TRIB_OK);
	assert_int_equal(o[1].error_class, TRIB_ERR_PERM);
	assert_non_null(strstr(o[1].error, "not a valid recipient"));
	assert_null(strchr(o[1].error, '\n'));
	assert_int_equal(o[2].error_class, TRIB_OK);
	assert_string_equal(
		fake_peer_transcript(fx->fake->peer), HELLO_T MAIL8
		"|RCPT TO:<\"alice+My \\\"Folder\\\"\">|BDAT 1 "
		"LAST|RSET|" MAIL8
		"|RCPT TO:<alice+Lists/Tributary@example.com>|BDAT 1 LAST|");
	fixture_free(&fx);
}

static void test_back_pressure(void **state)
{
	static const struct fake_peer_step script[] = {
		HELLO,
		{ MAIL8, OK_MAIL },
		{ "RCPT TO:<alice>", "" },
		{ "BDAT 3000", "250 2.0.0 Added\r\n" },
	};
	struct trib_lmtp_client_settings set = {
		.pipeline_max_size = 100,
		.high_watermark = 2000,
		.low_watermark = 500,
	};
	struct fixture *fx = fixture_new(script, TRIB_N_ELEMENTS(script), &set);
	struct trib_lmtp_message *msg;
	struct outcome o = { 0 };
	char block[1000];

	(void)state;
	memset(block, 'x', sizeof(block));
	msg = trib_lmtp_message_begin(fx->client, "alice", 1000000, outcome_cb,
				      &o);
	for (unsigned int i = 0; i < 3; i++)
		write_str(msg, block, sizeof(block));
	/* held behind the RCPT reply, counted */
	assert_int_equal(trib_lmtp_client_queued(fx->client), 3000);
	assert_true(trib_lmtp_client_is_full(fx->client));
	run_loop(fx, 50);
	assert_int_equal(fx->drained, 0);
	fake_push(fx->fake, OK_RCPT);
	RUN_UNTIL(fx, fx->drained > 0);
	assert_int_equal(fx->drained, 1);
	assert_false(trib_lmtp_client_is_full(fx->client));
	RUN_UNTIL(fx, strstr(fake_peer_transcript(fx->fake->peer),
			     "BDAT 3000|") != NULL);
	assert_int_equal(fx->fake->body_len[0], 3000);
	trib_lmtp_message_abort(&msg, "test over");
	fixture_free(&fx);
	assert_int_equal(o.calls, 1);
}

static void test_no_pipelining(void **state)
{
	static const struct fake_peer_step script[] = {
		{ NULL, GREETING },
		{ "LHLO localhost", "250-fake\r\n250 CHUNKING\r\n" },
		{ "MAIL FROM:<>", "" },
		{ "RCPT TO:<alice>", OK_RCPT },
		{ "BDAT 2 LAST", "250 Saved\r\n" },
	};
	struct fixture *fx = fixture_new(script, TRIB_N_ELEMENTS(script), NULL);
	struct outcome o = { 0 };

	(void)state;
	send_message(fx, "alice", "hi", 2, &o);
	run_loop(fx, 50);
	/* one command at a time */
	assert_string_equal(fake_peer_transcript(fx->fake->peer),
			    HELLO_T "MAIL FROM:<>|");
	fake_push(fx->fake, OK_MAIL);
	RUN_UNTIL(fx, o.calls > 0);
	assert_int_equal(o.error_class, TRIB_OK);
	assert_string_equal(o.enhanced, "");
	assert_string_equal(o.text, "Saved");
	assert_string_equal(fake_peer_transcript(fx->fake->peer), HELLO_T
			    "MAIL FROM:<>|RCPT TO:<alice>|BDAT 2 LAST|");
	fixture_free(&fx);
}

static void test_unix_socket_and_custom_sender(void **state)
{
	static const struct fake_peer_step script[] = {
		HELLO,
		{ "MAIL FROM:<postmaster@example.com> BODY=8BITMIME", OK_MAIL },
		{ "RCPT TO:<alice>", OK_RCPT },
		{ "BDAT 2 LAST", "250 2.0.0 Saved\r\n" },
	};
	struct trib_lmtp_client_settings set = {
		.mail_from = "postmaster@example.com",
	};
	struct fixture *fx =
		fixture_new_ex(script, TRIB_N_ELEMENTS(script), &set, true);
	struct outcome o = { 0 };

	(void)state;
	send_message(fx, "alice", "hi", 2, &o);
	RUN_UNTIL(fx, o.calls > 0);
	assert_int_equal(fx->ready, 1);
	assert_int_equal(o.error_class, TRIB_OK);
	assert_string_equal(trib_lmtp_client_name(fx->client) + 5,
			    fake_peer_unix_path(fx->fake->peer));
	fixture_free(&fx);
}

static void test_greeting_refused_and_missing_socket(void **state)
{
	static const struct fake_peer_step script[] = {
		{ NULL, "554 5.3.2 not now\r\n" },
	};
	struct trib_lmtp_client_settings set = {
		.address = "unix:/nonexistent/tributary/lmtp",
	};
	struct trib_lmtp_client *client;
	struct fixture *fx;
	struct outcome o = { 0 };
	const char *error;

	(void)state;
	fx = fixture_new(script, TRIB_N_ELEMENTS(script), NULL);
	send_message(fx, "alice", "hi", 2, &o);
	RUN_UNTIL(fx, o.calls > 0);
	assert_int_equal(fx->closed, 1);
	assert_int_equal(fx->closed_class, TRIB_ERR_PERM);
	assert_non_null(strstr(fx->closed_error, "refused the session: 554"));
	assert_int_equal(o.error_class, TRIB_ERR_TEMP);
	fixture_free(&fx);

	fx = trib_calloc(1, sizeof(*fx));
	fx->loop = trib_loop_create(&error);
	client = trib_lmtp_client_create(fx->loop, &set, &handlers, fx, &error);
	assert_non_null(client);
	memset(&o, 0, sizeof(o));
	fx->client = client;
	send_message(fx, "alice", "hi", 2, &o);
	RUN_UNTIL(fx, o.calls > 0);
	assert_int_equal(fx->closed, 1);
	assert_int_equal(fx->closed_class, TRIB_ERR_TEMP);
	assert_string_equal(fx->closed_error,
			    "unix:/nonexistent/tributary/lmtp: connect "
			    "failed: No such file or directory");
	assert_int_equal(o.error_class, TRIB_ERR_TEMP);
	assert_non_null(strstr(o.error, "<alice>: not delivered: connect "
					"failed: No such file"));
	trib_lmtp_client_destroy(&client);
	trib_loop_destroy(&fx->loop);
	free(fx);
}

static void test_timeout(void **state)
{
	static const struct fake_peer_step script[] = {
		HELLO,
		{ MAIL8, "" },
	};
	struct trib_lmtp_client_settings set = { .reply_timeout_secs = 1 };
	struct fixture *fx = fixture_new(script, TRIB_N_ELEMENTS(script), &set);
	struct outcome o = { 0 };

	(void)state;
	send_message(fx, "alice", "hi", 2, &o);
	RUN_UNTIL(fx, o.calls > 0);
	assert_int_equal(o.error_class, TRIB_ERR_TEMP);
	assert_non_null(strstr(o.error, "not delivered: read timed out"));
	fixture_free(&fx);
}

static void test_bad_settings(void **state)
{
	static const char *const bad[] = {
		"",	      "unix:",	 "host",    "host:0",
		"host:70000", "host:2x", "[::1:24",
	};
	struct trib_lmtp_client_settings set = { 0 };
	struct trib_lmtp_client *client;
	struct trib_loop *loop;
	const char *error;

	(void)state;
	loop = trib_loop_create(&error);
	for (size_t i = 0; i < TRIB_N_ELEMENTS(bad); i++) {
		set.address = bad[i];
		error = NULL;
		assert_null(trib_lmtp_client_create(loop, &set, NULL, NULL,
						    &error));
		assert_non_null(error);
	}
	set.address = "[::1]:24";
	set.mail_from = "<x>";
	assert_null(trib_lmtp_client_create(loop, &set, NULL, NULL, &error));
	set.mail_from = NULL;
	client = trib_lmtp_client_create(loop, &set, NULL, NULL, &error);
	assert_non_null(client);
	assert_string_equal(trib_lmtp_client_name(client), "[::1]:24");
	trib_lmtp_client_destroy(&client);
	trib_loop_destroy(&loop);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_pipelined_bdat),
		cmocka_unit_test(test_large_waits_for_rcpt_then_chunks),
		cmocka_unit_test(test_rcpt_refused_large_sends_no_body),
		cmocka_unit_test(test_5xx_one_of_several),
		cmocka_unit_test(test_4xx_then_250),
		cmocka_unit_test(test_data_dot_stuffing),
		cmocka_unit_test(test_server_closes_mid_message),
		cmocka_unit_test(test_lost_before_final_reply),
		cmocka_unit_test(test_malformed_reply),
		cmocka_unit_test(test_huge_reply_line),
		cmocka_unit_test(test_multiline_reply_and_unexpected),
		cmocka_unit_test(test_unsolicited_replies),
		cmocka_unit_test(test_abort_mid_bdat_sends_rset),
		cmocka_unit_test(test_abort_small_before_finish),
		cmocka_unit_test(test_abort_during_data_closes),
		cmocka_unit_test(test_destroy_with_messages_pending),
		cmocka_unit_test(test_destroy_inside_callback),
		cmocka_unit_test(test_recipients),
		cmocka_unit_test(test_back_pressure),
		cmocka_unit_test(test_no_pipelining),
		cmocka_unit_test(test_unix_socket_and_custom_sender),
		cmocka_unit_test(test_greeting_refused_and_missing_socket),
		cmocka_unit_test(test_timeout),
		cmocka_unit_test(test_bad_settings),
	};

	signal(SIGPIPE, SIG_IGN);
	return cmocka_run_group_tests(tests, NULL, NULL);
}
