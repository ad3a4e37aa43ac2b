#ifndef TRIB_IMAP_CLIENT_H
#define TRIB_IMAP_CLIENT_H

/* imap-client.h: an IMAP4rev1 client session on the event loop.
 *
 * One connection, one explicit state machine (imap-client.c), a queue of
 * tagged commands. Every command's callback fires exactly once: with the
 * server's tagged reply, or with TRIB_ERR_CANCELED when the connection
 * dies or the client is destroyed. Untagged data goes to the oldest
 * command in flight that asked for that kind of data; what no command
 * claims (EXISTS, EXPUNGE, BYE, ALERT, THROTTLED) is surfaced through the
 * event handler.
 *
 * Security: TLS (implicit or STARTTLS) is verified by tls.c; LOGIN and
 * AUTHENTICATE are refused on a connection that is not encrypted; with
 * STARTTLS, the greeting's capabilities are forgotten and asked again
 * after the handshake, and PREAUTH on a plain connection is refused.
 *
 * Owns: the connection, the parser, queued commands. Borrows: the loop,
 * the logger. High-level commands (SELECT, LIST, FETCH, ...) live in
 * imap-commands.h. */

#include "error.h"
#include "imap-parser.h"
#include "log.h"

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

struct evbuffer;
struct trib_loop;
struct trib_imap_client;

enum trib_imap_tls_mode {
	TRIB_IMAP_TLS_IMPLICIT, /* port 993 */
	TRIB_IMAP_TLS_STARTTLS, /* port 143, STARTTLS required */
	TRIB_IMAP_TLS_NONE,	/* no TLS: connect only, never log in */
};

struct trib_imap_client_settings {
	/* Prefix of every log line and error, e.g. "alice/work"; NULL: the
	 * host name. */
	const char *name;
	const char *host;
	unsigned int port;
	enum trib_imap_tls_mode tls_mode;
	/* PEM file of trusted CAs; NULL = system store. */
	const char *ca_file;
	/* Off only through one account's own setting (see tls.h). */
	bool tls_verify;
	unsigned int connect_timeout_secs; /* 0 = 30 */
	unsigned int command_timeout_secs; /* 0 = 120 */
	/* NULL = trib_imap_limits_default(). */
	const struct trib_imap_limits *limits;
	const struct trib_logger *logger;
	/* Log the protocol at debug level, credentials redacted. */
	bool trace;
};

struct trib_imap_reply {
	/* OK, NO or BAD; NONE when the command never got a tagged reply. */
	enum trib_imap_status status;
	/* TRIB_OK for OK; else what to do next. */
	enum trib_error_class error_class;
	/* Response code of the tagged reply, uppercased, or NULL. */
	const char *code;
	/* The server's text, or "". */
	const char *text;
	/* One line naming the host and the cause, NULL when OK, e.g.
	 * "imap.example.com:993: SELECT Archive failed: NO [NONEXISTENT]
	 * Mailbox doesn't exist". */
	const char *error;
};

typedef void trib_imap_callback_t(const struct trib_imap_reply *reply,
				  void *context);

enum trib_imap_event_type {
	/* "* n EXISTS": number = messages in the selected mailbox. */
	TRIB_IMAP_EVENT_EXISTS,
	/* "* n EXPUNGE": number = the sequence number expunged. */
	TRIB_IMAP_EVENT_EXPUNGE,
	/* "* BYE text": the server is closing the connection. */
	TRIB_IMAP_EVENT_BYE,
	/* [ALERT] text: must be shown to the user (RFC 3501 7.1). */
	TRIB_IMAP_EVENT_ALERT,
	/* [THROTTLED] or [LIMIT] in an untagged response: slow down. */
	TRIB_IMAP_EVENT_THROTTLED,
	/* The connection is gone; text = the reason. No command callback
	 * is pending afterwards (all were canceled). */
	TRIB_IMAP_EVENT_DISCONNECTED,
};

struct trib_imap_event {
	enum trib_imap_event_type type;
	uint32_t number;
	const char *text;
	/* DISCONNECTED: TEMP normally, PERM for a refused certificate. */
	enum trib_error_class error_class;
};

typedef void trib_imap_event_callback_t(const struct trib_imap_event *event,
					void *context);

struct trib_imap_client *
trib_imap_client_create(struct trib_loop *loop,
			const struct trib_imap_client_settings *set,
			const char **error_r);
/* Cancels queued commands (their callbacks fire with CANCELED before this
 * returns) and closes the connection. Safe inside a callback. */
void trib_imap_client_destroy(struct trib_imap_client **client);

void trib_imap_client_set_event_handler(struct trib_imap_client *client,
					trib_imap_event_callback_t *callback,
					void *context);

/* Connect, read the greeting, STARTTLS when configured (required: a
 * server that does not offer it is refused), learn the capabilities.
 * The callback gets OK when the session can log in. */
void trib_imap_client_connect(struct trib_imap_client *client,
			      trib_imap_callback_t *callback, void *context);

/* LOGIN with a password. Refused (PERM) without TLS or when the server
 * says LOGINDISABLED. */
void trib_imap_client_login(struct trib_imap_client *client,
			    const char *username, const char *password,
			    trib_imap_callback_t *callback, void *context);

/* AUTHENTICATE mech (PLAIN, XOAUTH2, OAUTHBEARER; see sasl.h), with
 * SASL-IR when the server offers it. Refused (PERM) without TLS or when
 * the server does not offer AUTH=mech. A rejected token ends as an error
 * starting with "token rejected"; the reply code is then
 * AUTHENTICATIONFAILED. Capabilities are refreshed after success. */
void trib_imap_client_authenticate(struct trib_imap_client *client,
				   const char *mech_name, const char *username,
				   const char *secret,
				   trib_imap_callback_t *callback,
				   void *context);

/* True when the current capability list holds cap (case-insensitive). */
bool trib_imap_client_has_capability(const struct trib_imap_client *client,
				     const char *cap);
/* NULL-terminated, valid until capabilities change. */
const char *const *
trib_imap_client_capabilities(const struct trib_imap_client *client);

/* Stop (false) or resume (true) reading from the server, e.g. while the
 * consumer of streamed literals is full. What is already buffered is
 * still handled. */
void trib_imap_client_set_reading(struct trib_imap_client *client, bool on);

bool trib_imap_client_is_tls(const struct trib_imap_client *client);
/* "TLSv1.3 TLS_AES_256_GCM_SHA384" or "" */
const char *trib_imap_client_tls_description(struct trib_imap_client *client);
bool trib_imap_client_is_authenticated(const struct trib_imap_client *client);
/* The log/error prefix. */
const char *trib_imap_client_name(const struct trib_imap_client *client);
const struct trib_logger *
trib_imap_client_logger(const struct trib_imap_client *client);

/* ---- generic commands (used by imap-commands.c) ---- */

struct trib_imap_command;

/* Called for untagged responses of a kind the command asked for; return
 * true to claim it. */
typedef bool
trib_imap_untagged_callback_t(const struct trib_imap_response *resp,
			      void *context);

struct trib_imap_command_handlers {
	trib_imap_callback_t *done;
	/* Uppercase names of the untagged data this command collects, e.g.
	 * { "LIST", NULL }. Status responses ("OK" with a code) are offered
	 * under their name too. */
	const char *const *untagged_names;
	trib_imap_untagged_callback_t *untagged;
	/* FETCH body literals, streamed: begin, then data (the handler must
	 * drain what it is given, e.g. with evbuffer_remove_buffer(); what
	 * it leaves is discarded), then end. */
	void (*literal_begin)(const struct trib_imap_literal *lit,
			      void *context);
	void (*literal_data)(struct evbuffer *data, void *context);
	void (*literal_end)(void *context);
	/* "+" continuation while this command runs (IDLE). */
	void (*continuation)(const char *text, void *context);
};

enum trib_imap_command_flags {
	/* Sent only when nothing is in flight, and nothing is sent after it
	 * until it completes (state-changing commands). */
	TRIB_IMAP_COMMAND_FLAG_BARRIER = 1 << 0,
	/* No read timeout while it runs (IDLE). */
	TRIB_IMAP_COMMAND_FLAG_NO_TIMEOUT = 1 << 1,
};

/* Queue "<tag> <line>\r\n". line must not contain CR or LF. The handlers
 * struct must stay valid until done fires. *log_line, when non-NULL, is
 * what the trace shows instead of line (for redaction). */
struct trib_imap_command *
trib_imap_client_command(struct trib_imap_client *client, const char *line,
			 enum trib_imap_command_flags flags,
			 const struct trib_imap_command_handlers *handlers,
			 void *context);

/* Like trib_imap_client_command(), but the command is never sent: it
 * completes with error_class and "<line>: <reason>" at the next flush, so
 * the callback still fires later and once (e.g. for an argument that
 * cannot be encoded). */
struct trib_imap_command *trib_imap_client_command_refused(
	struct trib_imap_client *client, const char *line,
	const struct trib_imap_command_handlers *handlers, void *context,
	enum trib_error_class error_class, const char *reason);

/* Write raw bytes for the running command (IDLE's DONE). */
void trib_imap_client_send_raw(struct trib_imap_client *client,
			       const char *line);

/* Append an IMAP string for a command argument (quoted, or rejected with
 * -1 when it holds CR, LF, NUL or 8-bit bytes). */
int trib_imap_quote(char *buf, size_t size, const char *str);

#endif
