/* test-http.c: the HTTP client (http.h) against a scripted plain-HTTP
 * peer on 127.0.0.1 running on the same loop (the client's test-only
 * allow_http_loopback; TLS is tested against the OAuth stand-in in
 * tests/integration/test-oauth.c): refused URLs, statuses and their
 * classes, Retry-After, no redirects, the size ceiling with and without
 * Content-Length, timeouts, a closed port, abort, destroying the client
 * or the loop with requests in flight (callbacks with CANCELED, nothing
 * leaked), and what the debug log shows and never shows. */

#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>

#include <cmocka.h>

#include "alloc.h"
#include "http.h"
#include "loop.h"

#include <arpa/inet.h>
#include <event2/buffer.h>
#include <event2/bufferevent.h>
#include <event2/event.h>
#include <event2/listener.h>
#include <netinet/in.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

#define DEADLINE_SECS 10
#define MAX_PEERS 8

/* ---- a logger that keeps every line ---- */

static char *log_text;

static void keep_log(void *context, enum trib_log_level level,
		     const char *message)
{
	char *more;

	(void)context;
	(void)level;
	more = trib_strdup_printf("%s%s\n", log_text != NULL ? log_text : "",
				  message);
	free(log_text);
	log_text = more;
}

static const struct trib_logger logger = {
	.log = keep_log,
	.min_level = TRIB_LOG_DEBUG,
};

static bool log_has(const char *needle)
{
	return log_text != NULL && strstr(log_text, needle) != NULL;
}

/* ---- the scripted peer ---- */

enum peer_mode {
	PEER_ANSWER, /* send `answer` once the request is in */
	PEER_HANG,   /* read, never answer */
	PEER_HUGE,   /* 1 MiB body without Content-Length, then close */
};

struct peer {
	struct trib_loop *loop;
	struct evconnlistener *listener;
	unsigned int port;
	enum peer_mode mode;
	const char *answer;
	struct bufferevent *conns[MAX_PEERS];
	unsigned int conn_count;
	unsigned int requests;
	char *last_request;
};

static struct peer peer;

static char *find(char *hay, size_t len, const char *needle)
{
	size_t n = strlen(needle);

	for (size_t i = 0; i + n <= len; i++) {
		if (memcmp(hay + i, needle, n) == 0)
			return hay + i;
	}
	return NULL;
}

/* The request is complete when the headers and Content-Length bytes are
 * in. */
static bool request_complete(struct evbuffer *in, size_t *len_r)
{
	size_t len = evbuffer_get_length(in), head, body = 0;
	char *data = (char *)evbuffer_pullup(in, -1), *end, *cl;

	if (data == NULL)
		return false;
	end = find(data, len, "\r\n\r\n");
	if (end == NULL)
		return false;
	head = (size_t)(end - data) + 4;
	cl = find(data, head, "Content-Length: ");
	if (cl != NULL)
		body = strtoul(cl + 16, NULL, 10);
	if (len < head + body)
		return false;
	*len_r = head + body;
	return true;
}

static void peer_read(struct bufferevent *bev, void *context)
{
	struct evbuffer *in = bufferevent_get_input(bev);
	size_t len;

	(void)context;
	if (!request_complete(in, &len))
		return;
	peer.requests++;
	free(peer.last_request);
	peer.last_request = trib_malloc(len + 1);
	evbuffer_remove(in, peer.last_request, len);
	peer.last_request[len] = '\0';
	switch (peer.mode) {
	case PEER_ANSWER:
		bufferevent_write(bev, peer.answer, strlen(peer.answer));
		break;
	case PEER_HANG:
		break;
	case PEER_HUGE: {
		static const char head[] = "HTTP/1.1 200 OK\r\n"
					   "Content-Type: application/json\r\n"
					   "Connection: close\r\n\r\n";
		char *body = trib_malloc(1 << 20);

		memset(body, 'x', 1 << 20);
		bufferevent_write(bev, head, sizeof(head) - 1);
		bufferevent_write(bev, body, 1 << 20);
		free(body);
		break;
	}
	}
}

static void peer_event(struct bufferevent *bev, short what, void *context)
{
	(void)what;
	(void)context;
	for (unsigned int i = 0; i < peer.conn_count; i++) {
		if (peer.conns[i] == bev) {
			bufferevent_free(bev);
			peer.conns[i] = peer.conns[--peer.conn_count];
			return;
		}
	}
}

static void peer_accept(struct evconnlistener *listener, evutil_socket_t fd,
			struct sockaddr *addr, int socklen, void *context)
{
	struct bufferevent *bev;

	(void)listener;
	(void)addr;
	(void)socklen;
	(void)context;
	if (peer.conn_count == MAX_PEERS) {
		close(fd);
		return;
	}
	bev = bufferevent_socket_new(trib_loop_base(peer.loop), fd,
				     BEV_OPT_CLOSE_ON_FREE);
	bufferevent_setcb(bev, peer_read, NULL, peer_event, NULL);
	bufferevent_enable(bev, EV_READ | EV_WRITE);
	peer.conns[peer.conn_count++] = bev;
}

union addr {
	struct sockaddr sa;
	struct sockaddr_in in;
};

static unsigned int loopback_port(int fd)
{
	union addr a;
	socklen_t len = sizeof(a);

	assert_int_equal(getsockname(fd, &a.sa, &len), 0);
	return ntohs(a.in.sin_port);
}

static void peer_start(struct trib_loop *loop)
{
	union addr a;

	memset(&peer, 0, sizeof(peer));
	peer.loop = loop;
	memset(&a, 0, sizeof(a));
	a.in.sin_family = AF_INET;
	a.in.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
	peer.listener = evconnlistener_new_bind(
		trib_loop_base(loop), peer_accept, NULL,
		LEV_OPT_CLOSE_ON_FREE | LEV_OPT_REUSEABLE, 16, &a.sa,
		sizeof(a.in));
	assert_non_null(peer.listener);
	peer.port = loopback_port(evconnlistener_get_fd(peer.listener));
}

static void peer_stop(void)
{
	if (peer.listener == NULL)
		return;
	while (peer.conn_count > 0)
		bufferevent_free(peer.conns[--peer.conn_count]);
	evconnlistener_free(peer.listener);
	free(peer.last_request);
	memset(&peer, 0, sizeof(peer));
}

/* ---- a test: loop, client, peer ---- */

struct outcome {
	bool done;
	unsigned int calls;
	long status;
	enum trib_error_class error_class;
	char *error;
	char *body;
	size_t body_size;
	char *content_type;
	long retry_after;
};

struct fixture {
	struct trib_loop *loop;
	struct trib_http_client *client;
	char url[128];
};

static void outcome_clear(struct outcome *o)
{
	free(o->error);
	free(o->body);
	free(o->content_type);
	memset(o, 0, sizeof(*o));
}

static void record(const struct trib_http_response *resp, void *context)
{
	struct outcome *o = context;

	o->calls++;
	o->done = true;
	o->status = resp->status;
	o->error_class = resp->error_class;
	o->error = resp->error != NULL ? trib_strdup(resp->error) : NULL;
	o->body = resp->body != NULL ? trib_strndup(resp->body, resp->body_size)
				     : NULL;
	o->body_size = resp->body_size;
	o->content_type = resp->content_type != NULL
				  ? trib_strdup(resp->content_type)
				  : NULL;
	o->retry_after = resp->retry_after_secs;
	if (resp->body != NULL)
		assert_int_equal(resp->body[resp->body_size], '\0');
}

static void deadline_cb(evutil_socket_t fd, short what, void *context)
{
	(void)fd;
	(void)what;
	*(bool *)context = true;
}

static void run_until(struct fixture *f, const bool *flag)
{
	bool timed_out = false;
	struct timeval tv = { DEADLINE_SECS, 0 };
	struct event *ev =
		evtimer_new(trib_loop_base(f->loop), deadline_cb, &timed_out);

	evtimer_add(ev, &tv);
	while (!*flag && !timed_out)
		event_base_loop(trib_loop_base(f->loop), EVLOOP_ONCE);
	event_free(ev);
	assert_false(timed_out);
}

static int setup(void **state)
{
	struct trib_http_client_settings set = {
		.name = "test",
		.logger = &logger,
		.allow_http_loopback = true,
	};
	struct fixture *f = trib_calloc(1, sizeof(*f));
	const char *error;

	signal(SIGPIPE, SIG_IGN);
	f->loop = trib_loop_create(&error);
	assert_non_null(f->loop);
	f->client = trib_http_client_create(f->loop, &set, &error);
	assert_non_null(f->client);
	peer_start(f->loop);
	snprintf(f->url, sizeof(f->url), "http://127.0.0.1:%u/token",
		 peer.port);
	free(log_text);
	log_text = NULL;
	*state = f;
	return 0;
}

static int teardown(void **state)
{
	struct fixture *f = *state;

	trib_http_client_destroy(&f->client);
	peer_stop();
	trib_loop_destroy(&f->loop);
	free(f);
	free(log_text);
	log_text = NULL;
	return 0;
}

static struct trib_http_request *start(struct fixture *f,
				       enum trib_http_method method,
				       const char *url, const char *body,
				       struct outcome *o)
{
	struct trib_http_request_settings set = {
		.method = method,
		.url = url,
		.form_body = body,
		.accept = "application/json",
		.timeout_msecs = 5000,
	};
	struct trib_http_request *req;

	req = trib_http_request_start(f->client, &set, record, o);
	assert_non_null(req);
	/* never from inside the call */
	assert_int_equal(o->calls, 0);
	return req;
}

static void fetch(struct fixture *f, enum trib_http_method method,
		  const char *url, const char *body, struct outcome *o)
{
	start(f, method, url, body, o);
	run_until(f, &o->done);
	assert_int_equal(o->calls, 1);
	if (o->error_class != TRIB_OK) {
		assert_non_null(o->error);
		assert_null(strchr(o->error, '\n'));
	}
}

/* ---- refused URLs ---- */

static void refused(const struct trib_http_client_settings *set,
		    const char *url, const char *needle)
{
	struct outcome o = { 0 };
	const char *error;
	struct trib_loop *loop = trib_loop_create(&error);
	struct trib_http_client *client =
		trib_http_client_create(loop, set, &error);
	struct trib_http_request_settings rset = {
		.method = TRIB_HTTP_GET,
		.url = url,
	};
	struct fixture f = { .loop = loop, .client = client };

	assert_non_null(trib_http_request_start(client, &rset, record, &o));
	assert_int_equal(o.calls, 0);
	assert_int_equal(trib_http_client_pending(client), 1);
	run_until(&f, &o.done);
	assert_int_equal(o.calls, 1);
	assert_int_equal(o.error_class, TRIB_ERR_PERM);
	assert_int_equal(o.status, 0);
	assert_null(o.body);
	if (strstr(o.error, needle) == NULL)
		fail_msg("%s: '%s' lacks '%s'", url, o.error, needle);
	/* the query string never shows */
	assert_null(strstr(o.error, "SECRET"));
	assert_int_equal(trib_http_client_pending(client), 0);
	outcome_clear(&o);
	trib_http_client_destroy(&client);
	assert_null(client);
	trib_loop_destroy(&loop);
}

static void test_refused_urls(void **state)
{
	struct trib_http_client_settings strict = { .logger = &logger };
	struct trib_http_client_settings loose = {
		.logger = &logger,
		.allow_http_loopback = true,
	};

	(void)state;
	refused(&strict, "http://127.0.0.1:1/token?x=SECRET",
		"refusing plain http");
	refused(&strict, "http://localhost/token", "refusing plain http");
	/* the test flag covers loopback only */
	refused(&loose, "http://example.com/token", "refusing plain http");
	refused(&loose, "http://10.0.0.1/token", "refusing plain http");
	refused(&strict, "ftp://example.com/token", "not https://");
	refused(&strict, "file:///etc/passwd", "not");
	refused(&strict, "https://user:SECRET@example.com/token", "user info");
	refused(&strict, "not a url", "not a valid URL");
	refused(&strict, "", "not a valid URL");
}

/* ---- answers ---- */

static void test_get_ok(void **state)
{
	struct fixture *f = *state;
	struct outcome o = { 0 };
	char url[160];

	peer.mode = PEER_ANSWER;
	peer.answer = "HTTP/1.1 200 OK\r\nContent-Type: application/json\r\n"
		      "Content-Length: 20\r\n\r\n{\"RESPONSESECRET\":1}";
	snprintf(url, sizeof(url), "%s?code=QUERYSECRET", f->url);
	fetch(f, TRIB_HTTP_GET, url, NULL, &o);
	assert_int_equal(o.error_class, TRIB_OK);
	assert_null(o.error);
	assert_int_equal(o.status, 200);
	assert_string_equal(o.body, "{\"RESPONSESECRET\":1}");
	assert_int_equal(o.body_size, 20);
	assert_string_equal(o.content_type, "application/json");
	assert_int_equal(o.retry_after, -1);
	assert_non_null(strstr(peer.last_request, "GET /token?code=QUERY"));
	assert_non_null(strstr(peer.last_request,
			       "User-Agent: tributary/" PACKAGE_VERSION
			       "\r\n"));
	assert_non_null(strstr(peer.last_request, "Accept: application/json"));
	/* the debug line: method, URL without query, status, size */
	assert_true(log_has("test: GET http://127.0.0.1:"));
	assert_true(log_has("/token: HTTP 200, 20 bytes"));
	assert_false(log_has("QUERYSECRET"));
	assert_false(log_has("RESPONSESECRET"));
	outcome_clear(&o);
}

static void test_post_form(void **state)
{
	struct fixture *f = *state;
	struct outcome o = { 0 };
	const char *pairs[] = { "refresh_token", "BODY SECRET&x", NULL };
	char *body = trib_http_form_encode(pairs);

	peer.mode = PEER_ANSWER;
	peer.answer = "HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\n{}";
	fetch(f, TRIB_HTTP_POST, f->url, body, &o);
	assert_int_equal(o.error_class, TRIB_OK);
	assert_non_null(strstr(peer.last_request, "POST /token HTTP/1.1\r\n"));
	assert_non_null(
		strstr(peer.last_request,
		       "Content-Type: application/x-www-form-urlencoded\r\n"));
	assert_non_null(strstr(peer.last_request, "Content-Length: 31\r\n"));
	assert_non_null(strstr(peer.last_request,
			       "\r\n\r\nrefresh_token=BODY%20SECRET%26x"));
	assert_null(strstr(peer.last_request, "Expect:"));
	assert_false(log_has("SECRET"));
	assert_true(log_has("test: POST http://127.0.0.1:"));
	trib_secret_free(&body);
	outcome_clear(&o);

	/* an empty body is a POST too */
	fetch(f, TRIB_HTTP_POST, f->url, NULL, &o);
	assert_non_null(strstr(peer.last_request, "Content-Length: 0\r\n"));
	outcome_clear(&o);
}

static void test_statuses(void **state)
{
	static const struct {
		const char *answer;
		long status;
		enum trib_error_class error_class;
		long retry_after;
	} cases[] = {
		{ "HTTP/1.1 429 Too Many\r\nRetry-After: 7\r\n"
		  "Content-Length: 2\r\n\r\n{}",
		  429, TRIB_ERR_WAIT, 7 },
		{ "HTTP/1.1 429 Too Many\r\nContent-Length: 0\r\n\r\n", 429,
		  TRIB_ERR_WAIT, -1 },
		{ "HTTP/1.1 503 Unavailable\r\nretry-after: 120\r\n"
		  "Content-Length: 4\r\n\r\ndown",
		  503, TRIB_ERR_TEMP, 120 },
		{ "HTTP/1.1 500 Oops\r\nContent-Length: 0\r\n\r\n", 500,
		  TRIB_ERR_TEMP, -1 },
		{ "HTTP/1.1 408 Slow\r\nContent-Length: 0\r\n\r\n", 408,
		  TRIB_ERR_TEMP, -1 },
		{ "HTTP/1.1 400 Bad\r\nContent-Length: 25\r\n\r\n"
		  "{\"error\":\"invalid_grant\"}",
		  400, TRIB_ERR_PERM, -1 },
		{ "HTTP/1.1 404 Nope\r\nContent-Length: 0\r\n\r\n", 404,
		  TRIB_ERR_PERM, -1 },
		{ "HTTP/1.1 302 Found\r\nLocation: http://127.0.0.1:1/x\r\n"
		  "Retry-After: soon\r\nContent-Length: 0\r\n\r\n",
		  302, TRIB_ERR_PERM, -1 },
	};
	struct fixture *f = *state;

	for (unsigned int i = 0; i < TRIB_N_ELEMENTS(cases); i++) {
		struct outcome o = { 0 };
		unsigned int before = peer.requests;

		peer.mode = PEER_ANSWER;
		peer.answer = cases[i].answer;
		fetch(f, TRIB_HTTP_POST, f->url, "a=b", &o);
		assert_int_equal(o.status, cases[i].status);
		assert_int_equal(o.error_class, cases[i].error_class);
		assert_int_equal(o.retry_after, cases[i].retry_after);
		assert_non_null(strstr(o.error, "/token: HTTP"));
		/* the body comes along for 4xx and 5xx */
		assert_non_null(o.body);
		/* no redirect followed */
		assert_int_equal(peer.requests, before + 1);
		outcome_clear(&o);
	}
}

/* ---- ceilings and timeouts ---- */

static void test_too_large_with_length(void **state)
{
	struct fixture *f = *state;
	struct outcome o = { 0 };

	peer.mode = PEER_ANSWER;
	peer.answer = "HTTP/1.1 200 OK\r\nContent-Length: 1048576\r\n\r\n{";
	fetch(f, TRIB_HTTP_GET, f->url, NULL, &o);
	assert_int_equal(o.error_class, TRIB_ERR_TEMP);
	assert_null(o.body);
	assert_non_null(strstr(o.error, "larger than 65536 bytes"));
	outcome_clear(&o);
}

static void test_too_large_streamed(void **state)
{
	struct fixture *f = *state;
	struct outcome o = { 0 };
	struct trib_http_request_settings set = {
		.method = TRIB_HTTP_GET,
		.url = f->url,
		.max_response_size = 1000,
	};

	peer.mode = PEER_HUGE;
	fetch(f, TRIB_HTTP_GET, f->url, NULL, &o);
	assert_int_equal(o.error_class, TRIB_ERR_TEMP);
	assert_null(o.body);
	assert_non_null(strstr(o.error, "larger than 65536 bytes"));
	outcome_clear(&o);

	/* a smaller ceiling per request */
	assert_non_null(trib_http_request_start(f->client, &set, record, &o));
	run_until(f, &o.done);
	assert_non_null(strstr(o.error, "larger than 1000 bytes"));
	outcome_clear(&o);
}

static void test_timeout(void **state)
{
	struct fixture *f = *state;
	struct outcome o = { 0 };
	struct trib_http_request_settings set = {
		.method = TRIB_HTTP_POST,
		.url = f->url,
		.form_body = "x=1",
		.timeout_msecs = 300,
	};

	peer.mode = PEER_HANG;
	assert_non_null(trib_http_request_start(f->client, &set, record, &o));
	run_until(f, &o.done);
	assert_int_equal(o.error_class, TRIB_ERR_TEMP);
	assert_int_equal(o.status, 0);
	assert_non_null(strstr(o.error, "timed out"));
	assert_true(log_has("failed after"));
	outcome_clear(&o);
}

static void test_closed_port(void **state)
{
	struct fixture *f = *state;
	struct outcome o = { 0 };
	union addr a;
	char url[64];
	int fd;

	/* A port that was free a moment ago and has no listener. */
	fd = socket(AF_INET, SOCK_STREAM, 0);
	memset(&a, 0, sizeof(a));
	a.in.sin_family = AF_INET;
	a.in.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
	assert_int_equal(bind(fd, &a.sa, sizeof(a.in)), 0);
	snprintf(url, sizeof(url), "http://127.0.0.1:%u/token",
		 loopback_port(fd));
	close(fd);
	fetch(f, TRIB_HTTP_POST, url, "a=b", &o);
	assert_int_equal(o.error_class, TRIB_ERR_TEMP);
	assert_int_equal(o.status, 0);
	assert_non_null(strstr(o.error, url));
	outcome_clear(&o);
}

/* ---- cancellation ---- */

static void test_abort(void **state)
{
	struct fixture *f = *state;
	struct outcome o = { 0 };
	struct trib_http_request *req;

	peer.mode = PEER_HANG;
	req = start(f, TRIB_HTTP_POST, f->url, "a=b", &o);
	/* let it connect and send */
	while (peer.requests == 0)
		event_base_loop(trib_loop_base(f->loop), EVLOOP_ONCE);
	trib_http_request_abort(&req);
	assert_null(req);
	assert_int_equal(o.calls, 1);
	assert_int_equal(o.error_class, TRIB_ERR_CANCELED);
	assert_int_equal(trib_http_client_pending(f->client), 0);
	outcome_clear(&o);
	trib_http_request_abort(&req);

	/* the client still works */
	peer.mode = PEER_ANSWER;
	peer.answer = "HTTP/1.1 200 OK\r\nContent-Length: 2\r\n\r\n{}";
	fetch(f, TRIB_HTTP_GET, f->url, NULL, &o);
	assert_int_equal(o.error_class, TRIB_OK);
	outcome_clear(&o);

	/* a refused request can be aborted too */
	req = start(f, TRIB_HTTP_GET, "ftp://x/", NULL, &o);
	trib_http_request_abort(&req);
	assert_int_equal(o.error_class, TRIB_ERR_CANCELED);
	outcome_clear(&o);
}

static void test_destroy_client_in_flight(void **state)
{
	struct fixture *f = *state;
	struct outcome o1 = { 0 }, o2 = { 0 }, o3 = { 0 };

	peer.mode = PEER_HANG;
	start(f, TRIB_HTTP_POST, f->url, "a=b", &o1);
	start(f, TRIB_HTTP_GET, f->url, NULL, &o2);
	while (peer.requests < 2)
		event_base_loop(trib_loop_base(f->loop), EVLOOP_ONCE);
	/* refused, its report not yet delivered */
	start(f, TRIB_HTTP_GET, "ftp://refused/", NULL, &o3);
	trib_http_client_destroy(&f->client);
	assert_null(f->client);
	assert_int_equal(o1.calls, 1);
	assert_int_equal(o2.calls, 1);
	assert_int_equal(o3.calls, 1);
	assert_int_equal(o1.error_class, TRIB_ERR_CANCELED);
	assert_int_equal(o2.error_class, TRIB_ERR_CANCELED);
	assert_int_equal(o3.error_class, TRIB_ERR_CANCELED);
	outcome_clear(&o1);
	outcome_clear(&o2);
	outcome_clear(&o3);
}

struct destroyer {
	struct trib_http_client **client;
	struct outcome outcome;
	unsigned int calls;
};

static void destroy_from_callback(const struct trib_http_response *resp,
				  void *context)
{
	struct destroyer *d = context;

	d->calls++;
	d->outcome.done = true;
	d->outcome.error_class = resp->error_class;
	trib_http_client_destroy(d->client);
}

static void test_destroy_client_in_callback(void **state)
{
	struct fixture *f = *state;
	struct destroyer d = { .client = &f->client };
	struct outcome other = { 0 };
	struct trib_http_request_settings set = {
		.method = TRIB_HTTP_GET,
		.url = f->url,
	};

	/* The first callback (a refused URL, reported on the next turn)
	 * destroys the client under the second request. */
	peer.mode = PEER_HANG;
	set.url = "ftp://refused/";
	assert_non_null(trib_http_request_start(f->client, &set,
						destroy_from_callback, &d));
	set.url = f->url;
	assert_non_null(
		trib_http_request_start(f->client, &set, record, &other));
	run_until(f, &d.outcome.done);
	assert_int_equal(d.calls, 1);
	assert_int_equal(d.outcome.error_class, TRIB_ERR_PERM);
	assert_null(f->client);
	assert_int_equal(other.calls, 1);
	assert_int_equal(other.error_class, TRIB_ERR_CANCELED);
	outcome_clear(&other);
}

static void test_destroy_loop_in_flight(void **state)
{
	struct fixture *f = *state;
	struct outcome o1 = { 0 }, o2 = { 0 };
	struct trib_http_request_settings set = {
		.method = TRIB_HTTP_GET,
		.url = f->url,
	};

	peer.mode = PEER_HANG;
	start(f, TRIB_HTTP_POST, f->url, "a=b", &o1);
	while (peer.requests == 0)
		event_base_loop(trib_loop_base(f->loop), EVLOOP_ONCE);
	start(f, TRIB_HTTP_GET, "ftp://refused/", NULL, &o2);
	/* the peer's own connections go first, as their owner would */
	peer_stop();
	trib_loop_destroy(&f->loop);
	assert_int_equal(o1.calls, 1);
	assert_int_equal(o1.error_class, TRIB_ERR_CANCELED);
	assert_int_equal(o2.calls, 1);
	assert_int_equal(o2.error_class, TRIB_ERR_CANCELED);
	assert_true(log_has("event loop destroyed"));
	/* the client outlives its loop only to be destroyed */
	assert_null(trib_http_client_loop(f->client));
	assert_null(trib_http_request_start(f->client, &set, record, &o1));
	trib_http_client_destroy(&f->client);
	outcome_clear(&o1);
	outcome_clear(&o2);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_refused_urls),
		cmocka_unit_test_setup_teardown(test_get_ok, setup, teardown),
		cmocka_unit_test_setup_teardown(test_post_form, setup,
						teardown),
		cmocka_unit_test_setup_teardown(test_statuses, setup, teardown),
		cmocka_unit_test_setup_teardown(test_too_large_with_length,
						setup, teardown),
		cmocka_unit_test_setup_teardown(test_too_large_streamed, setup,
						teardown),
		cmocka_unit_test_setup_teardown(test_timeout, setup, teardown),
		cmocka_unit_test_setup_teardown(test_closed_port, setup,
						teardown),
		cmocka_unit_test_setup_teardown(test_abort, setup, teardown),
		cmocka_unit_test_setup_teardown(test_destroy_client_in_flight,
						setup, teardown),
		cmocka_unit_test_setup_teardown(test_destroy_client_in_callback,
						setup, teardown),
		cmocka_unit_test_setup_teardown(test_destroy_loop_in_flight,
						setup, teardown),
	};

	return cmocka_run_group_tests(tests, NULL, NULL);
}
