/* imap-client.c: the IMAP session: its state machine, the connect
 * sequence (greeting, STARTTLS, CAPABILITY), teardown and the public
 * accessors. The command queue is imap-client-queue.c, login imap-auth.c. */

#include "imap-client-private.h"

#include "alloc.h"
#include "conn.h"
#include "loop.h"
#include "tls.h"

#include <event2/buffer.h>
#include <event2/event.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

static const char *const imap_state_names[] = {
	[IMAP_STATE_NEW] = "new",
	[IMAP_STATE_CONNECTING] = "connecting",
	[IMAP_STATE_GREETING] = "greeting",
	[IMAP_STATE_STARTTLS] = "starttls",
	[IMAP_STATE_CAPABILITY] = "capability",
	[IMAP_STATE_NOT_AUTHENTICATED] = "not-authenticated",
	[IMAP_STATE_AUTHENTICATING] = "authenticating",
	[IMAP_STATE_AUTHENTICATED] = "authenticated",
	[IMAP_STATE_CLOSED] = "closed",
};

/* ---- small helpers ---- */

void trib_imap_client_set_state(struct trib_imap_client *client,
				enum imap_state state)
{
	if (client->state == state)
		return;
	trib_log(client->logger, TRIB_LOG_DEBUG, "%s: state %s -> %s",
		 client->name, imap_state_names[client->state],
		 imap_state_names[state]);
	client->state = state;
}

void trib_imap_client_ref(struct trib_imap_client *client)
{
	client->refcount++;
}

/* Returns false when the client was destroyed meanwhile. */
bool trib_imap_client_unref(struct trib_imap_client *client)
{
	if (--client->refcount > 0)
		return !client->destroyed;
	if (client->destroyed) {
		trib_imap_client_free(client);
		return false;
	}
	return true;
}

void trib_imap_client_caps_clear(struct trib_imap_client *client)
{
	if (client->caps == NULL)
		return;
	for (char **cap = client->caps; *cap != NULL; cap++)
		free(*cap);
	free(client->caps);
	client->caps = NULL;
}

void trib_imap_client_caps_set(struct trib_imap_client *client,
			       const struct trib_imap_arg *args,
			       unsigned int count)
{
	unsigned int n = 0;
	const char *str;

	trib_imap_client_caps_clear(client);
	client->caps = trib_calloc(count + 1, sizeof(char *));
	for (unsigned int i = 0; i < count; i++) {
		if (args[i].type == TRIB_IMAP_ARG_ATOM &&
		    trib_imap_arg_get_astring(&args[i], &str))
			client->caps[n++] = trib_strdup(str);
	}
}

/* ---- connection teardown ---- */

static void client_close(struct trib_imap_client *client,
			 enum trib_error_class class, const char *reason)
{
	struct trib_imap_event event = {
		.type = TRIB_IMAP_EVENT_DISCONNECTED,
		.text = reason,
		.error_class = class,
	};
	trib_imap_callback_t *connect_cb = client->connect_callback;

	if (client->state == IMAP_STATE_CLOSED)
		return;
	trib_imap_client_set_state(client, IMAP_STATE_CLOSED);
	trib_conn_destroy(&client->conn);
	trib_imap_client_ref(client);
	if (connect_cb != NULL) {
		struct trib_imap_reply reply = {
			.status = TRIB_IMAP_STATUS_NONE,
			.error_class = class,
			.text = "",
			.error = reason,
		};

		client->connect_callback = NULL;
		connect_cb(&reply, client->connect_context);
	}
	if (!client->destroyed)
		trib_imap_client_cancel_all(client, reason);
	if (!client->destroyed && client->event_callback != NULL)
		client->event_callback(&event, client->event_context);
	trib_imap_client_unref(client);
}

void trib_imap_client_fail_connect(struct trib_imap_client *client,
				   enum trib_error_class class, const char *fmt,
				   ...)
{
	char reason[700];
	va_list args;

	va_start(args, fmt);
	vsnprintf(reason, sizeof(reason), fmt, args);
	va_end(args);
	snprintf(client->error, sizeof(client->error), "%s: %s", client->name,
		 reason);
	trib_log(client->logger, TRIB_LOG_DEBUG, "%s", client->error);
	client_close(client, class, client->error);
}

static void client_connect_done(struct trib_imap_client *client)
{
	struct trib_imap_reply reply = {
		.status = TRIB_IMAP_STATUS_OK,
		.error_class = TRIB_OK,
		.text = "",
	};
	trib_imap_callback_t *cb = client->connect_callback;

	trib_imap_client_set_state(
		client, client->preauth ? IMAP_STATE_AUTHENTICATED
					: IMAP_STATE_NOT_AUTHENTICATED);
	client->connect_callback = NULL;
	if (cb != NULL)
		cb(&reply, client->connect_context);
	trib_imap_client_schedule_flush(client);
}

/* ---- the connect sequence: greeting, STARTTLS, CAPABILITY ---- */

static void capability_done(const struct trib_imap_reply *reply, void *context);
static void starttls_done(const struct trib_imap_reply *reply, void *context);

static const char *const capability_names[] = { "CAPABILITY", NULL };
static const struct trib_imap_command_handlers capability_handlers = {
	.done = capability_done,
	.untagged_names = capability_names,
};
static const struct trib_imap_command_handlers starttls_handlers = {
	.done = starttls_done,
};

static void send_internal(struct trib_imap_client *client, const char *line,
			  const struct trib_imap_command_handlers *handlers)
{
	struct trib_imap_command *cmd;

	cmd = trib_imap_client_command(
		client, line, TRIB_IMAP_COMMAND_FLAG_BARRIER, handlers, client);
	trib_imap_client_move_to_front(client, cmd);
	trib_imap_client_send_command(client, cmd);
	trib_imap_client_update_timeout(client);
}

static void client_after_capabilities(struct trib_imap_client *client)
{
	if (client->tls_mode == TRIB_IMAP_TLS_STARTTLS &&
	    !trib_conn_is_tls(client->conn)) {
		if (!trib_imap_client_has_capability(client, "STARTTLS")) {
			trib_imap_client_fail_connect(
				client, TRIB_ERR_PERM,
				"server does not offer STARTTLS; refusing to "
				"continue without TLS");
			return;
		}
		trib_imap_client_set_state(client, IMAP_STATE_STARTTLS);
		send_internal(client, "STARTTLS", &starttls_handlers);
		return;
	}
	client_connect_done(client);
}

static void capability_done(const struct trib_imap_reply *reply, void *context)
{
	struct trib_imap_client *client = context;

	if (reply->status == TRIB_IMAP_STATUS_NONE)
		return; /* connection lost: client_close() reports it */
	if (reply->status != TRIB_IMAP_STATUS_OK || client->caps == NULL) {
		trib_imap_client_fail_connect(client, TRIB_ERR_TEMP,
					      "CAPABILITY failed: %s",
					      reply->text);
		return;
	}
	if (client->state == IMAP_STATE_CAPABILITY)
		client_after_capabilities(client);
}

static void starttls_done(const struct trib_imap_reply *reply, void *context)
{
	struct trib_imap_client *client = context;
	const char *error;

	if (reply->status == TRIB_IMAP_STATUS_NONE)
		return;
	if (reply->status != TRIB_IMAP_STATUS_OK) {
		trib_imap_client_fail_connect(client, TRIB_ERR_PERM,
					      "STARTTLS refused: %s",
					      reply->text);
		return;
	}
	/* Forget everything learned in clear, and any bytes that came after
	 * the OK: the parser starts afresh on the TLS stream. */
	trib_imap_client_caps_clear(client);
	trib_imap_parser_destroy(&client->parser);
	client->parser = trib_imap_parser_create(&client->limits);
	if (trib_conn_start_tls(client->conn, &error) < 0)
		trib_imap_client_fail_connect(client, TRIB_ERR_PERM,
					      "STARTTLS: %s", error);
}

void trib_imap_client_handle_greeting(struct trib_imap_client *client,
				      const struct trib_imap_response *resp)
{
	if (resp->kind != TRIB_IMAP_RESP_UNTAGGED ||
	    resp->status == TRIB_IMAP_STATUS_NONE) {
		trib_imap_client_fail_connect(
			client, TRIB_ERR_TEMP,
			"not an IMAP server (unexpected greeting)");
		return;
	}
	switch (resp->status) {
	case TRIB_IMAP_STATUS_OK:
		break;
	case TRIB_IMAP_STATUS_PREAUTH:
		if (!trib_conn_is_tls(client->conn)) {
			/* A PREAUTH in clear can never be secured: STARTTLS
			 * is not allowed after it (fetchmail CVE-2021-39272).
			 */
			trib_imap_client_fail_connect(
				client, TRIB_ERR_PERM,
				"server sent PREAUTH on an unencrypted "
				"connection; refusing it");
			return;
		}
		break;
	case TRIB_IMAP_STATUS_BYE:
		trib_imap_client_fail_connect(
			client, TRIB_ERR_TEMP,
			"server refused the connection: %s", resp->text);
		return;
	default:
		trib_imap_client_fail_connect(client, TRIB_ERR_TEMP,
					      "unexpected greeting %s",
					      resp->name);
		return;
	}
	if (resp->code != NULL && strcasecmp(resp->code, "CAPABILITY") == 0)
		trib_imap_client_caps_set(client, resp->code_args,
					  resp->code_arg_count);
	/* PREAUTH (only over implicit TLS): already logged in. */
	client->preauth = resp->status == TRIB_IMAP_STATUS_PREAUTH;
	trib_imap_client_set_state(client, IMAP_STATE_CAPABILITY);
	if (client->caps == NULL) {
		send_internal(client, "CAPABILITY", &capability_handlers);
		return;
	}
	client_after_capabilities(client);
}

/* ---- connection callbacks ---- */

static void client_connected(void *context)
{
	struct trib_imap_client *client = context;

	if (client->state == IMAP_STATE_CONNECTING) {
		trib_imap_client_set_state(client, IMAP_STATE_GREETING);
		return;
	}
	/* STARTTLS handshake finished: ask again what the server offers. */
	trib_log(client->logger, TRIB_LOG_DEBUG, "%s: TLS established (%s)",
		 client->name, trib_conn_tls_description(client->conn));
	trib_imap_client_set_state(client, IMAP_STATE_CAPABILITY);
	send_internal(client, "CAPABILITY", &capability_handlers);
}

static void client_conn_failed(enum trib_error_class class, const char *error,
			       void *context)
{
	struct trib_imap_client *client = context;
	char reason[900];

	if (client->bye_text != NULL && class == TRIB_ERR_TEMP)
		snprintf(reason, sizeof(reason), "%s (server said BYE: %s)",
			 error, client->bye_text);
	else
		snprintf(reason, sizeof(reason), "%s", error);
	if (client->state == IMAP_STATE_STARTTLS && class == TRIB_ERR_PERM)
		trib_log(client->logger, TRIB_LOG_DEBUG,
			 "%s: TLS after STARTTLS refused", client->name);
	client_close(client, class, reason);
}

static const struct trib_conn_callbacks client_conn_callbacks = {
	.connected = client_connected,
	.readable = trib_imap_client_readable,
	.failed = client_conn_failed,
};

/* ---- public ---- */

struct trib_imap_client *
trib_imap_client_create(struct trib_loop *loop,
			const struct trib_imap_client_settings *set,
			const char **error_r)
{
	struct trib_tls_settings tls_set = {
		.ca_file = set->ca_file,
		.verify = set->tls_verify,
	};
	struct trib_imap_client *client;
	struct trib_tls_ctx *tls_ctx = NULL;

	if (set->host == NULL || set->host[0] == '\0' || set->port == 0 ||
	    set->port > 65535) {
		*error_r = "IMAP host and port (1-65535) are required";
		return NULL;
	}
	if (set->tls_mode != TRIB_IMAP_TLS_NONE) {
		tls_ctx = trib_tls_ctx_create(&tls_set, error_r);
		if (tls_ctx == NULL)
			return NULL;
	}
	client = trib_calloc(1, sizeof(*client));
	client->loop = loop;
	client->host = trib_strdup(set->host);
	client->port = set->port;
	client->name =
		set->name != NULL
			? trib_strdup(set->name)
			: trib_strdup_printf("%s:%u", set->host, set->port);
	client->tls_mode = set->tls_mode;
	client->command_timeout_secs = set->command_timeout_secs == 0
					       ? 120
					       : set->command_timeout_secs;
	if (set->limits != NULL)
		client->limits = *set->limits;
	else
		trib_imap_limits_default(&client->limits);
	client->logger = set->logger;
	client->trace = set->trace;
	client->tls_ctx = tls_ctx;
	client->parser = trib_imap_parser_create(&client->limits);
	client->literal_buf = evbuffer_new();
	trib_imap_client_queue_init(client, trib_loop_base(loop));
	client->refcount = 1;

	struct trib_conn_settings conn_set = {
		.host = set->host,
		.port = set->port,
		.tls_ctx = tls_ctx,
		.implicit_tls = set->tls_mode == TRIB_IMAP_TLS_IMPLICIT,
		.connect_timeout_secs = set->connect_timeout_secs,
	};
	client->conn = trib_conn_create(loop, &conn_set, &client_conn_callbacks,
					client);
	return client;
}

void trib_imap_client_free(struct trib_imap_client *client)
{
	trib_conn_destroy(&client->conn);
	trib_imap_parser_destroy(&client->parser);
	trib_tls_ctx_destroy(&client->tls_ctx);
	if (client->flush_event != NULL)
		event_free(client->flush_event);
	evbuffer_free(client->literal_buf);
	trib_imap_client_caps_clear(client);
	free(client->bye_text);
	free(client->name);
	free(client->host);
	free(client);
}

void trib_imap_client_destroy(struct trib_imap_client **_client)
{
	struct trib_imap_client *client = *_client;

	if (client == NULL)
		return;
	*_client = NULL;
	if (client->destroyed)
		return;
	client->destroyed = true;
	/* Commands are canceled (their callbacks fire once more); no event
	 * or connect callback is reported any more. */
	client->event_callback = NULL;
	client->connect_callback = NULL;
	trib_conn_destroy(&client->conn);
	trib_imap_client_set_state(client, IMAP_STATE_CLOSED);
	client->refcount++;
	while (client->commands != NULL)
		trib_imap_client_fail_command(client, client->commands,
					      TRIB_ERR_CANCELED,
					      "client closed");
	client->refcount--;
	if (client->flush_event != NULL)
		evtimer_del(client->flush_event);
	if (--client->refcount == 0)
		trib_imap_client_free(client);
}

void trib_imap_client_set_event_handler(struct trib_imap_client *client,
					trib_imap_event_callback_t *callback,
					void *context)
{
	client->event_callback = callback;
	client->event_context = context;
}

void trib_imap_client_connect(struct trib_imap_client *client,
			      trib_imap_callback_t *callback, void *context)
{
	client->connect_callback = callback;
	client->connect_context = context;
	if (client->state != IMAP_STATE_NEW) {
		trib_imap_client_fail_connect(client, TRIB_ERR_PERM,
					      "connect called twice");
		return;
	}
	trib_imap_client_set_state(client, IMAP_STATE_CONNECTING);
	trib_log(client->logger, TRIB_LOG_DEBUG, "%s: connecting to %s (%s)",
		 client->name, trib_conn_peer_name(client->conn),
		 client->tls_mode == TRIB_IMAP_TLS_IMPLICIT   ? "TLS"
		 : client->tls_mode == TRIB_IMAP_TLS_STARTTLS ? "STARTTLS"
							      : "no TLS");
	trib_conn_connect(client->conn);
}

bool trib_imap_client_has_capability(const struct trib_imap_client *client,
				     const char *cap)
{
	if (client->caps == NULL)
		return false;
	for (char **c = client->caps; *c != NULL; c++) {
		if (strcasecmp(*c, cap) == 0)
			return true;
	}
	return false;
}

const char *const *
trib_imap_client_capabilities(const struct trib_imap_client *client)
{
	static const char *const none[] = { NULL };

	return client->caps != NULL ? (const char *const *)client->caps : none;
}

void trib_imap_client_set_reading(struct trib_imap_client *client, bool on)
{
	if (client->conn != NULL)
		trib_conn_set_reading(client->conn, on);
}

bool trib_imap_client_is_tls(const struct trib_imap_client *client)
{
	return client->conn != NULL && trib_conn_is_tls(client->conn);
}

const char *trib_imap_client_tls_description(struct trib_imap_client *client)
{
	return client->conn != NULL ? trib_conn_tls_description(client->conn)
				    : "";
}

bool trib_imap_client_is_authenticated(const struct trib_imap_client *client)
{
	return client->state == IMAP_STATE_AUTHENTICATED;
}

const char *trib_imap_client_name(const struct trib_imap_client *client)
{
	return client->name;
}

const struct trib_logger *
trib_imap_client_logger(const struct trib_imap_client *client)
{
	return client->logger;
}

int trib_imap_quote(char *buf, size_t size, const char *str)
{
	size_t out = 0;

	if (size < 3)
		return -1;
	buf[out++] = '"';
	for (const unsigned char *p = (const unsigned char *)str; *p != '\0';
	     p++) {
		if (*p == '\r' || *p == '\n' || *p >= 0x80)
			return -1;
		if (*p == '"' || *p == '\\') {
			if (out + 2 >= size - 1)
				return -1;
			buf[out++] = '\\';
		}
		if (out + 1 >= size - 1)
			return -1;
		buf[out++] = (char)*p;
	}
	buf[out++] = '"';
	buf[out] = '\0';
	return 0;
}
