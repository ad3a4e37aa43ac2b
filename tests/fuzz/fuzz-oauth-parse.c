/* fuzz-oauth-parse.c: libFuzzer target for the token endpoint and device
 * authorization answer parser (oauth-parse.h).
 *
 * The first input byte picks the request the answer is for (byte % 5:
 * refresh_token, authorization_code, device_code, client_credentials,
 * device authorization) and the provider whose hints apply; the second
 * picks the HTTP status from a small table; the rest is the body, copied
 * into a buffer of its exact size so a read past its end is caught. The
 * seeds in corpus-oauth/ are real-looking answers of each kind.
 *
 * Promises checked (any breach aborts): the class agrees with what is
 * set (a token, a polling status or a device code for OK; an error line
 * otherwise); error and warning lines are one line of printable ASCII and
 * never hold the secrets we "sent"; tokens are VSCHAR within the length
 * ceiling; numbers are within their ranges; parsing is deterministic. */

#include "oauth-parse.h"

#include "alloc.h"

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

#define CHECK(cond)                                                            \
	do {                                                                   \
		if (!(cond))                                                   \
			abort();                                               \
	} while (0)

#define SECRET_RT "rt-SENT-refresh-token"
#define SECRET_CS "client-secret-value"

static const char *const secrets[] = { SECRET_RT, SECRET_CS, NULL };
static const long statuses[] = { 200, 400, 401, 429, 500, 503,
				 302, 404, 201, 403, 408, 100 };
static const char *const providers[] = { "gmail", "outlook", "yahoo", NULL };

static void check_line(const char *s)
{
	CHECK(s != NULL && s[0] != '\0');
	for (; *s != '\0'; s++)
		CHECK((unsigned char)*s >= 0x20 && (unsigned char)*s < 0x7f);
}

static void check_no_secret(const char *s)
{
	if (s == NULL)
		return;
	CHECK(strstr(s, SECRET_RT) == NULL);
	CHECK(strstr(s, SECRET_CS) == NULL);
}

static void check_token_text(const char *s)
{
	size_t len = strlen(s);

	CHECK(len > 0 && len <= TRIB_OAUTH_MAX_TOKEN_LEN);
	for (size_t i = 0; i < len; i++)
		CHECK(s[i] >= 0x21 && s[i] <= 0x7e);
}

static void check_result(const struct trib_oauth_parse_context *ctx,
			 const struct trib_oauth_result *r)
{
	bool device_auth = ctx->grant == TRIB_OAUTH_DEVICE_AUTHORIZATION;

	check_no_secret(r->error);
	check_no_secret(r->warning);
	if (r->error_class != TRIB_OK) {
		CHECK(r->error_class == TRIB_ERR_TEMP ||
		      r->error_class == TRIB_ERR_WAIT ||
		      r->error_class == TRIB_ERR_PERM);
		check_line(r->error);
		CHECK(r->token == NULL && r->device == NULL);
		CHECK(r->poll == TRIB_OAUTH_POLL_NONE);
		CHECK(!r->reauthorize || r->error_class == TRIB_ERR_PERM);
		return;
	}
	CHECK(r->error == NULL && !r->reauthorize);
	if (device_auth) {
		const struct trib_oauth_device_auth *d = r->device;

		CHECK(d != NULL && r->token == NULL);
		check_token_text(d->device_code);
		check_line(d->user_code);
		check_line(d->verification_uri);
		CHECK(d->expires_in > 0);
		CHECK(d->interval >= 1 &&
		      d->interval <= TRIB_OAUTH_DEVICE_MAX_INTERVAL);
		return;
	}
	CHECK(r->device == NULL);
	if (r->token == NULL) {
		CHECK(ctx->grant == TRIB_OAUTH_GRANT_DEVICE_CODE);
		CHECK(r->poll == TRIB_OAUTH_POLL_PENDING ||
		      r->poll == TRIB_OAUTH_POLL_SLOW_DOWN);
		return;
	}
	CHECK(r->poll == TRIB_OAUTH_POLL_NONE);
	check_token_text(r->token->access_token);
	if (r->token->refresh_token != NULL)
		check_token_text(r->token->refresh_token);
	CHECK(strcmp(r->token->token_type, "Bearer") == 0);
	CHECK(r->token->expires_in >= -1 &&
	      r->token->expires_in <= TRIB_OAUTH_MAX_EXPIRES_IN);
	if (r->token->scope != NULL)
		check_line(r->token->scope[0] != '\0' ? r->token->scope : "x");
	if (r->warning != NULL)
		check_line(r->warning);
}

static void parse(const struct trib_oauth_parse_context *ctx, long status,
		  const char *body, size_t size, struct trib_oauth_result *r)
{
	if (ctx->grant == TRIB_OAUTH_DEVICE_AUTHORIZATION)
		trib_oauth_parse_device_response(ctx, status, body, size, r);
	else
		trib_oauth_parse_token_response(ctx, status, body, size, r);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	struct trib_oauth_parse_context ctx = {
		.user = "alice",
		.account = "work",
		.scope = "mail",
		.secrets = secrets,
	};
	struct trib_oauth_result r1, r2;
	char *body;
	long status;

	if (size < 2)
		return 0;
	ctx.grant = (enum trib_oauth_grant)(data[0] % 5);
	ctx.provider = providers[(data[0] / 5) % 4];
	status = statuses[data[1] % TRIB_N_ELEMENTS(statuses)];
	size -= 2;
	body = trib_malloc(size == 0 ? 1 : size);
	memcpy(body, data + 2, size);

	parse(&ctx, status, body, size, &r1);
	check_result(&ctx, &r1);
	parse(&ctx, status, body, size, &r2);
	CHECK(r1.error_class == r2.error_class && r1.poll == r2.poll &&
	      r1.reauthorize == r2.reauthorize);
	CHECK((r1.error == NULL) == (r2.error == NULL));
	CHECK(r1.error == NULL || strcmp(r1.error, r2.error) == 0);
	CHECK((r1.token == NULL) == (r2.token == NULL));
	if (r1.token != NULL)
		CHECK(strcmp(r1.token->access_token, r2.token->access_token) ==
		      0);
	trib_oauth_result_clear(&r1);
	trib_oauth_result_clear(&r2);
	CHECK(r1.token == NULL && r1.error == NULL && r1.device == NULL);
	free(body);
	return 0;
}
