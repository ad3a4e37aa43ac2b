/* http.c: libcurl's multi socket interface on the libevent loop (see
 * http.h).
 *
 * curl tells us which sockets to watch (socket callback) and when to wake
 * it up (timer callback); libevent tells curl when a socket is ready or
 * the timer fired (curl_multi_socket_action), and after each of those we
 * collect the finished transfers (curl_multi_info_read) and fire their
 * callbacks. User callbacks never run inside a curl call, so they may
 * start, abort or destroy anything. The client is reference counted only
 * so that it outlives a dispatch that destroys it. */

#include "http.h"

#include "alloc.h"
#include "loop.h"

#include <curl/curl.h>
#include <event2/event.h>
#include <openssl/crypto.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#define HTTP_USER_AGENT "tributary/" PACKAGE_VERSION
#define HTTP_BODY_INITIAL 4096
#define HTTP_LOG_URL_MAX 256

struct http_socket {
	struct http_socket *prev, *next;
	struct trib_http_client *client;
	curl_socket_t fd;
	struct event *ev;
};

struct trib_http_request {
	struct trib_http_request *prev, *next;
	struct trib_http_client *client;
	CURL *easy;
	bool added;
	enum trib_http_method method;
	char *url;
	char *log_url;
	/* Secret: the form body. */
	char *body;
	size_t body_len;
	char *ca_file;
	struct curl_slist *headers;
	/* Secret: the response so far. */
	char *response;
	size_t response_len, response_alloc, max_size;
	bool too_large;
	long retry_after;
	struct timespec started;
	/* Refused before it started: reported from this event. */
	struct event *early;
	enum trib_error_class early_class;
	char *early_error;
	char *error;
	char errbuf[CURL_ERROR_SIZE];
	trib_http_callback_t *callback;
	void *context;
};

struct trib_http_client {
	struct trib_loop *loop;
	struct trib_loop_hook *hook;
	CURLM *multi;
	struct event *timer;
	struct trib_http_request *requests;
	struct http_socket *sockets;
	unsigned int pending;
	const struct trib_logger *logger;
	char *prefix;
	bool allow_http_loopback;
	bool closing;
	unsigned int refs;
};

static const char *const method_names[] = {
	[TRIB_HTTP_GET] = "GET",
	[TRIB_HTTP_POST] = "POST",
};

/* ---- small helpers ---- */

static void wipe_free(char *data, size_t size)
{
	if (data == NULL)
		return;
	OPENSSL_cleanse(data, size);
	free(data);
}

static unsigned int elapsed_msecs(const struct timespec *since)
{
	struct timespec now;
	long long ms;

	clock_gettime(CLOCK_MONOTONIC, &now);
	ms = (long long)(now.tv_sec - since->tv_sec) * 1000 +
	     (now.tv_nsec - since->tv_nsec) / 1000000;
	return ms < 0 ? 0 : (unsigned int)ms;
}

char *trib_http_url_for_log(const char *url)
{
	const char *auth = strstr(url, "://"), *end, *at;
	size_t len = strcspn(url, "?#"), i;
	char *out;

	/* Drop "user:password@" from the authority. */
	if (auth != NULL && (size_t)(auth - url) < len) {
		auth += 3;
		end = auth + strcspn(auth, "/?#");
		at = memchr(auth, '@', (size_t)(end - auth));
		if (at != NULL) {
			out = trib_strdup_printf(
				"%.*s%.*s", (int)(auth - url), url,
				(int)(len - (size_t)(at + 1 - url)), at + 1);
			goto clean;
		}
	}
	out = trib_strndup(url, len);
clean:
	if (strlen(out) > HTTP_LOG_URL_MAX)
		memcpy(out + HTTP_LOG_URL_MAX - 3, "...", 4);
	for (i = 0; out[i] != '\0'; i++) {
		if ((unsigned char)out[i] < 0x20 ||
		    (unsigned char)out[i] > 0x7e)
			out[i] = '?';
	}
	return out;
}

static bool form_unreserved(unsigned char c)
{
	return (c >= 'A' && c <= 'Z') || (c >= 'a' && c <= 'z') ||
	       (c >= '0' && c <= '9') || c == '-' || c == '.' || c == '_' ||
	       c == '~';
}

static size_t form_encoded_len(const char *s)
{
	size_t len = 0;

	for (; *s != '\0'; s++)
		len += form_unreserved((unsigned char)*s) ? 1 : 3;
	return len;
}

static char *form_put(char *out, const char *s)
{
	static const char hex[] = "0123456789ABCDEF";

	for (; *s != '\0'; s++) {
		unsigned char c = (unsigned char)*s;

		if (form_unreserved(c)) {
			*out++ = (char)c;
		} else {
			*out++ = '%';
			*out++ = hex[c >> 4];
			*out++ = hex[c & 15];
		}
	}
	return out;
}

char *trib_http_form_encode(const char *const *pairs)
{
	size_t len = 1, i;
	char *body, *p;

	for (i = 0; pairs[i] != NULL; i += 2) {
		if (pairs[i + 1] != NULL)
			len += form_encoded_len(pairs[i]) + 1 +
			       form_encoded_len(pairs[i + 1]) + 1;
	}
	body = p = trib_malloc(len);
	for (i = 0; pairs[i] != NULL; i += 2) {
		if (pairs[i + 1] == NULL)
			continue;
		if (p != body)
			*p++ = '&';
		p = form_put(p, pairs[i]);
		*p++ = '=';
		p = form_put(p, pairs[i + 1]);
	}
	*p = '\0';
	return body;
}

long trib_http_retry_after_parse(const char *value, time_t now)
{
	size_t len = strlen(value);
	unsigned long long secs = 0;
	time_t when;
	size_t i;

	while (len > 0 && (value[len - 1] == ' ' || value[len - 1] == '\t'))
		len--;
	while (len > 0 && (*value == ' ' || *value == '\t')) {
		value++;
		len--;
	}
	if (len == 0 || len > 64)
		return -1;
	if (strspn(value, "0123456789") >= len) {
		for (i = 0; i < len; i++) {
			secs = secs * 10 + (unsigned)(value[i] - '0');
			if (secs > TRIB_HTTP_RETRY_AFTER_MAX)
				return TRIB_HTTP_RETRY_AFTER_MAX;
		}
		return (long)secs;
	}
	/* An HTTP date: "Wed, 21 Oct 2015 07:28:00 GMT". curl_getdate()
	 * reads the three formats RFC 9110 allows (and more). It wants a
	 * letter first, a day name; anything else is not a date here. */
	if (!((value[0] >= 'A' && value[0] <= 'Z') ||
	      (value[0] >= 'a' && value[0] <= 'z')))
		return -1;
	{
		char copy[65];

		memcpy(copy, value, len);
		copy[len] = '\0';
		when = curl_getdate(copy, NULL);
	}
	if (when == (time_t)-1)
		return -1;
	if (when <= now)
		return 0;
	if (when - now > TRIB_HTTP_RETRY_AFTER_MAX)
		return TRIB_HTTP_RETRY_AFTER_MAX;
	return (long)(when - now);
}

/* ---- the client's reference count ---- */

static void client_ref(struct trib_http_client *client)
{
	client->refs++;
}

static void client_unref(struct trib_http_client *client)
{
	if (--client->refs > 0)
		return;
	free(client->prefix);
	free(client);
	curl_global_cleanup();
}

/* ---- requests ---- */

static void request_free(struct trib_http_request *req)
{
	if (req->early != NULL)
		event_free(req->early);
	if (req->easy != NULL)
		curl_easy_cleanup(req->easy);
	curl_slist_free_all(req->headers);
	if (req->body != NULL)
		wipe_free(req->body, req->body_len + 1);
	wipe_free(req->response, req->response_alloc);
	free(req->url);
	free(req->log_url);
	free(req->ca_file);
	free(req->early_error);
	free(req->error);
	free(req);
}

/* Out of the client's list and curl's hands; the easy handle stays (its
 * Content-Type is read in the callback). */
static void request_detach(struct trib_http_request *req)
{
	struct trib_http_client *client = req->client;

	if (req->added) {
		curl_multi_remove_handle(client->multi, req->easy);
		req->added = false;
	}
	if (req->prev != NULL)
		req->prev->next = req->next;
	else
		client->requests = req->next;
	if (req->next != NULL)
		req->next->prev = req->prev;
	req->prev = req->next = NULL;
	client->pending--;
}

static void request_report(struct trib_http_request *req,
			   const struct trib_http_response *resp)
{
	struct trib_http_client *client = req->client;
	trib_http_callback_t *callback = req->callback;

	if (resp->error_class == TRIB_OK || resp->status != 0)
		trib_log(client->logger, TRIB_LOG_DEBUG,
			 "%s%s %s: HTTP %ld, %zu bytes, %u ms%s%s",
			 client->prefix, method_names[req->method],
			 req->log_url, resp->status, resp->body_size,
			 resp->elapsed_msecs,
			 resp->error_class == TRIB_OK ? "" : " - ",
			 resp->error_class == TRIB_OK
				 ? ""
				 : trib_error_class_name(resp->error_class));
	else
		trib_log(client->logger, TRIB_LOG_DEBUG,
			 "%s%s %s: failed after %u ms (%s): %s", client->prefix,
			 method_names[req->method], req->log_url,
			 resp->elapsed_msecs,
			 trib_error_class_name(resp->error_class), resp->error);
	req->callback = NULL;
	callback(resp, req->context);
}

static void request_fail(struct trib_http_request *req,
			 enum trib_error_class error_class, const char *cause)
{
	struct trib_http_response resp = {
		.error_class = error_class,
		.retry_after_secs = -1,
		.elapsed_msecs = elapsed_msecs(&req->started),
	};

	request_detach(req);
	req->error = trib_strdup_printf("%s: %s", req->log_url, cause);
	resp.error = req->error;
	request_report(req, &resp);
	request_free(req);
}

static void request_cancel(struct trib_http_request *req)
{
	request_fail(req, TRIB_ERR_CANCELED, "canceled");
}

static enum trib_error_class status_class(long status)
{
	if (status >= 200 && status < 300)
		return TRIB_OK;
	if (status == 429)
		return TRIB_ERR_WAIT;
	if (status >= 500 || status == 408)
		return TRIB_ERR_TEMP;
	return TRIB_ERR_PERM;
}

static enum trib_error_class curl_class(CURLcode code)
{
	switch (code) {
	case CURLE_PEER_FAILED_VERIFICATION:
	case CURLE_SSL_CACERT_BADFILE:
	case CURLE_SSL_CERTPROBLEM:
	case CURLE_SSL_PINNEDPUBKEYNOTMATCH:
	case CURLE_UNSUPPORTED_PROTOCOL:
	case CURLE_URL_MALFORMAT:
	case CURLE_TOO_MANY_REDIRECTS:
		return TRIB_ERR_PERM;
	default:
		return TRIB_ERR_TEMP;
	}
}

static void request_finish(struct trib_http_request *req, CURLcode code)
{
	struct trib_http_response resp = {
		.retry_after_secs = req->retry_after,
		.elapsed_msecs = elapsed_msecs(&req->started),
	};
	char *content_type = NULL;

	request_detach(req);
	curl_easy_getinfo(req->easy, CURLINFO_RESPONSE_CODE, &resp.status);
	if (code == CURLE_OK) {
		curl_easy_getinfo(req->easy, CURLINFO_CONTENT_TYPE,
				  &content_type);
		resp.content_type = content_type;
		resp.body = req->response != NULL ? req->response : "";
		resp.body_size = req->response_len;
		resp.error_class = status_class(resp.status);
		if (resp.error_class != TRIB_OK)
			req->error = trib_strdup_printf(
				"%s: HTTP %ld%s", req->log_url, resp.status,
				resp.status >= 300 && resp.status < 400
					? " (redirects are not followed)"
					: "");
	} else if (req->too_large || code == CURLE_FILESIZE_EXCEEDED) {
		resp.error_class = TRIB_ERR_TEMP;
		req->error = trib_strdup_printf(
			"%s: response larger than %zu bytes: refused",
			req->log_url, req->max_size);
	} else {
		const char *why = req->errbuf[0] != '\0'
					  ? req->errbuf
					  : curl_easy_strerror(code);

		resp.error_class = curl_class(code);
		req->error = trib_strdup_printf(
			"%s: %s%s", req->log_url,
			resp.error_class == TRIB_ERR_PERM &&
					code != CURLE_UNSUPPORTED_PROTOCOL &&
					code != CURLE_URL_MALFORMAT
				? "TLS certificate refused: "
				: "",
			why);
	}
	resp.error = req->error;
	request_report(req, &resp);
	request_free(req);
}

static void early_cb(evutil_socket_t fd, short what, void *context)
{
	struct trib_http_request *req = context;

	(void)fd;
	(void)what;
	request_fail(req, req->early_class, req->early_error);
}

/* ---- driving curl ---- */

static void client_check_done(struct trib_http_client *client)
{
	struct trib_http_request *req;
	CURLMsg *msg;
	CURLcode code;
	int left;

	while (!client->closing &&
	       (msg = curl_multi_info_read(client->multi, &left)) != NULL) {
		if (msg->msg != CURLMSG_DONE)
			continue;
		code = msg->data.result;
		req = NULL;
		curl_easy_getinfo(msg->easy_handle, CURLINFO_PRIVATE, &req);
		request_finish(req, code);
	}
}

static void client_action(struct trib_http_client *client, curl_socket_t fd,
			  int flags)
{
	int running;

	client_ref(client);
	if (!client->closing) {
		curl_multi_socket_action(client->multi, fd, flags, &running);
		client_check_done(client);
	}
	client_unref(client);
}

static void socket_event_cb(evutil_socket_t fd, short what, void *context)
{
	struct http_socket *sock = context;
	int flags = ((what & EV_READ) != 0 ? CURL_CSELECT_IN : 0) |
		    ((what & EV_WRITE) != 0 ? CURL_CSELECT_OUT : 0);

	/* sock may be freed inside: not touched after this. */
	client_action(sock->client, fd, flags);
}

static void timer_event_cb(evutil_socket_t fd, short what, void *context)
{
	(void)fd;
	(void)what;
	client_action(context, CURL_SOCKET_TIMEOUT, 0);
}

static void socket_free(struct trib_http_client *client,
			struct http_socket *sock)
{
	event_free(sock->ev);
	if (sock->prev != NULL)
		sock->prev->next = sock->next;
	else
		client->sockets = sock->next;
	if (sock->next != NULL)
		sock->next->prev = sock->prev;
	free(sock);
}

static int socket_cb(CURL *easy, curl_socket_t fd, int what, void *userp,
		     void *socketp)
{
	struct trib_http_client *client = userp;
	struct http_socket *sock = socketp;
	short events = EV_PERSIST;

	(void)easy;
	if (what == CURL_POLL_REMOVE) {
		if (sock != NULL)
			socket_free(client, sock);
		return 0;
	}
	if (client->loop == NULL)
		return -1;
	if ((what & CURL_POLL_IN) != 0)
		events |= EV_READ;
	if ((what & CURL_POLL_OUT) != 0)
		events |= EV_WRITE;
	if (sock == NULL) {
		sock = trib_calloc(1, sizeof(*sock));
		sock->client = client;
		sock->fd = fd;
		sock->ev = event_new(trib_loop_base(client->loop), fd, events,
				     socket_event_cb, sock);
		sock->next = client->sockets;
		if (client->sockets != NULL)
			client->sockets->prev = sock;
		client->sockets = sock;
		curl_multi_assign(client->multi, fd, sock);
	} else {
		event_del(sock->ev);
		event_assign(sock->ev, trib_loop_base(client->loop), fd, events,
			     socket_event_cb, sock);
	}
	event_add(sock->ev, NULL);
	return 0;
}

static int timer_cb(CURLM *multi, long timeout_ms, void *userp)
{
	struct trib_http_client *client = userp;
	struct timeval tv;

	(void)multi;
	if (client->timer == NULL)
		return 0;
	if (timeout_ms < 0) {
		evtimer_del(client->timer);
		return 0;
	}
	tv.tv_sec = timeout_ms / 1000;
	tv.tv_usec = (timeout_ms % 1000) * 1000;
	evtimer_add(client->timer, &tv);
	return 0;
}

static size_t write_cb(char *data, size_t size, size_t nmemb, void *context)
{
	struct trib_http_request *req = context;
	size_t n = size * nmemb, need, alloc;
	char *grown;

	if (n > req->max_size - req->response_len) {
		req->too_large = true;
		return 0;
	}
	need = req->response_len + n + 1;
	if (need > req->response_alloc) {
		/* Grown by hand, not realloc(): the old block is wiped. */
		alloc = req->response_alloc < HTTP_BODY_INITIAL
				? HTTP_BODY_INITIAL
				: req->response_alloc * 2;
		if (alloc < need)
			alloc = need;
		if (alloc > req->max_size + 1)
			alloc = req->max_size + 1;
		grown = trib_malloc(alloc);
		if (req->response_len > 0)
			memcpy(grown, req->response, req->response_len);
		wipe_free(req->response, req->response_alloc);
		req->response = grown;
		req->response_alloc = alloc;
	}
	memcpy(req->response + req->response_len, data, n);
	req->response_len += n;
	req->response[req->response_len] = '\0';
	return n;
}

static size_t header_cb(char *data, size_t size, size_t nmemb, void *context)
{
	struct trib_http_request *req = context;
	size_t n = size * nmemb, len;
	char value[80];

	/* A new status line (after 100 Continue): forget the old headers. */
	if (n >= 5 && memcmp(data, "HTTP/", 5) == 0) {
		req->retry_after = -1;
		return n;
	}
	if (n > 12 && strncasecmp(data, "Retry-After:", 12) == 0) {
		len = n - 12;
		while (len > 0 && (data[12 + len - 1] == '\r' ||
				   data[12 + len - 1] == '\n'))
			len--;
		if (len < sizeof(value)) {
			memcpy(value, data + 12, len);
			value[len] = '\0';
			req->retry_after =
				trib_http_retry_after_parse(value, time(NULL));
		}
	}
	return n;
}

/* ---- starting requests ---- */

static bool host_is_loopback(const char *host)
{
	return strcmp(host, "127.0.0.1") == 0 || strcmp(host, "[::1]") == 0 ||
	       strcmp(host, "::1") == 0 || strcasecmp(host, "localhost") == 0;
}

/* NULL when the URL may be fetched; else why not. *https_r: the scheme. */
static const char *url_check(const struct trib_http_client *client,
			     const char *url, bool *https_r)
{
	CURLU *u = curl_url();
	char *scheme = NULL, *host = NULL, *user = NULL;
	const char *why = NULL;

	if (u == NULL)
		abort();
	if (curl_url_set(u, CURLUPART_URL, url, 0) != CURLUE_OK ||
	    curl_url_get(u, CURLUPART_SCHEME, &scheme, 0) != CURLUE_OK ||
	    curl_url_get(u, CURLUPART_HOST, &host, 0) != CURLUE_OK) {
		why = "not a valid URL";
	} else if (curl_url_get(u, CURLUPART_USER, &user, 0) == CURLUE_OK) {
		why = "refusing a URL with user info (user:password@)";
	} else if (strcasecmp(scheme, "https") == 0) {
		*https_r = true;
	} else if (strcasecmp(scheme, "http") == 0) {
		*https_r = false;
		if (!client->allow_http_loopback || !host_is_loopback(host))
			why = "refusing plain http: token endpoints must be "
			      "https:// URLs";
	} else {
		why = "refusing a URL that is not https://";
	}
	curl_free(scheme);
	curl_free(host);
	curl_free(user);
	curl_url_cleanup(u);
	return why;
}

static void request_setup(struct trib_http_request *req, bool https,
			  const struct trib_http_request_settings *set)
{
	CURL *easy = curl_easy_init();
	char *accept;

	if (easy == NULL)
		abort();
	req->easy = easy;
	curl_easy_setopt(easy, CURLOPT_URL, req->url);
	curl_easy_setopt(easy, CURLOPT_PRIVATE, req);
	curl_easy_setopt(easy, CURLOPT_NOSIGNAL, 1L);
#if LIBCURL_VERSION_NUM >= 0x075500
	curl_easy_setopt(easy, CURLOPT_PROTOCOLS_STR, https ? "https" : "http");
#else
	curl_easy_setopt(easy, CURLOPT_PROTOCOLS,
			 https ? (long)CURLPROTO_HTTPS : (long)CURLPROTO_HTTP);
#endif
	curl_easy_setopt(easy, CURLOPT_FOLLOWLOCATION, 0L);
	curl_easy_setopt(easy, CURLOPT_SSL_VERIFYPEER, 1L);
	curl_easy_setopt(easy, CURLOPT_SSL_VERIFYHOST, 2L);
	curl_easy_setopt(easy, CURLOPT_SSLVERSION,
			 (long)CURL_SSLVERSION_TLSv1_2);
	if (req->ca_file != NULL)
		curl_easy_setopt(easy, CURLOPT_CAINFO, req->ca_file);
	curl_easy_setopt(easy, CURLOPT_HTTP_VERSION,
			 (long)CURL_HTTP_VERSION_1_1);
	curl_easy_setopt(easy, CURLOPT_TIMEOUT_MS,
			 (long)(set->timeout_msecs != 0
					? set->timeout_msecs
					: TRIB_HTTP_DEFAULT_TIMEOUT_MSECS));
	curl_easy_setopt(
		easy, CURLOPT_CONNECTTIMEOUT_MS,
		(long)(set->connect_timeout_msecs != 0
			       ? set->connect_timeout_msecs
			       : TRIB_HTTP_DEFAULT_CONNECT_TIMEOUT_MSECS));
	curl_easy_setopt(easy, CURLOPT_USERAGENT, HTTP_USER_AGENT);
	curl_easy_setopt(easy, CURLOPT_MAXFILESIZE_LARGE,
			 (curl_off_t)req->max_size);
	curl_easy_setopt(easy, CURLOPT_WRITEFUNCTION, write_cb);
	curl_easy_setopt(easy, CURLOPT_WRITEDATA, req);
	curl_easy_setopt(easy, CURLOPT_HEADERFUNCTION, header_cb);
	curl_easy_setopt(easy, CURLOPT_HEADERDATA, req);
	curl_easy_setopt(easy, CURLOPT_ERRORBUFFER, req->errbuf);
	/* No "Expect: 100-continue" round trip. */
	req->headers = curl_slist_append(req->headers, "Expect:");
	if (set->accept != NULL) {
		accept = trib_strdup_printf("Accept: %s", set->accept);
		req->headers = curl_slist_append(req->headers, accept);
		free(accept);
	}
	if (req->method == TRIB_HTTP_POST) {
		req->headers = curl_slist_append(
			req->headers,
			"Content-Type: application/x-www-form-urlencoded");
		curl_easy_setopt(easy, CURLOPT_POST, 1L);
		curl_easy_setopt(easy, CURLOPT_POSTFIELDSIZE_LARGE,
				 (curl_off_t)req->body_len);
		curl_easy_setopt(easy, CURLOPT_POSTFIELDS, req->body);
	} else {
		curl_easy_setopt(easy, CURLOPT_HTTPGET, 1L);
	}
	if (req->headers == NULL)
		abort();
	curl_easy_setopt(easy, CURLOPT_HTTPHEADER, req->headers);
}

/* Report the refusal from the loop, not from inside the caller. */
static void request_refuse(struct trib_http_request *req,
			   enum trib_error_class error_class, const char *why)
{
	req->early_class = error_class;
	req->early_error = trib_strdup(why);
	req->early = event_new(trib_loop_base(req->client->loop), -1, 0,
			       early_cb, req);
	event_active(req->early, EV_TIMEOUT, 0);
}

struct trib_http_request *
trib_http_request_start(struct trib_http_client *client,
			const struct trib_http_request_settings *set,
			trib_http_callback_t *callback, void *context)
{
	struct trib_http_request *req;
	const char *why;
	bool https = true;

	if (client->closing || client->loop == NULL)
		return NULL;
	req = trib_calloc(1, sizeof(*req));
	req->client = client;
	req->method = set->method;
	req->url = trib_strdup(set->url);
	req->log_url = trib_http_url_for_log(set->url);
	req->ca_file = set->ca_file != NULL ? trib_strdup(set->ca_file) : NULL;
	if (set->method == TRIB_HTTP_POST) {
		req->body = trib_strdup(set->form_body != NULL ? set->form_body
							       : "");
		req->body_len = strlen(req->body);
	}
	req->max_size = set->max_response_size != 0
				? set->max_response_size
				: TRIB_HTTP_DEFAULT_MAX_RESPONSE;
	req->retry_after = -1;
	req->callback = callback;
	req->context = context;
	clock_gettime(CLOCK_MONOTONIC, &req->started);
	req->next = client->requests;
	if (client->requests != NULL)
		client->requests->prev = req;
	client->requests = req;
	client->pending++;

	why = url_check(client, set->url, &https);
	if (why != NULL) {
		request_refuse(req, TRIB_ERR_PERM, why);
		return req;
	}
	request_setup(req, https, set);
	if (curl_multi_add_handle(client->multi, req->easy) != CURLM_OK) {
		request_refuse(req, TRIB_ERR_TEMP,
			       "libcurl refused the transfer");
		return req;
	}
	req->added = true;
	return req;
}

void trib_http_request_abort(struct trib_http_request **request)
{
	struct trib_http_request *req = *request;

	if (req == NULL)
		return;
	*request = NULL;
	request_cancel(req);
}

/* ---- the client ---- */

/* Cancel everything and let go of curl and the loop. The struct stays
 * until the last reference goes. Runs once. */
static void client_teardown(struct trib_http_client *client)
{
	if (client->closing)
		return;
	client->closing = true;
	client_ref(client);
	while (client->requests != NULL)
		request_cancel(client->requests);
	if (client->multi != NULL)
		curl_multi_cleanup(client->multi);
	client->multi = NULL;
	while (client->sockets != NULL)
		socket_free(client, client->sockets);
	if (client->timer != NULL)
		event_free(client->timer);
	client->timer = NULL;
	if (client->hook != NULL)
		trib_loop_remove_destroy_hook(client->loop, &client->hook);
	client->loop = NULL;
	client_unref(client);
}

static void client_loop_destroyed(void *context)
{
	struct trib_http_client *client = context;

	/* The loop freed the hook before calling us. */
	client->hook = NULL;
	trib_log(client->logger, TRIB_LOG_DEBUG,
		 "%sevent loop destroyed: %u HTTP request(s) canceled",
		 client->prefix, client->pending);
	client_teardown(client);
}

struct trib_http_client *
trib_http_client_create(struct trib_loop *loop,
			const struct trib_http_client_settings *set,
			const char **error_r)
{
	struct trib_http_client *client;
	CURLM *multi;

	if (curl_global_init(CURL_GLOBAL_DEFAULT) != CURLE_OK) {
		*error_r = "cannot initialize libcurl";
		return NULL;
	}
	multi = curl_multi_init();
	if (multi == NULL) {
		curl_global_cleanup();
		*error_r = "cannot create a libcurl multi handle";
		return NULL;
	}
	client = trib_calloc(1, sizeof(*client));
	client->refs = 1;
	client->loop = loop;
	client->multi = multi;
	client->logger = set->logger;
	client->prefix = set->name != NULL
				 ? trib_strdup_printf("%s: ", set->name)
				 : trib_strdup("");
	client->allow_http_loopback = set->allow_http_loopback;
	client->timer =
		evtimer_new(trib_loop_base(loop), timer_event_cb, client);
	curl_multi_setopt(multi, CURLMOPT_SOCKETFUNCTION, socket_cb);
	curl_multi_setopt(multi, CURLMOPT_SOCKETDATA, client);
	curl_multi_setopt(multi, CURLMOPT_TIMERFUNCTION, timer_cb);
	curl_multi_setopt(multi, CURLMOPT_TIMERDATA, client);
	client->hook =
		trib_loop_add_destroy_hook(loop, client_loop_destroyed, client);
	return client;
}

void trib_http_client_destroy(struct trib_http_client **_client)
{
	struct trib_http_client *client = *_client;

	if (client == NULL)
		return;
	*_client = NULL;
	client_teardown(client);
	client_unref(client);
}

unsigned int trib_http_client_pending(const struct trib_http_client *client)
{
	return client->pending;
}

struct trib_loop *trib_http_client_loop(const struct trib_http_client *client)
{
	return client->loop;
}

const struct trib_logger *
trib_http_client_logger(const struct trib_http_client *client)
{
	return client->logger;
}
