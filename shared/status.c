/* status.c: the per-user status file (see status.h and docs/state.md). */

#include "status.h"

#include "alloc.h"
#include "fileio.h"
#include "settings.h"
#include "state.h"

#include <errno.h>
#include <fcntl.h>
#include <json-c/json.h>
#include <limits.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#define STATUS_VERSION 1
/* Nesting allowed: the file, "accounts", an account, its "errors", and
 * room for what a later writer may add. */
#define STATUS_DEPTH_MAX 8

static const char *const state_names[] = {
	[TRIB_ACCOUNT_STATE_NEW] = "new",
	[TRIB_ACCOUNT_STATE_OK] = "ok",
	[TRIB_ACCOUNT_STATE_DEFERRED] = "deferred",
	[TRIB_ACCOUNT_STATE_FAILING] = "failing",
	[TRIB_ACCOUNT_STATE_REAUTH] = "reauthorization-required",
};

const char *trib_account_state_name(enum trib_account_state state)
{
	if ((unsigned int)state < TRIB_N_ELEMENTS(state_names))
		return state_names[state];
	return "unknown";
}

static bool state_parse(const char *name, enum trib_account_state *state_r)
{
	for (unsigned int i = 0; i < TRIB_N_ELEMENTS(state_names); i++) {
		if (strcmp(name, state_names[i]) == 0) {
			*state_r = (enum trib_account_state)i;
			return true;
		}
	}
	return false;
}

char *trib_status_path(const char *state_dir, const char *user)
{
	if (!trib_state_valid_user(user))
		return NULL;
	return trib_strdup_printf("%s/%s/status", state_dir, user);
}

/* ---- the struct ---- */

struct trib_status *trib_status_new(const char *user)
{
	struct trib_status *status = trib_calloc(1, sizeof(*status));

	status->user = trib_strdup(user);
	return status;
}

static void account_free(struct trib_status_account *account)
{
	for (unsigned int i = 0; i < account->error_count; i++)
		free(account->errors[i]);
	free(account->errors);
	free(account->name);
	free(account);
}

void trib_status_free(struct trib_status **_status)
{
	struct trib_status *status = *_status;

	if (status == NULL)
		return;
	for (unsigned int i = 0; i < status->count; i++)
		account_free(status->accounts[i]);
	free(status->accounts);
	free(status->user);
	free(status);
	*_status = NULL;
}

struct trib_status_account *trib_status_find(struct trib_status *status,
					     const char *name)
{
	for (unsigned int i = 0; i < status->count; i++) {
		if (strcmp(status->accounts[i]->name, name) == 0)
			return status->accounts[i];
	}
	return NULL;
}

struct trib_status_account *trib_status_get(struct trib_status *status,
					    const char *name)
{
	struct trib_status_account *account = trib_status_find(status, name);

	if (account != NULL)
		return account;
	account = trib_calloc(1, sizeof(*account));
	account->name = trib_strdup(name);
	account->state = TRIB_ACCOUNT_STATE_NEW;
	status->accounts =
		trib_realloc(status->accounts,
			     (status->count + 1) * sizeof(*status->accounts));
	status->accounts[status->count++] = account;
	return account;
}

void trib_status_remove(struct trib_status *status, const char *name)
{
	for (unsigned int i = 0; i < status->count; i++) {
		if (strcmp(status->accounts[i]->name, name) != 0)
			continue;
		account_free(status->accounts[i]);
		memmove(status->accounts + i, status->accounts + i + 1,
			(status->count - i - 1) * sizeof(*status->accounts));
		status->count--;
		return;
	}
}

/* ---- error lines ---- */

/* The length of the UTF-8 character at s (at most len bytes), or 0 when
 * the bytes there are not one (RFC 3629: no overlong forms, no
 * surrogates, nothing above U+10FFFF). */
static size_t utf8_char_len(const unsigned char *s, size_t len)
{
	unsigned char lo = 0x80, hi = 0xbf;
	size_t n;

	if (s[0] >= 0xc2 && s[0] <= 0xdf)
		n = 2;
	else if (s[0] >= 0xe0 && s[0] <= 0xef)
		n = 3;
	else if (s[0] >= 0xf0 && s[0] <= 0xf4)
		n = 4;
	else
		return 0;
	if (s[0] == 0xe0)
		lo = 0xa0;
	else if (s[0] == 0xed)
		hi = 0x9f;
	else if (s[0] == 0xf0)
		lo = 0x90;
	else if (s[0] == 0xf4)
		hi = 0x8f;
	if (len < n || s[1] < lo || s[1] > hi)
		return 0;
	for (size_t i = 2; i < n; i++) {
		if (s[i] < 0x80 || s[i] > 0xbf)
			return 0;
	}
	return n;
}

/* line as one printable line of valid UTF-8 (anything else is '?'), at
 * most TRIB_STATUS_LINE_MAX bytes, cut between characters. */
static char *clean_line(const char *line)
{
	const unsigned char *in = (const unsigned char *)line;
	size_t len = strlen(line), i = 0, out_len = 0, cut, n;
	char *out = trib_malloc(len + 1);

	while (i < len) {
		if (in[i] < 0x80) {
			out[out_len++] = in[i] < 0x20 || in[i] == 0x7f
						 ? '?'
						 : (char)in[i];
			i++;
		} else if ((n = utf8_char_len(in + i, len - i)) == 0) {
			out[out_len++] = '?';
			i++;
		} else {
			memcpy(out + out_len, in + i, n);
			out_len += n;
			i += n;
		}
	}
	out[out_len] = '\0';
	if (out_len > TRIB_STATUS_LINE_MAX) {
		cut = TRIB_STATUS_LINE_MAX - 3;
		while (cut > 0 && ((unsigned char)out[cut] & 0xc0) == 0x80)
			cut--;
		memcpy(out + cut, "...", 4);
	}
	return out;
}

void trib_status_set_errors(struct trib_status_account *account,
			    char *const *errors, unsigned int count)
{
	unsigned int keep = count;

	for (unsigned int i = 0; i < account->error_count; i++)
		free(account->errors[i]);
	free(account->errors);
	account->errors = NULL;
	account->error_count = 0;
	if (count == 0)
		return;
	if (keep > TRIB_STATUS_ERRORS_MAX)
		keep = TRIB_STATUS_ERRORS_MAX - 1;
	account->errors =
		trib_calloc(TRIB_STATUS_ERRORS_MAX, sizeof(*account->errors));
	for (unsigned int i = 0; i < keep; i++)
		account->errors[i] = clean_line(errors[i]);
	if (keep < count) {
		account->errors[keep] = trib_strdup_printf(
			"(%u more error lines not kept)", count - keep);
		keep++;
	}
	account->error_count = keep;
}

/* ---- reading ---- */

static char *status_error(const char *path, const char *fmt, ...)
	TRIB_ATTR_PRINTF(2, 3);

static char *status_error(const char *path, const char *fmt, ...)
{
	va_list args;
	char *msg, *error;

	va_start(args, fmt);
	msg = trib_strdup_vprintf(fmt, args);
	va_end(args);
	error = trib_strdup_printf("status file %s: %s", path, msg);
	free(msg);
	return error;
}

/* The whole file: 1 with *data_r (NUL-terminated) and *size_r, 0 when
 * it does not exist, -1 with *error_r and *damaged_r. */
static int read_file(const char *path, char **data_r, size_t *size_r,
		     bool *damaged_r, char **error_r)
{
	struct stat st;
	size_t size = 0;
	ssize_t ret;
	char *data;
	int fd;

	fd = open(path, O_RDONLY | O_NOFOLLOW | O_NONBLOCK | O_CLOEXEC);
	if (fd < 0 && errno == ENOENT)
		return 0;
	if (fd < 0) {
		*damaged_r = errno == ELOOP;
		*error_r = errno == ELOOP
				   ? status_error(path, "is a symbolic link "
							"(refused)")
				   : status_error(path, "cannot open: %s",
						  strerror(errno));
		return -1;
	}
	if (fstat(fd, &st) < 0 || !S_ISREG(st.st_mode)) {
		*damaged_r = true;
		*error_r = status_error(path, "not a regular file");
		close(fd);
		return -1;
	}
	if (st.st_size > TRIB_STATUS_FILE_MAX) {
		*damaged_r = true;
		*error_r = status_error(path, "larger than %d bytes",
					TRIB_STATUS_FILE_MAX);
		close(fd);
		return -1;
	}
	/* One byte more than allowed: a file that grew shows. */
	data = trib_malloc(TRIB_STATUS_FILE_MAX + 2);
	while (size <= TRIB_STATUS_FILE_MAX) {
		ret = read(fd, data + size, TRIB_STATUS_FILE_MAX + 1 - size);
		if (ret < 0 && errno == EINTR)
			continue;
		if (ret < 0) {
			*damaged_r = false;
			*error_r = status_error(path, "read failed: %s",
						strerror(errno));
			free(data);
			close(fd);
			return -1;
		}
		if (ret == 0)
			break;
		size += (size_t)ret;
	}
	close(fd);
	if (size > TRIB_STATUS_FILE_MAX) {
		*damaged_r = true;
		*error_r = status_error(path, "larger than %d bytes",
					TRIB_STATUS_FILE_MAX);
		free(data);
		return -1;
	}
	data[size] = '\0';
	*data_r = data;
	*size_r = size;
	return 1;
}

static struct json_object *parse_json(const char *data, size_t size,
				      const char **why_r)
{
	struct json_tokener *tok;
	struct json_object *obj;
	enum json_tokener_error jerr;
	size_t end;

	if (size == 0) {
		*why_r = "empty (truncated)";
		return NULL;
	}
	if (memchr(data, '\0', size) != NULL) {
		*why_r = "not JSON (NUL byte)";
		return NULL;
	}
	/* json-c's depth allows one level less than it says. */
	tok = json_tokener_new_ex(STATUS_DEPTH_MAX + 1);
	if (tok == NULL)
		abort();
	json_tokener_set_flags(tok, JSON_TOKENER_STRICT |
					    JSON_TOKENER_VALIDATE_UTF8);
	/* With its NUL: that tells json-c the input ends there. */
	obj = json_tokener_parse_ex(tok, data, (int)size + 1);
	jerr = json_tokener_get_error(tok);
	end = json_tokener_get_parse_end(tok);
	json_tokener_free(tok);
	if (obj == NULL || jerr != json_tokener_success) {
		json_object_put(obj);
		if (jerr == json_tokener_error_depth)
			*why_r = "JSON nested too deeply";
		else if (jerr == json_tokener_continue ||
			 jerr == json_tokener_error_parse_eof)
			*why_r = "truncated JSON";
		else
			*why_r = "not valid JSON";
		return NULL;
	}
	for (size_t i = end; i < size; i++) {
		if (strchr(" \t\r\n", data[i]) == NULL) {
			json_object_put(obj);
			*why_r = "data after the JSON";
			return NULL;
		}
	}
	if (!json_object_is_type(obj, json_type_object)) {
		json_object_put(obj);
		*why_r = "not a JSON object";
		return NULL;
	}
	return obj;
}

/* 1: a member of that type (*val_r), 0: absent, -1: another type. */
static int member(struct json_object *obj, const char *name,
		  enum json_type type, struct json_object **val_r)
{
	if (!json_object_object_get_ex(obj, name, val_r))
		return 0;
	return json_object_is_type(*val_r, type) ? 1 : -1;
}

/* An integer member in 0..max (absent: 0). */
static bool member_uint(struct json_object *obj, const char *name, uint64_t max,
			uint64_t *value_r)
{
	struct json_object *val;
	int ret = member(obj, name, json_type_int, &val);

	*value_r = 0;
	if (ret == 0)
		return true;
	if (ret < 0 || json_object_get_int64(val) < 0)
		return false;
	*value_r = json_object_get_uint64(val);
	return *value_r <= max;
}

/* One account's member: NULL, or why it is wrong (static or in *buf). */
static const char *account_parse(struct json_object *obj,
				 struct trib_status_account *account, char *buf,
				 size_t size)
{
	static const struct {
		const char *name;
		uint64_t max;
	} fields[] = {
		{ "last_attempt", INT64_MAX },
		{ "last_success", INT64_MAX },
		{ "new", UINT_MAX },
		{ "delivered", UINT_MAX },
		{ "rejected", UINT_MAX },
		{ "deferred", UINT_MAX },
		{ "delivered_total", UINT64_MAX },
		{ "failures", UINT_MAX },
		{ "token_not_before", INT64_MAX },
	};
	uint64_t values[TRIB_N_ELEMENTS(fields)];
	struct json_object *val, *item;
	char **lines;
	size_t n;

	if (!json_object_is_type(obj, json_type_object))
		return "is not an object";
	if (member(obj, "state", json_type_string, &val) != 1)
		return "has no \"state\" string";
	if (!state_parse(json_object_get_string(val), &account->state))
		return "has an unknown \"state\"";
	for (unsigned int i = 0; i < TRIB_N_ELEMENTS(fields); i++) {
		if (!member_uint(obj, fields[i].name, fields[i].max,
				 &values[i])) {
			snprintf(buf, size,
				 "\"%s\" is not a number from 0 to %llu",
				 fields[i].name,
				 (unsigned long long)fields[i].max);
			return buf;
		}
	}
	account->last_attempt = (int64_t)values[0];
	account->last_success = (int64_t)values[1];
	account->new_count = (unsigned int)values[2];
	account->delivered = (unsigned int)values[3];
	account->rejected = (unsigned int)values[4];
	account->deferred = (unsigned int)values[5];
	account->delivered_total = values[6];
	account->failures = (unsigned int)values[7];
	account->token_not_before = (int64_t)values[8];

	switch (member(obj, "errors", json_type_array, &val)) {
	case 0:
		return NULL;
	case -1:
		return "\"errors\" is not an array";
	default:
		break;
	}
	n = json_object_array_length(val);
	lines = trib_calloc(n + 1, sizeof(*lines));
	for (size_t i = 0; i < n; i++) {
		item = json_object_array_get_idx(val, i);
		if (!json_object_is_type(item, json_type_string)) {
			free(lines);
			return "\"errors\" holds something that is not a "
			       "string";
		}
		lines[i] = (char *)json_object_get_string(item);
	}
	trib_status_set_errors(account, lines, (unsigned int)n);
	free(lines);
	return NULL;
}

/* The object's members into status: NULL, or the problem (malloc()ed). */
static char *status_parse(struct json_object *root, const char *user,
			  struct trib_status *status)
{
	struct json_object *val, *accounts;
	struct trib_status_account *account;
	const char *why;
	uint64_t updated;
	char buf[100];

	if (member(root, "version", json_type_int, &val) != 1)
		return trib_strdup("no \"version\" number");
	if (json_object_get_int64(val) != STATUS_VERSION)
		return trib_strdup_printf("version %lld (this tributary "
					  "reads version %d)",
					  (long long)json_object_get_int64(val),
					  STATUS_VERSION);
	if (member(root, "user", json_type_string, &val) != 1)
		return trib_strdup("no \"user\" string");
	if (strcmp(json_object_get_string(val), user) != 0)
		return trib_strdup_printf("belongs to another user (\"%.64s\", "
					  "not \"%s\")",
					  json_object_get_string(val), user);
	if (!member_uint(root, "updated", INT64_MAX, &updated))
		return trib_strdup("\"updated\" is not a number of seconds");
	status->updated = (int64_t)updated;
	if (member(root, "accounts", json_type_object, &accounts) != 1)
		return trib_strdup("no \"accounts\" object");
	json_object_object_foreach(accounts, name, obj)
	{
		if (!trib_settings_valid_account_name(name))
			return trib_strdup_printf("account \"%.64s\": not a "
						  "valid account name",
						  name);
		account = trib_status_get(status, name);
		why = account_parse(obj, account, buf, sizeof(buf));
		if (why != NULL)
			return trib_strdup_printf("account %s: %s", name, why);
	}
	return NULL;
}

int trib_status_load(const char *path, const char *user,
		     struct trib_status **status_r, bool *damaged_r,
		     char **error_r)
{
	struct trib_status *status;
	struct json_object *root;
	bool damaged = false;
	const char *why = NULL;
	char *data = NULL, *problem;
	size_t size = 0;
	int ret;

	*status_r = NULL;
	*error_r = NULL;
	if (damaged_r != NULL)
		*damaged_r = false;
	ret = read_file(path, &data, &size, &damaged, error_r);
	if (ret <= 0) {
		if (damaged_r != NULL)
			*damaged_r = damaged;
		if (ret == 0)
			*status_r = trib_status_new(user);
		return ret;
	}
	root = parse_json(data, size, &why);
	free(data);
	if (damaged_r != NULL)
		*damaged_r = true;
	if (root == NULL) {
		*error_r = status_error(path, "%s", why);
		return -1;
	}
	status = trib_status_new(user);
	problem = status_parse(root, user, status);
	json_object_put(root);
	if (problem != NULL) {
		*error_r = status_error(path, "%s", problem);
		free(problem);
		trib_status_free(&status);
		return -1;
	}
	if (damaged_r != NULL)
		*damaged_r = false;
	*status_r = status;
	return 0;
}

/* ---- writing ---- */

static struct json_object *account_json(const struct trib_status_account *a)
{
	struct json_object *obj = json_object_new_object();
	struct json_object *errors = json_object_new_array();

	json_object_object_add(
		obj, "state",
		json_object_new_string(trib_account_state_name(a->state)));
	json_object_object_add(obj, "last_attempt",
			       json_object_new_int64(a->last_attempt));
	json_object_object_add(obj, "last_success",
			       json_object_new_int64(a->last_success));
	json_object_object_add(obj, "new", json_object_new_int64(a->new_count));
	json_object_object_add(obj, "delivered",
			       json_object_new_int64(a->delivered));
	json_object_object_add(obj, "rejected",
			       json_object_new_int64(a->rejected));
	json_object_object_add(obj, "deferred",
			       json_object_new_int64(a->deferred));
	json_object_object_add(obj, "delivered_total",
			       json_object_new_uint64(a->delivered_total));
	json_object_object_add(obj, "failures",
			       json_object_new_int64(a->failures));
	if (a->token_not_before != 0)
		json_object_object_add(
			obj, "token_not_before",
			json_object_new_int64(a->token_not_before));
	for (unsigned int i = 0; i < a->error_count; i++)
		json_object_array_add(errors,
				      json_object_new_string(a->errors[i]));
	json_object_object_add(obj, "errors", errors);
	return obj;
}

static char *status_text(const struct trib_status *status, size_t *len_r)
{
	struct json_object *root = json_object_new_object();
	struct json_object *accounts = json_object_new_object();
	char *text;

	json_object_object_add(root, "version",
			       json_object_new_int(STATUS_VERSION));
	json_object_object_add(root, "user",
			       json_object_new_string(status->user));
	json_object_object_add(root, "updated",
			       json_object_new_int64(status->updated));
	for (unsigned int i = 0; i < status->count; i++)
		json_object_object_add(accounts, status->accounts[i]->name,
				       account_json(status->accounts[i]));
	json_object_object_add(root, "accounts", accounts);
	text = trib_strdup_printf(
		"%s\n", json_object_to_json_string_ext(
				root, JSON_C_TO_STRING_PRETTY |
					      JSON_C_TO_STRING_SPACED |
					      JSON_C_TO_STRING_NOSLASHESCAPE));
	json_object_put(root);
	*len_r = strlen(text);
	return text;
}

/* text into tmp, complete and fsync()ed: 0, or -1 with *error_r (the
 * temp file removed). */
static int write_temp(const char *path, const char *tmp, const char *text,
		      size_t len, uid_t uid, gid_t gid, char **error_r)
{
	int fd;

	fd = open(tmp, O_WRONLY | O_CREAT | O_TRUNC | O_NOFOLLOW | O_CLOEXEC,
		  0600);
	if (fd < 0) {
		*error_r = status_error(path, "cannot create %s: %s", tmp,
					strerror(errno));
		return -1;
	}
	if (fchmod(fd, 0600) < 0 || ((uid != (uid_t)-1 || gid != (gid_t)-1) &&
				     fchown(fd, uid, gid) < 0)) {
		*error_r = status_error(path,
					"cannot set mode 0600 and owner of "
					"%s: %s",
					tmp, strerror(errno));
		close(fd);
	} else if (trib_write_full(fd, text, len) < 0 || fsync(fd) < 0) {
		*error_r = status_error(path, "write of %s failed: %s", tmp,
					strerror(errno));
		close(fd);
	} else if (close(fd) < 0) {
		*error_r = status_error(path, "write of %s failed: %s", tmp,
					strerror(errno));
	} else {
		return 0;
	}
	(void)unlink(tmp);
	return -1;
}

int trib_status_save(struct trib_status *status, const char *path, uid_t uid,
		     gid_t gid, char **error_r)
{
	char *tmp, *text;
	size_t len;
	int ret = -1;

	*error_r = NULL;
	status->updated = (int64_t)time(NULL);
	text = status_text(status, &len);
	if (len > TRIB_STATUS_FILE_MAX) {
		*error_r = status_error(path,
					"would be larger than %d bytes "
					"(not written)",
					TRIB_STATUS_FILE_MAX);
		free(text);
		return -1;
	}
	tmp = trib_strdup_printf("%s.tmp", path);
	if (write_temp(path, tmp, text, len, uid, gid, error_r) < 0) {
		/* *error_r set */
	} else if (rename(tmp, path) < 0) {
		*error_r = status_error(path, "rename from %s failed: %s", tmp,
					strerror(errno));
		(void)unlink(tmp);
	} else if (trib_fsync_dir_of(path) < 0) {
		*error_r = status_error(path,
					"fsync of its directory failed: %s "
					"(the new status is in place, maybe "
					"not durable)",
					strerror(errno));
	} else {
		ret = 0;
	}
	free(text);
	free(tmp);
	return ret;
}
