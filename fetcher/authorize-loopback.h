#ifndef AUTHORIZE_LOOPBACK_H
#define AUTHORIZE_LOOPBACK_H

/* authorize-loopback.h: the loopback redirect receiver of `tributary
 * authorize --flow loopback` (RFC 8252 7.3): a tiny HTTP listener on
 * 127.0.0.1 and ::1, one random port for both, on the trib_loop. It
 * answers exactly one GET /?code=...&state=... (or ?error=...) whose
 * state matches, with a short HTML page; other paths get 404 and the
 * wait goes on. A request with the wrong state ends the wait with an
 * error (someone else's redirect). Requests are capped at 8 KiB.
 *
 * Owns: its listeners, the connection being read, the code it received
 * (a secret: wiped when freed). Borrows: the loop. */

#include <stdbool.h>

struct trib_loop;
struct auth_loopback;

enum auth_loopback_status {
	AUTH_LOOPBACK_CODE,
	/* The provider redirected with ?error=... (e.g. access_denied). */
	AUTH_LOOPBACK_PROVIDER_ERROR,
	/* The state did not match, or the request was not understood. */
	AUTH_LOOPBACK_REFUSED,
};

/* Fires once. code: the authorization code (secret, valid during the
 * callback); error: one line (no secret) otherwise; error_code: the
 * provider's error code for PROVIDER_ERROR (sanitized), else NULL. */
typedef void auth_loopback_callback_t(enum auth_loopback_status status,
				      const char *code, const char *error_code,
				      const char *error, void *context);

/* Listen on a random port of 127.0.0.1 (and of ::1 when the host has
 * it). Returns NULL with *error_r (static) when no port can be had. */
struct auth_loopback *auth_loopback_create(struct trib_loop *loop,
					   const char *state,
					   auth_loopback_callback_t *callback,
					   void *context, const char **error_r);
unsigned int auth_loopback_port(const struct auth_loopback *lb);
/* Whether ::1 is listened on too. */
bool auth_loopback_has_ipv6(const struct auth_loopback *lb);
/* Closes everything; no callback fires. Sets *lb to NULL; NULL is fine. */
void auth_loopback_destroy(struct auth_loopback **lb);

/* The value of name in a query string ("a=1&b=2", no leading '?'),
 * percent-decoded ('+' is a space), or NULL when absent or badly
 * encoded. Free with trib_secret_free(). */
char *auth_query_param(const char *query, const char *name);

#endif
