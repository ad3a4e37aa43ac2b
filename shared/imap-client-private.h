#ifndef TRIB_IMAP_CLIENT_PRIVATE_H
#define TRIB_IMAP_CLIENT_PRIVATE_H

/* imap-client-private.h: what imap-client.c (session and connect
 * sequence), imap-client-queue.c (command queue and response dispatch)
 * and imap-auth.c (LOGIN, AUTHENTICATE) share. Nothing else includes it. */

#include "imap-client.h"

struct trib_conn;
struct trib_tls_ctx;
struct event;
struct event_base;

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

/* imap-client.c */
void trib_imap_client_set_state(struct trib_imap_client *client,
				enum imap_state state);
void trib_imap_client_ref(struct trib_imap_client *client);
/* Returns false when the client was destroyed meanwhile (and is freed). */
bool trib_imap_client_unref(struct trib_imap_client *client);
void trib_imap_client_free(struct trib_imap_client *client);
void trib_imap_client_caps_clear(struct trib_imap_client *client);
void trib_imap_client_caps_set(struct trib_imap_client *client,
			       const struct trib_imap_arg *args,
			       unsigned int count);
/* Close the session: the connect callback (if pending) and every command
 * get the error; DISCONNECTED is reported. */
void trib_imap_client_fail_connect(struct trib_imap_client *client,
				   enum trib_error_class class, const char *fmt,
				   ...) TRIB_ATTR_PRINTF(3, 4);
void trib_imap_client_handle_greeting(struct trib_imap_client *client,
				      const struct trib_imap_response *resp);

/* imap-client-queue.c */
/* Sets up the queue's flush event. */
void trib_imap_client_queue_init(struct trib_imap_client *client,
				 struct event_base *base);
enum trib_error_class trib_imap_code_error_class(const char *code);
void trib_imap_client_schedule_flush(struct trib_imap_client *client);
void trib_imap_client_send_command(struct trib_imap_client *client,
				   struct trib_imap_command *cmd);
void trib_imap_client_move_to_front(struct trib_imap_client *client,
				    struct trib_imap_command *cmd);
void trib_imap_client_update_timeout(struct trib_imap_client *client);
void trib_imap_client_fail_command(struct trib_imap_client *client,
				   struct trib_imap_command *cmd,
				   enum trib_error_class class,
				   const char *reason);
void trib_imap_client_cancel_all(struct trib_imap_client *client,
				 const char *reason);
/* The connection's readable callback. */
void trib_imap_client_readable(void *context);

#endif
