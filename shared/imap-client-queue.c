/* imap-client-queue.c: the tagged command queue (pipelining, barriers,
 * exactly-once callbacks) and the dispatch of server responses to it. */

#include "imap-client-private.h"

#include "alloc.h"
#include "conn.h"

#include <event2/buffer.h>
#include <event2/event.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

static void client_flush(struct trib_imap_client *client);

enum trib_error_class trib_imap_code_error_class(const char *code)
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

void trib_imap_client_fail_command(struct trib_imap_client *client,
				   struct trib_imap_command *cmd,
				   enum trib_error_class class,
				   const char *reason)
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

void trib_imap_client_cancel_all(struct trib_imap_client *client,
				 const char *reason)
{
	while (client->commands != NULL && !client->destroyed) {
		trib_imap_client_ref(client);
		trib_imap_client_fail_command(client, client->commands,
					      TRIB_ERR_CANCELED, reason);
		if (!trib_imap_client_unref(client))
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
	trib_imap_client_schedule_flush(client);
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
void trib_imap_client_move_to_front(struct trib_imap_client *client,
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

void trib_imap_client_update_timeout(struct trib_imap_client *client)
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

void trib_imap_client_send_command(struct trib_imap_client *client,
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
	trib_imap_client_ref(client);
	for (cmd = client->commands; cmd != NULL; cmd = next) {
		next = cmd->next;
		if (cmd->fail_error != NULL && !cmd->sent) {
			char *reason = trib_strdup(cmd->fail_error);

			trib_imap_client_fail_command(client, cmd,
						      cmd->fail_class, reason);
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
		trib_imap_client_send_command(client, cmd);
		in_flight = true;
		if ((cmd->flags & TRIB_IMAP_COMMAND_FLAG_BARRIER) != 0)
			break;
	}
	client->flushing = false;
	if (trib_imap_client_unref(client))
		trib_imap_client_update_timeout(client);
}

static void flush_event_cb(evutil_socket_t fd, short what, void *ctx)
{
	(void)fd;
	(void)what;
	client_flush(ctx);
}

void trib_imap_client_schedule_flush(struct trib_imap_client *client)
{
	static const struct timeval now = { 0, 0 };

	if (client->flush_event != NULL)
		evtimer_add(client->flush_event, &now);
}

void trib_imap_client_queue_init(struct trib_imap_client *client,
				 struct event_base *base)
{
	client->flush_event = evtimer_new(base, flush_event_cb, client);
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
			trib_imap_client_caps_set(client, resp->code_args,
						  resp->code_arg_count);
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
		trib_imap_client_caps_set(client, resp->args, resp->arg_count);

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
	trib_imap_client_fail_connect(
		client, TRIB_ERR_TEMP,
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
		trib_imap_client_fail_connect(
			client, TRIB_ERR_TEMP,
			"protocol error: reply with unknown tag %s", resp->tag);
		return;
	}
	if (resp->code != NULL && strcasecmp(resp->code, "CAPABILITY") == 0)
		trib_imap_client_caps_set(client, resp->code_args,
					  resp->code_arg_count);

	memset(&reply, 0, sizeof(reply));
	reply.status = resp->status;
	reply.code = resp->code;
	reply.text = resp->text;
	if (resp->status == TRIB_IMAP_STATUS_OK) {
		reply.error_class = TRIB_OK;
	} else {
		reply.error_class =
			resp->status == TRIB_IMAP_STATUS_BAD
				? TRIB_ERR_PERM
				: trib_imap_code_error_class(resp->code);
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
		trib_imap_client_schedule_flush(client);
}

static void handle_response(struct trib_imap_client *client,
			    const struct trib_imap_response *resp)
{
	trace_response(client, resp);
	if (client->state == IMAP_STATE_GREETING) {
		trib_imap_client_handle_greeting(client, resp);
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

void trib_imap_client_readable(void *context)
{
	struct trib_imap_client *client = context;
	struct evbuffer *input;
	struct evbuffer_iovec vec;
	enum trib_imap_parse_result result;
	size_t consumed;

	trib_imap_client_ref(client);
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
			trib_imap_client_fail_connect(
				client, TRIB_ERR_TEMP,
				"malformed response from server: %s",
				trib_imap_parser_error(client->parser));
			break;
		}
	}
	trib_imap_client_unref(client);
}
