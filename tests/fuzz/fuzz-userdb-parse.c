/* fuzz-userdb-parse.c: libFuzzer target for the auth userdb reply parser
 * (userdb-parse.h).
 *
 * The input is cut at LF into lines, as the connection cuts what the auth
 * service sends (the seeds in corpus-userdb/ are such output). Each line
 * is copied into a buffer of its exact size, so a read past its end is
 * caught, and parsed; every decoder then runs on the reply whatever its
 * type, with small ceilings (8 fields, 4 users) so that they are reached.
 * A split written here must agree with the parser's, every unescaped
 * string must escape back to the bytes it came from, the ceilings and the
 * order of the checks must hold, and error strings must be one clean
 * line. Any breach aborts. Everything lives in one pool, cleared after
 * each line and destroyed at the end. */

#include "userdb-parse.h"

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

#define FUZZ_MAX_FIELDS 8
#define FUZZ_MAX_USERS 4

struct expected_command {
	const char *name;
	enum trib_userdb_reply_type type;
	bool has_id;
};

static const struct expected_command commands[] = {
	{ "VERSION", TRIB_USERDB_REPLY_VERSION, false },
	{ "SPID", TRIB_USERDB_REPLY_SPID, false },
	{ "MECH", TRIB_USERDB_REPLY_AUTH_CLIENT, false },
	{ "CUID", TRIB_USERDB_REPLY_AUTH_CLIENT, false },
	{ "COOKIE", TRIB_USERDB_REPLY_AUTH_CLIENT, false },
	{ "USER", TRIB_USERDB_REPLY_USER, true },
	{ "NOTFOUND", TRIB_USERDB_REPLY_NOTFOUND, true },
	{ "FAIL", TRIB_USERDB_REPLY_FAIL, true },
	{ "LIST", TRIB_USERDB_REPLY_LIST, true },
	{ "DONE", TRIB_USERDB_REPLY_DONE, true },
};

/* One line, in a pool copy, and split at TAB here too. */
struct line {
	const char *text;
	char **fields;
	unsigned int count;
};

static void line_split(struct trib_pool *pool, const char *data, size_t len,
		       struct line *line_r)
{
	char *copy = trib_pool_strndup(pool, data, len);
	unsigned int n = 1;
	size_t i;

	for (i = 0; i < len; i++)
		n += data[i] == '\t' ? 1 : 0;
	line_r->text = trib_pool_strndup(pool, data, len);
	line_r->fields = trib_pool_alloc(pool, sizeof(char *) * n);
	line_r->count = n;
	n = 0;
	line_r->fields[n++] = copy;
	for (i = 0; i < len; i++) {
		if (copy[i] == '\t') {
			copy[i] = '\0';
			line_r->fields[n++] = copy + i + 1;
		}
	}
	CHECK(n == line_r->count);
}

static bool id_valid(const char *str, unsigned int *id_r)
{
	uint64_t value = 0;
	size_t len = strlen(str);

	if (len == 0 || len > 10 || strspn(str, "0123456789") != len)
		return false;
	for (size_t i = 0; i < len; i++)
		value = value * 10 + (uint64_t)(str[i] - '0');
	*id_r = (unsigned int)value;
	return value >= 1 && value <= 0xffffffffULL;
}

/* One line of an error or a message: no control bytes. */
static void check_clean(const char *str)
{
	CHECK(str != NULL);
	for (; *str != '\0'; str++)
		CHECK((unsigned char)*str >= 0x20 && *str != 0x7f);
}

/* raw (len bytes, no NUL, TAB or LF) unescaped to str: escaping str again
 * gives raw, with a bare CR written as its escape. */
static void check_roundtrip(struct trib_pool *pool, const char *raw, size_t len,
			    const char *str)
{
	char *canon = trib_pool_alloc(pool, len * 2 + 1);
	char *again = trib_pool_alloc(pool, strlen(str) * 2 + 1);
	size_t c = 0, a = 0;

	for (size_t i = 0; i < len; i++) {
		if (raw[i] == '\r') {
			canon[c++] = '\001';
			canon[c++] = 'r';
		} else {
			canon[c++] = raw[i];
		}
	}
	for (; *str != '\0'; str++) {
		static const char from[] = "\001\t\r\n", to[] = "1trn";
		const char *p = strchr(from, *str);

		if (p != NULL) {
			again[a++] = '\001';
			again[a++] = to[p - from];
		} else {
			again[a++] = *str;
		}
	}
	CHECK(c == a && memcmp(canon, again, c) == 0);
}

static void check_unescape_error(const char *error)
{
	CHECK(strcmp(error, "a NUL byte") == 0 ||
	      strcmp(error, "an unknown escape") == 0 ||
	      strcmp(error, "an escape is cut short") == 0);
}

/* What the parser split and named must match the split here. */
static void check_reply(const struct line *line,
			const struct trib_userdb_reply *reply)
{
	enum trib_userdb_reply_type type = TRIB_USERDB_REPLY_OTHER;
	unsigned int skip = 1, id = 0;

	for (size_t i = 0; i < TRIB_N_ELEMENTS(commands); i++) {
		if (strcmp(line->fields[0], commands[i].name) != 0)
			continue;
		if (!commands[i].has_id) {
			type = commands[i].type;
		} else if (line->count >= 2 && id_valid(line->fields[1], &id)) {
			type = commands[i].type;
			skip = 2;
		}
	}
	CHECK(reply->type == type);
	CHECK(reply->id == (skip == 2 ? id : 0));
	CHECK(reply->count == line->count - skip);
	for (unsigned int i = 0; i < reply->count; i++)
		CHECK(strcmp(reply->args[i], line->fields[skip + i]) == 0);
	CHECK(reply->args[reply->count] == NULL);
	CHECK(reply->version_supported ==
	      (type == TRIB_USERDB_REPLY_VERSION && reply->count >= 2 &&
	       strcmp(reply->args[0], "1") == 0));
}

static void check_user(struct trib_pool *pool,
		       const struct trib_userdb_reply *reply)
{
	struct trib_userdb_user user;
	const char *error = NULL, *eq;
	unsigned int nonempty = 0;

	for (unsigned int i = 1; i < reply->count; i++)
		nonempty += reply->args[i][0] != '\0' ? 1 : 0;
	if (trib_userdb_reply_parse_user(pool, reply, FUZZ_MAX_FIELDS, &user,
					 &error) < 0) {
		check_clean(error);
		CHECK(user.name == NULL && user.fields == NULL);
		CHECK((strcmp(error, "got an answer without a user name") ==
		       0) == (reply->count == 0 || reply->args[0][0] == '\0'));
		if (strncmp(error, "got more than ", 14) == 0)
			CHECK(nonempty > FUZZ_MAX_FIELDS);
		return;
	}
	CHECK(reply->count > 0 && user.name[0] != '\0');
	check_roundtrip(pool, reply->args[0], strlen(reply->args[0]),
			user.name);
	CHECK(user.count == nonempty && user.count <= FUZZ_MAX_FIELDS);
	CHECK(user.fields != NULL);
	for (unsigned int i = 1, f = 0; i < reply->count; i++) {
		const char *arg = reply->args[i];
		const struct trib_userdb_field *field = &user.fields[f];

		if (arg[0] == '\0')
			continue;
		f++;
		eq = strchr(arg, '=');
		CHECK(field->key[0] != '\0' && strchr(field->key, '=') == NULL);
		check_roundtrip(pool, arg,
				eq != NULL ? (size_t)(eq - arg) : strlen(arg),
				field->key);
		if (eq == NULL)
			CHECK(field->value[0] == '\0');
		else
			check_roundtrip(pool, eq + 1, strlen(eq + 1),
					field->value);
	}
}

static void check_fail(struct trib_pool *pool,
		       const struct trib_userdb_reply *reply)
{
	const char *reason = trib_userdb_reply_fail_reason(pool, reply);
	bool has_reason_field = false;

	for (unsigned int i = 0; i < reply->count; i++)
		has_reason_field |= strncmp(reply->args[i], "reason=", 7) == 0;
	if (reason != NULL)
		CHECK(reason[0] != '\0' && has_reason_field);
}

static void check_list(struct trib_pool *pool,
		       const struct trib_userdb_reply *reply,
		       unsigned int *listed)
{
	const char *name, *error = NULL;
	bool no_name = reply->count == 0 || reply->args[0][0] == '\0';

	if (trib_userdb_reply_parse_list_name(
		    pool, reply, *listed, FUZZ_MAX_USERS, &name, &error) < 0) {
		check_clean(error);
		CHECK(name == NULL);
		CHECK((strcmp(error, "a LIST line without a user name") == 0) ==
		      no_name);
		CHECK((strncmp(error, "more than ", 10) == 0) ==
		      (!no_name && *listed >= FUZZ_MAX_USERS));
		return;
	}
	CHECK(!no_name && *listed < FUZZ_MAX_USERS);
	check_roundtrip(pool, reply->args[0], strlen(reply->args[0]), name);
	if (reply->type == TRIB_USERDB_REPLY_LIST)
		(*listed)++;
}

/* Whatever the bytes, including NULs, TABs and LFs. */
static void check_unescape_raw(struct trib_pool *pool, const char *raw,
			       size_t len)
{
	const char *error = NULL;
	char *str = trib_userdb_unescape(pool, raw, len, &error);
	size_t escapes = 0;

	if (str == NULL) {
		check_unescape_error(error);
		return;
	}
	for (size_t i = 0; i < len; i++)
		escapes += raw[i] == '\001' ? 1 : 0;
	CHECK(strlen(str) == len - escapes);
}

static void check_sanitize(struct trib_pool *pool, const char *str)
{
	char *clean = trib_userdb_sanitize(pool, str, 80);
	size_t len = strlen(str), clean_len = strlen(clean);

	check_clean(clean);
	if (len <= 80)
		CHECK(clean_len == len);
	else
		CHECK(clean_len == 83 && strcmp(clean + 80, "...") == 0);
}

static void fuzz_line(struct trib_pool *pool, const char *data, size_t len,
		      unsigned int *listed)
{
	/* exactly len bytes, so that a read past the end is caught */
	char *exact = malloc(len > 0 ? len : 1);
	struct trib_userdb_reply reply;
	const char *error = NULL;
	struct line line;
	int ret;

	CHECK(exact != NULL);
	if (len > 0)
		memcpy(exact, data, len);
	ret = trib_userdb_reply_parse(pool, exact, len, &reply, &error);
	check_unescape_raw(pool, exact, len);
	free(exact);
	CHECK((ret < 0) == (memchr(data, '\0', len) != NULL));
	if (ret < 0) {
		CHECK(strcmp(error, "a NUL byte in a line") == 0);
		return;
	}
	line_split(pool, data, len, &line);
	check_sanitize(pool, line.text);
	check_reply(&line, &reply);
	check_user(pool, &reply);
	check_fail(pool, &reply);
	check_list(pool, &reply, listed);
	CHECK(trib_userdb_reply_done_failed(&reply) ==
	      (reply.count > 0 && strcmp(reply.args[0], "fail") == 0));
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	struct trib_pool *pool = trib_pool_create(0);
	const char *p = (const char *)data, *end = p + size, *lf;
	unsigned int listed = 0;

	while (p < end) {
		lf = memchr(p, '\n', (size_t)(end - p));
		if (lf == NULL)
			lf = end; /* the last line, cut short */
		fuzz_line(pool, p, (size_t)(lf - p), &listed);
		trib_pool_clear(pool);
		p = lf + 1;
	}
	trib_pool_destroy(&pool);
	CHECK(pool == NULL);
	return 0;
}
