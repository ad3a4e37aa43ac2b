/* lmtp-client.c: the LMTP session: its state machine (connect, greeting,
 * LHLO, ready, closed), reading and parsing replies, the queue of replies
 * expected, timeouts, back-pressure and teardown. The messages (envelope,
 * body, their replies) are lmtp-client-message.c. */

#include "lmtp-client-private.h"

#include "alloc.h"
#include "conn.h"
#include "loop.h"

#include <ctype.h>
#include <event2/buffer.h>
#include <event2/event.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

static const char *const lmtp_state_names[] = {
	[LMTP_STATE_NEW] = "new",
	[LMTP_STATE_CONNECTING] = "connecting",
	[LMTP_STATE_GREETING] = "greeting",
	[LMTP_STATE_LHLO] = "lhlo",
	[LMTP_STATE_READY] = "ready",
	[LMTP_STATE_CLOSED] = "closed",
};

static void lmtp_set_state(struct trib_lmtp_client *client,
			   enum lmtp_state state)
{
	if (client->state == state)
		return;
	trib_log(client->logger, TRIB_LOG_DEBUG, "%s: state %s -> %s",
		 client->name, lmtp_state_names[client->state],
		 lmtp_state_names[state]);
	client->state = state;
}

void trib_lmtp_client_ref(struct trib_lmtp_client *client)
{
	client->refcount++;
}

static void lmtp_client_free(struct trib_lmtp_client *client)
{
	trib_conn_destroy(&client->conn);
	if (client->flush_event != NULL)
		event_free(client->flush_event);
	evbuffer_free(client->scratch);
	if (client->caps != NULL) {
		for (char **cap = client->caps; *cap != NULL; cap++)
			free(*cap);
		free(client->caps);
	}
	free(client->name);
	free(client->lhlo_name);
	free(client->mail_from);
	free(client);
}

bool trib_lmtp_client_unref(struct trib_lmtp_client *client)
{
	if (--client->refcount > 0)
		return !client->destroyed;
	lmtp_client_free(client);
	return false;
}

/* ---- slots: the replies expected ---- */

bool trib_lmtp_slot_is_optional(const struct lmtp_slot *slot)
{
	return slot->kind == LMTP_SLOT_LAST && slot->msg != NULL &&
	       !slot->msg->rcpt_ok &&
	       (slot->msg->rcpt_replied || slot->msg->mail_failed);
}

bool trib_lmtp_client_can_send(const struct trib_lmtp_client *client)
{
	/* Without PIPELINING, one command at a time. */
	return client->state == LMTP_STATE_READY &&
	       (client->pipelining || client->slots == NULL);
}

size_t trib_lmtp_client_output_pending(struct trib_lmtp_client *client)
{
	return client->conn != NULL ? trib_conn_output_pending(client->conn)
				    : 0;
}

void trib_lmtp_client_update_timeout(struct trib_lmtp_client *client)
{
	bool waiting = client->state == LMTP_STATE_GREETING ||
		       client->state == LMTP_STATE_LHLO;

	for (struct lmtp_slot *slot = client->slots; slot != NULL && !waiting;
	     slot = slot->next)
		waiting = !trib_lmtp_slot_is_optional(slot);
	if (client->conn != NULL)
		trib_conn_set_read_timeout(
			client->conn, waiting ? client->reply_timeout_secs : 0);
}

void trib_lmtp_client_expect(struct trib_lmtp_client *client,
			     enum lmtp_slot_kind kind,
			     struct trib_lmtp_message *msg)
{
	struct lmtp_slot *slot = trib_calloc(1, sizeof(*slot));

	slot->kind = kind;
	slot->msg = msg;
	if (msg != NULL)
		msg->refs++;
	*client->slots_tail = slot;
	client->slots_tail = &slot->next;
}

void trib_lmtp_client_send(struct trib_lmtp_client *client,
			   enum lmtp_slot_kind kind,
			   struct trib_lmtp_message *msg, const char *fmt, ...)
{
	char line[2 * TRIB_LMTP_MAX_RECIPIENT + 64];
	va_list args;
	int len;

	va_start(args, fmt);
	len = vsnprintf(line, sizeof(line) - 2, fmt, args);
	va_end(args);
	if (len < 0 || (size_t)len >= sizeof(line) - 2)
		len = (int)strlen(line);
	if (client->trace)
		trib_log(client->logger, TRIB_LOG_DEBUG, "%s: C: %s",
			 client->name, line);
	memcpy(line + len, "\r\n", 2);
	trib_conn_write(client->conn, line, (size_t)len + 2);
	trib_lmtp_client_expect(client, kind, msg);
}

/* ---- back-pressure ---- */

size_t trib_lmtp_client_queued(const struct trib_lmtp_client *client)
{
	size_t total = client->conn != NULL
			       ? trib_conn_output_pending(client->conn)
			       : 0;

	for (const struct trib_lmtp_message *msg = client->messages;
	     msg != NULL; msg = msg->next)
		total += trib_lmtp_message_queued(msg);
	return total;
}

bool trib_lmtp_client_is_full(const struct trib_lmtp_client *client)
{
	return trib_lmtp_client_queued(client) >= client->high_watermark;
}

void trib_lmtp_client_check_drained(struct trib_lmtp_client *client)
{
	size_t queued;

	if (client->destroyed)
		return;
	queued = trib_lmtp_client_queued(client);
	if (queued >= client->high_watermark) {
		client->full = true;
	} else if (client->full && queued <= client->low_watermark) {
		client->full = false;
		if (client->handlers != NULL &&
		    client->handlers->drained != NULL)
			client->handlers->drained(client->context);
	}
}

/* ---- the deferred flush: connect, report, send ---- */

static void lmtp_connect(struct trib_lmtp_client *client)
{
	lmtp_set_state(client, LMTP_STATE_CONNECTING);
	trib_log(client->logger, TRIB_LOG_DEBUG, "%s: connecting to %s",
		 client->name, trib_conn_peer_name(client->conn));
	/* may fail at once (a missing socket): conn's failed callback */
	trib_conn_connect(client->conn);
}

static void lmtp_flush(struct trib_lmtp_client *client)
{
	if (client->pumping)
		return;
	trib_lmtp_client_ref(client);
	if (client->state == LMTP_STATE_NEW)
		lmtp_connect(client);
	if (!client->destroyed)
		trib_lmtp_client_report_deferred(client);
	if (!client->destroyed)
		trib_lmtp_client_pump(client);
	if (!client->destroyed)
		trib_lmtp_client_check_drained(client);
	trib_lmtp_client_unref(client);
}

static void flush_event_cb(evutil_socket_t fd, short what, void *context)
{
	(void)fd;
	(void)what;
	lmtp_flush(context);
}

void trib_lmtp_client_schedule_flush(struct trib_lmtp_client *client)
{
	static const struct timeval now = { 0, 0 };

	if (!client->destroyed)
		evtimer_add(client->flush_event, &now);
}

/* ---- teardown ---- */

void trib_lmtp_client_close(struct trib_lmtp_client *client,
			    enum trib_error_class class, const char *fmt, ...)
{
	const struct trib_lmtp_client_handlers *handlers = client->handlers;
	char reason[800];
	va_list args;

	if (client->state == LMTP_STATE_CLOSED)
		return;
	va_start(args, fmt);
	vsnprintf(reason, sizeof(reason), fmt, args);
	va_end(args);
	snprintf(client->error, sizeof(client->error), "%s: %s", client->name,
		 reason);
	trib_log(client->logger, TRIB_LOG_DEBUG, "%s", client->error);
	lmtp_set_state(client, LMTP_STATE_CLOSED);
	trib_conn_destroy(&client->conn);
	trib_lmtp_client_ref(client);
	trib_lmtp_client_fail_all(client, TRIB_ERR_TEMP, reason);
	if (!client->destroyed && handlers != NULL && handlers->closed != NULL)
		handlers->closed(class, client->error, client->context);
	if (trib_lmtp_client_unref(client))
		trib_lmtp_client_check_drained(client);
}

/* ---- replies ---- */

enum trib_error_class trib_lmtp_code_class(unsigned int code)
{
	return code / 100 == 2	 ? TRIB_OK
	       : code / 100 == 5 ? TRIB_ERR_PERM
				 : TRIB_ERR_TEMP;
}

static void caps_set_from_reply_line(struct trib_lmtp_client *client,
				     const char *text)
{
	size_t n = 0, len = strcspn(text, " ");
	char *cap;

	if (len == 0)
		return;
	if (client->caps != NULL) {
		while (client->caps[n] != NULL)
			n++;
	}
	client->caps = trib_realloc(client->caps, (n + 2) * sizeof(char *));
	cap = trib_strndup(text, len);
	for (char *p = cap; *p != '\0'; p++)
		*p = (char)toupper((unsigned char)*p);
	client->caps[n] = cap;
	client->caps[n + 1] = NULL;
}

static void handle_greeting(struct trib_lmtp_client *client,
			    const struct lmtp_reply *reply)
{
	if (reply->code != 220) {
		trib_lmtp_client_close(
			client, trib_lmtp_code_class(reply->code),
			"server refused the session: %u %s%s%s", reply->code,
			reply->enhanced, reply->enhanced[0] != '\0' ? " " : "",
			reply->text);
		return;
	}
	lmtp_set_state(client, LMTP_STATE_LHLO);
	if (client->trace)
		trib_log(client->logger, TRIB_LOG_DEBUG, "%s: C: LHLO %s",
			 client->name, client->lhlo_name);
	trib_conn_write(client->conn, "LHLO ", 5);
	trib_conn_write(client->conn, client->lhlo_name,
			strlen(client->lhlo_name));
	trib_conn_write(client->conn, "\r\n", 2);
}

static void handle_lhlo(struct trib_lmtp_client *client,
			const struct lmtp_reply *reply)
{
	if (reply->code != 250) {
		trib_lmtp_client_close(
			client, trib_lmtp_code_class(reply->code),
			"LHLO refused: %u %s%s%s", reply->code, reply->enhanced,
			reply->enhanced[0] != '\0' ? " " : "", reply->text);
		return;
	}
	client->pipelining =
		trib_lmtp_client_has_capability(client, "PIPELINING");
	client->chunking = !client->disable_chunking &&
			   trib_lmtp_client_has_capability(client, "CHUNKING");
	client->eightbitmime =
		trib_lmtp_client_has_capability(client, "8BITMIME");
	lmtp_set_state(client, LMTP_STATE_READY);
	trib_lmtp_client_update_timeout(client);
	if (client->handlers != NULL && client->handlers->ready != NULL) {
		trib_lmtp_client_ref(client);
		client->handlers->ready(client->context);
		if (!trib_lmtp_client_unref(client))
			return;
	}
	trib_lmtp_client_pump(client);
}

static void dispatch_reply(struct trib_lmtp_client *client)
{
	struct lmtp_reply reply = client->reply;

	memset(&client->reply, 0, sizeof(client->reply));
	client->reply_lines = 0;
	client->reply_text_len = 0;
	if (reply.code == 421) {
		/* closing: whatever it answered, nothing more will come */
		trib_lmtp_client_close(client, TRIB_ERR_TEMP,
				       "server closing the session: 421 %s%s%s",
				       reply.enhanced,
				       reply.enhanced[0] != '\0' ? " " : "",
				       reply.text);
		return;
	}
	switch (client->state) {
	case LMTP_STATE_GREETING:
		handle_greeting(client, &reply);
		break;
	case LMTP_STATE_LHLO:
		handle_lhlo(client, &reply);
		break;
	case LMTP_STATE_READY:
		trib_lmtp_client_handle_reply(client, &reply);
		break;
	default:
		break;
	}
}

/* "X.Y.Z " at the start of text, X being the reply's class. */
static size_t enhanced_code_len(const char *text, unsigned int code)
{
	size_t i = 0;

	if (text[0] != (char)('0' + code / 100) || text[1] != '.')
		return 0;
	i = 2;
	for (unsigned int part = 0; part < 2; part++) {
		size_t digits = 0;

		while (isdigit((unsigned char)text[i]) && digits < 3) {
			i++;
			digits++;
		}
		if (digits == 0 || (part == 0 && text[i] != '.'))
			return 0;
		if (part == 0)
			i++;
	}
	return text[i] == ' ' || text[i] == '\0' ? i : 0;
}

static void reply_add_text(struct trib_lmtp_client *client, const char *text)
{
	struct lmtp_reply *reply = &client->reply;
	size_t room, len, enh = enhanced_code_len(text, reply->code);

	if (enh > 0 && enh < sizeof(reply->enhanced)) {
		if (reply->enhanced[0] == '\0')
			memcpy(reply->enhanced, text, enh);
		text += enh;
		while (*text == ' ')
			text++;
	}
	if (*text == '\0')
		return;
	room = sizeof(reply->text) - 1 - client->reply_text_len;
	if (client->reply_text_len > 0 && room > 0) {
		reply->text[client->reply_text_len++] = ' ';
		room--;
	}
	len = strlen(text);
	if (len > room)
		len = room;
	memcpy(reply->text + client->reply_text_len, text, len);
	client->reply_text_len += len;
	reply->text[client->reply_text_len] = '\0';
}

/* One reply line, without its line ending. Returns -1 on a protocol
 * error (the session is then closed). */
static int handle_line(struct trib_lmtp_client *client, char *line, size_t len)
{
	unsigned int code;
	bool last;

	/* the server's words end up in errors and logs: no control bytes */
	for (size_t i = 0; i < len; i++) {
		if ((unsigned char)line[i] < 0x20 || line[i] == 0x7f)
			line[i] = '?';
	}
	line[len] = '\0';
	if (client->trace)
		trib_log(client->logger, TRIB_LOG_DEBUG, "%s: S: %s",
			 client->name, line);
	if (len < 3 || line[0] < '2' || line[0] > '5' ||
	    !isdigit((unsigned char)line[1]) ||
	    !isdigit((unsigned char)line[2]) ||
	    (len > 3 && line[3] != ' ' && line[3] != '-')) {
		trib_lmtp_client_close(client, TRIB_ERR_TEMP,
				       "protocol error: malformed reply "
				       "line \"%.80s\"",
				       line);
		return -1;
	}
	code = (unsigned int)((line[0] - '0') * 100 + (line[1] - '0') * 10 +
			      (line[2] - '0'));
	last = len == 3 || line[3] == ' ';
	if (client->reply_lines > 0 && code != client->reply.code) {
		trib_lmtp_client_close(client, TRIB_ERR_TEMP,
				       "protocol error: reply code changed "
				       "from %u to %u within a reply",
				       client->reply.code, code);
		return -1;
	}
	if (++client->reply_lines > TRIB_LMTP_MAX_REPLY_LINES) {
		trib_lmtp_client_close(client, TRIB_ERR_TEMP,
				       "protocol error: reply of more than "
				       "%u lines",
				       TRIB_LMTP_MAX_REPLY_LINES);
		return -1;
	}
	client->reply.code = code;
	if (client->state == LMTP_STATE_LHLO && client->reply_lines > 1 &&
	    code == 250)
		caps_set_from_reply_line(client, len > 4 ? line + 4 : "");
	else
		reply_add_text(client, len > 4 ? line + 4 : "");
	if (last)
		dispatch_reply(client);
	return 0;
}

static void lmtp_readable(void *context)
{
	struct trib_lmtp_client *client = context;
	char line[TRIB_LMTP_MAX_LINE + 1];
	struct evbuffer_ptr eol;
	struct evbuffer *input;
	size_t eol_len;

	trib_lmtp_client_ref(client);
	while (!client->destroyed && client->state != LMTP_STATE_CLOSED) {
		input = trib_conn_input(client->conn);
		if (evbuffer_get_length(input) == 0)
			break;
		/* a reply nothing asked for is an error, unless it is a
		 * 421 (Dovecot's idle timeout): see dispatch_reply() */
		eol = evbuffer_search_eol(input, NULL, &eol_len,
					  EVBUFFER_EOL_CRLF);
		if (eol.pos < 0
			    ? evbuffer_get_length(input) > TRIB_LMTP_MAX_LINE
			    : (size_t)eol.pos > TRIB_LMTP_MAX_LINE) {
			trib_lmtp_client_close(client, TRIB_ERR_TEMP,
					       "protocol error: reply line "
					       "longer than %u bytes",
					       TRIB_LMTP_MAX_LINE);
			break;
		}
		if (eol.pos < 0)
			break;
		evbuffer_remove(input, line, (size_t)eol.pos);
		evbuffer_drain(input, eol_len);
		if (handle_line(client, line, (size_t)eol.pos) < 0)
			break;
	}
	if (trib_lmtp_client_unref(client) &&
	    client->state != LMTP_STATE_CLOSED) {
		trib_lmtp_client_update_timeout(client);
		trib_lmtp_client_check_drained(client);
	}
}

/* ---- connection callbacks ---- */

static void lmtp_connected(void *context)
{
	struct trib_lmtp_client *client = context;

	lmtp_set_state(client, LMTP_STATE_GREETING);
	trib_lmtp_client_update_timeout(client);
}

static void lmtp_conn_failed(enum trib_error_class class, const char *error,
			     void *context)
{
	struct trib_lmtp_client *client = context;
	const char *peer = trib_conn_peer_name(client->conn);
	size_t peer_len = strlen(peer);

	/* "unix:/run/dovecot/lmtp: connection closed by server": our own
	 * prefix is added again */
	if (strncmp(error, peer, peer_len) == 0 && error[peer_len] == ':' &&
	    error[peer_len + 1] == ' ')
		error += peer_len + 2;
	trib_lmtp_client_close(client, class, "%s", error);
}

static void lmtp_output_drained(void *context)
{
	struct trib_lmtp_client *client = context;

	trib_lmtp_client_ref(client);
	trib_lmtp_client_pump(client);
	if (trib_lmtp_client_unref(client))
		trib_lmtp_client_check_drained(client);
}

static const struct trib_conn_callbacks lmtp_conn_callbacks = {
	.connected = lmtp_connected,
	.readable = lmtp_readable,
	.failed = lmtp_conn_failed,
	.output_drained = lmtp_output_drained,
};

/* ---- public ---- */

/* "unix:/path", "/path", "host:port", "[v6addr]:port" */
static int parse_address(const char *address, struct trib_conn_settings *set,
			 char **host_r, const char **error_r)
{
	const char *colon, *host, *end;
	unsigned long port;
	char *endp;

	if (address == NULL || address[0] == '\0') {
		*error_r = "LMTP address is empty";
		return -1;
	}
	if (strncmp(address, "unix:", 5) == 0 || address[0] == '/') {
		set->unix_path = address[0] == '/' ? address : address + 5;
		if (set->unix_path[0] == '\0') {
			*error_r = "LMTP address: empty socket path";
			return -1;
		}
		return 0;
	}
	colon = strrchr(address, ':');
	if (colon == NULL || colon == address) {
		*error_r = "LMTP address must be unix:/path or host:port";
		return -1;
	}
	host = address;
	end = colon;
	if (address[0] == '[') {
		if (colon[-1] != ']' || colon - address < 3) {
			*error_r = "LMTP address: bad [IPv6]:port";
			return -1;
		}
		host++;
		end--;
	}
	port = strtoul(colon + 1, &endp, 10);
	if (!isdigit((unsigned char)colon[1]) || *endp != '\0' || port == 0 ||
	    port > 65535) {
		*error_r = "LMTP address: port must be 1-65535";
		return -1;
	}
	*host_r = trib_strndup(host, (size_t)(end - host));
	set->host = *host_r;
	set->port = (unsigned int)port;
	return 0;
}

struct trib_lmtp_client *
trib_lmtp_client_create(struct trib_loop *loop,
			const struct trib_lmtp_client_settings *set,
			const struct trib_lmtp_client_handlers *handlers,
			void *context, const char **error_r)
{
	struct trib_conn_settings conn_set = {
		.connect_timeout_secs = set->connect_timeout_secs,
	};
	struct trib_lmtp_client *client;
	char *host = NULL;

	if (parse_address(set->address, &conn_set, &host, error_r) < 0)
		return NULL;
	if (set->mail_from != NULL &&
	    (strpbrk(set->mail_from, "<>\r\n \t") != NULL ||
	     strlen(set->mail_from) > TRIB_LMTP_MAX_RECIPIENT)) {
		free(host);
		*error_r = "LMTP mail_from must be a bare address";
		return NULL;
	}
	if (set->lhlo_name != NULL &&
	    (set->lhlo_name[0] == '\0' ||
	     strpbrk(set->lhlo_name, "\r\n \t") != NULL ||
	     strlen(set->lhlo_name) > 255)) {
		free(host);
		*error_r = "LMTP lhlo_name must be a domain name";
		return NULL;
	}
	client = trib_calloc(1, sizeof(*client));
	client->loop = loop;
	client->name =
		trib_strdup(set->name != NULL ? set->name : set->address);
	client->lhlo_name = trib_strdup(set->lhlo_name != NULL ? set->lhlo_name
							       : "localhost");
	client->mail_from =
		trib_strdup(set->mail_from != NULL ? set->mail_from : "");
	client->pipeline_max_size = set->pipeline_max_size != 0
					    ? set->pipeline_max_size
					    : 1024 * 1024;
	client->chunk_size =
		set->chunk_size != 0 ? set->chunk_size : 256 * 1024;
	client->high_watermark =
		set->high_watermark != 0 ? set->high_watermark : 1024 * 1024;
	client->low_watermark =
		set->low_watermark != 0 ? set->low_watermark : 256 * 1024;
	if (client->low_watermark >= client->high_watermark)
		client->low_watermark = client->high_watermark / 2;
	client->reply_timeout_secs =
		set->reply_timeout_secs != 0 ? set->reply_timeout_secs : 300;
	client->disable_chunking = set->disable_chunking;
	client->logger = set->logger;
	client->trace = set->trace;
	client->handlers = handlers;
	client->context = context;
	client->slots_tail = &client->slots;
	client->messages_tail = &client->messages;
	client->scratch = evbuffer_new();
	client->refcount = 1;
	client->conn =
		trib_conn_create(loop, &conn_set, &lmtp_conn_callbacks, client);
	trib_conn_set_output_lowat(client->conn, client->low_watermark);
	free(host);
	client->flush_event =
		evtimer_new(trib_loop_base(loop), flush_event_cb, client);
	trib_lmtp_client_schedule_flush(client);
	return client;
}

void trib_lmtp_client_destroy(struct trib_lmtp_client **_client)
{
	struct trib_lmtp_client *client = *_client;

	if (client == NULL)
		return;
	*_client = NULL;
	if (client->destroyed)
		return;
	client->destroyed = true;
	client->handlers = NULL;
	evtimer_del(client->flush_event);
	trib_conn_destroy(&client->conn);
	if (client->state != LMTP_STATE_CLOSED) {
		snprintf(client->error, sizeof(client->error),
			 "%s: client closed", client->name);
		lmtp_set_state(client, LMTP_STATE_CLOSED);
	}
	/* the caller's reference keeps it while the callbacks run */
	trib_lmtp_client_fail_all(client, TRIB_ERR_CANCELED, "client closed");
	trib_lmtp_client_unref(client);
}

bool trib_lmtp_client_is_ready(const struct trib_lmtp_client *client)
{
	return client->state == LMTP_STATE_READY;
}

bool trib_lmtp_client_is_closed(const struct trib_lmtp_client *client)
{
	return client->state == LMTP_STATE_CLOSED;
}

bool trib_lmtp_client_has_capability(const struct trib_lmtp_client *client,
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

unsigned int
trib_lmtp_client_messages_pending(const struct trib_lmtp_client *client)
{
	return client->pending;
}

const char *trib_lmtp_client_name(const struct trib_lmtp_client *client)
{
	return client->name;
}
