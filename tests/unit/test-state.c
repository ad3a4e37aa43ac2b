/* test-state.c: the sync state of one user. Everything survives a reload;
 * the cursor moves over contiguous runs only; nothing done above it is
 * forgotten; a UIDVALIDITY change keeps the old keys; a torn index tail is
 * tolerated but a damaged state file is refused and left alone; the lock
 * names its holder; links and unsafe names are refused; a failed commit
 * keeps the old state on disk and the changes in memory. Each test runs in
 * a temp dir of its own. */

#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>

#include <cmocka.h>

#include "alloc.h"
#include "state.h"

#include <errno.h>
#include <fcntl.h>
#include <openssl/evp.h>
#include <dirent.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

struct fixture {
	char *dir;	 /* the temp dir */
	char *top;	 /* dir/state: the state dir */
	char *userdir;	 /* top/alice */
	char *statefile; /* userdir/state */
};

static int setup(void **state)
{
	struct fixture *fx = trib_calloc(1, sizeof(*fx));
	char tmpl[] = "/tmp/test-state.XXXXXX";

	assert_non_null(mkdtemp(tmpl));
	fx->dir = trib_strdup(tmpl);
	fx->top = trib_strdup_printf("%s/state", fx->dir);
	fx->userdir = trib_strdup_printf("%s/alice", fx->top);
	fx->statefile = trib_strdup_printf("%s/state", fx->userdir);
	*state = fx;
	return 0;
}

/* rm -r, never following a link. */
static void rm_tree(int dir_fd, const char *name)
{
	struct dirent *d;
	DIR *dir;
	int fd = openat(dir_fd, name, O_RDONLY | O_DIRECTORY | O_NOFOLLOW);

	if (fd < 0) {
		(void)unlinkat(dir_fd, name, 0);
		return;
	}
	dir = fdopendir(fd);
	assert_non_null(dir);
	while ((d = readdir(dir)) != NULL) {
		if (strcmp(d->d_name, ".") != 0 && strcmp(d->d_name, "..") != 0)
			rm_tree(fd, d->d_name);
	}
	closedir(dir);
	(void)unlinkat(dir_fd, name, AT_REMOVEDIR);
}

static int teardown(void **state)
{
	struct fixture *fx = *state;

	rm_tree(AT_FDCWD, fx->dir);
	free(fx->dir);
	free(fx->top);
	free(fx->userdir);
	free(fx->statefile);
	free(fx);
	return 0;
}

static struct trib_state *open_ok(const struct fixture *fx)
{
	struct trib_state *st = NULL;
	const char *error = NULL;

	if (trib_state_open(fx->top, "alice", &st, &error) < 0)
		fail_msg("open: %s", error);
	return st;
}

static void commit_ok(struct trib_state *st)
{
	const char *error = NULL;

	if (trib_state_commit(st, &error) < 0)
		fail_msg("commit: %s", error);
	assert_false(trib_state_is_dirty(st));
}

static char *read_file(const char *path, size_t *size_r)
{
	struct stat s;
	char *data;
	int fd = open(path, O_RDONLY);

	assert_true(fd >= 0);
	assert_int_equal(fstat(fd, &s), 0);
	data = trib_malloc((size_t)s.st_size + 1);
	assert_int_equal(read(fd, data, (size_t)s.st_size), s.st_size);
	data[s.st_size] = '\0';
	close(fd);
	*size_r = (size_t)s.st_size;
	return data;
}

static void write_file(const char *path, const char *data, size_t size,
		       int flags)
{
	int fd = open(path, O_WRONLY | flags, 0600);

	assert_true(fd >= 0);
	assert_int_equal(write(fd, data, size), (ssize_t)size);
	close(fd);
}

/* The one index file of the user, as a path (malloc'ed). */
static char *index_file(const struct fixture *fx, uint32_t id)
{
	return trib_strdup_printf("%s/index/%u", fx->userdir, id);
}

static void key_of(uint32_t n, struct trib_state_key *key_r)
{
	char msgid[64];

	snprintf(msgid, sizeof(msgid), "<%u@example.com>", n);
	trib_state_key_message(msgid, 1000 + n, 1700000000 + n, key_r);
}

static void assert_lookup(struct trib_state_folder *f, uint32_t n,
			  uint32_t uidvalidity, uint32_t uid)
{
	struct trib_state_key key;
	uint32_t uv = 0, u = 0;
	const char *error = NULL;
	int ret;

	key_of(n, &key);
	ret = trib_state_folder_lookup(f, &key, &uv, &u, &error);
	if (ret < 0)
		fail_msg("lookup %u: %s", n, error);
	if (uid == 0) {
		assert_int_equal(ret, 0);
		return;
	}
	assert_int_equal(ret, 1);
	assert_int_equal(uv, uidvalidity);
	assert_int_equal(u, uid);
}

/* ---- round trip ---- */

static const char weird_folder[] = "Archiv/\xc3\x9c"
				   "bersicht 100% [a\tb]";

static void test_round_trip(void **state)
{
	struct fixture *fx = *state;
	struct trib_state *st = open_ok(fx);
	struct trib_state_folder *inbox, *weird, *other;
	const struct trib_state_rejected *rej;
	struct trib_state_key key;
	unsigned int count;

	assert_string_equal(trib_state_user(st), "alice");
	assert_string_equal(trib_state_path(st), fx->userdir);
	assert_int_equal(trib_state_folder_count(st), 0);
	assert_false(trib_state_is_dirty(st));

	inbox = trib_state_folder_get(st, "work", "INBOX");
	weird = trib_state_folder_get(st, "work", weird_folder);
	other = trib_state_folder_get(st, "gmail-1", "[Gmail]/All Mail");
	assert_non_null(inbox);
	assert_non_null(weird);
	assert_non_null(other);
	assert_ptr_equal(trib_state_folder_get(st, "work", "INBOX"), inbox);
	assert_null(trib_state_folder_get(st, "Bad Account", "INBOX"));
	assert_null(trib_state_folder_get(st, "work", ""));

	assert_int_equal(trib_state_folder_set_uidvalidity(inbox, 1234),
			 TRIB_STATE_UIDVALIDITY_FIRST);
	assert_int_equal(trib_state_folder_set_uidvalidity(inbox, 1234),
			 TRIB_STATE_UIDVALIDITY_SAME);
	for (uint32_t uid = 1; uid <= 20; uid++) {
		if (uid == 7 || uid == 15)
			continue;
		key_of(uid, &key);
		trib_state_folder_delivered(inbox, uid, &key);
	}
	trib_state_folder_rejected(inbox, 7, 1700000007,
				   "550 5.7.1 spam % refused\r\n");
	trib_state_folder_delivered(inbox, 30, NULL);
	trib_state_folder_skipped(inbox, 40, 45);
	trib_state_folder_set_highestmodseq(inbox, UINT64_MAX - 1);
	trib_state_folder_set_uidnext(inbox, 46);

	trib_state_folder_set_uidvalidity(weird, UINT32_MAX);
	trib_state_folder_delivered(weird, UINT32_MAX, NULL);
	trib_state_folder_set_uidnext(weird, UINT32_MAX);

	trib_state_folder_set_uidvalidity(other, 5);
	trib_state_key_gmail(0x1234567890abcdefULL, &key);
	trib_state_folder_delivered(other, 1, &key);
	assert_int_equal(trib_state_folder_set_uidvalidity(other, 6),
			 TRIB_STATE_UIDVALIDITY_CHANGED);
	trib_state_folder_delivered(other, 3, &key);
	assert_true(trib_state_is_dirty(st));
	commit_ok(st);
	trib_state_close(&st);
	assert_null(st);

	st = open_ok(fx);
	assert_int_equal(trib_state_folder_count(st), 3);
	inbox = trib_state_folder_at(st, 0);
	weird = trib_state_folder_at(st, 1);
	other = trib_state_folder_at(st, 2);
	assert_null(trib_state_folder_at(st, 3));
	assert_string_equal(trib_state_folder_account(inbox), "work");
	assert_string_equal(trib_state_folder_name(inbox), "INBOX");
	assert_string_equal(trib_state_folder_name(weird), weird_folder);
	assert_string_equal(trib_state_folder_account(other), "gmail-1");
	assert_string_equal(trib_state_folder_name(other), "[Gmail]/All Mail");
	assert_ptr_equal(trib_state_folder_find(st, "work", weird_folder),
			 weird);
	assert_null(trib_state_folder_find(st, "work", "Sent"));

	assert_int_equal(trib_state_folder_uidvalidity(inbox), 1234);
	/* 15 is missing: the cursor waits there. */
	assert_int_equal(trib_state_folder_cursor(inbox), 14);
	assert_false(trib_state_folder_is_done(inbox, 15));
	assert_true(trib_state_folder_is_done(inbox, 16));
	assert_true(trib_state_folder_is_done(inbox, 30));
	assert_false(trib_state_folder_is_done(inbox, 31));
	assert_true(trib_state_folder_is_done(inbox, 42));
	assert_false(trib_state_folder_is_done(inbox, 46));
	assert_int_equal(trib_state_folder_done_above(inbox), 5 + 1 + 6);
	assert_true(trib_state_folder_highestmodseq(inbox) == UINT64_MAX - 1);
	assert_int_equal(trib_state_folder_uidnext(inbox), 46);
	rej = trib_state_folder_rejected_list(inbox, &count);
	assert_int_equal(count, 1);
	assert_int_equal(rej[0].uid, 7);
	assert_int_equal(rej[0].uidvalidity, 1234);
	assert_true(rej[0].time == 1700000007);
	assert_string_equal(rej[0].reason, "550 5.7.1 spam % refused");
	assert_int_equal(trib_state_folder_key_count(inbox), 18);
	assert_lookup(inbox, 1, 1234, 1);
	assert_lookup(inbox, 20, 1234, 20);
	assert_lookup(inbox, 7, 0, 0);

	assert_int_equal(trib_state_folder_uidvalidity(weird), UINT32_MAX);
	assert_int_equal(trib_state_folder_cursor(weird), 0);
	assert_true(trib_state_folder_is_done(weird, UINT32_MAX));
	assert_int_equal(trib_state_folder_uidnext(weird), UINT32_MAX);

	assert_int_equal(trib_state_folder_uidvalidity(other), 6);
	assert_int_equal(trib_state_folder_cursor(other), 0);
	assert_true(trib_state_folder_is_done(other, 3));
	assert_false(trib_state_folder_is_done(other, 1));
	{
		uint32_t uv, uid;
		const char *error;

		trib_state_key_gmail(0x1234567890abcdefULL, &key);
		assert_int_equal(trib_state_folder_lookup(other, &key, &uv,
							  &uid, &error),
				 1);
		assert_int_equal(uv, 6);
		assert_int_equal(uid, 3);
	}
	assert_false(trib_state_is_dirty(st));
	commit_ok(st); /* nothing to do */
	trib_state_close(&st);
	trib_state_close(&st); /* NULL is fine */
}

static void test_keys(void **state)
{
	struct trib_state_key a, b, c;

	(void)state;
	trib_state_key_message("<x@y>", 10, 20, &a);
	trib_state_key_message("<x@y>", 10, 20, &b);
	assert_memory_equal(a.hash, b.hash, sizeof(a.hash));
	trib_state_key_message("<x@y>", 11, 20, &b);
	assert_memory_not_equal(a.hash, b.hash, sizeof(a.hash));
	trib_state_key_message("<x@y>", 10, 21, &b);
	assert_memory_not_equal(a.hash, b.hash, sizeof(a.hash));
	/* No field runs into the next. */
	trib_state_key_message("<x@y>1", 0, 20, &b);
	trib_state_key_message("<x@y>", 10, 20, &c);
	assert_memory_not_equal(b.hash, c.hash, sizeof(b.hash));
	trib_state_key_message(NULL, 10, 20, &a);
	trib_state_key_message("", 10, 20, &b);
	assert_memory_equal(a.hash, b.hash, sizeof(a.hash));
	trib_state_key_gmail(10, &a);
	trib_state_key_gmail(11, &b);
	assert_memory_not_equal(a.hash, b.hash, sizeof(a.hash));
}

/* ---- the cursor ---- */

static void test_cursor_contiguous(void **state)
{
	struct fixture *fx = *state;
	struct trib_state *st = open_ok(fx);
	struct trib_state_folder *f =
		trib_state_folder_get(st, "work", "INBOX");
	/* Four LMTP sessions finishing out of order. */
	static const uint32_t order[] = { 3, 1, 5, 2, 9, 4, 8, 6, 7, 10 };
	static const uint32_t cursor_after[] = {
		0, 1, 1, 3, 3, 5, 5, 6, 9, 10
	};

	trib_state_folder_set_uidvalidity(f, 1);
	for (unsigned int i = 0; i < TRIB_N_ELEMENTS(order); i++) {
		trib_state_folder_delivered(f, order[i], NULL);
		assert_int_equal(trib_state_folder_cursor(f), cursor_after[i]);
		assert_true(trib_state_folder_is_done(f, order[i]));
	}
	assert_int_equal(trib_state_folder_done_above(f), 0);
	/* Again, or below the cursor: nothing changes. */
	trib_state_folder_delivered(f, 4, NULL);
	trib_state_folder_delivered(f, 0, NULL);
	assert_int_equal(trib_state_folder_cursor(f), 10);

	/* Ranges that merge: 20..25, 12..14, 15..19 joins them, 11 frees. */
	trib_state_folder_skipped(f, 20, 25);
	trib_state_folder_skipped(f, 12, 14);
	assert_int_equal(trib_state_folder_done_above(f), 9);
	trib_state_folder_skipped(f, 15, 19);
	assert_int_equal(trib_state_folder_done_above(f), 14);
	assert_int_equal(trib_state_folder_cursor(f), 10);
	trib_state_folder_delivered(f, 11, NULL);
	assert_int_equal(trib_state_folder_cursor(f), 25);
	assert_int_equal(trib_state_folder_done_above(f), 0);
	/* Overlapping the cursor; empty and reversed ranges. */
	trib_state_folder_skipped(f, 20, 30);
	assert_int_equal(trib_state_folder_cursor(f), 30);
	trib_state_folder_skipped(f, 40, 39);
	assert_int_equal(trib_state_folder_done_above(f), 0);
	/* Many gaps, then filled from the top down. */
	for (uint32_t uid = 1000; uid > 31; uid -= 2)
		trib_state_folder_delivered(f, uid, NULL);
	assert_int_equal(trib_state_folder_cursor(f), 30);
	assert_int_equal(trib_state_folder_done_above(f), 485);
	for (uint32_t uid = 999; uid > 31; uid -= 2)
		trib_state_folder_delivered(f, uid, NULL);
	assert_int_equal(trib_state_folder_cursor(f), 30);
	trib_state_folder_delivered(f, 31, NULL);
	assert_int_equal(trib_state_folder_cursor(f), 1000);
	assert_int_equal(trib_state_folder_done_above(f), 0);
	/* The top of the UID space. */
	trib_state_folder_skipped(f, UINT32_MAX - 1, UINT32_MAX);
	assert_true(trib_state_folder_is_done(f, UINT32_MAX));
	assert_false(trib_state_folder_is_done(f, UINT32_MAX - 2));
	trib_state_folder_skipped(f, 1001, UINT32_MAX - 2);
	assert_int_equal(trib_state_folder_cursor(f), UINT32_MAX);
	commit_ok(st);
	trib_state_close(&st);
}

static void test_done_above_survives_reload(void **state)
{
	struct fixture *fx = *state;
	struct trib_state *st = open_ok(fx);
	struct trib_state_folder *f =
		trib_state_folder_get(st, "work", "INBOX");

	trib_state_folder_set_uidvalidity(f, 77);
	trib_state_folder_delivered(f, 1, NULL);
	trib_state_folder_delivered(f, 3, NULL);
	trib_state_folder_delivered(f, 5, NULL);
	trib_state_folder_delivered(f, 6, NULL);
	trib_state_folder_delivered(f, 7, NULL);
	trib_state_folder_delivered(f, 100, NULL);
	commit_ok(st);
	trib_state_close(&st);

	/* As after a crash: a new process reads what was committed. */
	st = open_ok(fx);
	f = trib_state_folder_find(st, "work", "INBOX");
	assert_non_null(f);
	assert_int_equal(trib_state_folder_cursor(f), 1);
	assert_false(trib_state_folder_is_done(f, 2));
	assert_true(trib_state_folder_is_done(f, 3));
	assert_false(trib_state_folder_is_done(f, 4));
	assert_true(trib_state_folder_is_done(f, 6));
	assert_true(trib_state_folder_is_done(f, 100));
	assert_false(trib_state_folder_is_done(f, 99));
	assert_int_equal(trib_state_folder_done_above(f), 5);
	trib_state_folder_delivered(f, 2, NULL);
	assert_int_equal(trib_state_folder_cursor(f), 3);
	trib_state_folder_delivered(f, 4, NULL);
	assert_int_equal(trib_state_folder_cursor(f), 7);
	/* Not committed: lost with the process, the old state stays. */
	trib_state_close(&st);
	st = open_ok(fx);
	f = trib_state_folder_find(st, "work", "INBOX");
	assert_int_equal(trib_state_folder_cursor(f), 1);
	assert_true(trib_state_folder_is_done(f, 5));
	trib_state_close(&st);
}

static void test_rejected(void **state)
{
	struct fixture *fx = *state;
	struct trib_state *st = open_ok(fx);
	struct trib_state_folder *f =
		trib_state_folder_get(st, "work", "INBOX");
	const struct trib_state_rejected *rej;
	char long_reason[TRIB_STATE_REASON_MAX + 100];
	unsigned int count;

	trib_state_folder_set_uidvalidity(f, 9);
	trib_state_folder_delivered(f, 1, NULL);
	trib_state_folder_rejected(f, 2, 1000, "550 5.6.0 malformed");
	trib_state_folder_delivered(f, 3, NULL);
	/* Handled: the cursor moves over it. */
	assert_int_equal(trib_state_folder_cursor(f), 3);
	/* Control characters and a cut inside a UTF-8 sequence. */
	memset(long_reason, 'x', sizeof(long_reason) - 1);
	long_reason[sizeof(long_reason) - 1] = '\0';
	long_reason[5] = '\x01';
	long_reason[TRIB_STATE_REASON_MAX - 1] = '\xc3';
	long_reason[TRIB_STATE_REASON_MAX] = '\xa9';
	trib_state_folder_rejected(f, 5, 2000, long_reason);
	trib_state_folder_rejected(f, 6, 3000, "");
	assert_int_equal(trib_state_folder_cursor(f), 3);
	/* The same UID again: replaced, not listed twice. */
	trib_state_folder_rejected(f, 2, 1500, "554 5.7.1 policy");
	commit_ok(st);
	trib_state_close(&st);

	st = open_ok(fx);
	f = trib_state_folder_find(st, "work", "INBOX");
	rej = trib_state_folder_rejected_list(f, &count);
	assert_int_equal(count, 3);
	assert_int_equal(rej[0].uid, 2);
	assert_true(rej[0].time == 1500);
	assert_string_equal(rej[0].reason, "554 5.7.1 policy");
	assert_int_equal(rej[1].uid, 5);
	assert_int_equal(rej[1].uidvalidity, 9);
	assert_int_equal(strlen(rej[1].reason), TRIB_STATE_REASON_MAX - 1);
	assert_int_equal(rej[1].reason[5], '?');
	assert_string_equal(rej[2].reason, "(no reason given)");
	assert_true(trib_state_folder_is_done(f, 5));
	assert_true(trib_state_folder_is_done(f, 6));
	assert_false(trib_state_folder_is_done(f, 4));
	/* Still shown after a UIDVALIDITY change, under the old one. */
	trib_state_folder_set_uidvalidity(f, 10);
	rej = trib_state_folder_rejected_list(f, &count);
	assert_int_equal(count, 3);
	assert_int_equal(rej[0].uidvalidity, 9);
	assert_false(trib_state_folder_is_done(f, 2));
	trib_state_close(&st);
}

/* ---- the dedupe index ---- */

static void test_uidvalidity_generation(void **state)
{
	struct fixture *fx = *state;
	struct trib_state *st = open_ok(fx);
	struct trib_state_folder *f =
		trib_state_folder_get(st, "work", "INBOX");
	struct trib_state_key key;
	char *path;
	struct stat s;

	trib_state_folder_set_uidvalidity(f, 100);
	for (uint32_t n = 1; n <= 10; n++) {
		key_of(n, &key);
		trib_state_folder_delivered(f, n, &key);
	}
	trib_state_folder_set_highestmodseq(f, 555);
	trib_state_folder_set_uidnext(f, 11);
	commit_ok(st);
	trib_state_close(&st);

	st = open_ok(fx);
	f = trib_state_folder_find(st, "work", "INBOX");
	assert_int_equal(trib_state_folder_set_uidvalidity(f, 200),
			 TRIB_STATE_UIDVALIDITY_CHANGED);
	assert_int_equal(trib_state_folder_cursor(f), 0);
	assert_int_equal(trib_state_folder_highestmodseq(f), 0);
	assert_int_equal(trib_state_folder_uidnext(f), 0);
	assert_false(trib_state_folder_is_done(f, 1));
	/* The old keys still match, under the old UIDVALIDITY. */
	for (uint32_t n = 1; n <= 10; n++)
		assert_lookup(f, n, 100, n);
	assert_lookup(f, 11, 0, 0);
	/* The server renumbered: message n is now UID 100 + n. Re-map the
	 * first five, deliver a new one. */
	for (uint32_t n = 1; n <= 5; n++) {
		key_of(n, &key);
		trib_state_folder_delivered(f, 100 + n, &key);
	}
	key_of(11, &key);
	trib_state_folder_delivered(f, 111, &key);
	assert_lookup(f, 3, 200, 103);
	assert_lookup(f, 7, 100, 7);
	commit_ok(st);
	trib_state_close(&st);

	st = open_ok(fx);
	f = trib_state_folder_find(st, "work", "INBOX");
	assert_int_equal(trib_state_folder_uidvalidity(f), 200);
	assert_lookup(f, 3, 200, 103);
	assert_lookup(f, 7, 100, 7);
	assert_lookup(f, 11, 200, 111);
	assert_int_equal(trib_state_folder_key_count(f), 16);
	/* A third generation, then compaction keeps the newest records. */
	trib_state_folder_set_uidvalidity(f, 300);
	key_of(3, &key);
	trib_state_folder_delivered(f, 1003, &key);
	trib_state_folder_compact(f);
	commit_ok(st);
	assert_int_equal(trib_state_folder_key_count(f), 11);
	assert_lookup(f, 3, 300, 1003);
	trib_state_close(&st);

	st = open_ok(fx);
	f = trib_state_folder_find(st, "work", "INBOX");
	assert_int_equal(trib_state_folder_key_count(f), 11);
	assert_lookup(f, 1, 200, 101);
	assert_lookup(f, 3, 300, 1003);
	assert_lookup(f, 7, 100, 7);
	assert_lookup(f, 11, 200, 111);
	assert_lookup(f, 12, 0, 0);
	trib_state_close(&st);
	/* One index file is left, the compacted one, holding 11 records. */
	path = index_file(fx, 2);
	assert_int_equal(stat(path, &s), 0);
	assert_int_equal(s.st_size, 20 + 11 * 20);
	free(path);
	path = index_file(fx, 1);
	assert_int_not_equal(stat(path, &s), 0);
	free(path);
}

static void test_many_keys(void **state)
{
	struct fixture *fx = *state;
	struct trib_state *st = open_ok(fx);
	struct trib_state_folder *f =
		trib_state_folder_get(st, "work", "INBOX");
	const uint32_t total = 100000;
	struct trib_state_key key;
	struct stat s;
	char *path;

	trib_state_folder_set_uidvalidity(f, 42);
	for (uint32_t n = 1; n <= total; n++) {
		key_of(n, &key);
		trib_state_folder_delivered(f, n, &key);
		if (n % 10000 == 0)
			commit_ok(st);
	}
	trib_state_close(&st);
	path = index_file(fx, 1);
	assert_int_equal(stat(path, &s), 0);
	assert_int_equal(s.st_size, 20 + (off_t)total * 20);
	free(path);
	/* The state file stays small: the cursor covers everything. */
	assert_int_equal(stat(fx->statefile, &s), 0);
	assert_true(s.st_size < 400);

	st = open_ok(fx);
	f = trib_state_folder_find(st, "work", "INBOX");
	assert_int_equal(trib_state_folder_cursor(f), total);
	assert_int_equal(trib_state_folder_key_count(f), total);
	for (uint32_t n = 1; n <= total; n++)
		assert_lookup(f, n, 42, n);
	for (uint32_t n = total + 1; n <= total + 1000; n++)
		assert_lookup(f, n, 0, 0);
	trib_state_close(&st);
}

static void test_torn_index_record(void **state)
{
	struct fixture *fx = *state;
	struct trib_state *st = open_ok(fx);
	struct trib_state_folder *f =
		trib_state_folder_get(st, "work", "INBOX");
	struct trib_state_key key;
	struct stat s;
	char *path;

	trib_state_folder_set_uidvalidity(f, 1);
	for (uint32_t n = 1; n <= 10; n++) {
		key_of(n, &key);
		trib_state_folder_delivered(f, n, &key);
	}
	commit_ok(st);
	trib_state_close(&st);
	/* A commit that died mid-append: 1.5 records past the counted end. */
	path = index_file(fx, 1);
	write_file(path, "0123456789abcdefXXXX0123456789", 30, O_APPEND);

	st = open_ok(fx);
	f = trib_state_folder_find(st, "work", "INBOX");
	for (uint32_t n = 1; n <= 10; n++)
		assert_lookup(f, n, 1, n);
	for (uint32_t n = 11; n <= 15; n++) {
		key_of(n, &key);
		trib_state_folder_delivered(f, n, &key);
	}
	commit_ok(st);
	trib_state_close(&st);
	/* The torn tail was overwritten, not appended to. */
	assert_int_equal(stat(path, &s), 0);
	assert_int_equal(s.st_size, 20 + 15 * 20);
	/* Appending before any lookup (the index not in memory) too. */
	write_file(path, "torn", 4, O_APPEND);
	st = open_ok(fx);
	f = trib_state_folder_find(st, "work", "INBOX");
	key_of(16, &key);
	trib_state_folder_delivered(f, 16, &key);
	commit_ok(st);
	trib_state_close(&st);
	assert_int_equal(stat(path, &s), 0);
	assert_int_equal(s.st_size, 20 + 16 * 20);
	st = open_ok(fx);
	f = trib_state_folder_find(st, "work", "INBOX");
	for (uint32_t n = 1; n <= 16; n++)
		assert_lookup(f, n, 1, n);
	trib_state_close(&st);
	free(path);
}

static void test_corrupted_index_refused(void **state)
{
	struct fixture *fx = *state;
	struct trib_state *st = open_ok(fx);
	struct trib_state_folder *f =
		trib_state_folder_get(st, "work", "INBOX");
	struct trib_state_key key;
	const char *error = NULL;
	uint32_t uv, uid;
	size_t size;
	char *path, *data;

	trib_state_folder_set_uidvalidity(f, 1);
	for (uint32_t n = 1; n <= 10; n++) {
		key_of(n, &key);
		trib_state_folder_delivered(f, n, &key);
	}
	commit_ok(st);
	trib_state_close(&st);
	path = index_file(fx, 1);
	data = read_file(path, &size);
	data[20 + 5 * 20 + 3] ^= 0x40;
	write_file(path, data, size, O_TRUNC);

	st = open_ok(fx);
	f = trib_state_folder_find(st, "work", "INBOX");
	key_of(1, &key);
	assert_int_equal(trib_state_folder_lookup(f, &key, &uv, &uid, &error),
			 -1);
	assert_non_null(strstr(error, path));
	assert_non_null(strstr(error, "checksum mismatch"));
	trib_state_close(&st);
	/* Shorter than counted. */
	assert_int_equal(truncate(path, 20 + 9 * 20), 0);
	st = open_ok(fx);
	f = trib_state_folder_find(st, "work", "INBOX");
	assert_int_equal(trib_state_folder_lookup(f, &key, &uv, &uid, &error),
			 -1);
	assert_non_null(strstr(error, "shorter than the 10 keys"));
	/* Appending to it is refused too, and the commit fails cleanly. */
	key_of(11, &key);
	trib_state_folder_delivered(f, 11, &key);
	assert_int_equal(trib_state_commit(st, &error), -1);
	assert_non_null(strstr(error, "corrupted index"));
	trib_state_close(&st);
	free(data);
	free(path);
}

/* ---- a damaged state file ---- */

static void assert_open_fails(const struct fixture *fx, const char *what)
{
	struct trib_state *st = NULL;
	const char *error = NULL;

	assert_int_equal(trib_state_open(fx->top, "alice", &st, &error), -1);
	assert_null(st);
	assert_non_null(error);
	if (strstr(error, what) == NULL || strstr(error, fx->statefile) == NULL)
		fail_msg("unexpected error: %s", error);
	assert_non_null(strstr(error, "refusing to start from empty"));
}

static void test_corrupted_state_refused(void **state)
{
	struct fixture *fx = *state;
	struct trib_state *st = open_ok(fx);
	struct trib_state_folder *f =
		trib_state_folder_get(st, "work", "INBOX");
	char *good, *bad, *after;
	size_t size, after_size;

	trib_state_folder_set_uidvalidity(f, 1);
	trib_state_folder_delivered(f, 1, NULL);
	trib_state_folder_delivered(f, 3, NULL);
	commit_ok(st);
	trib_state_close(&st);
	good = read_file(fx->statefile, &size);

	/* A flipped byte anywhere: refused, and left exactly as it is. */
	for (size_t pos = 0; pos < size; pos += size / 7 + 1) {
		bad = trib_malloc(size);
		memcpy(bad, good, size);
		bad[pos] ^= 0x01;
		write_file(fx->statefile, bad, size, O_TRUNC);
		/* The checksum line itself is 75 bytes, with the body's
		 * last newline. */
		assert_open_fails(fx, pos + 75 < size ? "checksum mismatch"
						      : "state");
		after = read_file(fx->statefile, &after_size);
		assert_int_equal(after_size, size);
		assert_memory_equal(after, bad, size);
		free(after);
		free(bad);
	}
	/* Truncated: torn in the middle, or just its last byte gone. */
	write_file(fx->statefile, good, size / 2, O_TRUNC);
	assert_open_fails(fx, "torn or truncated");
	write_file(fx->statefile, good, size - 1, O_TRUNC);
	assert_open_fails(fx, "torn or truncated");
	write_file(fx->statefile, good, 0, O_TRUNC);
	assert_open_fails(fx, "torn or truncated");
	after = read_file(fx->statefile, &after_size);
	assert_int_equal(after_size, 0);
	free(after);

	/* Put back, it loads again. */
	write_file(fx->statefile, good, size, O_TRUNC);
	st = open_ok(fx);
	f = trib_state_folder_find(st, "work", "INBOX");
	assert_true(trib_state_folder_is_done(f, 3));
	trib_state_close(&st);
	free(good);
}

/* body, closed by the checksum line the way the library writes it. */
static void write_with_checksum(const char *path, const char *body)
{
	unsigned char md[EVP_MAX_MD_SIZE];
	unsigned int md_len = 0;
	char *data, hex[65];

	assert_int_equal(
		EVP_Digest(body, strlen(body), md, &md_len, EVP_sha256(), NULL),
		1);
	for (unsigned int i = 0; i < md_len; i++)
		snprintf(hex + i * 2, 3, "%02x", md[i]);
	data = trib_strdup_printf("%schecksum %s\n", body, hex);
	write_file(path, data, strlen(data), O_CREAT | O_TRUNC);
	free(data);
}

/* Files with a valid checksum over a body this version refuses (a newer
 * version, an unknown record, a done list out of order), and one it
 * reads. */
static void test_state_format_checked(void **state)
{
	struct fixture *fx = *state;
	struct trib_state *st = open_ok(fx);

	trib_state_close(&st);
	write_with_checksum(fx->statefile, "tributary-state 2\nnext-index 1\n");
	assert_open_fails(fx, "unsupported version 2");
	write_with_checksum(fx->statefile,
			    "tributary-state 1\nnext-index 2\nfolder work "
			    "INBOX\nuidvalidity 1\ncursor 5\ndone 6\n"
			    "highestmodseq 0\nuidnext 0\nindex 1 0 00000000\n"
			    "end\n");
	assert_open_fails(fx, "line 6: done list out of order");
	write_with_checksum(fx->statefile,
			    "tributary-state 1\nnext-index 2\nfolder work "
			    "INBOX\nuidvalidity 1\ncursor 5\nfrobnicate 1\n");
	assert_open_fails(fx, "unknown record 'frobnicate'");
	write_with_checksum(fx->statefile,
			    "tributary-state 1\nnext-index 2\nfolder work "
			    "INBOX\nuidvalidity 1\ncursor 5\ndone 7 9:12\n"
			    "highestmodseq 3\nuidnext 13\nindex 1 0 00000000\n"
			    "gen 1 0\nrejected 1 8 1000 a%20b%25c\nend\n");
	st = open_ok(fx);
	{
		struct trib_state_folder *f =
			trib_state_folder_find(st, "work", "INBOX");
		const struct trib_state_rejected *rej;
		unsigned int count;

		assert_non_null(f);
		assert_int_equal(trib_state_folder_done_above(f), 5);
		trib_state_folder_delivered(f, 6, NULL);
		assert_int_equal(trib_state_folder_cursor(f), 7);
		rej = trib_state_folder_rejected_list(f, &count);
		assert_int_equal(count, 1);
		assert_string_equal(rej[0].reason, "a b%c");
	}
	trib_state_close(&st);
}

/* ---- locking ---- */

static void test_lock_other_process(void **state)
{
	struct fixture *fx = *state;
	struct trib_state *st = NULL, *st2 = NULL;
	const char *error = NULL;
	int ready[2], go[2], status;
	char c = 0, pid_text[64];
	pid_t pid;

	assert_int_equal(pipe(ready), 0);
	assert_int_equal(pipe(go), 0);
	pid = fork();
	assert_true(pid >= 0);
	if (pid == 0) {
		int ret = trib_state_open(fx->top, "alice", &st, &error);

		(void)!write(ready[1], ret == 0 ? "y" : "n", 1);
		(void)!read(go[0], &c, 1);
		trib_state_close(&st);
		_exit(ret == 0 ? 0 : 1);
	}
	assert_int_equal(read(ready[0], &c, 1), 1);
	assert_int_equal(c, 'y');
	assert_int_equal(trib_state_open(fx->top, "alice", &st, &error), -1);
	assert_null(st);
	snprintf(pid_text, sizeof(pid_text), "locked by pid %ld on host ",
		 (long)pid);
	if (strstr(error, pid_text) == NULL ||
	    strstr(error, "/alice/lock") == NULL)
		fail_msg("unexpected error: %s", error);
	assert_non_null(strstr(error, "another tributary sync or run"));
	assert_true(trib_state_open_was_locked());
	/* Another user is not locked by it. */
	assert_int_equal(trib_state_open(fx->top, "bob", &st2, &error), 0);
	assert_false(trib_state_open_was_locked());
	trib_state_close(&st2);

	assert_int_equal(write(go[1], "x", 1), 1);
	assert_int_equal(waitpid(pid, &status, 0), pid);
	assert_true(WIFEXITED(status) && WEXITSTATUS(status) == 0);
	/* Free again; a second open in this process is refused (it would
	 * share the lock and drop it when closed). */
	st = open_ok(fx);
	assert_int_equal(trib_state_open(fx->top, "alice", &st2, &error), -1);
	assert_non_null(strstr(error, "already open in this process"));
	assert_true(trib_state_open_was_locked());
	trib_state_close(&st);
	st = open_ok(fx);
	trib_state_close(&st);
	close(ready[0]);
	close(ready[1]);
	close(go[0]);
	close(go[1]);
}

/* ---- paths ---- */

static void assert_refused(const char *top, const char *user, const char *what)
{
	struct trib_state *st = NULL;
	const char *error = NULL;

	assert_int_equal(trib_state_open(top, user, &st, &error), -1);
	assert_null(st);
	if (strstr(error, what) == NULL)
		fail_msg("%s: unexpected error: %s", user, error);
	/* a refusal, not a lock someone holds */
	assert_false(trib_state_open_was_locked());
}

static void test_symlinks_refused(void **state)
{
	struct fixture *fx = *state;
	struct trib_state *st = open_ok(fx);
	char *elsewhere = trib_strdup_printf("%s/elsewhere", fx->dir);
	char *link_top = trib_strdup_printf("%s/link", fx->dir);
	char *bob = trib_strdup_printf("%s/bob", fx->top);
	char *carol = trib_strdup_printf("%s/carol", fx->top);
	char *carol_state = trib_strdup_printf("%s/carol/state", fx->top);
	char *dave = trib_strdup_printf("%s/dave", fx->top);
	char *dave_index = trib_strdup_printf("%s/dave/index", fx->top);
	char *dave_lock = trib_strdup_printf("%s/dave/lock", fx->top);
	struct stat s;

	trib_state_close(&st);
	assert_int_equal(mkdir(elsewhere, 0700), 0);
	/* The user's dir */
	assert_int_equal(symlink(elsewhere, bob), 0);
	assert_refused(fx->top, "bob", "is a symbolic link");
	/* The state dir itself */
	assert_int_equal(symlink(fx->top, link_top), 0);
	assert_refused(link_top, "alice", "is a symbolic link");
	/* The state file */
	assert_int_equal(mkdir(carol, 0700), 0);
	assert_int_equal(symlink(fx->statefile, carol_state), 0);
	assert_refused(fx->top, "carol", "symbolic link: refused");
	/* The index dir, the lock file */
	assert_int_equal(mkdir(dave, 0700), 0);
	assert_int_equal(symlink(elsewhere, dave_index), 0);
	assert_refused(fx->top, "dave", "is a symbolic link");
	assert_int_equal(unlink(dave_index), 0);
	assert_int_equal(unlink(dave_lock), 0);
	assert_int_equal(symlink(fx->statefile, dave_lock), 0);
	assert_refused(fx->top, "dave", "symbolic link: refused");
	/* Nothing was written through the links. */
	assert_int_equal(lstat(carol_state, &s), 0);
	assert_true(S_ISLNK(s.st_mode));
	assert_int_equal(rmdir(elsewhere), 0);
	free(elsewhere);
	free(link_top);
	free(bob);
	free(carol);
	free(carol_state);
	free(dave);
	free(dave_index);
	free(dave_lock);
}

static void test_user_names(void **state)
{
	struct fixture *fx = *state;
	static const char *const bad[] = {
		"../x",	 "..",	".",   "",     ".hidden",
		"-rf",	 "a/b", "a b", "a\nb", "\xc3\xa9t\xc3\xa9",
		"x\x7f",
	};
	char long_name[300];
	struct trib_state *st = NULL;
	const char *error = NULL;
	struct stat s;

	for (unsigned int i = 0; i < TRIB_N_ELEMENTS(bad); i++) {
		assert_false(trib_state_valid_user(bad[i]));
		assert_refused(fx->top, bad[i], "not a safe directory name");
	}
	/* Nothing was made for them, not even the state dir. */
	assert_int_not_equal(stat(fx->top, &s), 0);
	memset(long_name, 'a', sizeof(long_name) - 1);
	long_name[sizeof(long_name) - 1] = '\0';
	assert_false(trib_state_valid_user(long_name));
	long_name[255] = '\0';
	assert_true(trib_state_valid_user(long_name));
	assert_true(trib_state_valid_user("alice@example.com"));
	assert_true(trib_state_valid_user("Bob.Smith+tag=x_1-2"));
	assert_int_equal(
		trib_state_open(fx->top, "alice@example.com", &st, &error), 0);
	trib_state_close(&st);
}

static void test_modes_and_leftovers(void **state)
{
	struct fixture *fx = *state;
	struct trib_state *st;
	struct trib_state_folder *f;
	struct trib_state_key key;
	mode_t old_umask = umask(022);
	char *path, *orphan, *tmp;
	struct stat s;

	st = open_ok(fx);
	f = trib_state_folder_get(st, "work", "INBOX");
	key_of(1, &key);
	trib_state_folder_delivered(f, 1, &key);
	commit_ok(st);
	trib_state_close(&st);
	umask(old_umask);
	assert_int_equal(stat(fx->top, &s), 0);
	assert_int_equal(s.st_mode & 0777, 0700);
	assert_int_equal(stat(fx->userdir, &s), 0);
	assert_int_equal(s.st_mode & 0777, 0700);
	path = trib_strdup_printf("%s/index", fx->userdir);
	assert_int_equal(stat(path, &s), 0);
	assert_int_equal(s.st_mode & 0777, 0700);
	free(path);
	assert_int_equal(stat(fx->statefile, &s), 0);
	assert_int_equal(s.st_mode & 0777, 0600);
	path = index_file(fx, 1);
	assert_int_equal(stat(path, &s), 0);
	assert_int_equal(s.st_mode & 0777, 0600);
	free(path);
	path = trib_strdup_printf("%s/lock", fx->userdir);
	assert_int_equal(stat(path, &s), 0);
	assert_int_equal(s.st_mode & 0777, 0600);
	free(path);

	/* A torn temp file and an index file nobody names: removed. */
	tmp = trib_strdup_printf("%s/state.tmp", fx->userdir);
	orphan = index_file(fx, 7);
	write_file(tmp, "torn", 4, O_CREAT);
	write_file(orphan, "junk", 4, O_CREAT);
	st = open_ok(fx);
	assert_int_not_equal(stat(tmp, &s), 0);
	assert_int_not_equal(stat(orphan, &s), 0);
	f = trib_state_folder_find(st, "work", "INBOX");
	assert_lookup(f, 1, 0, 1);
	trib_state_close(&st);
	free(tmp);
	free(orphan);
}

/* ---- ownership when root works for the state_dir's owner ---- */

/* Every entry under dir_fd (recursively) is owned by uid:gid. */
static void assert_owned(int dir_fd, const char *name, uid_t uid, gid_t gid)
{
	struct dirent *d;
	struct stat s;
	DIR *dir;
	int fd;

	assert_int_equal(fstatat(dir_fd, name, &s, AT_SYMLINK_NOFOLLOW), 0);
	if (s.st_uid != uid || s.st_gid != gid)
		fail_msg("%s is owned by %ld:%ld, not %ld:%ld", name,
			 (long)s.st_uid, (long)s.st_gid, (long)uid, (long)gid);
	if (!S_ISDIR(s.st_mode))
		return;
	fd = openat(dir_fd, name, O_RDONLY | O_DIRECTORY | O_NOFOLLOW);
	assert_true(fd >= 0);
	dir = fdopendir(fd);
	assert_non_null(dir);
	while ((d = readdir(dir)) != NULL) {
		if (strcmp(d->d_name, ".") != 0 && strcmp(d->d_name, "..") != 0)
			assert_owned(fd, d->d_name, uid, gid);
	}
	closedir(dir);
}

static void test_root_gives_files_to_the_owner(void **state)
{
	struct fixture *fx = *state;
	const uid_t uid = 65534;
	const gid_t gid = 65534;
	struct trib_state *st;
	struct trib_state_folder *f;
	struct trib_state_key key;
	char *stray;

	if (geteuid() != 0)
		skip();
	/* the package makes state_dir, owned by the tributary user */
	assert_int_equal(mkdir(fx->top, 0700), 0);
	assert_int_equal(chown(fx->top, uid, gid), 0);
	st = open_ok(fx);
	f = trib_state_folder_get(st, "work", "INBOX");
	for (uint32_t uid_i = 1; uid_i <= 3; uid_i++) {
		key_of(uid_i, &key);
		trib_state_folder_delivered(f, uid_i, &key);
	}
	commit_ok(st);
	trib_state_close(&st);
	assert_owned(AT_FDCWD, fx->top, uid, gid);

	/* what an older root run left owned by root is given back */
	assert_int_equal(chown(fx->userdir, 0, 0), 0);
	assert_int_equal(chown(fx->statefile, 0, 0), 0);
	stray = trib_strdup_printf("%s/vault", fx->userdir);
	write_file(stray, "x", 1, O_CREAT);
	assert_int_equal(chown(stray, 0, 0), 0);
	st = open_ok(fx);
	trib_state_close(&st);
	assert_owned(AT_FDCWD, fx->top, uid, gid);
	free(stray);

	/* a root-owned state_dir: root keeps what it makes */
	assert_int_equal(chown(fx->top, 0, 0), 0);
	rm_tree(AT_FDCWD, fx->userdir);
	st = open_ok(fx);
	commit_ok(st);
	trib_state_close(&st);
	assert_owned(AT_FDCWD, fx->top, 0, 0);
}

/* ---- a failed commit ---- */

static void test_commit_failure_keeps_changes(void **state)
{
	struct fixture *fx = *state;
	struct trib_state *st = open_ok(fx);
	struct trib_state_folder *f =
		trib_state_folder_get(st, "work", "INBOX");
	struct trib_state_key key;
	struct rlimit old_limit, limit;
	const char *error = NULL;
	char *before, *after, *tmp, *path;
	size_t before_size, after_size;
	struct stat s, index_before;
	void (*old_handler)(int);

	trib_state_folder_set_uidvalidity(f, 1);
	for (uint32_t n = 1; n <= 5; n++) {
		key_of(n, &key);
		trib_state_folder_delivered(f, n, &key);
	}
	commit_ok(st);
	before = read_file(fx->statefile, &before_size);
	path = index_file(fx, 1);
	assert_int_equal(stat(path, &index_before), 0);
	tmp = trib_strdup_printf("%s/state.tmp", fx->userdir);

	/* No file may grow past 64 bytes now: the index append fails, then
	 * (with no new keys) the state file's temp. */
	old_handler = signal(SIGXFSZ, SIG_IGN);
	assert_int_equal(getrlimit(RLIMIT_FSIZE, &old_limit), 0);
	limit = old_limit;
	limit.rlim_cur = 64;
	for (uint32_t n = 6; n <= 300; n++) {
		key_of(n, &key);
		trib_state_folder_delivered(f, n, &key);
	}
	trib_state_folder_rejected(f, 301, 5, "550 no");
	assert_int_equal(setrlimit(RLIMIT_FSIZE, &limit), 0);
	assert_int_equal(trib_state_commit(st, &error), -1);
	assert_non_null(
		strstr(error, "/index/1: write failed: File too large"));
	assert_non_null(strstr(error, "the previous state is kept"));
	assert_true(trib_state_is_dirty(st));
	/* The index got its old size back. */
	assert_int_equal(stat(path, &s), 0);
	assert_int_equal(s.st_size, index_before.st_size);

	/* A limit the index appends fit under but the state file, grown
	 * by a thousand gaps, does not: its temp file fails. */
	limit.rlim_cur = 20 + 301 * 20;
	assert_int_equal(setrlimit(RLIMIT_FSIZE, &limit), 0);
	for (uint32_t n = 0; n < 1000; n++)
		trib_state_folder_skipped(f, 1000000000 + n * 2,
					  1000000000 + n * 2);
	assert_int_equal(trib_state_commit(st, &error), -1);
	if (strstr(error, "/state.tmp: write failed: File too large") == NULL)
		fail_msg("unexpected error: %s", error);
	assert_int_not_equal(stat(tmp, &s), 0);
	after = read_file(fx->statefile, &after_size);
	assert_int_equal(after_size, before_size);
	assert_memory_equal(after, before, before_size);
	free(after);
	/* The index is back to what the state file on disk counts. */
	assert_int_equal(stat(path, &s), 0);
	assert_int_equal(s.st_size, index_before.st_size);

	assert_int_equal(setrlimit(RLIMIT_FSIZE, &old_limit), 0);
	signal(SIGXFSZ, old_handler);
	commit_ok(st);
	trib_state_close(&st);

	st = open_ok(fx);
	f = trib_state_folder_find(st, "work", "INBOX");
	assert_int_equal(trib_state_folder_cursor(f), 301);
	assert_true(trib_state_folder_is_done(f, 1000001998));
	assert_false(trib_state_folder_is_done(f, 1000001997));
	assert_int_equal(trib_state_folder_done_above(f), 1000);
	for (uint32_t n = 1; n <= 300; n++)
		assert_lookup(f, n, 1, n);
	trib_state_close(&st);
	free(before);
	free(tmp);
	free(path);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
#define T(name) cmocka_unit_test_setup_teardown(name, setup, teardown)
		T(test_round_trip),
		T(test_keys),
		T(test_cursor_contiguous),
		T(test_done_above_survives_reload),
		T(test_rejected),
		T(test_uidvalidity_generation),
		T(test_many_keys),
		T(test_torn_index_record),
		T(test_corrupted_index_refused),
		T(test_corrupted_state_refused),
		T(test_state_format_checked),
		T(test_lock_other_process),
		T(test_symlinks_refused),
		T(test_user_names),
		T(test_modes_and_leftovers),
		T(test_root_gives_files_to_the_owner),
		T(test_commit_failure_keeps_changes),
#undef T
	};

	return cmocka_run_group_tests(tests, NULL, NULL);
}
