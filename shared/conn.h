#ifndef TRIB_CONN_H
#define TRIB_CONN_H

/* conn.h: one client connection on the event loop: TCP through evdns,
 * then optionally TLS as an OpenSSL filter bufferevent, either at once
 * (implicit TLS) or later on request (STARTTLS); or a UNIX stream socket
 * (local services such as Dovecot's LMTP; never TLS).
 *
 * Owns: its bufferevents and the SSL. Borrows: the loop and the TLS
 * context, which must outlive it. The protocol on top (IMAP, LMTP) reads
 * trib_conn_input() from its `readable` callback and writes with
 * trib_conn_write().
 *
 * The host process must ignore SIGPIPE (signal(SIGPIPE, SIG_IGN)): a peer
 * that closes while we write is reported as an error, not a signal. */

#include "error.h"

#include <stdbool.h>
#include <stddef.h>

struct evbuffer;
struct trib_loop;
struct trib_tls_ctx;
struct trib_conn;

struct trib_conn_callbacks {
	/* TCP connected and, with implicit TLS, the handshake done (or, after
	 * trib_conn_start_tls(), that handshake done). */
	void (*connected)(void *context);
	/* New bytes are in trib_conn_input(). */
	void (*readable)(void *context);
	/* The connection is over: refused, reset, closed by the peer, timed
	 * out, TLS failure. error names the host and the cause. The conn is
	 * unusable after this; destroy it. */
	void (*failed)(enum trib_error_class error_class, const char *error,
		       void *context);
	/* Optional: what was queued for writing has drained to the low
	 * watermark (trib_conn_set_output_lowat(), 0 = empty) or below. */
	void (*output_drained)(void *context);
};

struct trib_conn_settings {
	const char *host;
	unsigned int port;
	/* A UNIX socket to connect to instead of host and port (which are
	 * then ignored); the peer name is "unix:<path>". No TLS. */
	const char *unix_path;
	/* TLS context for implicit TLS or STARTTLS; NULL = plain TCP only. */
	struct trib_tls_ctx *tls_ctx;
	bool implicit_tls;
	/* Seconds for TCP connect + TLS handshake (0 = 30). */
	unsigned int connect_timeout_secs;
};

struct trib_conn *trib_conn_create(struct trib_loop *loop,
				   const struct trib_conn_settings *set,
				   const struct trib_conn_callbacks *callbacks,
				   void *context);
/* Closes at once; no callback fires afterwards. */
void trib_conn_destroy(struct trib_conn **conn);

/* Start connecting; callbacks report the outcome. */
void trib_conn_connect(struct trib_conn *conn);

/* Upgrade a plain connection to TLS (STARTTLS). Whatever the peer sent
 * before this call and is still unread is discarded. `connected` fires
 * again when the handshake is done. Returns -1 with *error_r if TLS
 * cannot start. */
int trib_conn_start_tls(struct trib_conn *conn, const char **error_r);

bool trib_conn_is_tls(const struct trib_conn *conn);
/* "TLSv1.3 TLS_AES_256_GCM_SHA384", or "" without TLS. */
const char *trib_conn_tls_description(struct trib_conn *conn);
/* "host:port", or "unix:/path" */
const char *trib_conn_peer_name(const struct trib_conn *conn);

struct evbuffer *trib_conn_input(struct trib_conn *conn);
void trib_conn_write(struct trib_conn *conn, const void *data, size_t size);
/* Move all of data to the output (no copy); data is left empty, also when
 * the connection has failed (the bytes are then dropped). */
void trib_conn_write_buffer(struct trib_conn *conn, struct evbuffer *data);
/* Bytes queued but not yet sent. */
size_t trib_conn_output_pending(struct trib_conn *conn);

/* Fail with a timeout when nothing is read for secs (0 = never). */
void trib_conn_set_read_timeout(struct trib_conn *conn, unsigned int secs);
/* Stop/resume reading (back-pressure). */
void trib_conn_set_reading(struct trib_conn *conn, bool on);
/* output_drained fires when the output drains to lowat bytes or fewer
 * (default 0: empty). */
void trib_conn_set_output_lowat(struct trib_conn *conn, size_t lowat);

#endif
