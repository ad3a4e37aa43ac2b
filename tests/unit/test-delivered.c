/* test-delivered.c: the delivered record (shared/delivered.h). Marks and
 * lookups survive a reopen; the table grows past several resizes and
 * keeps every id; a handle follows the file when another process grew
 * it; every kind of damage is an error naming the file and leaves the
 * file as it was; a count cut short by a kill is repaired by the next
 * growth; many processes marking at once lose nothing; a second session
 * of the same id waits for the first one's mark; a read-only
 * handle changes nothing; the error paths (no directory, no permission)
 * name the file. Each test runs in a temp
 * dir of its own. */

#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>

#include <cmocka.h>

#include "alloc.h"
#include "delivered.h"

#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#define HEADER_SIZE 64
#define SLOT 16

struct fixture {
	char *dir;
	char *path; /* dir/delivered */
};

/* In /dev/shm when there is one: these tests are about the record's
 * logic, and a mark's fdatasync() costs a millisecond on a disk and
 * nothing there (the integration test runs the plugin on a disk). */
static int setup(void **state)
{
	struct fixture *fx = trib_calloc(1, sizeof(*fx));
	struct stat st;
	char *tmpl = trib_strdup_printf(
		"%s/test-delivered.XXXXXX",
		stat("/dev/shm", &st) == 0 && S_ISDIR(st.st_mode) &&
				access("/dev/shm", W_OK) == 0
			? "/dev/shm"
			: "/tmp");

	assert_non_null(mkdtemp(tmpl));
	fx->dir = tmpl;
	fx->path = trib_strdup_printf("%s/delivered", fx->dir);
	*state = fx;
	return 0;
}

static int teardown(void **state)
{
	struct fixture *fx = *state;
	char *cmd = trib_strdup_printf("rm -rf '%s'", fx->dir);

	assert_int_equal(system(cmd), 0);
	free(cmd);
	free(fx->dir);
	free(fx->path);
	free(fx);
	return 0;
}

/* Id number n of a series: distinct, spread like SHA-256 prefixes. */
static void make_id(uint64_t series, uint64_t n,
		    unsigned char id_r[TRIB_DELIVERED_ID_SIZE])
{
	uint64_t x = series * 0x9e3779b97f4a7c15ULL + n + 1;

	for (unsigned int i = 0; i < TRIB_DELIVERED_ID_SIZE; i += 8) {
		uint64_t z = (x += 0x9e3779b97f4a7c15ULL);

		z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ULL;
		z = (z ^ (z >> 27)) * 0x94d049bb133111ebULL;
		z ^= z >> 31;
		memcpy(id_r + i, &z, 8);
	}
}

static struct trib_delivered *rec_open(const char *path)
{
	struct trib_delivered *rec;
	const char *error = NULL;

	if (trib_delivered_open(path, 0, &rec, &error) < 0)
		fail_msg("open: %s", error);
	return rec;
}

static int lookup(struct trib_delivered *rec, const unsigned char *id)
{
	const char *error = NULL;
	int ret = trib_delivered_lookup(rec, id, &error);

	if (ret < 0)
		fail_msg("lookup: %s", error);
	return ret;
}

static int mark(struct trib_delivered *rec, const unsigned char *id)
{
	const char *error = NULL;
	int ret = trib_delivered_mark(rec, id, &error);

	if (ret < 0)
		fail_msg("mark: %s", error);
	return ret;
}

static uint64_t count(struct trib_delivered *rec, uint64_t *capacity_r)
{
	const char *error = NULL;
	uint64_t n;

	if (trib_delivered_count(rec, &n, capacity_r, &error) < 0)
		fail_msg("count: %s", error);
	return n;
}

static unsigned char *read_file(const char *path, size_t *size_r)
{
	struct stat st;
	unsigned char *data;
	int fd = open(path, O_RDONLY);

	assert_true(fd >= 0);
	assert_int_equal(fstat(fd, &st), 0);
	data = trib_malloc((size_t)st.st_size + 1);
	assert_int_equal(pread(fd, data, (size_t)st.st_size, 0), st.st_size);
	close(fd);
	*size_r = (size_t)st.st_size;
	return data;
}

static void write_file(const char *path, const void *data, size_t size)
{
	int fd = open(path, O_WRONLY | O_CREAT | O_TRUNC, 0600);

	assert_true(fd >= 0);
	assert_int_equal(write(fd, data, size), (ssize_t)size);
	close(fd);
}

static uint64_t get_le64(const unsigned char *p)
{
	uint64_t v = 0;

	for (unsigned int i = 0; i < 8; i++)
		v |= (uint64_t)p[i] << (8 * i);
	return v;
}

static void put_le64(unsigned char *p, uint64_t v)
{
	for (unsigned int i = 0; i < 8; i++)
		p[i] = (unsigned char)(v >> (8 * i));
}

/* The header checksum (FNV-1a 64 of bytes 0..55), as the format says. */
static void reseal(unsigned char *header)
{
	uint64_t h = 0xcbf29ce484222325ULL;

	for (unsigned int i = 0; i < 56; i++) {
		h ^= header[i];
		h *= 0x100000001b3ULL;
	}
	put_le64(header + 56, h);
}

static void test_mark_lookup(void **state)
{
	struct fixture *fx = *state;
	unsigned char a[SLOT], b[SLOT], zero[SLOT];
	struct trib_delivered *rec;
	struct stat st;
	uint64_t capacity;

	make_id(1, 1, a);
	make_id(1, 2, b);
	memset(zero, 0, sizeof(zero));
	rec = rec_open(fx->path);
	assert_string_equal(trib_delivered_get_path(rec), fx->path);
	/* created whole: header and an allocated empty table, 0600 */
	assert_int_equal(stat(fx->path, &st), 0);
	assert_int_equal(st.st_mode & 0777, 0600);
	assert_int_equal(st.st_size,
			 HEADER_SIZE + TRIB_DELIVERED_INITIAL_CAPACITY * SLOT);
	assert_int_equal(count(rec, &capacity), 0);
	assert_int_equal(capacity, TRIB_DELIVERED_INITIAL_CAPACITY);

	assert_int_equal(lookup(rec, a), 0);
	assert_int_equal(mark(rec, a), 1);
	assert_int_equal(lookup(rec, a), 1);
	assert_int_equal(mark(rec, a), 0);
	assert_int_equal(lookup(rec, b), 0);
	/* sixteen zero bytes are an id like any other */
	assert_int_equal(lookup(rec, zero), 0);
	assert_int_equal(mark(rec, zero), 1);
	assert_int_equal(mark(rec, zero), 0);
	assert_int_equal(count(rec, NULL), 2);
	trib_delivered_close(&rec);
	assert_null(rec);

	rec = rec_open(fx->path);
	assert_int_equal(lookup(rec, a), 1);
	assert_int_equal(lookup(rec, zero), 1);
	assert_int_equal(lookup(rec, b), 0);
	assert_int_equal(mark(rec, b), 1);
	assert_int_equal(count(rec, NULL), 3);
	trib_delivered_close(&rec);
	trib_delivered_close(&rec); /* NULL is fine */
}

static void test_id_parse(void **state)
{
	unsigned char id[SLOT];
	(void)state;

	assert_true(trib_delivered_id_parse("00112233445566778899aabbccddeeff",
					    id));
	assert_int_equal(id[0], 0x00);
	assert_int_equal(id[1], 0x11);
	assert_int_equal(id[15], 0xff);
	assert_true(trib_delivered_id_parse("00112233445566778899AABBCCDDEEFF",
					    id));
	assert_int_equal(id[10], 0xaa);
	assert_false(trib_delivered_id_parse("", id));
	assert_false(trib_delivered_id_parse("0011223344556677", id));
	assert_false(
		trib_delivered_id_parse("00112233445566778899aabbccddeef", id));
	assert_false(trib_delivered_id_parse(
		"00112233445566778899aabbccddeeff0", id));
	assert_false(trib_delivered_id_parse("00112233445566778899aabbccddeefg",
					     id));
}

/* As the plugin does it: a lookup, then a mark. */
static void test_growth(void **state)
{
	struct fixture *fx = *state;
	const uint64_t n = 5000;
	struct trib_delivered *rec = rec_open(fx->path);
	unsigned char id[SLOT];
	uint64_t capacity, last = 0;
	unsigned int resizes = 0;
	struct stat st;

	for (uint64_t i = 0; i < n; i++) {
		make_id(2, i, id);
		assert_int_equal(lookup(rec, id), 0);
		assert_int_equal(mark(rec, id), 1);
		if (i % 97 == 0) {
			assert_int_equal(count(rec, &capacity), i + 1);
			if (capacity != last && last != 0)
				resizes++;
			last = capacity;
			/* never more than 3/4 full after a lookup */
			assert_true(i + 1 <= capacity - capacity / 4);
		}
	}
	assert_int_equal(count(rec, &capacity), n);
	/* 256 -> 512 -> ... -> 8192 */
	assert_true(capacity >= 8192);
	assert_true(resizes >= 5);
	trib_delivered_close(&rec);
	/* the file is exactly the table, and no temporary file is left */
	assert_int_equal(stat(fx->path, &st), 0);
	assert_int_equal(st.st_size, HEADER_SIZE + capacity * SLOT);
	{
		char *grow = trib_strdup_printf("%s.grow", fx->path);

		assert_int_equal(stat(grow, &st), -1);
		assert_int_equal(errno, ENOENT);
		free(grow);
	}

	rec = rec_open(fx->path);
	for (uint64_t i = 0; i < n; i++) {
		make_id(2, i, id);
		assert_int_equal(lookup(rec, id), 1);
		make_id(3, i, id);
		assert_int_equal(lookup(rec, id), 0);
	}
	trib_delivered_close(&rec);
}

/* Marks alone (no lookup making room): the mark grows the table itself
 * past 7/8. */
static void test_growth_by_marks(void **state)
{
	struct fixture *fx = *state;
	struct trib_delivered *rec = rec_open(fx->path);
	unsigned char id[SLOT];
	uint64_t capacity;

	for (uint64_t i = 0; i < 1500; i++) {
		make_id(4, i, id);
		assert_int_equal(mark(rec, id), 1);
	}
	assert_int_equal(count(rec, &capacity), 1500);
	assert_true(capacity >= 2048);
	assert_true(1500 <= capacity - capacity / 8);
	for (uint64_t i = 0; i < 1500; i++) {
		make_id(4, i, id);
		assert_int_equal(mark(rec, id), 0);
	}
	trib_delivered_close(&rec);
}

/* Another process grows the file (a new inode) while this one keeps its
 * handle: this handle's next lookups and marks use the new file. */
static void test_reopen_after_other_process_grew(void **state)
{
	struct fixture *fx = *state;
	struct trib_delivered *rec = rec_open(fx->path);
	unsigned char id[SLOT];
	struct stat before, after;
	uint64_t capacity;
	int status;
	pid_t pid;

	make_id(5, 0, id);
	assert_int_equal(mark(rec, id), 1);
	assert_int_equal(stat(fx->path, &before), 0);

	pid = fork();
	assert_true(pid >= 0);
	if (pid == 0) {
		struct trib_delivered *other;
		const char *error;
		int ok = 1;

		if (trib_delivered_open(fx->path, 0, &other, &error) < 0)
			_exit(2);
		for (uint64_t i = 1; i < 1000 && ok; i++) {
			make_id(5, i, id);
			ok = trib_delivered_lookup(other, id, &error) == 0 &&
			     trib_delivered_mark(other, id, &error) == 1;
		}
		trib_delivered_close(&other);
		_exit(ok ? 0 : 1);
	}
	assert_int_equal(waitpid(pid, &status, 0), pid);
	assert_true(WIFEXITED(status));
	assert_int_equal(WEXITSTATUS(status), 0);
	assert_int_equal(stat(fx->path, &after), 0);
	assert_true(after.st_ino != before.st_ino);

	/* the old handle sees the child's ids, and adds to the new file */
	for (uint64_t i = 0; i < 1000; i++) {
		make_id(5, i, id);
		assert_int_equal(lookup(rec, id), 1);
	}
	make_id(5, 1000, id);
	assert_int_equal(lookup(rec, id), 0);
	assert_int_equal(mark(rec, id), 1);
	assert_int_equal(count(rec, &capacity), 1001);
	assert_true(capacity >= 2048);
	trib_delivered_close(&rec);

	rec = rec_open(fx->path);
	assert_int_equal(count(rec, NULL), 1001);
	assert_int_equal(lookup(rec, id), 1);
	trib_delivered_close(&rec);
}

/* Damage: every call fails with an error naming the file, and the file
 * is left exactly as it was. */
static void expect_refused(const char *path, const char *what)
{
	unsigned char id[SLOT];
	struct trib_delivered *rec;
	const char *error = NULL;
	unsigned char *before, *after;
	size_t before_size, after_size;
	uint64_t n;

	before = read_file(path, &before_size);
	make_id(6, 1, id);
	assert_int_equal(trib_delivered_open(path, 0, &rec, &error), 0);
	error = NULL;
	assert_int_equal(trib_delivered_lookup(rec, id, &error), -1);
	assert_non_null(error);
	assert_non_null(strstr(error, path));
	if (strstr(error, what) == NULL)
		fail_msg("expected \"%s\" in: %s", what, error);
	error = NULL;
	assert_int_equal(trib_delivered_mark(rec, id, &error), -1);
	assert_non_null(strstr(error, what));
	error = NULL;
	assert_int_equal(trib_delivered_count(rec, &n, NULL, &error), -1);
	assert_non_null(strstr(error, what));
	trib_delivered_close(&rec);

	after = read_file(path, &after_size);
	assert_int_equal(after_size, before_size);
	assert_memory_equal(after, before, before_size);
	free(before);
	free(after);
}

static void test_corrupt(void **state)
{
	struct fixture *fx = *state;
	struct trib_delivered *rec = rec_open(fx->path);
	unsigned char id[SLOT], *good, *bad;
	size_t size;

	for (uint64_t i = 0; i < 10; i++) {
		make_id(7, i, id);
		assert_int_equal(mark(rec, id), 1);
	}
	trib_delivered_close(&rec);
	good = read_file(fx->path, &size);
	bad = trib_malloc(size);

	/* an empty file is not a new record */
	write_file(fx->path, "", 0);
	expect_refused(fx->path, "corrupt (empty file)");
	write_file(fx->path, good, 40);
	expect_refused(fx->path, "shorter than its header");

	memcpy(bad, good, size);
	memcpy(bad, "NOTMINE!", 8);
	write_file(fx->path, bad, size);
	expect_refused(fx->path, "bad magic");

	/* a bit flipped in the count */
	memcpy(bad, good, size);
	bad[24] ^= 0x04;
	write_file(fx->path, bad, size);
	expect_refused(fx->path, "checksum");

	/* cut short by a slot, or by half its table */
	write_file(fx->path, good, size - SLOT);
	expect_refused(fx->path, "its header says");
	memcpy(bad, good, size);
	write_file(fx->path, bad, HEADER_SIZE + 128 * SLOT);
	expect_refused(fx->path, "its header says");

	/* a newer version (a valid header otherwise) */
	memcpy(bad, good, size);
	bad[8] = 2;
	reseal(bad);
	write_file(fx->path, bad, size);
	expect_refused(fx->path, "version 2");

	/* a capacity that is no power of two, a count beyond it */
	memcpy(bad, good, size);
	put_le64(bad + 16, 255);
	reseal(bad);
	write_file(fx->path, bad, size);
	expect_refused(fx->path, "impossible header values");
	memcpy(bad, good, size);
	put_le64(bad + 24, 1000);
	reseal(bad);
	write_file(fx->path, bad, size);
	expect_refused(fx->path, "impossible header values");

	/* the good bytes back: all there */
	write_file(fx->path, good, size);
	rec = rec_open(fx->path);
	assert_int_equal(count(rec, NULL), 10);
	make_id(7, 9, id);
	assert_int_equal(lookup(rec, id), 1);
	trib_delivered_close(&rec);
	free(good);
	free(bad);
}

/* A kill between a mark's slot write and its header write leaves the
 * count one short: the id is found all the same, and the next growth
 * counts again. */
static void test_count_behind(void **state)
{
	struct fixture *fx = *state;
	struct trib_delivered *rec = rec_open(fx->path);
	unsigned char id[SLOT], *data;
	uint64_t capacity;
	size_t size;

	for (uint64_t i = 0; i < 100; i++) {
		make_id(8, i, id);
		assert_int_equal(mark(rec, id), 1);
	}
	trib_delivered_close(&rec);
	data = read_file(fx->path, &size);
	assert_int_equal(get_le64(data + 24), 100);
	put_le64(data + 24, 99);
	reseal(data);
	write_file(fx->path, data, size);
	free(data);

	rec = rec_open(fx->path);
	make_id(8, 99, id);
	assert_int_equal(lookup(rec, id), 1);
	assert_int_equal(count(rec, NULL), 99);
	for (uint64_t i = 100; i < 400; i++) {
		make_id(8, i, id);
		assert_int_equal(lookup(rec, id), 0);
		assert_int_equal(mark(rec, id), 1);
	}
	assert_int_equal(count(rec, &capacity), 400);
	assert_true(capacity >= 1024);
	trib_delivered_close(&rec);
}

#define WRITERS 8
#define PER_WRITER 250

static int writer(const char *path, unsigned int w)
{
	struct trib_delivered *rec;
	unsigned char id[SLOT];
	const char *error;

	if (trib_delivered_open(path, 0, &rec, &error) < 0) {
		fprintf(stderr, "writer %u: %s\n", w, error);
		return 1;
	}
	for (uint64_t i = 0; i < PER_WRITER; i++) {
		make_id(100 + w, i, id);
		if (trib_delivered_lookup(rec, id, &error) != 0 ||
		    trib_delivered_mark(rec, id, &error) != 1) {
			fprintf(stderr, "writer %u, id %" PRIu64 ": %s\n", w, i,
				error);
			trib_delivered_close(&rec);
			return 1;
		}
	}
	trib_delivered_close(&rec);
	return 0;
}

/* N processes mark M distinct ids each into one file, all at once, from
 * before the file exists (so they race to create it, and the table
 * grows under them several times): all N*M are there afterwards. */
static void test_concurrent_writers(void **state)
{
	struct fixture *fx = *state;
	struct trib_delivered *rec;
	unsigned char id[SLOT];
	pid_t pids[WRITERS];
	int go[2], status;
	char c;

	assert_int_equal(pipe(go), 0);
	for (unsigned int w = 0; w < WRITERS; w++) {
		pids[w] = fork();
		assert_true(pids[w] >= 0);
		if (pids[w] == 0) {
			close(go[1]);
			/* start together: when the pipe closes */
			if (read(go[0], &c, 1) != 0)
				_exit(3);
			_exit(writer(fx->path, w));
		}
	}
	close(go[0]);
	close(go[1]);
	for (unsigned int w = 0; w < WRITERS; w++) {
		assert_int_equal(waitpid(pids[w], &status, 0), pids[w]);
		assert_true(WIFEXITED(status));
		assert_int_equal(WEXITSTATUS(status), 0);
	}

	rec = rec_open(fx->path);
	assert_int_equal(count(rec, NULL), WRITERS * PER_WRITER);
	for (unsigned int w = 0; w < WRITERS; w++) {
		for (uint64_t i = 0; i < PER_WRITER; i++) {
			make_id(100 + w, i, id);
			assert_int_equal(lookup(rec, id), 1);
		}
	}
	trib_delivered_close(&rec);
}

static double now(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_MONOTONIC, &ts);
	return ts.tv_sec + ts.tv_nsec / 1e9;
}

/* A child claims an id with a lookup and, told through a pipe, marks it
 * (mark = 1) or dies without marking (mark = 0). Returns its pid once
 * it holds the claim. */
static pid_t claimer(const char *path, const unsigned char *id, int mark,
		     int *go_r)
{
	int ready[2], go[2];
	pid_t pid;
	char c;

	assert_int_equal(pipe(ready), 0);
	assert_int_equal(pipe(go), 0);
	pid = fork();
	assert_true(pid >= 0);
	if (pid == 0) {
		struct trib_delivered *rec;
		const char *error;

		close(ready[0]);
		close(go[1]);
		if (trib_delivered_open(path, 0, &rec, &error) < 0 ||
		    trib_delivered_lookup(rec, id, &error) != 0)
			_exit(2);
		if (write(ready[1], "r", 1) != 1 || read(go[0], &c, 1) != 1)
			_exit(3);
		if (!mark)
			_exit(0); /* killed before the mark, claim held */
		usleep(200 * 1000);
		if (trib_delivered_mark(rec, id, &error) != 1)
			_exit(4);
		trib_delivered_close(&rec);
		_exit(0);
	}
	close(ready[1]);
	close(go[0]);
	assert_int_equal(read(ready[0], &c, 1), 1);
	close(ready[0]);
	*go_r = go[1];
	return pid;
}

static void reap(pid_t pid)
{
	int status;

	assert_int_equal(waitpid(pid, &status, 0), pid);
	assert_true(WIFEXITED(status));
	assert_int_equal(WEXITSTATUS(status), 0);
}

/* The same id in two sessions at once (a killed fetcher's transaction
 * still running, and its re-send): the second lookup waits for the
 * first delivery's mark and finds the id; when the first dies without
 * marking, the second gets the claim and the id is absent. Other ids
 * do not wait. */
static void test_claims(void **state)
{
	struct fixture *fx = *state;
	unsigned char id[SLOT], other[SLOT];
	struct trib_delivered *rec;
	double t0;
	int go;
	pid_t pid;

	make_id(10, 1, id);
	make_id(10, 2, other);
	pid = claimer(fx->path, id, 1, &go);
	rec = rec_open(fx->path);
	/* another id: no waiting */
	t0 = now();
	assert_int_equal(lookup(rec, other), 0);
	assert_true(now() - t0 < 0.15);
	assert_int_equal(write(go, "g", 1), 1);
	close(go);
	t0 = now();
	assert_int_equal(lookup(rec, id), 1);
	assert_true(now() - t0 >= 0.15);
	reap(pid);
	trib_delivered_close(&rec);

	make_id(10, 3, id);
	pid = claimer(fx->path, id, 0, &go);
	rec = rec_open(fx->path);
	assert_int_equal(write(go, "g", 1), 1);
	close(go);
	assert_int_equal(lookup(rec, id), 0);
	reap(pid);
	assert_int_equal(mark(rec, id), 1);
	trib_delivered_close(&rec);
}

/* Read-only: nothing is created, grown or marked. */
static void test_readonly(void **state)
{
	struct fixture *fx = *state;
	struct trib_delivered *rec;
	unsigned char id[SLOT];
	const char *error = NULL;
	unsigned char *before, *after;
	size_t before_size, after_size;

	assert_int_equal(trib_delivered_open(fx->path,
					     TRIB_DELIVERED_FLAG_READONLY, &rec,
					     &error),
			 -1);
	assert_non_null(strstr(error, "No such file or directory"));
	assert_int_equal(access(fx->path, F_OK), -1);

	rec = rec_open(fx->path);
	/* just below the point where a lookup makes room */
	for (uint64_t i = 0; i < 192; i++) {
		make_id(9, i, id);
		assert_int_equal(mark(rec, id), 1);
	}
	trib_delivered_close(&rec);
	before = read_file(fx->path, &before_size);

	assert_int_equal(trib_delivered_open(fx->path,
					     TRIB_DELIVERED_FLAG_READONLY, &rec,
					     &error),
			 0);
	make_id(9, 191, id);
	assert_int_equal(lookup(rec, id), 1);
	make_id(9, 192, id);
	assert_int_equal(lookup(rec, id), 0);
	assert_int_equal(trib_delivered_mark(rec, id, &error), -1);
	assert_non_null(strstr(error, "read-only"));
	assert_int_equal(count(rec, NULL), 192);
	trib_delivered_close(&rec);
	after = read_file(fx->path, &after_size);
	assert_int_equal(after_size, before_size);
	assert_memory_equal(after, before, before_size);
	free(before);
	free(after);
}

static void test_errors(void **state)
{
	struct fixture *fx = *state;
	struct trib_delivered *rec;
	const char *error = NULL;
	char *path = trib_strdup_printf("%s/missing/delivered", fx->dir);
	int status;
	pid_t pid;

	assert_int_equal(trib_delivered_open(path, 0, &rec, &error), -1);
	assert_non_null(strstr(error, path));
	assert_non_null(strstr(error, "No such file or directory"));
	free(path);
	assert_int_equal(trib_delivered_open("", 0, &rec, &error), -1);

	/* a record the user may not read: as nobody when we are root */
	rec = rec_open(fx->path);
	trib_delivered_close(&rec);
	assert_int_equal(chmod(fx->path, 0), 0);
	assert_int_equal(chmod(fx->dir, 0755), 0);
	pid = fork();
	assert_true(pid >= 0);
	if (pid == 0) {
		if (geteuid() == 0 && (setgid(65534) < 0 || setuid(65534) < 0))
			_exit(2);
		if (trib_delivered_open(fx->path, 0, &rec, &error) == 0)
			_exit(3);
		_exit(strstr(error, fx->path) != NULL &&
				      strstr(error,
					     "open: Permission denied") != NULL
			      ? 0
			      : 4);
	}
	assert_int_equal(waitpid(pid, &status, 0), pid);
	assert_true(WIFEXITED(status));
	assert_int_equal(WEXITSTATUS(status), 0);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
#define T(name) cmocka_unit_test_setup_teardown(name, setup, teardown)
		T(test_mark_lookup),
		T(test_id_parse),
		T(test_growth),
		T(test_growth_by_marks),
		T(test_reopen_after_other_process_grew),
		T(test_corrupt),
		T(test_count_behind),
		T(test_concurrent_writers),
		T(test_claims),
		T(test_readonly),
		T(test_errors),
#undef T
	};

	return cmocka_run_group_tests(tests, NULL, NULL);
}
