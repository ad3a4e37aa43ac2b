/* userdb-parse.c: the reply lines of the auth userdb protocol
 * (userdb-parse.h). No I/O: lines in, replies out, all in the caller's
 * pool. */

#include "userdb-parse.h"

#include "alloc.h"

#include <stdint.h>
#include <string.h>

struct reply_command {
	const char *name;
	enum trib_userdb_reply_type type;
	bool has_id;
};

static const struct reply_command reply_commands[] = {
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

char *trib_userdb_sanitize(struct trib_pool *pool, const char *str, size_t max)
{
	size_t len = strlen(str), i;
	char *copy = trib_pool_alloc(pool, (len > max ? max : len) + 4);

	for (i = 0; i < len && i < max; i++)
		copy[i] = (unsigned char)str[i] < 0x20 || str[i] == 0x7f
				  ? '?'
				  : str[i];
	if (len > max) {
		memcpy(copy + i, "...", 3);
		i += 3;
	}
	copy[i] = '\0';
	return copy;
}

char *trib_userdb_unescape(struct trib_pool *pool, const char *src, size_t len,
			   const char **error_r)
{
	char *dest = trib_pool_alloc(pool, len + 1), *d = dest;

	for (size_t i = 0; i < len; i++) {
		if (src[i] == '\0') {
			*error_r = "a NUL byte";
			return NULL;
		}
		if (src[i] != '\001') {
			*d++ = src[i];
			continue;
		}
		if (++i == len) {
			*error_r = "an escape is cut short";
			return NULL;
		}
		switch (src[i]) {
		case '1':
			*d++ = '\001';
			break;
		case 't':
			*d++ = '\t';
			break;
		case 'r':
			*d++ = '\r';
			break;
		case 'n':
			*d++ = '\n';
			break;
		case '0':
			*error_r = "a NUL byte";
			return NULL;
		default:
			*error_r = "an unknown escape";
			return NULL;
		}
	}
	*d = '\0';
	return dest;
}

static bool parse_id(const char *str, unsigned int *id_r)
{
	unsigned long value = 0;

	if (*str == '\0' || strlen(str) > 10)
		return false;
	for (; *str != '\0'; str++) {
		if (*str < '0' || *str > '9')
			return false;
		value = value * 10 + (unsigned long)(*str - '0');
	}
	if (value == 0 || value > UINT32_MAX)
		return false;
	*id_r = (unsigned int)value;
	return true;
}

/* Split a copy of the line at TAB into the pool: count fields, then a
 * NULL. */
static char **split_tabs(struct trib_pool *pool, const char *line, size_t len,
			 unsigned int *count_r)
{
	char *copy = trib_pool_strndup(pool, line, len), *p, **fields;
	unsigned int count = 1, i = 0;

	for (p = copy; (p = strchr(p, '\t')) != NULL; p++)
		count++;
	fields = trib_pool_alloc(pool, sizeof(*fields) * (count + 1));
	for (p = copy; p != NULL; i++) {
		fields[i] = p;
		p = strchr(p, '\t');
		if (p != NULL)
			*p++ = '\0';
	}
	fields[count] = NULL;
	*count_r = count;
	return fields;
}

int trib_userdb_reply_parse(struct trib_pool *pool, const char *line,
			    size_t len, struct trib_userdb_reply *reply_r,
			    const char **error_r)
{
	const struct reply_command *cmd = NULL;
	unsigned int count, skip = 1;
	char **fields;

	memset(reply_r, 0, sizeof(*reply_r));
	if (memchr(line, '\0', len) != NULL) {
		*error_r = "a NUL byte in a line";
		return -1;
	}
	fields = split_tabs(pool, line, len, &count);
	for (size_t i = 0; i < TRIB_N_ELEMENTS(reply_commands); i++) {
		if (strcmp(fields[0], reply_commands[i].name) == 0)
			cmd = &reply_commands[i];
	}
	if (cmd != NULL && !cmd->has_id) {
		reply_r->type = cmd->type;
	} else if (cmd != NULL && count >= 2 &&
		   parse_id(fields[1], &reply_r->id)) {
		reply_r->type = cmd->type;
		skip = 2;
	}
	reply_r->args = (const char *const *)fields + skip;
	reply_r->count = count - skip;
	reply_r->version_supported =
		reply_r->type == TRIB_USERDB_REPLY_VERSION &&
		reply_r->count >= 2 && strcmp(reply_r->args[0], "1") == 0;
	return 0;
}

/* One key[=value] field of a USER answer into *field_r; -1 with an error
 * naming the field. */
static int parse_field(struct trib_pool *pool, const char *arg,
		       struct trib_userdb_field *field_r, const char **error_r)
{
	const char *eq = strchr(arg, '='), *error = NULL;
	size_t key_len = eq != NULL ? (size_t)(eq - arg) : strlen(arg);
	char *raw;

	if (key_len == 0) {
		*error_r = "got a field without a name";
		return -1;
	}
	/* both are unescaped: with two errors, the value's is named */
	field_r->key = trib_userdb_unescape(pool, arg, key_len, &error);
	field_r->value = eq == NULL
				 ? ""
				 : trib_userdb_unescape(pool, eq + 1,
							strlen(eq + 1), &error);
	if (field_r->key == NULL || field_r->value == NULL) {
		raw = trib_pool_strndup(pool, arg, key_len);
		*error_r = trib_pool_printf(pool, "got field %s that holds %s",
					    trib_userdb_sanitize(pool, raw, 64),
					    error);
		return -1;
	}
	return 0;
}

int trib_userdb_reply_parse_user(struct trib_pool *pool,
				 const struct trib_userdb_reply *reply,
				 unsigned int max_fields,
				 struct trib_userdb_user *user_r,
				 const char **error_r)
{
	const char *const *args = reply->args, *error = NULL;
	struct trib_userdb_field *fields;
	unsigned int n = 0;
	char *name;

	memset(user_r, 0, sizeof(*user_r));
	if (reply->count == 0 || args[0][0] == '\0') {
		*error_r = "got an answer without a user name";
		return -1;
	}
	name = trib_userdb_unescape(pool, args[0], strlen(args[0]), &error);
	if (name == NULL) {
		*error_r = trib_pool_printf(
			pool, "got a user name that holds %s", error);
		return -1;
	}
	for (unsigned int i = 1; i < reply->count; i++)
		n += args[i][0] != '\0' ? 1 : 0;
	if (n > max_fields) {
		*error_r = trib_pool_printf(pool, "got more than %u fields",
					    max_fields);
		return -1;
	}
	fields = trib_pool_alloc(pool, sizeof(*fields) * (n + 1));
	n = 0;
	for (unsigned int i = 1; i < reply->count; i++) {
		if (args[i][0] == '\0')
			continue;
		if (parse_field(pool, args[i], &fields[n], error_r) < 0)
			return -1;
		n++;
	}
	user_r->name = name;
	user_r->fields = fields;
	user_r->count = n;
	return 0;
}

const char *trib_userdb_reply_fail_reason(struct trib_pool *pool,
					  const struct trib_userdb_reply *reply)
{
	const char *error, *reason = NULL;

	for (unsigned int i = 0; i < reply->count && reason == NULL; i++) {
		if (strncmp(reply->args[i], "reason=", 7) == 0)
			reason = trib_userdb_unescape(
				pool, reply->args[i] + 7,
				strlen(reply->args[i] + 7), &error);
	}
	return reason != NULL && reason[0] != '\0' ? reason : NULL;
}

int trib_userdb_reply_parse_list_name(struct trib_pool *pool,
				      const struct trib_userdb_reply *reply,
				      unsigned int listed,
				      unsigned int max_users,
				      const char **name_r, const char **error_r)
{
	const char *error;

	*name_r = NULL;
	if (reply->count == 0 || reply->args[0][0] == '\0') {
		*error_r = "a LIST line without a user name";
		return -1;
	}
	if (listed >= max_users) {
		*error_r =
			trib_pool_printf(pool, "more than %u users", max_users);
		return -1;
	}
	*name_r = trib_userdb_unescape(pool, reply->args[0],
				       strlen(reply->args[0]), &error);
	if (*name_r == NULL) {
		*error_r =
			trib_pool_printf(pool, "a user name holds %s", error);
		return -1;
	}
	return 0;
}

bool trib_userdb_reply_done_failed(const struct trib_userdb_reply *reply)
{
	return reply->count > 0 && strcmp(reply->args[0], "fail") == 0;
}
