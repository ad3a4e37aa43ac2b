/* authorize-loopback.c: the loopback redirect receiver (see
 * authorize-loopback.h). */

#include "authorize-loopback.h"

#include "alloc.h"
#include "fileio.h"
#include "loop.h"

#include <arpa/inet.h>
#include <errno.h>
#include <event2/buffer.h>
#include <event2/bufferevent.h>
#include <event2/event.h>
#include <event2/listener.h>
#include <netinet/in.h>
#include <openssl/crypto.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>

#define LOOPBACK_MAX_REQUEST 8192
#define LOOPBACK_MAX_CONNS 8
#define LOOPBACK_BIND_TRIES 16

struct loopback_conn {
	struct loopback_conn *next;
	struct auth_loopback *lb;
	struct bufferevent *bev;
	/* The answer is written: free once it has left. */
	bool closing;
	/* This request ends the wait: fire the callback after the answer. */
	bool final;
};

struct auth_loopback {
	struct trib_loop *loop;
	struct evconnlistener *v4, *v6;
	unsigned int port;
	char *state;
	auth_loopback_callback_t *callback;
	void *context;
	struct loopback_conn *conns;
	unsigned int conn_count;
	bool fired;

	enum auth_loopback_status status;
	char *code;	  /* secret */
	char *error_code; /* sanitized */
	char *error;
};

static const char page_ok[] =
	"<!DOCTYPE html><html><head><meta charset=\"utf-8\">"
	"<title>Tributary</title></head><body><p>Tributary has the "
	"authorization. You can close this tab and return to the "
	"terminal.</p></body></html>\n";
static const char page_fail[] =
	"<!DOCTYPE html><html><head><meta charset=\"utf-8\">"
	"<title>Tributary</title></head><body><p>The authorization did not "
	"succeed: see the terminal.</p></body></html>\n";
static const char page_404[] =
	"<!DOCTYPE html><html><body><p>Not found.</p></body></html>\n";

char *auth_query_param(const char *query, const char *name)
{
	size_t name_len = strlen(name);
	const char *p = query;

	while (p != NULL && *p != '\0') {
		const char *end = strchr(p, '&');
		size_t len = end != NULL ? (size_t)(end - p) : strlen(p);

		if (len > name_len && strncmp(p, name, name_len) == 0 &&
		    p[name_len] == '=') {
			const char *v = p + name_len + 1;
			size_t vlen = len - name_len - 1, o = 0;
			char *out = trib_malloc(vlen + 1);

			for (size_t i = 0; i < vlen; i++) {
				int hi, lo;

				if (v[i] == '+') {
					out[o++] = ' ';
				} else if (v[i] != '%') {
					out[o++] = v[i];
				} else if (i + 2 < vlen &&
					   (hi = trib_hex_value(v[i + 1])) >=
						   0 &&
					   (lo = trib_hex_value(v[i + 2])) >=
						   0) {
					out[o++] = (char)(hi * 16 + lo);
					i += 2;
				} else {
					out[o] = '\0';
					trib_secret_free(&out);
					return NULL;
				}
			}
			out[o] = '\0';
			if (strlen(out) != o) {
				/* an encoded NUL */
				trib_secret_free(&out);
				return NULL;
			}
			return out;
		}
		p = end != NULL ? end + 1 : NULL;
	}
	return NULL;
}

static void conn_free(struct loopback_conn *conn)
{
	struct auth_loopback *lb = conn->lb;

	for (struct loopback_conn **c = &lb->conns; *c != NULL;
	     c = &(*c)->next) {
		if (*c == conn) {
			*c = conn->next;
			break;
		}
	}
	lb->conn_count--;
	bufferevent_free(conn->bev);
	free(conn);
}

static void loopback_fire(struct auth_loopback *lb)
{
	lb->callback(lb->status, lb->code, lb->error_code, lb->error,
		     lb->context);
}

static void conn_answer(struct loopback_conn *conn, int status,
			const char *reason, const char *page)
{
	struct evbuffer *out = bufferevent_get_output(conn->bev);

	evbuffer_add_printf(out,
			    "HTTP/1.1 %d %s\r\n"
			    "Content-Type: text/html; charset=utf-8\r\n"
			    "Content-Length: %zu\r\n"
			    "Cache-Control: no-store\r\n"
			    "Referrer-Policy: no-referrer\r\n"
			    "Connection: close\r\n\r\n%s",
			    status, reason, strlen(page), page);
	conn->closing = true;
	bufferevent_disable(conn->bev, EV_READ);
}

static void conn_written(struct bufferevent *bev, void *context)
{
	struct loopback_conn *conn = context;
	struct auth_loopback *lb = conn->lb;
	bool final = conn->final;

	(void)bev;
	if (!conn->closing)
		return;
	conn_free(conn);
	if (final)
		loopback_fire(lb);
}

/* The request line's target ("/?code=..&state=.."): decide. */
static void conn_request(struct loopback_conn *conn, const char *target)
{
	struct auth_loopback *lb = conn->lb;
	const char *query = strchr(target, '?');
	size_t path_len =
		query != NULL ? (size_t)(query - target) : strlen(target);
	char *state, *code, *error;

	if (path_len != 1 || target[0] != '/' || lb->fired) {
		conn_answer(conn, 404, "Not Found", page_404);
		return;
	}
	query = query != NULL ? query + 1 : "";
	state = auth_query_param(query, "state");
	code = auth_query_param(query, "code");
	error = auth_query_param(query, "error");
	if (state == NULL && code == NULL && error == NULL) {
		/* a browser's probe of / without parameters: keep waiting */
		conn_answer(conn, 404, "Not Found", page_404);
		return;
	}
	lb->fired = true;
	conn->final = true;
	if (state == NULL || strlen(state) != strlen(lb->state) ||
	    CRYPTO_memcmp(state, lb->state, strlen(state)) != 0) {
		lb->status = AUTH_LOOPBACK_REFUSED;
		lb->error = trib_strdup(
			"the redirect's state does not match the one sent: "
			"refused (a redirect meant for another sign-in, or a "
			"forged one)");
	} else if (error != NULL) {
		lb->status = AUTH_LOOPBACK_PROVIDER_ERROR;
		lb->error_code = trib_strndup(error, strnlen(error, 64));
		for (char *p = lb->error_code; *p != '\0'; p++) {
			if (*p < 0x21 || *p > 0x7e)
				*p = '?';
		}
		lb->error = trib_strdup_printf(
			"the provider redirected with an error (%s)",
			lb->error_code);
	} else if (code == NULL || code[0] == '\0') {
		lb->status = AUTH_LOOPBACK_REFUSED;
		lb->error = trib_strdup("the redirect carries no code");
	} else {
		lb->status = AUTH_LOOPBACK_CODE;
		lb->code = code;
		code = NULL;
	}
	conn_answer(conn, lb->status == AUTH_LOOPBACK_CODE ? 200 : 400,
		    lb->status == AUTH_LOOPBACK_CODE ? "OK" : "Bad Request",
		    lb->status == AUTH_LOOPBACK_CODE ? page_ok : page_fail);
	trib_secret_free(&state);
	trib_secret_free(&code);
	trib_secret_free(&error);
}

static void conn_read(struct bufferevent *bev, void *context)
{
	struct loopback_conn *conn = context;
	struct evbuffer *in = bufferevent_get_input(bev);
	struct evbuffer_ptr end;
	char *line, *target, *sp;
	size_t len;

	if (conn->closing)
		return;
	end = evbuffer_search(in, "\r\n\r\n", 4, NULL);
	if (end.pos < 0) {
		if (evbuffer_get_length(in) > LOOPBACK_MAX_REQUEST)
			conn_answer(conn, 431,
				    "Request Header Fields Too Large",
				    page_fail);
		return;
	}
	line = evbuffer_readln(in, &len, EVBUFFER_EOL_CRLF);
	if (line == NULL || strncmp(line, "GET ", 4) != 0 ||
	    (sp = strchr(line + 4, ' ')) == NULL ||
	    strncmp(sp, " HTTP/1.", 8) != 0) {
		if (line != NULL)
			trib_secret_free(&line);
		conn_answer(conn, 400, "Bad Request", page_fail);
		return;
	}
	*sp = '\0';
	target = line + 4;
	conn_request(conn, target);
	OPENSSL_cleanse(line, len);
	free(line);
	evbuffer_drain(in, evbuffer_get_length(in));
}

static void conn_event(struct bufferevent *bev, short what, void *context)
{
	struct loopback_conn *conn = context;
	struct auth_loopback *lb = conn->lb;
	bool final = conn->final;

	(void)bev;
	if ((what & (BEV_EVENT_EOF | BEV_EVENT_ERROR | BEV_EVENT_TIMEOUT)) == 0)
		return;
	conn_free(conn);
	if (final)
		loopback_fire(lb);
}

static void loopback_accept(struct evconnlistener *listener, evutil_socket_t fd,
			    struct sockaddr *addr, int addr_len, void *context)
{
	struct auth_loopback *lb = context;
	struct timeval timeout = { 30, 0 };
	struct loopback_conn *conn;

	(void)listener;
	(void)addr;
	(void)addr_len;
	if (lb->conn_count >= LOOPBACK_MAX_CONNS) {
		evutil_closesocket(fd);
		return;
	}
	conn = trib_calloc(1, sizeof(*conn));
	conn->lb = lb;
	conn->bev = bufferevent_socket_new(trib_loop_base(lb->loop), fd,
					   BEV_OPT_CLOSE_ON_FREE);
	bufferevent_setcb(conn->bev, conn_read, conn_written, conn_event, conn);
	bufferevent_set_timeouts(conn->bev, &timeout, &timeout);
	bufferevent_enable(conn->bev, EV_READ | EV_WRITE);
	conn->next = lb->conns;
	lb->conns = conn;
	lb->conn_count++;
}

union loopback_addr {
	struct sockaddr sa;
	struct sockaddr_in sin;
	struct sockaddr_in6 sin6;
};

static struct evconnlistener *listen_on(struct auth_loopback *lb, int family,
					unsigned int port)
{
	union loopback_addr addr;
	socklen_t len;
	unsigned int flags = LEV_OPT_CLOSE_ON_FREE | LEV_OPT_CLOSE_ON_EXEC;

	memset(&addr, 0, sizeof(addr));
	if (family == AF_INET) {
		addr.sin.sin_family = AF_INET;
		addr.sin.sin_port = htons((uint16_t)port);
		addr.sin.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
		len = sizeof(addr.sin);
	} else {
		addr.sin6.sin6_family = AF_INET6;
		addr.sin6.sin6_port = htons((uint16_t)port);
		addr.sin6.sin6_addr = in6addr_loopback;
		len = sizeof(addr.sin6);
		flags |= LEV_OPT_BIND_IPV6ONLY;
	}
	return evconnlistener_new_bind(trib_loop_base(lb->loop),
				       loopback_accept, lb, flags, 4, &addr.sa,
				       (int)len);
}

struct auth_loopback *auth_loopback_create(struct trib_loop *loop,
					   const char *state,
					   auth_loopback_callback_t *callback,
					   void *context, const char **error_r)
{
	static char error[256];
	struct auth_loopback *lb = trib_calloc(1, sizeof(*lb));
	union loopback_addr addr;
	socklen_t len;

	lb->loop = loop;
	lb->state = trib_strdup(state);
	lb->callback = callback;
	lb->context = context;
	for (unsigned int i = 0; i < LOOPBACK_BIND_TRIES; i++) {
		lb->v4 = listen_on(lb, AF_INET, 0);
		if (lb->v4 == NULL)
			break;
		len = sizeof(addr);
		if (getsockname(evconnlistener_get_fd(lb->v4), &addr.sa, &len) <
		    0)
			break;
		lb->port = ntohs(addr.sin.sin_port);
		lb->v6 = listen_on(lb, AF_INET6, lb->port);
		if (lb->v6 != NULL || errno != EADDRINUSE)
			break;
		/* ::1 has this port taken: another random one */
		evconnlistener_free(lb->v4);
		lb->v4 = NULL;
	}
	if (lb->v4 == NULL) {
		snprintf(error, sizeof(error),
			 "cannot listen on 127.0.0.1 for the redirect: %s",
			 strerror(errno));
		*error_r = error;
		auth_loopback_destroy(&lb);
		return NULL;
	}
	return lb;
}

unsigned int auth_loopback_port(const struct auth_loopback *lb)
{
	return lb->port;
}

bool auth_loopback_has_ipv6(const struct auth_loopback *lb)
{
	return lb->v6 != NULL;
}

void auth_loopback_destroy(struct auth_loopback **_lb)
{
	struct auth_loopback *lb = *_lb;

	if (lb == NULL)
		return;
	*_lb = NULL;
	while (lb->conns != NULL)
		conn_free(lb->conns);
	if (lb->v4 != NULL)
		evconnlistener_free(lb->v4);
	if (lb->v6 != NULL)
		evconnlistener_free(lb->v6);
	trib_secret_free(&lb->state);
	trib_secret_free(&lb->code);
	free(lb->error_code);
	free(lb->error);
	free(lb);
}
