/* test-oauth.c: the OAuth engine (oauth.h over http.h) against the
 * harness's OAuth stand-in over real TLS with the test CA: refresh with
 * rotation, the client secret rules, authorization_code with PKCE and a
 * scripted browser, the device flow (pending, slow_down, approval, and
 * the RFC 8628 errors), client credentials under a tenant, invalid_grant,
 * 429 + Retry-After, 5xx, a slow and a dead endpoint, broken and 1 MiB
 * JSON, cancellation; then an access token from the engine logs in to the
 * remote Dovecot with XOAUTH2. Every token, code, verifier and secret the
 * test sees is collected, and none may appear in the engine's debug log. */

#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>

#include <cmocka.h>

#include "alloc.h"
#include "imap-client.h"
#include "itest.h"
#include "oauth.h"

#include <arpa/inet.h>
#include <curl/curl.h>
#include <json-c/json.h>
#include <netinet/in.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

#define DEADLINE 30
#define ACCOUNT "work"
#define PUBLIC_CLIENT "tributary-public"
#define CONFIDENTIAL_CLIENT "tributary-confidential"
#define CONFIDENTIAL_SECRET "tributary-confidential-secret"
#define DAEMON_CLIENT "tributary-daemon"
#define DAEMON_SECRET "tributary-daemon-secret"
#define DAEMON_TENANT "contoso.example"
#define SCOPE "mail offline_access"

static char token_url[512], device_url[512], authorize_url[512];
static char tenant_template[512];

/* ---- everything secret the test has seen, and the whole log ---- */

static char **seen;
static unsigned int seen_count;
static char *log_all;
static size_t log_len;

static void remember(const char *secret)
{
	if (secret == NULL || secret[0] == '\0')
		return;
	seen = trib_realloc(seen, (seen_count + 1) * sizeof(*seen));
	seen[seen_count++] = trib_strdup(secret);
}

static void log_keep(void *context, enum trib_log_level level,
		     const char *message)
{
	size_t n = strlen(message);

	(void)context;
	if (getenv("ITEST_VERBOSE") != NULL)
		fprintf(stderr, "[%s] %s\n", trib_log_level_name(level),
			message);
	log_all = trib_realloc(log_all, log_len + n + 2);
	memcpy(log_all + log_len, message, n);
	log_all[log_len + n] = '\n';
	log_len += n + 1;
	log_all[log_len] = '\0';
}

static const struct trib_logger logger = {
	.log = log_keep,
	.min_level = TRIB_LOG_DEBUG,
};

static bool log_has(const char *needle)
{
	return log_all != NULL && strstr(log_all, needle) != NULL;
}

/* ---- the stand-in's control API (blocking; test side only) ---- */

struct buf {
	char *data;
	size_t len;
};

static size_t buf_write(char *ptr, size_t size, size_t nmemb, void *ctx)
{
	struct buf *b = ctx;
	size_t n = size * nmemb;

	b->data = trib_realloc(b->data, b->len + n + 1);
	memcpy(b->data + b->len, ptr, n);
	b->len += n;
	b->data[b->len] = '\0';
	return n;
}

static json_object *control(const char *path, const char *json_fmt, ...)
	TRIB_ATTR_PRINTF(2, 3);

static json_object *control(const char *path, const char *json_fmt, ...)
{
	const struct itest_env *e = itest_env();
	struct buf b = { NULL, 0 };
	struct curl_slist *headers = NULL;
	CURL *curl = curl_easy_init();
	json_object *obj;
	char *url, *body = NULL;
	long status = 0;
	CURLcode rc;
	va_list args;

	url = trib_strdup_printf("%s%s", e->oauth_url, path);
	curl_easy_setopt(curl, CURLOPT_URL, url);
	curl_easy_setopt(curl, CURLOPT_CAINFO, e->ca);
	curl_easy_setopt(curl, CURLOPT_TIMEOUT, 10L);
	curl_easy_setopt(curl, CURLOPT_WRITEFUNCTION, buf_write);
	curl_easy_setopt(curl, CURLOPT_WRITEDATA, &b);
	if (json_fmt != NULL) {
		va_start(args, json_fmt);
		body = trib_strdup_vprintf(json_fmt, args);
		va_end(args);
		headers = curl_slist_append(headers,
					    "Content-Type: application/json");
		curl_easy_setopt(curl, CURLOPT_HTTPHEADER, headers);
		curl_easy_setopt(curl, CURLOPT_POSTFIELDS, body);
	}
	rc = curl_easy_perform(curl);
	curl_easy_getinfo(curl, CURLINFO_RESPONSE_CODE, &status);
	curl_slist_free_all(headers);
	curl_easy_cleanup(curl);
	if (rc != CURLE_OK || status != 200)
		fail_msg("stand-in %s: %s, HTTP %ld: %s", path,
			 curl_easy_strerror(rc), status,
			 b.data != NULL ? b.data : "");
	obj = json_tokener_parse(b.data != NULL ? b.data : "");
	assert_non_null(obj);
	free(b.data);
	free(body);
	free(url);
	return obj;
}

static void control_void(const char *path, const char *json)
{
	json_object_put(control(path, "%s", json));
}

static char *json_str(json_object *obj, const char *name)
{
	json_object *val;

	assert_true(json_object_object_get_ex(obj, name, &val));
	return trib_strdup(json_object_get_string(val));
}

/* A refresh token as if the user had authorized the client. */
static char *grant(const char *client_id, const char *scope)
{
	json_object *obj = control("/control/grant",
				   "{\"user\": \"%s\", \"client_id\": \"%s\", "
				   "\"scope\": \"%s\"}",
				   itest_env()->user, client_id, scope);
	char *rt = json_str(obj, "refresh_token");

	json_object_put(obj);
	remember(rt);
	return rt;
}

static long grants_seen(const char *grant_type)
{
	json_object *obj = control("/control/stats", NULL), *grants, *n;
	long count = 0;

	assert_true(json_object_object_get_ex(obj, "grants", &grants));
	if (json_object_object_get_ex(grants, grant_type, &n))
		count = (long)json_object_get_int64(n);
	json_object_put(obj);
	return count;
}

/* ---- one test's loop, HTTP client and outcome ---- */

struct outcome {
	bool done;
	unsigned int calls;
	enum trib_error_class error_class;
	enum trib_oauth_poll poll;
	bool reauthorize, rotated;
	long retry_after;
	char *error, *error_code, *warning;
	struct trib_oauth_token *token;
	struct trib_oauth_device_auth *device;
};

struct fixture {
	struct trib_loop *loop;
	struct trib_http_client *http;
	struct outcome o;
};

static void outcome_clear(struct outcome *o)
{
	free(o->error);
	free(o->error_code);
	free(o->warning);
	trib_oauth_token_free(&o->token);
	trib_oauth_device_auth_free(&o->device);
	memset(o, 0, sizeof(*o));
}

static void oauth_cb(struct trib_oauth_result *r, void *context)
{
	struct outcome *o = context;

	o->calls++;
	o->done = true;
	o->error_class = r->error_class;
	o->poll = r->poll;
	o->reauthorize = r->reauthorize;
	o->rotated = r->refresh_token_rotated;
	o->retry_after = r->retry_after_secs;
	o->error = r->error != NULL ? trib_strdup(r->error) : NULL;
	o->error_code =
		r->error_code != NULL ? trib_strdup(r->error_code) : NULL;
	o->warning = r->warning != NULL ? trib_strdup(r->warning) : NULL;
	/* take them */
	o->token = r->token;
	r->token = NULL;
	o->device = r->device;
	r->device = NULL;
	if (o->token != NULL) {
		remember(o->token->access_token);
		remember(o->token->refresh_token);
	}
	if (o->device != NULL)
		remember(o->device->device_code);
	if (r->error != NULL)
		assert_null(strchr(r->error, '\n'));
}

static int setup(void **state)
{
	struct trib_http_client_settings set = {
		.name = "oauth-test",
		.logger = &logger,
	};
	struct fixture *f = trib_calloc(1, sizeof(*f));
	const char *error;

	f->loop = trib_loop_create(&error);
	assert_non_null(f->loop);
	f->http = trib_http_client_create(f->loop, &set, &error);
	assert_non_null(f->http);
	*state = f;
	return 0;
}

static int teardown(void **state)
{
	struct fixture *f = *state;

	outcome_clear(&f->o);
	trib_http_client_destroy(&f->http);
	trib_loop_destroy(&f->loop);
	free(f);
	/* faults a failed test left behind must not leak into the next */
	control_void("/control/fault", "{\"kind\": \"clear\"}");
	return 0;
}

static struct trib_oauth_settings settings(const char *client_id,
					   const char *client_secret,
					   enum trib_client_secret_rule rule)
{
	struct trib_oauth_settings set = {
		.provider = "outlook",
		.user = itest_env()->user,
		.account = ACCOUNT,
		.token_url = token_url,
		.device_url = device_url,
		.authorize_url = authorize_url,
		.client_id = client_id,
		.client_secret = client_secret,
		.client_secret_rule = rule,
		.scope = SCOPE,
		.ca_file = itest_env()->ca,
		.timeout_msecs = 10000,
	};
	return set;
}

static struct trib_oauth_settings public_settings(void)
{
	return settings(PUBLIC_CLIENT, NULL, TRIB_CLIENT_SECRET_NEVER);
}

/* Start (the call must not answer at once), run, expect one callback. */
static void wait_for(struct fixture *f, struct trib_oauth_request *req)
{
	assert_non_null(req);
	assert_int_equal(f->o.calls, 0);
	assert_true(itest_run_until(f->loop, &f->o.done, DEADLINE));
	assert_int_equal(f->o.calls, 1);
	if (f->o.error_class != TRIB_OK && f->o.error == NULL)
		fail_msg("an error without a message");
}

static void refresh(struct fixture *f, const struct trib_oauth_settings *set,
		    const char *refresh_token)
{
	outcome_clear(&f->o);
	wait_for(f, trib_oauth_refresh(f->http, set, refresh_token, oauth_cb,
				       &f->o));
}

static void expect_ok(const struct outcome *o)
{
	if (o->error_class != TRIB_OK)
		fail_msg("%s: %s", trib_error_class_name(o->error_class),
			 o->error);
	assert_non_null(o->token);
}

static void expect_error(const struct outcome *o,
			 enum trib_error_class error_class, const char *needle)
{
	if (o->error_class != error_class)
		fail_msg("want %s, got %s: %s",
			 trib_error_class_name(error_class),
			 trib_error_class_name(o->error_class),
			 o->error != NULL ? o->error : "-");
	assert_null(o->token);
	if (needle != NULL && strstr(o->error, needle) == NULL)
		fail_msg("'%s' lacks '%s'", o->error, needle);
}

/* ---- refresh_token ---- */

static void test_refresh_rotation(void **state)
{
	struct fixture *f = *state;
	struct trib_oauth_settings set = public_settings();
	char *rt = grant(PUBLIC_CLIENT, SCOPE), *rt2;
	time_t before = time(NULL);

	refresh(f, &set, rt);
	expect_ok(&f->o);
	assert_true(f->o.rotated);
	assert_non_null(f->o.token->refresh_token);
	assert_string_not_equal(f->o.token->refresh_token, rt);
	assert_string_equal(f->o.token->token_type, "Bearer");
	assert_int_equal(f->o.token->expires_in, 3600);
	assert_true(f->o.token->expires_at >= before + 3600 &&
		    f->o.token->expires_at <= time(NULL) + 3600);
	assert_string_equal(f->o.token->scope, SCOPE);
	assert_null(f->o.warning);
	rt2 = trib_strdup(f->o.token->refresh_token);
	assert_true(log_has("refresh_token request: access token for 3600 s, "
			    "refresh token rotated"));

	/* the old one is dead now: reauthorization, in plain words */
	refresh(f, &set, rt);
	expect_error(&f->o, TRIB_ERR_PERM,
		     "the refresh token was revoked or expired: run "
		     "`tributary authorize -u alice@example.com work`");
	assert_true(f->o.reauthorize);
	assert_string_equal(f->o.error_code, "invalid_grant");
	assert_non_null(strstr(f->o.error, "Microsoft"));

	/* the new one works, once */
	refresh(f, &set, rt2);
	expect_ok(&f->o);
	assert_true(f->o.rotated);
	free(rt);
	free(rt2);
}

static void test_refresh_without_rotation(void **state)
{
	struct fixture *f = *state;
	struct trib_oauth_settings set = public_settings();
	char *rt = grant(PUBLIC_CLIENT, SCOPE);

	control_void("/control/settings", "{\"rotate\": false}");
	refresh(f, &set, rt);
	expect_ok(&f->o);
	/* Google's way: no new refresh token, the old one stays */
	assert_null(f->o.token->refresh_token);
	assert_false(f->o.rotated);
	assert_null(f->o.warning);
	refresh(f, &set, rt);
	expect_ok(&f->o);
	control_void("/control/settings", "{\"rotate\": true}");
	free(rt);
}

static void test_refresh_revoked(void **state)
{
	struct fixture *f = *state;
	struct trib_oauth_settings set = public_settings();
	char *rt = grant(PUBLIC_CLIENT, SCOPE), *req;

	req = trib_strdup_printf("{\"token\": \"%s\"}", rt);
	control_void("/control/revoke", req);
	free(req);
	refresh(f, &set, rt);
	expect_error(&f->o, TRIB_ERR_PERM,
		     "the refresh token was revoked or expired: run "
		     "`tributary authorize -u alice@example.com work`");
	assert_true(f->o.reauthorize);

	/* Google: the "Testing" trap is named */
	set.provider = "gmail";
	refresh(f, &set, rt);
	expect_error(&f->o, TRIB_ERR_PERM, "7 days");
	free(rt);
}

/* ---- client secrets ---- */

static void test_client_secret_rules(void **state)
{
	struct fixture *f = *state;
	struct trib_oauth_settings set;
	char *rt = grant(PUBLIC_CLIENT, SCOPE), *crt;
	long before;

	remember(CONFIDENTIAL_SECRET);
	remember("not-the-secret-value");
	/* NEVER: a configured secret is not sent (the stand-in, like
	 * Microsoft, refuses a public client that sends one) */
	set = settings(PUBLIC_CLIENT, "a-secret-never-sent",
		       TRIB_CLIENT_SECRET_NEVER);
	remember("a-secret-never-sent");
	refresh(f, &set, rt);
	expect_ok(&f->o);
	free(rt);
	rt = trib_strdup(f->o.token->refresh_token);

	/* OPTIONAL sends it: refused, a configuration error */
	set.client_secret_rule = TRIB_CLIENT_SECRET_OPTIONAL;
	refresh(f, &set, rt);
	expect_error(&f->o, TRIB_ERR_PERM, "does not accept this client");
	assert_false(f->o.reauthorize);
	assert_string_equal(f->o.error_code, "invalid_client");
	assert_non_null(strstr(f->o.error, "AADSTS700025"));

	/* REQUIRED without one: refused before anything is sent */
	crt = grant(CONFIDENTIAL_CLIENT, "mail");
	before = grants_seen("refresh_token");
	set = settings(CONFIDENTIAL_CLIENT, NULL, TRIB_CLIENT_SECRET_REQUIRED);
	set.provider = "gmail";
	refresh(f, &set, crt);
	expect_error(&f->o, TRIB_ERR_PERM,
		     "needs the client secret of your desktop app");
	assert_int_equal(grants_seen("refresh_token"), before);

	/* a wrong one: refused, and never shown */
	set.client_secret = "not-the-secret-value";
	refresh(f, &set, crt);
	expect_error(&f->o, TRIB_ERR_PERM, "does not accept this client");
	assert_null(strstr(f->o.error, "not-the-secret-value"));

	set.client_secret = CONFIDENTIAL_SECRET;
	refresh(f, &set, crt);
	expect_ok(&f->o);
	assert_true(log_has("(with the client secret)"));
	free(crt);
	free(rt);
}

/* ---- authorization_code with PKCE ---- */

/* The scripted browser: GET the authorization URL, read the redirect. */
static char *browse(const char *url)
{
	CURL *curl = curl_easy_init();
	struct buf b = { NULL, 0 };
	char *location = NULL, *copy;
	long status = 0;

	curl_easy_setopt(curl, CURLOPT_URL, url);
	curl_easy_setopt(curl, CURLOPT_CAINFO, itest_env()->ca);
	curl_easy_setopt(curl, CURLOPT_WRITEFUNCTION, buf_write);
	curl_easy_setopt(curl, CURLOPT_WRITEDATA, &b);
	assert_int_equal(curl_easy_perform(curl), CURLE_OK);
	curl_easy_getinfo(curl, CURLINFO_RESPONSE_CODE, &status);
	curl_easy_getinfo(curl, CURLINFO_REDIRECT_URL, &location);
	assert_int_equal(status, 302);
	assert_non_null(location);
	copy = trib_strdup(location);
	curl_easy_cleanup(curl);
	free(b.data);
	return copy;
}

/* The value of name in url's query, decoded, or NULL. */
static char *query_param(const char *url, const char *name)
{
	const char *q = strchr(url, '?');
	size_t nlen = strlen(name);
	char *value = NULL;

	while (q != NULL && value == NULL) {
		q++;
		if (strncmp(q, name, nlen) == 0 && q[nlen] == '=') {
			size_t len = strcspn(q + nlen + 1, "&");
			int outlen = 0;
			char *dec = curl_easy_unescape(NULL, q + nlen + 1,
						       (int)len, &outlen);

			value = trib_strndup(dec, (size_t)outlen);
			curl_free(dec);
		}
		q = strchr(q, '&');
	}
	return value;
}

static void authorize(struct trib_oauth_settings *set, const char *redirect,
		      char **code_r, char **verifier_r)
{
	char *verifier, *challenge, *state = trib_oauth_random_state();
	char *url, *location, *got_state;

	assert_non_null(state);
	assert_int_equal(trib_oauth_pkce_make(&verifier, &challenge), 0);
	url = trib_oauth_authorize_url(set, redirect, state, challenge,
				       itest_env()->user, NULL);
	location = browse(url);
	assert_int_equal(strncmp(location, redirect, strlen(redirect)), 0);
	got_state = query_param(location, "state");
	assert_non_null(got_state);
	assert_string_equal(got_state, state);
	*code_r = query_param(location, "code");
	assert_non_null(*code_r);
	*verifier_r = verifier;
	remember(*code_r);
	remember(verifier);
	free(got_state);
	free(location);
	free(url);
	free(challenge);
	free(state);
}

static void test_authorization_code_pkce(void **state)
{
	struct fixture *f = *state;
	struct trib_oauth_settings set = public_settings();
	const char *redirect = "http://127.0.0.1:53682/";
	char *code, *verifier, *wrong, *challenge;

	authorize(&set, redirect, &code, &verifier);
	outcome_clear(&f->o);
	wait_for(f, trib_oauth_exchange_code(f->http, &set, code, redirect,
					     verifier, oauth_cb, &f->o));
	expect_ok(&f->o);
	assert_non_null(f->o.token->refresh_token);
	assert_false(f->o.rotated);
	assert_null(f->o.warning);

	/* a code works once */
	outcome_clear(&f->o);
	wait_for(f, trib_oauth_exchange_code(f->http, &set, code, redirect,
					     verifier, oauth_cb, &f->o));
	expect_error(&f->o, TRIB_ERR_PERM, "authorization code was refused");
	assert_true(f->o.reauthorize);
	free(code);
	trib_secret_free(&verifier);

	/* the wrong verifier is refused */
	authorize(&set, redirect, &code, &verifier);
	assert_int_equal(trib_oauth_pkce_make(&wrong, &challenge), 0);
	remember(wrong);
	outcome_clear(&f->o);
	wait_for(f, trib_oauth_exchange_code(f->http, &set, code, redirect,
					     wrong, oauth_cb, &f->o));
	expect_error(&f->o, TRIB_ERR_PERM, "PKCE");
	assert_non_null(strstr(f->o.error, "[invalid_grant: PKCE "
					   "verification failed"));
	free(code);
	free(challenge);
	trib_secret_free(&verifier);
	trib_secret_free(&wrong);

	/* Microsoft's rule: no offline_access, no refresh token, and
	 * the engine says why */
	set.scope = "mail";
	authorize(&set, redirect, &code, &verifier);
	outcome_clear(&f->o);
	wait_for(f, trib_oauth_exchange_code(f->http, &set, code, redirect,
					     verifier, oauth_cb, &f->o));
	expect_ok(&f->o);
	assert_null(f->o.token->refresh_token);
	assert_non_null(f->o.warning);
	assert_non_null(strstr(f->o.warning, "lacks offline_access"));
	free(code);
	trib_secret_free(&verifier);
}

/* ---- the device flow ---- */

static struct trib_oauth_device_auth *
device_start(struct fixture *f, struct trib_oauth_settings *set)
{
	struct trib_oauth_device_auth *device;

	outcome_clear(&f->o);
	wait_for(f, trib_oauth_device_start(f->http, set, oauth_cb, &f->o));
	if (f->o.error_class != TRIB_OK)
		fail_msg("device start: %s", f->o.error);
	device = f->o.device;
	f->o.device = NULL;
	assert_non_null(device);
	return device;
}

static void poll_once(struct fixture *f, struct trib_oauth_settings *set,
		      const char *device_code)
{
	outcome_clear(&f->o);
	wait_for(f, trib_oauth_device_poll_once(f->http, set, device_code,
						oauth_cb, &f->o));
}

static void device_control(const char *user_code, const char *json_tail)
{
	json_object_put(control("/control/device",
				"{\"user_code\": \"%s\", %s}", user_code,
				json_tail));
}

static void test_device_poll_once(void **state)
{
	struct fixture *f = *state;
	struct trib_oauth_settings set = public_settings();
	struct trib_oauth_device_auth *d;
	char *url;

	control_void("/control/settings",
		     "{\"device_interval\": 1, \"device_expires_in\": 600}");
	d = device_start(f, &set);
	assert_int_equal(d->interval, 1);
	assert_int_equal(d->expires_in, 600);
	assert_int_equal(strlen(d->user_code), 9);
	url = trib_strdup_printf("%s/device", itest_env()->oauth_url);
	assert_string_equal(d->verification_uri, url);
	free(url);
	assert_non_null(d->verification_uri_complete);
	assert_non_null(d->message);
	assert_non_null(strstr(d->message, d->user_code));

	poll_once(f, &set, d->device_code);
	assert_int_equal(f->o.error_class, TRIB_OK);
	assert_int_equal(f->o.poll, TRIB_OAUTH_POLL_PENDING);
	assert_null(f->o.token);
	/* at once again: too fast, slow_down (RFC 8628 3.5) */
	poll_once(f, &set, d->device_code);
	assert_int_equal(f->o.error_class, TRIB_OK);
	assert_int_equal(f->o.poll, TRIB_OAUTH_POLL_SLOW_DOWN);
	trib_oauth_device_auth_free(&d);

	/* declined */
	d = device_start(f, &set);
	device_control(d->user_code, "\"action\": \"deny\"");
	poll_once(f, &set, d->device_code);
	expect_error(&f->o, TRIB_ERR_PERM, "access was denied");
	assert_true(f->o.reauthorize);
	trib_oauth_device_auth_free(&d);

	/* expired */
	d = device_start(f, &set);
	device_control(d->user_code, "\"action\": \"expire\"");
	poll_once(f, &set, d->device_code);
	expect_error(&f->o, TRIB_ERR_PERM, "device code expired");
	assert_true(f->o.reauthorize);
	trib_oauth_device_auth_free(&d);

	/* no device endpoint (Google): refused before any request */
	set.device_url = NULL;
	set.provider = "gmail";
	outcome_clear(&f->o);
	wait_for(f, trib_oauth_device_start(f->http, &set, oauth_cb, &f->o));
	expect_error(&f->o, TRIB_ERR_PERM, "no device flow");
}

/* The poller: pending, then slow_down (forced), then approval. */
static void test_device_poller(void **state)
{
	struct fixture *f = *state;
	struct trib_oauth_settings set = public_settings();
	struct trib_oauth_device_auth *d;
	struct trib_oauth_device_poll *poll;
	bool seen_pending = false, seen_slow = false;
	char *tail;
	time_t start;

	control_void("/control/settings",
		     "{\"device_interval\": 1, \"device_expires_in\": 600}");
	d = device_start(f, &set);
	outcome_clear(&f->o);
	start = time(NULL);
	poll = trib_oauth_device_poll_start(f->http, &set, d, oauth_cb, &f->o);
	assert_non_null(poll);
	assert_int_equal(trib_oauth_device_poll_interval(poll), 1);

	/* wait for the first authorization_pending */
	while (!seen_pending) {
		assert_true(time(NULL) - start < DEADLINE);
		itest_run_until(f->loop, &seen_pending, 1);
		seen_pending = log_has("device_code request: "
				       "authorization_pending");
	}
	device_control(d->user_code, "\"slow_down\": 1");
	while (!seen_slow) {
		assert_true(time(NULL) - start < DEADLINE);
		itest_run_until(f->loop, &seen_slow, 1);
		seen_slow = log_has("slow_down, polling every 6 s");
	}
	assert_int_equal(trib_oauth_device_poll_interval(poll), 6);
	assert_false(f->o.done);
	tail = trib_strdup_printf("\"action\": \"approve\", \"user\": \"%s\"",
				  itest_env()->user);
	device_control(d->user_code, tail);
	free(tail);
	assert_true(itest_run_until(f->loop, &f->o.done, DEADLINE));
	expect_ok(&f->o);
	assert_non_null(f->o.token->refresh_token);
	/* about 1 + 1 + 6 s */
	assert_true(time(NULL) - start >= 7);
	/* the device code is spent */
	poll_once(f, &set, d->device_code);
	expect_error(&f->o, TRIB_ERR_PERM, "device code was refused");
	trib_oauth_device_auth_free(&d);

	/* abort while waiting */
	d = device_start(f, &set);
	outcome_clear(&f->o);
	poll = trib_oauth_device_poll_start(f->http, &set, d, oauth_cb, &f->o);
	trib_oauth_device_poll_abort(&poll);
	assert_null(poll);
	assert_int_equal(f->o.calls, 1);
	assert_int_equal(f->o.error_class, TRIB_ERR_CANCELED);
	trib_oauth_device_auth_free(&d);

	/* the deadline ends it: expired, plainly */
	d = device_start(f, &set);
	d->expires_in = 2;
	outcome_clear(&f->o);
	poll = trib_oauth_device_poll_start(f->http, &set, d, oauth_cb, &f->o);
	assert_true(itest_run_until(f->loop, &f->o.done, DEADLINE));
	expect_error(&f->o, TRIB_ERR_PERM, "expired after 2 s");
	assert_true(f->o.reauthorize);
	trib_oauth_device_auth_free(&d);

	/* the loop destroyed under a waiting poller: canceled */
	d = device_start(f, &set);
	outcome_clear(&f->o);
	poll = trib_oauth_device_poll_start(f->http, &set, d, oauth_cb, &f->o);
	assert_non_null(poll);
	trib_loop_destroy(&f->loop);
	assert_int_equal(f->o.calls, 1);
	assert_int_equal(f->o.error_class, TRIB_ERR_CANCELED);
	trib_oauth_device_auth_free(&d);
}

/* ---- client credentials (Microsoft 365 app-only) ---- */

static void test_client_credentials(void **state)
{
	struct fixture *f = *state;
	struct trib_oauth_settings set = settings(DAEMON_CLIENT, DAEMON_SECRET,
						  TRIB_CLIENT_SECRET_NEVER);
	char *url = trib_oauth_tenant_url(tenant_template, DAEMON_TENANT);
	char *other =
		trib_oauth_tenant_url(tenant_template, "fabrikam.example");

	remember(DAEMON_SECRET);
	set.token_url = url;
	set.scope = TRIB_OAUTH_M365_APP_SCOPE;
	set.user = NULL;
	set.account = NULL;
	outcome_clear(&f->o);
	wait_for(f,
		 trib_oauth_client_credentials(f->http, &set, oauth_cb, &f->o));
	expect_ok(&f->o);
	assert_null(f->o.token->refresh_token);
	assert_null(f->o.warning);
	assert_string_equal(f->o.token->scope, TRIB_OAUTH_M365_APP_SCOPE);

	/* another tenant */
	set.token_url = other;
	outcome_clear(&f->o);
	wait_for(f,
		 trib_oauth_client_credentials(f->http, &set, oauth_cb, &f->o));
	expect_error(&f->o, TRIB_ERR_PERM, "AADSTS90002");
	assert_false(f->o.reauthorize);

	/* not /.default */
	set.token_url = url;
	set.scope = "https://outlook.office365.com/IMAP.AccessAsApp";
	outcome_clear(&f->o);
	wait_for(f,
		 trib_oauth_client_credentials(f->http, &set, oauth_cb, &f->o));
	expect_error(&f->o, TRIB_ERR_PERM, "scope was refused");

	/* no secret: refused before anything is sent */
	set.client_secret = NULL;
	outcome_clear(&f->o);
	wait_for(f,
		 trib_oauth_client_credentials(f->http, &set, oauth_cb, &f->o));
	expect_error(&f->o, TRIB_ERR_PERM, "needs the app's client secret");
	free(url);
	free(other);
}

/* ---- what goes wrong on the wire ---- */

static void fault(const char *json)
{
	control_void("/control/fault", json);
}

/* After a fault the refresh token still works: nothing was spent. */
static void still_works(struct fixture *f, const char *rt)
{
	struct trib_oauth_settings set = public_settings();

	control_void("/control/settings", "{\"rotate\": false}");
	refresh(f, &set, rt);
	expect_ok(&f->o);
	control_void("/control/settings", "{\"rotate\": true}");
}

static void test_429_retry_after(void **state)
{
	struct fixture *f = *state;
	struct trib_oauth_settings set = public_settings();
	char *rt = grant(PUBLIC_CLIENT, SCOPE), date[64], *json;
	time_t when = time(NULL) + 90;
	struct tm tm;

	fault("{\"kind\": \"status\", \"status\": 429, \"retry_after\": "
	      "\"7\"}");
	refresh(f, &set, rt);
	expect_error(&f->o, TRIB_ERR_WAIT, "HTTP 429");
	assert_int_equal(f->o.retry_after, 7);
	assert_false(f->o.reauthorize);

	/* as an HTTP date */
	gmtime_r(&when, &tm);
	strftime(date, sizeof(date), "%a, %d %b %Y %H:%M:%S GMT", &tm);
	json = trib_strdup_printf("{\"kind\": \"status\", \"status\": 429, "
				  "\"retry_after\": \"%s\"}",
				  date);
	fault(json);
	free(json);
	refresh(f, &set, rt);
	expect_error(&f->o, TRIB_ERR_WAIT, NULL);
	assert_true(f->o.retry_after >= 85 && f->o.retry_after <= 90);
	still_works(f, rt);
	free(rt);
}

static void test_5xx(void **state)
{
	struct fixture *f = *state;
	struct trib_oauth_settings set = public_settings();
	char *rt = grant(PUBLIC_CLIENT, SCOPE);

	fault("{\"kind\": \"status\", \"status\": 503, \"retry_after\": "
	      "\"30\"}");
	refresh(f, &set, rt);
	expect_error(&f->o, TRIB_ERR_TEMP, "HTTP 503");
	assert_int_equal(f->o.retry_after, 30);
	fault("{\"kind\": \"status\", \"status\": 500, \"body\": "
	      "\"<html>oops</html>\"}");
	refresh(f, &set, rt);
	expect_error(&f->o, TRIB_ERR_TEMP, "HTTP 500");
	assert_int_equal(f->o.retry_after, -1);
	still_works(f, rt);
	free(rt);
}

static void test_slow_endpoint(void **state)
{
	struct fixture *f = *state;
	struct trib_oauth_settings set = public_settings();
	char *rt = grant(PUBLIC_CLIENT, SCOPE);
	struct timespec t0, t1;
	long ms;

	fault("{\"kind\": \"delay\", \"seconds\": 3}");
	set.timeout_msecs = 1000;
	clock_gettime(CLOCK_MONOTONIC, &t0);
	refresh(f, &set, rt);
	clock_gettime(CLOCK_MONOTONIC, &t1);
	ms = (t1.tv_sec - t0.tv_sec) * 1000 +
	     (t1.tv_nsec - t0.tv_nsec) / 1000000;
	expect_error(&f->o, TRIB_ERR_TEMP, "timed out");
	assert_non_null(strstr(f->o.error, "token endpoint https://127.0.0.1"));
	assert_true(ms >= 900 && ms < 2500);
	/* the delayed answer is never used; the token still works */
	still_works(f, rt);
	free(rt);
}

static void test_dead_endpoint(void **state)
{
	struct fixture *f = *state;
	struct trib_oauth_settings set = public_settings();
	union {
		struct sockaddr sa;
		struct sockaddr_in in;
	} a;
	socklen_t len = sizeof(a);
	char url[128];
	int fd;

	fd = socket(AF_INET, SOCK_STREAM, 0);
	memset(&a, 0, sizeof(a));
	a.in.sin_family = AF_INET;
	a.in.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
	assert_int_equal(bind(fd, &a.sa, sizeof(a.in)), 0);
	assert_int_equal(getsockname(fd, &a.sa, &len), 0);
	snprintf(url, sizeof(url), "https://127.0.0.1:%u/token",
		 ntohs(a.in.sin_port));
	close(fd);
	set.token_url = url;
	refresh(f, &set, "rt-whatever-value");
	expect_error(&f->o, TRIB_ERR_TEMP, url);
	assert_false(f->o.reauthorize);

	/* plain http is refused outright */
	snprintf(url, sizeof(url), "http://127.0.0.1:%u/token",
		 ntohs(a.in.sin_port));
	refresh(f, &set, "rt-whatever-value");
	expect_error(&f->o, TRIB_ERR_PERM, "refusing plain http");
}

static void test_broken_json(void **state)
{
	struct fixture *f = *state;
	struct trib_oauth_settings set = public_settings();
	char *rt = grant(PUBLIC_CLIENT, SCOPE);

	fault("{\"kind\": \"broken_json\"}");
	refresh(f, &set, rt);
	expect_error(&f->o, TRIB_ERR_TEMP,
		     "the token endpoint: the answer is truncated JSON");
	assert_false(f->o.reauthorize);
	still_works(f, rt);
	free(rt);
}

static void test_huge_json(void **state)
{
	struct fixture *f = *state;
	struct trib_oauth_settings set = public_settings();
	char *rt = grant(PUBLIC_CLIENT, SCOPE);

	/* with a Content-Length of 1 MiB: refused before reading it */
	fault("{\"kind\": \"huge_json\"}");
	refresh(f, &set, rt);
	expect_error(&f->o, TRIB_ERR_TEMP, "larger than 65536 bytes");
	/* chunked, no length: cut at the ceiling */
	fault("{\"kind\": \"huge_json\", \"chunked\": true}");
	refresh(f, &set, rt);
	expect_error(&f->o, TRIB_ERR_TEMP, "larger than 65536 bytes");
	assert_false(log_has("tok-huge"));
	still_works(f, rt);
	free(rt);
}

static void test_cancel(void **state)
{
	struct fixture *f = *state;
	struct trib_oauth_settings set = public_settings();
	struct trib_oauth_request *req;
	char *rt = grant(PUBLIC_CLIENT, SCOPE);

	/* abort in flight */
	fault("{\"kind\": \"delay\", \"seconds\": 2}");
	outcome_clear(&f->o);
	req = trib_oauth_refresh(f->http, &set, rt, oauth_cb, &f->o);
	assert_non_null(req);
	trib_oauth_request_abort(&req);
	assert_null(req);
	assert_int_equal(f->o.calls, 1);
	assert_int_equal(f->o.error_class, TRIB_ERR_CANCELED);

	/* the loop destroyed under a request in flight */
	fault("{\"kind\": \"delay\", \"seconds\": 2}");
	outcome_clear(&f->o);
	req = trib_oauth_refresh(f->http, &set, rt, oauth_cb, &f->o);
	assert_non_null(req);
	/* a second for it to reach the stand-in, which sits on it */
	assert_false(itest_run_until(f->loop, &f->o.done, 1));
	trib_loop_destroy(&f->loop);
	assert_int_equal(f->o.calls, 1);
	assert_int_equal(f->o.error_class, TRIB_ERR_CANCELED);
	/* the client outlives the loop only to be destroyed */
	assert_null(trib_oauth_refresh(f->http, &set, rt, oauth_cb, &f->o));
	trib_http_client_destroy(&f->http);
	free(rt);
}

/* ---- the token logs in ---- */

struct imap_wait {
	bool done;
	enum trib_imap_status status;
	char *error;
};

static void imap_cb(const struct trib_imap_reply *reply, void *context)
{
	struct imap_wait *w = context;

	w->done = true;
	w->status = reply->status;
	free(w->error);
	w->error = reply->error != NULL ? trib_strdup(reply->error) : NULL;
}

static void imap_wait(struct trib_loop *loop, struct imap_wait *w)
{
	assert_true(itest_run_until(loop, &w->done, DEADLINE));
	w->done = false;
	if (w->status != TRIB_IMAP_STATUS_OK)
		fail_msg("IMAP: %s", w->error != NULL ? w->error : "?");
}

static void test_token_logs_in(void **state)
{
	struct fixture *f = *state;
	const struct itest_env *e = itest_env();
	struct trib_oauth_settings set = public_settings();
	struct trib_imap_client_settings iset = {
		.host = e->host,
		.port = e->imaps_port,
		.tls_mode = TRIB_IMAP_TLS_IMPLICIT,
		.ca_file = e->ca,
		.tls_verify = true,
		.logger = &logger,
		.trace = true,
	};
	struct trib_imap_client *imap;
	struct imap_wait w = { 0 };
	char *rt = grant(PUBLIC_CLIENT, SCOPE);
	const char *error;

	refresh(f, &set, rt);
	expect_ok(&f->o);
	imap = trib_imap_client_create(f->loop, &iset, &error);
	assert_non_null(imap);
	trib_imap_client_connect(imap, imap_cb, &w);
	imap_wait(f->loop, &w);
	trib_imap_client_authenticate(imap, "XOAUTH2", e->user,
				      f->o.token->access_token, imap_cb, &w);
	imap_wait(f->loop, &w);
	assert_true(trib_imap_client_is_authenticated(imap));
	trib_imap_client_destroy(&imap);
	free(w.error);
	free(rt);
}

/* Last: nothing secret the test saw is in the engine's log. */
static void test_no_secret_in_log(void **state)
{
	(void)state;
	assert_true(seen_count > 20);
	assert_true(log_len > 0);
	for (unsigned int i = 0; i < seen_count; i++) {
		if (strstr(log_all, seen[i]) != NULL)
			fail_msg("a secret is in the log: %.12s...", seen[i]);
	}
	/* and the debug log says what happened */
	assert_true(log_has("oauth-test: POST https://127.0.0.1:"));
	assert_true(log_has("/token: HTTP 200"));
	assert_true(log_has("alice@example.com/work: refresh_token request "
			    "to https://127.0.0.1:"));
}

int main(void)
{
	const struct itest_env *e;
	const struct CMUnitTest tests[] = {
		cmocka_unit_test_setup_teardown(test_refresh_rotation, setup,
						teardown),
		cmocka_unit_test_setup_teardown(test_refresh_without_rotation,
						setup, teardown),
		cmocka_unit_test_setup_teardown(test_refresh_revoked, setup,
						teardown),
		cmocka_unit_test_setup_teardown(test_client_secret_rules, setup,
						teardown),
		cmocka_unit_test_setup_teardown(test_authorization_code_pkce,
						setup, teardown),
		cmocka_unit_test_setup_teardown(test_device_poll_once, setup,
						teardown),
		cmocka_unit_test_setup_teardown(test_device_poller, setup,
						teardown),
		cmocka_unit_test_setup_teardown(test_client_credentials, setup,
						teardown),
		cmocka_unit_test_setup_teardown(test_429_retry_after, setup,
						teardown),
		cmocka_unit_test_setup_teardown(test_5xx, setup, teardown),
		cmocka_unit_test_setup_teardown(test_slow_endpoint, setup,
						teardown),
		cmocka_unit_test_setup_teardown(test_dead_endpoint, setup,
						teardown),
		cmocka_unit_test_setup_teardown(test_broken_json, setup,
						teardown),
		cmocka_unit_test_setup_teardown(test_huge_json, setup,
						teardown),
		cmocka_unit_test_setup_teardown(test_cancel, setup, teardown),
		cmocka_unit_test_setup_teardown(test_token_logs_in, setup,
						teardown),
		cmocka_unit_test(test_no_secret_in_log),
	};
	int ret;

	e = itest_env();
	snprintf(token_url, sizeof(token_url), "%s/token", e->oauth_url);
	snprintf(device_url, sizeof(device_url), "%s/devicecode", e->oauth_url);
	snprintf(authorize_url, sizeof(authorize_url), "%s/authorize",
		 e->oauth_url);
	snprintf(tenant_template, sizeof(tenant_template),
		 "%s/{tenant}/oauth2/v2.0/token", e->oauth_url);
	control_void("/control/reset", "{}");
	ret = cmocka_run_group_tests(tests, NULL, NULL);
	for (unsigned int i = 0; i < seen_count; i++)
		free(seen[i]);
	free(seen);
	free(log_all);
	itest_log_clear();
	/* itest_env() initialized libcurl; our HTTP clients balanced their
	 * own init and cleanup. */
	curl_global_cleanup();
	return ret;
}
