/* test-oauth-parse.c: token endpoint and device authorization answers
 * (oauth-parse.h): good answers, every OAuth error and the plain words it
 * becomes, HTTP statuses, missing fields, wrong types, huge numbers, deep
 * nesting, non-JSON, every truncation, secrets kept out of errors; and the
 * pure helpers next to it: PKCE (RFC 7636's vector), state, backoff with
 * jitter and Retry-After, form encoding, URLs for logs, tenant URLs. */

#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>

#include <cmocka.h>

#include "account.h"
#include "alloc.h"
#include "oauth.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#define AT "tok-ACCESS.0123456789-_~+/="
#define RT "rt-REFRESH-0123456789abcdef"
#define SENT_RT "rt-SENT-refresh-token-value"
#define CLIENT_SECRET "client-secret-value-42"

static const char *const sent_secrets[] = { SENT_RT, CLIENT_SECRET, NULL };

static struct trib_oauth_parse_context ctx_for(enum trib_oauth_grant grant,
					       const char *provider)
{
	struct trib_oauth_parse_context ctx = {
		.grant = grant,
		.provider = provider,
		.user = "alice",
		.account = "work",
		.scope = "https://outlook.office.com/IMAP.AccessAsUser.All "
			 "offline_access",
		.secrets = sent_secrets,
	};
	return ctx;
}

static const struct trib_oauth_parse_context refresh_ctx = {
	.grant = TRIB_OAUTH_GRANT_REFRESH_TOKEN,
	.user = "alice",
	.account = "work",
	.secrets = sent_secrets,
};

/* The error must be one clean line without any secret. */
static void check_error_line(const struct trib_oauth_result *r)
{
	assert_non_null(r->error);
	assert_true(r->error[0] != '\0');
	for (const char *p = r->error; *p != '\0'; p++)
		assert_true((unsigned char)*p >= 0x20 &&
			    (unsigned char)*p < 0x7f);
	assert_null(strstr(r->error, SENT_RT));
	assert_null(strstr(r->error, CLIENT_SECRET));
	assert_null(strstr(r->error, AT));
	assert_null(strstr(r->error, RT));
	assert_null(r->token);
}

static void parse(const struct trib_oauth_parse_context *ctx, long status,
		  const char *body, struct trib_oauth_result *r)
{
	trib_oauth_parse_token_response(ctx, status, body, strlen(body), r);
	if (r->error_class != TRIB_OK)
		check_error_line(r);
}

/* Expect a failure of that class whose error contains needle. */
static void expect_fail(const struct trib_oauth_parse_context *ctx, long status,
			const char *body, enum trib_error_class error_class,
			const char *needle)
{
	struct trib_oauth_result r;

	parse(ctx, status, body, &r);
	if (r.error_class != error_class)
		fail_msg("%s: class %s, want %s (%s)", body,
			 trib_error_class_name(r.error_class),
			 trib_error_class_name(error_class),
			 r.error != NULL ? r.error : "-");
	if (needle != NULL && strstr(r.error, needle) == NULL)
		fail_msg("%s: error '%s' lacks '%s'", body, r.error, needle);
	trib_oauth_result_clear(&r);
}

/* ---- good answers ---- */

static void test_good_refresh_rotated(void **state)
{
	struct trib_oauth_result r;

	(void)state;
	parse(&refresh_ctx, 200,
	      "{\"access_token\":\"" AT "\",\"token_type\":\"Bearer\","
	      "\"expires_in\":3599,\"scope\":\"IMAP.AccessAsUser.All "
	      "offline_access\",\"refresh_token\":\"" RT "\","
	      "\"id_token\":\"x.y.z\",\"ext_expires_in\":3599}\n",
	      &r);
	assert_int_equal(r.error_class, TRIB_OK);
	assert_non_null(r.token);
	assert_string_equal(r.token->access_token, AT);
	assert_string_equal(r.token->refresh_token, RT);
	assert_string_equal(r.token->token_type, "Bearer");
	assert_string_equal(r.token->scope,
			    "IMAP.AccessAsUser.All offline_access");
	assert_int_equal(r.token->expires_in, 3599);
	assert_int_equal(r.poll, TRIB_OAUTH_POLL_NONE);
	assert_null(r.error);
	assert_null(r.warning);
	assert_false(r.reauthorize);
	trib_oauth_token_set_expiry(r.token, 1000000);
	assert_int_equal(r.token->expires_at, 1000000 + 3599);
	trib_oauth_result_clear(&r);
	assert_null(r.token);
	assert_int_equal(r.retry_after_secs, -1);
}

static void test_good_minimal(void **state)
{
	struct trib_oauth_result r;

	(void)state;
	/* Google's refresh answer: no refresh_token; lowercase type. */
	parse(&refresh_ctx, 200,
	      "{\"access_token\": \"" AT "\", \"token_type\": \"bearer\", "
	      "\"expires_in\": \"3600\"}",
	      &r);
	assert_int_equal(r.error_class, TRIB_OK);
	assert_null(r.token->refresh_token);
	assert_null(r.token->scope);
	assert_string_equal(r.token->token_type, "Bearer");
	assert_int_equal(r.token->expires_in, 3600);
	/* a refresh without a new refresh token is normal */
	assert_null(r.warning);
	trib_oauth_result_clear(&r);

	/* no token_type, no expires_in: Bearer, unknown expiry */
	parse(&refresh_ctx, 200, "{\"access_token\":\"" AT "\"}", &r);
	assert_int_equal(r.error_class, TRIB_OK);
	assert_string_equal(r.token->token_type, "Bearer");
	assert_int_equal(r.token->expires_in, -1);
	trib_oauth_token_set_expiry(r.token, 5);
	assert_int_equal(r.token->expires_at, 0);
	trib_oauth_result_clear(&r);

	/* nulls count as absent; a scope of another type is ignored;
	 * expires_in as an integral double; 201 is a success too */
	parse(&refresh_ctx, 201,
	      "{\"access_token\":\"" AT "\",\"refresh_token\":null,"
	      "\"scope\":[\"a\"],\"expires_in\":60.0,\"token_type\":null}",
	      &r);
	assert_int_equal(r.error_class, TRIB_OK);
	assert_null(r.token->refresh_token);
	assert_null(r.token->scope);
	assert_int_equal(r.token->expires_in, 60);
	trib_oauth_result_clear(&r);
}

static void test_no_refresh_token_warnings(void **state)
{
	struct trib_oauth_parse_context ctx;
	struct trib_oauth_result r;
	const char *body = "{\"access_token\":\"" AT "\",\"expires_in\":3600}";

	(void)state;
	/* Microsoft without offline_access: said so */
	ctx = ctx_for(TRIB_OAUTH_GRANT_AUTHORIZATION_CODE, "outlook");
	ctx.scope = "https://outlook.office.com/IMAP.AccessAsUser.All";
	parse(&ctx, 200, body, &r);
	assert_int_equal(r.error_class, TRIB_OK);
	assert_non_null(r.warning);
	assert_non_null(strstr(r.warning, "offline_access"));
	trib_oauth_result_clear(&r);
	/* the word must stand alone in the scope */
	ctx.scope = "x offline_accessX";
	ctx.grant = TRIB_OAUTH_GRANT_DEVICE_CODE;
	parse(&ctx, 200, body, &r);
	assert_non_null(strstr(r.warning, "offline_access"));
	trib_oauth_result_clear(&r);
	/* with offline_access asked for, a generic warning */
	ctx.scope = "offline_access mail";
	parse(&ctx, 200, body, &r);
	assert_null(strstr(r.warning, "lacks offline_access"));
	assert_non_null(strstr(r.warning, "no refresh token"));
	trib_oauth_result_clear(&r);
	/* Google: access_type=offline and prompt=consent */
	ctx = ctx_for(TRIB_OAUTH_GRANT_AUTHORIZATION_CODE, "gmail");
	parse(&ctx, 200, body, &r);
	assert_non_null(strstr(r.warning, "prompt=consent"));
	trib_oauth_result_clear(&r);
	/* client credentials never get one: no warning */
	ctx = ctx_for(TRIB_OAUTH_GRANT_CLIENT_CREDENTIALS, "outlook");
	parse(&ctx, 200, body, &r);
	assert_int_equal(r.error_class, TRIB_OK);
	assert_null(r.warning);
	trib_oauth_result_clear(&r);
}

/* ---- OAuth errors ---- */

static void test_invalid_grant(void **state)
{
	struct trib_oauth_parse_context ctx;
	struct trib_oauth_result r;
	const char *body =
		"{\"error\":\"invalid_grant\",\"error_description\":"
		"\"AADSTS70008: The provided authorization code or refresh "
		"token has expired\",\"error_codes\":[70008]}";

	(void)state;
	parse(&refresh_ctx, 400, body, &r);
	assert_int_equal(r.error_class, TRIB_ERR_PERM);
	assert_true(r.reauthorize);
	assert_string_equal(r.error_code, "invalid_grant");
	assert_string_equal(
		r.error,
		"the refresh token was revoked or expired: run `tributary "
		"authorize -u alice work` [invalid_grant: AADSTS70008: The "
		"provided authorization code or refresh token has expired]");
	trib_oauth_result_clear(&r);

	/* Google: the 7-day "Testing" trap is named */
	ctx = ctx_for(TRIB_OAUTH_GRANT_REFRESH_TOKEN, "gmail");
	parse(&ctx, 400,
	      "{\"error\":\"invalid_grant\",\"error_description\":\"Token "
	      "has been expired or revoked.\"}",
	      &r);
	assert_true(r.reauthorize);
	assert_non_null(strstr(r.error, "\"Testing\""));
	assert_non_null(strstr(r.error, "7 days"));
	assert_non_null(strstr(r.error, "In production"));
	trib_oauth_result_clear(&r);

	/* Microsoft's reasons */
	ctx = ctx_for(TRIB_OAUTH_GRANT_REFRESH_TOKEN, "outlook");
	parse(&ctx, 400, "{\"error\":\"invalid_grant\"}", &r);
	assert_non_null(strstr(r.error, "90 days"));
	assert_non_null(strstr(r.error, "[invalid_grant]"));
	trib_oauth_result_clear(&r);

	/* the code grant: the PKCE verifier among the causes */
	ctx = ctx_for(TRIB_OAUTH_GRANT_AUTHORIZATION_CODE, NULL);
	parse(&ctx, 400, "{\"error\":\"invalid_grant\"}", &r);
	assert_true(r.reauthorize);
	assert_non_null(strstr(r.error, "PKCE"));
	trib_oauth_result_clear(&r);

	ctx = ctx_for(TRIB_OAUTH_GRANT_DEVICE_CODE, NULL);
	parse(&ctx, 400, "{\"error\":\"invalid_grant\"}", &r);
	assert_true(r.reauthorize);
	assert_non_null(strstr(r.error, "device code"));
	trib_oauth_result_clear(&r);

	/* app-only: nothing for a user to re-authorize */
	ctx = ctx_for(TRIB_OAUTH_GRANT_CLIENT_CREDENTIALS, NULL);
	parse(&ctx, 400, "{\"error\":\"invalid_grant\"}", &r);
	assert_int_equal(r.error_class, TRIB_ERR_PERM);
	assert_false(r.reauthorize);
	trib_oauth_result_clear(&r);

	/* without user and account: a generic hint */
	ctx = ctx_for(TRIB_OAUTH_GRANT_REFRESH_TOKEN, NULL);
	ctx.user = NULL;
	ctx.account = NULL;
	parse(&ctx, 400, "{\"error\":\"invalid_grant\"}", &r);
	assert_non_null(strstr(r.error, "run `tributary authorize`"));
	trib_oauth_result_clear(&r);
}

static void test_error_kinds(void **state)
{
	struct trib_oauth_parse_context ctx =
		ctx_for(TRIB_OAUTH_GRANT_REFRESH_TOKEN, "outlook");
	struct trib_oauth_result r;

	(void)state;
	expect_fail(&ctx, 401, "{\"error\":\"invalid_client\"}", TRIB_ERR_PERM,
		    "Allow public client flows");
	expect_fail(&ctx, 400, "{\"error\":\"unauthorized_client\"}",
		    TRIB_ERR_PERM, "does not allow the refresh_token grant");
	expect_fail(&ctx, 400, "{\"error\":\"invalid_scope\"}", TRIB_ERR_PERM,
		    "oauth_scope");
	expect_fail(&ctx, 400, "{\"error\":\"unsupported_grant_type\"}",
		    TRIB_ERR_PERM, "does not support");
	expect_fail(&ctx, 400, "{\"error\":\"invalid_request\"}", TRIB_ERR_PERM,
		    "malformed");
	expect_fail(&ctx, 400, "{\"error\":\"temporarily_unavailable\"}",
		    TRIB_ERR_TEMP, "unavailable");
	expect_fail(&ctx, 400, "{\"error\":\"server_error\"}", TRIB_ERR_TEMP,
		    "unavailable");
	expect_fail(&ctx, 400, "{\"error\":\"something_new\"}", TRIB_ERR_PERM,
		    "[something_new]");
	/* polling answers only mean something to device polling */
	expect_fail(&ctx, 400, "{\"error\":\"authorization_pending\"}",
		    TRIB_ERR_PERM, NULL);
	expect_fail(&ctx, 400, "{\"error\":\"slow_down\"}", TRIB_ERR_PERM,
		    NULL);
	/* unreadable error codes */
	expect_fail(&ctx, 400, "{\"error\":\"bad code\"}", TRIB_ERR_PERM,
		    "unreadable error");
	expect_fail(&ctx, 400, "{\"error\":42}", TRIB_ERR_PERM,
		    "unreadable error");
	expect_fail(&ctx, 400, "{\"error\":\"\"}", TRIB_ERR_PERM,
		    "unreadable error");
	/* an error code that carries a secret we sent is not shown */
	expect_fail(&ctx, 400, "{\"error\":\"x" SENT_RT "\"}", TRIB_ERR_PERM,
		    "unreadable error");
	/* a 200 carrying an error is an error */
	expect_fail(&ctx, 200, "{\"error\":\"invalid_grant\"}", TRIB_ERR_PERM,
		    "revoked or expired");

	parse(&ctx, 400, "{\"error\":\"access_denied\"}", &r);
	assert_int_equal(r.error_class, TRIB_ERR_PERM);
	assert_true(r.reauthorize);
	trib_oauth_result_clear(&r);
	parse(&ctx, 401, "{\"error\":\"invalid_client\"}", &r);
	assert_false(r.reauthorize);
	assert_string_equal(r.error_code, "invalid_client");
	trib_oauth_result_clear(&r);

	/* app-only access_denied: admin consent */
	ctx = ctx_for(TRIB_OAUTH_GRANT_CLIENT_CREDENTIALS, "outlook");
	parse(&ctx, 400, "{\"error\":\"access_denied\"}", &r);
	assert_false(r.reauthorize);
	assert_non_null(strstr(r.error, "administrator"));
	trib_oauth_result_clear(&r);
}

static void test_device_polling(void **state)
{
	struct trib_oauth_parse_context ctx =
		ctx_for(TRIB_OAUTH_GRANT_DEVICE_CODE, "outlook");
	struct trib_oauth_result r;

	(void)state;
	parse(&ctx, 400, "{\"error\":\"authorization_pending\"}", &r);
	assert_int_equal(r.error_class, TRIB_OK);
	assert_int_equal(r.poll, TRIB_OAUTH_POLL_PENDING);
	assert_null(r.token);
	assert_null(r.error);
	trib_oauth_result_clear(&r);
	parse(&ctx, 400,
	      "{\"error\":\"slow_down\",\"error_description\":\"x\"}", &r);
	assert_int_equal(r.error_class, TRIB_OK);
	assert_int_equal(r.poll, TRIB_OAUTH_POLL_SLOW_DOWN);
	trib_oauth_result_clear(&r);
	parse(&ctx, 400, "{\"error\":\"expired_token\"}", &r);
	assert_int_equal(r.error_class, TRIB_ERR_PERM);
	assert_true(r.reauthorize);
	assert_non_null(strstr(r.error, "expired"));
	trib_oauth_result_clear(&r);
	parse(&ctx, 400, "{\"error\":\"access_denied\"}", &r);
	assert_int_equal(r.error_class, TRIB_ERR_PERM);
	assert_true(r.reauthorize);
	trib_oauth_result_clear(&r);
	/* unauthorized_client: Microsoft's "public client flows" switch */
	expect_fail(&ctx, 400, "{\"error\":\"unauthorized_client\"}",
		    TRIB_ERR_PERM, "Allow public client flows");
}

/* ---- HTTP statuses ---- */

static void test_statuses(void **state)
{
	struct trib_oauth_result r;

	(void)state;
	expect_fail(&refresh_ctx, 429, "{\"error\":\"invalid_grant\"}",
		    TRIB_ERR_WAIT, "HTTP 429");
	expect_fail(&refresh_ctx, 429, "", TRIB_ERR_WAIT, NULL);
	expect_fail(&refresh_ctx, 503, "<html>down</html>", TRIB_ERR_TEMP,
		    "HTTP 503");
	/* a 5xx is temporary whatever its body says */
	expect_fail(&refresh_ctx, 500, "{\"error\":\"invalid_grant\"}",
		    TRIB_ERR_TEMP, "HTTP 500");
	expect_fail(&refresh_ctx, 408, "", TRIB_ERR_TEMP, NULL);
	expect_fail(&refresh_ctx, 302, "", TRIB_ERR_PERM, "redirect");
	expect_fail(&refresh_ctx, 404, "<html>Not Found</html>", TRIB_ERR_PERM,
		    "HTTP 404 without an OAuth error");
	expect_fail(&refresh_ctx, 400, "{\"no\":\"error\"}", TRIB_ERR_PERM,
		    "without an OAuth error");
	expect_fail(&refresh_ctx, 100, "", TRIB_ERR_TEMP, NULL);

	parse(&refresh_ctx, 429, "", &r);
	/* the engine fills this from Retry-After */
	assert_int_equal(r.retry_after_secs, -1);
	trib_oauth_result_clear(&r);
}

/* ---- what a success must hold ---- */

static void test_missing_and_wrong_fields(void **state)
{
	char long_token[TRIB_OAUTH_MAX_TOKEN_LEN + 64], *body;

	(void)state;
	expect_fail(&refresh_ctx, 200, "{}", TRIB_ERR_TEMP, "no access_token");
	expect_fail(&refresh_ctx, 200, "{\"refresh_token\":\"" RT "\"}",
		    TRIB_ERR_TEMP, "no access_token");
	expect_fail(&refresh_ctx, 200, "{\"access_token\":null}", TRIB_ERR_TEMP,
		    "no access_token");
	expect_fail(&refresh_ctx, 200, "{\"access_token\":12345}",
		    TRIB_ERR_TEMP, "not a string");
	expect_fail(&refresh_ctx, 200, "{\"access_token\":[\"" AT "\"]}",
		    TRIB_ERR_TEMP, "not a string");
	expect_fail(&refresh_ctx, 200, "{\"access_token\":\"\"}", TRIB_ERR_TEMP,
		    "empty");
	/* characters a bearer token cannot have (they would end up in a
	 * SASL exchange) */
	expect_fail(&refresh_ctx, 200, "{\"access_token\":\"a b\"}",
		    TRIB_ERR_TEMP, "characters");
	expect_fail(&refresh_ctx, 200, "{\"access_token\":\"a\\u0001b\"}",
		    TRIB_ERR_TEMP, "characters");
	expect_fail(&refresh_ctx, 200, "{\"access_token\":\"a\\r\\nb\"}",
		    TRIB_ERR_TEMP, "characters");
	expect_fail(&refresh_ctx, 200, "{\"access_token\":\"a\\u0000b\"}",
		    TRIB_ERR_TEMP, "characters");
	expect_fail(&refresh_ctx, 200, "{\"access_token\":\"caf\\u00e9\"}",
		    TRIB_ERR_TEMP, "characters");
	memset(long_token, 'a', TRIB_OAUTH_MAX_TOKEN_LEN + 1);
	long_token[TRIB_OAUTH_MAX_TOKEN_LEN + 1] = '\0';
	body = trib_strdup_printf("{\"access_token\":\"%s\"}", long_token);
	expect_fail(&refresh_ctx, 200, body, TRIB_ERR_TEMP, "too long");
	free(body);
	long_token[TRIB_OAUTH_MAX_TOKEN_LEN] = '\0';
	body = trib_strdup_printf("{\"access_token\":\"%s\"}", long_token);
	{
		struct trib_oauth_result r;

		parse(&refresh_ctx, 200, body, &r);
		assert_int_equal(r.error_class, TRIB_OK);
		trib_oauth_result_clear(&r);
	}
	free(body);

	expect_fail(&refresh_ctx, 200,
		    "{\"access_token\":\"" AT "\",\"refresh_token\":7}",
		    TRIB_ERR_TEMP, "refresh_token");
	expect_fail(&refresh_ctx, 200,
		    "{\"access_token\":\"" AT "\",\"refresh_token\":\"\"}",
		    TRIB_ERR_TEMP, "refresh_token");
	expect_fail(&refresh_ctx, 200,
		    "{\"access_token\":\"" AT "\",\"refresh_token\":\"a b\"}",
		    TRIB_ERR_TEMP, "refresh_token");
	expect_fail(&refresh_ctx, 200,
		    "{\"access_token\":\"" AT "\",\"token_type\":true}",
		    TRIB_ERR_TEMP, "token_type");
	expect_fail(&refresh_ctx, 200,
		    "{\"access_token\":\"" AT "\",\"token_type\":\"mac\"}",
		    TRIB_ERR_PERM, "\"mac\" is not supported");
	expect_fail(&refresh_ctx, 200,
		    "{\"access_token\":\"" AT "\",\"token_type\":\"Bearerx\"}",
		    TRIB_ERR_PERM, "not supported");
}

static void test_expires_in(void **state)
{
	static const char *const bad[] = {
		"-1",
		"-0.5",
		"\"\"",
		"\"12a\"",
		"\"-5\"",
		"\"9999999999999\"",
		"true",
		"{}",
		"[3600]",
		"1e300",
		"9223372036854775807",
		"99999999999999999999",
		"18446744073709551615",
		"316224001",
	};
	struct trib_oauth_result r;
	char *body;

	(void)state;
	for (unsigned int i = 0; i < TRIB_N_ELEMENTS(bad); i++) {
		body = trib_strdup_printf("{\"access_token\":\"" AT
					  "\",\"expires_in\":%s}",
					  bad[i]);
		expect_fail(&refresh_ctx, 200, body, TRIB_ERR_TEMP,
			    "expires_in");
		free(body);
	}
	/* the ceiling itself (ten years) and zero are accepted */
	parse(&refresh_ctx, 200,
	      "{\"access_token\":\"" AT "\",\"expires_in\":316224000}", &r);
	assert_int_equal(r.error_class, TRIB_OK);
	assert_int_equal(r.token->expires_in, TRIB_OAUTH_MAX_EXPIRES_IN);
	trib_oauth_result_clear(&r);
	parse(&refresh_ctx, 200,
	      "{\"access_token\":\"" AT "\",\"expires_in\":0}", &r);
	assert_int_equal(r.token->expires_in, 0);
	trib_oauth_result_clear(&r);
}

/* ---- not JSON, broken JSON, hostile JSON ---- */

static void test_not_json(void **state)
{
	static const char *const bodies[] = {
		"",
		"<html><body>Bad gateway</body></html>",
		"access_token=x&token_type=bearer",
		"null",
		"[]",
		"[{\"access_token\":\"x\"}]",
		"123",
		"\"access_token\"",
		"{\"access_token\":'x'}",
		"{access_token:\"x\"}",
		"{\"access_token\":\"x\",}",
		"{\"access_token\":\"" AT "\"} {}",
		"{\"access_token\":\"" AT "\"}x",
		"{\"a\":NaN}",
		"{\"a\":\"\xff\xfe\"}",
		"\xef\xbb\xbf{\"access_token\":\"" AT "\"}",
	};

	(void)state;
	for (unsigned int i = 0; i < TRIB_N_ELEMENTS(bodies); i++)
		expect_fail(&refresh_ctx, 200, bodies[i], TRIB_ERR_TEMP,
			    "the token endpoint: the answer");
}

static void test_nul_byte(void **state)
{
	static const char body[] = "{\"access_token\":\"" AT "\"}\0{}";
	struct trib_oauth_result r;

	(void)state;
	trib_oauth_parse_token_response(&refresh_ctx, 200, body,
					sizeof(body) - 1, &r);
	assert_int_equal(r.error_class, TRIB_ERR_TEMP);
	assert_non_null(strstr(r.error, "NUL"));
	trib_oauth_result_clear(&r);
}

/* Every prefix of a good answer fails cleanly (never half a token). */
static void test_truncated(void **state)
{
	const char *good = "{\"access_token\":\"" AT "\",\"token_type\":"
			   "\"Bearer\",\"expires_in\":3599,"
			   "\"refresh_token\":\"" RT "\"}";
	size_t len = strlen(good);
	struct trib_oauth_result r;
	char *copy;

	(void)state;
	for (size_t n = 0; n < len; n++) {
		/* An exact-size copy: a read past the end is caught by ASan
		 * and valgrind. */
		copy = trib_malloc(n == 0 ? 1 : n);
		memcpy(copy, good, n);
		trib_oauth_parse_token_response(&refresh_ctx, 200, copy, n, &r);
		if (r.error_class != TRIB_ERR_TEMP)
			fail_msg("prefix of %zu bytes: %s", n,
				 trib_error_class_name(r.error_class));
		check_error_line(&r);
		trib_oauth_result_clear(&r);
		free(copy);
	}
	trib_oauth_parse_token_response(&refresh_ctx, 200, good, len, &r);
	assert_int_equal(r.error_class, TRIB_OK);
	trib_oauth_result_clear(&r);
	/* whitespace after the object is fine */
	copy = trib_strdup_printf(" \r\n\t%s \r\n", good);
	parse(&refresh_ctx, 200, copy, &r);
	assert_int_equal(r.error_class, TRIB_OK);
	trib_oauth_result_clear(&r);
	free(copy);
}

static char *nested(unsigned int levels, const char *open, const char *close)
{
	size_t olen = strlen(open), clen = strlen(close);
	char *body = trib_malloc(levels * (olen + clen) + 128), *p = body;

	p += snprintf(p, 64, "{\"access_token\":\"" AT "\",\"x\":");
	for (unsigned int i = 0; i < levels; i++) {
		memcpy(p, open, olen);
		p += olen;
	}
	*p++ = '1';
	for (unsigned int i = 0; i < levels; i++) {
		memcpy(p, close, clen);
		p += clen;
	}
	*p++ = '}';
	*p = '\0';
	return body;
}

static void test_deep_nesting(void **state)
{
	struct trib_oauth_result r;
	char *body;

	(void)state;
	/* The top-level object is one level: TRIB_OAUTH_MAX_DEPTH - 1 more
	 * are fine. */
	body = nested(TRIB_OAUTH_MAX_DEPTH - 1, "[", "]");
	parse(&refresh_ctx, 200, body, &r);
	assert_int_equal(r.error_class, TRIB_OK);
	trib_oauth_result_clear(&r);
	free(body);
	body = nested(TRIB_OAUTH_MAX_DEPTH, "[", "]");
	expect_fail(&refresh_ctx, 200, body, TRIB_ERR_TEMP,
		    "nested too deeply");
	free(body);
	/* far deeper, still under the size ceiling */
	body = nested(5000, "{\"a\":", "}");
	expect_fail(&refresh_ctx, 200, body, TRIB_ERR_TEMP,
		    "nested too deeply");
	free(body);
	body = nested(30000, "[", "]");
	expect_fail(&refresh_ctx, 200, body, TRIB_ERR_TEMP,
		    "nested too deeply");
	free(body);
	/* and in an error answer */
	body = trib_strdup_printf("{\"error\":\"invalid_grant\",\"x\":%s}",
				  "[[[[[[[[[[[[[[[[[[[[1]]]]]]]]]]]]]]]]]]]]");
	expect_fail(&refresh_ctx, 400, body, TRIB_ERR_PERM,
		    "without an OAuth error");
	free(body);
}

static void test_size_cap(void **state)
{
	size_t size = TRIB_OAUTH_MAX_RESPONSE + 1;
	char *body = trib_malloc(size);
	struct trib_oauth_result r;
	int n;

	(void)state;
	n = snprintf(body, size, "{\"access_token\":\"" AT "\",\"pad\":\"");
	memset(body + n, 'x', size - (size_t)n - 2);
	memcpy(body + size - 2, "\"}", 2);
	trib_oauth_parse_token_response(&refresh_ctx, 200, body, size, &r);
	assert_int_equal(r.error_class, TRIB_ERR_TEMP);
	assert_non_null(strstr(r.error, "larger than 64 KiB"));
	trib_oauth_result_clear(&r);
	/* one byte less (the pad shorter by one) fits */
	memcpy(body + size - 3, "\"}", 2);
	trib_oauth_parse_token_response(&refresh_ctx, 200, body, size - 1, &r);
	assert_int_equal(r.error_class, TRIB_OK);
	trib_oauth_result_clear(&r);
	free(body);
}

/* ---- secrets stay out of errors ---- */

static void test_redaction(void **state)
{
	struct trib_oauth_result r;
	char *s;

	(void)state;
	parse(&refresh_ctx, 400,
	      "{\"error\":\"invalid_grant\",\"error_description\":"
	      "\"token " SENT_RT " for client secret " CLIENT_SECRET
	      " is bad\\r\\n\\u0007 end\"}",
	      &r);
	assert_string_equal(r.error,
			    "the refresh token was revoked or expired: run "
			    "`tributary authorize -u alice work` "
			    "[invalid_grant: token <redacted> for client "
			    "secret <redacted> is bad??? end]");
	trib_oauth_result_clear(&r);

	/* long descriptions are cut */
	s = trib_malloc(2000);
	memset(s, 'd', 1999);
	s[1999] = '\0';
	{
		char *body =
			trib_strdup_printf("{\"error\":\"invalid_request\","
					   "\"error_description\":\"%s\"}",
					   s);

		parse(&refresh_ctx, 400, body, &r);
		assert_true(strlen(r.error) < 400);
		assert_non_null(strstr(r.error, "ddd...]"));
		trib_oauth_result_clear(&r);
		free(body);
	}
	free(s);

	/* the helper itself */
	{
		static const char *const secrets[] = { "abcd", "xyz", NULL };
		char *out;

		out = trib_oauth_sanitize("1abcd2abcdabc\x01xyz", 17, 100,
					  secrets);
		/* 3-byte secrets are too short to match safely */
		assert_string_equal(out, "1<redacted>2<redacted>abc?xyz");
		free(out);
		out = trib_oauth_sanitize("0123456789", 10, 4, NULL);
		assert_string_equal(out, "0123...");
		free(out);
		/* the ceiling holds for the replacement too */
		out = trib_oauth_sanitize("abcd", 4, 4, secrets);
		assert_string_equal(out, "<red...");
		free(out);
		out = trib_oauth_sanitize("", 0, 10, secrets);
		assert_string_equal(out, "");
		free(out);
	}
}

/* ---- device authorization answers ---- */

static void parse_device(const struct trib_oauth_parse_context *ctx,
			 long status, const char *body,
			 struct trib_oauth_result *r)
{
	trib_oauth_parse_device_response(ctx, status, body, strlen(body), r);
	if (r->error_class != TRIB_OK) {
		check_error_line(r);
		assert_null(r->device);
	}
}

static void test_device_answers(void **state)
{
	struct trib_oauth_parse_context ctx =
		ctx_for(TRIB_OAUTH_DEVICE_AUTHORIZATION, "outlook");
	struct trib_oauth_result r;
	struct trib_oauth_device_auth *d;

	(void)state;
	parse_device(
		&ctx, 200,
		"{\"device_code\":\"dc-ABC_123\",\"user_code\":\"BCDF-GHJK\","
		"\"verification_uri\":\"https://microsoft.com/devicelogin\","
		"\"expires_in\":900,\"interval\":5,\"message\":\"To sign "
		"in, use a web browser\\u0007.\"}",
		&r);
	assert_int_equal(r.error_class, TRIB_OK);
	d = r.device;
	assert_non_null(d);
	assert_string_equal(d->device_code, "dc-ABC_123");
	assert_string_equal(d->user_code, "BCDF-GHJK");
	assert_string_equal(d->verification_uri,
			    "https://microsoft.com/devicelogin");
	assert_null(d->verification_uri_complete);
	assert_string_equal(d->message, "To sign in, use a web browser?.");
	assert_int_equal(d->expires_in, 900);
	assert_int_equal(d->interval, 5);
	trib_oauth_result_clear(&r);
	assert_null(r.device);

	/* Google's spelling; no interval: RFC 8628's 5 s */
	parse_device(&ctx, 200,
		     "{\"device_code\":\"x\",\"user_code\":\"a\","
		     "\"verification_url\":\"https://www.google.com/device\","
		     "\"verification_uri_complete\":\"https://g/d?c=a\","
		     "\"expires_in\":\"1800\"}",
		     &r);
	assert_int_equal(r.error_class, TRIB_OK);
	assert_string_equal(r.device->verification_uri,
			    "https://www.google.com/device");
	assert_string_equal(r.device->verification_uri_complete,
			    "https://g/d?c=a");
	assert_int_equal(r.device->interval,
			 TRIB_OAUTH_DEVICE_DEFAULT_INTERVAL);
	trib_oauth_result_clear(&r);

	/* intervals are kept within 1..600 */
	parse_device(&ctx, 200,
		     "{\"device_code\":\"x\",\"user_code\":\"a\","
		     "\"verification_uri\":\"https://a/b\",\"expires_in\":60,"
		     "\"interval\":0}",
		     &r);
	assert_int_equal(r.device->interval, 1);
	trib_oauth_result_clear(&r);
	parse_device(&ctx, 200,
		     "{\"device_code\":\"x\",\"user_code\":\"a\","
		     "\"verification_uri\":\"https://a/b\",\"expires_in\":60,"
		     "\"interval\":99999999999}",
		     &r);
	assert_int_equal(r.device->interval, TRIB_OAUTH_DEVICE_MAX_INTERVAL);
	trib_oauth_result_clear(&r);

	/* missing or bad fields */
	parse_device(
		&ctx, 200,
		"{\"user_code\":\"a\",\"verification_uri\":\"https://a/b\","
		"\"expires_in\":60}",
		&r);
	assert_int_equal(r.error_class, TRIB_ERR_TEMP);
	assert_non_null(strstr(r.error, "device_code"));
	trib_oauth_result_clear(&r);
	parse_device(&ctx, 200,
		     "{\"device_code\":\"x\",\"user_code\":\"a\","
		     "\"verification_uri\":\"javascript:alert(1)\","
		     "\"expires_in\":60}",
		     &r);
	assert_int_equal(r.error_class, TRIB_ERR_TEMP);
	assert_non_null(strstr(r.error, "verification_uri"));
	trib_oauth_result_clear(&r);
	parse_device(&ctx, 200,
		     "{\"device_code\":\"x\",\"user_code\":\"a\","
		     "\"verification_uri\":\"https://a/b\"}",
		     &r);
	assert_non_null(strstr(r.error, "expires_in"));
	trib_oauth_result_clear(&r);
	parse_device(&ctx, 200,
		     "{\"device_code\":\"x\",\"user_code\":\"\","
		     "\"verification_uri\":\"https://a/b\",\"expires_in\":5}",
		     &r);
	assert_non_null(strstr(r.error, "user_code"));
	trib_oauth_result_clear(&r);
	parse_device(&ctx, 200,
		     "{\"device_code\":\"x\",\"user_code\":\"a\","
		     "\"verification_uri\":\"https://a/b\",\"expires_in\":5,"
		     "\"interval\":\"soon\"}",
		     &r);
	assert_non_null(strstr(r.error, "interval"));
	trib_oauth_result_clear(&r);

	/* errors: Google refuses Gmail scopes in the device flow */
	ctx.provider = "gmail";
	parse_device(&ctx, 400,
		     "{\"error\":\"invalid_scope\",\"error_description\":"
		     "\"Invalid device flow scope: https://mail.google.com/\"}",
		     &r);
	assert_int_equal(r.error_class, TRIB_ERR_PERM);
	assert_non_null(strstr(r.error, "browser flow"));
	trib_oauth_result_clear(&r);
	parse_device(&ctx, 400, "{\"error\":\"authorization_pending\"}", &r);
	assert_int_equal(r.error_class, TRIB_ERR_PERM);
	trib_oauth_result_clear(&r);
	parse_device(&ctx, 503, "", &r);
	assert_int_equal(r.error_class, TRIB_ERR_TEMP);
	assert_non_null(strstr(r.error, "device authorization endpoint"));
	trib_oauth_result_clear(&r);
	parse_device(&ctx, 200, "{\"device_code\":", &r);
	assert_int_equal(r.error_class, TRIB_ERR_TEMP);
	trib_oauth_result_clear(&r);
}

/* ---- helpers: PKCE, state, URLs, backoff, Retry-After ---- */

static void test_pkce(void **state)
{
	char *verifier, *challenge, *again, *s1, *s2;

	(void)state;
	/* RFC 7636 appendix B */
	challenge =
		trib_oauth_pkce_challenge("dBjftJeZ4CVP-mB92K27uhbUJU1p1r_wW1"
					  "gFWFOEjXk");
	assert_string_equal(challenge,
			    "E9Melhoa2OwvFrEMTJguCHaoeK1t8URWbuGJSstw-cM");
	free(challenge);

	assert_int_equal(trib_oauth_pkce_make(&verifier, &challenge), 0);
	assert_int_equal(strlen(verifier), TRIB_OAUTH_VERIFIER_LEN);
	assert_int_equal(strspn(verifier, "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghij"
					  "klmnopqrstuvwxyz0123456789-_"),
			 TRIB_OAUTH_VERIFIER_LEN);
	assert_int_equal(strlen(challenge), TRIB_OAUTH_CHALLENGE_LEN);
	again = trib_oauth_pkce_challenge(verifier);
	assert_string_equal(again, challenge);
	free(again);
	free(challenge);
	trib_secret_free(&verifier);
	assert_null(verifier);

	s1 = trib_oauth_random_state();
	s2 = trib_oauth_random_state();
	assert_int_equal(strlen(s1), 32);
	assert_string_not_equal(s1, s2);
	free(s1);
	free(s2);
}

static void test_authorize_url(void **state)
{
	struct trib_oauth_settings set = {
		.authorize_url = "https://login.example/authorize",
		.client_id = "client id&1",
		.scope = "https://mail.google.com/ offline_access",
	};
	char *url;

	(void)state;
	url = trib_oauth_authorize_url(&set, "http://127.0.0.1:8080/cb", "st",
				       "CHAL", NULL,
				       "access_type=offline&prompt=consent");
	assert_string_equal(
		url,
		"https://login.example/authorize?response_type=code&"
		"client_id=client%20id%261&redirect_uri=http%3A%2F%2F127."
		"0.0.1%3A8080%2Fcb&scope=https%3A%2F%2Fmail.google.com%2F"
		"%20offline_access&state=st&code_challenge=CHAL&code_"
		"challenge_method=S256&access_type=offline&prompt=consent");
	free(url);
	set.authorize_url = "https://a/auth?tenant=x";
	url = trib_oauth_authorize_url(&set, "http://localhost/", "s", "c",
				       "alice@example.com", NULL);
	assert_non_null(strstr(url, "https://a/auth?tenant=x&response_type="));
	assert_non_null(strstr(url, "&login_hint=alice%40example.com"));
	free(url);
}

static void test_tenant_url(void **state)
{
	char *url;

	(void)state;
	url = trib_oauth_tenant_url(
		"https://login.microsoftonline.com/{tenant}/oauth2/v2.0/token",
		"contoso.onmicrosoft.com");
	assert_string_equal(url, "https://login.microsoftonline.com/contoso."
				 "onmicrosoft.com/oauth2/v2.0/token");
	free(url);
	url = trib_oauth_tenant_url("https://a/token", "common");
	assert_string_equal(url, "https://a/token");
	free(url);
	assert_null(trib_oauth_tenant_url("https://a/{tenant}/t", ""));
	assert_null(trib_oauth_tenant_url("https://a/{tenant}/t", "a/b"));
	assert_null(trib_oauth_tenant_url("https://a/{tenant}/t", "a?b"));
	assert_null(trib_oauth_tenant_url("https://a/{tenant}/t", NULL));
}

static void test_backoff(void **state)
{
	(void)state;
	/* random picks within [0, min(cap, base * 2^attempt)] */
	assert_int_equal(trib_oauth_backoff_msecs(0, 1000, 60000, -1, 0), 0);
	assert_int_equal(
		trib_oauth_backoff_msecs(0, 1000, 60000, -1, UINT32_MAX), 1000);
	assert_int_equal(
		trib_oauth_backoff_msecs(3, 1000, 60000, -1, UINT32_MAX), 8000);
	assert_int_equal(
		trib_oauth_backoff_msecs(3, 1000, 60000, -1, UINT32_MAX / 2),
		4000);
	/* capped, also for absurd attempt counts */
	assert_int_equal(
		trib_oauth_backoff_msecs(10, 1000, 60000, -1, UINT32_MAX),
		60000);
	assert_int_equal(trib_oauth_backoff_msecs(UINT32_MAX, 1000, 60000, -1,
						  UINT32_MAX),
			 60000);
	assert_int_equal(
		trib_oauth_backoff_msecs(UINT32_MAX, 0, 60000, -1, UINT32_MAX),
		0);
	/* Retry-After is a floor, even above the cap */
	assert_int_equal(trib_oauth_backoff_msecs(0, 1000, 60000, 7, 0), 7000);
	assert_int_equal(
		trib_oauth_backoff_msecs(0, 1000, 60000, 3600, UINT32_MAX),
		3600000);
	assert_int_equal(
		trib_oauth_backoff_msecs(5, 1000, 60000, 2, UINT32_MAX), 32000);
	assert_int_equal(trib_oauth_backoff_msecs(0, 1000, 60000, 0, 0), 0);
	/* but clamped to a day */
	assert_int_equal(trib_oauth_backoff_msecs(0, 1000, 60000, 100000000, 0),
			 (uint64_t)TRIB_HTTP_RETRY_AFTER_MAX * 1000);
	/* jitter: different randoms, different delays, all in range */
	for (uint32_t i = 0; i < 1000; i++) {
		uint64_t d = trib_oauth_backoff_msecs(4, 500, 60000, -1,
						      trib_oauth_random32());

		assert_true(d <= 8000);
	}
}

static void test_retry_after(void **state)
{
	time_t now = 1445412480; /* Wed, 21 Oct 2015 07:28:00 GMT */

	(void)state;
	assert_int_equal(trib_http_retry_after_parse("120", now), 120);
	assert_int_equal(trib_http_retry_after_parse(" 7 \t", now), 7);
	assert_int_equal(trib_http_retry_after_parse("0", now), 0);
	assert_int_equal(
		trib_http_retry_after_parse("99999999999999999999", now),
		TRIB_HTTP_RETRY_AFTER_MAX);
	assert_int_equal(trib_http_retry_after_parse(
				 "Wed, 21 Oct 2015 07:30:00 GMT", now),
			 120);
	/* RFC 850 and asctime forms */
	assert_int_equal(trib_http_retry_after_parse(
				 "Wednesday, 21-Oct-15 07:29:00 GMT", now),
			 60);
	assert_int_equal(
		trib_http_retry_after_parse("Wed Oct 21 07:28:30 2015", now),
		30);
	/* in the past: now */
	assert_int_equal(trib_http_retry_after_parse(
				 "Tue, 20 Oct 2015 07:28:00 GMT", now),
			 0);
	/* far future: clamped */
	assert_int_equal(trib_http_retry_after_parse(
				 "Fri, 01 Jan 2100 00:00:00 GMT", now),
			 TRIB_HTTP_RETRY_AFTER_MAX);
	assert_int_equal(trib_http_retry_after_parse("", now), -1);
	assert_int_equal(trib_http_retry_after_parse("  ", now), -1);
	assert_int_equal(trib_http_retry_after_parse("-5", now), -1);
	assert_int_equal(trib_http_retry_after_parse("5s", now), -1);
	assert_int_equal(trib_http_retry_after_parse("1.5", now), -1);
	assert_int_equal(trib_http_retry_after_parse("soon", now), -1);
}

static void test_form_encode(void **state)
{
	const char *pairs[] = { "grant_type",
				"refresh_token",
				"refresh_token",
				"a+b/c=d&e f~._-",
				"client_secret",
				NULL,
				"scope",
				"",
				"x",
				"\xc3\xa9\n",
				NULL };
	const char *none[] = { "a", NULL, NULL };
	char *body;

	(void)state;
	body = trib_http_form_encode(pairs);
	assert_string_equal(body,
			    "grant_type=refresh_token&refresh_token="
			    "a%2Bb%2Fc%3Dd%26e%20f~._-&scope=&x=%C3%A9%0A");
	trib_secret_free(&body);
	body = trib_http_form_encode(none);
	assert_string_equal(body, "");
	trib_secret_free(&body);
}

static void test_url_for_log(void **state)
{
	char *s;

	(void)state;
	s = trib_http_url_for_log("https://login.example:8443/t/token?code="
				  "SECRET#frag");
	assert_string_equal(s, "https://login.example:8443/t/token");
	free(s);
	s = trib_http_url_for_log("https://user:pass@host/p?x=1");
	assert_string_equal(s, "https://host/p");
	free(s);
	s = trib_http_url_for_log("https://host@x/p@q");
	assert_string_equal(s, "https://x/p@q");
	free(s);
	s = trib_http_url_for_log("https://h/\x01\n");
	assert_string_equal(s, "https://h/??");
	free(s);
	s = trib_http_url_for_log("no url at all?x");
	assert_string_equal(s, "no url at all");
	free(s);
}

static void test_settings_from_account(void **state)
{
	struct trib_account acct = {
		.user = "alice",
		.name = "work",
		.provider = trib_provider_find("outlook"),
		.ca_file = "/etc/ca.pem",
		.oauth = {
			.client_id = "cid",
			.token_url = "https://t/token",
			.device_url = "https://t/devicecode",
			.authorize_url = "https://t/authorize",
			.scope = "s offline_access",
		},
	};
	struct trib_oauth_settings set;

	(void)state;
	trib_oauth_settings_from_account(&acct, "sec", &set);
	assert_null(set.name);
	assert_string_equal(set.provider, "outlook");
	assert_string_equal(set.user, "alice");
	assert_string_equal(set.account, "work");
	assert_string_equal(set.token_url, "https://t/token");
	assert_string_equal(set.device_url, "https://t/devicecode");
	assert_string_equal(set.authorize_url, "https://t/authorize");
	assert_string_equal(set.client_id, "cid");
	assert_string_equal(set.client_secret, "sec");
	assert_string_equal(set.scope, "s offline_access");
	assert_string_equal(set.ca_file, "/etc/ca.pem");
	/* Microsoft public clients: never a secret */
	assert_int_equal(set.client_secret_rule, TRIB_CLIENT_SECRET_NEVER);
	acct.provider = trib_provider_find("gmail");
	trib_oauth_settings_from_account(&acct, NULL, &set);
	assert_int_equal(set.client_secret_rule, TRIB_CLIENT_SECRET_REQUIRED);
	assert_null(set.client_secret);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_good_refresh_rotated),
		cmocka_unit_test(test_good_minimal),
		cmocka_unit_test(test_no_refresh_token_warnings),
		cmocka_unit_test(test_invalid_grant),
		cmocka_unit_test(test_error_kinds),
		cmocka_unit_test(test_device_polling),
		cmocka_unit_test(test_statuses),
		cmocka_unit_test(test_missing_and_wrong_fields),
		cmocka_unit_test(test_expires_in),
		cmocka_unit_test(test_not_json),
		cmocka_unit_test(test_nul_byte),
		cmocka_unit_test(test_truncated),
		cmocka_unit_test(test_deep_nesting),
		cmocka_unit_test(test_size_cap),
		cmocka_unit_test(test_redaction),
		cmocka_unit_test(test_device_answers),
		cmocka_unit_test(test_pkce),
		cmocka_unit_test(test_authorize_url),
		cmocka_unit_test(test_tenant_url),
		cmocka_unit_test(test_backoff),
		cmocka_unit_test(test_retry_after),
		cmocka_unit_test(test_form_encode),
		cmocka_unit_test(test_url_for_log),
		cmocka_unit_test(test_settings_from_account),
	};

	return cmocka_run_group_tests(tests, NULL, NULL);
}
