#ifndef TRIB_HTTP_H
#define TRIB_HTTP_H

/* http.h: a small HTTPS client on the event loop, for OAuth token
 * endpoints: libcurl's multi socket interface driven by libevent events,
 * so a slow endpoint never stalls the other accounts.
 *
 * One request object per GET or POST (form body). Its callback fires
 * exactly once: with the response, or with an error class (TEMP for
 * network trouble, timeouts and 5xx; WAIT for 429; PERM for other 4xx,
 * redirects, refused URLs and certificates; CANCELED when the request is
 * aborted, or the client or the loop is destroyed under it).
 *
 * Policy, the same for every request: HTTPS only (plain http only to
 * 127.0.0.1, ::1 or localhost, and only when the client allows it: a
 * test setting), certificates and host names always verified (system
 * store, or a CA file per request), TLS 1.2 or newer, no redirects
 * followed, no user:password in URLs, a response size ceiling (the
 * transfer is aborted past it, never buffered whole), a total and a
 * connect timeout, User-Agent "tributary/<version>".
 *
 * Secrets: request and response bodies are never logged and are wiped
 * (OPENSSL_cleanse) before they are freed. Debug lines show the method,
 * the URL without its query string, the status, the size and the time.
 * (libcurl's and OpenSSL's own I/O buffers are outside our reach.)
 *
 * Owns: the curl multi handle, its events, the requests in flight.
 * Borrows: the loop and the logger, which must outlive the client; if
 * the loop is destroyed first, its destroy hook cancels every request
 * and the client can then only be destroyed. */

#include "error.h"
#include "log.h"

#include <stdbool.h>
#include <stddef.h>
#include <time.h>

struct trib_loop;
struct trib_http_client;
struct trib_http_request;

/* Defaults for the request settings below. */
#define TRIB_HTTP_DEFAULT_MAX_RESPONSE (64 * 1024)
#define TRIB_HTTP_DEFAULT_TIMEOUT_MSECS 30000
#define TRIB_HTTP_DEFAULT_CONNECT_TIMEOUT_MSECS 10000
/* Retry-After values are clamped to this many seconds. */
#define TRIB_HTTP_RETRY_AFTER_MAX (24 * 3600)

struct trib_http_client_settings {
	/* Prefix of log lines, e.g. "alice/work"; NULL: none. */
	const char *name;
	const struct trib_logger *logger;
	/* Tests only: allow plain http:// to 127.0.0.1, ::1 and localhost.
	 * Everything else is https:// whatever this says. */
	bool allow_http_loopback;
};

enum trib_http_method {
	TRIB_HTTP_GET,
	TRIB_HTTP_POST,
};

struct trib_http_request_settings {
	enum trib_http_method method;
	const char *url;
	/* POST: the application/x-www-form-urlencoded body (see
	 * trib_http_form_encode()), copied and wiped after use. */
	const char *form_body;
	/* PEM file of trusted CAs; NULL = the system store. */
	const char *ca_file;
	/* The Accept header, e.g. "application/json"; NULL: none. */
	const char *accept;
	/* 0 = the defaults above. */
	size_t max_response_size;
	unsigned int timeout_msecs;
	unsigned int connect_timeout_msecs;
};

struct trib_http_response {
	/* The HTTP status, 0 when no response arrived. */
	long status;
	/* TRIB_OK for 2xx; else what to do next. */
	enum trib_error_class error_class;
	/* One line naming the URL (without query) and the cause, NULL when
	 * OK, e.g. "https://login.example/token: HTTP 503". */
	const char *error;
	/* The whole body (NUL-terminated, body[body_size] == '\0'), also for
	 * 4xx and 5xx answers; NULL when no complete body arrived (network
	 * failure, timeout, size ceiling). Secret: never log it. */
	const char *body;
	size_t body_size;
	/* Content-Type, or NULL. */
	const char *content_type;
	/* Retry-After of the answer in seconds (from seconds or an HTTP
	 * date, clamped to TRIB_HTTP_RETRY_AFTER_MAX), -1 when absent or
	 * unreadable. */
	long retry_after_secs;
	/* Milliseconds from start to finish. */
	unsigned int elapsed_msecs;
};

/* The response is valid only during the callback. */
typedef void trib_http_callback_t(const struct trib_http_response *response,
				  void *context);

/* Returns NULL with *error_r set when libcurl cannot start. */
struct trib_http_client *
trib_http_client_create(struct trib_loop *loop,
			const struct trib_http_client_settings *set,
			const char **error_r);
/* Cancels the requests in flight (their callbacks fire with CANCELED
 * before this returns) and frees everything. Safe inside a callback. */
void trib_http_client_destroy(struct trib_http_client **client);

/* Start a request. The callback fires later, from the loop, never from
 * inside this call: also when the URL is refused at once. Returns NULL
 * (and no callback fires) only when the client's loop is gone or the
 * client is being destroyed. */
struct trib_http_request *
trib_http_request_start(struct trib_http_client *client,
			const struct trib_http_request_settings *set,
			trib_http_callback_t *callback, void *context);
/* The callback fires with CANCELED before this returns. Must not be
 * called from the request's own callback. NULL is fine. */
void trib_http_request_abort(struct trib_http_request **request);

/* Requests in flight. */
unsigned int trib_http_client_pending(const struct trib_http_client *client);
struct trib_loop *trib_http_client_loop(const struct trib_http_client *client);
const struct trib_logger *
trib_http_client_logger(const struct trib_http_client *client);

/* An application/x-www-form-urlencoded body from name/value pairs:
 * pairs = { name1, value1, name2, value2, ..., NULL }; a pair whose value
 * is NULL is left out. Every byte outside ALPHA / DIGIT / "-._~" is
 * percent-encoded. One exact allocation (no copies of secrets left in
 * freed memory): free it with trib_secret_free(). */
char *trib_http_form_encode(const char *const *pairs);

/* A Retry-After value: delta-seconds or an HTTP date (relative to now).
 * Returns seconds (a date in the past gives 0), clamped to
 * TRIB_HTTP_RETRY_AFTER_MAX, or -1 when it is neither. */
long trib_http_retry_after_parse(const char *value, time_t now);

/* "https://host:port/path" of url: the query string, fragment and any
 * user info removed (for log lines and errors). malloc()ed. */
char *trib_http_url_for_log(const char *url);

#endif
