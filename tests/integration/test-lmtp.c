/* test-lmtp.c: the core's LMTP client against the real "local" Dovecot of
 * the harness (LMTP over its UNIX socket and over TCP, Pigeonhole on):
 * 200 pipelined messages per transport arrive in alice's maildir, 8-bit
 * bodies and lines starting with "." intact, DATA with dot-stuffing, a
 * 25 MB message streamed in pieces under back-pressure, alice+Work lands
 * in Work, an unknown user is refused alone, and an aborted BDAT
 * transaction (RSET mid-BDAT) stores nothing.
 *
 * Comparing with the maildir: Dovecot prepends Return-Path, Delivered-To
 * and Received, which are skipped; and it stores lines with LF
 * (mail_save_crlf = no, the default), so a message sent with CRLF is
 * compared with its CRLF turned into LF, and one sent with LF, byte for
 * byte. */

#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>

#include <cmocka.h>

#include "alloc.h"
#include "itest.h"
#include "lmtp-client.h"

#include <dirent.h>
#include <event2/buffer.h>
#include <event2/event.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

#define DEADLINE 120

/* ---- a session: one loop, one client ---- */

struct result {
	unsigned int calls;
	enum trib_error_class error_class;
	unsigned int code;
	char error[512];
};

struct session {
	struct trib_loop *loop;
	struct trib_lmtp_client *client;
	bool ready, closed, drained;
	unsigned int expected, done;
	bool all_done;
};

struct delivery {
	struct session *s;
	struct result result;
};

static void delivery_cb(const struct trib_lmtp_reply *reply, void *context)
{
	struct delivery *d = context;

	d->result.calls++;
	d->result.error_class = reply->error_class;
	d->result.code = reply->code;
	snprintf(d->result.error, sizeof(d->result.error), "%s",
		 reply->error != NULL ? reply->error : "");
	if (++d->s->done >= d->s->expected)
		d->s->all_done = true;
}

static void ready_cb(void *context)
{
	struct session *s = context;

	s->ready = true;
}

static void closed_cb(enum trib_error_class error_class, const char *error,
		      void *context)
{
	struct session *s = context;

	(void)error_class;
	(void)error;
	s->closed = true;
}

static void drained_cb(void *context)
{
	struct session *s = context;

	s->drained = true;
}

static const struct trib_lmtp_client_handlers handlers = {
	.ready = ready_cb,
	.closed = closed_cb,
	.drained = drained_cb,
};

static const char *need_env(const char *name)
{
	const char *value = getenv(name);

	if (value == NULL || value[0] == '\0')
		fail_msg("%s is not set: run under with-servers.sh", name);
	return value;
}

static const char *unix_address(void)
{
	static char address[600];

	snprintf(address, sizeof(address), "unix:%s",
		 need_env("TRIB_TEST_LOCAL_LMTP_SOCKET"));
	return address;
}

static const char *tcp_address(void)
{
	static char address[300];

	snprintf(address, sizeof(address), "%s:%s",
		 need_env("TRIB_TEST_LOCAL_LMTP_HOST"),
		 need_env("TRIB_TEST_LOCAL_LMTP_PORT"));
	return address;
}

static struct session *session_new(const char *address, bool chunking,
				   size_t pipeline_max_size)
{
	struct trib_lmtp_client_settings set = {
		.address = address,
		.disable_chunking = !chunking,
		.pipeline_max_size = pipeline_max_size,
		.connect_timeout_secs = 10,
		.reply_timeout_secs = 60,
		.logger = &itest_logger,
		.trace = true,
	};
	struct session *s = trib_calloc(1, sizeof(*s));
	const char *error;

	s->loop = trib_loop_create(&error);
	assert_non_null(s->loop);
	s->client =
		trib_lmtp_client_create(s->loop, &set, &handlers, s, &error);
	assert_non_null(s->client);
	assert_true(itest_run_until(s->loop, &s->ready, DEADLINE));
	assert_true(trib_lmtp_client_has_capability(s->client, "PIPELINING"));
	assert_true(trib_lmtp_client_has_capability(s->client, "CHUNKING"));
	assert_true(trib_lmtp_client_has_capability(s->client,
						    "ENHANCEDSTATUSCODES"));
	assert_true(trib_lmtp_client_has_capability(s->client, "8BITMIME"));
	return s;
}

static void session_free(struct session **_s)
{
	struct session *s = *_s;

	trib_lmtp_client_destroy(&s->client);
	trib_loop_destroy(&s->loop);
	free(s);
	*_s = NULL;
}

static void session_wait_all(struct session *s, unsigned int count)
{
	s->expected = count;
	s->all_done = s->done >= count;
	assert_true(itest_run_until(s->loop, &s->all_done, DEADLINE));
}

static void write_bytes(struct trib_lmtp_message *msg, const char *data,
			size_t len)
{
	struct evbuffer *buf = evbuffer_new();

	evbuffer_add(buf, data, len);
	trib_lmtp_message_write(msg, buf);
	assert_int_equal(evbuffer_get_length(buf), 0);
	evbuffer_free(buf);
}

/* ---- test messages ---- */

struct text {
	char *data;
	size_t len, size;
};

static void text_add(struct text *t, const char *data, size_t len)
{
	if (t->len + len + 1 > t->size) {
		t->size = (t->len + len + 1) * 2;
		t->data = trib_realloc(t->data, t->size);
	}
	memcpy(t->data + t->len, data, len);
	t->len += len;
	t->data[t->len] = '\0';
}

/* A line; "\n" becomes CRLF when crlf. */
static void text_line(struct text *t, bool crlf, const char *line)
{
	text_add(t, line, strlen(line));
	if (crlf)
		text_add(t, "\r\n", 2);
	else
		text_add(t, "\n", 1);
}

/* Message i of a batch: 8-bit, lines starting with dots, a bare CR in
 * some, no final line break in some. Stored form: crlf = false. */
static char *make_message(const char *tag, unsigned int i, bool crlf,
			  size_t *len_r)
{
	struct text t = { NULL, 0, 0 };
	char line[256];

	snprintf(line, sizeof(line), "From: Sender <sender@example.com>");
	text_line(&t, crlf, line);
	text_line(&t, crlf, "To: alice@example.com");
	snprintf(line, sizeof(line),
		 "Subject: =?UTF-8?Q?Gr=C3=BC=C3=9Fe?= %s %u", tag, i);
	text_line(&t, crlf, line);
	snprintf(line, sizeof(line), "Message-ID: <%s.%u@tributary.test>", tag,
		 i);
	text_line(&t, crlf, line);
	snprintf(line, sizeof(line), "X-Trib-Test: %s.%06u", tag, i);
	text_line(&t, crlf, line);
	text_line(&t, crlf, "MIME-Version: 1.0");
	text_line(&t, crlf, "Content-Type: text/plain; charset=utf-8");
	text_line(&t, crlf, "Content-Transfer-Encoding: 8bit");
	text_line(&t, crlf, "");
	snprintf(line, sizeof(line),
		 "Gr\xc3\xbc\xc3\x9f"
		 "e aus K\xc3\xb6ln \xe2\x80\x94 message %u, Latin-1 \xe9\xe8",
		 i);
	text_line(&t, crlf, line);
	text_line(&t, crlf, ".a line starting with a dot");
	text_line(&t, crlf, "..two dots");
	text_line(&t, crlf, ".");
	text_line(&t, crlf, "");
	if (i % 3 == 0)
		text_line(&t, crlf, "a bare \r carriage return");
	for (unsigned int n = 0; n < i % 7 * 10; n++)
		text_line(&t, crlf,
			  "filler filler filler filler filler filler filler "
			  "filler filler");
	if (i % 5 == 0)
		text_add(&t, "no final line break", 19);
	else
		text_line(&t, crlf, "last line");
	*len_r = t.len;
	return t.data;
}

/* ---- the maildir ---- */

static char *maildir(const char *user, const char *folder)
{
	return trib_strdup_printf(
		"%s/local/home/%s/Maildir%s%s", itest_env()->dir, user,
		folder != NULL ? "/." : "", folder != NULL ? folder : "");
}

static char *read_file(const char *path, size_t *len_r)
{
	FILE *f = fopen(path, "rb");
	struct stat st;
	char *data;

	assert_non_null(f);
	assert_int_equal(fstat(fileno(f), &st), 0);
	data = trib_malloc((size_t)st.st_size + 1);
	assert_int_equal(fread(data, 1, (size_t)st.st_size, f),
			 (size_t)st.st_size);
	data[st.st_size] = '\0';
	fclose(f);
	*len_r = (size_t)st.st_size;
	return data;
}

/* Skip the lines LMTP put on top: Return-Path, Delivered-To, Received
 * (with its continuation lines). */
static size_t skip_lmtp_headers(const char *data, size_t len)
{
	static const char *const names[] = { "Return-Path:", "Delivered-To:",
					     "Received:" };
	size_t pos = 0;
	bool skipping = false;

	while (pos < len) {
		const char *eol = memchr(data + pos, '\n', len - pos);
		bool ours = false;

		if (eol == NULL)
			break;
		for (size_t i = 0; i < TRIB_N_ELEMENTS(names); i++) {
			if (strncmp(data + pos, names[i], strlen(names[i])) ==
			    0)
				ours = true;
		}
		if (!ours &&
		    !(skipping && (data[pos] == ' ' || data[pos] == '\t')))
			break;
		skipping = true;
		pos = (size_t)(eol - data) + 1;
	}
	return pos;
}

static const char *find_bytes(const char *data, size_t len, const char *needle)
{
	size_t n = strlen(needle);

	for (size_t i = 0; i + n <= len; i++) {
		if (data[i] == needle[0] && memcmp(data + i, needle, n) == 0)
			return data + i;
	}
	return NULL;
}

typedef void stored_callback_t(unsigned int index, const char *data, size_t len,
			       void *context);

/* Every stored message of dir whose X-Trib-Test is "<tag>.NNNNNN". */
static void maildir_scan(const char *dir, const char *tag,
			 stored_callback_t *callback, void *context)
{
	static const char *const subdirs[] = { "new", "cur" };
	char needle[128], path[4096];
	struct dirent *de;
	DIR *d;

	snprintf(needle, sizeof(needle), "\nX-Trib-Test: %s.", tag);
	for (size_t i = 0; i < TRIB_N_ELEMENTS(subdirs); i++) {
		snprintf(path, sizeof(path), "%s/%s", dir, subdirs[i]);
		d = opendir(path);
		if (d == NULL)
			continue;
		while ((de = readdir(d)) != NULL) {
			size_t len, skip;
			const char *found;
			char *data;

			if (de->d_name[0] == '.')
				continue;
			snprintf(path, sizeof(path), "%s/%s/%s", dir,
				 subdirs[i], de->d_name);
			data = read_file(path, &len);
			skip = skip_lmtp_headers(data, len);
			found = find_bytes(
				data + skip,
				len - skip > 4096 ? 4096 : len - skip, needle);
			if (found != NULL)
				callback((unsigned int)strtoul(
						 found + strlen(needle), NULL,
						 10),
					 data + skip, len - skip, context);
			free(data);
		}
		closedir(d);
	}
}

struct batch_check {
	const char *tag;
	unsigned int count;
	bool data_mode;
	unsigned int *seen;
	unsigned int matched;
};

static void batch_stored(unsigned int index, const char *data, size_t len,
			 void *context)
{
	struct batch_check *c = context;
	size_t expected_len;
	char *expected;

	assert_true(index < c->count);
	c->seen[index]++;
	expected = make_message(c->tag, index, false, &expected_len);
	/* DATA needs a line break before its end marker */
	if (c->data_mode && expected[expected_len - 1] != '\n') {
		expected = trib_realloc(expected, expected_len + 2);
		expected[expected_len++] = '\n';
		expected[expected_len] = '\0';
	}
	if (len == expected_len && memcmp(data, expected, len) == 0)
		c->matched++;
	else
		print_message("%s.%u differs: %zu bytes stored, %zu sent\n",
			      c->tag, index, len, expected_len);
	free(expected);
}

/* ---- tests ---- */

/* count messages, all begun at once (pipelined on one session), bodies
 * in two pieces; even ones with LF, odd ones with CRLF */
static void deliver_batch(const char *address, const char *tag,
			  unsigned int count, bool chunking)
{
	struct session *s = session_new(address, chunking, 0);
	struct delivery *d = trib_calloc(count, sizeof(*d));
	struct batch_check check = {
		.tag = tag,
		.count = count,
		.data_mode = !chunking,
		.seen = trib_calloc(count, sizeof(unsigned int)),
	};
	char *dir = maildir("alice", NULL);

	for (unsigned int i = 0; i < count; i++) {
		struct trib_lmtp_message *msg;
		size_t len;
		char *body = make_message(tag, i, i % 2 == 1, &len);

		d[i].s = s;
		msg = trib_lmtp_message_begin(s->client, "alice", len,
					      delivery_cb, &d[i]);
		write_bytes(msg, body, len / 2);
		write_bytes(msg, body + len / 2, len - len / 2);
		trib_lmtp_message_finish(&msg);
		free(body);
	}
	session_wait_all(s, count);
	for (unsigned int i = 0; i < count; i++) {
		if (d[i].result.error_class != TRIB_OK)
			fail_msg("%s.%u: %s", tag, i, d[i].result.error);
		assert_int_equal(d[i].result.calls, 1);
		assert_int_equal(d[i].result.code, 250);
	}
	assert_false(s->closed);
	maildir_scan(dir, tag, batch_stored, &check);
	for (unsigned int i = 0; i < count; i++)
		assert_int_equal(check.seen[i], 1);
	assert_int_equal(check.matched, count);
	free(check.seen);
	free(dir);
	free(d);
	session_free(&s);
}

static void test_unix_socket_200_pipelined(void **state)
{
	(void)state;
	deliver_batch(unix_address(), "unix", 200, true);
	/* the trace shows the server's words (the log keeps the last
	 * lines: the replies of the last messages) */
	assert_true(itest_log_contains("Saved"));
}

static void test_tcp_200_pipelined(void **state)
{
	(void)state;
	deliver_batch(tcp_address(), "tcp", 200, true);
}

static void test_data_with_dot_stuffing(void **state)
{
	(void)state;
	deliver_batch(unix_address(), "data", 30, false);
	assert_true(itest_log_contains("C: DATA"));
	assert_true(itest_log_contains("S: 354"));
	assert_false(itest_log_contains("C: BDAT"));
}

struct big_check {
	const char *data;
	size_t len;
	unsigned int seen, matched;
};

static void big_stored(unsigned int index, const char *data, size_t len,
		       void *context)
{
	struct big_check *c = context;

	assert_int_equal(index, 0);
	c->seen++;
	if (len == c->len && memcmp(data, c->data, len) == 0)
		c->matched++;
	else
		print_message("big message differs: %zu stored, %zu sent\n",
			      len, c->len);
}

static void test_25mb_streamed(void **state)
{
	const size_t size = 25 * 1024 * 1024, piece = 64 * 1024;
	struct session *s = session_new(unix_address(), true, 0);
	struct delivery d = { .s = s };
	struct trib_lmtp_message *msg;
	struct big_check check = { 0 };
	struct text t = { NULL, 0, 0 };
	size_t off = 0, max_queued = 0;
	char line[160], *dir;
	unsigned int n = 0;

	(void)state;
	text_line(&t, false, "From: big@example.com");
	text_line(&t, false, "Subject: 25 MB");
	text_line(&t, false, "X-Trib-Test: big.000000");
	text_line(&t, false, "");
	while (t.len < size) {
		snprintf(line, sizeof(line),
			 "%s%07u \xc3\xa4\xc3\xb6\xc3\xbc %.*s",
			 n % 50 == 0 ? "." : "", n, (int)(n % 90),
			 "0123456789abcdefghijklmnopqrstuvwxyz0123456789abcdefg"
			 "hijklmnopqrstuvwxyz0123456789abcdefghij");
		n++;
		text_line(&t, false, line);
	}
	t.len = size; /* cut mid-line: no final line break */

	msg = trib_lmtp_message_begin(s->client, "alice", size, delivery_cb,
				      &d);
	while (off < size) {
		size_t len = size - off < piece ? size - off : piece;

		if (trib_lmtp_client_is_full(s->client)) {
			/* the IMAP side would stop reading here */
			s->drained = false;
			assert_true(itest_run_until(s->loop, &s->drained,
						    DEADLINE));
			continue;
		}
		write_bytes(msg, t.data + off, len);
		off += len;
		if (trib_lmtp_client_queued(s->client) > max_queued)
			max_queued = trib_lmtp_client_queued(s->client);
		event_base_loop(trib_loop_base(s->loop), EVLOOP_NONBLOCK);
	}
	trib_lmtp_message_finish(&msg);
	session_wait_all(s, 1);
	if (d.result.error_class != TRIB_OK)
		fail_msg("25 MB: %s", d.result.error);
	/* memory does not grow with the message: what waits is bounded by
	 * the high watermark (1 MiB) and one piece */
	print_message("25 MB: at most %zu bytes queued\n", max_queued);
	assert_true(max_queued <= 1024 * 1024 + piece);
	/* the body went out in chunks after the RCPT reply */
	assert_true(itest_log_contains("BDAT "));
	dir = maildir("alice", NULL);
	check.data = t.data;
	check.len = size;
	maildir_scan(dir, "big", big_stored, &check);
	assert_int_equal(check.seen, 1);
	assert_int_equal(check.matched, 1);
	free(dir);
	free(t.data);
	session_free(&s);
}

static void test_detail_lands_in_folder(void **state)
{
	struct session *s = session_new(tcp_address(), true, 0);
	struct delivery d = { .s = s };
	struct batch_check check = {
		.tag = "work",
		.count = 1,
		.seen = trib_calloc(1, sizeof(unsigned int)),
	};
	struct trib_lmtp_message *msg;
	char *dir, *inbox;
	size_t len;
	char *body = make_message("work", 0, true, &len);

	(void)state;
	msg = trib_lmtp_message_begin(s->client, "alice+Work", len, delivery_cb,
				      &d);
	write_bytes(msg, body, len);
	trib_lmtp_message_finish(&msg);
	session_wait_all(s, 1);
	if (d.result.error_class != TRIB_OK)
		fail_msg("alice+Work: %s", d.result.error);
	dir = maildir("alice", "Work");
	maildir_scan(dir, "work", batch_stored, &check);
	assert_int_equal(check.seen[0], 1);
	assert_int_equal(check.matched, 1);
	/* and not in INBOX */
	inbox = maildir("alice", NULL);
	check.seen[0] = 0;
	maildir_scan(inbox, "work", batch_stored, &check);
	assert_int_equal(check.seen[0], 0);
	free(inbox);
	free(dir);
	free(body);
	free(check.seen);
	session_free(&s);
}

static void test_unknown_user_refused_alone(void **state)
{
	static const char *const rcpts[] = { "alice", "nosuchuser", "bob" };
	struct session *s = session_new(unix_address(), true, 0);
	struct delivery d[3];
	struct trib_lmtp_message *msg;
	size_t len;

	(void)state;
	memset(d, 0, sizeof(d));
	for (unsigned int i = 0; i < 3; i++) {
		char *body = make_message("unknown", i, true, &len);

		d[i].s = s;
		msg = trib_lmtp_message_begin(s->client, rcpts[i], len,
					      delivery_cb, &d[i]);
		write_bytes(msg, body, len);
		trib_lmtp_message_finish(&msg);
		free(body);
	}
	session_wait_all(s, 3);
	assert_int_equal(d[0].result.error_class, TRIB_OK);
	assert_int_equal(d[1].result.calls, 1);
	assert_int_equal(d[1].result.error_class, TRIB_ERR_PERM);
	assert_int_equal(d[1].result.code, 550);
	print_message("refused: %s\n", d[1].result.error);
	assert_non_null(strstr(d[1].result.error, "unix:"));
	assert_non_null(strstr(d[1].result.error, "<nosuchuser>: RCPT TO "
						  "refused: 550 5.1.1"));
	assert_int_equal(d[2].result.error_class, TRIB_OK);
	assert_false(s->closed);
	session_free(&s);
}

static void abort_stored(unsigned int index, const char *data, size_t len,
			 void *context)
{
	unsigned int *seen = context;

	(void)data;
	(void)len;
	assert_true(index < 2);
	seen[index]++;
}

static void test_abort_mid_bdat_stores_nothing(void **state)
{
	/* large from 4 KiB: the body streams in chunks after RCPT */
	struct session *s = session_new(unix_address(), true, 4096);
	struct delivery d[2];
	struct trib_lmtp_message *msg;
	unsigned int seen[2] = { 0, 0 };
	char *body, *dir;
	size_t len;

	(void)state;
	memset(d, 0, sizeof(d));
	d[0].s = d[1].s = s;
	itest_log_clear();
	/* 100 KB, of which half is sent before the source fails */
	body = make_message("abort", 0, true, &len);
	{
		struct text t = { body, len, len + 1 };

		while (t.len < 100 * 1024)
			text_line(&t, true, "more and more of the same line");
		body = t.data;
		len = t.len;
	}
	msg = trib_lmtp_message_begin(s->client, "alice", len, delivery_cb,
				      &d[0]);
	write_bytes(msg, body, len / 2);
	for (unsigned int i = 0; i < 200 && !itest_log_contains("Added"); i++)
		event_base_loop(trib_loop_base(s->loop), EVLOOP_ONCE);
	/* Dovecot holds part of the message: "250 2.0.0 Added n octets" */
	assert_true(itest_log_contains("Added"));
	trib_lmtp_message_abort(&msg, "the remote dropped the connection");
	free(body);
	/* the next transaction on the same session */
	body = make_message("abort", 1, true, &len);
	msg = trib_lmtp_message_begin(s->client, "alice", len, delivery_cb,
				      &d[1]);
	write_bytes(msg, body, len);
	trib_lmtp_message_finish(&msg);
	free(body);
	session_wait_all(s, 2);
	assert_int_equal(d[0].result.error_class, TRIB_ERR_CANCELED);
	assert_non_null(strstr(d[0].result.error, "aborted: the remote "
						  "dropped"));
	assert_int_equal(d[1].result.error_class, TRIB_OK);
	assert_true(itest_log_contains("C: RSET"));
	assert_true(itest_log_contains("S: 250 2.0.0 OK"));
	dir = maildir("alice", NULL);
	maildir_scan(dir, "abort", abort_stored, seen);
	/* the partial message was never stored, the next one was */
	assert_int_equal(seen[0], 0);
	assert_int_equal(seen[1], 1);
	free(dir);
	session_free(&s);
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
		cmocka_unit_test_teardown(test_unix_socket_200_pipelined,
					  teardown_logs),
		cmocka_unit_test_teardown(test_tcp_200_pipelined,
					  teardown_logs),
		cmocka_unit_test_teardown(test_data_with_dot_stuffing,
					  teardown_logs),
		cmocka_unit_test_teardown(test_25mb_streamed, teardown_logs),
		cmocka_unit_test_teardown(test_detail_lands_in_folder,
					  teardown_logs),
		cmocka_unit_test_teardown(test_unknown_user_refused_alone,
					  teardown_logs),
		cmocka_unit_test_teardown(test_abort_mid_bdat_stores_nothing,
					  teardown_logs),
	};

	itest_env();
	return cmocka_run_group_tests(tests, NULL, NULL);
}
