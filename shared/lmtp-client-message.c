/* lmtp-client-message.c: the messages of an LMTP session: begin, write,
 * finish and abort; putting them on the wire in order (RSET, MAIL, RCPT,
 * then BDAT chunks or DATA with dot-stuffing); the replies to those
 * commands; and reporting each message exactly once. */

#include "lmtp-client-private.h"

#include "alloc.h"
#include "conn.h"

#include <ctype.h>
#include <event2/buffer.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

/* ---- lifetime ---- */

static void message_free(struct trib_lmtp_message *msg)
{
	evbuffer_free(msg->body);
	free(msg->recipient);
	free(msg->display);
	free(msg->path);
	free(msg->deferred_error);
	free(msg);
}

void trib_lmtp_message_unref(struct trib_lmtp_message *msg)
{
	if (--msg->refs == 0)
		message_free(msg);
}

/* Nothing more of msg goes on the wire. */
static void message_set_done(struct trib_lmtp_message *msg)
{
	msg->wire = LMTP_WIRE_DONE;
	evbuffer_drain(msg->body, evbuffer_get_length(msg->body));
}

static void message_unlink(struct trib_lmtp_client *client,
			   struct trib_lmtp_message *msg)
{
	struct trib_lmtp_message **p;

	if (!msg->listed)
		return;
	for (p = &client->messages; *p != NULL; p = &(*p)->next) {
		if (*p == msg) {
			*p = msg->next;
			break;
		}
	}
	if (client->messages_tail == &msg->next)
		client->messages_tail = p;
	msg->next = NULL;
	msg->listed = false;
	trib_lmtp_message_unref(msg);
}

/* Off the wire, ended by the caller, no report waiting for the flush:
 * only slots (if any) still need it. */
static bool message_can_unlink(const struct trib_lmtp_message *msg)
{
	return msg->listed && msg->wire == LMTP_WIRE_DONE && msg->ended &&
	       (msg->reported || !msg->deferred);
}

static void messages_sweep(struct trib_lmtp_client *client)
{
	struct trib_lmtp_message *msg = client->messages, *next;

	if (client->pumping)
		return;
	for (; msg != NULL; msg = next) {
		next = msg->next;
		if (message_can_unlink(msg))
			message_unlink(client, msg);
	}
}

size_t trib_lmtp_message_queued(const struct trib_lmtp_message *msg)
{
	/* A small message is assembled until finish() (at most
	 * pipeline_max_size: it turns large beyond): not counted. */
	if (!msg->finished && !msg->large && msg->wire != LMTP_WIRE_BODY)
		return 0;
	return evbuffer_get_length(msg->body);
}

/* ---- reporting ---- */

static void message_report(struct trib_lmtp_message *msg,
			   enum trib_error_class class, unsigned int code,
			   const char *enhanced, const char *text,
			   const char *error)
{
	struct trib_lmtp_reply reply = {
		.error_class = class,
		.code = code,
		.enhanced = enhanced,
		.text = text,
		.error = error,
		.recipient = msg->recipient,
	};

	if (msg->reported)
		return;
	msg->reported = true;
	if (msg->client != NULL) {
		msg->client->pending--;
		if (error != NULL)
			trib_log(msg->client->logger, TRIB_LOG_DEBUG, "%s",
				 error);
		else
			trib_log(msg->client->logger, TRIB_LOG_DEBUG,
				 "%s: %s: delivered", msg->client->name,
				 msg->display);
	}
	msg->refs++;
	if (msg->callback != NULL)
		msg->callback(&reply, msg->context);
	trib_lmtp_message_unref(msg);
}

/* A reply that decides msg: "<name>: <rcpt>: <what>: 550 5.1.1 text" */
static void message_report_reply(struct trib_lmtp_client *client,
				 struct trib_lmtp_message *msg,
				 const char *what,
				 const struct lmtp_reply *reply)
{
	enum trib_error_class class = trib_lmtp_code_class(reply->code);
	char *error = NULL;

	if (class != TRIB_OK || what != NULL) {
		if (class == TRIB_OK)
			class = TRIB_ERR_TEMP; /* 2xx/3xx out of place */
		error = trib_strdup_printf(
			"%s: %s: %s: %u %s%s%s", client->name, msg->display,
			what, reply->code, reply->enhanced,
			reply->enhanced[0] != '\0' ? " " : "", reply->text);
	}
	message_report(msg, class, reply->code, reply->enhanced, reply->text,
		       error);
	free(error);
}

/* No reply decides msg: the session ended, or it was aborted. */
static void message_report_lost(struct trib_lmtp_client *client,
				struct trib_lmtp_message *msg,
				enum trib_error_class class, const char *reason)
{
	char *error;

	if (msg->deferred) {
		message_report(msg, msg->deferred_class, 0, "", "",
			       msg->deferred_error);
		return;
	}
	error = trib_strdup_printf("%s: %s: not delivered: %s", client->name,
				   msg->display, reason);
	message_report(msg, class, 0, "", "", error);
	free(error);
}

static void message_defer(struct trib_lmtp_client *client,
			  struct trib_lmtp_message *msg,
			  enum trib_error_class class, const char *reason)
{
	if (msg->reported || msg->deferred)
		return;
	msg->deferred = true;
	msg->deferred_class = class;
	msg->deferred_error =
		trib_strdup_printf("%s: %s: not delivered: %s", client->name,
				   msg->display, reason);
}

void trib_lmtp_client_report_deferred(struct trib_lmtp_client *client)
{
	struct trib_lmtp_message *msg;

	/* a callback may change the list: start over after each */
	while (!client->destroyed) {
		for (msg = client->messages; msg != NULL; msg = msg->next) {
			if (msg->deferred && !msg->reported)
				break;
		}
		if (msg == NULL)
			break;
		message_report_lost(client, msg, msg->deferred_class, "");
	}
	if (!client->destroyed)
		messages_sweep(client);
}

void trib_lmtp_client_fail_all(struct trib_lmtp_client *client,
			       enum trib_error_class class, const char *reason)
{
	struct trib_lmtp_message *msg;
	struct lmtp_slot *slot;

	/* oldest first: what was on the wire, then what was waiting */
	while ((slot = client->slots) != NULL) {
		client->slots = slot->next;
		if (client->slots == NULL)
			client->slots_tail = &client->slots;
		msg = slot->msg;
		free(slot);
		if (msg == NULL)
			continue;
		message_set_done(msg);
		message_report_lost(client, msg, class, reason);
		trib_lmtp_message_unref(msg);
	}
	for (;;) {
		for (msg = client->messages; msg != NULL; msg = msg->next) {
			message_set_done(msg);
			if (!msg->reported)
				break;
		}
		if (msg == NULL)
			break;
		message_report_lost(client, msg, class, reason);
	}
	client->trans_open = false;
	messages_sweep(client);
	if (!client->destroyed)
		return;
	/* the caller may still hold handles: they outlive the client */
	while ((msg = client->messages) != NULL) {
		msg->client = NULL;
		message_unlink(client, msg);
	}
}

/* ---- recipients ---- */

static bool is_atext(unsigned char c)
{
	return isalnum(c) ||
	       (c != '\0' && strchr("!#$%&'*+-/=?^_`{|}~", (char)c) != NULL);
}

static bool is_dot_string(const char *str, size_t len)
{
	if (len == 0 || str[0] == '.' || str[len - 1] == '.')
		return false;
	for (size_t i = 0; i < len; i++) {
		if (str[i] == '.' ? str[i + 1] == '.'
				  : !is_atext((unsigned char)str[i]))
			return false;
	}
	return true;
}

/* "<alice+Work>", "<\"alice+My Folder\">"; NULL when it cannot be an
 * address. */
static char *recipient_path(const char *rcpt)
{
	const char *at = strrchr(rcpt, '@');
	size_t local_len = at != NULL ? (size_t)(at - rcpt) : strlen(rcpt);
	char *path, *p;

	for (const unsigned char *c = (const unsigned char *)rcpt; *c != '\0';
	     c++) {
		if (*c < 0x20 || *c == 0x7f || *c == '<' || *c == '>')
			return NULL;
	}
	if (local_len == 0 || (at != NULL && at[1] == '\0') ||
	    strlen(rcpt) > TRIB_LMTP_MAX_RECIPIENT)
		return NULL;
	for (const char *d = at != NULL ? at + 1 : ""; *d != '\0'; d++) {
		if (!isalnum((unsigned char)*d) && strchr(".-[]:", *d) == NULL)
			return NULL;
	}
	if (is_dot_string(rcpt, local_len))
		return trib_strdup_printf("<%s>", rcpt);
	/* a quoted local part: "\" and "\"" escaped */
	p = path = trib_malloc(2 * local_len + strlen(rcpt) + 8);
	*p++ = '<';
	*p++ = '"';
	for (size_t i = 0; i < local_len; i++) {
		if (rcpt[i] == '"' || rcpt[i] == '\\')
			*p++ = '\\';
		*p++ = rcpt[i];
	}
	*p++ = '"';
	if (at != NULL) {
		memcpy(p, at, strlen(at));
		p += strlen(at);
	}
	*p++ = '>';
	*p = '\0';
	return path;
}

static char *recipient_display(const char *rcpt)
{
	char *display = trib_strdup_printf("<%.200s>", rcpt);

	for (char *p = display; *p != '\0'; p++) {
		if ((unsigned char)*p < 0x20 || *p == 0x7f)
			*p = '?';
	}
	return display;
}

/* ---- the wire ---- */

static void send_rset(struct trib_lmtp_client *client)
{
	trib_lmtp_client_send(client, LMTP_SLOT_RSET, NULL, "RSET");
	client->trans_open = false;
}

/* One BDAT chunk with all that is held: bytes in hand only, so a chunk is
 * never promised and left short. */
static void send_bdat(struct trib_lmtp_client *client,
		      struct trib_lmtp_message *msg, bool last)
{
	size_t size = evbuffer_get_length(msg->body);

	trib_lmtp_client_send(client, last ? LMTP_SLOT_LAST : LMTP_SLOT_CHUNK,
			      msg, last ? "BDAT %zu LAST" : "BDAT %zu", size);
	trib_conn_write_buffer(client->conn, msg->body);
}

/* Move msg's held body to out, doubling a "." that starts a line (RFC
 * 5321 4.5.2). Lines start after any LF: Dovecot's DATA reader ends the
 * data at "\n.\n" too. Only the lines that start with a dot split the
 * buffer; the rest moves without a copy. */
static void dot_stuff(struct trib_lmtp_message *msg, struct evbuffer *out)
{
	struct evbuffer *in = msg->body;
	struct evbuffer_ptr found, last;
	unsigned char c;
	size_t len;

	while ((len = evbuffer_get_length(in)) > 0) {
		if (msg->bol) {
			evbuffer_copyout(in, &c, 1);
			if (c == '.')
				evbuffer_add(out, ".", 1);
			msg->bol = false;
		}
		found = evbuffer_search(in, "\n.", 2, NULL);
		if (found.pos < 0) {
			evbuffer_ptr_set(in, &last, len - 1, EVBUFFER_PTR_SET);
			evbuffer_copyout_from(in, &last, &c, 1);
			evbuffer_add_buffer(out, in);
			/* a line may begin in the next piece */
			msg->bol = c == '\n';
			break;
		}
		evbuffer_remove_buffer(in, out, (size_t)found.pos + 1);
		evbuffer_add(out, ".", 1);
	}
}

/* DATA: the body after the 354. */
static bool pump_data_body(struct trib_lmtp_client *client,
			   struct trib_lmtp_message *msg)
{
	if (evbuffer_get_length(msg->body) > 0) {
		dot_stuff(msg, client->scratch);
		trib_conn_write_buffer(client->conn, client->scratch);
	}
	if (!msg->finished)
		return false;
	/* the end marker needs a line of its own: a body that does not end
	 * in a line break gets CRLF (that much cannot be byte-exact) */
	if (client->trace)
		trib_log(client->logger, TRIB_LOG_DEBUG, "%s: C: .%s",
			 client->name, msg->bol ? "" : " (CRLF added)");
	if (msg->bol)
		trib_conn_write(client->conn, ".\r\n", 3);
	else
		trib_conn_write(client->conn, "\r\n.\r\n", 5);
	trib_lmtp_client_expect(client, LMTP_SLOT_LAST, msg);
	message_set_done(msg);
	return true;
}

/* BDAT: a chunk once chunk_size is in hand or the socket is (nearly)
 * idle; the last one at finish(). */
static bool pump_bdat_body(struct trib_lmtp_client *client,
			   struct trib_lmtp_message *msg)
{
	size_t held = evbuffer_get_length(msg->body);

	if (!trib_lmtp_client_can_send(client))
		return false;
	if (msg->finished) {
		send_bdat(client, msg, true);
		message_set_done(msg);
		return true;
	}
	if (held > 0 &&
	    (held >= client->chunk_size ||
	     trib_lmtp_client_output_pending(client) <= client->low_watermark))
		send_bdat(client, msg, false);
	return false;
}

/* An aborted message: end it without ever completing its transaction. */
static bool pump_aborted(struct trib_lmtp_client *client,
			 struct trib_lmtp_message *msg)
{
	switch (msg->wire) {
	case LMTP_WIRE_QUEUED:
		message_set_done(msg);
		return true;
	case LMTP_WIRE_ENVELOPE:
		if (msg->step == LMTP_STEP_DATA) {
			/* the 354 closes the session (handle_reply) */
			if (!msg->data_failed)
				return false;
			message_set_done(msg);
			return true;
		}
		break;
	case LMTP_WIRE_BODY:
		if (!client->chunking) {
			trib_lmtp_client_close(
				client, TRIB_ERR_TEMP,
				"message to %s aborted during DATA: session "
				"closed so that it is never delivered",
				msg->display);
			return false;
		}
		break;
	case LMTP_WIRE_DONE:
		return true;
	}
	/* MAIL/RCPT sent, maybe BDAT chunks, never BDAT LAST: RSET drops
	 * them (RFC 3030 section 2) */
	if (!trib_lmtp_client_can_send(client))
		return false;
	send_rset(client);
	message_set_done(msg);
	return true;
}

static bool pump_envelope(struct trib_lmtp_client *client,
			  struct trib_lmtp_message *msg)
{
	if (msg->wire == LMTP_WIRE_QUEUED) {
		if (!trib_lmtp_client_can_send(client))
			return false;
		/* a transaction may be left open by a refused RCPT or
		 * chunk: MAIL would be refused as nested */
		if (client->trans_open) {
			send_rset(client);
			if (!trib_lmtp_client_can_send(client))
				return false;
		}
		trib_lmtp_client_send(client, LMTP_SLOT_MAIL, msg,
				      "MAIL FROM:<%s>%s", client->mail_from,
				      client->eightbitmime ? " BODY=8BITMIME"
							   : "");
		client->trans_open = true;
		msg->wire = LMTP_WIRE_ENVELOPE;
		msg->step = LMTP_STEP_MAIL;
	}
	if (msg->step == LMTP_STEP_MAIL) {
		if (!trib_lmtp_client_can_send(client))
			return false;
		trib_lmtp_client_send(client, LMTP_SLOT_RCPT, msg, "RCPT TO:%s",
				      msg->path);
		msg->step = LMTP_STEP_RCPT;
	}
	return true;
}

/* Returns true when msg no longer holds the wire. */
static bool pump_message(struct trib_lmtp_client *client,
			 struct trib_lmtp_message *msg)
{
	if (msg->aborted)
		return pump_aborted(client, msg);
	if (msg->wire != LMTP_WIRE_BODY) {
		if (msg->mail_failed || (msg->rcpt_replied && !msg->rcpt_ok) ||
		    msg->data_failed) {
			/* reported: a DATA in flight is answered 503 */
			if (msg->step == LMTP_STEP_DATA && !msg->data_failed)
				return false;
			message_set_done(msg);
			return true;
		}
		if (!pump_envelope(client, msg))
			return false;
		if (!client->chunking) {
			if (msg->step == LMTP_STEP_RCPT) {
				if (!trib_lmtp_client_can_send(client))
					return false;
				trib_lmtp_client_send(client, LMTP_SLOT_DATA,
						      msg, "DATA");
				msg->step = LMTP_STEP_DATA;
			}
			if (!msg->data_go)
				return false;
		} else if (!msg->large) {
			/* small: one BDAT LAST at finish(), pipelined without
			 * waiting for the RCPT reply (a refused RCPT then
			 * gets one 503 for it, or no reply: handle_reply);
			 * an empty body waits, as BDAT 0 LAST would be
			 * answered either way */
			if (!msg->finished ||
			    (evbuffer_get_length(msg->body) == 0 &&
			     !msg->rcpt_ok) ||
			    !trib_lmtp_client_can_send(client))
				return false;
			send_bdat(client, msg, true);
			message_set_done(msg);
			return true;
		} else if (!msg->rcpt_ok) {
			return false;
		}
		msg->wire = LMTP_WIRE_BODY;
	}
	if (msg->data_failed) {
		message_set_done(msg);
		return true;
	}
	return client->chunking ? pump_bdat_body(client, msg)
				: pump_data_body(client, msg);
}

void trib_lmtp_client_pump(struct trib_lmtp_client *client)
{
	struct trib_lmtp_message *msg;

	if (client->pumping || client->state != LMTP_STATE_READY)
		return;
	client->pumping = true;
	trib_lmtp_client_ref(client);
	for (msg = client->messages; msg != NULL; msg = msg->next) {
		if (msg->wire == LMTP_WIRE_DONE)
			continue;
		if (!pump_message(client, msg) ||
		    client->state != LMTP_STATE_READY)
			break;
	}
	client->pumping = false;
	if (trib_lmtp_client_unref(client)) {
		messages_sweep(client);
		trib_lmtp_client_update_timeout(client);
	}
}

/* ---- replies ---- */

static void slot_pop(struct trib_lmtp_client *client)
{
	struct lmtp_slot *slot = client->slots;

	client->slots = slot->next;
	if (client->slots == NULL)
		client->slots_tail = &client->slots;
	if (slot->msg != NULL)
		trib_lmtp_message_unref(slot->msg);
	free(slot);
}

static void handle_msg_reply(struct trib_lmtp_client *client,
			     enum lmtp_slot_kind kind,
			     struct trib_lmtp_message *msg,
			     const struct lmtp_reply *reply)
{
	bool ok = reply->code / 100 == 2;

	switch (kind) {
	case LMTP_SLOT_RSET:
		break;
	case LMTP_SLOT_MAIL:
		if (!ok) {
			msg->mail_failed = true;
			message_report_reply(client, msg, "MAIL FROM refused",
					     reply);
		}
		break;
	case LMTP_SLOT_RCPT:
		msg->rcpt_replied = true;
		msg->rcpt_ok = ok && !msg->mail_failed;
		if (!ok && !msg->mail_failed)
			message_report_reply(client, msg, "RCPT TO refused",
					     reply);
		break;
	case LMTP_SLOT_DATA:
		if (reply->code != 354) {
			msg->data_failed = true;
			message_report_reply(client, msg, "DATA refused",
					     reply);
		} else if (!msg->rcpt_ok) {
			trib_lmtp_client_close(client, TRIB_ERR_TEMP,
					       "protocol error: 354 for DATA "
					       "without a recipient");
		} else if (msg->aborted) {
			trib_lmtp_client_close(
				client, TRIB_ERR_TEMP,
				"message to %s aborted before its DATA: "
				"session closed so that it is never delivered",
				msg->display);
		} else {
			msg->data_go = true;
		}
		break;
	case LMTP_SLOT_CHUNK:
		if (!ok) {
			msg->data_failed = true;
			message_report_reply(client, msg, "BDAT refused",
					     reply);
		}
		break;
	case LMTP_SLOT_LAST:
		/* delivered only on this reply, and only a 2xx */
		message_report_reply(client, msg, ok ? NULL : "delivery failed",
				     reply);
		break;
	}
}

void trib_lmtp_client_handle_reply(struct trib_lmtp_client *client,
				   const struct lmtp_reply *reply)
{
	struct trib_lmtp_message *msg;
	enum lmtp_slot_kind kind;

	/* BDAT n LAST after a refused RCPT gets no reply (RFC 2033 4.3),
	 * or a 503 when Dovecot saw the refusal first: never a 2xx. A 2xx
	 * is then for the next command (always RSET: trans_open). */
	while (client->slots != NULL &&
	       trib_lmtp_slot_is_optional(client->slots) &&
	       reply->code / 100 == 2)
		slot_pop(client);
	if (client->slots == NULL) {
		trib_lmtp_client_close(client, TRIB_ERR_TEMP,
				       "protocol error: unexpected reply "
				       "%u %s",
				       reply->code, reply->text);
		return;
	}
	kind = client->slots->kind;
	msg = client->slots->msg;
	if (msg != NULL)
		msg->refs++;
	slot_pop(client);
	if (kind == LMTP_SLOT_RSET && reply->code / 100 != 2) {
		trib_lmtp_client_close(client, TRIB_ERR_TEMP,
				       "RSET refused: %u %s", reply->code,
				       reply->text);
	} else if (msg != NULL) {
		handle_msg_reply(client, kind, msg, reply);
		if (kind == LMTP_SLOT_LAST && reply->code / 100 == 2 &&
		    client->slots == NULL)
			client->trans_open = false;
	}
	if (msg != NULL)
		trib_lmtp_message_unref(msg);
	if (!client->destroyed)
		trib_lmtp_client_pump(client);
}

/* ---- public ---- */

struct trib_lmtp_message *
trib_lmtp_message_begin(struct trib_lmtp_client *client, const char *recipient,
			uint64_t size, trib_lmtp_callback_t *callback,
			void *context)
{
	struct trib_lmtp_message *msg = trib_calloc(1, sizeof(*msg));

	msg->client = client;
	msg->refs = 2; /* the caller's handle, the list */
	msg->recipient = trib_strdup(recipient);
	msg->path = recipient_path(recipient);
	msg->display = msg->path != NULL ? trib_strdup(msg->path)
					 : recipient_display(recipient);
	msg->size = size;
	msg->large = size == 0 || size >= client->pipeline_max_size;
	msg->body = evbuffer_new();
	msg->callback = callback;
	msg->context = context;
	msg->bol = true;
	msg->listed = true;
	*client->messages_tail = msg;
	client->messages_tail = &msg->next;
	client->pending++;
	if (msg->path == NULL) {
		message_defer(client, msg, TRIB_ERR_PERM,
			      "not a valid recipient address");
		msg->wire = LMTP_WIRE_DONE;
	} else if (client->state == LMTP_STATE_CLOSED) {
		message_defer(client, msg, TRIB_ERR_TEMP, client->error);
		msg->wire = LMTP_WIRE_DONE;
	}
	trib_lmtp_client_schedule_flush(client);
	return msg;
}

void trib_lmtp_message_write(struct trib_lmtp_message *msg,
			     struct evbuffer *data)
{
	struct trib_lmtp_client *client = msg->client;

	if (client == NULL || msg->ended || msg->reported ||
	    msg->wire == LMTP_WIRE_DONE) {
		/* refused, failed or aborted: the rest is dropped */
		evbuffer_drain(data, evbuffer_get_length(data));
		return;
	}
	evbuffer_add_buffer(msg->body, data);
	if (!msg->large &&
	    evbuffer_get_length(msg->body) >= client->pipeline_max_size)
		msg->large = true;
	if (trib_lmtp_client_queued(client) >= client->high_watermark)
		client->full = true;
	trib_lmtp_client_schedule_flush(client);
}

static void message_end(struct trib_lmtp_message *msg)
{
	struct trib_lmtp_client *client = msg->client;

	msg->ended = true;
	if (client != NULL) {
		if (message_can_unlink(msg) && !client->pumping)
			message_unlink(client, msg);
		trib_lmtp_client_schedule_flush(client);
	}
	trib_lmtp_message_unref(msg);
}

void trib_lmtp_message_finish(struct trib_lmtp_message **_msg)
{
	struct trib_lmtp_message *msg = *_msg;

	*_msg = NULL;
	if (msg == NULL || msg->ended)
		return;
	msg->finished = true;
	message_end(msg);
}

void trib_lmtp_message_abort(struct trib_lmtp_message **_msg,
			     const char *reason)
{
	struct trib_lmtp_message *msg = *_msg;
	char *why;

	*_msg = NULL;
	if (msg == NULL || msg->ended)
		return;
	msg->aborted = true;
	if (msg->client != NULL) {
		why = trib_strdup_printf("aborted: %s",
					 reason != NULL ? reason : "no reason");
		message_defer(msg->client, msg, TRIB_ERR_CANCELED, why);
		free(why);
	}
	evbuffer_drain(msg->body, evbuffer_get_length(msg->body));
	message_end(msg);
}
