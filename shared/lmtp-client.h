#ifndef TRIB_LMTP_CLIENT_H
#define TRIB_LMTP_CLIENT_H

/* lmtp-client.h: one LMTP session (RFC 2033) on the event loop, to a UNIX
 * socket ("unix:/run/dovecot/lmtp") or TCP ("host:port"; no TLS: LMTP is
 * local), delivering messages whose bodies are streamed in.
 *
 * A message is one transaction with one recipient: [RSET] MAIL FROM:<>
 * RCPT TO:<user[+Folder]>, then the body as BDAT chunks (CHUNKING, RFC
 * 3030: byte-exact) or after DATA (dot-stuffed on the fly, RFC 5321
 * 4.5.2). Transactions are pipelined (RFC 2920): the commands and body of
 * message N+1 go out before the replies of message N are in. Messages go
 * on the wire in the order they were begun; body data for a later message
 * is held until the earlier ones are on the wire. RSET goes before MAIL
 * whenever an earlier transaction may still be open (its RCPT or a chunk
 * refused, its replies not yet read), since a nested MAIL is refused; a
 * BDAT LAST after a refused RCPT is answered by a 503 (Dovecot) or not
 * at all (RFC 2033 4.3), and both are handled.
 *
 * Every message's callback fires exactly once, never inside the call that
 * began, wrote, finished or aborted it:
 *   - 250 after the data: delivered (TRIB_OK);
 *   - 4xx (MAIL, RCPT or data): TRIB_ERR_TEMP, retry later;
 *   - 5xx: TRIB_ERR_PERM, this message is rejected;
 *   - the session failed (connection lost, timeout, protocol error) before
 *     its final reply was read: TRIB_ERR_TEMP, "not delivered" (the
 *     server may still have delivered it: LMTP cannot tell; the
 *     destination's dedupe makes the retry harmless);
 *   - aborted by the caller, or the client destroyed: TRIB_ERR_CANCELED,
 *     "not delivered".
 * Delivered is only ever reported for a 2xx reply to the message's data.
 *
 * Large messages: when the size given to begin() is pipeline_max_size or
 * more (or 0), nothing of the body is sent before the RCPT reply is in,
 * and the body then goes out in chunks as it arrives; if RCPT is refused,
 * the body is discarded as it is written. With CHUNKING, smaller messages
 * are held until finish() and sent as one "BDAT n LAST", pipelined. (With
 * DATA, every body waits for the 354, which follows the RCPT reply.)
 *
 * Aborting a message (its source failed midway) never completes its
 * transaction, so LMTP can never deliver part of a message:
 *   - with CHUNKING, body chunks are sent only once they are complete in
 *     hand, and "BDAT ... LAST" only from finish(); abort() sends no more
 *     chunks and sends RSET. RFC 3030 section 2 allows RSET between the
 *     first BDAT and BDAT LAST and says it clears all segments; Dovecot
 *     2.3 resets the transaction and frees the data stream then, and its
 *     LMTP delivers only at the end of the data stream, which only BDAT
 *     LAST appends (verified against Dovecot 2.3.19.1: the partial
 *     message is not stored and the next transaction is). The session
 *     stays up for the other messages.
 *   - with DATA, the body cannot be taken back once it has begun (any
 *     end marker would deliver the part sent): if DATA was already sent,
 *     the session is closed (at the 354, or at once when body bytes are
 *     out) instead of ending the data, and the messages queued behind
 *     report "not delivered". Before DATA: RSET, as with CHUNKING.
 *
 * MAIL FROM:<> by default, so that Sieve vacation and reject never send
 * backscatter to the remote senders (set mail_from to change it).
 *
 * Back-pressure: trib_lmtp_client_queued() is what waits to go out: the
 * socket's output plus bodies held for the server (behind an RCPT reply,
 * a 354 or earlier messages). The body of an unfinished message below
 * pipeline_max_size is not counted while it waits to go out (it is
 * bounded by that size). When queued() reaches high_watermark,
 * is_full() says so; `drained` fires once it has dropped to
 * low_watermark again (e.g. to resume reading with trib_conn_set_reading()
 * on the IMAP side).
 *
 * Owns: the connection, the queued messages and their bodies. Borrows:
 * the loop and the logger, which must outlive it. Protocol trace at debug
 * level when `trace` is set; message bodies are never logged. */

#include "error.h"
#include "log.h"

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

struct evbuffer;
struct trib_loop;
struct trib_lmtp_client;
struct trib_lmtp_message;

struct trib_lmtp_client_settings {
	/* "unix:/path" or "host:port" ("[v6addr]:port"). */
	const char *address;
	/* Prefix of log lines and errors; NULL: the address. */
	const char *name;
	/* LHLO argument; NULL: "localhost". */
	const char *lhlo_name;
	/* Reverse path without the brackets; NULL: "" (MAIL FROM:<>). */
	const char *mail_from;
	/* Messages of this size or more wait for their RCPT reply before
	 * any body byte is sent (0 = 1 MiB). */
	size_t pipeline_max_size;
	/* A BDAT chunk is sent once this much is in hand, or sooner when
	 * the socket is idle (0 = 256 KiB). */
	size_t chunk_size;
	/* Back-pressure thresholds for queued() (0 = 1 MiB and 256 KiB). */
	size_t high_watermark;
	size_t low_watermark;
	unsigned int connect_timeout_secs; /* 0 = 30 */
	/* Longest wait for a reply (0 = 300: a 25 MB message through Sieve
	 * takes a while). */
	unsigned int reply_timeout_secs;
	/* Use DATA even when the server offers CHUNKING (tests). */
	bool disable_chunking;
	const struct trib_logger *logger;
	/* Log the protocol at debug level (never the bodies). */
	bool trace;
};

struct trib_lmtp_client_handlers {
	/* LHLO answered: messages are going out. */
	void (*ready)(void *context);
	/* The session is over (it could not start, failed, or the server
	 * closed it). Every message has been reported before this fires;
	 * messages begun later are reported "not delivered". */
	void (*closed)(enum trib_error_class error_class, const char *error,
		       void *context);
	/* queued() dropped to low_watermark after reaching high_watermark. */
	void (*drained)(void *context);
};

struct trib_lmtp_reply {
	/* TRIB_OK: delivered. */
	enum trib_error_class error_class;
	/* The reply that decided it: 250, 451, 550 ...; 0 when no reply was
	 * read (session lost, aborted, destroyed). */
	unsigned int code;
	/* Enhanced status code ("2.0.0", "5.1.1") or "". */
	const char *enhanced;
	/* The server's text (lines joined by spaces) or "". */
	const char *text;
	/* NULL when delivered; else one line naming the session, the
	 * recipient and the cause, e.g. "unix:/run/dovecot/lmtp: <bob>: RCPT
	 * TO refused: 550 5.1.1 <bob> User doesn't exist: bob". */
	const char *error;
	/* The recipient given to begin(). */
	const char *recipient;
};

typedef void trib_lmtp_callback_t(const struct trib_lmtp_reply *reply,
				  void *context);

/* NULL with *error_r for a bad address. The connection starts at once,
 * from the loop; handlers may be NULL, and must stay valid. */
struct trib_lmtp_client *
trib_lmtp_client_create(struct trib_loop *loop,
			const struct trib_lmtp_client_settings *set,
			const struct trib_lmtp_client_handlers *handlers,
			void *context, const char **error_r);
/* Closes the session: every message not yet reported is, with
 * TRIB_ERR_CANCELED, before this returns. Safe inside a callback. Handles
 * of messages not yet finished or aborted stay valid (writes are
 * dropped) until the caller ends them. */
void trib_lmtp_client_destroy(struct trib_lmtp_client **client);

/* LHLO answered and the session still up. */
bool trib_lmtp_client_is_ready(const struct trib_lmtp_client *client);
/* Over: later messages are reported "not delivered". */
bool trib_lmtp_client_is_closed(const struct trib_lmtp_client *client);
/* A capability from the LHLO reply ("CHUNKING"), case-insensitive. */
bool trib_lmtp_client_has_capability(const struct trib_lmtp_client *client,
				     const char *cap);
size_t trib_lmtp_client_queued(const struct trib_lmtp_client *client);
bool trib_lmtp_client_is_full(const struct trib_lmtp_client *client);
/* Messages begun and not yet reported. */
unsigned int
trib_lmtp_client_messages_pending(const struct trib_lmtp_client *client);
const char *trib_lmtp_client_name(const struct trib_lmtp_client *client);

/* Begin a message to recipient ("alice", "alice+Work",
 * "alice+Lists/Tributary@example.com"; a local part that is not a
 * dot-atom is quoted; CR, LF, NUL, '<' and '>' are refused, as a
 * permanent failure of this message). size: the body's size as far as
 * known (it picks the large-message path; the bytes actually written
 * are what is sent). The callback and context must stay valid until
 * the callback fires. The handle is the caller's until it calls finish()
 * or abort(), exactly once, even after the callback fired (e.g. RCPT
 * refused mid-body: later writes are dropped). */
struct trib_lmtp_message *
trib_lmtp_message_begin(struct trib_lmtp_client *client, const char *recipient,
			uint64_t size, trib_lmtp_callback_t *callback,
			void *context);
/* Append body bytes: all of data is moved (evbuffer_add_buffer, no copy)
 * and data is left empty. */
void trib_lmtp_message_write(struct trib_lmtp_message *msg,
			     struct evbuffer *data);
/* The body is complete: send the end of it. Ends the caller's handle. */
void trib_lmtp_message_finish(struct trib_lmtp_message **msg);
/* The body's source failed: never complete this transaction (see the
 * top of this file); the callback reports TRIB_ERR_CANCELED with
 * reason, unless it has fired already. Ends the caller's handle. */
void trib_lmtp_message_abort(struct trib_lmtp_message **msg,
			     const char *reason);

#endif
