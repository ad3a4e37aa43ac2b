/* conn.c: TCP + optional TLS, or a UNIX socket, on libevent
 * bufferevents. */

#include "conn.h"

#include "alloc.h"
#include "loop.h"
#include "tls.h"

#include <errno.h>
#include <event2/bufferevent.h>
#include <event2/bufferevent_ssl.h>
#include <event2/buffer.h>
#include <event2/dns.h>
#include <event2/event.h>
#include <event2/util.h>
#include <openssl/err.h>
#include <openssl/ssl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/time.h>
#include <sys/un.h>
#include <unistd.h>

enum conn_state {
	CONN_IDLE,
	CONN_CONNECTING,
	CONN_HANDSHAKE,
	CONN_OPEN,
	CONN_FAILED,
};

struct trib_conn {
	struct trib_loop *loop;
	char *host;
	unsigned int port;
	char *unix_path;
	char *peer_name;
	struct trib_tls_ctx *tls_ctx;
	bool implicit_tls;
	unsigned int connect_timeout_secs;
	unsigned int read_timeout_secs;
	size_t output_lowat;

	const struct trib_conn_callbacks *callbacks;
	void *context;

	enum conn_state state;
	struct bufferevent *tcp; /* the socket */
	struct bufferevent *bev; /* tcp, or the TLS filter over it */
	SSL *ssl;
	char tls_desc[128];
	char error[512];
};

static void conn_event_cb(struct bufferevent *bev, short events, void *ctx);
static void conn_read_cb(struct bufferevent *bev, void *ctx);
static void conn_write_cb(struct bufferevent *bev, void *ctx);

struct trib_conn *trib_conn_create(struct trib_loop *loop,
				   const struct trib_conn_settings *set,
				   const struct trib_conn_callbacks *callbacks,
				   void *context)
{
	struct trib_conn *conn = trib_calloc(1, sizeof(*conn));

	conn->loop = loop;
	conn->host = trib_strdup(set->host != NULL ? set->host : "");
	conn->port = set->port;
	if (set->unix_path != NULL) {
		conn->unix_path = trib_strdup(set->unix_path);
		conn->peer_name = trib_strdup_printf("unix:%s", set->unix_path);
	} else if (strchr(conn->host, ':') != NULL) {
		conn->peer_name =
			trib_strdup_printf("[%s]:%u", conn->host, set->port);
	} else {
		conn->peer_name =
			trib_strdup_printf("%s:%u", conn->host, set->port);
	}
	conn->tls_ctx = set->tls_ctx;
	conn->implicit_tls = set->implicit_tls;
	conn->connect_timeout_secs =
		set->connect_timeout_secs == 0 ? 30 : set->connect_timeout_secs;
	conn->callbacks = callbacks;
	conn->context = context;
	return conn;
}

void trib_conn_destroy(struct trib_conn **_conn)
{
	struct trib_conn *conn = *_conn;

	if (conn == NULL)
		return;
	*_conn = NULL;
	if (conn->bev != NULL)
		bufferevent_free(conn->bev); /* frees tcp and ssl too */
	else if (conn->tcp != NULL)
		bufferevent_free(conn->tcp);
	free(conn->host);
	free(conn->unix_path);
	free(conn->peer_name);
	free(conn);
}

static void conn_set_timeouts(struct trib_conn *conn)
{
	struct timeval tv = { 0, 0 };

	if (conn->bev == NULL)
		return;
	if (conn->state == CONN_CONNECTING || conn->state == CONN_HANDSHAKE) {
		tv.tv_sec = conn->connect_timeout_secs;
		bufferevent_set_timeouts(conn->bev, &tv, &tv);
	} else if (conn->read_timeout_secs > 0) {
		tv.tv_sec = conn->read_timeout_secs;
		bufferevent_set_timeouts(conn->bev, &tv, NULL);
	} else {
		bufferevent_set_timeouts(conn->bev, NULL, NULL);
	}
}

static void conn_fail(struct trib_conn *conn, enum trib_error_class class,
		      const char *fmt, ...) TRIB_ATTR_PRINTF(3, 4);

static void conn_fail(struct trib_conn *conn, enum trib_error_class class,
		      const char *fmt, ...)
{
	char reason[400];
	va_list args;

	if (conn->state == CONN_FAILED)
		return;
	va_start(args, fmt);
	vsnprintf(reason, sizeof(reason), fmt, args);
	va_end(args);
	snprintf(conn->error, sizeof(conn->error), "%s: %s", conn->peer_name,
		 reason);
	conn->state = CONN_FAILED;
	if (conn->bev != NULL)
		bufferevent_disable(conn->bev, EV_READ | EV_WRITE);
	conn->callbacks->failed(class, conn->error, conn->context);
}

static int conn_wrap_tls(struct trib_conn *conn, const char **error_r)
{
	struct event_base *base = trib_loop_base(conn->loop);
	SSL *ssl;

	if (conn->tls_ctx == NULL || conn->unix_path != NULL) {
		*error_r = "no TLS context configured";
		return -1;
	}
	ssl = trib_tls_ssl_new(conn->tls_ctx, conn->host, error_r);
	if (ssl == NULL)
		return -1;
	/* Anything the peer sent in clear before the handshake is dropped:
	 * it must never be read as if it came over TLS (CVE-2011-0411). */
	evbuffer_drain(bufferevent_get_input(conn->tcp),
		       evbuffer_get_length(bufferevent_get_input(conn->tcp)));
	conn->bev = bufferevent_openssl_filter_new(
		base, conn->tcp, ssl, BUFFEREVENT_SSL_CONNECTING,
		BEV_OPT_CLOSE_ON_FREE | BEV_OPT_DEFER_CALLBACKS);
	if (conn->bev == NULL) {
		SSL_free(ssl);
		conn->bev = conn->tcp;
		*error_r = "cannot create the TLS stream";
		return -1;
	}
	conn->ssl = ssl;
	bufferevent_openssl_set_allow_dirty_shutdown(conn->bev, 1);
	conn->state = CONN_HANDSHAKE;
	bufferevent_setcb(conn->bev, conn_read_cb, conn_write_cb, conn_event_cb,
			  conn);
	bufferevent_setwatermark(conn->bev, EV_WRITE, conn->output_lowat, 0);
	conn_set_timeouts(conn);
	bufferevent_enable(conn->bev, EV_READ | EV_WRITE);
	return 0;
}

static void conn_handle_connected(struct trib_conn *conn)
{
	const char *error;

	if (conn->state == CONN_CONNECTING && conn->implicit_tls) {
		if (conn_wrap_tls(conn, &error) < 0)
			conn_fail(conn, TRIB_ERR_PERM, "%s", error);
		return;
	}
	if (conn->state == CONN_HANDSHAKE)
		trib_tls_describe(conn->ssl, conn->tls_desc,
				  sizeof(conn->tls_desc));
	conn->state = CONN_OPEN;
	conn_set_timeouts(conn);
	conn->callbacks->connected(conn->context);
}

static void conn_event_cb(struct bufferevent *bev, short events, void *ctx)
{
	struct trib_conn *conn = ctx;
	char reason[300];
	int err;

	if ((events & BEV_EVENT_CONNECTED) != 0) {
		conn_handle_connected(conn);
		return;
	}
	if ((events & BEV_EVENT_TIMEOUT) != 0) {
		conn_fail(conn, TRIB_ERR_TEMP, "%s timed out",
			  conn->state == CONN_CONNECTING  ? "connect"
			  : conn->state == CONN_HANDSHAKE ? "TLS handshake"
							  : "read");
		return;
	}
	if (conn->state == CONN_HANDSHAKE && conn->ssl != NULL) {
		trib_tls_failure_reason(conn->ssl, reason, sizeof(reason));
		conn_fail(conn,
			  SSL_get_verify_result(conn->ssl) != X509_V_OK
				  ? TRIB_ERR_PERM
				  : TRIB_ERR_TEMP,
			  "%s", reason);
		return;
	}
	if ((events & BEV_EVENT_EOF) != 0) {
		conn_fail(conn, TRIB_ERR_TEMP, "connection closed by server");
		return;
	}
	if (conn->state == CONN_CONNECTING) {
		err = bufferevent_socket_get_dns_error(bev);
		if (err != 0) {
			conn_fail(conn, TRIB_ERR_TEMP, "cannot resolve %s: %s",
				  conn->host, evutil_gai_strerror(err));
			return;
		}
	}
	err = EVUTIL_SOCKET_ERROR();
	if (conn->ssl != NULL && ERR_peek_error() != 0) {
		trib_tls_failure_reason(conn->ssl, reason, sizeof(reason));
		conn_fail(conn, TRIB_ERR_TEMP, "%s", reason);
	} else {
		conn_fail(conn, TRIB_ERR_TEMP, "%s%s",
			  conn->state == CONN_CONNECTING ? "connect failed: "
							 : "connection lost: ",
			  err != 0 ? evutil_socket_error_to_string(err)
				   : "unknown error");
	}
}

static void conn_read_cb(struct bufferevent *bev, void *ctx)
{
	struct trib_conn *conn = ctx;

	(void)bev;
	if (conn->state == CONN_OPEN)
		conn->callbacks->readable(conn->context);
}

static void conn_write_cb(struct bufferevent *bev, void *ctx)
{
	struct trib_conn *conn = ctx;

	(void)bev;
	if (conn->state == CONN_OPEN && conn->callbacks->output_drained != NULL)
		conn->callbacks->output_drained(conn->context);
}

static void conn_connect_unix(struct trib_conn *conn)
{
	union {
		struct sockaddr sa;
		struct sockaddr_un sun;
	} addr;
	size_t len = strlen(conn->unix_path);
	int fd, err;

	if (len >= sizeof(addr.sun.sun_path)) {
		conn_fail(conn, TRIB_ERR_PERM, "socket path too long");
		return;
	}
	memset(&addr, 0, sizeof(addr));
	addr.sun.sun_family = AF_UNIX;
	memcpy(addr.sun.sun_path, conn->unix_path, len + 1);
	fd = socket(AF_UNIX, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
	if (fd < 0) {
		conn_fail(conn, TRIB_ERR_TEMP, "cannot create a socket: %s",
			  evutil_socket_error_to_string(errno));
		return;
	}
	/* A UNIX socket connects at once or fails at once (EAGAIN: the
	 * listener's backlog is full; retry later). */
	if (connect(fd, &addr.sa, sizeof(addr.sun)) < 0 &&
	    errno != EINPROGRESS) {
		err = errno;
		close(fd);
		conn_fail(conn, TRIB_ERR_TEMP, "connect failed: %s",
			  evutil_socket_error_to_string(err));
		return;
	}
	conn->tcp = bufferevent_socket_new(trib_loop_base(conn->loop), fd,
					   BEV_OPT_CLOSE_ON_FREE |
						   BEV_OPT_DEFER_CALLBACKS);
	if (conn->tcp == NULL) {
		close(fd);
		conn_fail(conn, TRIB_ERR_TEMP, "cannot create a socket");
		return;
	}
	conn->bev = conn->tcp;
	conn->state = CONN_CONNECTING;
	bufferevent_setcb(conn->tcp, conn_read_cb, conn_write_cb, conn_event_cb,
			  conn);
	bufferevent_setwatermark(conn->tcp, EV_WRITE, conn->output_lowat, 0);
	conn_set_timeouts(conn);
	bufferevent_enable(conn->tcp, EV_READ | EV_WRITE);
	/* no address: libevent waits for the socket to be writable and
	 * reports BEV_EVENT_CONNECTED */
	if (bufferevent_socket_connect(conn->tcp, NULL, 0) < 0)
		conn_fail(conn, TRIB_ERR_TEMP, "connect failed");
}

void trib_conn_connect(struct trib_conn *conn)
{
	struct event_base *base = trib_loop_base(conn->loop);

	if (conn->unix_path != NULL) {
		conn_connect_unix(conn);
		return;
	}
	conn->tcp = bufferevent_socket_new(
		base, -1, BEV_OPT_CLOSE_ON_FREE | BEV_OPT_DEFER_CALLBACKS);
	if (conn->tcp == NULL) {
		conn_fail(conn, TRIB_ERR_TEMP, "cannot create a socket");
		return;
	}
	conn->bev = conn->tcp;
	conn->state = CONN_CONNECTING;
	bufferevent_setcb(conn->tcp, conn_read_cb, conn_write_cb, conn_event_cb,
			  conn);
	bufferevent_setwatermark(conn->tcp, EV_WRITE, conn->output_lowat, 0);
	conn_set_timeouts(conn);
	bufferevent_enable(conn->tcp, EV_READ | EV_WRITE);
	if (bufferevent_socket_connect_hostname(
		    conn->tcp, trib_loop_dns(conn->loop), AF_UNSPEC, conn->host,
		    (int)conn->port) < 0) {
		/* The event callback reports resolver errors; this is for
		 * immediate failures. */
		if (conn->state == CONN_CONNECTING)
			conn_fail(conn, TRIB_ERR_TEMP, "connect failed: %s",
				  evutil_socket_error_to_string(
					  EVUTIL_SOCKET_ERROR()));
	}
}

int trib_conn_start_tls(struct trib_conn *conn, const char **error_r)
{
	if (conn->state != CONN_OPEN || conn->ssl != NULL) {
		*error_r =
			"STARTTLS on a connection that is not plain and open";
		return -1;
	}
	return conn_wrap_tls(conn, error_r);
}

bool trib_conn_is_tls(const struct trib_conn *conn)
{
	return conn->ssl != NULL && conn->state == CONN_OPEN;
}

const char *trib_conn_tls_description(struct trib_conn *conn)
{
	return conn->ssl != NULL ? conn->tls_desc : "";
}

const char *trib_conn_peer_name(const struct trib_conn *conn)
{
	return conn->peer_name;
}

struct evbuffer *trib_conn_input(struct trib_conn *conn)
{
	return bufferevent_get_input(conn->bev);
}

void trib_conn_write(struct trib_conn *conn, const void *data, size_t size)
{
	if (conn->state == CONN_FAILED || conn->bev == NULL)
		return;
	bufferevent_write(conn->bev, data, size);
}

void trib_conn_write_buffer(struct trib_conn *conn, struct evbuffer *data)
{
	if (conn->state == CONN_FAILED || conn->bev == NULL) {
		evbuffer_drain(data, evbuffer_get_length(data));
		return;
	}
	bufferevent_write_buffer(conn->bev, data);
}

size_t trib_conn_output_pending(struct trib_conn *conn)
{
	return conn->bev == NULL
		       ? 0
		       : evbuffer_get_length(bufferevent_get_output(conn->bev));
}

void trib_conn_set_read_timeout(struct trib_conn *conn, unsigned int secs)
{
	conn->read_timeout_secs = secs;
	if (conn->state == CONN_OPEN)
		conn_set_timeouts(conn);
}

void trib_conn_set_reading(struct trib_conn *conn, bool on)
{
	if (conn->bev == NULL || conn->state == CONN_FAILED)
		return;
	if (on)
		bufferevent_enable(conn->bev, EV_READ);
	else
		bufferevent_disable(conn->bev, EV_READ);
}

void trib_conn_set_output_lowat(struct trib_conn *conn, size_t lowat)
{
	conn->output_lowat = lowat;
	if (conn->bev != NULL)
		bufferevent_setwatermark(conn->bev, EV_WRITE, lowat, 0);
}
