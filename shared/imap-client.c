/* imap-client.c: the IMAP session state machine and its command queue. */

#include "imap-client.h"

#include "alloc.h"
#include "conn.h"
#include "loop.h"
#include "sasl.h"
#include "tls.h"

#include <event2/buffer.h>
#include <openssl/crypto.h>
#include <event2/event.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

enum imap_state {
	IMAP_STATE_NEW,
	IMAP_STATE_CONNECTING,
	IMAP_STATE_GREETING,
	IMAP_STATE_STARTTLS,   /* STARTTLS sent, or handshake running */
	IMAP_STATE_CAPABILITY, /* asking what the server offers */
	IMAP_STATE_NOT_AUTHENTICATED,
	IMAP_STATE_AUTHENTICATING,
	IMAP_STATE_AUTHENTICATED, /* also "selected": commands track that */
	IMAP_STATE_CLOSED,
};

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

struct trib_imap_command {
	struct trib_imap_command *next;
	char tag[16];
	char *line;	/* may hold a secret: wiped after sending */
	char *log_line; /* what the trace shows */
	enum trib_imap_command_flags flags;
	const struct trib_imap_command_handlers *handlers;
	void *context;
	bool sent;
	/* Completed locally at flush time instead of being sent. */
	enum trib_error_class fail_class;
	char *fail_error;
};

struct trib_imap_client {
	struct trib_loop *loop;
	char *name;
	char *host;
	unsigned int port;
	enum trib_imap_tls_mode tls_mode;
	unsigned int command_timeout_secs;
	struct trib_imap_limits limits;
	const struct trib_logger *logger;
	bool trace;

	struct trib_tls_ctx *tls_ctx;
	struct trib_conn *conn;
	struct trib_imap_parser *parser;
	enum imap_state state;

	struct trib_imap_command *commands; /* sent first, then queued */
	unsigned int tag_counter;
	struct event *flush_event;
	bool flushing;

	char **caps;
	char *bye_text;
	bool preauth;

	trib_imap_callback_t *connect_callback;
	void *connect_context;
	trib_imap_event_callback_t *event_callback;
	void *event_context;

	/* streamed literal in progress */
	struct trib_imap_command *literal_cmd;
	bool literal_begun;
	struct evbuffer *literal_buf;

	int refcount;
	bool destroyed;
	char error[1024];
};

static void client_flush(struct trib_imap_client *client);
static void client_schedule_flush(struct trib_imap_client *client);
static void client_fail_connect(struct trib_imap_client *client,
				enum trib_error_class class, const char *fmt,
				...) TRIB_ATTR_PRINTF(3, 4);

/* ---- small helpers ---- */

static void client_set_state(struct trib_imap_client *client,
			     enum imap_state state)
{
	if (client->state == state)
		return;
	trib_log(client->logger, TRIB_LOG_DEBUG, "%s: state %s -> %s",
		 client->name, imap_state_names[client->state],
		 imap_state_names[state]);
	client->state = state;
}

static void client_ref(struct trib_imap_client *client)
{
	client->refcount++;
}

static void client_free(struct trib_imap_client *client);

/* Returns false when the client was destroyed meanwhile. */
static bool client_unref(struct trib_imap_client *client)
{
	if (--client->refcount > 0)
		return !client->destroyed;
	if (client->destroyed) {
		client_free(client);
		return false;
	}
	return true;
}

static void caps_free(struct trib_imap_client *client)
{
	if (client->caps == NULL)
		return;
	for (char **cap = client->caps; *cap != NULL; cap++)
		free(*cap);
	free(client->caps);
	client->caps = NULL;
}

static void caps_set(struct trib_imap_client *client,
		     const struct trib_imap_arg *args, unsigned int count)
{
	unsigned int n = 0;
	const char *str;

	caps_free(client);
	client->caps = trib_calloc(count + 1, sizeof(char *));
	for (unsigned int i = 0; i < count; i++) {
		if (args[i].type == TRIB_IMAP_ARG_ATOM &&
		    trib_imap_arg_get_astring(&args[i], &str))
			client->caps[n++] = trib_strdup(str);
	}
}

static enum trib_error_class code_error_class(const char *code)
{
	static const char *const perm[] = {
		"AUTHENTICATIONFAILED",
		"AUTHORIZATIONFAILED",
		"EXPIRED",
		"PRIVACYREQUIRED",
		"CONTACTADMIN",
		"NOPERM",
		"NONEXISTENT",
		"ALREADYEXISTS",
		"CANNOT",
		"CLIENTBUG",
		"BADCHARSET",
	};
	static const char *const wait[] = { "THROTTLED", "LIMIT", "OVERQUOTA" };

	if (code == NULL)
		return TRIB_ERR_TEMP;
	for (size_t i = 0; i < TRIB_N_ELEMENTS(perm); i++) {
		if (strcasecmp(code, perm[i]) == 0)
			return TRIB_ERR_PERM;
	}
	for (size_t i = 0; i < TRIB_N_ELEMENTS(wait); i++) {
		if (strcasecmp(code, wait[i]) == 0)
			return TRIB_ERR_WAIT;
	}
	return TRIB_ERR_TEMP;
}

static void trace_command(struct trib_imap_client *client,
			  const struct trib_imap_command *cmd)
{
	if (client->trace)
		trib_log(client->logger, TRIB_LOG_DEBUG, "%s: C: %s %s",
			 client->name, cmd->tag,
			 cmd->log_line != NULL ? cmd->log_line : cmd->line);
}

static void trace_response(struct trib_imap_client *client,
			   const struct trib_imap_response *resp)
{
	if (!client->trace)
		return;
	if (resp->kind == TRIB_IMAP_RESP_CONTINUE) {
		trib_log(client->logger, TRIB_LOG_DEBUG, "%s: S: + %s",
			 client->name, resp->text);
	} else if (resp->status != TRIB_IMAP_STATUS_NONE) {
		trib_log(client->logger, TRIB_LOG_DEBUG,
			 "%s: S: %s %s %s%s%s%s", client->name,
			 resp->kind == TRIB_IMAP_RESP_TAGGED ? resp->tag : "*",
			 resp->name, resp->code != NULL ? "[" : "",
			 resp->code != NULL ? resp->code : "",
			 resp->code != NULL ? "] " : "", resp->text);
	} else if (resp->has_number) {
		trib_log(client->logger, TRIB_LOG_DEBUG,
			 "%s: S: * %u %s (%u args)", client->name, resp->number,
			 resp->name, resp->arg_count);
	} else {
		trib_log(client->logger, TRIB_LOG_DEBUG,
			 "%s: S: * %s (%u args)", client->name, resp->name,
			 resp->arg_count);
	}
}

/* ---- command queue ---- */

static void command_free(struct trib_imap_command *cmd)
{
	trib_secret_free(&cmd->line);
	free(cmd->log_line);
	free(cmd->fail_error);
	free(cmd);
}

static void command_unlink(struct trib_imap_client *client,
			   struct trib_imap_command *cmd)
{
	struct trib_imap_command **p;

	for (p = &client->commands; *p != NULL; p = &(*p)->next) {
		if (*p == cmd) {
			*p = cmd->next;
			cmd->next = NULL;
			return;
		}
	}
}

static const char *command_verb(const struct trib_imap_command *cmd, char *buf,
				size_t size)
{
	const char *line = cmd->log_line != NULL ? cmd->log_line : cmd->line;
	size_t len;

	if (line == NULL)
		line = "";
	len = strcspn(line, " ");
	/* "SELECT INBOX" and "AUTHENTICATE PLAIN" read better than the verb
	 * alone: keep a short second word, never a redacted one. */
	if (line[len] == ' ' && line[len + 1] != '<') {
		size_t len2 = strcspn(line + len + 1, " ");

		if (len2 < 60)
			len += 1 + len2;
	}
	snprintf(buf, size, "%.*s", (int)len, line);
	return buf;
}

/* Complete a command: unlink, call done once, free. */
static void command_complete(struct trib_imap_client *client,
			     struct trib_imap_command *cmd,
			     const struct trib_imap_reply *reply)
{
	command_unlink(client, cmd);
	if (client->literal_cmd == cmd)
		client->literal_cmd = NULL;
	if (cmd->handlers->done != NULL)
		cmd->handlers->done(reply, cmd->context);
	command_free(cmd);
}

static void command_fail(struct trib_imap_client *client,
			 struct trib_imap_command *cmd,
			 enum trib_error_class class, const char *reason)
{
	struct trib_imap_reply reply = {
		.status = TRIB_IMAP_STATUS_NONE,
		.error_class = class,
		.text = "",
	};
	char verb[80];
	char *error;

	error = trib_strdup_printf(
		"%s: %s %s: %s", client->name,
		command_verb(cmd, verb, sizeof(verb)),
		class == TRIB_ERR_CANCELED ? "canceled" : "failed", reason);
	reply.error = error;
	command_complete(client, cmd, &reply);
	free(error);
}

static void cancel_all_commands(struct trib_imap_client *client,
				const char *reason)
{
	while (client->commands != NULL && !client->destroyed) {
		client_ref(client);
		command_fail(client, client->commands, TRIB_ERR_CANCELED,
			     reason);
		if (!client_unref(client))
			return;
	}
}

struct trib_imap_command *
trib_imap_client_command(struct trib_imap_client *client, const char *line,
			 enum trib_imap_command_flags flags,
			 const struct trib_imap_command_handlers *handlers,
			 void *context)
{
	struct trib_imap_command *cmd = trib_calloc(1, sizeof(*cmd));
	struct trib_imap_command **p;

	snprintf(cmd->tag, sizeof(cmd->tag), "t%u", ++client->tag_counter);
	cmd->line = trib_strdup(line);
	cmd->flags = flags;
	cmd->handlers = handlers;
	cmd->context = context;
	if (strpbrk(line, "\r\n") != NULL) {
		cmd->fail_class = TRIB_ERR_PERM;
		cmd->fail_error = trib_strdup("command contains CR or LF");
	} else if (client->state == IMAP_STATE_CLOSED) {
		cmd->fail_class = TRIB_ERR_CANCELED;
		cmd->fail_error = trib_strdup("not connected");
	}
	for (p = &client->commands; *p != NULL; p = &(*p)->next)
		;
	*p = cmd;
	client_schedule_flush(client);
	return cmd;
}

struct trib_imap_command *trib_imap_client_command_refused(
	struct trib_imap_client *client, const char *line,
	const struct trib_imap_command_handlers *handlers, void *context,
	enum trib_error_class error_class, const char *reason)
{
	struct trib_imap_command *cmd;

	cmd = trib_imap_client_command(client, line, 0, handlers, context);
	if (cmd->fail_error == NULL) {
		cmd->fail_class = error_class;
		cmd->fail_error = trib_strdup(reason);
	}
	return cmd;
}

/* Internal commands of the connect sequence go before anything the
 * caller has queued meanwhile. */
static void command_move_to_front(struct trib_imap_client *client,
				  struct trib_imap_command *cmd)
{
	struct trib_imap_command **p = &client->commands;

	command_unlink(client, cmd);
	while (*p != NULL && (*p)->sent)
		p = &(*p)->next;
	cmd->next = *p;
	*p = cmd;
}

static bool client_can_send(const struct trib_imap_client *client)
{
	switch (client->state) {
	case IMAP_STATE_NOT_AUTHENTICATED:
	case IMAP_STATE_AUTHENTICATING:
	case IMAP_STATE_AUTHENTICATED:
		return true;
	case IMAP_STATE_GREETING:
	case IMAP_STATE_STARTTLS:
	case IMAP_STATE_CAPABILITY:
		/* only the internal commands, which the connect sequence
		 * sends itself through client_send_now() */
		return false;
	default:
		return false;
	}
}

static void client_update_timeout(struct trib_imap_client *client)
{
	bool waiting = false;

	for (struct trib_imap_command *cmd = client->commands; cmd != NULL;
	     cmd = cmd->next) {
		if (cmd->sent &&
		    (cmd->flags & TRIB_IMAP_COMMAND_FLAG_NO_TIMEOUT) == 0)
			waiting = true;
	}
	if (client->conn != NULL)
		trib_conn_set_read_timeout(
			client->conn,
			waiting ? client->command_timeout_secs : 0);
}

static void command_send(struct trib_imap_client *client,
			 struct trib_imap_command *cmd)
{
	trace_command(client, cmd);
	trib_conn_write(client->conn, cmd->tag, strlen(cmd->tag));
	trib_conn_write(client->conn, " ", 1);
	trib_conn_write(client->conn, cmd->line, strlen(cmd->line));
	trib_conn_write(client->conn, "\r\n", 2);
	/* The line may hold a password: keep it no longer than needed. */
	if (cmd->log_line != NULL) {
		trib_secret_free(&cmd->line);
		cmd->line = NULL;
	}
	cmd->sent = true;
}

static void client_flush(struct trib_imap_client *client)
{
	struct trib_imap_command *cmd, *next;
	bool in_flight = false, barrier_in_flight = false;

	if (client->flushing)
		return;
	client->flushing = true;
	client_ref(client);
	for (cmd = client->commands; cmd != NULL; cmd = next) {
		next = cmd->next;
		if (cmd->fail_error != NULL && !cmd->sent) {
			char *reason = trib_strdup(cmd->fail_error);

			command_fail(client, cmd, cmd->fail_class, reason);
			free(reason);
			if (client->destroyed)
				break;
			/* the callback may have queued or removed anything */
			next = client->commands;
			in_flight = barrier_in_flight = false;
			continue;
		}
		if (cmd->sent) {
			in_flight = true;
			if ((cmd->flags & TRIB_IMAP_COMMAND_FLAG_BARRIER) != 0)
				barrier_in_flight = true;
			continue;
		}
		if (barrier_in_flight || !client_can_send(client))
			break;
		if ((cmd->flags & TRIB_IMAP_COMMAND_FLAG_BARRIER) != 0 &&
		    in_flight)
			break;
		command_send(client, cmd);
		in_flight = true;
		if ((cmd->flags & TRIB_IMAP_COMMAND_FLAG_BARRIER) != 0)
			break;
	}
	client->flushing = false;
	if (client_unref(client))
		client_update_timeout(client);
}

static void flush_event_cb(evutil_socket_t fd, short what, void *ctx)
{
	(void)fd;
	(void)what;
	client_flush(ctx);
}

static void client_schedule_flush(struct trib_imap_client *client)
{
	static const struct timeval now = { 0, 0 };

	if (client->flush_event != NULL)
		evtimer_add(client->flush_event, &now);
}

void trib_imap_client_send_raw(struct trib_imap_client *client,
			       const char *line)
{
	if (client->conn == NULL || client->state == IMAP_STATE_CLOSED)
		return;
	if (client->trace)
		trib_log(client->logger, TRIB_LOG_DEBUG, "%s: C: %s",
			 client->name, line);
	trib_conn_write(client->conn, line, strlen(line));
	trib_conn_write(client->conn, "\r\n", 2);
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
	client_set_state(client, IMAP_STATE_CLOSED);
	trib_conn_destroy(&client->conn);
	client_ref(client);
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
		cancel_all_commands(client, reason);
	if (!client->destroyed && client->event_callback != NULL)
		client->event_callback(&event, client->event_context);
	client_unref(client);
}

static void client_fail_connect(struct trib_imap_client *client,
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

	client_set_state(client, client->preauth
					 ? IMAP_STATE_AUTHENTICATED
					 : IMAP_STATE_NOT_AUTHENTICATED);
	client->connect_callback = NULL;
	if (cb != NULL)
		cb(&reply, client->connect_context);
	client_schedule_flush(client);
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
	command_move_to_front(client, cmd);
	command_send(client, cmd);
	client_update_timeout(client);
}

static void client_after_capabilities(struct trib_imap_client *client)
{
	if (client->tls_mode == TRIB_IMAP_TLS_STARTTLS &&
	    !trib_conn_is_tls(client->conn)) {
		if (!trib_imap_client_has_capability(client, "STARTTLS")) {
			client_fail_connect(
				client, TRIB_ERR_PERM,
				"server does not offer STARTTLS; refusing to "
				"continue without TLS");
			return;
		}
		client_set_state(client, IMAP_STATE_STARTTLS);
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
		client_fail_connect(client, TRIB_ERR_TEMP,
				    "CAPABILITY failed: %s", reply->text);
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
		client_fail_connect(client, TRIB_ERR_PERM,
				    "STARTTLS refused: %s", reply->text);
		return;
	}
	/* Forget everything learned in clear, and any bytes that came after
	 * the OK: the parser starts afresh on the TLS stream. */
	caps_free(client);
	trib_imap_parser_destroy(&client->parser);
	client->parser = trib_imap_parser_create(&client->limits);
	if (trib_conn_start_tls(client->conn, &error) < 0)
		client_fail_connect(client, TRIB_ERR_PERM, "STARTTLS: %s",
				    error);
}

static void client_handle_greeting(struct trib_imap_client *client,
				   const struct trib_imap_response *resp)
{
	if (resp->kind != TRIB_IMAP_RESP_UNTAGGED ||
	    resp->status == TRIB_IMAP_STATUS_NONE) {
		client_fail_connect(client, TRIB_ERR_TEMP,
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
			client_fail_connect(
				client, TRIB_ERR_PERM,
				"server sent PREAUTH on an unencrypted "
				"connection; refusing it");
			return;
		}
		break;
	case TRIB_IMAP_STATUS_BYE:
		client_fail_connect(client, TRIB_ERR_TEMP,
				    "server refused the connection: %s",
				    resp->text);
		return;
	default:
		client_fail_connect(client, TRIB_ERR_TEMP,
				    "unexpected greeting %s", resp->name);
		return;
	}
	if (resp->code != NULL && strcasecmp(resp->code, "CAPABILITY") == 0)
		caps_set(client, resp->code_args, resp->code_arg_count);
	/* PREAUTH (only over implicit TLS): already logged in. */
	client->preauth = resp->status == TRIB_IMAP_STATUS_PREAUTH;
	client_set_state(client, IMAP_STATE_CAPABILITY);
	if (client->caps == NULL) {
		send_internal(client, "CAPABILITY", &capability_handlers);
		return;
	}
	client_after_capabilities(client);
}

/* ---- response dispatch ---- */

static bool names_contain(const char *const *names, const char *name)
{
	if (names == NULL || name == NULL)
		return false;
	for (; *names != NULL; names++) {
		if (strcasecmp(*names, name) == 0)
			return true;
	}
	return false;
}

static struct trib_imap_command *
find_interested(struct trib_imap_client *client, const char *name)
{
	for (struct trib_imap_command *cmd = client->commands; cmd != NULL;
	     cmd = cmd->next) {
		if (cmd->sent &&
		    names_contain(cmd->handlers->untagged_names, name))
			return cmd;
	}
	return NULL;
}

static void emit_event(struct trib_imap_client *client,
		       enum trib_imap_event_type type, uint32_t number,
		       const char *text)
{
	struct trib_imap_event event = {
		.type = type,
		.number = number,
		.text = text,
		.error_class = TRIB_OK,
	};

	if (client->event_callback != NULL)
		client->event_callback(&event, client->event_context);
}

static void handle_untagged(struct trib_imap_client *client,
			    const struct trib_imap_response *resp)
{
	struct trib_imap_command *cmd;
	bool claimed = false;

	if (resp->status != TRIB_IMAP_STATUS_NONE && resp->code != NULL) {
		if (strcasecmp(resp->code, "CAPABILITY") == 0)
			caps_set(client, resp->code_args, resp->code_arg_count);
		else if (strcasecmp(resp->code, "ALERT") == 0)
			emit_event(client, TRIB_IMAP_EVENT_ALERT, 0,
				   resp->text);
		else if (strcasecmp(resp->code, "THROTTLED") == 0 ||
			 strcasecmp(resp->code, "LIMIT") == 0)
			emit_event(client, TRIB_IMAP_EVENT_THROTTLED, 0,
				   resp->text);
		if (client->destroyed)
			return;
	}
	if (resp->status == TRIB_IMAP_STATUS_BYE) {
		free(client->bye_text);
		client->bye_text = trib_strdup(resp->text);
		emit_event(client, TRIB_IMAP_EVENT_BYE, 0, resp->text);
		return;
	}
	if (resp->status == TRIB_IMAP_STATUS_NONE &&
	    strcasecmp(resp->name, "CAPABILITY") == 0)
		caps_set(client, resp->args, resp->arg_count);

	cmd = find_interested(client, resp->name);
	if (cmd != NULL && cmd->handlers->untagged != NULL)
		claimed = cmd->handlers->untagged(resp, cmd->context);
	if (claimed || client->destroyed)
		return;
	if (resp->has_number && strcasecmp(resp->name, "EXISTS") == 0)
		emit_event(client, TRIB_IMAP_EVENT_EXISTS, resp->number, NULL);
	else if (resp->has_number && strcasecmp(resp->name, "EXPUNGE") == 0)
		emit_event(client, TRIB_IMAP_EVENT_EXPUNGE, resp->number, NULL);
}

static void handle_continuation(struct trib_imap_client *client,
				const struct trib_imap_response *resp)
{
	for (struct trib_imap_command *cmd = client->commands; cmd != NULL;
	     cmd = cmd->next) {
		if (cmd->sent && cmd->handlers->continuation != NULL) {
			cmd->handlers->continuation(resp->text, cmd->context);
			return;
		}
	}
	client_fail_connect(client, TRIB_ERR_TEMP,
			    "protocol error: unexpected continuation");
}

static void handle_tagged(struct trib_imap_client *client,
			  const struct trib_imap_response *resp)
{
	struct trib_imap_command *cmd;
	struct trib_imap_reply reply;
	char verb[80];
	char *error = NULL;

	for (cmd = client->commands; cmd != NULL; cmd = cmd->next) {
		if (cmd->sent && strcmp(cmd->tag, resp->tag) == 0)
			break;
	}
	if (cmd == NULL) {
		client_fail_connect(client, TRIB_ERR_TEMP,
				    "protocol error: reply with unknown tag %s",
				    resp->tag);
		return;
	}
	if (resp->code != NULL && strcasecmp(resp->code, "CAPABILITY") == 0)
		caps_set(client, resp->code_args, resp->code_arg_count);

	memset(&reply, 0, sizeof(reply));
	reply.status = resp->status;
	reply.code = resp->code;
	reply.text = resp->text;
	if (resp->status == TRIB_IMAP_STATUS_OK) {
		reply.error_class = TRIB_OK;
	} else {
		reply.error_class = resp->status == TRIB_IMAP_STATUS_BAD
					    ? TRIB_ERR_PERM
					    : code_error_class(resp->code);
		error = trib_strdup_printf(
			"%s: %s failed: %s %s%s%s%s", client->name,
			command_verb(cmd, verb, sizeof(verb)), resp->name,
			resp->code != NULL ? "[" : "",
			resp->code != NULL ? resp->code : "",
			resp->code != NULL ? "] " : "", resp->text);
		reply.error = error;
	}
	command_complete(client, cmd, &reply);
	free(error);
	if (!client->destroyed)
		client_schedule_flush(client);
}

static void handle_response(struct trib_imap_client *client,
			    const struct trib_imap_response *resp)
{
	trace_response(client, resp);
	if (client->state == IMAP_STATE_GREETING) {
		client_handle_greeting(client, resp);
		return;
	}
	switch (resp->kind) {
	case TRIB_IMAP_RESP_TAGGED:
		handle_tagged(client, resp);
		break;
	case TRIB_IMAP_RESP_UNTAGGED:
		handle_untagged(client, resp);
		break;
	case TRIB_IMAP_RESP_CONTINUE:
		handle_continuation(client, resp);
		break;
	}
}

/* A streamed literal: hand the bytes from the socket buffer straight to
 * the FETCH command's consumer (evbuffer to evbuffer, no copy). */
static void handle_literal(struct trib_imap_client *client,
			   struct evbuffer *input)
{
	const struct trib_imap_literal *lit =
		trib_imap_parser_literal(client->parser);
	struct trib_imap_command *cmd;
	size_t avail = evbuffer_get_length(input);
	size_t n;

	if (!client->literal_begun) {
		client->literal_begun = true;
		client->literal_cmd = find_interested(client, "FETCH");
		cmd = client->literal_cmd;
		if (cmd != NULL && cmd->handlers->literal_begin != NULL) {
			cmd->handlers->literal_begin(lit, cmd->context);
			if (client->destroyed)
				return;
		}
	}
	cmd = client->literal_cmd;
	n = lit->remaining < avail ? (size_t)lit->remaining : avail;
	if (n > 0) {
		evbuffer_remove_buffer(input, client->literal_buf, n);
		if (cmd != NULL && cmd->handlers->literal_data != NULL) {
			cmd->handlers->literal_data(client->literal_buf,
						    cmd->context);
			if (client->destroyed)
				return;
		}
		evbuffer_drain(client->literal_buf,
			       evbuffer_get_length(client->literal_buf));
		trib_imap_parser_literal_skip(client->parser, n);
	}
	if (trib_imap_parser_literal(client->parser)->remaining == 0) {
		client->literal_begun = false;
		cmd = client->literal_cmd;
		client->literal_cmd = NULL;
		if (cmd != NULL && cmd->handlers->literal_end != NULL)
			cmd->handlers->literal_end(cmd->context);
	}
}

static void client_readable(void *context)
{
	struct trib_imap_client *client = context;
	struct evbuffer *input;
	struct evbuffer_iovec vec;
	enum trib_imap_parse_result result;
	size_t consumed;

	client_ref(client);
	while (!client->destroyed && client->state != IMAP_STATE_CLOSED) {
		input = trib_conn_input(client->conn);
		if (evbuffer_get_length(input) == 0)
			break;
		if (client->literal_begun) {
			handle_literal(client, input);
			continue;
		}
		if (evbuffer_peek(input, -1, NULL, &vec, 1) < 1)
			break;
		result = trib_imap_parser_feed(client->parser, vec.iov_base,
					       vec.iov_len, &consumed);
		evbuffer_drain(input, consumed);
		switch (result) {
		case TRIB_IMAP_PARSE_NEED_MORE:
			break;
		case TRIB_IMAP_PARSE_RESPONSE:
			handle_response(client, trib_imap_parser_response(
							client->parser));
			break;
		case TRIB_IMAP_PARSE_LITERAL:
			handle_literal(client, input);
			break;
		case TRIB_IMAP_PARSE_ERROR:
			client_fail_connect(
				client, TRIB_ERR_TEMP,
				"malformed response from server: %s",
				trib_imap_parser_error(client->parser));
			break;
		}
	}
	client_unref(client);
}

/* ---- connection callbacks ---- */

static void client_connected(void *context)
{
	struct trib_imap_client *client = context;

	if (client->state == IMAP_STATE_CONNECTING) {
		client_set_state(client, IMAP_STATE_GREETING);
		return;
	}
	/* STARTTLS handshake finished: ask again what the server offers. */
	trib_log(client->logger, TRIB_LOG_DEBUG, "%s: TLS established (%s)",
		 client->name, trib_conn_tls_description(client->conn));
	client_set_state(client, IMAP_STATE_CAPABILITY);
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
	.readable = client_readable,
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
	client->flush_event =
		evtimer_new(trib_loop_base(loop), flush_event_cb, client);
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

static void client_free(struct trib_imap_client *client)
{
	trib_conn_destroy(&client->conn);
	trib_imap_parser_destroy(&client->parser);
	trib_tls_ctx_destroy(&client->tls_ctx);
	if (client->flush_event != NULL)
		event_free(client->flush_event);
	evbuffer_free(client->literal_buf);
	caps_free(client);
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
	client_set_state(client, IMAP_STATE_CLOSED);
	client->refcount++;
	while (client->commands != NULL)
		command_fail(client, client->commands, TRIB_ERR_CANCELED,
			     "client closed");
	client->refcount--;
	if (client->flush_event != NULL)
		evtimer_del(client->flush_event);
	if (--client->refcount == 0)
		client_free(client);
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
		client_fail_connect(client, TRIB_ERR_PERM,
				    "connect called twice");
		return;
	}
	client_set_state(client, IMAP_STATE_CONNECTING);
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

/* ---- authentication ---- */

struct auth_request {
	struct trib_imap_client *client;
	struct trib_sasl_client *sasl;
	struct trib_imap_command_handlers handlers;
	trib_imap_callback_t *callback;
	void *context;
	char *sasl_error; /* what the server's error challenge said */
	bool oauth;	  /* XOAUTH2 or OAUTHBEARER */
};

static void auth_request_free(struct auth_request *req)
{
	trib_sasl_client_destroy(&req->sasl);
	free(req->sasl_error);
	free(req);
}

static void auth_finish(struct auth_request *req,
			const struct trib_imap_reply *reply)
{
	struct trib_imap_client *client = req->client;

	if (reply->status == TRIB_IMAP_STATUS_OK &&
	    client->state == IMAP_STATE_AUTHENTICATING)
		client_set_state(client, IMAP_STATE_AUTHENTICATED);
	else if (client->state == IMAP_STATE_AUTHENTICATING)
		client_set_state(client, IMAP_STATE_NOT_AUTHENTICATED);
	req->callback(reply, req->context);
	auth_request_free(req);
}

static void auth_capability_done(const struct trib_imap_reply *reply,
				 void *context)
{
	struct auth_request *req = context;
	struct trib_imap_reply ok = {
		.status = TRIB_IMAP_STATUS_OK,
		.error_class = TRIB_OK,
		.text = "",
	};

	/* The login itself succeeded; a failed CAPABILITY after it is its
	 * own error. */
	auth_finish(req, reply->status == TRIB_IMAP_STATUS_OK ? &ok : reply);
}

static void auth_done(const struct trib_imap_reply *reply, void *context)
{
	struct auth_request *req = context;
	struct trib_imap_client *client = req->client;
	struct trib_imap_reply copy = *reply;
	char *error = NULL;

	if (reply->status == TRIB_IMAP_STATUS_OK) {
		bool had_caps = reply->code != NULL &&
				strcasecmp(reply->code, "CAPABILITY") == 0;

		client_set_state(client, IMAP_STATE_AUTHENTICATED);
		if (!had_caps) {
			/* Capabilities change after login (RFC 3501 6.2):
			 * ask before anyone relies on them. */
			static const char *const names[] = { "CAPABILITY",
							     NULL };

			req->handlers = (struct trib_imap_command_handlers){
				.done = auth_capability_done,
				.untagged_names = names,
			};
			caps_free(client);
			command_move_to_front(
				client, trib_imap_client_command(
						client, "CAPABILITY",
						TRIB_IMAP_COMMAND_FLAG_BARRIER,
						&req->handlers, req));
			return;
		}
		auth_finish(req, reply);
		return;
	}
	if (reply->status == TRIB_IMAP_STATUS_NO) {
		/* Credentials refused: retrying the same ones cannot help. */
		copy.error_class = code_error_class(reply->code);
		if (copy.error_class == TRIB_ERR_TEMP && reply->code == NULL)
			copy.error_class = TRIB_ERR_PERM;
		if (req->sasl_error != NULL ||
		    (reply->code != NULL &&
		     strcasecmp(reply->code, "AUTHENTICATIONFAILED") == 0 &&
		     req->oauth)) {
			error = trib_strdup_printf(
				"%s: token rejected: %s%s%s", client->name,
				req->sasl_error != NULL ? req->sasl_error : "",
				req->sasl_error != NULL ? "; " : "",
				reply->error);
			copy.error = error;
		}
	}
	auth_finish(req, &copy);
	free(error);
}

static void auth_continuation(const char *text, void *context)
{
	struct auth_request *req = context;
	const char *error;
	char *response = NULL;

	if (req->sasl == NULL) {
		/* LOGIN never gets "+": the server is confused. */
		trib_imap_client_send_raw(req->client, "*");
		return;
	}
	switch (trib_sasl_client_step(req->sasl, text, &response, &error)) {
	case TRIB_SASL_STEP_CONTINUE:
		break;
	case TRIB_SASL_STEP_SERVER_ERROR:
		free(req->sasl_error);
		req->sasl_error = trib_strdup(error);
		break;
	case TRIB_SASL_STEP_FAILED:
		free(req->sasl_error);
		req->sasl_error = trib_strdup(error);
		break;
	}
	if (req->client->trace)
		trib_log(req->client->logger, TRIB_LOG_DEBUG, "%s: C: %s",
			 req->client->name,
			 response[0] == '\0' ? "(empty line)" : "<redacted>");
	trib_conn_write(req->client->conn, response, strlen(response));
	trib_conn_write(req->client->conn, "\r\n", 2);
	trib_secret_free(&response);
}

static struct auth_request *auth_request_new(struct trib_imap_client *client,
					     trib_imap_callback_t *callback,
					     void *context)
{
	struct auth_request *req = trib_calloc(1, sizeof(*req));

	req->client = client;
	req->callback = callback;
	req->context = context;
	req->handlers.done = auth_done;
	req->handlers.continuation = auth_continuation;
	return req;
}

/* Queue the auth command, or fail it (at flush time, so the callback
 * never runs inside the caller's call). */
static void auth_queue(struct trib_imap_client *client,
		       struct auth_request *req, const char *line,
		       const char *log_line, const char *refusal)
{
	struct trib_imap_command *cmd;

	cmd = trib_imap_client_command(client, line,
				       TRIB_IMAP_COMMAND_FLAG_BARRIER,
				       &req->handlers, req);
	cmd->log_line = trib_strdup(log_line);
	if (refusal != NULL && cmd->fail_error == NULL) {
		cmd->fail_class = TRIB_ERR_PERM;
		cmd->fail_error = trib_strdup(refusal);
	}
	if (refusal == NULL)
		client_set_state(client, IMAP_STATE_AUTHENTICATING);
}

static const char *auth_refusal(struct trib_imap_client *client)
{
	if (client->state != IMAP_STATE_NOT_AUTHENTICATED)
		return "not connected, or already logged in";
	if (!trib_imap_client_is_tls(client))
		return "refusing to send credentials over an unencrypted "
		       "connection";
	return NULL;
}

void trib_imap_client_login(struct trib_imap_client *client,
			    const char *username, const char *password,
			    trib_imap_callback_t *callback, void *context)
{
	struct auth_request *req = auth_request_new(client, callback, context);
	char quser[512], qpass[1024];
	const char *refusal = auth_refusal(client);
	char *line, *log_line;

	if (refusal == NULL &&
	    trib_imap_client_has_capability(client, "LOGINDISABLED"))
		refusal = "server disables LOGIN (LOGINDISABLED)";
	if (refusal == NULL &&
	    (trib_imap_quote(quser, sizeof(quser), username) < 0 ||
	     trib_imap_quote(qpass, sizeof(qpass), password) < 0))
		refusal = "user name or password holds characters LOGIN "
			  "cannot send (use AUTHENTICATE PLAIN)";
	if (refusal != NULL) {
		quser[0] = '\0';
		qpass[0] = '\0';
	}
	line = trib_strdup_printf("LOGIN %s %s", quser, qpass);
	log_line = trib_strdup_printf("LOGIN %s <redacted>", quser);
	auth_queue(client, req, line, log_line, refusal);
	OPENSSL_cleanse(qpass, sizeof(qpass));
	trib_secret_free(&line);
	free(log_line);
}

void trib_imap_client_authenticate(struct trib_imap_client *client,
				   const char *mech_name, const char *username,
				   const char *secret,
				   trib_imap_callback_t *callback,
				   void *context)
{
	struct auth_request *req = auth_request_new(client, callback, context);
	struct trib_sasl_params params = {
		.username = username,
		.secret = secret,
		.host = client->host,
		.port = client->port,
	};
	const char *refusal = auth_refusal(client);
	enum trib_sasl_mech mech;
	char cap[64];
	char *line = NULL, *log_line, *ir = NULL;
	const char *error;

	if (refusal == NULL && !trib_sasl_mech_parse(mech_name, &mech))
		refusal = "unknown SASL mechanism";
	snprintf(cap, sizeof(cap), "AUTH=%s", mech_name);
	if (refusal == NULL && !trib_imap_client_has_capability(client, cap)) {
		snprintf(client->error, sizeof(client->error),
			 "server does not offer %s", cap);
		refusal = client->error;
	}
	if (refusal == NULL) {
		req->oauth = mech != TRIB_SASL_PLAIN;
		req->sasl = trib_sasl_client_create(mech, &params, &error);
		if (req->sasl == NULL)
			refusal = error;
	}
	if (refusal == NULL &&
	    trib_imap_client_has_capability(client, "SASL-IR")) {
		ir = trib_sasl_client_initial_response(req->sasl);
		line = trib_strdup_printf("AUTHENTICATE %s %s",
					  trib_sasl_mech_name(mech), ir);
		trib_secret_free(&ir);
	} else {
		line = trib_strdup_printf("AUTHENTICATE %s", mech_name);
	}
	log_line = trib_strdup_printf(
		"AUTHENTICATE %s%s", mech_name,
		strchr(line, ' ') != strrchr(line, ' ') ? " <redacted>" : "");
	auth_queue(client, req, line, log_line, refusal);
	trib_secret_free(&line);
	free(log_line);
}
