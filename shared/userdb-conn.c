/* userdb-conn.c: the connections of the auth userdb client (see
 * userdb.c for the protocol and userdb-private.h): opening the socket,
 * the VERSION handshake, reading and matching the replies, request
 * timers and late answers of timed-out requests. */

#include "userdb-private.h"

#include "alloc.h"
#include "loop.h"
#include "userdb-parse.h"

#include <errno.h>
#include <event2/buffer.h>
#include <pwd.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/un.h>
#include <unistd.h>

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
void trib_userdb_conn_fail(struct userdb_conn *conn,
			   enum trib_log_level idle_level, const char *fmt, ...)
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
		trib_userdb_request_finish(conn->requests, -1, message);
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
		trib_userdb_request_fail(req, "%s", error);
		return;
	}
	trib_log(req->client->logger, TRIB_LOG_DEBUG,
		 "%s: USER %u %s: found as %s, %u fields", req->client->prefix,
		 req->id, req->user, user->name, user->count);
	trib_userdb_request_finish(req, 1, NULL);
}

/* FAIL\t<id>[\treason=<text>] */
static void reply_fail(struct userdb_request *req,
		       const struct trib_userdb_reply *reply)
{
	const char *reason = trib_userdb_reply_fail_reason(req->pool, reply);

	if (reason == NULL) {
		trib_userdb_request_fail(
			req, "failed without a reason (Dovecot's auth "
			     "log has it; a listener with mode 0666 "
			     "answers only for users whose uid is the "
			     "fetcher's)");
		return;
	}
	trib_userdb_request_fail(req, "failed: %s",
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
		trib_userdb_conn_fail(conn, TRIB_LOG_WARNING,
				      "listing users: %s", error);
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
		trib_userdb_request_fail(
			req, "failed (no userdb that can iterate, e.g. "
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
	trib_userdb_request_finish(req, 1, NULL);
}

/* line is the whole line, for messages; pool lives as long as the line. */
static int conn_input_handshake(struct userdb_conn *conn,
				const struct trib_userdb_reply *reply,
				const char *line, struct trib_pool *pool)
{
	if (reply->type == TRIB_USERDB_REPLY_VERSION && !conn->version_seen) {
		if (!reply->version_supported) {
			trib_userdb_conn_fail(
				conn, TRIB_LOG_WARNING,
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
		trib_userdb_conn_fail(
			conn, TRIB_LOG_WARNING,
			"this is an authentication client socket, not a "
			"userdb listener (auth-userdb or tributary-userdb)");
		return -1;
	}
	trib_userdb_conn_fail(conn, TRIB_LOG_WARNING,
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
		trib_userdb_request_finish(req, 0, NULL);
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
	trib_userdb_conn_fail(conn, TRIB_LOG_WARNING,
			      "protocol error: unexpected line: %s",
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
		trib_userdb_conn_fail(conn, TRIB_LOG_WARNING,
				      "protocol error: %s", error);
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
	trib_userdb_conn_fail(conn, TRIB_LOG_WARNING,
			      "protocol error: a line longer than %zu bytes",
			      max);
}

static void conn_event_cb(struct bufferevent *bev, short events, void *ctx)
{
	struct userdb_conn *conn = ctx;
	int err = EVUTIL_SOCKET_ERROR();

	(void)bev;
	if ((events & BEV_EVENT_EOF) != 0 && !conn->handshake_done)
		trib_userdb_conn_fail(
			conn, TRIB_LOG_WARNING,
			"the auth service closed the connection during "
			"the handshake (Dovecot's auth log has the cause)");
	else if ((events & BEV_EVENT_EOF) != 0)
		trib_userdb_conn_fail(conn, TRIB_LOG_DEBUG,
				      "the auth service closed the connection");
	else
		trib_userdb_conn_fail(
			conn, TRIB_LOG_WARNING, "connection lost: %s",
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
		trib_userdb_conn_fail(conn, TRIB_LOG_DEBUG,
				      "listing users: no answer in %u s", secs);
	} else if (conn->reads == req->input_mark ||
		   conn->abandoned_count == USERDB_MAX_ABANDONED) {
		/* nothing at all came back: the service is stuck */
		trib_userdb_conn_fail(conn, TRIB_LOG_DEBUG,
				      "no answer from the auth service in %u s",
				      secs);
	} else {
		conn_abandon(conn, req->id);
		trib_userdb_request_fail(req, "timed out: no answer in %u s",
					 secs);
	}
}

/* Send the request on its connection (the shared one for lookups, a new
 * one for a LIST). */
void trib_userdb_request_send(struct userdb_request *req)
{
	struct trib_userdb_client *client = req->client;
	struct timeval tv = { client->timeout_secs, 0 };
	struct userdb_conn *conn;
	char *error, *line;

	if (client->destroyed) {
		trib_userdb_request_fail(req, "canceled");
		return;
	}
	conn = req->kind == USERDB_LOOKUP ? client->lookup_conn : NULL;
	if (conn == NULL) {
		conn = conn_open(client, req->kind == USERDB_LIST, &error);
		if (conn == NULL) {
			trib_userdb_request_finish(req, -1, error);
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
