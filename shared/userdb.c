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

#include "userdb-private.h"

#include "alloc.h"
#include "loop.h"
#include "userdb-parse.h"

#include <event2/buffer.h>
#include <event2/event.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

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
void trib_userdb_request_finish(struct userdb_request *req, int result,
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

/* Fail with "<what> <message>", e.g. "lookup of 'bob' failed: ...". */
void trib_userdb_request_fail(struct userdb_request *req, const char *fmt, ...)
{
	char *what = request_what(req), *message, *error;
	va_list args;

	va_start(args, fmt);
	message = trib_strdup_vprintf(fmt, args);
	va_end(args);
	error = trib_strdup_printf("%s %s", what, message);
	trib_userdb_request_finish(req, -1, error);
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
		trib_userdb_conn_fail(client->conns, TRIB_LOG_DEBUG,
				      "canceled");
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
		trib_userdb_request_fail(req, "refused: the name is empty");
		return;
	}
	if (strpbrk(user, "\t\r\n") != NULL) {
		trib_userdb_request_fail(
			req, "refused: the name holds a TAB, CR or LF");
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
		trib_userdb_request_fail(
			req,
			"refused: the name is longer than %u bytes "
			"(a request longer than %u bytes makes "
			"Dovecot's auth service drop the connection)",
			(unsigned int)USERDB_MAX_NAME, USERDB_MAX_REQUEST);
		return;
	}
	trib_userdb_request_send(req);
}

void trib_userdb_list(struct trib_userdb_client *client,
		      trib_userdb_list_callback_t *callback, void *context)
{
	struct userdb_request *req = request_new(client, USERDB_LIST, context);

	req->list_cb = callback;
	trib_userdb_request_send(req);
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
