/* oauth-parse.c: token and device authorization answers (see
 * oauth-parse.h). Pure: bytes in, a result out. */

#include "oauth-parse.h"

#include "alloc.h"

#include <json-c/json.h>
#include <limits.h>
#include <math.h>
#include <openssl/crypto.h>
#include <stdarg.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#define DESCRIPTION_MAX 200
#define ERROR_CODE_MAX 64
#define USER_TEXT_MAX 1024
#define URI_MAX 2048
#define REDACTED "<redacted>"

const char *trib_oauth_grant_type(enum trib_oauth_grant grant)
{
	switch (grant) {
	case TRIB_OAUTH_GRANT_REFRESH_TOKEN:
		return "refresh_token";
	case TRIB_OAUTH_GRANT_AUTHORIZATION_CODE:
		return "authorization_code";
	case TRIB_OAUTH_GRANT_DEVICE_CODE:
		return "urn:ietf:params:oauth:grant-type:device_code";
	case TRIB_OAUTH_GRANT_CLIENT_CREDENTIALS:
		return "client_credentials";
	case TRIB_OAUTH_DEVICE_AUTHORIZATION:
		return "device_authorization";
	}
	return "unknown";
}

/* ---- freeing ---- */

void trib_oauth_token_free(struct trib_oauth_token **_token)
{
	struct trib_oauth_token *token = *_token;

	if (token == NULL)
		return;
	trib_secret_free(&token->access_token);
	trib_secret_free(&token->refresh_token);
	free(token->token_type);
	free(token->scope);
	OPENSSL_cleanse(token, sizeof(*token));
	free(token);
	*_token = NULL;
}

void trib_oauth_device_auth_free(struct trib_oauth_device_auth **_device)
{
	struct trib_oauth_device_auth *device = *_device;

	if (device == NULL)
		return;
	trib_secret_free(&device->device_code);
	free(device->user_code);
	free(device->verification_uri);
	free(device->verification_uri_complete);
	free(device->message);
	free(device);
	*_device = NULL;
}

void trib_oauth_result_clear(struct trib_oauth_result *result)
{
	trib_oauth_token_free(&result->token);
	trib_oauth_device_auth_free(&result->device);
	free(result->error_code);
	free(result->error);
	free(result->warning);
	memset(result, 0, sizeof(*result));
	result->retry_after_secs = -1;
}

void trib_oauth_token_set_expiry(struct trib_oauth_token *token, time_t now)
{
	token->expires_at =
		token->expires_in < 0 ? 0 : now + (time_t)token->expires_in;
}

/* ---- text from the server ---- */

char *trib_oauth_sanitize(const char *text, size_t len, size_t max_len,
			  const char *const *secrets)
{
	size_t out_len = 0, i, j, slen, cap;
	bool cut = false;
	char *out;

	if (max_len < 4)
		max_len = 4;
	/* Room for every byte turning into REDACTED, and the cut mark. */
	cap = (len < max_len ? len : max_len) * sizeof(REDACTED) + 4;
	out = trib_malloc(cap + 1);
	for (i = 0; i < len;) {
		bool replaced = false;

		if (out_len >= max_len) {
			cut = true;
			break;
		}
		for (j = 0; secrets != NULL && secrets[j] != NULL; j++) {
			slen = strlen(secrets[j]);
			if (slen >= 4 && slen <= len - i &&
			    memcmp(text + i, secrets[j], slen) == 0) {
				memcpy(out + out_len, REDACTED,
				       sizeof(REDACTED) - 1);
				out_len += sizeof(REDACTED) - 1;
				i += slen;
				replaced = true;
				break;
			}
		}
		if (replaced)
			continue;
		out[out_len++] = (unsigned char)text[i] >= 0x20 &&
						 (unsigned char)text[i] < 0x7f
					 ? text[i]
					 : '?';
		i++;
	}
	if (out_len > max_len) {
		out_len = max_len;
		cut = true;
	}
	if (cut) {
		memcpy(out + out_len, "...", 3);
		out_len += 3;
	}
	out[out_len] = '\0';
	return out;
}

/* ---- JSON ---- */

/* Wipe every string in the tree: tokens live there. The depth is capped
 * by the tokener, so the recursion is too. */
static void json_wipe(struct json_object *obj)
{
	size_t i, n;

	switch (json_object_get_type(obj)) {
	case json_type_string:
		OPENSSL_cleanse((char *)json_object_get_string(obj),
				(size_t)json_object_get_string_len(obj));
		break;
	case json_type_object: {
		json_object_object_foreach(obj, key, val)
		{
			(void)key;
			json_wipe(val);
		}
		break;
	}
	case json_type_array:
		n = json_object_array_length(obj);
		for (i = 0; i < n; i++)
			json_wipe(json_object_array_get_idx(obj, i));
		break;
	default:
		break;
	}
}

static void json_free(struct json_object *obj)
{
	if (obj == NULL)
		return;
	json_wipe(obj);
	json_object_put(obj);
}

/* json-c keeps the last string it read in the tokener's buffer. Version
 * 0.16 still publishes the struct (deprecated), so wipe it there. */
static void tokener_free(struct json_tokener *tok)
{
	if (tok->pb != NULL && tok->pb->buf != NULL && tok->pb->size > 0)
		OPENSSL_cleanse(tok->pb->buf, (size_t)tok->pb->size);
	json_tokener_free(tok);
}

static bool is_json_space(char c)
{
	return c == ' ' || c == '\t' || c == '\r' || c == '\n';
}

/* The answer as a JSON object, or NULL with *why_r. */
static struct json_object *json_parse_object(const char *body, size_t size,
					     const char **why_r)
{
	struct json_tokener *tok;
	struct json_object *obj;
	enum json_tokener_error jerr;
	size_t end, i;
	char *copy;

	if (size == 0) {
		*why_r = "the answer is empty";
		return NULL;
	}
	if (size > TRIB_OAUTH_MAX_RESPONSE) {
		*why_r = "the answer is larger than 64 KiB";
		return NULL;
	}
	if (memchr(body, '\0', size) != NULL) {
		*why_r = "the answer is not JSON (NUL byte)";
		return NULL;
	}
	/* json-c's depth allows one level less than it says. */
	tok = json_tokener_new_ex(TRIB_OAUTH_MAX_DEPTH + 1);
	if (tok == NULL)
		abort();
	json_tokener_set_flags(tok, JSON_TOKENER_STRICT |
					    JSON_TOKENER_VALIDATE_UTF8);
	/* With its NUL: that tells json-c the input ends there. */
	copy = trib_strndup(body, size);
	obj = json_tokener_parse_ex(tok, copy, (int)size + 1);
	jerr = json_tokener_get_error(tok);
	end = json_tokener_get_parse_end(tok);
	tokener_free(tok);
	OPENSSL_cleanse(copy, size);
	free(copy);
	if (obj == NULL || jerr != json_tokener_success) {
		json_free(obj);
		if (jerr == json_tokener_error_depth)
			*why_r = "the answer is JSON nested too deeply";
		else if (jerr == json_tokener_continue ||
			 jerr == json_tokener_error_parse_eof)
			*why_r = "the answer is truncated JSON";
		else
			*why_r = "the answer is not valid JSON";
		return NULL;
	}
	for (i = end; i < size; i++) {
		if (!is_json_space(body[i])) {
			json_free(obj);
			*why_r = "the answer has data after its JSON";
			return NULL;
		}
	}
	if (!json_object_is_type(obj, json_type_object)) {
		json_free(obj);
		*why_r = "the answer is not a JSON object";
		return NULL;
	}
	return obj;
}

/* 1: a string (*value_r, *len_r), 0: absent or null, -1: another type. */
static int field_string(struct json_object *obj, const char *name,
			const char **value_r, size_t *len_r)
{
	struct json_object *val;

	if (!json_object_object_get_ex(obj, name, &val) || val == NULL)
		return 0;
	if (!json_object_is_type(val, json_type_string))
		return -1;
	*value_r = json_object_get_string(val);
	*len_r = (size_t)json_object_get_string_len(val);
	return 1;
}

/* 1: seconds in 0..max (*secs_r), 0: absent or null, -1: anything else.
 * A number, or a string of digits (older Microsoft endpoints). */
static int field_seconds(struct json_object *obj, const char *name,
			 long long max, long long *secs_r)
{
	struct json_object *val;
	const char *s;
	long long v = 0;
	double d;
	size_t i, len;

	if (!json_object_object_get_ex(obj, name, &val) || val == NULL)
		return 0;
	switch (json_object_get_type(val)) {
	case json_type_int:
		if (json_object_get_int64(val) < 0 ||
		    json_object_get_int64(val) > max)
			return -1;
		*secs_r = json_object_get_int64(val);
		return 1;
	case json_type_double:
		d = json_object_get_double(val);
		if (!isfinite(d) || d < 0 || d > (double)max)
			return -1;
		*secs_r = (long long)d;
		return 1;
	case json_type_string:
		s = json_object_get_string(val);
		len = (size_t)json_object_get_string_len(val);
		if (len == 0 || len > 12 || strspn(s, "0123456789") != len)
			return -1;
		for (i = 0; i < len; i++)
			v = v * 10 + (s[i] - '0');
		if (v > max)
			return -1;
		*secs_r = v;
		return 1;
	default:
		return -1;
	}
}

/* RFC 6749 appendix A: VSCHAR, here with a length ceiling. */
static bool token_ok(const char *s, size_t len)
{
	size_t i;

	if (len == 0 || len > TRIB_OAUTH_MAX_TOKEN_LEN)
		return false;
	for (i = 0; i < len; i++) {
		if ((unsigned char)s[i] < 0x21 || (unsigned char)s[i] > 0x7e)
			return false;
	}
	return true;
}

/* ---- results ---- */

static void result_init(struct trib_oauth_result *r)
{
	memset(r, 0, sizeof(*r));
	r->retry_after_secs = -1;
}

static void result_fail(struct trib_oauth_result *r,
			enum trib_error_class error_class, const char *fmt, ...)
	TRIB_ATTR_PRINTF(3, 4);

static void result_fail(struct trib_oauth_result *r,
			enum trib_error_class error_class, const char *fmt, ...)
{
	va_list args;

	va_start(args, fmt);
	free(r->error);
	r->error = trib_strdup_vprintf(fmt, args);
	va_end(args);
	r->error_class = error_class;
	trib_oauth_token_free(&r->token);
}

static const char *endpoint_name(const struct trib_oauth_parse_context *ctx)
{
	return ctx->grant == TRIB_OAUTH_DEVICE_AUTHORIZATION
		       ? "the device authorization endpoint"
		       : "the token endpoint";
}

static bool provider_is(const struct trib_oauth_parse_context *ctx,
			const char *name)
{
	return ctx->provider != NULL && strcmp(ctx->provider, name) == 0;
}

static bool scope_has(const char *scope, const char *word)
{
	size_t len = strlen(word);
	const char *p = scope;

	while ((p = strstr(p, word)) != NULL) {
		if ((p == scope || p[-1] == ' ') &&
		    (p[len] == '\0' || p[len] == ' '))
			return true;
		p += len;
	}
	return false;
}

/* "run `tributary authorize -u alice work`" */
static char *authorize_hint(const struct trib_oauth_parse_context *ctx)
{
	if (ctx->user != NULL && ctx->account != NULL)
		return trib_strdup_printf("run `tributary authorize -u %s %s`",
					  ctx->user, ctx->account);
	if (ctx->account != NULL)
		return trib_strdup_printf("run `tributary authorize %s`",
					  ctx->account);
	return trib_strdup("run `tributary authorize`");
}

/* The "error" code: [A-Za-z0-9_.-]{1,64} and no secret in it, or NULL. */
static char *error_code_copy(const char *code, size_t len,
			     const char *const *secrets)
{
	if (len == 0 || len > ERROR_CODE_MAX ||
	    strspn(code, "abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ"
			 "0123456789_.-") != len)
		return NULL;
	for (unsigned int i = 0; secrets != NULL && secrets[i] != NULL; i++) {
		if (strlen(secrets[i]) >= 4 && strstr(code, secrets[i]) != NULL)
			return NULL;
	}
	return trib_strndup(code, len);
}

static void explain_invalid_grant(const struct trib_oauth_parse_context *ctx,
				  struct trib_oauth_result *r, const char *hint,
				  const char *detail)
{
	const char *provider_hint = "";

	if (provider_is(ctx, "gmail"))
		provider_hint = " (Google: an OAuth app whose publishing "
				"status is \"Testing\" loses its refresh "
				"tokens after 7 days: set it to \"In "
				"production\")";
	else if (provider_is(ctx, "outlook"))
		provider_hint = " (Microsoft: refresh tokens end after 90 "
				"days unused, on a password change, or when "
				"an administrator revokes them)";
	switch (ctx->grant) {
	case TRIB_OAUTH_GRANT_REFRESH_TOKEN:
		result_fail(r, TRIB_ERR_PERM,
			    "the refresh token was revoked or expired: %s%s%s",
			    hint, provider_hint, detail);
		r->reauthorize = true;
		break;
	case TRIB_OAUTH_GRANT_AUTHORIZATION_CODE:
		result_fail(r, TRIB_ERR_PERM,
			    "the authorization code was refused (expired, "
			    "used already, issued for another redirect URI, "
			    "or the PKCE code verifier does not match): %s "
			    "again%s",
			    hint, detail);
		r->reauthorize = true;
		break;
	case TRIB_OAUTH_GRANT_DEVICE_CODE:
		result_fail(r, TRIB_ERR_PERM,
			    "the device code was refused: %s again%s", hint,
			    detail);
		r->reauthorize = true;
		break;
	default:
		result_fail(r, TRIB_ERR_PERM, "%s refused the %s grant%s",
			    endpoint_name(ctx),
			    trib_oauth_grant_type(ctx->grant), detail);
		break;
	}
}

/* An OAuth error answer: {"error": code, "error_description": text}. */
static void explain_error(const struct trib_oauth_parse_context *ctx,
			  long status, const char *code,
			  struct trib_oauth_result *r, const char *detail)
{
	bool device = ctx->grant == TRIB_OAUTH_GRANT_DEVICE_CODE;
	bool app = ctx->grant == TRIB_OAUTH_GRANT_CLIENT_CREDENTIALS;
	char *hint = authorize_hint(ctx);
	const char *ep = endpoint_name(ctx);

	if (strcmp(code, "invalid_grant") == 0) {
		explain_invalid_grant(ctx, r, hint, detail);
	} else if (strcmp(code, "access_denied") == 0) {
		if (app) {
			result_fail(
				r, TRIB_ERR_PERM,
				"access denied to the app: an administrator "
				"must grant it consent%s",
				detail);
		} else {
			result_fail(r, TRIB_ERR_PERM,
				    "access was denied (by the user or an "
				    "administrator): %s to sign in again%s",
				    hint, detail);
			r->reauthorize = true;
		}
	} else if (strcmp(code, "expired_token") == 0 && device) {
		result_fail(r, TRIB_ERR_PERM,
			    "the device code expired before the sign-in was "
			    "finished: %s again%s",
			    hint, detail);
		r->reauthorize = true;
	} else if (strcmp(code, "invalid_client") == 0) {
		result_fail(r, TRIB_ERR_PERM,
			    "%s does not accept this client: check the client "
			    "id and the client secret%s%s",
			    ep,
			    provider_is(ctx, "outlook")
				    ? " (Microsoft: a public client sends no "
				      "secret and needs \"Allow public client "
				      "flows\" on; an app-only client needs "
				      "its secret for this tenant)"
				    : "",
			    detail);
	} else if (strcmp(code, "unauthorized_client") == 0) {
		result_fail(r, TRIB_ERR_PERM,
			    "the app registration does not allow the %s grant "
			    "for this client%s%s",
			    trib_oauth_grant_type(ctx->grant),
			    provider_is(ctx, "outlook")
				    ? " (Microsoft: turn on \"Allow public "
				      "client flows\" for the device code "
				      "flow)"
				    : "",
			    detail);
	} else if (strcmp(code, "invalid_scope") == 0) {
		result_fail(
			r, TRIB_ERR_PERM,
			"the scope was refused: check oauth_scope%s%s",
			provider_is(ctx, "gmail") &&
					ctx->grant ==
						TRIB_OAUTH_DEVICE_AUTHORIZATION
				? " (Google allows no Gmail scope in the "
				  "device flow: use the browser flow)"
				: "",
			detail);
	} else if (strcmp(code, "unsupported_grant_type") == 0) {
		result_fail(r, TRIB_ERR_PERM,
			    "%s does not support the %s grant%s", ep,
			    trib_oauth_grant_type(ctx->grant), detail);
	} else if (strcmp(code, "invalid_request") == 0) {
		result_fail(r, TRIB_ERR_PERM,
			    "%s refused the request as malformed%s", ep,
			    detail);
	} else if (strcmp(code, "temporarily_unavailable") == 0 ||
		   strcmp(code, "server_error") == 0) {
		result_fail(r, TRIB_ERR_TEMP, "%s is unavailable for now%s", ep,
			    detail);
	} else if (device && strcmp(code, "authorization_pending") == 0) {
		r->error_class = TRIB_OK;
		r->poll = TRIB_OAUTH_POLL_PENDING;
	} else if (device && strcmp(code, "slow_down") == 0) {
		r->error_class = TRIB_OK;
		r->poll = TRIB_OAUTH_POLL_SLOW_DOWN;
	} else {
		result_fail(r, TRIB_ERR_PERM,
			    "%s refused the request (HTTP %ld)%s", ep, status,
			    detail);
	}
	free(hint);
}

/* The body holds an "error" member: explain it. */
static void error_from_json(const struct trib_oauth_parse_context *ctx,
			    long status, struct json_object *obj,
			    struct trib_oauth_result *r)
{
	const char *code = NULL, *desc = NULL;
	size_t code_len = 0, desc_len = 0;
	char *detail, *desc_clean = NULL;

	if (field_string(obj, "error", &code, &code_len) != 1 ||
	    (r->error_code = error_code_copy(code, code_len, ctx->secrets)) ==
		    NULL) {
		result_fail(r, status >= 400 ? TRIB_ERR_PERM : TRIB_ERR_TEMP,
			    "%s answered HTTP %ld with an unreadable error",
			    endpoint_name(ctx), status);
		return;
	}
	if (field_string(obj, "error_description", &desc, &desc_len) == 1 &&
	    desc_len > 0)
		desc_clean = trib_oauth_sanitize(desc, desc_len,
						 DESCRIPTION_MAX, ctx->secrets);
	detail = desc_clean != NULL
			 ? trib_strdup_printf(" [%s: %s]", r->error_code,
					      desc_clean)
			 : trib_strdup_printf(" [%s]", r->error_code);
	explain_error(ctx, status, r->error_code, r, detail);
	free(detail);
	free(desc_clean);
}

static void token_warn_no_refresh(const struct trib_oauth_parse_context *ctx,
				  struct trib_oauth_result *r)
{
	if (ctx->grant != TRIB_OAUTH_GRANT_AUTHORIZATION_CODE &&
	    ctx->grant != TRIB_OAUTH_GRANT_DEVICE_CODE)
		return;
	if (provider_is(ctx, "gmail"))
		r->warning = trib_strdup(
			"no refresh token came back: Google sends one only "
			"from the consent screen with access_type=offline and "
			"prompt=consent; the account stops when the access "
			"token expires");
	else if (ctx->scope != NULL && !scope_has(ctx->scope, "offline_access"))
		r->warning = trib_strdup(
			"no refresh token came back: the scope lacks "
			"offline_access, without which Microsoft (and other "
			"OpenID providers) issue none: add offline_access to "
			"oauth_scope and authorize again");
	else
		r->warning = trib_strdup(
			"no refresh token came back: the account needs "
			"`tributary authorize` again when the access token "
			"expires");
}

/* A 2xx answer without "error": the token. */
static void token_from_json(const struct trib_oauth_parse_context *ctx,
			    struct json_object *obj,
			    struct trib_oauth_result *r)
{
	struct trib_oauth_token *token;
	const char *s = NULL;
	size_t len = 0;
	long long secs = -1;
	int ret;

	ret = field_string(obj, "access_token", &s, &len);
	if (ret != 1 || !token_ok(s, len)) {
		result_fail(r, TRIB_ERR_TEMP, "%s: the answer has %s",
			    endpoint_name(ctx),
			    ret == 0   ? "no access_token"
			    : ret < 0  ? "an access_token that is not a string"
			    : len == 0 ? "an empty access_token"
				       : "an access_token that is too long or "
					 "has characters a bearer token "
					 "cannot have");
		return;
	}
	token = trib_calloc(1, sizeof(*token));
	r->token = token;
	token->access_token = trib_strndup(s, len);
	token->expires_in = -1;

	ret = field_string(obj, "refresh_token", &s, &len);
	if (ret < 0 || (ret == 1 && !token_ok(s, len))) {
		result_fail(r, TRIB_ERR_TEMP,
			    "%s: the answer has a refresh_token that is not "
			    "a valid token",
			    endpoint_name(ctx));
		return;
	}
	if (ret == 1)
		token->refresh_token = trib_strndup(s, len);

	ret = field_string(obj, "token_type", &s, &len);
	if (ret < 0) {
		result_fail(r, TRIB_ERR_TEMP,
			    "%s: the answer's token_type is not a string",
			    endpoint_name(ctx));
		return;
	}
	if (ret == 1 && (len != 6 || strncasecmp(s, "Bearer", 6) != 0)) {
		char *type = trib_oauth_sanitize(s, len, 32, ctx->secrets);

		result_fail(r, TRIB_ERR_PERM,
			    "%s: token_type \"%s\" is not supported (Bearer "
			    "only)",
			    endpoint_name(ctx), type);
		free(type);
		return;
	}
	/* RFC 6749 makes it required; some servers leave it out. */
	token->token_type = trib_strdup("Bearer");

	ret = field_seconds(obj, "expires_in", TRIB_OAUTH_MAX_EXPIRES_IN,
			    &secs);
	if (ret < 0) {
		result_fail(r, TRIB_ERR_TEMP,
			    "%s: the answer's expires_in is not a number of "
			    "seconds",
			    endpoint_name(ctx));
		return;
	}
	token->expires_in = ret == 1 ? secs : -1;

	/* Only informative: another type is ignored. */
	if (field_string(obj, "scope", &s, &len) == 1)
		token->scope = trib_oauth_sanitize(s, len, USER_TEXT_MAX, NULL);

	r->error_class = TRIB_OK;
	if (token->refresh_token == NULL)
		token_warn_no_refresh(ctx, r);
}

/* Status lines the body cannot change: 429, 5xx, 408, redirects. True
 * when r is decided. */
static bool status_decides(const struct trib_oauth_parse_context *ctx,
			   long status, struct trib_oauth_result *r)
{
	const char *ep = endpoint_name(ctx);

	if (status == 429)
		result_fail(r, TRIB_ERR_WAIT,
			    "%s asks us to slow down (HTTP 429)", ep);
	else if (status >= 500 || status == 408)
		result_fail(r, TRIB_ERR_TEMP, "%s failed (HTTP %ld)", ep,
			    status);
	else if (status >= 300 && status < 400)
		result_fail(r, TRIB_ERR_PERM,
			    "%s answered with a redirect (HTTP %ld), which is "
			    "not followed: check the URL",
			    ep, status);
	else if (status < 200)
		result_fail(r, TRIB_ERR_TEMP,
			    "%s answered an unexpected HTTP %ld", ep, status);
	else
		return false;
	return true;
}

/* Common to both answers. Returns the object to read a success from, or
 * NULL when r is decided. */
static struct json_object *
answer_begin(const struct trib_oauth_parse_context *ctx, long status,
	     const char *body, size_t size, struct trib_oauth_result *r)
{
	struct json_object *obj;
	const char *why = NULL;

	result_init(r);
	if (status_decides(ctx, status, r))
		return NULL;
	obj = json_parse_object(body, size, &why);
	if (status >= 400) {
		if (obj != NULL &&
		    json_object_object_get_ex(obj, "error", NULL))
			error_from_json(ctx, status, obj, r);
		else
			result_fail(r, TRIB_ERR_PERM,
				    "%s answered HTTP %ld without an OAuth "
				    "error: check the URL",
				    endpoint_name(ctx), status);
		json_free(obj);
		return NULL;
	}
	if (obj == NULL) {
		result_fail(r, TRIB_ERR_TEMP, "%s: %s", endpoint_name(ctx),
			    why);
		return NULL;
	}
	if (json_object_object_get_ex(obj, "error", NULL)) {
		error_from_json(ctx, status, obj, r);
		json_free(obj);
		return NULL;
	}
	return obj;
}

void trib_oauth_parse_token_response(const struct trib_oauth_parse_context *ctx,
				     long http_status, const char *body,
				     size_t size,
				     struct trib_oauth_result *result_r)
{
	struct json_object *obj;

	obj = answer_begin(ctx, http_status, body, size, result_r);
	if (obj == NULL)
		return;
	token_from_json(ctx, obj, result_r);
	json_free(obj);
}

/* ---- device authorization ---- */

/* An http(s) URL of printable ASCII without the characters RFC 3986
 * never allows (it is shown to the user, maybe opened). */
static bool uri_ok(const char *s, size_t len)
{
	size_t i;

	if (len <= 8 || len > URI_MAX ||
	    (strncmp(s, "https://", 8) != 0 && strncmp(s, "http://", 7) != 0))
		return false;
	for (i = 0; i < len; i++) {
		if ((unsigned char)s[i] < 0x21 || (unsigned char)s[i] > 0x7e ||
		    strchr("\"<>\\^`{|}", s[i]) != NULL)
			return false;
	}
	return true;
}

static const char *device_fields(struct json_object *obj,
				 struct trib_oauth_device_auth *dev)
{
	const char *s = NULL;
	size_t len = 0;
	long long secs;
	int ret;

	if (field_string(obj, "device_code", &s, &len) != 1 ||
	    !token_ok(s, len))
		return "no valid device_code";
	dev->device_code = trib_strndup(s, len);
	if (field_string(obj, "user_code", &s, &len) != 1 || len == 0 ||
	    len > 64)
		return "no valid user_code";
	dev->user_code = trib_oauth_sanitize(s, len, 64, NULL);
	/* Google spells it verification_url. */
	if (field_string(obj, "verification_uri", &s, &len) != 1 &&
	    field_string(obj, "verification_url", &s, &len) != 1)
		return "no verification_uri";
	if (!uri_ok(s, len))
		return "a verification_uri that is not an http(s) URL";
	dev->verification_uri = trib_strndup(s, len);
	ret = field_string(obj, "verification_uri_complete", &s, &len);
	if (ret == 1 && uri_ok(s, len))
		dev->verification_uri_complete = trib_strndup(s, len);
	if (field_string(obj, "message", &s, &len) == 1 && len > 0)
		dev->message = trib_oauth_sanitize(s, len, USER_TEXT_MAX, NULL);
	if (field_seconds(obj, "expires_in", 7 * 24 * 3600, &secs) != 1 ||
	    secs == 0)
		return "no valid expires_in";
	dev->expires_in = (unsigned int)secs;
	ret = field_seconds(obj, "interval", LLONG_MAX, &secs);
	if (ret < 0)
		return "an interval that is not a number of seconds";
	if (ret == 0)
		secs = TRIB_OAUTH_DEVICE_DEFAULT_INTERVAL;
	if (secs < 1)
		secs = 1;
	if (secs > TRIB_OAUTH_DEVICE_MAX_INTERVAL)
		secs = TRIB_OAUTH_DEVICE_MAX_INTERVAL;
	dev->interval = (unsigned int)secs;
	return NULL;
}

void trib_oauth_parse_device_response(
	const struct trib_oauth_parse_context *ctx, long http_status,
	const char *body, size_t size, struct trib_oauth_result *result_r)
{
	struct trib_oauth_device_auth *dev;
	struct json_object *obj;
	const char *why;

	obj = answer_begin(ctx, http_status, body, size, result_r);
	if (obj == NULL) {
		if (result_r->error_class == TRIB_OK) {
			/* A polling answer makes no sense here. */
			result_fail(result_r, TRIB_ERR_TEMP,
				    "%s answered with a polling status",
				    endpoint_name(ctx));
		}
		return;
	}
	dev = trib_calloc(1, sizeof(*dev));
	why = device_fields(obj, dev);
	json_free(obj);
	if (why != NULL) {
		trib_oauth_device_auth_free(&dev);
		result_fail(result_r, TRIB_ERR_TEMP, "%s: the answer has %s",
			    endpoint_name(ctx), why);
		return;
	}
	result_r->error_class = TRIB_OK;
	result_r->device = dev;
}
