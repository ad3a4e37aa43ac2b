#ifndef TRIB_LMTP_CLIENT_PRIVATE_H
#define TRIB_LMTP_CLIENT_PRIVATE_H

/* lmtp-client-private.h: what lmtp-client.c (the session: connection,
 * greeting, LHLO, reply reading, teardown) and lmtp-client-message.c (the
 * messages: envelope, body streaming, their replies) share. Nothing else
 * includes it. */

#include "lmtp-client.h"

struct event;
struct trib_conn;

/* Longest reply line read (RFC 5321 allows 512 octets); a longer one ends
 * the session as a protocol error. */
#define TRIB_LMTP_MAX_LINE 2048
/* Most lines in one reply (LHLO lists a few capabilities). */
#define TRIB_LMTP_MAX_REPLY_LINES 100
/* Longest recipient or sender address (RFC 5321: a path is at most 256
 * octets; some slack for quoting). */
#define TRIB_LMTP_MAX_RECIPIENT 500

enum lmtp_state {
	LMTP_STATE_NEW,
	LMTP_STATE_CONNECTING,
	LMTP_STATE_GREETING,
	LMTP_STATE_LHLO,
	LMTP_STATE_READY,
	LMTP_STATE_CLOSED,
};

/* What a command sent is waiting for. */
enum lmtp_slot_kind {
	LMTP_SLOT_RSET,
	LMTP_SLOT_MAIL,
	LMTP_SLOT_RCPT,
	LMTP_SLOT_DATA,	 /* DATA: 354 */
	LMTP_SLOT_CHUNK, /* BDAT n */
	/* BDAT n LAST, or the end of DATA: the delivery reply (one per
	 * accepted recipient: one, or none when RCPT was refused) */
	LMTP_SLOT_LAST,
};

struct lmtp_slot {
	struct lmtp_slot *next;
	enum lmtp_slot_kind kind;
	struct trib_lmtp_message *msg; /* a reference; NULL for RSET */
};

/* How far a message is on the wire. */
enum lmtp_wire {
	LMTP_WIRE_QUEUED,   /* nothing sent */
	LMTP_WIRE_ENVELOPE, /* MAIL (+ RCPT, + DATA) sent */
	LMTP_WIRE_BODY,	    /* body going out */
	LMTP_WIRE_DONE,	    /* all sent, or never will be */
};

enum lmtp_step {
	LMTP_STEP_NONE,
	LMTP_STEP_MAIL,
	LMTP_STEP_RCPT,
	LMTP_STEP_DATA,
};

struct lmtp_reply {
	unsigned int code;
	char enhanced[16];
	char text[512];
};

struct trib_lmtp_message {
	struct trib_lmtp_message *next;	 /* client->messages */
	struct trib_lmtp_client *client; /* NULL once the client is gone */
	/* the caller's handle, membership in client->messages, each slot */
	unsigned int refs;
	char *recipient;
	char *display; /* "<alice+Work>" for errors and the trace */
	char *path;    /* RCPT TO argument; NULL when refused locally */
	uint64_t size;
	bool large;
	struct evbuffer *body; /* held, not yet sent */
	trib_lmtp_callback_t *callback;
	void *context;

	enum lmtp_wire wire;
	enum lmtp_step step;
	bool listed;   /* in client->messages */
	bool ended;    /* finish() or abort() called */
	bool finished; /* finish() called */
	bool aborted;
	bool reported; /* the callback fired */
	bool mail_failed, rcpt_replied, rcpt_ok;
	bool data_go;	  /* 354 read */
	bool data_failed; /* DATA or a chunk refused */
	/* reported later from the flush event (abort, local refusal) */
	bool deferred;
	enum trib_error_class deferred_class;
	char *deferred_error;
	/* dot-stuffing across chunks: at the start of a line? */
	bool bol;
};

struct trib_lmtp_client {
	struct trib_loop *loop;
	char *name;
	char *lhlo_name;
	char *mail_from;
	size_t pipeline_max_size, chunk_size, high_watermark, low_watermark;
	unsigned int reply_timeout_secs;
	bool disable_chunking;
	const struct trib_logger *logger;
	bool trace;
	const struct trib_lmtp_client_handlers *handlers;
	void *context;

	struct trib_conn *conn;
	enum lmtp_state state;
	char **caps;
	bool pipelining, chunking, eightbitmime;

	/* the reply being read */
	struct lmtp_reply reply;
	unsigned int reply_lines;
	size_t reply_text_len;

	/* commands sent, oldest first */
	struct lmtp_slot *slots, **slots_tail;
	/* messages begun and not yet off the wire and ended, in order */
	struct trib_lmtp_message *messages, **messages_tail;
	unsigned int pending; /* begun, not reported */
	/* a MAIL was sent since the last RSET or delivery reply */
	bool trans_open;
	bool full;
	struct evbuffer *scratch;
	struct event *flush_event;
	bool pumping;

	int refcount;
	bool destroyed;
	char error[1024]; /* why the session closed */
};

/* lmtp-client.c */
void trib_lmtp_client_ref(struct trib_lmtp_client *client);
/* False when the client was destroyed meanwhile (and is freed). */
bool trib_lmtp_client_unref(struct trib_lmtp_client *client);
void trib_lmtp_client_close(struct trib_lmtp_client *client,
			    enum trib_error_class class, const char *fmt, ...)
	TRIB_ATTR_PRINTF(3, 4);
void trib_lmtp_client_schedule_flush(struct trib_lmtp_client *client);
bool trib_lmtp_client_can_send(const struct trib_lmtp_client *client);
/* Expect a reply of kind for msg (NULL for RSET). */
void trib_lmtp_client_expect(struct trib_lmtp_client *client,
			     enum lmtp_slot_kind kind,
			     struct trib_lmtp_message *msg);
/* Write "<line>\r\n" and expect a reply of kind for msg. */
void trib_lmtp_client_send(struct trib_lmtp_client *client,
			   enum lmtp_slot_kind kind,
			   struct trib_lmtp_message *msg, const char *fmt, ...)
	TRIB_ATTR_PRINTF(4, 5);
void trib_lmtp_client_update_timeout(struct trib_lmtp_client *client);
void trib_lmtp_client_check_drained(struct trib_lmtp_client *client);
size_t trib_lmtp_client_output_pending(struct trib_lmtp_client *client);
/* 2xx: TRIB_OK, 5xx: TRIB_ERR_PERM, else TRIB_ERR_TEMP. */
enum trib_error_class trib_lmtp_code_class(unsigned int code);
/* A LAST slot that may get no reply (its RCPT was refused). */
bool trib_lmtp_slot_is_optional(const struct lmtp_slot *slot);

/* lmtp-client-message.c */
/* Send what can be sent now. */
void trib_lmtp_client_pump(struct trib_lmtp_client *client);
/* A complete reply for the oldest slot (the session is READY). */
void trib_lmtp_client_handle_reply(struct trib_lmtp_client *client,
				   const struct lmtp_reply *reply);
/* Fire the callbacks of aborted and locally refused messages. */
void trib_lmtp_client_report_deferred(struct trib_lmtp_client *client);
/* Report every message not yet reported (the session is over), drop
 * the slots, detach the messages when the client is destroyed. */
void trib_lmtp_client_fail_all(struct trib_lmtp_client *client,
			       enum trib_error_class class, const char *reason);
/* Body bytes of msg counted in trib_lmtp_client_queued(). */
size_t trib_lmtp_message_queued(const struct trib_lmtp_message *msg);
void trib_lmtp_message_unref(struct trib_lmtp_message *msg);

#endif
