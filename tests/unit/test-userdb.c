/* test-userdb.c: the auth userdb client against a scripted fake auth
 * service on a UNIX socket in a temporary directory: the handshake,
 * answers out of order, escapes, malformed and over-long lines, FAIL,
 * NOTFOUND, a LIST with duplicates, an answer to no request, a dropped
 * connection, timeouts, and destroy with requests pending. What a real
 * Dovecot says is checked by tests/integration/test-userdb.c. */

#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>

#include <cmocka.h>

#include "alloc.h"
#include "fake-peer.h"
#include "loop.h"
#include "userdb.h"

#include <event2/buffer.h>
#include <event2/event.h>
#include <signal.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/time.h>
#include <sys/un.h>
#include <unistd.h>

#define GREETING "VERSION\t1\t1\nSPID\t4242\n"

/* ---- the scripted auth service ---- */

/* The script (fake-peer.h) sees request lines; a step's send goes to the
 * connection that sent the line, with "%I" replaced by that line's id and
 * "%1".."%9" by the id of the n-th request line seen. One script runs
 * across the connections. */
struct fake {
	struct fake_peer *peer;
	const char *greeting; /* sent on accept; NULL = nothing */
	struct fake_peer_script script;
	char ids[16][16]; /* ids of request lines, in order */
	unsigned int id_count;
};

static void fake_send(struct fake *f, struct fake_peer_conn *conn,
		      const char *text, const char *id)
{
	const char *p;

	while ((p = strchr(text, '%')) != NULL) {
		fake_peer_conn_write(conn, text, (size_t)(p - text));
		if (p[1] == 'I') {
			fake_peer_conn_send(conn, id);
		} else if (p[1] >= '1' && p[1] <= '9') {
			unsigned int n = (unsigned int)(p[1] - '1');

			assert_true(n < f->id_count);
			fake_peer_conn_send(conn, f->ids[n]);
		} else {
			fake_peer_conn_write(conn, p, 1);
			text = p + 1;
			continue;
		}
		text = p + 2;
	}
	fake_peer_conn_send(conn, text);
}

static void fake_run_steps(struct fake *f, struct fake_peer_conn *conn,
			   const char *line, const char *id)
{
	const struct fake_peer_step *st;

	while ((st = fake_peer_script_next(&f->script, conn, &line)) != NULL)
		fake_send(f, conn, st->send, id);
}

static void fake_input(struct fake_peer_conn *conn, void *context)
{
	struct fake *f = context;
	size_t len;
	char *line;

	while (fake_peer_conn_is_open(conn) &&
	       (line = evbuffer_readln(fake_peer_conn_input(conn), &len,
				       EVBUFFER_EOL_LF)) != NULL) {
		char id[16] = "";
		const char *tab = strchr(line, '\t');

		fake_peer_transcript_add(f->peer, line);
		if (strncmp(line, "VERSION\t", 8) != 0) {
			if (tab != NULL)
				snprintf(id, sizeof(id), "%.*s",
					 (int)strcspn(tab + 1, "\t"), tab + 1);
			if (f->id_count < 16)
				snprintf(f->ids[f->id_count++],
					 sizeof(f->ids[0]), "%s", id);
			fake_run_steps(f, conn, line, id);
		}
		free(line);
	}
}

static void fake_accepted(struct fake_peer_conn *conn, void *context)
{
	struct fake *f = context;

	if (f->greeting != NULL)
		fake_send(f, conn, f->greeting, "");
}

static const struct fake_peer_callbacks fake_callbacks = {
	.accepted = fake_accepted,
	.input = fake_input,
};

static struct fake *fake_new(struct trib_loop *loop)
{
	struct fake *f = trib_calloc(1, sizeof(*f));

	f->greeting = GREETING;
	f->peer =
		fake_peer_create(loop, "tributary-userdb", &fake_callbacks, f);
	return f;
}

static void fake_script(struct fake *f, const struct fake_peer_step *script,
			unsigned int count)
{
	f->script.steps = script;
	f->script.count = count;
	f->script.pos = 0;
}

static void fake_free(struct fake **_f)
{
	struct fake *f = *_f;

	fake_peer_destroy(&f->peer);
	free(f);
	*_f = NULL;
}

/* ---- the client side ---- */

struct result {
	unsigned int calls;
	int result;
	char error[512];
	char name[128];
	char fields[512]; /* "k=v|k=v|" */
	const char *home; /* trib_userdb_field_get(), copied */
	char home_buf[128];
	bool nologin_empty, absent_is_null;
	unsigned int count;
	char users[512]; /* "a|b|" */
	bool users_terminated;
	/* when set, destroy this client in the callback */
	struct trib_userdb_client **destroy;
};

static void lookup_cb(int result, const struct trib_userdb_user *user,
		      const char *error, void *context)
{
	struct result *r = context;

	r->calls++;
	r->result = result;
	snprintf(r->error, sizeof(r->error), "%s", error != NULL ? error : "");
	if (result == 1) {
		assert_non_null(user);
		assert_null(error);
		snprintf(r->name, sizeof(r->name), "%s", user->name);
		r->fields[0] = '\0';
		for (unsigned int i = 0; i < user->count; i++) {
			size_t used = strlen(r->fields);

			snprintf(r->fields + used, sizeof(r->fields) - used,
				 "%s=%s|", user->fields[i].key,
				 user->fields[i].value);
		}
		r->count = user->count;
		if (trib_userdb_field_get(user, "home") != NULL) {
			snprintf(r->home_buf, sizeof(r->home_buf), "%s",
				 trib_userdb_field_get(user, "home"));
			r->home = r->home_buf;
		}
		r->nologin_empty =
			trib_userdb_field_get(user, "nologin") != NULL &&
			trib_userdb_field_get(user, "nologin")[0] == '\0';
		r->absent_is_null =
			trib_userdb_field_get(user, "no-such-key") == NULL;
	} else {
		assert_null(user);
		if (result == 0)
			assert_null(error);
		else
			assert_non_null(error);
	}
	if (r->destroy != NULL)
		trib_userdb_client_destroy(r->destroy);
}

static void list_cb(int result, const char *const *users, unsigned int count,
		    const char *error, void *context)
{
	struct result *r = context;

	r->calls++;
	r->result = result;
	r->count = count;
	snprintf(r->error, sizeof(r->error), "%s", error != NULL ? error : "");
	r->users[0] = '\0';
	for (unsigned int i = 0; i < count; i++) {
		size_t used = strlen(r->users);

		snprintf(r->users + used, sizeof(r->users) - used, "%s|",
			 users[i]);
	}
	r->users_terminated = users[count] == NULL;
	if (result < 0)
		assert_non_null(error);
	else
		assert_null(error);
	if (r->destroy != NULL)
		trib_userdb_client_destroy(r->destroy);
}

struct fixture {
	struct trib_loop *loop;
	struct fake *fake;
	struct trib_userdb_client *client;
	char logs[4096];
};

static void log_cb(void *context, enum trib_log_level level,
		   const char *message)
{
	struct fixture *fx = context;
	size_t used = strlen(fx->logs);

	snprintf(fx->logs + used, sizeof(fx->logs) - used, "%s: %s\n",
		 trib_log_level_name(level), message);
}

static struct trib_logger test_logger;
/* The fixture of the running test, freed by teardown when a failed
 * assertion skipped the test's own fixture_free(). */
static struct fixture *current;

static struct fixture *fixture_new(unsigned int timeout_secs)
{
	struct fixture *fx = trib_calloc(1, sizeof(*fx));
	const char *error;

	fx->loop = trib_loop_create(&error);
	assert_non_null(fx->loop);
	fx->fake = fake_new(fx->loop);
	test_logger.log = log_cb;
	test_logger.context = fx;
	test_logger.min_level = TRIB_LOG_INFO;
	fx->client = trib_userdb_client_create(
		fx->loop, fake_peer_unix_path(fx->fake->peer), timeout_secs,
		&test_logger);
	current = fx;
	return fx;
}

static void fixture_free(struct fixture **_fx)
{
	struct fixture *fx = *_fx;

	*_fx = NULL;
	current = NULL;
	trib_userdb_client_destroy(&fx->client);
	fake_free(&fx->fake);
	trib_loop_destroy(&fx->loop);
	free(fx);
}

static double now_secs(void)
{
	struct timeval tv;

	gettimeofday(&tv, NULL);
	return (double)tv.tv_sec + (double)tv.tv_usec / 1e6;
}

static void tick_cb(evutil_socket_t fd, short what, void *ctx)
{
	(void)fd;
	(void)what;
	(void)ctx;
}

/* Run the loop until every result has been called back or secs pass. */
static void run_until(struct fixture *fx, struct result *const *results,
		      unsigned int count, double secs)
{
	struct event_base *base = trib_loop_base(fx->loop);
	struct timeval tv = { 0, 20000 };
	struct event *tick = event_new(base, -1, EV_PERSIST, tick_cb, NULL);
	double deadline = now_secs() + secs;
	bool all;

	event_add(tick, &tv);
	do {
		all = true;
		for (unsigned int i = 0; i < count; i++)
			all = all && results[i]->calls > 0;
		if (all)
			break;
		event_base_loop(base, EVLOOP_ONCE);
	} while (now_secs() < deadline);
	event_free(tick);
}

static void run_one(struct fixture *fx, struct result *r)
{
	struct result *results[] = { r };

	run_until(fx, results, 1, 5);
	assert_int_equal(r->calls, 1);
}

/* Let the loop run a little: nothing should happen any more. */
static void settle(struct fixture *fx, unsigned int ms)
{
	struct timeval tv = { 0, (suseconds_t)ms * 1000 };

	event_base_loopexit(trib_loop_base(fx->loop), &tv);
	event_base_dispatch(trib_loop_base(fx->loop));
}

static char *expected_error(const struct fixture *fx, const char *tail)
{
	return trib_strdup_printf("userdb socket %s: %s",
				  fake_peer_unix_path(fx->fake->peer), tail);
}

static void assert_error(const struct fixture *fx, const struct result *r,
			 const char *tail)
{
	char *want = expected_error(fx, tail);

	assert_int_equal(r->result, -1);
	assert_string_equal(r->error, want);
	free(want);
}

/* ---- lookups ---- */

static void test_lookup_found(void **state)
{
	static const struct fake_peer_step script[] = {
		{ "USER\t", "USER\t%I\talice@example.com\tuid=1000\tgid=1000"
			    "\thome=/home/alice\tnologin\t"
			    "tributary_accounts=work, home\n" },
	};
	struct fixture *fx = fixture_new(5);
	struct result r = { 0 };

	(void)state;
	fake_script(fx->fake, script, 1);
	trib_userdb_lookup(fx->client, "Alice@Example.com", lookup_cb, &r);
	assert_int_equal(r.calls, 0); /* never inside the call */
	run_one(fx, &r);
	assert_int_equal(r.result, 1);
	assert_string_equal(r.name, "alice@example.com");
	assert_int_equal(r.count, 5);
	assert_string_equal(r.fields, "uid=1000|gid=1000|home=/home/alice|"
				      "nologin=|tributary_accounts=work, "
				      "home|");
	assert_string_equal(r.home, "/home/alice");
	assert_true(r.nologin_empty);
	assert_true(r.absent_is_null);
	assert_string_equal(fake_peer_transcript(fx->fake->peer),
			    "VERSION\t1\t0|"
			    "USER\t1\tAlice@Example.com\tservice=tributary|");
	settle(fx, 30);
	assert_int_equal(r.calls, 1);
	assert_string_equal(fx->logs, "");
	fixture_free(&fx);
}

static void test_lookup_no_fields_trailing_tab(void **state)
{
	/* Dovecot ends a USER answer without fields in a TAB */
	static const struct fake_peer_step script[] = {
		{ "USER\t", "USER\t%I\tbob\t\n" },
	};
	struct fixture *fx = fixture_new(5);
	struct result r = { 0 };

	(void)state;
	fake_script(fx->fake, script, 1);
	trib_userdb_lookup(fx->client, "bob", lookup_cb, &r);
	run_one(fx, &r);
	assert_int_equal(r.result, 1);
	assert_string_equal(r.name, "bob");
	assert_int_equal(r.count, 0);
	assert_null(r.home);
	fixture_free(&fx);
}

static void test_lookup_escapes(void **state)
{
	static const struct fake_peer_step script[] = {
		{ "USER\t", "USER\t%I\tc\001tarol\tnote=a\001tb\001nc\001rd"
			    "\0011e=f\tk\001tey=v\n" },
	};
	struct fixture *fx = fixture_new(5);
	struct result r = { 0 };

	(void)state;
	fake_script(fx->fake, script, 1);
	/* \001 in a name is sent escaped: Dovecot unescapes requests */
	trib_userdb_lookup(fx->client, "x\001y", lookup_cb, &r);
	run_one(fx, &r);
	assert_int_equal(r.result, 1);
	assert_string_equal(r.name, "c\tarol");
	assert_string_equal(r.fields, "note=a\tb\nc\rd\001e=f|k\tey=v|");
	assert_string_equal(fake_peer_transcript(fx->fake->peer),
			    "VERSION\t1\t0|"
			    "USER\t1\tx\0011y\tservice=tributary|");
	fixture_free(&fx);
}

static void test_lookup_bad_escapes(void **state)
{
	static const struct fake_peer_step script[] = {
		{ "USER\t", "USER\t%I\tu\tpath=/a\0010b\n" },
		{ "USER\t", "USER\t%I\tu\tpath=/a\001xb\n" },
		{ "USER\t", "USER\t%I\tu\tpath=/a\001\n" },
		{ "USER\t", "USER\t%I\tu\001\tuid=1\n" },
		{ "USER\t", "USER\t%I\tu\t=value\n" },
		{ "USER\t", "USER\t%I\n" },
		{ "USER\t", "USER\t%I\tu\tuid=1\n" },
	};
	static const char *const errors[] = {
		"lookup of 'a' got field path that holds a NUL byte",
		"lookup of 'b' got field path that holds an unknown escape",
		"lookup of 'c' got field path that holds an escape is cut "
		"short",
		"lookup of 'd' got a user name that holds an escape is cut "
		"short",
		"lookup of 'e' got a field without a name",
		"lookup of 'f' got an answer without a user name",
	};
	struct fixture *fx = fixture_new(5);
	struct result r[7];
	char name[2] = "a";

	(void)state;
	memset(r, 0, sizeof(r));
	fake_script(fx->fake, script, 7);
	for (unsigned int i = 0; i < 7; i++) {
		name[0] = (char)('a' + i);
		trib_userdb_lookup(fx->client, name, lookup_cb, &r[i]);
		run_one(fx, &r[i]);
		if (i < 6)
			assert_error(fx, &r[i], errors[i]);
	}
	/* a bad answer fails its request only: the connection stays */
	assert_int_equal(r[6].result, 1);
	assert_int_equal(fake_peer_conn_count(fx->fake->peer), 1);
	fixture_free(&fx);
}

static void test_notfound_and_fail(void **state)
{
	static const struct fake_peer_step script[] = {
		{ "USER\t", "NOTFOUND\t%I\n" },
		{ "USER\t", "FAIL\t%I\treason=ldap down\001nretry\n" },
		{ "USER\t", "FAIL\t%I\n" },
	};
	struct fixture *fx = fixture_new(5);
	struct result nf = { 0 }, fail = { 0 }, bare = { 0 };

	(void)state;
	fake_script(fx->fake, script, 3);
	trib_userdb_lookup(fx->client, "nobody", lookup_cb, &nf);
	run_one(fx, &nf);
	assert_int_equal(nf.result, 0);
	assert_string_equal(nf.error, "");
	trib_userdb_lookup(fx->client, "bob", lookup_cb, &fail);
	run_one(fx, &fail);
	assert_error(fx, &fail, "lookup of 'bob' failed: ldap down?retry");
	trib_userdb_lookup(fx->client, "carol", lookup_cb, &bare);
	run_one(fx, &bare);
	assert_error(fx, &bare,
		     "lookup of 'carol' failed without a reason (Dovecot's "
		     "auth log has it; a listener with mode 0666 answers "
		     "only for users whose uid is the fetcher's)");
	assert_int_equal(fake_peer_conn_count(fx->fake->peer), 1);
	fixture_free(&fx);
}

static void test_pipelined_out_of_order(void **state)
{
	static const struct fake_peer_step script[] = {
		{ "USER\t", NULL },
		{ "USER\t", NULL },
		{ "USER\t", "USER\t%3\tcarol\tuid=3\nNOTFOUND\t%1\n"
			    "USER\t%2\tbob\tuid=2\n" },
	};
	struct fixture *fx = fixture_new(5);
	struct result a = { 0 }, b = { 0 }, c = { 0 };
	struct result *all[] = { &a, &b, &c };

	(void)state;
	fake_script(fx->fake, script, 3);
	trib_userdb_lookup(fx->client, "alice", lookup_cb, &a);
	trib_userdb_lookup(fx->client, "bob", lookup_cb, &b);
	trib_userdb_lookup(fx->client, "carol", lookup_cb, &c);
	assert_int_equal(a.calls + b.calls + c.calls, 0);
	run_until(fx, all, 3, 5);
	assert_int_equal(a.calls, 1);
	assert_int_equal(b.calls, 1);
	assert_int_equal(c.calls, 1);
	assert_int_equal(a.result, 0);
	assert_string_equal(b.fields, "uid=2|");
	assert_string_equal(c.fields, "uid=3|");
	assert_int_equal(fake_peer_conn_count(fx->fake->peer), 1);
	assert_string_equal(fake_peer_transcript(fx->fake->peer),
			    "VERSION\t1\t0|"
			    "USER\t1\talice\tservice=tributary|"
			    "USER\t2\tbob\tservice=tributary|"
			    "USER\t3\tcarol\tservice=tributary|");
	fixture_free(&fx);
}

static void test_answer_one_byte_at_a_time(void **state)
{
	struct fixture *fx = fixture_new(5);
	static const char answer[] = "VERSION\t1\t1\nSPID\t1\n"
				     "USER\t1\tdan\tuid=4\thome=/h/dan\n";
	struct result r = { 0 };
	struct fake_peer_conn *srv;

	(void)state;
	fx->fake->greeting = NULL;
	trib_userdb_lookup(fx->client, "dan", lookup_cb, &r);
	while (fake_peer_conn_count(fx->fake->peer) == 0)
		event_base_loop(trib_loop_base(fx->loop), EVLOOP_ONCE);
	srv = fake_peer_get_conn(fx->fake->peer, 0);
	for (size_t i = 0; i + 1 < sizeof(answer); i++) {
		assert_int_equal(r.calls, 0);
		fake_peer_conn_write(srv, answer + i, 1);
		settle(fx, 1);
	}
	run_one(fx, &r);
	assert_int_equal(r.result, 1);
	assert_string_equal(r.fields, "uid=4|home=/h/dan|");
	fixture_free(&fx);
}

static void test_answer_to_no_request(void **state)
{
	static const struct fake_peer_step script[] = {
		{ "USER\t", "USER\t99\tmallory\tuid=0\nUSER\t%I\terin\t\n" },
	};
	struct fixture *fx = fixture_new(5);
	struct result r = { 0 };
	char *want;

	(void)state;
	fake_script(fx->fake, script, 1);
	trib_userdb_lookup(fx->client, "erin", lookup_cb, &r);
	run_one(fx, &r);
	assert_int_equal(r.result, 1);
	assert_string_equal(r.name, "erin");
	want = trib_strdup_printf("warning: userdb socket %s: ignoring an "
				  "answer to no request: USER?99?mallory?"
				  "uid=0\n",
				  fake_peer_unix_path(fx->fake->peer));
	assert_string_equal(fx->logs, want);
	free(want);
	fixture_free(&fx);
}

/* A line the protocol does not allow drops the connection: every request
 * on it fails, and the next request connects again. */
static void test_protocol_errors(void **state)
{
	static const struct fake_peer_step script[] = {
		{ "USER\t", "HELLO\t%I\n" },  { "USER\t", "USER\tabc\tx\n" },
		{ "USER\t", "DONE\t%I\t\n" }, { "USER\t", "USER\t0\tx\n" },
		{ "USER\t", "\n" },	      { "USER\t", "USER\t%I\tok\t\n" },
	};
	static const char *const errors[] = {
		"protocol error: unexpected line: HELLO?1",
		"protocol error: unexpected line: USER?abc?x",
		"protocol error: unexpected line: DONE?3?",
		"protocol error: unexpected line: USER?0?x",
		"protocol error: unexpected line: ",
	};
	struct fixture *fx = fixture_new(5);
	struct result r[6];

	(void)state;
	memset(r, 0, sizeof(r));
	fake_script(fx->fake, script, 6);
	for (unsigned int i = 0; i < 6; i++) {
		trib_userdb_lookup(fx->client, "u", lookup_cb, &r[i]);
		run_one(fx, &r[i]);
		if (i < 5)
			assert_error(fx, &r[i], errors[i]);
	}
	assert_int_equal(r[5].result, 1);
	assert_int_equal(fake_peer_conn_count(fx->fake->peer), 6);
	fixture_free(&fx);
}

static void test_dropped_connection(void **state)
{
	static const struct fake_peer_step script[] = {
		{ "USER\t", NULL },
		{ "USER\t", "USER\t%1\talice\tuid=" },
		{ NULL, FAKE_PEER_CLOSE },
		{ "USER\t", "USER\t%I\tcarol\t\n" },
	};
	struct fixture *fx = fixture_new(5);
	struct result a = { 0 }, b = { 0 }, c = { 0 };
	struct result *two[] = { &a, &b };

	(void)state;
	fake_script(fx->fake, script, 4);
	trib_userdb_lookup(fx->client, "alice", lookup_cb, &a);
	trib_userdb_lookup(fx->client, "bob", lookup_cb, &b);
	run_until(fx, two, 2, 5);
	assert_int_equal(a.calls, 1);
	assert_int_equal(b.calls, 1);
	assert_error(fx, &a, "the auth service closed the connection");
	assert_error(fx, &b, "the auth service closed the connection");
	/* reconnect on the next request */
	trib_userdb_lookup(fx->client, "carol", lookup_cb, &c);
	run_one(fx, &c);
	assert_int_equal(c.result, 1);
	assert_int_equal(fake_peer_conn_count(fx->fake->peer), 2);
	fixture_free(&fx);
}

static void test_line_over_the_cap(void **state)
{
	/* the default cap, 1 MiB: a line without its LF at 1 MiB fails */
	size_t size = 1024 * 1024 + 100;
	char *big = trib_malloc(size + 1);
	struct fake_peer_step script[] = {
		{ "USER\t", big },
	};
	struct fixture *fx = fixture_new(5);
	struct result r = { 0 };

	(void)state;
	memcpy(big, "USER\t%I\tu\tdata=", 15);
	memset(big + 15, 'x', size - 15);
	big[size] = '\0';
	fake_script(fx->fake, script, 1);
	trib_userdb_lookup(fx->client, "u", lookup_cb, &r);
	run_one(fx, &r);
	assert_error(fx, &r,
		     "protocol error: a line longer than 1048576 bytes");
	fixture_free(&fx);
	free(big);
}

static void test_small_limits(void **state)
{
	static const struct fake_peer_step script[] = {
		{ "USER\t", "USER\t%I\tu\ta=1\tb=2\tc=3\n" },
		{ "USER\t", "USER\t%I\tu\ta=1\tb=2\tc=3\td=4\n" },
		{ "USER\t",
		  "USER\t%I\tu\ta=1234567890123456789012345678901234567"
		  "\n" },
		{ "USER\t",
		  "USER\t%I\tu\ta=123456789012345678901234567890123456"
		  "\n" },
	};
	const struct trib_userdb_limits limits = {
		.max_line = 48,
		.max_fields = 3,
	};
	struct fixture *fx = fixture_new(5);
	struct result r[4];

	(void)state;
	memset(r, 0, sizeof(r));
	trib_userdb_client_set_limits(fx->client, &limits);
	fake_script(fx->fake, script, 4);
	for (unsigned int i = 0; i < 4; i++) {
		trib_userdb_lookup(fx->client, "u", lookup_cb, &r[i]);
		run_one(fx, &r[i]);
	}
	assert_int_equal(r[0].result, 1);
	assert_int_equal(r[0].count, 3);
	assert_error(fx, &r[1], "lookup of 'u' got more than 3 fields");
	/* "USER\t3\tu\ta=<37 digits>\n" is 49 bytes, one more than allowed;
	 * the next line is 48 */
	assert_error(fx, &r[2], "protocol error: a line longer than 48 bytes");
	assert_int_equal(r[3].result, 1);
	assert_int_equal(fake_peer_conn_count(fx->fake->peer), 2);
	fixture_free(&fx);
}

/* ---- the handshake ---- */

static void handshake_case(const char *greeting, const char *error)
{
	struct fixture *fx = fixture_new(5);
	struct result r = { 0 };

	fx->fake->greeting = greeting;
	trib_userdb_lookup(fx->client, "u", lookup_cb, &r);
	run_one(fx, &r);
	assert_error(fx, &r, error);
	fixture_free(&fx);
}

static void test_handshake_errors(void **state)
{
	(void)state;
	handshake_case("VERSION\t2\t0\nSPID\t1\n",
		       "unsupported protocol version: VERSION?2?0 (this "
		       "client speaks the auth-master protocol 1)");
	handshake_case("VERSION\t1\t2\nMECH\tPLAIN\tplaintext\nSPID\t1\n"
		       "CUID\t1\nDONE\n",
		       "this is an authentication client socket, not a "
		       "userdb listener (auth-userdb or tributary-userdb)");
	handshake_case("SPID\t1\n", "protocol error: unexpected handshake "
				    "line: SPID?1");
	handshake_case("USER\t1\tu\t\n", "protocol error: unexpected "
					 "handshake line: USER?1?u?");
}

static void test_closed_during_handshake(void **state)
{
	static const struct fake_peer_step script[] = {
		{ "USER\t", FAKE_PEER_CLOSE },
	};
	struct fixture *fx = fixture_new(5);
	struct result r = { 0 };

	(void)state;
	fx->fake->greeting = NULL;
	fake_script(fx->fake, script, 1);
	trib_userdb_lookup(fx->client, "u", lookup_cb, &r);
	run_one(fx, &r);
	assert_error(fx, &r,
		     "the auth service closed the connection during the "
		     "handshake (Dovecot's auth log has the cause)");
	fixture_free(&fx);
}

/* ---- LIST ---- */

static void test_list_sorted_unique(void **state)
{
	static const struct fake_peer_step script[] = {
		{ "LIST\t", "LIST\t%I\tcarol\nLIST\t%I\talice\nLIST\t%I\tbob\n"
			    "LIST\t%I\talice\nLIST\t%I\ta\001tb\n"
			    "LIST\t%I\tcarol\nDONE\t%I\t\n" },
	};
	struct fixture *fx = fixture_new(5);
	struct result r = { 0 };

	(void)state;
	fake_script(fx->fake, script, 1);
	trib_userdb_list(fx->client, list_cb, &r);
	assert_int_equal(r.calls, 0);
	run_one(fx, &r);
	assert_int_equal(r.result, 1);
	assert_int_equal(r.count, 4);
	assert_string_equal(r.users, "a\tb|alice|bob|carol|");
	assert_true(r.users_terminated);
	assert_string_equal(fake_peer_transcript(fx->fake->peer),
			    "VERSION\t1\t0|LIST\t1\tservice=tributary|");
	/* the LIST connection is closed once DONE */
	settle(fx, 30);
	assert_true(
		fake_peer_conn_hung_up(fake_peer_get_conn(fx->fake->peer, 0)));
	fixture_free(&fx);
}

static void test_list_empty_and_fail(void **state)
{
	static const struct fake_peer_step script[] = {
		{ "LIST\t", "DONE\t%I\n" },
		{ "LIST\t", "DONE\t%I\tfail\n" },
	};
	struct fixture *fx = fixture_new(5);
	struct result empty = { 0 }, fail = { 0 };

	(void)state;
	fake_script(fx->fake, script, 2);
	trib_userdb_list(fx->client, list_cb, &empty);
	run_one(fx, &empty);
	assert_int_equal(empty.result, 1);
	assert_int_equal(empty.count, 0);
	assert_true(empty.users_terminated);
	trib_userdb_list(fx->client, list_cb, &fail);
	run_one(fx, &fail);
	assert_error(fx, &fail,
		     "listing users failed (no userdb that can iterate, e.g. "
		     "only static, or a listener whose peer may not list; "
		     "Dovecot's auth log has the cause)");
	assert_true(fail.users_terminated);
	assert_int_equal(fake_peer_conn_count(fx->fake->peer), 2);
	fixture_free(&fx);
}

static void test_list_limits_and_bad_names(void **state)
{
	static const struct fake_peer_step script[] = {
		{ "LIST\t", "LIST\t%I\ta\nLIST\t%I\tb\nLIST\t%I\ta\n"
			    "LIST\t%I\tc\nDONE\t%I\t\n" },
		{ "LIST\t", "LIST\t%I\ta\0010\nDONE\t%I\t\n" },
		{ "LIST\t", "LIST\t%I\t\nDONE\t%I\t\n" },
		{ "LIST\t", "LIST\t%I\ta\nLIST\t%I\tb\nDONE\t%I\t\n" },
	};
	const struct trib_userdb_limits limits = { .max_users = 3 };
	struct fixture *fx = fixture_new(5);
	struct result r[4];

	(void)state;
	memset(r, 0, sizeof(r));
	trib_userdb_client_set_limits(fx->client, &limits);
	fake_script(fx->fake, script, 4);
	for (unsigned int i = 0; i < 4; i++) {
		trib_userdb_list(fx->client, list_cb, &r[i]);
		run_one(fx, &r[i]);
	}
	/* duplicates count against the cap: they are what was sent */
	assert_error(fx, &r[0], "listing users: more than 3 users");
	assert_error(fx, &r[1], "listing users: a user name holds a NUL byte");
	assert_error(fx, &r[2],
		     "listing users: a LIST line without a user name");
	assert_int_equal(r[3].result, 1);
	assert_string_equal(r[3].users, "a|b|");
	fixture_free(&fx);
}

static void test_list_beside_lookups(void **state)
{
	/* LIST on its own connection, lookups go on meanwhile */
	static const struct fake_peer_step script[] = {
		{ "USER\t1\t", NULL },
		{ "LIST\t2\t", "LIST\t2\tzed\n" },
		{ "USER\t3\t", "USER\t1\tfirst\t\nUSER\t3\tsecond\t\n" },
	};
	struct fixture *fx = fixture_new(5);
	struct result a = { 0 }, b = { 0 }, l = { 0 };
	struct result *both[] = { &a, &b };

	(void)state;
	fake_script(fx->fake, script, 3);
	trib_userdb_lookup(fx->client, "first", lookup_cb, &a);
	settle(fx, 20);
	trib_userdb_list(fx->client, list_cb, &l);
	settle(fx, 20);
	trib_userdb_lookup(fx->client, "second", lookup_cb, &b);
	run_until(fx, both, 2, 5);
	assert_int_equal(a.result, 1);
	assert_int_equal(b.result, 1);
	assert_string_equal(b.name, "second");
	assert_int_equal(l.calls, 0);
	assert_int_equal(fake_peer_conn_count(fx->fake->peer), 2);
	assert_int_equal(fx->fake->script.pos, 3);
	/* end the LIST on its connection, the second one */
	fake_peer_conn_write(fake_peer_get_conn(fx->fake->peer, 1),
			     "DONE\t2\t\n", 8);
	run_one(fx, &l);
	assert_int_equal(l.result, 1);
	assert_string_equal(l.users, "zed|");
	fixture_free(&fx);
}

/* ---- refused requests, connect errors ---- */

static void test_refused_names(void **state)
{
	struct fixture *fx = fixture_new(5);
	struct result r[5], ok = { 0 };
	char *long_name = trib_malloc(1000), *fit_name = trib_malloc(1000);
	static const struct fake_peer_step script[] = {
		{ "USER\t", "NOTFOUND\t%I\n" },
	};
	const char *names[] = { "", "a\tb", "a\nb", "a\rb", long_name };

	(void)state;
	memset(r, 0, sizeof(r));
	/* 990 bytes: with a 10-digit id the request would be 1025 */
	memset(long_name, 'x', 990);
	long_name[990] = '\0';
	memset(fit_name, 'x', 989);
	fit_name[989] = '\0';
	for (unsigned int i = 0; i < 5; i++) {
		trib_userdb_lookup(fx->client, names[i], lookup_cb, &r[i]);
		assert_int_equal(r[i].calls, 0);
	}
	for (unsigned int i = 0; i < 5; i++)
		run_one(fx, &r[i]);
	assert_error(fx, &r[0], "lookup of '' refused: the name is empty");
	assert_error(fx, &r[1],
		     "lookup of 'a?b' refused: the name holds a "
		     "TAB, CR or LF");
	assert_error(fx, &r[2],
		     "lookup of 'a?b' refused: the name holds a "
		     "TAB, CR or LF");
	assert_error(fx, &r[3],
		     "lookup of 'a?b' refused: the name holds a "
		     "TAB, CR or LF");
	assert_non_null(strstr(r[4].error,
			       "refused: the name is longer than 989 bytes (a "
			       "request longer than 1024 bytes makes "
			       "Dovecot's auth service drop the connection)"));
	assert_non_null(strstr(r[4].error, "lookup of 'xxxxx"));
	assert_int_equal(fake_peer_conn_count(fx->fake->peer),
			 0); /* nothing was asked */
	fake_script(fx->fake, script, 1);
	trib_userdb_lookup(fx->client, fit_name, lookup_cb, &ok);
	run_one(fx, &ok);
	assert_int_equal(ok.result, 0);
	free(long_name);
	free(fit_name);
	fixture_free(&fx);
}

static void test_connect_errors(void **state)
{
	struct fixture *fx = fixture_new(5);
	struct result missing = { 0 }, refused = { 0 }, list = { 0 };
	struct trib_userdb_client *client;
	union {
		struct sockaddr sa;
		struct sockaddr_un sun;
	} addr;
	char *path, *want;
	int fd;

	(void)state;
	/* no such socket */
	path = trib_strdup_printf("%s/nope", fake_peer_dir(fx->fake->peer));
	client = trib_userdb_client_create(fx->loop, path, 5, NULL);
	trib_userdb_lookup(client, "u", lookup_cb, &missing);
	trib_userdb_list(client, list_cb, &list);
	assert_int_equal(missing.calls + list.calls, 0);
	run_one(fx, &missing);
	run_one(fx, &list);
	want = trib_strdup_printf("userdb socket %s: No such file or directory "
				  "(is Dovecot running, with the listener in "
				  "its configuration?)",
				  path);
	assert_string_equal(missing.error, want);
	assert_string_equal(list.error, want);
	free(want);
	trib_userdb_client_destroy(&client);
	assert_null(client);
	free(path);

	/* a socket file nobody listens on */
	path = trib_strdup_printf("%s/stale", fake_peer_dir(fx->fake->peer));
	fd = socket(AF_UNIX, SOCK_STREAM, 0);
	memset(&addr, 0, sizeof(addr));
	addr.sun.sun_family = AF_UNIX;
	memcpy(addr.sun.sun_path, path, strlen(path));
	assert_int_equal(bind(fd, &addr.sa, sizeof(addr.sun)), 0);
	close(fd);
	client = trib_userdb_client_create(fx->loop, path, 5, NULL);
	trib_userdb_lookup(client, "u", lookup_cb, &refused);
	run_one(fx, &refused);
	want = trib_strdup_printf("userdb socket %s: Connection refused "
				  "(Dovecot's auth service is not listening: "
				  "is Dovecot running?)",
				  path);
	assert_string_equal(refused.error, want);
	free(want);
	trib_userdb_client_destroy(&client);
	unlink(path);
	free(path);
	fixture_free(&fx);
}

/* ---- timeouts ---- */

static void test_timeout_silent_service(void **state)
{
	struct fixture *fx = fixture_new(1);
	struct result a = { 0 }, b = { 0 };
	struct result *both[] = { &a, &b };
	double start = now_secs();

	(void)state;
	fx->fake->greeting = NULL; /* connects, then never says a word */
	trib_userdb_lookup(fx->client, "alice", lookup_cb, &a);
	trib_userdb_list(fx->client, list_cb, &b);
	run_until(fx, both, 2, 5);
	assert_true(now_secs() - start >= 0.9);
	assert_error(fx, &a, "no answer from the auth service in 1 s");
	assert_error(fx, &b, "listing users: no answer in 1 s");
	fixture_free(&fx);
}

static void test_timeout_then_late_answer(void **state)
{
	/* the service greets and answers, but the first answer comes only
	 * after the lookup timed out: it is dropped silently */
	static const struct fake_peer_step script[] = {
		{ "USER\t", NULL },
		{ "USER\t", "USER\t%1\tlate\t\nUSER\t%2\tsecond\t\n" },
	};
	struct fixture *fx = fixture_new(1);
	struct result a = { 0 }, b = { 0 };

	(void)state;
	fake_script(fx->fake, script, 2);
	trib_userdb_lookup(fx->client, "first", lookup_cb, &a);
	run_one(fx, &a);
	assert_error(fx, &a, "lookup of 'first' timed out: no answer in 1 s");
	trib_userdb_lookup(fx->client, "second", lookup_cb, &b);
	run_one(fx, &b);
	assert_int_equal(b.result, 1);
	assert_string_equal(b.name, "second");
	assert_int_equal(a.calls, 1);
	assert_int_equal(fake_peer_conn_count(fx->fake->peer), 1);
	assert_string_equal(fx->logs, ""); /* no "answer to no request" */
	fixture_free(&fx);
}

/* ---- destroy ---- */

static void test_destroy_with_requests_pending(void **state)
{
	static const struct fake_peer_step script[] = {
		{ "USER\t", NULL },
	};
	struct fixture *fx = fixture_new(5);
	struct result a = { 0 }, l = { 0 };
	char *want;

	(void)state;
	fake_script(fx->fake, script, 1);
	trib_userdb_lookup(fx->client, "alice", lookup_cb, &a);
	trib_userdb_list(fx->client, list_cb, &l);
	settle(fx, 20); /* sent, never answered */
	assert_int_equal(a.calls + l.calls, 0);
	trib_userdb_client_destroy(&fx->client);
	assert_null(fx->client);
	assert_int_equal(a.calls, 1);
	assert_int_equal(l.calls, 1);
	want = expected_error(fx, "lookup of 'alice' canceled");
	assert_string_equal(a.error, want);
	free(want);
	want = expected_error(fx, "listing users canceled");
	assert_string_equal(l.error, want);
	free(want);
	settle(fx, 30);
	assert_int_equal(a.calls, 1);
	assert_int_equal(l.calls, 1);
	fixture_free(&fx);
}

static void test_destroy_undelivered(void **state)
{
	struct fixture *fx = fixture_new(5);
	struct result r = { 0 };

	(void)state;
	/* refused at once, queued for the loop: destroy delivers it */
	trib_userdb_lookup(fx->client, "a\tb", lookup_cb, &r);
	trib_userdb_client_destroy(&fx->client);
	assert_int_equal(r.calls, 1);
	assert_error(fx, &r, "lookup of 'a?b' canceled");
	settle(fx, 20);
	assert_int_equal(r.calls, 1);
	fixture_free(&fx);
}

static void test_destroy_inside_callback(void **state)
{
	static const struct fake_peer_step script[] = {
		{ "USER\t", NULL },
		{ "USER\t", "USER\t%1\tone\t\nUSER\t%2\ttwo\t\n" },
	};
	struct fixture *fx = fixture_new(5);
	struct result a = { 0 }, b = { 0 };

	(void)state;
	fake_script(fx->fake, script, 2);
	a.destroy = &fx->client;
	trib_userdb_lookup(fx->client, "one", lookup_cb, &a);
	trib_userdb_lookup(fx->client, "two", lookup_cb, &b);
	run_one(fx, &a);
	assert_null(fx->client);
	assert_int_equal(a.result, 1);
	/* two's answer had arrived too, but was not delivered yet */
	assert_int_equal(b.calls, 1);
	assert_int_equal(b.result, -1);
	assert_non_null(strstr(b.error, "lookup of 'two' canceled"));
	settle(fx, 20);
	assert_int_equal(a.calls, 1);
	assert_int_equal(b.calls, 1);
	fixture_free(&fx);
}

static int teardown(void **state)
{
	(void)state;
	if (current != NULL)
		fixture_free(&current);
	return 0;
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test_teardown(test_lookup_found, teardown),
		cmocka_unit_test_teardown(test_lookup_no_fields_trailing_tab,
					  teardown),
		cmocka_unit_test_teardown(test_lookup_escapes, teardown),
		cmocka_unit_test_teardown(test_lookup_bad_escapes, teardown),
		cmocka_unit_test_teardown(test_notfound_and_fail, teardown),
		cmocka_unit_test_teardown(test_pipelined_out_of_order,
					  teardown),
		cmocka_unit_test_teardown(test_answer_one_byte_at_a_time,
					  teardown),
		cmocka_unit_test_teardown(test_answer_to_no_request, teardown),
		cmocka_unit_test_teardown(test_protocol_errors, teardown),
		cmocka_unit_test_teardown(test_dropped_connection, teardown),
		cmocka_unit_test_teardown(test_line_over_the_cap, teardown),
		cmocka_unit_test_teardown(test_small_limits, teardown),
		cmocka_unit_test_teardown(test_handshake_errors, teardown),
		cmocka_unit_test_teardown(test_closed_during_handshake,
					  teardown),
		cmocka_unit_test_teardown(test_list_sorted_unique, teardown),
		cmocka_unit_test_teardown(test_list_empty_and_fail, teardown),
		cmocka_unit_test_teardown(test_list_limits_and_bad_names,
					  teardown),
		cmocka_unit_test_teardown(test_list_beside_lookups, teardown),
		cmocka_unit_test_teardown(test_refused_names, teardown),
		cmocka_unit_test_teardown(test_connect_errors, teardown),
		cmocka_unit_test_teardown(test_timeout_silent_service,
					  teardown),
		cmocka_unit_test_teardown(test_timeout_then_late_answer,
					  teardown),
		cmocka_unit_test_teardown(test_destroy_with_requests_pending,
					  teardown),
		cmocka_unit_test_teardown(test_destroy_undelivered, teardown),
		cmocka_unit_test_teardown(test_destroy_inside_callback,
					  teardown),
	};

	/* the host's duty (userdb.h): a write to a closed socket must not
	 * kill the process */
	signal(SIGPIPE, SIG_IGN);
	return cmocka_run_group_tests(tests, NULL, NULL);
}
