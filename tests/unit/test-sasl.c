/* test-sasl.c: SASL mechanisms and base64, byte for byte. */

#include <stdarg.h>
#include <stddef.h>
#include <setjmp.h>
#include <stdint.h>
#include <cmocka.h>

#include "alloc.h"
#include "sasl.h"

#include <stdlib.h>
#include <string.h>

/* The message Dovecot's XOAUTH2 tests verify. */
#define ALICE_XOAUTH2_RAW                                                      \
	"user=alice@example.com\001auth=Bearer good-token-alice\001\001"
#define ALICE_XOAUTH2_B64                                                      \
	"dXNlcj1hbGljZUBleGFtcGxlLmNvbQFhdXRoPUJlYXJlciBnb29kLXRva2VuLWFs"     \
	"aWNlAQE="
#define ALICE_OAUTHBEARER_RAW                                                  \
	"n,a=alice@example.com,\001host=127.0.0.1\001port=15143\001"           \
	"auth=Bearer good-token-alice\001\001"
#define ALICE_OAUTHBEARER_B64                                                  \
	"bixhPWFsaWNlQGV4YW1wbGUuY29tLAFob3N0PTEyNy4wLjAuMQFwb3J0PTE1MTQz"     \
	"AWF1dGg9QmVhcmVyIGdvb2QtdG9rZW4tYWxpY2UBAQ=="
/* {"status":"401","schemes":"bearer","scope":"mail"} (Dovecot) */
#define DOVECOT_XOAUTH2_ERROR                                                  \
	"eyJzdGF0dXMiOiI0MDEiLCJzY2hlbWVzIjoiYmVhcmVyIiwic2NvcGUiOiJtYWlsIn0="
/* {"status":"invalid_token"} */
#define OAUTHBEARER_ERROR "eyJzdGF0dXMiOiJpbnZhbGlkX3Rva2VuIn0="

static const struct trib_sasl_params alice_params = {
	.username = "alice@example.com",
	.secret = "good-token-alice",
	.host = "127.0.0.1",
	.port = 15143,
};

/* ---- helpers ---- */

/* Decode b64 and compare with the expected raw bytes. */
static void assert_b64_is(const char *b64, const void *raw, size_t raw_len)
{
	void *data;
	size_t size;

	assert_int_equal(trib_base64_decode(b64, &data, &size), 0);
	assert_int_equal(size, raw_len);
	assert_memory_equal(data, raw, raw_len);
	assert_int_equal(((char *)data)[size], '\0');
	free(data);
}

static char *initial_response(enum trib_sasl_mech mech,
			      const struct trib_sasl_params *params)
{
	struct trib_sasl_client *client;
	const char *error = NULL;
	char *response;

	client = trib_sasl_client_create(mech, params, &error);
	assert_non_null(client);
	assert_null(error);
	response = trib_sasl_client_initial_response(client);
	trib_sasl_client_destroy(&client);
	assert_null(client);
	return response;
}

/* Check the initial response against raw bytes and a base64 literal
 * (NULL: skip the literal). */
static void assert_initial_response(enum trib_sasl_mech mech,
				    const struct trib_sasl_params *params,
				    const void *raw, size_t raw_len,
				    const char *b64)
{
	char *response = initial_response(mech, params);

	assert_b64_is(response, raw, raw_len);
	if (b64 != NULL)
		assert_string_equal(response, b64);
	trib_secret_free(&response);
	assert_null(response);
}

/* create() must fail, and the error must not quote the secret. */
static void assert_create_fails(enum trib_sasl_mech mech,
				const struct trib_sasl_params *params,
				const char *error_part)
{
	struct trib_sasl_client *client;
	const char *error = NULL;

	client = trib_sasl_client_create(mech, params, &error);
	assert_null(client);
	assert_non_null(error);
	if (error_part != NULL)
		assert_non_null(strstr(error, error_part));
	if (params->secret != NULL && params->secret[0] != '\0')
		assert_null(strstr(error, params->secret));
}

/* Create, send the initial response with SASL-IR, then answer one
 * challenge; returns the response. */
static enum trib_sasl_step_result
step_after_initial(enum trib_sasl_mech mech,
		   const struct trib_sasl_params *params, const char *challenge,
		   char **response_r, char **error_r)
{
	struct trib_sasl_client *client;
	enum trib_sasl_step_result result;
	const char *error = NULL;
	char *ir;

	client = trib_sasl_client_create(mech, params, &error);
	assert_non_null(client);
	ir = trib_sasl_client_initial_response(client);
	trib_secret_free(&ir);
	error = NULL;
	result = trib_sasl_client_step(client, challenge, response_r, &error);
	assert_non_null(*response_r);
	*error_r = error == NULL ? NULL : trib_strdup(error);
	trib_sasl_client_destroy(&client);
	return result;
}

/* A non-empty challenge after the initial response: SERVER_ERROR with
 * the mechanism's closing line and an error containing each of parts. */
static void assert_server_error(enum trib_sasl_mech mech, const char *challenge,
				const char *part1, const char *part2)
{
	char *response, *error;

	assert_int_equal(step_after_initial(mech, &alice_params, challenge,
					    &response, &error),
			 TRIB_SASL_STEP_SERVER_ERROR);
	assert_string_equal(response,
			    mech == TRIB_SASL_OAUTHBEARER ? "AQ==" : "");
	assert_non_null(error);
	assert_non_null(strstr(error, part1));
	if (part2 != NULL)
		assert_non_null(strstr(error, part2));
	trib_secret_free(&response);
	free(error);
}

/* Base64-encode a JSON text and check what both OAuth mechanisms make of
 * it as an error challenge. */
static void assert_json_challenge(const char *json, const char *part1,
				  const char *part2)
{
	char *challenge = trib_base64_encode(json, strlen(json));

	assert_server_error(TRIB_SASL_XOAUTH2, challenge, part1, part2);
	assert_server_error(TRIB_SASL_OAUTHBEARER, challenge, part1, part2);
	free(challenge);
}

/* ---- base64 ---- */

static const struct {
	const char *raw, *b64;
} rfc4648_vectors[] = {
	{ "", "" },
	{ "f", "Zg==" },
	{ "fo", "Zm8=" },
	{ "foo", "Zm9v" },
	{ "foob", "Zm9vYg==" },
	{ "fooba", "Zm9vYmE=" },
	{ "foobar", "Zm9vYmFy" },
};

static void test_base64_vectors(void **state)
{
	unsigned int i;

	(void)state;
	for (i = 0; i < TRIB_N_ELEMENTS(rfc4648_vectors); i++) {
		const char *raw = rfc4648_vectors[i].raw;
		char *b64 = trib_base64_encode(raw, strlen(raw));

		assert_string_equal(b64, rfc4648_vectors[i].b64);
		free(b64);
		assert_b64_is(rfc4648_vectors[i].b64, raw, strlen(raw));
	}
	/* All bits set and cleared, every padding length. */
	assert_b64_is("AAAA", "\0\0\0", 3);
	assert_b64_is("////", "\xff\xff\xff", 3);
	assert_b64_is("/w==", "\xff", 1);
	assert_b64_is("//8=", "\xff\xff", 2);
	assert_b64_is("AA==", "\0", 1);
	assert_b64_is("+/+/", "\xfb\xff\xbf", 3);
}

static void test_base64_round_trip(void **state)
{
	unsigned char data[200];
	size_t len, i;

	(void)state;
	for (i = 0; i < sizeof(data); i++)
		data[i] = (unsigned char)(i * 37 + (i >> 3));
	/* Every length, so every padding case and both all-zero and
	 * high-bit bytes at each position. */
	for (len = 0; len <= sizeof(data); len++) {
		char *b64 = trib_base64_encode(data, len);

		assert_int_equal(strlen(b64), (len + 2) / 3 * 4);
		assert_int_equal(len % 3 == 1, strstr(b64, "==") != NULL);
		assert_b64_is(b64, data, len);
		free(b64);
	}
}

/* Bigger than the internal chunk, with a tail that needs padding. */
static void test_base64_large(void **state)
{
	const size_t len = 100000;
	unsigned char *data = trib_malloc(len);
	char *b64;
	size_t i;

	(void)state;
	for (i = 0; i < len; i++)
		data[i] = (unsigned char)(i ^ (i >> 8));
	b64 = trib_base64_encode(data, len);
	assert_int_equal(strlen(b64), (len + 2) / 3 * 4);
	assert_b64_is(b64, data, len);
	/* A bad character deep inside a later chunk is still caught. */
	b64[90000] = '*';
	{
		void *out = (void *)1;
		size_t size = 1;

		assert_int_equal(trib_base64_decode(b64, &out, &size), -1);
		assert_null(out);
		assert_int_equal(size, 0);
	}
	free(b64);
	free(data);
}

static void test_base64_invalid(void **state)
{
	static const char *const invalid[] = {
		"Z",
		"Zg",
		"Zg=",
		"Zm9",
		"Zm9vY",
		"====",
		"Z===",
		"=Zm9",
		"Zg==Zm9v",
		"Zm=v",
		"Zm9v\n",
		" Zm9v",
		"Zm9v ",
		"Zm 9",
		"Zm9v\r\n",
		"\tZm9v",
		"Zm9v!A==",
		"-_8=",
		"Zm9v====",
		"Zg===",
		/* non-zero bits before the padding */
		"Zh==",
		"Zm9=",
		"AB==",
		"AAB=",
		"Zm8v/w=A",
		"\303\251AA",
	};
	unsigned int i;

	(void)state;
	for (i = 0; i < TRIB_N_ELEMENTS(invalid); i++) {
		void *data = (void *)1;
		size_t size = 1;

		if (trib_base64_decode(invalid[i], &data, &size) != -1)
			fail_msg("accepted invalid base64 \"%s\"", invalid[i]);
		assert_null(data);
		assert_int_equal(size, 0);
	}
}

/* ---- mechanism names ---- */

static void test_mech_names(void **state)
{
	enum trib_sasl_mech mech;

	(void)state;
	assert_string_equal(trib_sasl_mech_name(TRIB_SASL_PLAIN), "PLAIN");
	assert_string_equal(trib_sasl_mech_name(TRIB_SASL_XOAUTH2), "XOAUTH2");
	assert_string_equal(trib_sasl_mech_name(TRIB_SASL_OAUTHBEARER),
			    "OAUTHBEARER");
	assert_null(trib_sasl_mech_name((enum trib_sasl_mech)42));

	assert_true(trib_sasl_mech_parse("PLAIN", &mech));
	assert_int_equal(mech, TRIB_SASL_PLAIN);
	assert_true(trib_sasl_mech_parse("xoauth2", &mech));
	assert_int_equal(mech, TRIB_SASL_XOAUTH2);
	assert_true(trib_sasl_mech_parse("OAuthBearer", &mech));
	assert_int_equal(mech, TRIB_SASL_OAUTHBEARER);

	mech = TRIB_SASL_XOAUTH2;
	assert_false(trib_sasl_mech_parse("LOGIN", &mech));
	assert_false(trib_sasl_mech_parse("", &mech));
	assert_false(trib_sasl_mech_parse("PLAIN ", &mech));
	assert_false(trib_sasl_mech_parse("XOAUTH", &mech));
	assert_false(trib_sasl_mech_parse("OAUTHBEARER2", &mech));
	assert_false(trib_sasl_mech_parse(NULL, &mech));
	assert_int_equal(mech, TRIB_SASL_XOAUTH2);
}

/* ---- PLAIN ---- */

static void test_plain_encoding(void **state)
{
	struct trib_sasl_params params = {
		.username = "alice",
		.secret = "secret",
	};
	static const char raw_utf8[] = "\0j\xc3\xb6rg\0p\xc3\xa4ss w,=rd";

	(void)state;
	assert_initial_response(TRIB_SASL_PLAIN, &params, "\0alice\0secret", 13,
				"AGFsaWNlAHNlY3JldA==");
	params.authzid = "";
	assert_initial_response(TRIB_SASL_PLAIN, &params, "\0alice\0secret", 13,
				"AGFsaWNlAHNlY3JldA==");
	params.authzid = "admin";
	assert_initial_response(TRIB_SASL_PLAIN, &params,
				"admin\0alice\0secret", 18,
				"YWRtaW4AYWxpY2UAc2VjcmV0");

	/* UTF-8 and punctuation go through untouched (no escaping). */
	params.authzid = NULL;
	params.username = "j\xc3\xb6rg";
	params.secret = "p\xc3\xa4ss w,=rd";
	assert_initial_response(TRIB_SASL_PLAIN, &params, raw_utf8,
				sizeof(raw_utf8) - 1, NULL);
}

static void test_plain_rejects(void **state)
{
	struct trib_sasl_params params = {
		.username = "alice",
		.secret = "SeCrEt-pw",
	};

	(void)state;
	params.username = NULL;
	assert_create_fails(TRIB_SASL_PLAIN, &params, "username");
	params.username = "";
	assert_create_fails(TRIB_SASL_PLAIN, &params, "username");
	params.username = "ali\001ce";
	assert_create_fails(TRIB_SASL_PLAIN, &params, "username");
	params.username = "alice\n";
	assert_create_fails(TRIB_SASL_PLAIN, &params, "username");
	params.username = "alice\x7f";
	assert_create_fails(TRIB_SASL_PLAIN, &params, "username");

	params.username = "alice";
	params.authzid = "ad\rmin";
	assert_create_fails(TRIB_SASL_PLAIN, &params, "authorization");

	params.authzid = NULL;
	params.secret = NULL;
	assert_create_fails(TRIB_SASL_PLAIN, &params, "password");
	params.secret = "";
	assert_create_fails(TRIB_SASL_PLAIN, &params, "password");

	params.secret = "SeCrEt-pw";
	assert_create_fails((enum trib_sasl_mech)7, &params, "mechanism");
}

static void test_plain_steps(void **state)
{
	struct trib_sasl_params params = {
		.username = "alice",
		.secret = "secret",
	};
	struct trib_sasl_client *client;
	const char *error = "unset";
	char *response;

	(void)state;
	client = trib_sasl_client_create(TRIB_SASL_PLAIN, &params, &error);
	assert_non_null(client);

	/* No SASL-IR: the server's empty "+ " asks for the response. */
	assert_int_equal(trib_sasl_client_step(client, "", &response, &error),
			 TRIB_SASL_STEP_CONTINUE);
	assert_string_equal(response, "AGFsaWNlAHNlY3JldA==");
	assert_null(error);
	trib_secret_free(&response);

	/* PLAIN has no second step, empty or not. */
	assert_int_equal(trib_sasl_client_step(client, "", &response, &error),
			 TRIB_SASL_STEP_FAILED);
	assert_string_equal(response, "*");
	assert_non_null(strstr(error, "PLAIN"));
	trib_secret_free(&response);
	assert_int_equal(
		trib_sasl_client_step(client, "Zm9v", &response, &error),
		TRIB_SASL_STEP_FAILED);
	assert_string_equal(response, "*");
	trib_secret_free(&response);
	trib_sasl_client_destroy(&client);

	/* With SASL-IR, any challenge is one too many. */
	client = trib_sasl_client_create(TRIB_SASL_PLAIN, &params, &error);
	response = trib_sasl_client_initial_response(client);
	assert_string_equal(response, "AGFsaWNlAHNlY3JldA==");
	trib_secret_free(&response);
	assert_int_equal(
		trib_sasl_client_step(client, "Zm9v", &response, &error),
		TRIB_SASL_STEP_FAILED);
	assert_string_equal(response, "*");
	assert_null(strstr(error, "secret"));
	trib_secret_free(&response);
	trib_sasl_client_destroy(&client);

	/* Destroying nothing is fine. */
	trib_sasl_client_destroy(&client);
}

/* ---- XOAUTH2 ---- */

static void test_xoauth2_encoding(void **state)
{
	struct trib_sasl_params params = alice_params;

	(void)state;
	assert_initial_response(TRIB_SASL_XOAUTH2, &params, ALICE_XOAUTH2_RAW,
				sizeof(ALICE_XOAUTH2_RAW) - 1,
				ALICE_XOAUTH2_B64);
	/* XOAUTH2 has no authzid, host or port. */
	params.authzid = "someone-else";
	params.host = NULL;
	params.port = 0;
	assert_initial_response(TRIB_SASL_XOAUTH2, &params, ALICE_XOAUTH2_RAW,
				sizeof(ALICE_XOAUTH2_RAW) - 1,
				ALICE_XOAUTH2_B64);
}

static void test_xoauth2_steps(void **state)
{
	struct trib_sasl_client *client;
	const char *error = "unset";
	char *response;

	(void)state;
	client = trib_sasl_client_create(TRIB_SASL_XOAUTH2, &alice_params,
					 &error);
	assert_non_null(client);

	/* Empty challenge first (NULL counts as empty). */
	assert_int_equal(trib_sasl_client_step(client, NULL, &response, &error),
			 TRIB_SASL_STEP_CONTINUE);
	assert_string_equal(response, ALICE_XOAUTH2_B64);
	assert_null(error);
	trib_secret_free(&response);

	/* Dovecot's error challenge: answer with an empty line. */
	assert_int_equal(trib_sasl_client_step(client, DOVECOT_XOAUTH2_ERROR,
					       &response, &error),
			 TRIB_SASL_STEP_SERVER_ERROR);
	assert_string_equal(response, "");
	assert_string_equal(error,
			    "server rejected the token (status 401, scope "
			    "mail)");
	trib_secret_free(&response);

	/* Nothing may follow. */
	assert_int_equal(trib_sasl_client_step(client, DOVECOT_XOAUTH2_ERROR,
					       &response, &error),
			 TRIB_SASL_STEP_FAILED);
	assert_string_equal(response, "*");
	assert_non_null(error);
	trib_secret_free(&response);
	trib_sasl_client_destroy(&client);
}

static void test_xoauth2_unexpected_challenges(void **state)
{
	struct trib_sasl_client *client;
	const char *error;
	char *response, *error_copy;

	(void)state;
	/* An empty challenge after the initial response. */
	assert_int_equal(step_after_initial(TRIB_SASL_XOAUTH2, &alice_params,
					    "", &response, &error_copy),
			 TRIB_SASL_STEP_FAILED);
	assert_string_equal(response, "*");
	assert_non_null(strstr(error_copy, "empty challenge"));
	trib_secret_free(&response);
	free(error_copy);

	/* A non-empty challenge before anything was sent. */
	client = trib_sasl_client_create(TRIB_SASL_XOAUTH2, &alice_params,
					 &error);
	assert_int_equal(trib_sasl_client_step(client, DOVECOT_XOAUTH2_ERROR,
					       &response, &error),
			 TRIB_SASL_STEP_FAILED);
	assert_string_equal(response, "*");
	assert_non_null(strstr(error, "before the initial response"));
	trib_secret_free(&response);
	trib_sasl_client_destroy(&client);
}

static void test_xoauth2_error_challenges(void **state)
{
	(void)state;
	/* Gmail's */
	assert_server_error(TRIB_SASL_XOAUTH2,
			    "eyJzdGF0dXMiOiI0MDAiLCJzY2hlbWVzIjoiQmVhcmVyIiwic"
			    "2NvcGUiOiJodHRwczovL21haWwuZ29vZ2xlLmNvbS8ifQ==",
			    "(status 400, scope https://mail.google.com/)",
			    NULL);
	/* Numeric status, no scope, no status, extra members. */
	assert_json_challenge("{\"status\":401}",
			      "server rejected the token (status 401)", NULL);
	assert_json_challenge("{\"scope\":\"mail\"}",
			      "server rejected the token (no status, scope "
			      "mail)",
			      NULL);
	assert_json_challenge("{}", "server rejected the token (no status)",
			      NULL);
	assert_json_challenge("{\"status\":true,\"scope\":[\"a\"]}",
			      "server rejected the token (no status)", NULL);
	assert_json_challenge("{\"error\":{\"code\":401},\"status\":\"401\"}",
			      "(status 401)", NULL);
	/* Server text is made safe for a log line and kept short. */
	assert_json_challenge("{\"status\":\"4\\n0\\u00011\\u00e9\"}",
			      "(status 4?0?1?\?)", NULL);
	assert_json_challenge("{\"status\":\"a\\u0000b\"}", "(status a?b)",
			      NULL);
	assert_json_challenge(
		"{\"status\":\"0123456789012345678901234567890123456789"
		"0123456789012345678901234567890123456789\"}",
		"(status 0123456789012345678901234567890123456789"
		"012345678901234567890123...)",
		NULL);
}

/* Each malformed challenge still gets the closing line: the server is
 * waiting for it. */
static void test_oauth_malformed_challenges(void **state)
{
	static const enum trib_sasl_mech mechs[] = {
		TRIB_SASL_XOAUTH2,
		TRIB_SASL_OAUTHBEARER,
	};
	char deep[400], *big_json, *big_b64;
	unsigned int i;
	size_t n;

	(void)state;
	for (i = 0; i < TRIB_N_ELEMENTS(mechs); i++) {
		assert_server_error(mechs[i], "not base64!",
				    "malformed error challenge", "not base64");
		assert_server_error(mechs[i], "eyJzdGF0dXMiOiI0MDEifQ",
				    "malformed error challenge", "not base64");
		assert_server_error(mechs[i], DOVECOT_XOAUTH2_ERROR " ",
				    "malformed error challenge", "not base64");
		assert_server_error(mechs[i], "*", "malformed error challenge",
				    NULL);
	}
	assert_json_challenge("not json", "malformed error challenge",
			      "not JSON");
	assert_json_challenge("{\"status\":\"401\"", "malformed", "not JSON");
	assert_json_challenge("{\"status\":\"401\"}x", "malformed", "not JSON");
	assert_json_challenge("{\"status\":\"401\"}{}", "malformed",
			      "not JSON");
	assert_json_challenge("{\"status\":\"\xff\"}", "malformed", "not JSON");
	assert_json_challenge("[\"status\",\"401\"]", "malformed",
			      "not a JSON object");
	assert_json_challenge("\"401\"", "malformed", "not a JSON object");
	assert_json_challenge("401", "malformed", "not a JSON object");
	assert_json_challenge("   ", "malformed", "not JSON");
	{
		/* A NUL inside the decoded JSON. */
		static const char nul_json[] = "{\"status\":\"401\"}\0{}";
		char *b64 = trib_base64_encode(nul_json, sizeof(nul_json) - 1);

		assert_server_error(TRIB_SASL_XOAUTH2, b64, "malformed",
				    "not JSON");
		free(b64);
	}

	/* Deep nesting. */
	for (n = 0; n < 100; n++) {
		deep[n] = '[';
		deep[100 + n] = ']';
	}
	deep[200] = '\0';
	assert_json_challenge(deep, "malformed", "nested too deeply");
	assert_json_challenge("{\"status\":\"401\",\"a\":{\"b\":{\"c\":"
			      "{\"d\":{\"e\":1}}}}}",
			      "malformed", "nested too deeply");

	/* Valid JSON, but the base64 is over the limit. */
	n = TRIB_SASL_CHALLENGE_MAX;
	big_json = trib_malloc(n + 1);
	memset(big_json, ' ', n);
	memcpy(big_json, "{\"status\":\"401\"", 15);
	big_json[n - 1] = '}';
	big_json[n] = '\0';
	big_b64 = trib_base64_encode(big_json, n);
	assert_true(strlen(big_b64) > TRIB_SASL_CHALLENGE_MAX);
	assert_json_challenge(big_json, "malformed", "too large");
	free(big_b64);
	/* Just under the limit is accepted. */
	big_json[TRIB_SASL_CHALLENGE_MAX / 4 * 3 - 1] = '}';
	big_json[TRIB_SASL_CHALLENGE_MAX / 4 * 3] = '\0';
	big_b64 = trib_base64_encode(big_json, strlen(big_json));
	assert_int_equal(strlen(big_b64), TRIB_SASL_CHALLENGE_MAX);
	assert_server_error(TRIB_SASL_XOAUTH2, big_b64, "(status 401)", NULL);
	free(big_b64);
	free(big_json);
}

/* ---- OAUTHBEARER ---- */

static void test_oauthbearer_encoding(void **state)
{
	static const char raw_bob[] = "n,a=bob@example.com,\001"
				      "host=127.0.0.1\001port=15143\001"
				      "auth=Bearer good-token-alice\001\001";
	struct trib_sasl_params params = alice_params;

	(void)state;
	assert_initial_response(
		TRIB_SASL_OAUTHBEARER, &params, ALICE_OAUTHBEARER_RAW,
		sizeof(ALICE_OAUTHBEARER_RAW) - 1, ALICE_OAUTHBEARER_B64);
	/* An explicit authzid replaces the username in "a=". */
	params.authzid = "bob@example.com";
	assert_initial_response(TRIB_SASL_OAUTHBEARER, &params, raw_bob,
				sizeof(raw_bob) - 1, NULL);
	/* An empty one does not. */
	params.authzid = "";
	assert_initial_response(
		TRIB_SASL_OAUTHBEARER, &params, ALICE_OAUTHBEARER_RAW,
		sizeof(ALICE_OAUTHBEARER_RAW) - 1, ALICE_OAUTHBEARER_B64);
}

static void test_oauthbearer_escaping(void **state)
{
	static const char raw1[] = "n,a==3Da=2Cb=3D=3Dc=2C,\001"
				   "auth=Bearer tok\001\001";
	static const char raw2[] = "n,a=x=2C=2Cy,\001auth=Bearer tok\001\001";
	struct trib_sasl_params params = {
		.username = "=a,b==c,",
		.secret = "tok",
	};

	(void)state;
	assert_initial_response(TRIB_SASL_OAUTHBEARER, &params, raw1,
				sizeof(raw1) - 1, NULL);
	params.username = "plain-user";
	params.authzid = "x,,y";
	assert_initial_response(TRIB_SASL_OAUTHBEARER, &params, raw2,
				sizeof(raw2) - 1, NULL);
}

static void test_oauthbearer_host_port(void **state)
{
	static const char none[] = "n,a=alice,\001auth=Bearer t0k=\001\001";
	static const char host[] = "n,a=alice,\001host=imap.gmail.com\001"
				   "auth=Bearer t0k=\001\001";
	static const char port[] = "n,a=alice,\001port=993\001"
				   "auth=Bearer t0k=\001\001";
	struct trib_sasl_params params = {
		.username = "alice",
		.secret = "t0k=",
	};

	(void)state;
	assert_initial_response(TRIB_SASL_OAUTHBEARER, &params, none,
				sizeof(none) - 1, NULL);
	params.host = "";
	assert_initial_response(TRIB_SASL_OAUTHBEARER, &params, none,
				sizeof(none) - 1, NULL);
	params.host = "imap.gmail.com";
	assert_initial_response(TRIB_SASL_OAUTHBEARER, &params, host,
				sizeof(host) - 1, NULL);
	params.host = NULL;
	params.port = 993;
	assert_initial_response(TRIB_SASL_OAUTHBEARER, &params, port,
				sizeof(port) - 1, NULL);
	params.port = 65535;
	{
		char *ir = initial_response(TRIB_SASL_OAUTHBEARER, &params);

		assert_non_null(ir);
		trib_secret_free(&ir);
	}
}

static void test_oauthbearer_steps(void **state)
{
	struct trib_sasl_client *client;
	const char *error = "unset";
	char *response;

	(void)state;
	client = trib_sasl_client_create(TRIB_SASL_OAUTHBEARER, &alice_params,
					 &error);
	assert_non_null(client);
	assert_int_equal(trib_sasl_client_step(client, "", &response, &error),
			 TRIB_SASL_STEP_CONTINUE);
	assert_string_equal(response, ALICE_OAUTHBEARER_B64);
	assert_null(error);
	trib_secret_free(&response);

	/* RFC 7628 3.2.3: the error is answered with a single %x01. */
	assert_int_equal(trib_sasl_client_step(client, OAUTHBEARER_ERROR,
					       &response, &error),
			 TRIB_SASL_STEP_SERVER_ERROR);
	assert_string_equal(response, "AQ==");
	assert_b64_is(response, "\001", 1);
	assert_string_equal(error,
			    "server rejected the token (status invalid_token)");
	trib_secret_free(&response);

	assert_int_equal(trib_sasl_client_step(client, "", &response, &error),
			 TRIB_SASL_STEP_FAILED);
	assert_string_equal(response, "*");
	trib_secret_free(&response);
	trib_sasl_client_destroy(&client);

	/* Empty challenge after SASL-IR. */
	{
		char *error_copy;

		assert_int_equal(step_after_initial(TRIB_SASL_OAUTHBEARER,
						    &alice_params, "",
						    &response, &error_copy),
				 TRIB_SASL_STEP_FAILED);
		assert_string_equal(response, "*");
		assert_non_null(error_copy);
		trib_secret_free(&response);
		free(error_copy);
	}
	/* An RFC 7628 style error with more members. */
	assert_json_challenge("{\"status\":\"invalid_token\",\"scope\":"
			      "\"https://mail.google.com/\","
			      "\"openid-configuration\":\"https://x/\"}",
			      "(status invalid_token, scope "
			      "https://mail.google.com/)",
			      NULL);
}

/* ---- token and parameter checks ---- */

static void test_oauth_rejects(void **state)
{
	static const enum trib_sasl_mech mechs[] = {
		TRIB_SASL_XOAUTH2,
		TRIB_SASL_OAUTHBEARER,
	};
	static const char *const bad_tokens[] = {
		"SeCrEtTok en",	  "SeCrEtTok\001en", "SeCrEtTok=en",
		"=SeCrEtToken",	  "SeCrEtToken\n",   "SeCrEtTok\xc3\xa9n",
		"SeCrEtTok,en",	  "SeCrEtTok\"en",   "SeCrEtToken==x",
		"SeCrEtTok%2Fen",
	};
	static const char *const good_tokens[] = {
		"ya29.a0AfB_byC-x~y+z/0123456789",
		"EwBwA8l6BAAU==",
		"a",
		"Zm9v=",
	};
	struct trib_sasl_params params;
	unsigned int i, j;

	(void)state;
	for (i = 0; i < TRIB_N_ELEMENTS(mechs); i++) {
		params = alice_params;
		for (j = 0; j < TRIB_N_ELEMENTS(bad_tokens); j++) {
			params.secret = bad_tokens[j];
			assert_create_fails(mechs[i], &params, "token");
		}
		for (j = 0; j < TRIB_N_ELEMENTS(good_tokens); j++) {
			char *ir;

			params.secret = good_tokens[j];
			ir = initial_response(mechs[i], &params);
			trib_secret_free(&ir);
		}

		params.secret = "";
		assert_create_fails(mechs[i], &params, "access token");
		params.secret = NULL;
		assert_create_fails(mechs[i], &params, "access token");

		params.secret = "SeCrEtToken";
		params.username = "alice\001auth=Bearer x";
		assert_create_fails(mechs[i], &params, "username");
		params.username = "al\tice";
		assert_create_fails(mechs[i], &params, "username");
		params.username = "";
		assert_create_fails(mechs[i], &params, "username");
	}

	/* OAUTHBEARER's other fields. */
	params = alice_params;
	params.secret = "SeCrEtToken";
	params.authzid = "bob\001";
	assert_create_fails(TRIB_SASL_OAUTHBEARER, &params, "authorization");
	params.authzid = NULL;
	params.host = "imap.example.com\001auth=Bearer x";
	assert_create_fails(TRIB_SASL_OAUTHBEARER, &params, "host");
	params.host = "imap.example.com";
	params.port = 65536;
	assert_create_fails(TRIB_SASL_OAUTHBEARER, &params, "port");
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_base64_vectors),
		cmocka_unit_test(test_base64_round_trip),
		cmocka_unit_test(test_base64_large),
		cmocka_unit_test(test_base64_invalid),
		cmocka_unit_test(test_mech_names),
		cmocka_unit_test(test_plain_encoding),
		cmocka_unit_test(test_plain_rejects),
		cmocka_unit_test(test_plain_steps),
		cmocka_unit_test(test_xoauth2_encoding),
		cmocka_unit_test(test_xoauth2_steps),
		cmocka_unit_test(test_xoauth2_unexpected_challenges),
		cmocka_unit_test(test_xoauth2_error_challenges),
		cmocka_unit_test(test_oauth_malformed_challenges),
		cmocka_unit_test(test_oauthbearer_encoding),
		cmocka_unit_test(test_oauthbearer_escaping),
		cmocka_unit_test(test_oauthbearer_host_port),
		cmocka_unit_test(test_oauthbearer_steps),
		cmocka_unit_test(test_oauth_rejects),
	};

	return cmocka_run_group_tests(tests, NULL, NULL);
}
