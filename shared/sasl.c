/* sasl.c: SASL client side of PLAIN (RFC 4616), XOAUTH2 and OAUTHBEARER
 * (RFC 7628).
 *
 * The whole initial response is built at create time, base64-encoded and
 * kept; the raw message (which holds the secret) is wiped at once. After
 * that the client is a three-state machine:
 *
 *   START --initial response sent--> SENT --error challenge--> DONE
 *
 * and any challenge the mechanism does not allow ends it with "*". */

#include "sasl.h"

#include "alloc.h"

#include <json-c/json.h>
#include <openssl/crypto.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

/* An error challenge is one flat JSON object; allow a little slack. */
#define SASL_JSON_MAX_DEPTH 4
/* Longest piece of server text quoted in an error string. */
#define SASL_QUOTE_MAX 64

enum sasl_state {
	/* Nothing sent yet. */
	SASL_STATE_START,
	/* The initial response went out. */
	SASL_STATE_SENT,
	/* The exchange ended on our side: only the tagged reply is left. */
	SASL_STATE_DONE,
};

struct trib_sasl_client {
	enum trib_sasl_mech mech;
	enum sasl_state state;
	/* base64 initial response: holds the secret, wiped on destroy. */
	char *initial_response;
	/* The last step's error, owned here. */
	char *error;
};

static const char *const sasl_mech_names[] = {
	[TRIB_SASL_PLAIN] = "PLAIN",
	[TRIB_SASL_XOAUTH2] = "XOAUTH2",
	[TRIB_SASL_OAUTHBEARER] = "OAUTHBEARER",
};

const char *trib_sasl_mech_name(enum trib_sasl_mech mech)
{
	if ((unsigned int)mech >= TRIB_N_ELEMENTS(sasl_mech_names))
		return NULL;
	return sasl_mech_names[mech];
}

bool trib_sasl_mech_parse(const char *name, enum trib_sasl_mech *mech_r)
{
	unsigned int i;

	if (name == NULL)
		return false;
	for (i = 0; i < TRIB_N_ELEMENTS(sasl_mech_names); i++) {
		if (strcasecmp(name, sasl_mech_names[i]) == 0) {
			*mech_r = (enum trib_sasl_mech)i;
			return true;
		}
	}
	return false;
}

/* ---- parameter checks ---- */

static bool sasl_str_is_empty(const char *str)
{
	return str == NULL || str[0] == '\0';
}

/* No C0 controls (this covers XOAUTH2's %x01 separator) and no DEL.
 * Bytes >= 0x80 pass: user names may be UTF-8. */
static bool sasl_text_is_valid(const char *str)
{
	const unsigned char *p;

	for (p = (const unsigned char *)str; *p != '\0'; p++) {
		if (*p < 0x20 || *p == 0x7f)
			return false;
	}
	return true;
}

static bool sasl_is_b64token_char(char c)
{
	return (c >= 'A' && c <= 'Z') || (c >= 'a' && c <= 'z') ||
	       (c >= '0' && c <= '9') || c == '-' || c == '.' || c == '_' ||
	       c == '~' || c == '+' || c == '/';
}

/* RFC 6750 b64token: 1*( ALPHA / DIGIT / "-" / "." / "_" / "~" / "+" /
 * "/" ) *"=" */
static bool sasl_token_is_valid(const char *token)
{
	const char *p = token;

	while (sasl_is_b64token_char(*p))
		p++;
	if (p == token)
		return false;
	while (*p == '=')
		p++;
	return *p == '\0';
}

/* Returns NULL when params can be encoded for mech, else a static error
 * that never quotes the secret. */
static const char *sasl_params_check(enum trib_sasl_mech mech,
				     const struct trib_sasl_params *params)
{
	bool oauth = mech != TRIB_SASL_PLAIN;

	if (trib_sasl_mech_name(mech) == NULL)
		return "SASL: unknown mechanism";
	if (sasl_str_is_empty(params->username))
		return "SASL: username is missing";
	if (!sasl_text_is_valid(params->username))
		return "SASL: username contains a control character";
	if (mech != TRIB_SASL_XOAUTH2 && params->authzid != NULL &&
	    !sasl_text_is_valid(params->authzid))
		return "SASL: authorization identity contains a control "
		       "character";
	if (sasl_str_is_empty(params->secret))
		return oauth ? "SASL: access token is missing"
			     : "SASL: password is missing";
	if (oauth && !sasl_token_is_valid(params->secret))
		return "SASL: access token contains characters not allowed "
		       "in an RFC 6750 bearer token";
	if (mech == TRIB_SASL_OAUTHBEARER) {
		if (params->host != NULL && !sasl_text_is_valid(params->host))
			return "SASL: host name contains a control character";
		if (params->port > 65535)
			return "SASL: port is out of range";
	}
	return NULL;
}

/* ---- building the initial response ---- */

/* Two passes: with data NULL it only measures, so the buffer holding the
 * secret is allocated once at its exact size and never reallocated. */
struct sasl_msg {
	unsigned char *data;
	size_t len;
};

static void sasl_msg_add(struct sasl_msg *msg, const void *ptr, size_t len)
{
	if (msg->data != NULL)
		memcpy(msg->data + msg->len, ptr, len);
	msg->len += len;
}

static void sasl_msg_add_str(struct sasl_msg *msg, const char *str)
{
	sasl_msg_add(msg, str, strlen(str));
}

/* RFC 5801 saslname: "," as "=2C" and "=" as "=3D". */
static void sasl_msg_add_saslname(struct sasl_msg *msg, const char *name)
{
	for (; *name != '\0'; name++) {
		if (*name == ',')
			sasl_msg_add_str(msg, "=2C");
		else if (*name == '=')
			sasl_msg_add_str(msg, "=3D");
		else
			sasl_msg_add(msg, name, 1);
	}
}

/* authzid NUL authcid NUL passwd */
static void sasl_build_plain(struct sasl_msg *msg,
			     const struct trib_sasl_params *params)
{
	if (params->authzid != NULL)
		sasl_msg_add_str(msg, params->authzid);
	sasl_msg_add(msg, "", 1);
	sasl_msg_add_str(msg, params->username);
	sasl_msg_add(msg, "", 1);
	sasl_msg_add_str(msg, params->secret);
}

/* user=U ^A auth=Bearer T ^A ^A */
static void sasl_build_xoauth2(struct sasl_msg *msg,
			       const struct trib_sasl_params *params)
{
	sasl_msg_add_str(msg, "user=");
	sasl_msg_add_str(msg, params->username);
	sasl_msg_add_str(msg, "\001auth=Bearer ");
	sasl_msg_add_str(msg, params->secret);
	sasl_msg_add_str(msg, "\001\001");
}

/* n,a=Z, ^A [host=H ^A] [port=P ^A] auth=Bearer T ^A ^A */
static void sasl_build_oauthbearer(struct sasl_msg *msg,
				   const struct trib_sasl_params *params)
{
	const char *authzid = sasl_str_is_empty(params->authzid)
				      ? params->username
				      : params->authzid;

	sasl_msg_add_str(msg, "n,a=");
	sasl_msg_add_saslname(msg, authzid);
	sasl_msg_add_str(msg, ",\001");
	if (!sasl_str_is_empty(params->host)) {
		sasl_msg_add_str(msg, "host=");
		sasl_msg_add_str(msg, params->host);
		sasl_msg_add_str(msg, "\001");
	}
	if (params->port != 0) {
		char port[32];

		snprintf(port, sizeof(port), "port=%u\001", params->port);
		sasl_msg_add_str(msg, port);
	}
	sasl_msg_add_str(msg, "auth=Bearer ");
	sasl_msg_add_str(msg, params->secret);
	sasl_msg_add_str(msg, "\001\001");
}

static void sasl_build(enum trib_sasl_mech mech,
		       const struct trib_sasl_params *params,
		       struct sasl_msg *msg)
{
	switch (mech) {
	case TRIB_SASL_PLAIN:
		sasl_build_plain(msg, params);
		break;
	case TRIB_SASL_XOAUTH2:
		sasl_build_xoauth2(msg, params);
		break;
	case TRIB_SASL_OAUTHBEARER:
		sasl_build_oauthbearer(msg, params);
		break;
	}
}

struct trib_sasl_client *
trib_sasl_client_create(enum trib_sasl_mech mech,
			const struct trib_sasl_params *params,
			const char **error_r)
{
	struct trib_sasl_client *client;
	struct sasl_msg msg = { NULL, 0 };
	size_t size;
	const char *error;

	error = sasl_params_check(mech, params);
	if (error != NULL) {
		*error_r = error;
		return NULL;
	}
	sasl_build(mech, params, &msg);
	size = msg.len;
	msg.data = trib_malloc(size);
	msg.len = 0;
	sasl_build(mech, params, &msg);
	if (msg.len != size)
		abort();

	client = trib_calloc(1, sizeof(*client));
	client->mech = mech;
	client->state = SASL_STATE_START;
	client->initial_response = trib_base64_encode(msg.data, msg.len);
	OPENSSL_cleanse(msg.data, size);
	free(msg.data);
	return client;
}

void trib_sasl_client_destroy(struct trib_sasl_client **client)
{
	if (*client == NULL)
		return;
	trib_secret_free(&(*client)->initial_response);
	free((*client)->error);
	free(*client);
	*client = NULL;
}

char *trib_sasl_client_initial_response(struct trib_sasl_client *client)
{
	client->state = SASL_STATE_SENT;
	return trib_strdup(client->initial_response);
}

/* ---- error challenges ---- */

/* Quote server text safely: at most SASL_QUOTE_MAX bytes, printable ASCII
 * only. out must hold SASL_QUOTE_MAX + 4 bytes. */
static void sasl_quote(const char *str, size_t len, char *out)
{
	size_t i, n = len > SASL_QUOTE_MAX ? SASL_QUOTE_MAX : len;

	for (i = 0; i < n; i++) {
		unsigned char c = (unsigned char)str[i];

		out[i] = c >= 0x20 && c < 0x7f ? (char)c : '?';
	}
	if (n < len) {
		memcpy(out + n, "...", 3);
		n += 3;
	}
	out[n] = '\0';
}

/* The string value of a JSON object member (numbers are printed), quoted
 * into out; false when it is missing or of another type. */
static bool sasl_json_get_quoted(struct json_object *obj, const char *key,
				 char *out)
{
	struct json_object *value;
	const char *str;

	if (!json_object_object_get_ex(obj, key, &value))
		return false;
	if (!json_object_is_type(value, json_type_string) &&
	    !json_object_is_type(value, json_type_int))
		return false;
	str = json_object_get_string(value);
	if (json_object_is_type(value, json_type_string))
		sasl_quote(str, (size_t)json_object_get_string_len(value), out);
	else
		sasl_quote(str, strlen(str), out);
	return true;
}

static char *sasl_describe_json_error(struct json_object *obj)
{
	char status[SASL_QUOTE_MAX + 4], scope[SASL_QUOTE_MAX + 4];
	bool have_status, have_scope;

	have_status = sasl_json_get_quoted(obj, "status", status);
	have_scope = sasl_json_get_quoted(obj, "scope", scope);
	return trib_strdup_printf("server rejected the token (%s%s%s%s)",
				  have_status ? "status " : "no status",
				  have_status ? status : "",
				  have_scope ? ", scope " : "",
				  have_scope ? scope : "");
}

static char *sasl_malformed(const char *why)
{
	return trib_strdup_printf(
		"server rejected the token (malformed error challenge: %s)",
		why);
}

/* Parse the JSON in a decoded challenge (data[size] is NUL). */
static char *sasl_describe_json(const char *data, size_t size)
{
	struct json_tokener *tok;
	struct json_object *obj;
	enum json_tokener_error jerr;
	char *error;

	if (memchr(data, '\0', size) != NULL)
		return sasl_malformed("not JSON");
	tok = json_tokener_new_ex(SASL_JSON_MAX_DEPTH);
	if (tok == NULL)
		abort();
	json_tokener_set_flags(tok, JSON_TOKENER_STRICT |
					    JSON_TOKENER_VALIDATE_UTF8);
	/* Pass the NUL too: it tells json-c the input ends here. */
	obj = json_tokener_parse_ex(tok, data, (int)size + 1);
	jerr = json_tokener_get_error(tok);
	json_tokener_free(tok);
	if (obj == NULL || jerr != json_tokener_success) {
		json_object_put(obj);
		return sasl_malformed(jerr == json_tokener_error_depth
					      ? "JSON nested too deeply"
					      : "not JSON");
	}
	if (!json_object_is_type(obj, json_type_object))
		error = sasl_malformed("not a JSON object");
	else
		error = sasl_describe_json_error(obj);
	json_object_put(obj);
	return error;
}

/* What a non-empty XOAUTH2/OAUTHBEARER challenge says went wrong. */
static char *sasl_describe_error_challenge(const char *challenge)
{
	void *data;
	size_t size;
	char *error;

	if (strlen(challenge) > TRIB_SASL_CHALLENGE_MAX)
		return sasl_malformed("too large");
	if (trib_base64_decode(challenge, &data, &size) < 0)
		return sasl_malformed("not base64");
	error = sasl_describe_json(data, size);
	free(data);
	return error;
}

/* ---- steps ---- */

static enum trib_sasl_step_result
sasl_client_fail(struct trib_sasl_client *client, char **response_r,
		 const char **error_r, const char *fmt, ...)
	TRIB_ATTR_PRINTF(4, 5);

/* End the exchange from our side: "*" cancels it. */
static enum trib_sasl_step_result
sasl_client_fail(struct trib_sasl_client *client, char **response_r,
		 const char **error_r, const char *fmt, ...)
{
	va_list args;

	va_start(args, fmt);
	client->error = trib_strdup_vprintf(fmt, args);
	va_end(args);
	client->state = SASL_STATE_DONE;
	*response_r = trib_strdup("*");
	*error_r = client->error;
	return TRIB_SASL_STEP_FAILED;
}

static enum trib_sasl_step_result
sasl_client_server_error(struct trib_sasl_client *client, const char *challenge,
			 char **response_r, const char **error_r)
{
	client->error = sasl_describe_error_challenge(challenge);
	client->state = SASL_STATE_DONE;
	/* XOAUTH2: an empty line. RFC 7628 3.2.3: a single %x01. */
	*response_r = trib_strdup(client->mech == TRIB_SASL_OAUTHBEARER ? "AQ=="
									: "");
	*error_r = client->error;
	return TRIB_SASL_STEP_SERVER_ERROR;
}

enum trib_sasl_step_result
trib_sasl_client_step(struct trib_sasl_client *client, const char *challenge,
		      char **response_r, const char **error_r)
{
	const char *name = trib_sasl_mech_name(client->mech);
	bool empty = sasl_str_is_empty(challenge);

	free(client->error);
	client->error = NULL;

	switch (client->state) {
	case SASL_STATE_START:
		if (!empty) {
			return sasl_client_fail(
				client, response_r, error_r,
				"%s: unexpected challenge before the initial "
				"response",
				name);
		}
		*response_r = trib_sasl_client_initial_response(client);
		*error_r = NULL;
		return TRIB_SASL_STEP_CONTINUE;
	case SASL_STATE_SENT:
		if (client->mech == TRIB_SASL_PLAIN) {
			return sasl_client_fail(
				client, response_r, error_r,
				"%s: unexpected challenge after the initial "
				"response",
				name);
		}
		if (empty) {
			return sasl_client_fail(
				client, response_r, error_r,
				"%s: unexpected empty challenge after the "
				"initial response",
				name);
		}
		return sasl_client_server_error(client, challenge, response_r,
						error_r);
	case SASL_STATE_DONE:
		break;
	}
	return sasl_client_fail(client, response_r, error_r,
				"%s: more challenges than the mechanism has",
				name);
}
