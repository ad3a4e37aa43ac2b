#ifndef TRIB_OAUTH_PARSE_H
#define TRIB_OAUTH_PARSE_H

/* oauth-parse.h: what an OAuth 2.0 token endpoint (RFC 6749 section 5)
 * and a device authorization endpoint (RFC 8628 section 3.2) answer,
 * turned into a token, a device code, or an error class with a plain
 * explanation. Pure: no I/O, no clock, no logging (oauth-parse.c); the
 * engine that talks to the endpoints is oauth.h.
 *
 * Input ceilings: TRIB_OAUTH_MAX_RESPONSE bytes, TRIB_OAUTH_MAX_DEPTH
 * levels of JSON nesting, TRIB_OAUTH_MAX_TOKEN_LEN per token. Tokens must
 * be VSCHAR (printable ASCII, no space), as RFC 6749 appendix A says, so
 * nothing a server sends can break the SASL exchange they go into.
 *
 * Error classes: an answer the server means as final (invalid_grant,
 * invalid_client, ...) is PERM; 5xx, 408 and temporarily_unavailable are
 * TEMP; 429 is WAIT; an answer we cannot read (not JSON, too large, too
 * deep, a field of the wrong type) is TEMP: a broken endpoint or proxy is
 * no reason to throw a refresh token away.
 *
 * Secrets: tokens and device codes are malloc()ed copies, wiped when
 * freed; the JSON tree they came from is wiped too. Error strings never
 * hold them: server text (error_description) is cut to printable ASCII
 * and anything the caller lists as sent secrets is replaced by
 * "<redacted>". */

#include "error.h"

#include <stdbool.h>
#include <stddef.h>
#include <time.h>

#define TRIB_OAUTH_MAX_RESPONSE (64 * 1024)
#define TRIB_OAUTH_MAX_DEPTH 8
#define TRIB_OAUTH_MAX_TOKEN_LEN 16384
/* expires_in above this is refused as nonsense (ten years). */
#define TRIB_OAUTH_MAX_EXPIRES_IN (10LL * 366 * 24 * 3600)
/* RFC 8628 3.2: poll every 5 s unless told otherwise. */
#define TRIB_OAUTH_DEVICE_DEFAULT_INTERVAL 5
#define TRIB_OAUTH_DEVICE_MAX_INTERVAL 600

enum trib_oauth_grant {
	TRIB_OAUTH_GRANT_REFRESH_TOKEN,
	TRIB_OAUTH_GRANT_AUTHORIZATION_CODE,
	TRIB_OAUTH_GRANT_DEVICE_CODE,
	TRIB_OAUTH_GRANT_CLIENT_CREDENTIALS,
	/* The device authorization request (RFC 8628 3.1), not a grant. */
	TRIB_OAUTH_DEVICE_AUTHORIZATION,
};

/* The grant_type value ("refresh_token", "urn:ietf:...:device_code"), or
 * "device_authorization". */
const char *trib_oauth_grant_type(enum trib_oauth_grant grant);

struct trib_oauth_token {
	/* Secret. */
	char *access_token;
	/* Secret. NULL when the answer has none (keep the old one). */
	char *refresh_token;
	/* "Bearer" (the only type accepted). */
	char *token_type;
	/* Granted scope, NULL when the answer does not say. */
	char *scope;
	/* Seconds, -1 when the answer does not say. */
	long long expires_in;
	/* now + expires_in by the caller's clock (trib_oauth_token_set_
	 * expiry()); 0 when unknown. */
	time_t expires_at;
};

/* Device polling answers that are no error. */
enum trib_oauth_poll {
	TRIB_OAUTH_POLL_NONE,
	/* authorization_pending: the user has not finished; poll again. */
	TRIB_OAUTH_POLL_PENDING,
	/* slow_down: poll again, 5 s slower from now on. */
	TRIB_OAUTH_POLL_SLOW_DOWN,
};

struct trib_oauth_device_auth;

struct trib_oauth_result {
	/* TRIB_OK: token is set, or (device polling) poll is, or (device
	 * authorization) device is. */
	enum trib_error_class error_class;
	struct trib_oauth_token *token;
	struct trib_oauth_device_auth *device;
	enum trib_oauth_poll poll;
	/* PERM because the user's grant is gone (revoked, expired, denied):
	 * the account needs `tributary authorize` again. PERM without it is
	 * a configuration problem (client id, secret, scope, URL). */
	bool reauthorize;
	/* The server's "error" code (sanitized), or NULL. */
	char *error_code;
	/* One line, no secrets; NULL when OK. */
	char *error;
	/* OK with a caveat, e.g. no refresh token came back; or NULL. */
	char *warning;
	/* Set by the engine from the HTTP answer: Retry-After in seconds,
	 * -1 when absent. */
	long retry_after_secs;
	/* Set by the engine: a refresh token came back that differs from
	 * the one sent (Microsoft rotates on every use). */
	bool refresh_token_rotated;
};

struct trib_oauth_device_auth {
	/* Secret: whoever has it can poll for the user's tokens. */
	char *device_code;
	/* Shown to the user. */
	char *user_code;
	char *verification_uri;
	/* With the user code filled in, or NULL. */
	char *verification_uri_complete;
	/* The provider's own instructions (Microsoft), or NULL. */
	char *message;
	unsigned int expires_in;
	/* Seconds between polls, 1..TRIB_OAUTH_DEVICE_MAX_INTERVAL. */
	unsigned int interval;
};

/* What the parser needs to know to explain an answer. */
struct trib_oauth_parse_context {
	enum trib_oauth_grant grant;
	/* "gmail", "outlook", ... for provider hints; NULL: none. */
	const char *provider;
	/* For "run `tributary authorize -u USER ACCOUNT`"; NULL: a generic
	 * hint. */
	const char *user;
	const char *account;
	/* The scope asked for, or NULL. */
	const char *scope;
	/* NULL-terminated list of what we sent that must never show up in
	 * an error (refresh token, client secret, code, verifier), or NULL. */
	const char *const *secrets;
};

/* Parse a token endpoint answer: HTTP status and body. Fills *result_r
 * (cleared first); the caller frees it with trib_oauth_result_clear(). */
void trib_oauth_parse_token_response(const struct trib_oauth_parse_context *ctx,
				     long http_status, const char *body,
				     size_t size,
				     struct trib_oauth_result *result_r);

/* Parse a device authorization answer into result_r->device, or an
 * error. Same ownership as above. */
void trib_oauth_parse_device_response(
	const struct trib_oauth_parse_context *ctx, long http_status,
	const char *body, size_t size, struct trib_oauth_result *result_r);

void trib_oauth_token_set_expiry(struct trib_oauth_token *token, time_t now);
/* Wipes the secrets. NULL is fine; sets *token to NULL. */
void trib_oauth_token_free(struct trib_oauth_token **token);
void trib_oauth_device_auth_free(struct trib_oauth_device_auth **device);
/* Frees what the result holds (token and device included) and zeroes
 * it (retry_after_secs = -1). */
void trib_oauth_result_clear(struct trib_oauth_result *result);

/* A copy of text, cut to printable ASCII ('?' for anything else) and at
 * most max_len bytes ("..." marks a cut), with every secret of the
 * NULL-terminated list (those of 4 bytes or more) replaced by
 * "<redacted>". */
char *trib_oauth_sanitize(const char *text, size_t len, size_t max_len,
			  const char *const *secrets);

#endif
