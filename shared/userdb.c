/* userdb.c: Dovecot's auth userdb protocol over a UNIX socket (userdb.h).
 *
 * Protocol (Dovecot 2.3, src/auth/auth-master-connection.c): the client
 * sends "VERSION\t1\t0", the server "VERSION\t1\t1" and "SPID\t<pid>".
 * Requests carry an id that the answers repeat:
 *   USER\t<id>\t<name>\tservice=tributary  ->  USER\t<id>\t<name>\t<k=v>...
 *                                             | NOTFOUND\t<id>
 *                                             | FAIL\t<id>[\treason=<r>]
 *   LIST\t<id>\tservice=tributary          ->  LIST\t<id>\t<name> ...
 *                                             DONE\t<id>\t[fail]
 * Fields are tab-escaped: \001 then '1', 't', 'r', 'n' or '0' stand for
 * \001, TAB, CR, LF and NUL. Reading the lines is userdb-parse.c's job;
 * this file owns the sockets, the requests and their timers.
 *
 * Nothing here calls a user callback directly: answers are queued and
 * delivered from a zero timer, so parsing never sees the client change
 * under it, and no callback fires inside the call that started it. */

#include "userdb.h"

#include "alloc.h"
#include "loop.h"
#include "userdb-parse.h"

#include <errno.h>
#include <event2/buffer.h>
#include <event2/bufferevent.h>
#include <event2/event.h>
#include <pwd.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/un.h>
#include <unistd.h>

#define USERDB_PROTOCOL_MAJOR 1
#define USERDB_HANDSHAKE "VERSION\t1\t0\n"
#define USERDB_SERVICE "tributary"
/* The auth service reads a request into a 1024-byte buffer and drops the
 * connection when a line does not fit (MAX_INBUF_SIZE there). */
#define USERDB_MAX_REQUEST 1024u
/* The longest (escaped) name that fits with a 10-digit id. */
#define USERDB_MAX_NAME                                                        \
	(USERDB_MAX_REQUEST -                                                  \
	 sizeof("USER\t4294967295\t\tservice=" USERDB_SERVICE "\n") + 1)
#define USERDB_DEFAULT_TIMEOUT_SECS 30
#define USERDB_DEFAULT_MAX_LINE (1024 * 1024)
#define USERDB_DEFAULT_MAX_USERS 1000000
#define USERDB_DEFAULT_MAX_FIELDS 10000
/* Timed-out lookups whose late answers one connection still expects. */
#define USERDB_MAX_ABANDONED 64

enum userdb_kind {
	USERDB_LOOKUP,
	USERDB_LIST,
};

struct userdb_request {
	/* In its connection's list while waiting, then in the client's
	 * delivery queue. */
	struct userdb_request *prev, *next;
	struct trib_userdb_client *client;
	struct userdb_conn *conn;
	enum userdb_kind kind;
	unsigned int id;
	char *user;	 /* lookup: the name asked for, sanitized, in pool */
	char *wire_name; /* and as sent */
	trib_userdb_lookup_callback_t *lookup_cb;
	trib_userdb_list_callback_t *list_cb;
	void *context;
	struct event *timer;
	uint64_t input_mark; /* conn->reads when sent */

	/* the answer */
	int result;
	char *error;
	struct trib_pool *pool;
	struct trib_userdb_user user_answer;
	const char **names;
	unsigned int name_count, name_alloc;
};

struct userdb_conn {
	struct userdb_conn *prev, *next;
	struct trib_userdb_client *client;
	struct bufferevent *bev;
	bool for_list;
	bool version_seen, handshake_done;
	struct userdb_request *requests, *requests_tail; /* oldest first */
	unsigned int abandoned[USERDB_MAX_ABANDONED];
	unsigned int abandoned_count;
	uint64_t reads;
};

struct trib_userdb_client {
	struct trib_loop *loop;
	char *prefix; /* "userdb socket PATH" */
	char *socket_path;
	unsigned int timeout_secs;
	struct trib_userdb_limits limits;
	const struct trib_logger *logger;

	struct userdb_conn *conns;
	struct userdb_conn *lookup_conn;
	unsigned int last_id;

	struct userdb_request *done_head, *done_tail;
	struct event *deliver_event;
	bool delivering, destroyed;
};

static void conn_fail(struct userdb_conn *conn, enum trib_log_level idle_level,
		      const char *fmt, ...) TRIB_ATTR_PRINTF(3, 4);

/* ---- requests and their delivery ---- */

static char *request_what(const struct userdb_request *req)
{
	return req->kind == USERDB_LIST
		       ? trib_strdup("listing users")
		       : trib_strdup_printf("lookup of '%s'", req->user);
}

static struct userdb_request *request_new(struct trib_userdb_client *client,
					  enum userdb_kind kind, void *context)
{
	struct userdb_request *req = trib_calloc(1, sizeof(*req));

	req->client = client;
	req->kind = kind;
	req->context = context;
	req->pool = trib_pool_create(0);
	return req;
}

static void request_free(struct userdb_request *req)
{
	if (req->timer != NULL)
		event_free(req->timer);
	trib_pool_destroy(&req->pool);
	free(req->names);
	free(req->error);
	free(req->wire_name);
	free(req);
}

static void conn_unlink_request(struct userdb_conn *conn,
				struct userdb_request *req)
{
	if (req->prev != NULL)
		req->prev->next = req->next;
	else
		conn->requests = req->next;
	if (req->next != NULL)
		req->next->prev = req->prev;
	else
		conn->requests_tail = req->prev;
	req->prev = req->next = NULL;
	req->conn = NULL;
}

/* Queue the answer; error is "<prefix>: <error>" when result < 0. */
static void request_finish(struct userdb_request *req, int result,
			   const char *error)
{
	static const struct timeval now = { 0, 0 };
	struct trib_userdb_client *client = req->client;

	if (req->conn != NULL)
		conn_unlink_request(req->conn, req);
	if (req->timer != NULL)
		evtimer_del(req->timer);
	req->result = result;
	if (result < 0)
		req->error =
			trib_strdup_printf("%s: %s", client->prefix, error);
	if (client->done_tail != NULL)
		client->done_tail->next = req;
	else
		client->done_head = req;
	client->done_tail = req;
	evtimer_add(client->deliver_event, &now);
}

static void request_fail(struct userdb_request *req, const char *fmt, ...)
	TRIB_ATTR_PRINTF(2, 3);

/* Fail with "<what> <message>", e.g. "lookup of 'bob' failed: ...". */
static void request_fail(struct userdb_request *req, const char *fmt, ...)
{
	char *what = request_what(req), *message, *error;
	va_list args;

	va_start(args, fmt);
	message = trib_strdup_vprintf(fmt, args);
	va_end(args);
	error = trib_strdup_printf("%s %s", what, message);
	request_finish(req, -1, error);
	free(error);
	free(message);
	free(what);
}

static struct userdb_request *client_done_pop(struct trib_userdb_client *client)
{
	struct userdb_request *req = client->done_head;

	if (req != NULL) {
		client->done_head = req->next;
		if (client->done_head == NULL)
			client->done_tail = NULL;
		req->next = NULL;
	}
	return req;
}

static void request_call(struct userdb_request *req)
{
	static const char *const no_names[] = { NULL };
	const char *error = req->result < 0 ? req->error : NULL;

	if (req->kind == USERDB_LOOKUP) {
		req->lookup_cb(req->result,
			       req->result == 1 ? &req->user_answer : NULL,
			       error, req->context);
	} else if (req->result == 1 && req->name_count > 0) {
		req->list_cb(1, req->names, req->name_count, NULL,
			     req->context);
	} else {
		req->list_cb(req->result, no_names, 0, error, req->context);
	}
}

static void client_free(struct trib_userdb_client *client)
{
	event_free(client->deliver_event);
	free(client->socket_path);
	free(client->prefix);
	free(client);
}

static void client_deliver_cb(evutil_socket_t fd, short what, void *ctx)
{
	struct trib_userdb_client *client = ctx;
	struct userdb_request *req;

	(void)fd;
	(void)what;
	client->delivering = true;
	while (!client->destroyed && (req = client_done_pop(client)) != NULL) {
		request_call(req);
		request_free(req);
	}
	client->delivering = false;
	if (client->destroyed)
		client_free(client);
}

/* ---- connections ---- */

static void conn_destroy(struct userdb_conn *conn)
{
	struct trib_userdb_client *client = conn->client;

	if (conn->prev != NULL)
		conn->prev->next = conn->next;
	else
		client->conns = conn->next;
	if (conn->next != NULL)
		conn->next->prev = conn->prev;
	if (client->lookup_conn == conn)
		client->lookup_conn = NULL;
	bufferevent_free(conn->bev);
	free(conn);
}

/* Fail every request waiting on conn with the message and close it. With
 * nothing waiting the message is only logged, at idle_level. */
static void conn_fail(struct userdb_conn *conn, enum trib_log_level idle_level,
		      const char *fmt, ...)
{
	struct trib_userdb_client *client = conn->client;
	char *message;
	va_list args;

	va_start(args, fmt);
	message = trib_strdup_vprintf(fmt, args);
	va_end(args);
	trib_log(client->logger,
		 conn->requests != NULL ? TRIB_LOG_DEBUG : idle_level, "%s: %s",
		 client->prefix, message);
	while (conn->requests != NULL)
		request_finish(conn->requests, -1, message);
	free(message);
	conn_destroy(conn);
}

static void conn_abandon(struct userdb_conn *conn, unsigned int id)
{
	conn->abandoned[conn->abandoned_count++] = id;
}

static bool conn_take_abandoned(struct userdb_conn *conn, unsigned int id)
{
	for (unsigned int i = 0; i < conn->abandoned_count; i++) {
		if (conn->abandoned[i] == id) {
			conn->abandoned[i] =
				conn->abandoned[--conn->abandoned_count];
			return true;
		}
	}
	return false;
}

static struct userdb_request *conn_find(struct userdb_conn *conn,
					unsigned int id)
{
	struct userdb_request *req;

	for (req = conn->requests; req != NULL; req = req->next) {
		if (req->id == id)
			return req;
	}
	return NULL;
}

/* USER\t<id>\t<name>\t<key>=<value>... */
static void reply_user(struct userdb_request *req,
		       const struct trib_userdb_reply *reply)
{
	struct trib_userdb_user *user = &req->user_answer;
	const char *error;

	if (trib_userdb_reply_parse_user(req->pool, reply,
					 req->client->limits.max_fields, user,
					 &error) < 0) {
		request_fail(req, "%s", error);
		return;
	}
	trib_log(req->client->logger, TRIB_LOG_DEBUG,
		 "%s: USER %u %s: found as %s, %u fields", req->client->prefix,
		 req->id, req->user, user->name, user->count);
	request_finish(req, 1, NULL);
}

/* FAIL\t<id>[\treason=<text>] */
static void reply_fail(struct userdb_request *req,
		       const struct trib_userdb_reply *reply)
{
	const char *reason = trib_userdb_reply_fail_reason(req->pool, reply);

	if (reason == NULL) {
		request_fail(req, "failed without a reason (Dovecot's auth "
				  "log has it; a listener with mode 0666 "
				  "answers only for users whose uid is the "
				  "fetcher's)");
		return;
	}
	request_fail(req, "failed: %s",
		     trib_userdb_sanitize(req->pool, reason, 300));
}

/* LIST\t<id>\t<name>: one more name; -1 if the connection is gone. */
static int reply_list_name(struct userdb_conn *conn, struct userdb_request *req,
			   const struct trib_userdb_reply *reply)
{
	struct timeval tv = { req->client->timeout_secs, 0 };
	const char *name, *error;

	if (trib_userdb_reply_parse_list_name(req->pool, reply, req->name_count,
					      req->client->limits.max_users,
					      &name, &error) < 0) {
		conn_fail(conn, TRIB_LOG_WARNING, "listing users: %s", error);
		return -1;
	}
	if (req->name_count + 1 >= req->name_alloc) {
		req->name_alloc =
			req->name_alloc == 0 ? 64 : req->name_alloc * 2;
		req->names = trib_realloc(req->names, sizeof(*req->names) *
							      req->name_alloc);
	}
	req->names[req->name_count++] = name;
	evtimer_add(req->timer, &tv); /* progress: the clock starts again */
	return 0;
}

static int names_cmp(const void *a, const void *b)
{
	return strcmp(*(const char *const *)a, *(const char *const *)b);
}

/* DONE\t<id>\t[fail] */
static void reply_list_done(struct userdb_request *req,
			    const struct trib_userdb_reply *reply)
{
	unsigned int in = 0, out = 0;

	if (trib_userdb_reply_done_failed(reply)) {
		request_fail(req, "failed (no userdb that can iterate, e.g. "
				  "only static, or a listener whose peer may "
				  "not list; Dovecot's auth log has the "
				  "cause)");
		return;
	}
	if (req->name_count > 0) {
		qsort(req->names, req->name_count, sizeof(*req->names),
		      names_cmp);
		for (in = 0; in < req->name_count; in++) {
			if (out == 0 ||
			    strcmp(req->names[out - 1], req->names[in]) != 0)
				req->names[out++] = req->names[in];
		}
		req->names[out] = NULL;
	}
	trib_log(req->client->logger, TRIB_LOG_DEBUG,
		 "%s: LIST %u: %u users (%u listed)", req->client->prefix,
		 req->id, out, req->name_count);
	req->name_count = out;
	request_finish(req, 1, NULL);
}

/* line is the whole line, for messages; pool lives as long as the line. */
static int conn_input_handshake(struct userdb_conn *conn,
				const struct trib_userdb_reply *reply,
				const char *line, struct trib_pool *pool)
{
	if (reply->type == TRIB_USERDB_REPLY_VERSION && !conn->version_seen) {
		if (!reply->version_supported) {
			conn_fail(conn, TRIB_LOG_WARNING,
				  "unsupported protocol version: %s (this "
				  "client speaks the auth-master protocol %d)",
				  trib_userdb_sanitize(pool, line, 80),
				  USERDB_PROTOCOL_MAJOR);
			return -1;
		}
		conn->version_seen = true;
		return 0;
	}
	if (reply->type == TRIB_USERDB_REPLY_SPID && conn->version_seen) {
		conn->handshake_done = true;
		return 0;
	}
	if (reply->type == TRIB_USERDB_REPLY_AUTH_CLIENT) {
		conn_fail(conn, TRIB_LOG_WARNING,
			  "this is an authentication client socket, not a "
			  "userdb listener (auth-userdb or tributary-userdb)");
		return -1;
	}
	conn_fail(conn, TRIB_LOG_WARNING,
		  "protocol error: unexpected handshake line: %s",
		  trib_userdb_sanitize(pool, line, 80));
	return -1;
}

static int conn_input_reply(struct userdb_conn *conn,
			    const struct trib_userdb_reply *reply,
			    const char *line, struct trib_pool *pool)
{
	struct userdb_request *req;
	enum userdb_kind kind;

	switch (reply->type) {
	case TRIB_USERDB_REPLY_USER:
	case TRIB_USERDB_REPLY_NOTFOUND:
	case TRIB_USERDB_REPLY_FAIL:
		kind = USERDB_LOOKUP;
		break;
	case TRIB_USERDB_REPLY_LIST:
	case TRIB_USERDB_REPLY_DONE:
		kind = USERDB_LIST;
		break;
	default:
		goto bad_line;
	}
	req = conn_find(conn, reply->id);
	if (req == NULL) {
		if (conn_take_abandoned(conn, reply->id))
			return 0; /* the late answer of a timed-out lookup */
		trib_log(conn->client->logger, TRIB_LOG_WARNING,
			 "%s: ignoring an answer to no request: %s",
			 conn->client->prefix,
			 trib_userdb_sanitize(pool, line, 80));
		return 0;
	}
	if (req->kind != kind)
		goto bad_line;
	if (reply->type == TRIB_USERDB_REPLY_USER)
		reply_user(req, reply);
	else if (reply->type == TRIB_USERDB_REPLY_NOTFOUND)
		request_finish(req, 0, NULL);
	else if (reply->type == TRIB_USERDB_REPLY_FAIL)
		reply_fail(req, reply);
	else if (reply->type == TRIB_USERDB_REPLY_LIST)
		return reply_list_name(conn, req, reply);
	else
		reply_list_done(req, reply);
	if (conn->for_list && conn->requests == NULL) {
		conn_destroy(conn); /* a LIST connection serves one LIST */
		return -1;
	}
	return 0;

bad_line:
	conn_fail(conn, TRIB_LOG_WARNING, "protocol error: unexpected line: %s",
		  trib_userdb_sanitize(pool, line, 80));
	return -1;
}

/* One line, without its LF; -1 when the connection is gone. */
static int conn_input_line(struct userdb_conn *conn, const char *line,
			   size_t len)
{
	struct trib_pool *pool = trib_pool_create(0);
	struct trib_userdb_reply reply;
	const char *error;
	int ret;

	if (trib_userdb_reply_parse(pool, line, len, &reply, &error) < 0) {
		conn_fail(conn, TRIB_LOG_WARNING, "protocol error: %s", error);
		ret = -1;
	} else if (!conn->handshake_done) {
		ret = conn_input_handshake(conn, &reply, line, pool);
	} else {
		ret = conn_input_reply(conn, &reply, line, pool);
	}
	trib_pool_destroy(&pool);
	return ret;
}

static void conn_read_cb(struct bufferevent *bev, void *ctx)
{
	struct userdb_conn *conn = ctx;
	struct evbuffer *input = bufferevent_get_input(bev);
	size_t max = conn->client->limits.max_line;
	struct evbuffer_ptr eol;
	size_t eol_len, len;
	char *line;
	int ret;

	conn->reads++;
	for (;;) {
		eol = evbuffer_search_eol(input, NULL, &eol_len,
					  EVBUFFER_EOL_LF);
		if (eol.pos < 0) {
			if (evbuffer_get_length(input) >= max)
				break;
			return;
		}
		len = (size_t)eol.pos;
		if (len + 1 > max)
			break;
		line = trib_malloc(len + 1);
		evbuffer_remove(input, line, len);
		evbuffer_drain(input, 1);
		line[len] = '\0';
		ret = conn_input_line(conn, line, len);
		free(line);
		if (ret < 0)
			return;
	}
	conn_fail(conn, TRIB_LOG_WARNING,
		  "protocol error: a line longer than %zu bytes", max);
}

static void conn_event_cb(struct bufferevent *bev, short events, void *ctx)
{
	struct userdb_conn *conn = ctx;
	int err = EVUTIL_SOCKET_ERROR();

	(void)bev;
	if ((events & BEV_EVENT_EOF) != 0 && !conn->handshake_done)
		conn_fail(conn, TRIB_LOG_WARNING,
			  "the auth service closed the connection during "
			  "the handshake (Dovecot's auth log has the cause)");
	else if ((events & BEV_EVENT_EOF) != 0)
		conn_fail(conn, TRIB_LOG_DEBUG,
			  "the auth service closed the connection");
	else
		conn_fail(conn, TRIB_LOG_WARNING, "connection lost: %s",
			  err != 0 ? strerror(err) : "unknown error");
}

static char *connect_error(struct trib_userdb_client *client, int err)
{
	char buf[1024];
	struct passwd pw, *pwp = NULL;
	struct stat st;

	switch (err) {
	case EACCES:
	case EPERM:
		if (stat(client->socket_path, &st) == 0 &&
		    getpwuid_r(st.st_uid, &pw, buf, sizeof(buf), &pwp) == 0 &&
		    pwp != NULL)
			return trib_strdup_printf(
				"%s (the socket belongs to %s, mode %04o: the "
				"fetcher must run as the user the listener "
				"belongs to)",
				strerror(err), pw.pw_name,
				(unsigned int)(st.st_mode & 07777));
		return trib_strdup_printf("%s (the fetcher must run as the "
					  "user the listener belongs to)",
					  strerror(err));
	case ENOENT:
		return trib_strdup_printf("%s (is Dovecot running, with the "
					  "listener in its configuration?)",
					  strerror(err));
	case ECONNREFUSED:
		return trib_strdup_printf("%s (Dovecot's auth service is not "
					  "listening: is Dovecot running?)",
					  strerror(err));
	case EAGAIN:
		return trib_strdup("the auth service's listen queue is full "
				   "(try again later)");
	default:
		return trib_strdup(strerror(err));
	}
}

static struct userdb_conn *conn_open(struct trib_userdb_client *client,
				     bool for_list, char **error_r)
{
	union {
		struct sockaddr sa;
		struct sockaddr_un sun;
	} addr;
	struct userdb_conn *conn;
	int fd, err;

	memset(&addr, 0, sizeof(addr));
	addr.sun.sun_family = AF_UNIX;
	if (strlen(client->socket_path) >= sizeof(addr.sun.sun_path)) {
		*error_r = trib_strdup_printf("the path is longer than %zu "
					      "bytes",
					      sizeof(addr.sun.sun_path) - 1);
		return NULL;
	}
	memcpy(addr.sun.sun_path, client->socket_path,
	       strlen(client->socket_path));
	fd = socket(AF_UNIX, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
	if (fd < 0) {
		*error_r = trib_strdup_printf("socket(): %s", strerror(errno));
		return NULL;
	}
	if (connect(fd, &addr.sa, sizeof(addr.sun)) < 0) {
		err = errno;
		close(fd);
		*error_r = connect_error(client, err);
		return NULL;
	}
	conn = trib_calloc(1, sizeof(*conn));
	conn->client = client;
	conn->for_list = for_list;
	/* Callbacks are not deferred, so errno is still the socket's in
	 * conn_event_cb; they never call the user's code anyway. */
	conn->bev = bufferevent_socket_new(trib_loop_base(client->loop), fd,
					   BEV_OPT_CLOSE_ON_FREE);
	if (conn->bev == NULL) {
		close(fd);
		free(conn);
		*error_r = trib_strdup("cannot create a bufferevent");
		return NULL;
	}
	bufferevent_setcb(conn->bev, conn_read_cb, NULL, conn_event_cb, conn);
	bufferevent_enable(conn->bev, EV_READ | EV_WRITE);
	bufferevent_write(conn->bev, USERDB_HANDSHAKE,
			  strlen(USERDB_HANDSHAKE));
	conn->next = client->conns;
	if (client->conns != NULL)
		client->conns->prev = conn;
	client->conns = conn;
	trib_log(client->logger, TRIB_LOG_DEBUG, "%s: connected%s",
		 client->prefix, for_list ? " (for LIST)" : "");
	return conn;
}

static void request_timeout_cb(evutil_socket_t fd, short what, void *ctx)
{
	struct userdb_request *req = ctx;
	struct userdb_conn *conn = req->conn;
	unsigned int secs = req->client->timeout_secs;

	(void)fd;
	(void)what;
	if (conn->for_list) {
		conn_fail(conn, TRIB_LOG_DEBUG,
			  "listing users: no answer in %u s", secs);
	} else if (conn->reads == req->input_mark ||
		   conn->abandoned_count == USERDB_MAX_ABANDONED) {
		/* nothing at all came back: the service is stuck */
		conn_fail(conn, TRIB_LOG_DEBUG,
			  "no answer from the auth service in %u s", secs);
	} else {
		conn_abandon(conn, req->id);
		request_fail(req, "timed out: no answer in %u s", secs);
	}
}

/* Send the request on its connection (the shared one for lookups, a new
 * one for a LIST). */
static void request_send(struct userdb_request *req)
{
	struct trib_userdb_client *client = req->client;
	struct timeval tv = { client->timeout_secs, 0 };
	struct userdb_conn *conn;
	char *error, *line;

	if (client->destroyed) {
		request_fail(req, "canceled");
		return;
	}
	conn = req->kind == USERDB_LOOKUP ? client->lookup_conn : NULL;
	if (conn == NULL) {
		conn = conn_open(client, req->kind == USERDB_LIST, &error);
		if (conn == NULL) {
			request_finish(req, -1, error);
			free(error);
			return;
		}
		if (req->kind == USERDB_LOOKUP)
			client->lookup_conn = conn;
	}
	if (++client->last_id == 0)
		client->last_id = 1;
	req->id = client->last_id;
	req->conn = conn;
	req->prev = conn->requests_tail;
	if (conn->requests_tail != NULL)
		conn->requests_tail->next = req;
	else
		conn->requests = req;
	conn->requests_tail = req;
	req->input_mark = conn->reads;
	req->timer = evtimer_new(trib_loop_base(client->loop),
				 request_timeout_cb, req);
	evtimer_add(req->timer, &tv);
	if (req->kind == USERDB_LOOKUP)
		line = trib_strdup_printf("USER\t%u\t%s\tservice=%s\n", req->id,
					  req->wire_name, USERDB_SERVICE);
	else
		line = trib_strdup_printf("LIST\t%u\tservice=%s\n", req->id,
					  USERDB_SERVICE);
	bufferevent_write(conn->bev, line, strlen(line));
	free(line);
}

/* ---- API ---- */

struct trib_userdb_client *
trib_userdb_client_create(struct trib_loop *loop, const char *socket_path,
			  unsigned int timeout_secs,
			  const struct trib_logger *logger)
{
	struct trib_userdb_client *client = trib_calloc(1, sizeof(*client));

	client->loop = loop;
	client->socket_path = trib_strdup(socket_path);
	client->prefix = trib_strdup_printf("userdb socket %s", socket_path);
	client->timeout_secs =
		timeout_secs == 0 ? USERDB_DEFAULT_TIMEOUT_SECS : timeout_secs;
	client->logger = logger;
	trib_userdb_client_set_limits(client, NULL);
	client->deliver_event =
		evtimer_new(trib_loop_base(loop), client_deliver_cb, client);
	return client;
}

void trib_userdb_client_destroy(struct trib_userdb_client **_client)
{
	struct trib_userdb_client *client = *_client;
	struct userdb_request *req;

	if (client == NULL)
		return;
	*_client = NULL;
	if (client->destroyed)
		return;
	client->destroyed = true;
	while (client->conns != NULL)
		conn_fail(client->conns, TRIB_LOG_DEBUG, "canceled");
	/* Whatever is queued, answered or not, is canceled; callbacks may
	 * still queue more (refused at once), so drain until empty. */
	while ((req = client_done_pop(client)) != NULL) {
		char *what = request_what(req);

		free(req->error);
		req->result = -1;
		req->error = trib_strdup_printf("%s: %s canceled",
						client->prefix, what);
		free(what);
		request_call(req);
		request_free(req);
	}
	evtimer_del(client->deliver_event);
	if (!client->delivering)
		client_free(client);
}

void trib_userdb_client_set_limits(struct trib_userdb_client *client,
				   const struct trib_userdb_limits *limits)
{
	static const struct trib_userdb_limits none = { 0, 0, 0 };

	if (limits == NULL)
		limits = &none;
	client->limits.max_line = limits->max_line != 0
					  ? limits->max_line
					  : USERDB_DEFAULT_MAX_LINE;
	client->limits.max_users = limits->max_users != 0
					   ? limits->max_users
					   : USERDB_DEFAULT_MAX_USERS;
	client->limits.max_fields = limits->max_fields != 0
					    ? limits->max_fields
					    : USERDB_DEFAULT_MAX_FIELDS;
}

void trib_userdb_lookup(struct trib_userdb_client *client, const char *user,
			trib_userdb_lookup_callback_t *callback, void *context)
{
	struct userdb_request *req =
		request_new(client, USERDB_LOOKUP, context);
	size_t len = 0;

	req->lookup_cb = callback;
	req->user = trib_userdb_sanitize(req->pool, user, 100);
	if (user[0] == '\0') {
		request_fail(req, "refused: the name is empty");
		return;
	}
	if (strpbrk(user, "\t\r\n") != NULL) {
		request_fail(req, "refused: the name holds a TAB, CR or LF");
		return;
	}
	/* Dovecot unescapes what it reads: \001 goes as \001 '1'. */
	req->wire_name = trib_malloc(strlen(user) * 2 + 1);
	for (const char *p = user; *p != '\0'; p++) {
		req->wire_name[len++] = *p;
		if (*p == '\001')
			req->wire_name[len++] = '1';
	}
	req->wire_name[len] = '\0';
	if (len > USERDB_MAX_NAME) {
		request_fail(req,
			     "refused: the name is longer than %u bytes "
			     "(a request longer than %u bytes makes "
			     "Dovecot's auth service drop the connection)",
			     (unsigned int)USERDB_MAX_NAME, USERDB_MAX_REQUEST);
		return;
	}
	request_send(req);
}

void trib_userdb_list(struct trib_userdb_client *client,
		      trib_userdb_list_callback_t *callback, void *context)
{
	struct userdb_request *req = request_new(client, USERDB_LIST, context);

	req->list_cb = callback;
	request_send(req);
}

const char *trib_userdb_field_get(const struct trib_userdb_user *user,
				  const char *key)
{
	for (unsigned int i = 0; i < user->count; i++) {
		if (strcmp(user->fields[i].key, key) == 0)
			return user->fields[i].value;
	}
	return NULL;
}
