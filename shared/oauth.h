#ifndef TRIB_OAUTH_H
#define TRIB_OAUTH_H

/* oauth.h: the OAuth 2.0 token engine: requests to a provider's token
 * endpoint over the HTTP client (http.h) on the event loop, their answers
 * parsed by oauth-parse.h.
 *
 *   refresh_token grant (RFC 6749 6)          trib_oauth_refresh()
 *   authorization_code grant with PKCE        trib_oauth_exchange_code()
 *     (RFC 6749 4.1, RFC 7636 S256)           + trib_oauth_pkce_make(),
 *                                               trib_oauth_random_state(),
 *                                               trib_oauth_authorize_url()
 *   device authorization (RFC 8628)           trib_oauth_device_start(),
 *                                               trib_oauth_device_poll_once(),
 *                                               trib_oauth_device_poll_start()
 *   client_credentials (Microsoft 365 app)    trib_oauth_client_credentials()
 *
 * Every request's callback fires exactly once, from the loop (never from
 * inside the call that started it): with a token, a device code, a
 * polling status, or an error class (oauth-parse.h says which answers
 * are PERM, TEMP or WAIT; network trouble and timeouts are TEMP; CANCELED
 * when aborted or when the HTTP client or the loop goes away).
 *
 * Rotation: when result->refresh_token_rotated, the caller must store the
 * new refresh token (atomically) before it uses the access token: the old
 * one may already be dead (Microsoft rotates on every use). When the
 * answer has no refresh token, the old one stays valid.
 *
 * Client secrets follow the provider's rule (provider.h): NEVER (Microsoft
 * public clients) sends none even when one is configured, REQUIRED
 * (Google desktop apps) refuses to start without one, OPTIONAL sends it
 * when given. client_credentials always needs one.
 *
 * Secrets (tokens, client secret, code, verifier, device code) are
 * copied, wiped when freed, sent only in POST bodies, and never logged or
 * put in an error string. Debug log lines name the grant, the endpoint
 * (no query string), the outcome and the expiry.
 *
 * Owns: each request and its copies. Borrows: the HTTP client (and its
 * loop and logger). Destroying the client or the loop cancels the
 * requests in flight (CANCELED); a device poller must be aborted before
 * its HTTP client is destroyed (destroying the loop aborts it too). */

#include "http.h"
#include "oauth-parse.h"
#include "provider.h"

#include <stdint.h>

struct trib_account;
struct trib_oauth_request;
struct trib_oauth_device_poll;

/* The scope for Microsoft 365 app-only (client credentials) IMAP. */
#define TRIB_OAUTH_M365_APP_SCOPE "https://outlook.office365.com/.default"
/* PKCE code verifier length (RFC 7636 allows 43-128). */
#define TRIB_OAUTH_VERIFIER_LEN 64
/* S256 code challenge length: base64url of SHA-256, no padding. */
#define TRIB_OAUTH_CHALLENGE_LEN 43

struct trib_oauth_settings {
	/* Log prefix, e.g. "alice/work"; NULL: "user/account" when both
	 * are set. */
	const char *name;
	/* "gmail", "outlook", ...: hints in errors. */
	const char *provider;
	/* For "run `tributary authorize -u USER ACCOUNT`". */
	const char *user;
	const char *account;
	/* https:// URLs, "{tenant}" already filled in. */
	const char *token_url;
	const char *device_url;
	const char *authorize_url;
	const char *client_id;
	/* Secret, or NULL. Sent according to client_secret_rule. */
	const char *client_secret;
	enum trib_client_secret_rule client_secret_rule;
	/* Space-separated, or NULL. */
	const char *scope;
	/* PEM file of trusted CAs; NULL = the system store. */
	const char *ca_file;
	/* 0 = 30 s total, 10 s to connect. */
	unsigned int timeout_msecs;
	unsigned int connect_timeout_msecs;
	/* The clock for expires_at; NULL = time(). */
	time_t (*clock)(void);
};

/* Fill set_r from a resolved account (borrowing its strings) and the
 * client secret the caller read (or NULL). name stays NULL. */
void trib_oauth_settings_from_account(const struct trib_account *account,
				      const char *client_secret,
				      struct trib_oauth_settings *set_r);

/* The result is the engine's, valid during the callback. The callback may
 * take result->token or result->device (setting the field to NULL). */
typedef void trib_oauth_callback_t(struct trib_oauth_result *result,
				   void *context);

/* Each returns NULL (and no callback fires) only when the HTTP client's
 * loop is gone or the client is being destroyed. */
struct trib_oauth_request *
trib_oauth_refresh(struct trib_http_client *http,
		   const struct trib_oauth_settings *set,
		   const char *refresh_token, trib_oauth_callback_t *callback,
		   void *context);
struct trib_oauth_request *trib_oauth_exchange_code(
	struct trib_http_client *http, const struct trib_oauth_settings *set,
	const char *code, const char *redirect_uri, const char *code_verifier,
	trib_oauth_callback_t *callback, void *context);
struct trib_oauth_request *
trib_oauth_client_credentials(struct trib_http_client *http,
			      const struct trib_oauth_settings *set,
			      trib_oauth_callback_t *callback, void *context);
/* The device authorization request: result->device on success. */
struct trib_oauth_request *
trib_oauth_device_start(struct trib_http_client *http,
			const struct trib_oauth_settings *set,
			trib_oauth_callback_t *callback, void *context);
/* One poll: a token, or result->poll PENDING or SLOW_DOWN (TRIB_OK), or
 * an error (expired_token and access_denied are PERM). */
struct trib_oauth_request *
trib_oauth_device_poll_once(struct trib_http_client *http,
			    const struct trib_oauth_settings *set,
			    const char *device_code,
			    trib_oauth_callback_t *callback, void *context);
/* The callback fires with CANCELED before this returns. Not from the
 * request's own callback. NULL is fine. */
void trib_oauth_request_abort(struct trib_oauth_request **request);

/* Poll until the user has finished: every device->interval seconds,
 * 5 s slower after each slow_down, retrying network trouble (TEMP, WAIT)
 * with backoff, until device->expires_in has passed. The callback fires
 * once, with the token or the final error (never PENDING or SLOW_DOWN). */
struct trib_oauth_device_poll *
trib_oauth_device_poll_start(struct trib_http_client *http,
			     const struct trib_oauth_settings *set,
			     const struct trib_oauth_device_auth *device,
			     trib_oauth_callback_t *callback, void *context);
/* The callback fires with CANCELED before this returns. NULL is fine. */
void trib_oauth_device_poll_abort(struct trib_oauth_device_poll **poll);
/* The current interval in seconds (grows with slow_down). */
unsigned int
trib_oauth_device_poll_interval(const struct trib_oauth_device_poll *poll);

/* ---- helpers (oauth-util.c) ---- */

/* A PKCE pair: a random verifier of TRIB_OAUTH_VERIFIER_LEN unreserved
 * characters and its S256 challenge. Free the verifier with
 * trib_secret_free(). Returns -1 when the random generator fails. */
int trib_oauth_pkce_make(char **verifier_r, char **challenge_r);
/* BASE64URL(SHA256(verifier)), TRIB_OAUTH_CHALLENGE_LEN characters. */
char *trib_oauth_pkce_challenge(const char *verifier);
/* A random state value (32 base64url characters), or NULL when the
 * random generator fails. */
char *trib_oauth_random_state(void);

/* The authorization request URL (RFC 6749 4.1.1 + RFC 7636): authorize_url
 * ? response_type=code & client_id & redirect_uri & scope & state &
 * code_challenge & code_challenge_method=S256 [& login_hint] [& extra, a
 * preset's "k=v&k=v" as is]. */
char *trib_oauth_authorize_url(const struct trib_oauth_settings *set,
			       const char *redirect_uri, const char *state,
			       const char *code_challenge,
			       const char *login_hint, const char *extra);

/* url_template with "{tenant}" replaced by tenant; NULL when tenant is
 * empty or has characters other than letters, digits, '.' and '-'. */
char *trib_oauth_tenant_url(const char *url_template, const char *tenant);

/* Milliseconds to wait before retry number attempt (0 = the first):
 * "full jitter", uniform in [0, min(cap, base * 2^attempt)] picked by
 * random (uniform over 32 bits), but at least Retry-After when the server
 * sent one (retry_after_secs >= 0; up to TRIB_HTTP_RETRY_AFTER_MAX). */
uint64_t trib_oauth_backoff_msecs(unsigned int attempt, uint64_t base_msecs,
				  uint64_t cap_msecs, long retry_after_secs,
				  uint32_t random);
/* A uniform random 32-bit value (OpenSSL RAND_bytes; falls back to
 * random() when that fails: jitter needs no secrecy). */
uint32_t trib_oauth_random32(void);

#endif
