/* oauth-util.c: PKCE, state, the authorization URL, tenant URLs and the
 * retry backoff (see oauth.h). No I/O. */

#include "oauth.h"

#include "alloc.h"

#include <openssl/crypto.h>
#include <openssl/evp.h>
#include <openssl/rand.h>
#include <stdlib.h>
#include <string.h>

#define VERIFIER_RAW 48 /* 48 bytes -> 64 base64url characters */
#define STATE_RAW 24	/* 24 bytes -> 32 base64url characters */

/* base64url (RFC 4648 section 5) without padding. */
static char *b64url(const unsigned char *data, size_t size)
{
	static const char alphabet[] = "ABCDEFGHIJKLMNOPQRSTUVWXYZ"
				       "abcdefghijklmnopqrstuvwxyz0123456789-_";
	char *out = trib_malloc((size + 2) / 3 * 4 + 1), *p = out;
	size_t i;

	for (i = 0; i + 2 < size; i += 3) {
		uint32_t v = (uint32_t)data[i] << 16 |
			     (uint32_t)data[i + 1] << 8 | data[i + 2];

		*p++ = alphabet[v >> 18 & 63];
		*p++ = alphabet[v >> 12 & 63];
		*p++ = alphabet[v >> 6 & 63];
		*p++ = alphabet[v & 63];
	}
	if (size - i == 1) {
		uint32_t v = (uint32_t)data[i] << 16;

		*p++ = alphabet[v >> 18 & 63];
		*p++ = alphabet[v >> 12 & 63];
	} else if (size - i == 2) {
		uint32_t v = (uint32_t)data[i] << 16 | (uint32_t)data[i + 1]
							       << 8;

		*p++ = alphabet[v >> 18 & 63];
		*p++ = alphabet[v >> 12 & 63];
		*p++ = alphabet[v >> 6 & 63];
	}
	*p = '\0';
	return out;
}

static char *random_b64url(size_t raw)
{
	unsigned char buf[64];
	char *out;

	if (raw > sizeof(buf) || RAND_bytes(buf, (int)raw) != 1)
		return NULL;
	out = b64url(buf, raw);
	OPENSSL_cleanse(buf, sizeof(buf));
	return out;
}

char *trib_oauth_pkce_challenge(const char *verifier)
{
	unsigned char digest[EVP_MAX_MD_SIZE];
	unsigned int len = 0;

	if (EVP_Digest(verifier, strlen(verifier), digest, &len, EVP_sha256(),
		       NULL) != 1)
		abort();
	return b64url(digest, len);
}

int trib_oauth_pkce_make(char **verifier_r, char **challenge_r)
{
	char *verifier = random_b64url(VERIFIER_RAW);

	*verifier_r = NULL;
	*challenge_r = NULL;
	if (verifier == NULL)
		return -1;
	*challenge_r = trib_oauth_pkce_challenge(verifier);
	*verifier_r = verifier;
	return 0;
}

char *trib_oauth_random_state(void)
{
	return random_b64url(STATE_RAW);
}

/* ---- URLs ---- */

char *trib_oauth_authorize_url(const struct trib_oauth_settings *set,
			       const char *redirect_uri, const char *state,
			       const char *code_challenge,
			       const char *login_hint, const char *extra)
{
	const char *pairs[] = {
		"response_type",
		"code",
		"client_id",
		set->client_id,
		"redirect_uri",
		redirect_uri,
		"scope",
		set->scope,
		"state",
		state,
		"code_challenge",
		code_challenge,
		"code_challenge_method",
		"S256",
		"login_hint",
		login_hint,
		NULL,
	};
	char *query = trib_http_form_encode(pairs), *url;
	const char *sep = strchr(set->authorize_url, '?') != NULL ? "&" : "?";

	url = trib_strdup_printf("%s%s%s%s%s", set->authorize_url, sep, query,
				 extra != NULL && extra[0] != '\0' ? "&" : "",
				 extra != NULL ? extra : "");
	free(query);
	return url;
}

char *trib_oauth_tenant_url(const char *url_template, const char *tenant)
{
	const char *p = strstr(url_template, "{tenant}");

	if (tenant == NULL || tenant[0] == '\0' ||
	    strspn(tenant,
		   "abcdefghijklmnopqrstuvwxyz"
		   "ABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789.-") != strlen(tenant))
		return NULL;
	if (p == NULL)
		return trib_strdup(url_template);
	return trib_strdup_printf("%.*s%s%s", (int)(p - url_template),
				  url_template, tenant, p + strlen("{tenant}"));
}

/* ---- backoff ---- */

uint64_t trib_oauth_backoff_msecs(unsigned int attempt, uint64_t base_msecs,
				  uint64_t cap_msecs, long retry_after_secs,
				  uint32_t random)
{
	uint64_t ceiling = base_msecs, delay, floor_msecs;

	for (unsigned int i = 0;
	     i < attempt && ceiling != 0 && ceiling < cap_msecs; i++)
		ceiling *= 2;
	if (ceiling > cap_msecs)
		ceiling = cap_msecs;
	/* random * (ceiling + 1) / 2^32: uniform over [0, ceiling], no
	 * modulo bias. */
	delay = (uint64_t)(((unsigned __int128)random *
			    ((unsigned __int128)ceiling + 1)) >>
			   32);
	if (retry_after_secs >= 0) {
		if (retry_after_secs > TRIB_HTTP_RETRY_AFTER_MAX)
			retry_after_secs = TRIB_HTTP_RETRY_AFTER_MAX;
		floor_msecs = (uint64_t)retry_after_secs * 1000;
		if (delay < floor_msecs)
			delay = floor_msecs;
	}
	return delay;
}

uint32_t trib_oauth_random32(void)
{
	unsigned char buf[4];

	if (RAND_bytes(buf, sizeof(buf)) != 1)
		return (uint32_t)random();
	return (uint32_t)buf[0] << 24 | (uint32_t)buf[1] << 16 |
	       (uint32_t)buf[2] << 8 | buf[3];
}
