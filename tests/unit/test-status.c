/* test-status.c: the per-user status file (shared/status.h). Everything
 * survives a save and a load; a missing file is an empty status; every
 * kind of damage (truncated, too big, not JSON, nested too deeply, the
 * wrong type anywhere, another version or user, a link) is refused with
 * the file named; fields it does not know are ignored; error lines are
 * cut to the limits on a character boundary; a failed save leaves the old
 * file and no temp file; files are 0600. Each test runs in a temp dir of
 * its own. */

#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>

#include <cmocka.h>

#include "alloc.h"
#include "status.h"

#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

struct fixture {
	char *dir;
	char *path; /* dir/status */
	char *tmp;  /* dir/status.tmp */
};

static int setup(void **state)
{
	struct fixture *fx = trib_calloc(1, sizeof(*fx));
	char tmpl[] = "/tmp/test-status.XXXXXX";

	assert_non_null(mkdtemp(tmpl));
	fx->dir = trib_strdup(tmpl);
	fx->path = trib_strdup_printf("%s/status", fx->dir);
	fx->tmp = trib_strdup_printf("%s/status.tmp", fx->dir);
	*state = fx;
	return 0;
}

static int teardown(void **state)
{
	struct fixture *fx = *state;

	(void)unlink(fx->path);
	(void)rmdir(fx->path);
	(void)unlink(fx->tmp);
	(void)rmdir(fx->tmp);
	assert_int_equal(rmdir(fx->dir), 0);
	free(fx->dir);
	free(fx->path);
	free(fx->tmp);
	free(fx);
	return 0;
}

static void write_text(const char *path, const char *text, size_t len)
{
	int fd = open(path, O_WRONLY | O_CREAT | O_TRUNC, 0600);

	assert_true(fd >= 0);
	assert_int_equal(write(fd, text, len), (ssize_t)len);
	assert_int_equal(close(fd), 0);
}

static char *read_text(const char *path)
{
	struct stat st;
	char *text;
	int fd = open(path, O_RDONLY);

	assert_true(fd >= 0);
	assert_int_equal(fstat(fd, &st), 0);
	text = trib_malloc((size_t)st.st_size + 1);
	assert_int_equal(read(fd, text, (size_t)st.st_size), st.st_size);
	text[st.st_size] = '\0';
	close(fd);
	return text;
}

/* Save status at fx->path, checking the file and that no temp is left. */
static void save_ok(struct fixture *fx, struct trib_status *status)
{
	struct stat st;
	char *error = NULL;

	assert_int_equal(trib_status_save(status, fx->path, (uid_t)-1,
					  (gid_t)-1, &error),
			 0);
	assert_null(error);
	assert_int_equal(stat(fx->path, &st), 0);
	assert_int_equal(st.st_mode & 07777, 0600);
	assert_int_equal(access(fx->tmp, F_OK), -1);
}

static struct trib_status *load_ok(struct fixture *fx, const char *user)
{
	struct trib_status *status = NULL;
	char *error = NULL;
	bool damaged = true;

	assert_int_equal(
		trib_status_load(fx->path, user, &status, &damaged, &error), 0);
	assert_null(error);
	assert_false(damaged);
	assert_non_null(status);
	return status;
}

/* Loading text must fail as damaged, naming the file and saying why. */
static void assert_refused(struct fixture *fx, const char *text, size_t len,
			   const char *why)
{
	struct trib_status *status = NULL;
	char *error = NULL;
	bool damaged = false;

	write_text(fx->path, text, len);
	if (trib_status_load(fx->path, "alice", &status, &damaged, &error) !=
	    -1)
		fail_msg("accepted: %.*s", (int)len, text);
	assert_null(status);
	assert_true(damaged);
	assert_non_null(error);
	if (strstr(error, fx->path) == NULL || strstr(error, why) == NULL)
		fail_msg("for %.*s: error '%s' lacks the path or '%s'",
			 (int)len, text, error, why);
	free(error);
}

static void assert_refused_str(struct fixture *fx, const char *text,
			       const char *why)
{
	assert_refused(fx, text, strlen(text), why);
}

static void test_names_and_path(void **state)
{
	char *path;

	(void)state;
	assert_string_equal(trib_account_state_name(TRIB_ACCOUNT_STATE_NEW),
			    "new");
	assert_string_equal(trib_account_state_name(TRIB_ACCOUNT_STATE_OK),
			    "ok");
	assert_string_equal(
		trib_account_state_name(TRIB_ACCOUNT_STATE_DEFERRED),
		"deferred");
	assert_string_equal(trib_account_state_name(TRIB_ACCOUNT_STATE_FAILING),
			    "failing");
	assert_string_equal(trib_account_state_name(TRIB_ACCOUNT_STATE_REAUTH),
			    "reauthorization-required");
	path = trib_status_path("/var/lib/tributary", "alice@example.com");
	assert_string_equal(path,
			    "/var/lib/tributary/alice@example.com/status");
	free(path);
	assert_null(trib_status_path("/var/lib/tributary", "../etc"));
	assert_null(trib_status_path("/var/lib/tributary", "a/b"));
	assert_null(trib_status_path("/var/lib/tributary", ""));
}

static void test_round_trip(void **state)
{
	struct fixture *fx = *state;
	struct trib_status *status = trib_status_new("alice"), *loaded;
	struct trib_status_account *a;
	char *errors[] = { "alice/work: LMTP: 451 4.3.0 try later",
			   "alice/work: Fläche: ünïcode kept" };
	time_t before = time(NULL);

	a = trib_status_get(status, "work");
	assert_ptr_equal(trib_status_get(status, "work"), a);
	assert_int_equal(a->state, TRIB_ACCOUNT_STATE_NEW);
	a->state = TRIB_ACCOUNT_STATE_DEFERRED;
	a->last_attempt = 1764280000;
	a->last_success = 1764270000;
	a->new_count = 12;
	a->delivered = 7;
	a->rejected = 1;
	a->deferred = 4;
	a->delivered_total = 5000000000ULL;
	a->failures = 3;
	trib_status_set_errors(a, errors, 2);
	a = trib_status_get(status, "home");
	a->state = TRIB_ACCOUNT_STATE_REAUTH;
	a->delivered = UINT_MAX;
	a = trib_status_get(status, "old");
	a->state = TRIB_ACCOUNT_STATE_OK;
	save_ok(fx, status);
	assert_true(status->updated >= before);
	assert_true(status->updated <= time(NULL));

	loaded = load_ok(fx, "alice");
	assert_string_equal(loaded->user, "alice");
	assert_int_equal(loaded->updated, status->updated);
	assert_int_equal(loaded->count, 3);
	a = trib_status_find(loaded, "work");
	assert_non_null(a);
	assert_ptr_equal(a, loaded->accounts[0]);
	assert_int_equal(a->state, TRIB_ACCOUNT_STATE_DEFERRED);
	assert_int_equal(a->last_attempt, 1764280000);
	assert_int_equal(a->last_success, 1764270000);
	assert_int_equal(a->new_count, 12);
	assert_int_equal(a->delivered, 7);
	assert_int_equal(a->rejected, 1);
	assert_int_equal(a->deferred, 4);
	assert_true(a->delivered_total == 5000000000ULL);
	assert_int_equal(a->failures, 3);
	assert_int_equal(a->error_count, 2);
	assert_string_equal(a->errors[0], errors[0]);
	assert_string_equal(a->errors[1], errors[1]);
	a = trib_status_find(loaded, "home");
	assert_int_equal(a->state, TRIB_ACCOUNT_STATE_REAUTH);
	assert_int_equal(a->delivered, UINT_MAX);
	assert_int_equal(a->error_count, 0);
	assert_int_equal(trib_status_find(loaded, "old")->state,
			 TRIB_ACCOUNT_STATE_OK);
	assert_null(trib_status_find(loaded, "none"));

	/* removing, then saving over the old file */
	trib_status_remove(loaded, "home");
	trib_status_remove(loaded, "none");
	assert_int_equal(loaded->count, 2);
	assert_string_equal(loaded->accounts[1]->name, "old");
	save_ok(fx, loaded);
	trib_status_free(&loaded);
	assert_null(loaded);
	loaded = load_ok(fx, "alice");
	assert_int_equal(loaded->count, 2);
	assert_null(trib_status_find(loaded, "home"));
	trib_status_free(&loaded);
	trib_status_free(&status);
	trib_status_free(&status);
}

static void test_missing_file_is_empty(void **state)
{
	struct fixture *fx = *state;
	struct trib_status *status = NULL;
	char *error = NULL;
	char *path = trib_strdup_printf("%s/nodir/status", fx->dir);

	status = load_ok(fx, "alice");
	assert_string_equal(status->user, "alice");
	assert_int_equal(status->count, 0);
	assert_int_equal(status->updated, 0);
	trib_status_free(&status);
	/* NULL damaged_r is fine */
	assert_int_equal(trib_status_load(path, "bob", &status, NULL, &error),
			 0);
	assert_int_equal(status->count, 0);
	trib_status_free(&status);
	free(path);
}

static void test_unknown_fields_ignored(void **state)
{
	struct fixture *fx = *state;
	struct trib_status *status;

	write_text(fx->path,
		   "{\"version\":1,\"user\":\"alice\",\"future\":{\"a\":[1]},"
		   "\"accounts\":{\"work\":{\"state\":\"ok\",\"new\":2,"
		   "\"later\":\"x\",\"nested\":{\"b\":{\"c\":[]}}}}}",
		   strlen("{\"version\":1,\"user\":\"alice\",\"future\":{\"a\":"
			  "[1]},\"accounts\":{\"work\":{\"state\":\"ok\","
			  "\"new\":2,\"later\":\"x\",\"nested\":{\"b\":{"
			  "\"c\":[]}}}}}"));
	status = load_ok(fx, "alice");
	assert_int_equal(status->count, 1);
	assert_int_equal(status->accounts[0]->state, TRIB_ACCOUNT_STATE_OK);
	assert_int_equal(status->accounts[0]->new_count, 2);
	/* absent numbers are 0 */
	assert_int_equal(status->accounts[0]->last_attempt, 0);
	assert_int_equal(status->updated, 0);
	trib_status_free(&status);
}

#define HEAD "{\"version\":1,\"user\":\"alice\",\"accounts\":"

static void test_damaged_refused(void **state)
{
	static const struct {
		const char *text, *why;
	} cases[] = {
		{ "", "empty" },
		{ "{", "truncated JSON" },
		{ HEAD "{\"work\":{\"state\":\"ok\"}}", "truncated JSON" },
		{ "not json", "not valid JSON" },
		{ "{\"version\":1,}", "not valid JSON" },
		{ "[1,2]", "not a JSON object" },
		{ HEAD "{}} x", "not valid JSON" },
		{ "{\"user\":\"alice\",\"accounts\":{}}", "no \"version\"" },
		{ "{\"version\":\"1\",\"user\":\"alice\",\"accounts\":{}}",
		  "no \"version\"" },
		{ "{\"version\":2,\"user\":\"alice\",\"accounts\":{}}",
		  "version 2" },
		{ "{\"version\":1,\"accounts\":{}}", "no \"user\"" },
		{ "{\"version\":1,\"user\":\"bob\",\"accounts\":{}}",
		  "another user" },
		{ "{\"version\":1,\"user\":\"alice\"}", "no \"accounts\"" },
		{ HEAD "[]}", "no \"accounts\"" },
		{ "{\"version\":1,\"user\":\"alice\",\"updated\":-5,"
		  "\"accounts\":{}}",
		  "\"updated\"" },
		{ HEAD "{\"work\":[]}}", "account work: is not an object" },
		{ HEAD "{\"Bad Name\":{\"state\":\"ok\"}}}",
		  "not a valid account name" },
		{ HEAD "{\"work\":{}}}", "account work: has no \"state\"" },
		{ HEAD "{\"work\":{\"state\":1}}}", "has no \"state\"" },
		{ HEAD "{\"work\":{\"state\":\"sleepy\"}}}",
		  "unknown \"state\"" },
		{ HEAD "{\"work\":{\"state\":\"ok\",\"delivered\":-1}}}",
		  "\"delivered\" is not a number from 0 to 4294967295" },
		{ HEAD "{\"work\":{\"state\":\"ok\",\"delivered\":\"3\"}}}",
		  "\"delivered\" is not a number" },
		{ HEAD "{\"work\":{\"state\":\"ok\",\"new\":4294967296}}}",
		  "\"new\" is not a number" },
		{ HEAD "{\"work\":{\"state\":\"ok\",\"failures\":1.5}}}",
		  "\"failures\" is not a number" },
		{ HEAD "{\"work\":{\"state\":\"ok\",\"last_attempt\":null}}}",
		  "\"last_attempt\" is not a number" },
		{ HEAD "{\"work\":{\"state\":\"ok\",\"errors\":\"x\"}}}",
		  "\"errors\" is not an array" },
		{ HEAD "{\"work\":{\"state\":\"ok\",\"errors\":[\"a\",2]}}}",
		  "not a string" },
		{ HEAD "{\"work\":{\"state\":\"ok\",\"errors\":[\"\xff\"]}}}",
		  "not valid JSON" },
		{ HEAD
		  "{\"work\":{\"state\":\"ok\",\"x\":[[[[[[[[[]]]]]]]]]}}}",
		  "nested too deeply" },
	};
	struct fixture *fx = *state;

	for (size_t i = 0; i < TRIB_N_ELEMENTS(cases); i++)
		assert_refused_str(fx, cases[i].text, cases[i].why);
	assert_refused(fx, HEAD "{}}\0", sizeof(HEAD "{}}\0") - 1, "NUL");
}

static void test_truncated_and_too_big(void **state)
{
	struct fixture *fx = *state;
	struct trib_status *status = trib_status_new("alice");
	char *text, *big;
	size_t len;

	trib_status_get(status, "work")->state = TRIB_ACCOUNT_STATE_OK;
	trib_status_get(status, "home")->state = TRIB_ACCOUNT_STATE_OK;
	save_ok(fx, status);
	trib_status_free(&status);
	text = read_text(fx->path);
	len = strlen(text);
	/* every cut short of the whole file (some whitespace at the end
	 * aside) is refused */
	for (size_t cut = 0; cut + 2 < len; cut++)
		assert_refused(fx, text, cut, fx->path);
	free(text);

	/* valid JSON padded with spaces past the limit */
	len = TRIB_STATUS_FILE_MAX + 1;
	big = trib_malloc(len);
	memset(big, ' ', len);
	memcpy(big, HEAD "{}}", strlen(HEAD "{}}"));
	assert_refused(fx, big, len, "larger than 1048576 bytes");
	/* at the limit it is read */
	write_text(fx->path, big, len - 1);
	status = load_ok(fx, "alice");
	trib_status_free(&status);
	free(big);
}

static void test_not_a_file(void **state)
{
	struct fixture *fx = *state;
	struct trib_status *status = NULL;
	char *error = NULL;
	bool damaged = false;

	assert_int_equal(mkdir(fx->path, 0700), 0);
	assert_int_equal(
		trib_status_load(fx->path, "alice", &status, &damaged, &error),
		-1);
	assert_true(damaged);
	assert_non_null(strstr(error, "not a regular file"));
	free(error);
	assert_int_equal(rmdir(fx->path), 0);

	assert_int_equal(symlink("/etc/passwd", fx->path), 0);
	assert_int_equal(
		trib_status_load(fx->path, "alice", &status, &damaged, &error),
		-1);
	assert_true(damaged);
	assert_non_null(strstr(error, "symbolic link"));
	free(error);
	/* nor is one written through */
	status = trib_status_new("alice");
	assert_int_equal(symlink("/nonexistent-target", fx->tmp), 0);
	assert_int_equal(trib_status_save(status, fx->path, (uid_t)-1,
					  (gid_t)-1, &error),
			 -1);
	assert_non_null(strstr(error, fx->tmp));
	free(error);
	trib_status_free(&status);
	assert_int_equal(unlink(fx->tmp), 0);
	assert_int_equal(unlink(fx->path), 0);
}

static void test_unreadable_is_not_damaged(void **state)
{
	struct fixture *fx = *state;
	struct trib_status *status = NULL;
	char *error = NULL;
	bool damaged = true;

	if (geteuid() == 0)
		skip();
	write_text(fx->path, HEAD "{}}", strlen(HEAD "{}}"));
	assert_int_equal(chmod(fx->path, 0), 0);
	assert_int_equal(
		trib_status_load(fx->path, "alice", &status, &damaged, &error),
		-1);
	assert_false(damaged);
	assert_non_null(strstr(error, fx->path));
	assert_non_null(strstr(error, "Permission denied"));
	free(error);
}

/* valid UTF-8 throughout */
static bool utf8_ok(const char *s)
{
	const unsigned char *p = (const unsigned char *)s;

	while (*p != '\0') {
		int n = *p < 0x80 ? 1 : *p >= 0xf0 ? 4 : *p >= 0xe0 ? 3 : 2;

		if (*p >= 0x80 && *p < 0xc2)
			return false;
		for (int i = 1; i < n; i++) {
			if ((p[i] & 0xc0) != 0x80)
				return false;
		}
		p += n;
	}
	return true;
}

static void test_errors_cut(void **state)
{
	struct fixture *fx = *state;
	struct trib_status *status = trib_status_new("alice"), *loaded;
	struct trib_status_account *a = trib_status_get(status, "work");
	char *lines[20];
	char *odd = "tab\there, bell\a, esc\x1b[31m, bad \xff\xc0\xe2\x82, "
		    "ok \xe2\x82\xac \xf0\x9f\x98\x80";
	char *error = NULL;

	for (unsigned int i = 0; i < 20; i++)
		lines[i] = trib_strdup_printf("line %u", i);
	/* 3000 bytes of 'é' (2 bytes each) after one 'x': cut mid-way */
	free(lines[1]);
	lines[1] = trib_malloc(3002);
	lines[1][0] = 'x';
	for (unsigned int i = 0; i < 1500; i++)
		memcpy(lines[1] + 1 + 2 * i, "\xc3\xa9", 2);
	lines[1][3001] = '\0';
	free(lines[2]);
	lines[2] = trib_strdup(odd);

	trib_status_set_errors(a, lines, 20);
	assert_int_equal(a->error_count, TRIB_STATUS_ERRORS_MAX);
	assert_string_equal(a->errors[0], "line 0");
	assert_true(strlen(a->errors[1]) <= TRIB_STATUS_LINE_MAX);
	assert_true(strlen(a->errors[1]) >= TRIB_STATUS_LINE_MAX - 4);
	assert_true(utf8_ok(a->errors[1]));
	assert_string_equal(a->errors[1] + strlen(a->errors[1]) - 3, "...");
	assert_string_equal(a->errors[2],
			    "tab?here, bell?, esc?[31m, bad ????, "
			    "ok \xe2\x82\xac \xf0\x9f\x98\x80");
	assert_string_equal(a->errors[TRIB_STATUS_ERRORS_MAX - 2], "line 6");
	assert_string_equal(a->errors[TRIB_STATUS_ERRORS_MAX - 1],
			    "(13 more error lines not kept)");

	/* what is saved loads, and a file holding more than the limits is
	 * cut on load too */
	save_ok(fx, status);
	loaded = load_ok(fx, "alice");
	assert_int_equal(loaded->accounts[0]->error_count,
			 TRIB_STATUS_ERRORS_MAX);
	assert_string_equal(loaded->accounts[0]->errors[1], a->errors[1]);
	assert_string_equal(loaded->accounts[0]->errors[2], a->errors[2]);
	trib_status_free(&loaded);
	write_text(fx->path,
		   HEAD "{\"work\":{\"state\":\"failing\",\"errors\":"
			"[\"1\",\"2\",\"3\",\"4\",\"5\",\"6\",\"7\",\"8\","
			"\"9\",\"a\\u0007b\"]}}}",
		   strlen(HEAD "{\"work\":{\"state\":\"failing\",\"errors\":"
			       "[\"1\",\"2\",\"3\",\"4\",\"5\",\"6\",\"7\","
			       "\"8\",\"9\",\"a\\u0007b\"]}}}"));
	loaded = load_ok(fx, "alice");
	assert_int_equal(loaded->accounts[0]->error_count,
			 TRIB_STATUS_ERRORS_MAX);
	assert_string_equal(loaded->accounts[0]->errors[7],
			    "(3 more error lines not kept)");
	trib_status_free(&loaded);

	/* clearing */
	trib_status_set_errors(a, NULL, 0);
	assert_int_equal(a->error_count, 0);
	assert_null(a->errors);
	for (unsigned int i = 0; i < 20; i++)
		free(lines[i]);
	trib_status_free(&status);
	(void)error;
}

static void test_save_failure_keeps_old(void **state)
{
	struct fixture *fx = *state;
	struct trib_status *status = trib_status_new("alice"), *loaded;
	char *error = NULL, *old, *path;

	trib_status_get(status, "work")->delivered = 5;
	save_ok(fx, status);
	old = read_text(fx->path);

	/* the temp file cannot be made: a directory is in its place (this
	 * stops root too) */
	assert_int_equal(mkdir(fx->tmp, 0700), 0);
	trib_status_get(status, "work")->delivered = 6;
	assert_int_equal(trib_status_save(status, fx->path, (uid_t)-1,
					  (gid_t)-1, &error),
			 -1);
	assert_non_null(strstr(error, fx->path));
	free(error);
	assert_int_equal(rmdir(fx->tmp), 0);
	path = read_text(fx->path);
	assert_string_equal(path, old);
	free(path);
	loaded = load_ok(fx, "alice");
	assert_int_equal(loaded->accounts[0]->delivered, 5);
	trib_status_free(&loaded);

	/* a directory that is not there */
	path = trib_strdup_printf("%s/nodir/status", fx->dir);
	assert_int_equal(
		trib_status_save(status, path, (uid_t)-1, (gid_t)-1, &error),
		-1);
	assert_non_null(strstr(error, path));
	assert_non_null(strstr(error, "No such file or directory"));
	free(error);
	free(path);

	/* a directory that may not be written (not for root) */
	if (geteuid() != 0) {
		assert_int_equal(chmod(fx->dir, 0500), 0);
		assert_int_equal(trib_status_save(status, fx->path, (uid_t)-1,
						  (gid_t)-1, &error),
				 -1);
		assert_non_null(strstr(error, "Permission denied"));
		free(error);
		assert_int_equal(chmod(fx->dir, 0700), 0);
		path = read_text(fx->path);
		assert_string_equal(path, old);
		free(path);
	}
	assert_int_equal(access(fx->tmp, F_OK), -1);
	free(old);
	trib_status_free(&status);
}

static void test_owner(void **state)
{
	struct fixture *fx = *state;
	struct trib_status *status = trib_status_new("alice");
	uid_t uid = geteuid() == 0 ? 65534 : getuid();
	gid_t gid = geteuid() == 0 ? 65534 : getgid();
	char *error = NULL;
	struct stat st;

	assert_int_equal(trib_status_save(status, fx->path, uid, gid, &error),
			 0);
	assert_int_equal(stat(fx->path, &st), 0);
	assert_int_equal(st.st_uid, uid);
	assert_int_equal(st.st_gid, gid);
	assert_int_equal(st.st_mode & 07777, 0600);
	trib_status_free(&status);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
#define T(name) cmocka_unit_test_setup_teardown(name, setup, teardown)
		T(test_names_and_path),
		T(test_round_trip),
		T(test_missing_file_is_empty),
		T(test_unknown_fields_ignored),
		T(test_damaged_refused),
		T(test_truncated_and_too_big),
		T(test_not_a_file),
		T(test_unreadable_is_not_damaged),
		T(test_errors_cut),
		T(test_save_failure_keeps_old),
		T(test_owner),
#undef T
	};

	return cmocka_run_group_tests(tests, NULL, NULL);
}
