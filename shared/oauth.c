/* oauth.c: token endpoint requests on the HTTP client (see oauth.h): one
 * request object per POST, and the device code poller. */

#include "oauth.h"

#include "account.h"
#include "alloc.h"
#include "loop.h"

#include <event2/event.h>
#include <stdlib.h>
#include <string.h>

#define POLL_BACKOFF_BASE_MSECS 1000
#define POLL_BACKOFF_CAP_MSECS 60000
#define SLOW_DOWN_SECS 5
#define MAX_PAIRS 24
#define MAX_SENT 4

/* A request's own copy of the settings. */
struct oauth_conf {
	char *name;
	char *provider, *user, *account;
	char *token_url, *device_url;
	char *client_id;
	char *client_secret; /* secret */
	enum trib_client_secret_rule client_secret_rule;
	char *scope;
	char *ca_file;
	unsigned int timeout_msecs, connect_timeout_msecs;
	time_t (*clock)(void);
};

struct trib_oauth_request {
	/* Used only while the HTTP request is in flight: destroying the
	 * client cancels that. */
	struct trib_http_client *http;
	const struct trib_logger *logger;
	struct oauth_conf conf;
	enum trib_oauth_grant grant;
	char *log_url;
	struct trib_http_request *http_req;
	/* Refused before anything was sent: reported from this event. */
	struct event *early;
	enum trib_error_class early_class;
	char *early_error;
	/* Secrets sent (refresh token, code, verifier, device code). */
	char *sent[MAX_SENT];
	/* What errors must never show: the above and the client secret. */
	const char *secrets[MAX_SENT + 2];
	/* The refresh token sent, to tell a rotation (points into sent). */
	const char *sent_refresh;
	time_t sent_at;
	trib_oauth_callback_t *callback;
	void *context;
};

struct trib_oauth_device_poll {
	struct trib_http_client *http;
	const struct trib_logger *logger;
	struct oauth_conf conf;
	char *device_code; /* secret */
	unsigned int interval;
	unsigned int expires_in;
	struct timespec deadline;
	struct event *timer;
	struct trib_loop *loop;
	struct trib_loop_hook *hook;
	struct trib_oauth_request *req;
	unsigned int failures;
	/* The deadline comes before the next poll would. */
	bool expire_next;
	char *last_error;
	trib_oauth_callback_t *callback;
	void *context;
};

/* ---- settings ---- */

static char *dup_or_null(const char *s)
{
	return s != NULL ? trib_strdup(s) : NULL;
}

static void conf_copy(struct oauth_conf *conf,
		      const struct trib_oauth_settings *set)
{
	conf->name =
		set->name != NULL ? trib_strdup(set->name)
		: set->user != NULL && set->account != NULL
			? trib_strdup_printf("%s/%s", set->user, set->account)
			: NULL;
	conf->provider = dup_or_null(set->provider);
	conf->user = dup_or_null(set->user);
	conf->account = dup_or_null(set->account);
	conf->token_url = dup_or_null(set->token_url);
	conf->device_url = dup_or_null(set->device_url);
	conf->client_id = dup_or_null(set->client_id);
	conf->client_secret = dup_or_null(set->client_secret);
	conf->client_secret_rule = set->client_secret_rule;
	conf->scope = dup_or_null(set->scope);
	conf->ca_file = dup_or_null(set->ca_file);
	conf->timeout_msecs = set->timeout_msecs;
	conf->connect_timeout_msecs = set->connect_timeout_msecs;
	conf->clock = set->clock;
}

static void conf_view(const struct oauth_conf *conf,
		      struct trib_oauth_settings *set_r)
{
	memset(set_r, 0, sizeof(*set_r));
	set_r->name = conf->name;
	set_r->provider = conf->provider;
	set_r->user = conf->user;
	set_r->account = conf->account;
	set_r->token_url = conf->token_url;
	set_r->device_url = conf->device_url;
	set_r->client_id = conf->client_id;
	set_r->client_secret = conf->client_secret;
	set_r->client_secret_rule = conf->client_secret_rule;
	set_r->scope = conf->scope;
	set_r->ca_file = conf->ca_file;
	set_r->timeout_msecs = conf->timeout_msecs;
	set_r->connect_timeout_msecs = conf->connect_timeout_msecs;
	set_r->clock = conf->clock;
}

static void conf_free(struct oauth_conf *conf)
{
	free(conf->name);
	free(conf->provider);
	free(conf->user);
	free(conf->account);
	free(conf->token_url);
	free(conf->device_url);
	free(conf->client_id);
	trib_secret_free(&conf->client_secret);
	free(conf->scope);
	free(conf->ca_file);
}

static const char *conf_prefix(const struct oauth_conf *conf)
{
	return conf->name != NULL ? conf->name : "oauth";
}

static time_t conf_now(const struct oauth_conf *conf)
{
	return conf->clock != NULL ? conf->clock() : time(NULL);
}

void trib_oauth_settings_from_account(const struct trib_account *acct,
				      const char *client_secret,
				      struct trib_oauth_settings *set_r)
{
	memset(set_r, 0, sizeof(*set_r));
	set_r->provider = acct->provider != NULL ? acct->provider->name : NULL;
	set_r->user = acct->user;
	set_r->account = acct->name;
	set_r->token_url = acct->oauth.token_url;
	set_r->device_url = acct->oauth.device_url;
	set_r->authorize_url = acct->oauth.authorize_url;
	set_r->client_id = acct->oauth.client_id;
	set_r->client_secret = client_secret;
	set_r->client_secret_rule = acct->provider != NULL
					    ? acct->provider->client_secret
					    : TRIB_CLIENT_SECRET_OPTIONAL;
	set_r->scope = acct->oauth.scope;
	set_r->ca_file = acct->ca_file;
}

/* ---- one request ---- */

static void request_free(struct trib_oauth_request *req)
{
	unsigned int i;

	if (req->early != NULL)
		event_free(req->early);
	for (i = 0; i < MAX_SENT; i++)
		trib_secret_free(&req->sent[i]);
	free(req->early_error);
	free(req->log_url);
	conf_free(&req->conf);
	free(req);
}

static const char *grant_label(enum trib_oauth_grant grant)
{
	switch (grant) {
	case TRIB_OAUTH_GRANT_DEVICE_CODE:
		return "device_code";
	default:
		return trib_oauth_grant_type(grant);
	}
}

static void request_log_result(const struct trib_oauth_request *req,
			       const struct trib_oauth_result *r)
{
	const struct trib_logger *logger = req->logger;
	const char *prefix = conf_prefix(&req->conf);
	const char *grant = grant_label(req->grant);

	if (r->error_class != TRIB_OK) {
		trib_log(logger, TRIB_LOG_DEBUG,
			 "%s: %s request failed (%s): %s", prefix, grant,
			 trib_error_class_name(r->error_class), r->error);
	} else if (r->token != NULL) {
		trib_log(logger, TRIB_LOG_DEBUG,
			 "%s: %s request: access token for %lld s%s", prefix,
			 grant, r->token->expires_in,
			 r->token->refresh_token == NULL ? ", no refresh token"
			 : r->refresh_token_rotated ? ", refresh token rotated"
			 : req->grant == TRIB_OAUTH_GRANT_REFRESH_TOKEN
				 ? ", same refresh token"
				 : ", refresh token");
	} else if (r->device != NULL) {
		trib_log(logger, TRIB_LOG_DEBUG,
			 "%s: device authorization: code for %u s, poll every "
			 "%u s",
			 prefix, r->device->expires_in, r->device->interval);
	} else {
		trib_log(logger, TRIB_LOG_DEBUG, "%s: %s request: %s", prefix,
			 grant,
			 r->poll == TRIB_OAUTH_POLL_SLOW_DOWN
				 ? "slow_down"
				 : "authorization_pending");
	}
	if (r->warning != NULL)
		trib_log(logger, TRIB_LOG_DEBUG, "%s: %s", prefix, r->warning);
}

static void request_finish(struct trib_oauth_request *req,
			   struct trib_oauth_result *result)
{
	trib_oauth_callback_t *callback = req->callback;

	request_log_result(req, result);
	req->callback = NULL;
	callback(result, req->context);
	trib_oauth_result_clear(result);
	request_free(req);
}

static void request_fail(struct trib_oauth_request *req,
			 enum trib_error_class error_class, const char *error)
{
	struct trib_oauth_result result;

	memset(&result, 0, sizeof(result));
	result.retry_after_secs = -1;
	result.error_class = error_class;
	result.error = trib_strdup(error);
	request_finish(req, &result);
}

static void early_cb(evutil_socket_t fd, short what, void *context)
{
	struct trib_oauth_request *req = context;

	(void)fd;
	(void)what;
	request_fail(req, req->early_class, req->early_error);
}

static void request_http_done(const struct trib_http_response *resp,
			      void *context)
{
	struct trib_oauth_request *req = context;
	struct trib_oauth_parse_context pctx = {
		.grant = req->grant,
		.provider = req->conf.provider,
		.user = req->conf.user,
		.account = req->conf.account,
		.scope = req->conf.scope,
		.secrets = req->secrets,
	};
	struct trib_oauth_result result;
	struct trib_oauth_token *token;

	req->http_req = NULL;
	if (resp->status == 0 || resp->body == NULL) {
		memset(&result, 0, sizeof(result));
		result.error_class = resp->error_class;
		result.error = trib_strdup_printf(
			"%s endpoint %s",
			req->grant == TRIB_OAUTH_DEVICE_AUTHORIZATION
				? "device authorization"
				: "token",
			resp->error);
	} else if (req->grant == TRIB_OAUTH_DEVICE_AUTHORIZATION) {
		trib_oauth_parse_device_response(&pctx, resp->status,
						 resp->body, resp->body_size,
						 &result);
	} else {
		trib_oauth_parse_token_response(&pctx, resp->status, resp->body,
						resp->body_size, &result);
	}
	result.retry_after_secs = -1;
	if (result.error_class == TRIB_ERR_TEMP ||
	    result.error_class == TRIB_ERR_WAIT)
		result.retry_after_secs = resp->retry_after_secs;
	token = result.token;
	if (token != NULL) {
		trib_oauth_token_set_expiry(token, req->sent_at);
		result.refresh_token_rotated =
			req->sent_refresh != NULL &&
			token->refresh_token != NULL &&
			strcmp(token->refresh_token, req->sent_refresh) != 0;
	}
	request_finish(req, &result);
}

/* Report why from the loop, not from inside the caller. */
static struct trib_oauth_request *request_refuse(struct trib_oauth_request *req,
						 struct trib_loop *loop,
						 const char *why)
{
	req->early_class = TRIB_ERR_PERM;
	req->early_error = trib_strdup(why);
	req->early = event_new(trib_loop_base(loop), -1, 0, early_cb, req);
	event_active(req->early, EV_TIMEOUT, 0);
	return req;
}

/* The client secret to send, or NULL; *why_r when one is needed but
 * missing. */
static const char *request_client_secret(const struct trib_oauth_request *req,
					 char **why_r)
{
	const struct oauth_conf *conf = &req->conf;
	bool have =
		conf->client_secret != NULL && conf->client_secret[0] != '\0';

	if (req->grant == TRIB_OAUTH_GRANT_CLIENT_CREDENTIALS) {
		if (!have)
			*why_r = trib_strdup(
				"the client credentials grant needs the app's "
				"client secret");
		return have ? conf->client_secret : NULL;
	}
	switch (conf->client_secret_rule) {
	case TRIB_CLIENT_SECRET_NEVER:
		return NULL;
	case TRIB_CLIENT_SECRET_REQUIRED:
		if (!have)
			*why_r = trib_strdup_printf(
				"the %s token endpoint needs the client secret "
				"of your desktop app: set tributary_%s_client_"
				"secret or _client_secret_file",
				conf->provider != NULL ? conf->provider : "",
				conf->provider != NULL ? conf->provider
						       : "<provider>");
		return have ? conf->client_secret : NULL;
	case TRIB_CLIENT_SECRET_OPTIONAL:
		break;
	}
	return have ? conf->client_secret : NULL;
}

/* pairs: the grant's own name/value pairs, NULL-terminated; sent: its
 * secrets (copied for redaction), NULL-terminated. */
static struct trib_oauth_request *request_start(
	struct trib_http_client *http, const struct trib_oauth_settings *set,
	enum trib_oauth_grant grant, const char *const *pairs,
	const char *const *sent, trib_oauth_callback_t *callback, void *context)
{
	struct trib_loop *loop = trib_http_client_loop(http);
	struct trib_http_request_settings hset;
	struct trib_oauth_request *req;
	const char *all[MAX_PAIRS + 1], *url, *secret;
	unsigned int n = 0, i, s = 0;
	char *why = NULL, *body;

	if (loop == NULL)
		return NULL;
	req = trib_calloc(1, sizeof(*req));
	req->http = http;
	req->logger = trib_http_client_logger(http);
	req->grant = grant;
	req->callback = callback;
	req->context = context;
	conf_copy(&req->conf, set);
	for (i = 0; sent != NULL && sent[i] != NULL && i < MAX_SENT; i++) {
		req->sent[i] = trib_strdup(sent[i]);
		req->secrets[s++] = req->sent[i];
	}
	if (grant == TRIB_OAUTH_GRANT_REFRESH_TOKEN)
		req->sent_refresh = req->sent[0];
	if (req->conf.client_secret != NULL)
		req->secrets[s++] = req->conf.client_secret;
	req->secrets[s] = NULL;

	url = grant == TRIB_OAUTH_DEVICE_AUTHORIZATION ? req->conf.device_url
						       : req->conf.token_url;
	req->log_url = trib_http_url_for_log(url != NULL ? url : "");
	secret = request_client_secret(req, &why);
	if (why == NULL && url == NULL)
		why = trib_strdup(
			grant == TRIB_OAUTH_DEVICE_AUTHORIZATION
				? "no device authorization URL: the provider "
				  "has no device flow (use the browser flow)"
				: "no token URL");
	if (why == NULL &&
	    (req->conf.client_id == NULL || req->conf.client_id[0] == '\0'))
		why = trib_strdup("no OAuth client id");
	if (why != NULL) {
		request_refuse(req, loop, why);
		free(why);
		return req;
	}

	for (i = 0; pairs[i] != NULL && n + 2 < MAX_PAIRS - 4; i += 2) {
		all[n++] = pairs[i];
		all[n++] = pairs[i + 1];
	}
	all[n++] = "client_id";
	all[n++] = req->conf.client_id;
	all[n++] = "client_secret";
	all[n++] = secret;
	all[n] = NULL;
	body = trib_http_form_encode(all);

	memset(&hset, 0, sizeof(hset));
	hset.method = TRIB_HTTP_POST;
	hset.url = url;
	hset.form_body = body;
	hset.ca_file = req->conf.ca_file;
	hset.accept = "application/json";
	hset.max_response_size = TRIB_OAUTH_MAX_RESPONSE;
	hset.timeout_msecs = req->conf.timeout_msecs;
	hset.connect_timeout_msecs = req->conf.connect_timeout_msecs;
	req->sent_at = conf_now(&req->conf);
	trib_log(trib_http_client_logger(http), TRIB_LOG_DEBUG,
		 "%s: %s request to %s%s", conf_prefix(&req->conf),
		 grant_label(grant), req->log_url,
		 secret != NULL ? " (with the client secret)" : "");
	req->http_req =
		trib_http_request_start(http, &hset, request_http_done, req);
	trib_secret_free(&body);
	if (req->http_req == NULL) {
		req->callback = NULL;
		request_free(req);
		return NULL;
	}
	return req;
}

struct trib_oauth_request *
trib_oauth_refresh(struct trib_http_client *http,
		   const struct trib_oauth_settings *set,
		   const char *refresh_token, trib_oauth_callback_t *callback,
		   void *context)
{
	const char *pairs[] = {
		"grant_type",
		trib_oauth_grant_type(TRIB_OAUTH_GRANT_REFRESH_TOKEN),
		"refresh_token",
		refresh_token,
		"scope",
		set->scope,
		NULL,
	};
	const char *sent[] = { refresh_token, NULL };

	return request_start(http, set, TRIB_OAUTH_GRANT_REFRESH_TOKEN, pairs,
			     sent, callback, context);
}

struct trib_oauth_request *trib_oauth_exchange_code(
	struct trib_http_client *http, const struct trib_oauth_settings *set,
	const char *code, const char *redirect_uri, const char *code_verifier,
	trib_oauth_callback_t *callback, void *context)
{
	const char *pairs[] = {
		"grant_type",
		trib_oauth_grant_type(TRIB_OAUTH_GRANT_AUTHORIZATION_CODE),
		"code",
		code,
		"redirect_uri",
		redirect_uri,
		"code_verifier",
		code_verifier,
		NULL,
	};
	const char *sent[] = { code, code_verifier, NULL };

	return request_start(http, set, TRIB_OAUTH_GRANT_AUTHORIZATION_CODE,
			     pairs, sent, callback, context);
}

struct trib_oauth_request *
trib_oauth_client_credentials(struct trib_http_client *http,
			      const struct trib_oauth_settings *set,
			      trib_oauth_callback_t *callback, void *context)
{
	const char *pairs[] = {
		"grant_type",
		trib_oauth_grant_type(TRIB_OAUTH_GRANT_CLIENT_CREDENTIALS),
		"scope",
		set->scope,
		NULL,
	};

	return request_start(http, set, TRIB_OAUTH_GRANT_CLIENT_CREDENTIALS,
			     pairs, NULL, callback, context);
}

struct trib_oauth_request *
trib_oauth_device_start(struct trib_http_client *http,
			const struct trib_oauth_settings *set,
			trib_oauth_callback_t *callback, void *context)
{
	const char *pairs[] = { "scope", set->scope, NULL };

	return request_start(http, set, TRIB_OAUTH_DEVICE_AUTHORIZATION, pairs,
			     NULL, callback, context);
}

struct trib_oauth_request *trib_oauth_device_poll_once(
	struct trib_http_client *http, const struct trib_oauth_settings *set,
	const char *device_code, trib_oauth_callback_t *callback, void *context)
{
	const char *pairs[] = {
		"grant_type",
		trib_oauth_grant_type(TRIB_OAUTH_GRANT_DEVICE_CODE),
		"device_code",
		device_code,
		NULL,
	};
	const char *sent[] = { device_code, NULL };

	return request_start(http, set, TRIB_OAUTH_GRANT_DEVICE_CODE, pairs,
			     sent, callback, context);
}

void trib_oauth_request_abort(struct trib_oauth_request **_req)
{
	struct trib_oauth_request *req = *_req;

	if (req == NULL)
		return;
	*_req = NULL;
	if (req->http_req != NULL) {
		/* Our HTTP callback fires with CANCELED and frees req. */
		trib_http_request_abort(&req->http_req);
		return;
	}
	request_fail(req, TRIB_ERR_CANCELED, "canceled");
}

/* ---- the device code poller ---- */

static void poll_free(struct trib_oauth_device_poll *poll)
{
	if (poll->hook != NULL)
		trib_loop_remove_destroy_hook(poll->loop, &poll->hook);
	if (poll->timer != NULL)
		event_free(poll->timer);
	trib_secret_free(&poll->device_code);
	free(poll->last_error);
	conf_free(&poll->conf);
	free(poll);
}

/* The final answer: hand it over and go. */
static void poll_finish(struct trib_oauth_device_poll *poll,
			struct trib_oauth_result *result)
{
	trib_oauth_callback_t *callback = poll->callback;
	void *context = poll->context;

	poll->callback = NULL;
	/* Free first: the callback may destroy the loop or the client. */
	poll_free(poll);
	callback(result, context);
}

static void poll_fail(struct trib_oauth_device_poll *poll,
		      enum trib_error_class error_class, bool reauthorize,
		      const char *error)
{
	struct trib_oauth_result result;

	memset(&result, 0, sizeof(result));
	result.retry_after_secs = -1;
	result.error_class = error_class;
	result.reauthorize = reauthorize;
	result.error = trib_strdup(error);
	poll_finish(poll, &result);
	trib_oauth_result_clear(&result);
}

static void poll_expired(struct trib_oauth_device_poll *poll)
{
	char *error = trib_strdup_printf(
		"the device code expired after %u s before the sign-in was "
		"finished: run `tributary authorize` again%s%s",
		poll->expires_in,
		poll->last_error != NULL ? " (last error: " : "",
		poll->last_error != NULL ? poll->last_error : "");

	if (poll->last_error != NULL) {
		char *with = trib_strdup_printf("%s)", error);

		free(error);
		error = with;
	}
	poll_fail(poll, TRIB_ERR_PERM, true, error);
	free(error);
}

/* Poll again after delay_msecs, or give up at the deadline if that comes
 * first. Either way from the timer: never inside the caller. */
static void poll_schedule(struct trib_oauth_device_poll *poll,
			  uint64_t delay_msecs)
{
	struct timespec now;
	struct timeval tv;
	int64_t left_msecs;

	clock_gettime(CLOCK_MONOTONIC, &now);
	left_msecs = (int64_t)(poll->deadline.tv_sec - now.tv_sec) * 1000 +
		     (poll->deadline.tv_nsec - now.tv_nsec) / 1000000;
	if (left_msecs < 0)
		left_msecs = 0;
	poll->expire_next = (int64_t)delay_msecs > left_msecs;
	if (poll->expire_next)
		delay_msecs = (uint64_t)left_msecs;
	tv.tv_sec = (time_t)(delay_msecs / 1000);
	tv.tv_usec = (suseconds_t)(delay_msecs % 1000) * 1000;
	evtimer_add(poll->timer, &tv);
}

static void poll_answer(struct trib_oauth_result *result, void *context)
{
	struct trib_oauth_device_poll *poll = context;
	const struct trib_logger *logger = poll->logger;
	uint64_t delay;

	poll->req = NULL;
	switch (result->error_class) {
	case TRIB_OK:
		if (result->token != NULL) {
			poll_finish(poll, result);
			return;
		}
		poll->failures = 0;
		if (result->poll == TRIB_OAUTH_POLL_SLOW_DOWN) {
			poll->interval += SLOW_DOWN_SECS;
			trib_log(logger, TRIB_LOG_DEBUG,
				 "%s: device code: slow_down, polling every "
				 "%u s from now on",
				 conf_prefix(&poll->conf), poll->interval);
		}
		poll_schedule(poll, (uint64_t)poll->interval * 1000);
		return;
	case TRIB_ERR_TEMP:
	case TRIB_ERR_WAIT:
		free(poll->last_error);
		poll->last_error = trib_strdup(result->error);
		delay = trib_oauth_backoff_msecs(
			poll->failures++, POLL_BACKOFF_BASE_MSECS,
			POLL_BACKOFF_CAP_MSECS, result->retry_after_secs,
			trib_oauth_random32());
		if (delay < (uint64_t)poll->interval * 1000)
			delay = (uint64_t)poll->interval * 1000;
		trib_log(logger, TRIB_LOG_DEBUG,
			 "%s: device code: polling again in %llu ms after: %s",
			 conf_prefix(&poll->conf), (unsigned long long)delay,
			 result->error);
		poll_schedule(poll, delay);
		return;
	default:
		poll_finish(poll, result);
		return;
	}
}

static void poll_timer_cb(evutil_socket_t fd, short what, void *context)
{
	struct trib_oauth_device_poll *poll = context;
	struct trib_oauth_settings set;

	(void)fd;
	(void)what;
	if (poll->expire_next) {
		poll_expired(poll);
		return;
	}
	conf_view(&poll->conf, &set);
	poll->req = trib_oauth_device_poll_once(
		poll->http, &set, poll->device_code, poll_answer, poll);
	if (poll->req == NULL)
		poll_fail(poll, TRIB_ERR_CANCELED, false,
			  "canceled: the HTTP client is gone");
}

void trib_oauth_device_poll_abort(struct trib_oauth_device_poll **_poll)
{
	struct trib_oauth_device_poll *poll = *_poll;

	if (poll == NULL)
		return;
	*_poll = NULL;
	if (poll->req != NULL) {
		/* poll_answer() gets CANCELED and finishes. */
		trib_oauth_request_abort(&poll->req);
		return;
	}
	poll_fail(poll, TRIB_ERR_CANCELED, false, "canceled");
}

static void poll_loop_destroyed(void *context)
{
	struct trib_oauth_device_poll *poll = context;

	poll->hook = NULL;
	trib_oauth_device_poll_abort(&poll);
}

struct trib_oauth_device_poll *
trib_oauth_device_poll_start(struct trib_http_client *http,
			     const struct trib_oauth_settings *set,
			     const struct trib_oauth_device_auth *device,
			     trib_oauth_callback_t *callback, void *context)
{
	struct trib_loop *loop = trib_http_client_loop(http);
	struct trib_oauth_device_poll *poll;

	if (loop == NULL)
		return NULL;
	poll = trib_calloc(1, sizeof(*poll));
	poll->http = http;
	poll->logger = trib_http_client_logger(http);
	poll->loop = loop;
	conf_copy(&poll->conf, set);
	poll->device_code = trib_strdup(device->device_code);
	poll->interval = device->interval != 0
				 ? device->interval
				 : TRIB_OAUTH_DEVICE_DEFAULT_INTERVAL;
	poll->expires_in = device->expires_in;
	clock_gettime(CLOCK_MONOTONIC, &poll->deadline);
	poll->deadline.tv_sec += device->expires_in;
	poll->callback = callback;
	poll->context = context;
	poll->timer = evtimer_new(trib_loop_base(loop), poll_timer_cb, poll);
	poll->hook =
		trib_loop_add_destroy_hook(loop, poll_loop_destroyed, poll);
	trib_log(trib_http_client_logger(http), TRIB_LOG_DEBUG,
		 "%s: device code: polling every %u s for up to %u s",
		 conf_prefix(&poll->conf), poll->interval, poll->expires_in);
	poll_schedule(poll, (uint64_t)poll->interval * 1000);
	return poll;
}

unsigned int
trib_oauth_device_poll_interval(const struct trib_oauth_device_poll *poll)
{
	return poll->interval;
}
