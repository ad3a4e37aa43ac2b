#ifndef TRIB_SASL_H
#define TRIB_SASL_H

/* sasl.h: SASL client mechanisms for IMAP AUTHENTICATE: PLAIN (RFC 4616),
 * XOAUTH2 (Google/Microsoft) and OAUTHBEARER (RFC 7628).
 *
 * Pure: no I/O, no knowledge of IMAP framing. The client owns a copy of
 * the secret (password or access token) and wipes it on destroy. Every
 * string it returns that may contain the secret must be released with
 * trib_secret_free(). Whether the connection is encrypted is the caller's
 * business: imap-client never authenticates in clear. */

#include <stdbool.h>
#include <stddef.h>

enum trib_sasl_mech {
	TRIB_SASL_PLAIN,
	TRIB_SASL_XOAUTH2,
	TRIB_SASL_OAUTHBEARER,
};

struct trib_sasl_params {
	/* Authorization identity; NULL or "" = none. PLAIN sends it as the
	 * authzid. OAUTHBEARER puts it in the GS2 header's "a=" and, when
	 * it is NULL or "", puts username there instead: RFC 7628 carries
	 * no other user name, and Dovecot, Gmail and Yahoo take the user
	 * from "a=". XOAUTH2 has no authzid and ignores it. */
	const char *authzid;
	/* Required. No control characters (so no %x01). */
	const char *username;
	/* Required. Password (PLAIN: any text) or OAuth access token
	 * (XOAUTH2, OAUTHBEARER: RFC 6750 b64token, [A-Za-z0-9-._~+/]+=*). */
	const char *secret;
	/* OAUTHBEARER: the server's host name and port, sent in the
	 * message as RFC 7628 asks; host NULL or "" and port 0 leave them
	 * out. No control characters in host; port at most 65535. */
	const char *host;
	unsigned int port;
};

/* "PLAIN", "XOAUTH2", "OAUTHBEARER"; NULL for a value outside the enum. */
const char *trib_sasl_mech_name(enum trib_sasl_mech mech);
/* Case-insensitive. */
bool trib_sasl_mech_parse(const char *name, enum trib_sasl_mech *mech_r);

struct trib_sasl_client;

/* Returns NULL with *error_r set when a parameter cannot be encoded
 * (missing username or secret, a NUL-free but forbidden character such as
 * \x01 in an XOAUTH2 user or token). *error_r is then a static string; it
 * never quotes the secret. */
struct trib_sasl_client *
trib_sasl_client_create(enum trib_sasl_mech mech,
			const struct trib_sasl_params *params,
			const char **error_r);
void trib_sasl_client_destroy(struct trib_sasl_client **client);

/* The base64-encoded initial response (all three mechanisms are
 * client-first). Used with SASL-IR on the AUTHENTICATE line, or sent as
 * the answer to the server's first empty "+ " challenge. Calling this
 * counts as sending it: a later empty challenge is then an error. Free
 * with trib_secret_free(). */
char *trib_sasl_client_initial_response(struct trib_sasl_client *client);

enum trib_sasl_step_result {
	/* *response_r holds the next line to send. */
	TRIB_SASL_STEP_CONTINUE,
	/* The server reported an error in its challenge (XOAUTH2's base64
	 * JSON {"status":"401",...}, OAUTHBEARER's {"status":
	 * "invalid_token",...}). *response_r holds the line that ends the
	 * exchange as the mechanism requires (XOAUTH2: an empty line;
	 * OAUTHBEARER: base64 of a single %x01, "AQ=="); the server will then
	 * answer NO. *error_r says what the server reported, e.g. "server
	 * rejected the token (status 401, scope mail)".
	 * In XOAUTH2 and OAUTHBEARER the only thing a server may send after
	 * the initial response is such an error, so a non-empty challenge
	 * there that is not base64, not a JSON object, nested too deeply or
	 * longer than TRIB_SASL_CHALLENGE_MAX is a rejection too: it gets
	 * the same closing line (the server is waiting for it) and *error_r
	 * says "server rejected the token (malformed error challenge: ...)".
	 * Server text quoted in *error_r is cut short and has non-printable
	 * and non-ASCII bytes replaced by '?'. */
	TRIB_SASL_STEP_SERVER_ERROR,
	/* The challenge makes no sense (unexpected for the mechanism: any
	 * challenge after PLAIN's initial response, an empty one after an
	 * XOAUTH2/OAUTHBEARER initial response, a non-empty one before the
	 * initial response; or more steps than the mechanism has).
	 * *response_r is "*", which cancels the exchange (RFC 3501 6.2.2);
	 * *error_r says why. */
	TRIB_SASL_STEP_FAILED,
};

/* Longest challenge (base64 text) looked at; a longer one is malformed. */
#define TRIB_SASL_CHALLENGE_MAX 4096

/* Answer the server's challenge: the text after "+ " (base64, possibly
 * empty; NULL counts as empty). An empty challenge before anything was
 * sent is answered with the initial response (TRIB_SASL_STEP_CONTINUE,
 * *error_r = NULL). *response_r is always set: free it with
 * trib_secret_free(). The error string stays valid until the next call
 * or destroy. */
enum trib_sasl_step_result
trib_sasl_client_step(struct trib_sasl_client *client, const char *challenge,
		      char **response_r, const char **error_r);

/* Base64 helpers (RFC 4648, with padding, no line breaks). decode returns
 * -1 on malformed input (wrong length, whitespace, characters outside the
 * alphabet, misplaced '=' or non-zero bits before the padding) and then
 * sets *data_r = NULL, *size_r = 0; the output is NUL-terminated (not
 * counted in *size_r). Results are trib_malloc()ed: free() them (wipe a
 * secret first: the encoded text with trib_secret_free(), decoded bytes
 * with OPENSSL_cleanse() over *size_r). */
char *trib_base64_encode(const void *data, size_t size);
int trib_base64_decode(const char *b64, void **data_r, size_t *size_r);

#endif
