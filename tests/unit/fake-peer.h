#ifndef FAKE_PEER_H
#define FAKE_PEER_H

/* fake-peer.h: the socket side of the unit tests' scripted fake servers
 * (IMAP, LMTP, the auth userdb service). A fake_peer listens on 127.0.0.1
 * with a port the kernel picks, or on a UNIX socket in a directory of its
 * own, and turns every accepted connection into a fake_peer_conn. It
 * knows no protocol: the test is told "accepted" and "input available",
 * reads lines or body bytes from the connection's input itself and
 * answers with fake_peer_conn_write(). It also keeps the transcript the
 * tests assert on, the client's lines "|"-separated, and runs a script of
 * expected lines and answers; the answers' substitutions stay the test's.
 *
 * The peer owns its connections: a handle stays valid (closed, if it was
 * closed) until fake_peer_destroy(), which closes everything, removes the
 * UNIX socket and its directory. Failures of the test's own setup (bind,
 * a transcript that would not fit) are cmocka assertions. */

#include <stdbool.h>
#include <stddef.h>

struct evbuffer;
struct trib_loop;
struct fake_peer;
struct fake_peer_conn;

struct fake_peer_callbacks {
	/* A connection was accepted and counted; the test may greet.
	 * Optional. */
	void (*accepted)(struct fake_peer_conn *conn, void *context);
	/* Bytes are waiting in fake_peer_conn_input(). Not called once the
	 * connection is closed or closing. */
	void (*input)(struct fake_peer_conn *conn, void *context);
};

/* unix_name NULL: TCP on 127.0.0.1, fake_peer_port() tells the port.
 * Otherwise a UNIX socket named unix_name in a new directory under /tmp.
 * callbacks is borrowed and must outlive the peer. */
struct fake_peer *fake_peer_create(struct trib_loop *loop,
				   const char *unix_name,
				   const struct fake_peer_callbacks *callbacks,
				   void *context);
void fake_peer_destroy(struct fake_peer **peer);

unsigned int fake_peer_port(const struct fake_peer *peer);
/* The UNIX socket's path and its directory ("" for TCP). */
const char *fake_peer_unix_path(const struct fake_peer *peer);
const char *fake_peer_dir(const struct fake_peer *peer);

/* Connections accepted so far (at most 16, asserted); n counts from 0 in
 * the order of accept. */
unsigned int fake_peer_conn_count(const struct fake_peer *peer);
struct fake_peer_conn *fake_peer_get_conn(struct fake_peer *peer,
					  unsigned int n);

/* Append "line|" to the transcript; asserts that it fits. */
void fake_peer_transcript_add(struct fake_peer *peer, const char *line);
const char *fake_peer_transcript(const struct fake_peer *peer);

/* Open: accepted, and neither closed nor closing on either side. */
bool fake_peer_conn_is_open(const struct fake_peer_conn *conn);
/* The connection ended from the client's side (EOF or an error), not by
 * fake_peer_conn_close() or a completed fake_peer_conn_close_when_flushed(). */
bool fake_peer_conn_hung_up(const struct fake_peer_conn *conn);
/* What the client sent, not yet consumed; NULL once closed. */
struct evbuffer *fake_peer_conn_input(struct fake_peer_conn *conn);
/* Queue bytes for the client; dropped when the connection is closed. */
void fake_peer_conn_write(struct fake_peer_conn *conn, const void *data,
			  size_t size);
void fake_peer_conn_send(struct fake_peer_conn *conn, const char *text);
/* Close now: what is still queued is lost. */
void fake_peer_conn_close(struct fake_peer_conn *conn);
/* Close once everything queued is written: bytes then EOF, as a server
 * dying mid-message looks on the wire. */
void fake_peer_conn_close_when_flushed(struct fake_peer_conn *conn);

/* A script: steps run in order, each on the connection the test passes
 * to fake_peer_script_next() for the line it read. A step waits for a
 * client line starting with expect (NULL: it runs right after the one
 * before), then its send is written (NULL: nothing); FAKE_PEER_CLOSE
 * instead closes the connection once what was sent before is written. One
 * line satisfies one expect. The test fills steps and count. */
#define FAKE_PEER_CLOSE ((const char *)1)

struct fake_peer_step {
	const char *expect;
	const char *send;
};

struct fake_peer_script {
	const struct fake_peer_step *steps;
	unsigned int count;
	unsigned int pos; /* the next step */
};

/* The next step whose send the test must write on conn, doing its
 * protocol's substitutions (a tag, an id). *line is the client line just
 * read (NULL: none), set to NULL once a step has taken it. NULL when the
 * next step waits for another line, the script is done or conn is no
 * longer open (a FAKE_PEER_CLOSE step is done here). */
const struct fake_peer_step *
fake_peer_script_next(struct fake_peer_script *script,
		      struct fake_peer_conn *conn, const char **line);

#endif
