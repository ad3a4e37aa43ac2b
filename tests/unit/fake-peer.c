/* fake-peer.c: the listener and connections under the unit tests' fake
 * servers (fake-peer.h). */

#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>

#include <cmocka.h>

#include "fake-peer.h"

#include "alloc.h"
#include "loop.h"

#include <arpa/inet.h>
#include <event2/buffer.h>
#include <event2/bufferevent.h>
#include <event2/event.h>
#include <event2/listener.h>
#include <netinet/in.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <unistd.h>

#define FAKE_PEER_TRANSCRIPT_MAX 16384
#define FAKE_PEER_MAX_CONNS 16

struct fake_peer_conn {
	struct fake_peer *peer;
	struct bufferevent *bev; /* NULL once closed */
	bool closing, hung_up;
};

struct fake_peer {
	struct trib_loop *loop;
	const struct fake_peer_callbacks *callbacks;
	void *context;
	struct evconnlistener *listener;
	unsigned int port;
	char dir[64], unix_path[108];

	struct fake_peer_conn conns[FAKE_PEER_MAX_CONNS];
	unsigned int conn_count;

	size_t transcript_len;
	char transcript[FAKE_PEER_TRANSCRIPT_MAX];
};

void fake_peer_conn_close(struct fake_peer_conn *conn)
{
	if (conn->bev != NULL) {
		bufferevent_free(conn->bev);
		conn->bev = NULL;
	}
}

static void fake_peer_read_cb(struct bufferevent *bev, void *ctx)
{
	struct fake_peer_conn *conn = ctx;

	(void)bev;
	if (fake_peer_conn_is_open(conn))
		conn->peer->callbacks->input(conn, conn->peer->context);
}

/* called when the output has drained */
static void fake_peer_write_cb(struct bufferevent *bev, void *ctx)
{
	struct fake_peer_conn *conn = ctx;

	(void)bev;
	if (conn->closing)
		fake_peer_conn_close(conn);
}

static void fake_peer_event_cb(struct bufferevent *bev, short events, void *ctx)
{
	struct fake_peer_conn *conn = ctx;

	(void)bev;
	(void)events;
	conn->hung_up = true;
	fake_peer_conn_close(conn);
}

static void fake_peer_accept(struct evconnlistener *listener,
			     evutil_socket_t fd, struct sockaddr *addr,
			     int socklen, void *ctx)
{
	struct fake_peer *peer = ctx;
	struct fake_peer_conn *conn;

	(void)listener;
	(void)addr;
	(void)socklen;
	assert_true(peer->conn_count < FAKE_PEER_MAX_CONNS);
	conn = &peer->conns[peer->conn_count++];
	conn->peer = peer;
	conn->bev = bufferevent_socket_new(trib_loop_base(peer->loop), fd,
					   BEV_OPT_CLOSE_ON_FREE);
	bufferevent_setcb(conn->bev, fake_peer_read_cb, fake_peer_write_cb,
			  fake_peer_event_cb, conn);
	bufferevent_enable(conn->bev, EV_READ | EV_WRITE);
	if (peer->callbacks->accepted != NULL)
		peer->callbacks->accepted(conn, peer->context);
}

static socklen_t fake_peer_unix_addr(struct fake_peer *peer,
				     const char *unix_name,
				     struct sockaddr_un *sun)
{
	int len;

	snprintf(peer->dir, sizeof(peer->dir), "/tmp/fake-peer.XXXXXX");
	assert_non_null(mkdtemp(peer->dir));
	len = snprintf(peer->unix_path, sizeof(peer->unix_path), "%s/%s",
		       peer->dir, unix_name);
	assert_true(len > 0 && (size_t)len < sizeof(sun->sun_path));
	sun->sun_family = AF_UNIX;
	memcpy(sun->sun_path, peer->unix_path, (size_t)len + 1);
	return sizeof(*sun);
}

struct fake_peer *fake_peer_create(struct trib_loop *loop,
				   const char *unix_name,
				   const struct fake_peer_callbacks *callbacks,
				   void *context)
{
	struct fake_peer *peer = trib_calloc(1, sizeof(*peer));
	union {
		struct sockaddr sa;
		struct sockaddr_in sin;
		struct sockaddr_un sun;
	} addr;
	socklen_t len;

	peer->loop = loop;
	peer->callbacks = callbacks;
	peer->context = context;
	memset(&addr, 0, sizeof(addr));
	if (unix_name != NULL) {
		len = fake_peer_unix_addr(peer, unix_name, &addr.sun);
	} else {
		addr.sin.sin_family = AF_INET;
		addr.sin.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
		len = sizeof(addr.sin);
	}
	peer->listener = evconnlistener_new_bind(
		trib_loop_base(loop), fake_peer_accept, peer,
		LEV_OPT_CLOSE_ON_FREE | LEV_OPT_REUSEABLE, 8, &addr.sa,
		(int)len);
	assert_non_null(peer->listener);
	if (unix_name == NULL) {
		len = sizeof(addr);
		assert_int_equal(
			getsockname(evconnlistener_get_fd(peer->listener),
				    &addr.sa, &len),
			0);
		peer->port = ntohs(addr.sin.sin_port);
	}
	return peer;
}

void fake_peer_destroy(struct fake_peer **_peer)
{
	struct fake_peer *peer = *_peer;

	*_peer = NULL;
	for (unsigned int i = 0; i < peer->conn_count; i++)
		fake_peer_conn_close(&peer->conns[i]);
	evconnlistener_free(peer->listener);
	if (peer->dir[0] != '\0') {
		unlink(peer->unix_path);
		rmdir(peer->dir);
	}
	free(peer);
}

unsigned int fake_peer_port(const struct fake_peer *peer)
{
	return peer->port;
}

const char *fake_peer_unix_path(const struct fake_peer *peer)
{
	return peer->unix_path;
}

const char *fake_peer_dir(const struct fake_peer *peer)
{
	return peer->dir;
}

unsigned int fake_peer_conn_count(const struct fake_peer *peer)
{
	return peer->conn_count;
}

struct fake_peer_conn *fake_peer_get_conn(struct fake_peer *peer,
					  unsigned int n)
{
	assert_true(n < peer->conn_count);
	return &peer->conns[n];
}

void fake_peer_transcript_add(struct fake_peer *peer, const char *line)
{
	size_t len = strlen(line);

	/* line, "|" and the NUL */
	assert_true(len + 2 <= sizeof(peer->transcript) - peer->transcript_len);
	memcpy(peer->transcript + peer->transcript_len, line, len);
	peer->transcript_len += len;
	peer->transcript[peer->transcript_len++] = '|';
	peer->transcript[peer->transcript_len] = '\0';
}

const char *fake_peer_transcript(const struct fake_peer *peer)
{
	return peer->transcript;
}

bool fake_peer_conn_is_open(const struct fake_peer_conn *conn)
{
	return conn->bev != NULL && !conn->closing;
}

bool fake_peer_conn_hung_up(const struct fake_peer_conn *conn)
{
	return conn->hung_up;
}

struct evbuffer *fake_peer_conn_input(struct fake_peer_conn *conn)
{
	return conn->bev == NULL ? NULL : bufferevent_get_input(conn->bev);
}

void fake_peer_conn_write(struct fake_peer_conn *conn, const void *data,
			  size_t size)
{
	if (conn->bev != NULL)
		bufferevent_write(conn->bev, data, size);
}

void fake_peer_conn_send(struct fake_peer_conn *conn, const char *text)
{
	fake_peer_conn_write(conn, text, strlen(text));
}

void fake_peer_conn_close_when_flushed(struct fake_peer_conn *conn)
{
	if (conn->bev == NULL)
		return;
	conn->closing = true;
	if (evbuffer_get_length(bufferevent_get_output(conn->bev)) == 0)
		fake_peer_conn_close(conn);
}

const struct fake_peer_step *
fake_peer_script_next(struct fake_peer_script *script,
		      struct fake_peer_conn *conn, const char **line)
{
	while (script->pos < script->count && fake_peer_conn_is_open(conn)) {
		const struct fake_peer_step *st = &script->steps[script->pos];

		if (st->expect != NULL) {
			if (*line == NULL ||
			    strncmp(*line, st->expect, strlen(st->expect)) != 0)
				return NULL;
			*line = NULL; /* one line satisfies one expect */
		}
		script->pos++;
		if (st->send == FAKE_PEER_CLOSE) {
			fake_peer_conn_close_when_flushed(conn);
			return NULL;
		}
		if (st->send != NULL)
			return st;
	}
	return NULL;
}
