/* test-vault.c: the token vault. Every kind round-trips; a changed byte
 * anywhere in a store file, a truncated file, a hostile size, a record
 * moved to another account or user, a wrong key, a newer version are
 * each refused with their own error class and leave the file alone; the
 * key file is checked for its mode and never overwritten; a commit that
 * fails or dies half-way leaves the old store readable; no error carries
 * a secret and no secret stays in the file in clear. Each test runs in a
 * temp dir of its own. */

#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>

#include <cmocka.h>

#include "alloc.h"
#include "crash.h"
#include "state.h"
#include "vault-private.h"
#include "vault.h"

#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <openssl/evp.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#define KEY_A_HEX                                                              \
	"000102030405060708090a0b0c0d0e0f101112131415161718191a1b1c1d1e1f"
#define KEY_B_HEX                                                              \
	"e0e1e2e3e4e5e6e7e8e9eaebecedeeeff0f1f2f3f4f5f6f7f8f9fafbfcfdfeff"

#define REFRESH "1//0refresh-token-of-work"
#define ACCESS "ya29.access-token-of-work"
#define APP_PW "abcd efgh ijkl mnop"

struct fixture {
	char *dir; /* the temp dir */
	char *top; /* dir/state: the state dir */
	struct trib_vault_key *key_a, *key_b;
};

/* A user's state and vault, open. */
struct uv {
	struct trib_state *state;
	struct trib_vault *vault;
};

static struct trib_vault_key *parse_key(const char *hex)
{
	struct trib_vault_key *key = NULL;
	const char *error = NULL;

	if (trib_vault_key_parse(hex, strlen(hex), "test.key", &key, &error) !=
	    TRIB_VAULT_OK)
		fail_msg("key: %s", error);
	return key;
}

static int setup(void **state)
{
	struct fixture *fx = trib_calloc(1, sizeof(*fx));
	char tmpl[] = "/tmp/test-vault.XXXXXX";

	assert_non_null(mkdtemp(tmpl));
	fx->dir = trib_strdup(tmpl);
	fx->top = trib_strdup_printf("%s/state", fx->dir);
	fx->key_a = parse_key(KEY_A_HEX);
	fx->key_b = parse_key(KEY_B_HEX);
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
	trib_vault_key_destroy(&fx->key_a);
	trib_vault_key_destroy(&fx->key_b);
	assert_null(fx->key_a);
	free(fx->dir);
	free(fx->top);
	free(fx);
	return 0;
}

/* Open user's state and vault under key; TRIB_VAULT_OK or the class, with
 * the state closed again on failure. */
static enum trib_vault_error uv_open(const struct fixture *fx, const char *user,
				     const struct trib_vault_key *key,
				     struct uv *uv, const char **error_r)
{
	enum trib_vault_error ret;
	const char *error = NULL;

	memset(uv, 0, sizeof(*uv));
	if (trib_state_open(fx->top, user, &uv->state, &error) < 0)
		fail_msg("state open: %s", error);
	ret = trib_vault_open(uv->state, key, &uv->vault, error_r);
	if (ret != TRIB_VAULT_OK) {
		assert_null(uv->vault);
		assert_non_null(*error_r);
		trib_state_close(&uv->state);
	} else {
		assert_non_null(uv->vault);
		assert_null(*error_r);
	}
	return ret;
}

static void uv_open_ok(const struct fixture *fx, const char *user,
		       const struct trib_vault_key *key, struct uv *uv)
{
	const char *error = NULL;

	if (uv_open(fx, user, key, uv, &error) != TRIB_VAULT_OK)
		fail_msg("vault open: %s", error);
}

static void uv_close(struct uv *uv)
{
	trib_vault_close(&uv->vault);
	assert_null(uv->vault);
	trib_state_close(&uv->state);
}

/* The open must fail with class; the error must mention what and no
 * secret. */
static void assert_open_fails(const struct fixture *fx, const char *user,
			      const struct trib_vault_key *key,
			      enum trib_vault_error class, const char *what)
{
	enum trib_vault_error ret;
	const char *error = NULL;
	struct uv uv;

	ret = uv_open(fx, user, key, &uv, &error);
	if (ret != class)
		fail_msg("expected %s, got %s: %s",
			 trib_vault_error_name(class),
			 trib_vault_error_name(ret),
			 error != NULL ? error : "(none)");
	if (what != NULL && strstr(error, what) == NULL)
		fail_msg("unexpected error: %s", error);
	assert_null(strchr(error, '\n'));
	assert_null(strstr(error, "refresh-token"));
	assert_null(strstr(error, "access-token"));
}

static void set_ok(struct trib_vault *vault, const char *account,
		   enum trib_vault_kind kind, const char *secret,
		   int64_t expires)
{
	const char *error = NULL;

	if (trib_vault_set(vault, account, kind, secret, expires, &error) !=
	    TRIB_VAULT_OK)
		fail_msg("set: %s", error);
	assert_null(error);
	assert_true(trib_vault_is_dirty(vault));
}

static void commit_ok(struct trib_vault *vault)
{
	const char *error = NULL;

	if (trib_vault_commit(vault, &error) != TRIB_VAULT_OK)
		fail_msg("commit: %s", error);
	assert_false(trib_vault_is_dirty(vault));
}

static void assert_secret(struct trib_vault *vault, const char *account,
			  enum trib_vault_kind kind, const char *want)
{
	struct trib_vault_info info;
	const char *error = NULL;
	char *secret = NULL;

	assert_int_equal(
		trib_vault_get(vault, account, kind, &secret, &info, &error),
		1);
	assert_null(error);
	assert_string_equal(secret, want);
	assert_string_equal(info.account, account);
	assert_int_equal(info.kind, kind);
	trib_secret_free(&secret);
	assert_null(secret);
}

static void assert_no_secret(struct trib_vault *vault, const char *account,
			     enum trib_vault_kind kind)
{
	const char *error = NULL;
	char *secret = (char *)"x";

	assert_int_equal(
		trib_vault_get(vault, account, kind, &secret, NULL, &error), 0);
	assert_null(secret);
	assert_null(error);
}

static char *vault_file(const struct fixture *fx, const char *user)
{
	return trib_strdup_printf("%s/%s/vault", fx->top, user);
}

static unsigned char *read_file(const char *path, size_t *size_r)
{
	unsigned char *data;
	struct stat s;
	int fd = open(path, O_RDONLY);

	assert_true(fd >= 0);
	assert_int_equal(fstat(fd, &s), 0);
	data = trib_malloc((size_t)s.st_size + 1);
	assert_int_equal(read(fd, data, (size_t)s.st_size), s.st_size);
	close(fd);
	*size_r = (size_t)s.st_size;
	return data;
}

static void write_file(const char *path, const void *data, size_t size)
{
	int fd = open(path, O_WRONLY | O_CREAT | O_TRUNC, 0600);

	assert_true(fd >= 0);
	assert_int_equal(write(fd, data, size), (ssize_t)size);
	close(fd);
}

static void assert_file_is(const char *path, const unsigned char *data,
			   size_t size)
{
	unsigned char *now;
	size_t now_size;

	now = read_file(path, &now_size);
	assert_int_equal(now_size, size);
	assert_memory_equal(now, data, size);
	free(now);
}

static bool contains(const unsigned char *data, size_t size, const char *needle,
		     size_t len)
{
	for (size_t i = 0; i + len <= size; i++) {
		if (memcmp(data + i, needle, len) == 0)
			return true;
	}
	return false;
}

/* Put the right SHA-256 at the end again, as a forger would. */
static void fix_checksum(unsigned char *data, size_t size)
{
	unsigned int len = 0;

	assert_true(size >= VAULT_CHECKSUM_SIZE);
	assert_int_equal(EVP_Digest(data, size - VAULT_CHECKSUM_SIZE,
				    data + size - VAULT_CHECKSUM_SIZE, &len,
				    EVP_sha256(), NULL),
			 1);
}

static void put_u32(unsigned char *p, uint32_t v)
{
	for (unsigned int i = 0; i < 4; i++)
		p[i] = (unsigned char)(v >> (8 * i));
}

static uint32_t get_u32(const unsigned char *p)
{
	return (uint32_t)p[0] | (uint32_t)p[1] << 8 | (uint32_t)p[2] << 16 |
	       (uint32_t)p[3] << 24;
}

/* Where things are in a vault file (docs/vault.md). */
#define MAX_RECS 8
struct layout {
	size_t version, user_len, user, count;
	unsigned int n;
	/* Each record: its length field, then its parts. */
	size_t len_at[MAX_RECS], kind[MAX_RECS], account[MAX_RECS],
		key_id[MAX_RECS], stored[MAX_RECS], nonce[MAX_RECS],
		tag[MAX_RECS], end[MAX_RECS];
	size_t checksum;
};

static void layout_of(const unsigned char *data, size_t size, struct layout *l)
{
	size_t off;

	memset(l, 0, sizeof(*l));
	assert_memory_equal(data, VAULT_MAGIC, VAULT_MAGIC_SIZE);
	l->version = VAULT_MAGIC_SIZE;
	l->user_len = l->version + 4;
	l->user = l->user_len + 1;
	l->count = l->user + data[l->user_len];
	l->n = get_u32(data + l->count);
	assert_true(l->n <= MAX_RECS);
	off = l->count + 4;
	for (unsigned int i = 0; i < l->n; i++) {
		uint32_t len = get_u32(data + off);
		size_t s = off + 4;

		l->len_at[i] = off;
		l->kind[i] = s;
		l->account[i] = s + 2;
		l->key_id[i] = l->account[i] + data[s + 1];
		l->stored[i] = l->key_id[i] + VAULT_KEY_ID_SIZE;
		l->nonce[i] = l->stored[i] + 16;
		l->end[i] = s + len;
		l->tag[i] = l->end[i] - VAULT_TAG_SIZE;
		off = l->end[i];
	}
	l->checksum = off;
	assert_int_equal(off + VAULT_CHECKSUM_SIZE, size);
}

/* A small store of alice: two records. */
static void make_small_store(const struct fixture *fx)
{
	struct uv uv;

	uv_open_ok(fx, "alice", fx->key_a, &uv);
	set_ok(uv.vault, "work", TRIB_VAULT_REFRESH_TOKEN, REFRESH, 0);
	set_ok(uv.vault, "work", TRIB_VAULT_ACCESS_TOKEN, ACCESS, 1900000000);
	commit_ok(uv.vault);
	uv_close(&uv);
}

/* ---- the key ---- */

static void test_key_parse(void **state)
{
	struct fixture *fx = *state;
	struct trib_vault_key *key = NULL;
	const char *error = NULL;
	const char *text = "# a comment\n\n  " KEY_A_HEX " \r\n# end\n";

	assert_int_equal(
		trib_vault_key_parse(text, strlen(text), "k", &key, &error),
		TRIB_VAULT_OK);
	assert_int_equal(strlen(trib_vault_key_id(key)), TRIB_VAULT_KEY_ID_LEN);
	assert_string_equal(trib_vault_key_id(key),
			    trib_vault_key_id(fx->key_a));
	assert_string_equal(trib_vault_key_name(key), "k");
	assert_string_not_equal(trib_vault_key_id(fx->key_a),
				trib_vault_key_id(fx->key_b));
	/* The id is no part of the key. */
	assert_null(strstr(KEY_A_HEX, trib_vault_key_id(key)));
	trib_vault_key_destroy(&key);
	assert_null(key);
	trib_vault_key_destroy(&key);

	static const struct {
		const char *text, *what;
	} bad[] = {
		{ "", "no key in the file" },
		{ "# only a comment\n", "no key in the file" },
		{ KEY_A_HEX "0\n", "wrong key length: 65 hex digits" },
		{ "0011\n", "wrong key length: 4 hex digits" },
		{ "zz" KEY_A_HEX "\n", "line 1: bad syntax" },
		{ KEY_A_HEX "\n" KEY_B_HEX "\n", "line 2: a second key" },
		{ "# x\n" KEY_A_HEX " x\n", "line 2: bad syntax" },
	};
	for (unsigned int i = 0; i < TRIB_N_ELEMENTS(bad); i++) {
		key = (struct trib_vault_key *)1;
		assert_int_equal(
			trib_vault_key_parse(bad[i].text, strlen(bad[i].text),
					     "/etc/v.key", &key, &error),
			TRIB_VAULT_ERR_KEY_INVALID);
		assert_null(key);
		if (strstr(error, bad[i].what) == NULL ||
		    strstr(error, "vault key /etc/v.key: ") != error)
			fail_msg("%u: unexpected error: %s", i, error);
		/* No part of a key in the error. */
		assert_null(strstr(error, "000102"));
		assert_null(strstr(error, "e0e1e2"));
	}
}

static void test_key_load_checks(void **state)
{
	struct fixture *fx = *state;
	struct trib_vault_key *key = NULL;
	char *path = trib_strdup_printf("%s/vault.key", fx->dir);
	char *link = trib_strdup_printf("%s/link.key", fx->dir);
	char *fifo = trib_strdup_printf("%s/fifo.key", fx->dir);
	char *big = trib_strdup_printf("%s/big.key", fx->dir);
	const char *error = NULL;
	char *pad;

	/* Missing: a clear error, never a new key. */
	assert_int_equal(trib_vault_key_load(path, &key, &error),
			 TRIB_VAULT_ERR_KEY_MISSING);
	assert_null(key);
	if (strstr(error, path) == NULL ||
	    strstr(error, "missing (run `tributary init`") == NULL)
		fail_msg("unexpected error: %s", error);
	assert_int_not_equal(access(path, F_OK), 0);

	write_file(path, KEY_A_HEX "\n", strlen(KEY_A_HEX) + 1);
	for (mode_t mode = 0; mode <= 0777; mode++) {
		enum trib_vault_error ret;

		if ((mode & 0400) == 0 && geteuid() != 0)
			continue; /* unreadable to us anyway */
		assert_int_equal(chmod(path, mode), 0);
		ret = trib_vault_key_load(path, &key, &error);
		if ((mode & 077) == 0) {
			if (ret != TRIB_VAULT_OK)
				fail_msg("mode %04o: %s", mode, error);
			assert_string_equal(trib_vault_key_id(key),
					    trib_vault_key_id(fx->key_a));
			trib_vault_key_destroy(&key);
			continue;
		}
		char want[64];

		assert_int_equal(ret, TRIB_VAULT_ERR_KEY_ACCESS);
		assert_null(key);
		snprintf(want, sizeof(want), "mode %04o gives group or others",
			 mode);
		if (strstr(error, want) == NULL || strstr(error, path) == NULL)
			fail_msg("unexpected error: %s", error);
	}
	assert_int_equal(chmod(path, 0400), 0);

	/* A symbolic link to a private key file is followed. */
	assert_int_equal(symlink(path, link), 0);
	assert_int_equal(trib_vault_key_load(link, &key, &error),
			 TRIB_VAULT_OK);
	assert_string_equal(trib_vault_key_name(key), link);
	trib_vault_key_destroy(&key);

	/* Not regular files; a FIFO must not hang us. */
	assert_int_equal(mkfifo(fifo, 0600), 0);
	assert_int_equal(trib_vault_key_load(fifo, &key, &error),
			 TRIB_VAULT_ERR_KEY_ACCESS);
	assert_non_null(strstr(error, "not a regular file"));
	assert_int_equal(trib_vault_key_load(fx->dir, &key, &error),
			 TRIB_VAULT_ERR_KEY_ACCESS);

	/* Too large, broken text. */
	pad = trib_malloc(5000);
	memset(pad, '#', 5000);
	write_file(big, pad, 5000);
	free(pad);
	assert_int_equal(trib_vault_key_load(big, &key, &error),
			 TRIB_VAULT_ERR_KEY_INVALID);
	assert_non_null(strstr(error, "too large"));
	write_file(big, "00ff\n", 5);
	assert_int_equal(trib_vault_key_load(big, &key, &error),
			 TRIB_VAULT_ERR_KEY_INVALID);
	assert_non_null(strstr(error, "wrong key length"));
	free(path);
	free(link);
	free(fifo);
	free(big);
}

static void test_key_generate(void **state)
{
	struct fixture *fx = *state;
	struct trib_vault_key *key = NULL, *key2 = NULL;
	char *path = trib_strdup_printf("%s/keys/vault.key", fx->dir);
	char *path2 = trib_strdup_printf("%s/keys/other.key", fx->dir);
	char *dangling = trib_strdup_printf("%s/keys/dangling.key", fx->dir);
	char *keys = trib_strdup_printf("%s/keys", fx->dir);
	unsigned char *before;
	size_t before_size;
	const char *error = NULL;
	struct dirent *d;
	struct stat st;
	unsigned int entries = 0;
	DIR *dir;

	/* The directory must exist. */
	assert_int_equal(
		trib_vault_key_generate(path, (uid_t)-1, (gid_t)-1, &error),
		TRIB_VAULT_ERR_IO);
	assert_non_null(strstr(error, "cannot create a file beside it"));
	assert_int_equal(mkdir(keys, 0750), 0);

	umask(0);
	assert_int_equal(
		trib_vault_key_generate(path, (uid_t)-1, (gid_t)-1, &error),
		TRIB_VAULT_OK);
	umask(022);
	assert_int_equal(stat(path, &st), 0);
	assert_int_equal(st.st_mode & 07777, 0600);
	assert_int_equal(st.st_uid, geteuid());
	assert_int_equal(trib_vault_key_load(path, &key, &error),
			 TRIB_VAULT_OK);
	before = read_file(path, &before_size);
	assert_non_null(memchr(before, '#', before_size));

	/* Never overwritten. */
	assert_int_equal(
		trib_vault_key_generate(path, (uid_t)-1, (gid_t)-1, &error),
		TRIB_VAULT_ERR_KEY_EXISTS);
	if (strstr(error, path) == NULL ||
	    strstr(error, "exists already") == NULL)
		fail_msg("unexpected error: %s", error);
	assert_file_is(path, before, before_size);
	/* Not even a dangling link in its place. */
	assert_int_equal(symlink("nowhere", dangling), 0);
	assert_int_equal(
		trib_vault_key_generate(dangling, (uid_t)-1, (gid_t)-1, &error),
		TRIB_VAULT_ERR_KEY_EXISTS);
	assert_int_equal(lstat(dangling, &st), 0);
	assert_true(S_ISLNK(st.st_mode));

	/* Each key is new; owner as asked (root only). */
	if (geteuid() == 0) {
		assert_int_equal(
			trib_vault_key_generate(path2, 65534, 65534, &error),
			TRIB_VAULT_OK);
		assert_int_equal(stat(path2, &st), 0);
		assert_int_equal(st.st_uid, 65534);
		assert_int_equal(st.st_gid, 65534);
	} else {
		assert_int_equal(trib_vault_key_generate(path2, (uid_t)-1,
							 (gid_t)-1, &error),
				 TRIB_VAULT_OK);
	}
	assert_int_equal(trib_vault_key_load(path2, &key2, &error),
			 TRIB_VAULT_OK);
	assert_string_not_equal(trib_vault_key_id(key),
				trib_vault_key_id(key2));

	/* No temp file left behind. */
	dir = opendir(keys);
	assert_non_null(dir);
	while ((d = readdir(dir)) != NULL) {
		if (d->d_name[0] == '.')
			continue;
		entries++;
		assert_null(strstr(d->d_name, ".tmp"));
	}
	closedir(dir);
	assert_int_equal(entries, 3);
	trib_vault_key_destroy(&key);
	trib_vault_key_destroy(&key2);
	free(before);
	free(path);
	free(path2);
	free(dangling);
	free(keys);
}

/* ---- the store ---- */

static void test_round_trip_every_kind(void **state)
{
	struct fixture *fx = *state;
	struct trib_vault_info info;
	char *path = vault_file(fx, "alice");
	const char *error = NULL;
	unsigned char *data;
	char *secret = NULL;
	size_t size;
	time_t before = time(NULL), after;
	struct stat st;
	struct uv uv;

	/* A new user: an empty vault, no file until a commit. */
	uv_open_ok(fx, "alice", fx->key_a, &uv);
	assert_int_equal(trib_vault_count(uv.vault), 0);
	assert_no_secret(uv.vault, "work", TRIB_VAULT_REFRESH_TOKEN);
	assert_false(trib_vault_is_dirty(uv.vault));
	commit_ok(uv.vault);
	assert_int_not_equal(access(path, F_OK), 0);
	assert_string_equal(trib_vault_path(uv.vault), path);

	set_ok(uv.vault, "work", TRIB_VAULT_REFRESH_TOKEN, REFRESH, 0);
	set_ok(uv.vault, "work", TRIB_VAULT_ACCESS_TOKEN, ACCESS, 1900000000);
	set_ok(uv.vault, "home", TRIB_VAULT_APP_PASSWORD, APP_PW, 0);
	set_ok(uv.vault, "z-9_", TRIB_VAULT_REFRESH_TOKEN, "x", 0);
	/* Readable before the commit too. */
	assert_secret(uv.vault, "work", TRIB_VAULT_ACCESS_TOKEN, ACCESS);
	umask(0);
	commit_ok(uv.vault);
	umask(022);
	uv_close(&uv);
	after = time(NULL);

	assert_int_equal(stat(path, &st), 0);
	assert_int_equal(st.st_mode & 07777, 0600);
	/* Nothing in clear in the file. */
	data = read_file(path, &size);
	assert_false(contains(data, size, REFRESH, strlen(REFRESH)));
	assert_false(contains(data, size, "refresh-token", 13));
	assert_false(contains(data, size, ACCESS, strlen(ACCESS)));
	assert_false(contains(data, size, APP_PW, strlen(APP_PW)));
	free(data);

	uv_open_ok(fx, "alice", fx->key_a, &uv);
	assert_int_equal(trib_vault_count(uv.vault), 4);
	assert_secret(uv.vault, "work", TRIB_VAULT_REFRESH_TOKEN, REFRESH);
	assert_secret(uv.vault, "work", TRIB_VAULT_ACCESS_TOKEN, ACCESS);
	assert_secret(uv.vault, "home", TRIB_VAULT_APP_PASSWORD, APP_PW);
	assert_secret(uv.vault, "z-9_", TRIB_VAULT_REFRESH_TOKEN, "x");
	assert_no_secret(uv.vault, "home", TRIB_VAULT_REFRESH_TOKEN);
	assert_no_secret(uv.vault, "other", TRIB_VAULT_APP_PASSWORD);

	assert_int_equal(trib_vault_get(uv.vault, "work",
					TRIB_VAULT_ACCESS_TOKEN, &secret, &info,
					&error),
			 1);
	assert_int_equal(info.expires_at, 1900000000);
	assert_true(info.stored_at >= before && info.stored_at <= after);
	trib_secret_free(&secret);
	assert_true(trib_vault_find(uv.vault, "work", TRIB_VAULT_REFRESH_TOKEN,
				    &info));
	assert_int_equal(info.expires_at, 0);
	assert_false(trib_vault_find(uv.vault, "home", TRIB_VAULT_ACCESS_TOKEN,
				     NULL));

	/* Listed by account, then kind. */
	static const struct {
		const char *account;
		enum trib_vault_kind kind;
	} order[] = {
		{ "home", TRIB_VAULT_APP_PASSWORD },
		{ "work", TRIB_VAULT_REFRESH_TOKEN },
		{ "work", TRIB_VAULT_ACCESS_TOKEN },
		{ "z-9_", TRIB_VAULT_REFRESH_TOKEN },
	};
	for (unsigned int i = 0; i < TRIB_N_ELEMENTS(order); i++) {
		assert_true(trib_vault_info_at(uv.vault, i, &info));
		assert_string_equal(info.account, order[i].account);
		assert_int_equal(info.kind, order[i].kind);
	}
	assert_false(trib_vault_info_at(uv.vault, 4, &info));
	assert_string_equal(trib_vault_kind_name(TRIB_VAULT_REFRESH_TOKEN),
			    "refresh_token");
	assert_string_equal(trib_vault_kind_name(TRIB_VAULT_ACCESS_TOKEN),
			    "access_token");
	assert_string_equal(trib_vault_kind_name(TRIB_VAULT_APP_PASSWORD),
			    "app_password");
	assert_null(trib_vault_kind_name(0));
	assert_null(trib_vault_kind_name(TRIB_VAULT_KIND_MAX + 1));
	uv_close(&uv);
	free(path);
}

static void test_many_records_and_caps(void **state)
{
	struct fixture *fx = *state;
	char *big = trib_malloc(TRIB_VAULT_SECRET_MAX + 2), account[16];
	const char *error = NULL;
	char *secret = NULL;
	struct uv uv;

	for (unsigned int i = 0; i < TRIB_VAULT_SECRET_MAX + 1; i++)
		big[i] = (char)(' ' + i % 95);
	big[TRIB_VAULT_SECRET_MAX + 1] = '\0';

	uv_open_ok(fx, "alice", fx->key_a, &uv);
	for (unsigned int i = 0; i < TRIB_VAULT_RECORDS_MAX; i++) {
		size_t len = i == 0 ? TRIB_VAULT_SECRET_MAX : 1 + i * 37;
		char saved = big[len];

		snprintf(account, sizeof(account), "acct%03u", i / 3);
		big[len] = '\0';
		set_ok(uv.vault, account, (enum trib_vault_kind)(1 + i % 3),
		       big, i);
		big[len] = saved;
	}
	assert_int_equal(trib_vault_count(uv.vault), TRIB_VAULT_RECORDS_MAX);
	/* Full: a new record is refused, a replacement is fine. */
	assert_int_equal(trib_vault_set(uv.vault, "zzz",
					TRIB_VAULT_REFRESH_TOKEN, "x", 0,
					&error),
			 TRIB_VAULT_ERR_INVALID);
	assert_non_null(strstr(error, "full (256 records at most)"));
	set_ok(uv.vault, "acct000", TRIB_VAULT_ACCESS_TOKEN, "replaced", 5);
	commit_ok(uv.vault);
	uv_close(&uv);

	uv_open_ok(fx, "alice", fx->key_a, &uv);
	assert_int_equal(trib_vault_count(uv.vault), TRIB_VAULT_RECORDS_MAX);
	for (unsigned int i = 0; i < TRIB_VAULT_RECORDS_MAX; i++) {
		struct trib_vault_info info;
		size_t len = i == 0 ? TRIB_VAULT_SECRET_MAX : 1 + i * 37;

		snprintf(account, sizeof(account), "acct%03u", i / 3);
		assert_int_equal(
			trib_vault_get(uv.vault, account,
				       (enum trib_vault_kind)(1 + i % 3),
				       &secret, &info, &error),
			1);
		if (i == 1) {
			assert_string_equal(secret, "replaced");
			assert_int_equal(info.expires_at, 5);
		} else {
			assert_int_equal(strlen(secret), len);
			assert_memory_equal(secret, big, len);
			assert_int_equal(info.expires_at, i);
		}
		trib_secret_free(&secret);
	}

	/* What set refuses, with the secret never in the error. */
	assert_int_equal(trib_vault_set(uv.vault, "acct000",
					TRIB_VAULT_REFRESH_TOKEN, big, 0,
					&error),
			 TRIB_VAULT_ERR_INVALID);
	assert_non_null(strstr(error, "secret too long"));
	assert_null(strstr(error, "!\"#$%"));
	assert_int_equal(trib_vault_set(uv.vault, "acct000",
					TRIB_VAULT_REFRESH_TOKEN, "", 0,
					&error),
			 TRIB_VAULT_ERR_INVALID);
	assert_non_null(strstr(error, "empty secret"));
	assert_int_equal(trib_vault_set(uv.vault, "acct000",
					TRIB_VAULT_REFRESH_TOKEN, "s", -1,
					&error),
			 TRIB_VAULT_ERR_INVALID);
	assert_non_null(strstr(error, "negative expiry"));
	static const char *const bad_accounts[] = {
		"", "Work", "a b", "../x", "abcdefghijabcdefghijabcdefghijabc",
	};
	for (unsigned int i = 0; i < TRIB_N_ELEMENTS(bad_accounts); i++) {
		assert_int_equal(trib_vault_set(uv.vault, bad_accounts[i],
						TRIB_VAULT_REFRESH_TOKEN,
						"secret-value", 0, &error),
				 TRIB_VAULT_ERR_INVALID);
		assert_non_null(strstr(error, "invalid account name"));
		assert_null(strstr(error, "secret-value"));
		assert_int_equal(trib_vault_get(uv.vault, bad_accounts[i],
						TRIB_VAULT_REFRESH_TOKEN,
						&secret, NULL, &error),
				 -1);
		assert_null(secret);
	}
	assert_int_equal(trib_vault_set(uv.vault, "acct000", 0, "s", 0, &error),
			 TRIB_VAULT_ERR_INVALID);
	assert_non_null(strstr(error, "unknown kind 0"));
	assert_int_equal(trib_vault_set(uv.vault, "acct000",
					TRIB_VAULT_KIND_MAX + 1, "s", 0,
					&error),
			 TRIB_VAULT_ERR_INVALID);
	assert_int_equal(
		trib_vault_get(uv.vault, "acct000", 9, &secret, NULL, &error),
		-1);
	assert_false(trib_vault_is_dirty(uv.vault));
	uv_close(&uv);
	free(big);
}

static void test_replace_delete_and_nonces(void **state)
{
	struct fixture *fx = *state;
	unsigned char nonce1[VAULT_NONCE_SIZE], ct1[8];
	char *path = vault_file(fx, "alice");
	struct stat st1, st2;
	struct uv uv;

	uv_open_ok(fx, "alice", fx->key_a, &uv);
	set_ok(uv.vault, "work", TRIB_VAULT_REFRESH_TOKEN, "samesame", 0);
	memcpy(nonce1, uv.vault->records[0].nonce, sizeof(nonce1));
	memcpy(ct1, uv.vault->records[0].ct, sizeof(ct1));
	/* The same secret again: a fresh nonce, another ciphertext. */
	set_ok(uv.vault, "work", TRIB_VAULT_REFRESH_TOKEN, "samesame", 0);
	assert_int_equal(trib_vault_count(uv.vault), 1);
	assert_memory_not_equal(uv.vault->records[0].nonce, nonce1,
				sizeof(nonce1));
	assert_memory_not_equal(uv.vault->records[0].ct, ct1, sizeof(ct1));
	set_ok(uv.vault, "work", TRIB_VAULT_ACCESS_TOKEN, "a1", 100);
	set_ok(uv.vault, "work", TRIB_VAULT_APP_PASSWORD, "p1", 0);
	set_ok(uv.vault, "home", TRIB_VAULT_APP_PASSWORD, "p2", 0);
	commit_ok(uv.vault);
	assert_int_equal(stat(path, &st1), 0);
	/* Nothing changed: no write. */
	commit_ok(uv.vault);
	assert_int_equal(stat(path, &st2), 0);
	assert_int_equal(st1.st_ino, st2.st_ino);

	assert_false(
		trib_vault_delete(uv.vault, "nope", TRIB_VAULT_APP_PASSWORD));
	assert_false(trib_vault_is_dirty(uv.vault));
	assert_true(
		trib_vault_delete(uv.vault, "work", TRIB_VAULT_ACCESS_TOKEN));
	assert_true(trib_vault_is_dirty(uv.vault));
	assert_no_secret(uv.vault, "work", TRIB_VAULT_ACCESS_TOKEN);
	commit_ok(uv.vault);
	uv_close(&uv);

	uv_open_ok(fx, "alice", fx->key_a, &uv);
	assert_int_equal(trib_vault_count(uv.vault), 3);
	assert_no_secret(uv.vault, "work", TRIB_VAULT_ACCESS_TOKEN);
	assert_secret(uv.vault, "work", TRIB_VAULT_REFRESH_TOKEN, "samesame");
	assert_int_equal(trib_vault_delete_account(uv.vault, "work"), 2);
	assert_int_equal(trib_vault_delete_account(uv.vault, "work"), 0);
	assert_secret(uv.vault, "home", TRIB_VAULT_APP_PASSWORD, "p2");
	/* Uncommitted changes are lost at close. */
	uv_close(&uv);
	uv_open_ok(fx, "alice", fx->key_a, &uv);
	assert_int_equal(trib_vault_count(uv.vault), 3);
	assert_int_equal(trib_vault_delete_account(uv.vault, "work"), 2);
	assert_true(
		trib_vault_delete(uv.vault, "home", TRIB_VAULT_APP_PASSWORD));
	commit_ok(uv.vault);
	uv_close(&uv);
	/* An empty vault is a file too. */
	uv_open_ok(fx, "alice", fx->key_a, &uv);
	assert_int_equal(trib_vault_count(uv.vault), 0);
	uv_close(&uv);
	assert_int_equal(access(path, F_OK), 0);
	free(path);
}

/* Secrets handed out are the caller's: valid after the vault is gone, a
 * fresh copy each time; infos carry no pointers. Valgrind checks the
 * rest (no read of freed memory, nothing leaked). */
static void test_secret_ownership(void **state)
{
	struct fixture *fx = *state;
	struct trib_vault_info info;
	const char *error = NULL;
	char *s1 = NULL, *s2 = NULL;
	struct uv uv;

	uv_open_ok(fx, "alice", fx->key_a, &uv);
	set_ok(uv.vault, "work", TRIB_VAULT_REFRESH_TOKEN, REFRESH, 0);
	assert_int_equal(trib_vault_get(uv.vault, "work",
					TRIB_VAULT_REFRESH_TOKEN, &s1, &info,
					&error),
			 1);
	assert_int_equal(trib_vault_get(uv.vault, "work",
					TRIB_VAULT_REFRESH_TOKEN, &s2, NULL,
					&error),
			 1);
	assert_ptr_not_equal(s1, s2);
	/* Replaced and deleted: the copies and the info stay good. */
	set_ok(uv.vault, "work", TRIB_VAULT_REFRESH_TOKEN, "other", 0);
	assert_true(
		trib_vault_delete(uv.vault, "work", TRIB_VAULT_REFRESH_TOKEN));
	uv_close(&uv);
	assert_string_equal(s1, REFRESH);
	assert_string_equal(s2, REFRESH);
	assert_string_equal(info.account, "work");
	trib_secret_free(&s1);
	trib_secret_free(&s2);
	assert_null(s1);
	trib_secret_free(&s1);
}

static void test_second_open_refused(void **state)
{
	struct fixture *fx = *state;
	struct trib_vault *other = NULL;
	const char *error = NULL;
	struct uv uv, bob;

	uv_open_ok(fx, "alice", fx->key_a, &uv);
	assert_int_equal(trib_vault_open(uv.state, fx->key_a, &other, &error),
			 TRIB_VAULT_ERR_INVALID);
	assert_null(other);
	assert_non_null(strstr(error, "already open in this process"));
	/* Another user's is fine. */
	uv_open_ok(fx, "bob", fx->key_a, &bob);
	uv_close(&bob);
	trib_vault_close(&uv.vault);
	assert_int_equal(
		trib_vault_open(uv.state, fx->key_a, &uv.vault, &error),
		TRIB_VAULT_OK);
	uv_close(&uv);
}

/* ---- refused stores ---- */

static void test_wrong_key(void **state)
{
	struct fixture *fx = *state;
	char *path = vault_file(fx, "alice");
	unsigned char *before;
	size_t before_size;
	char want[128];
	struct uv uv;

	make_small_store(fx);
	before = read_file(path, &before_size);
	snprintf(want, sizeof(want),
		 "written with another vault key (id %s), not the one in "
		 "test.key (id %s)",
		 trib_vault_key_id(fx->key_a), trib_vault_key_id(fx->key_b));
	assert_open_fails(fx, "alice", fx->key_b, TRIB_VAULT_ERR_WRONG_KEY,
			  want);
	assert_file_is(path, before, before_size);
	/* The right key still reads it. */
	uv_open_ok(fx, "alice", fx->key_a, &uv);
	assert_secret(uv.vault, "work", TRIB_VAULT_REFRESH_TOKEN, REFRESH);
	uv_close(&uv);
	/* An empty vault has nothing to tell the keys apart. */
	uv_open_ok(fx, "bob", fx->key_a, &uv);
	commit_ok(uv.vault);
	uv_close(&uv);
	uv_open_ok(fx, "bob", fx->key_b, &uv);
	uv_close(&uv);
	free(before);
	free(path);
}

#define C(class) (1U << (class))

/* The classes a refusal of the small store may have once the byte at off
 * was XORed with mask and the checksum made to fit again. */
static unsigned int flip_class(const struct layout *l,
			       const unsigned char *orig, size_t off,
			       unsigned char mask)
{
	unsigned int r = l->n, now = orig[off] ^ mask;

	for (unsigned int i = 0; i < l->n; i++) {
		if (off >= l->len_at[i] && off < l->end[i])
			r = i;
	}
	if (off >= l->version && off < l->user_len)
		return C(TRIB_VAULT_ERR_VERSION);
	if (off == l->user_len) {
		/* Another user, or past the end. */
		return now == 0 || l->user + now + 4 > l->checksum
			       ? C(TRIB_VAULT_ERR_CORRUPT)
			       : C(TRIB_VAULT_ERR_TAMPERED);
	}
	if (off >= l->user && off < l->count)
		return C(TRIB_VAULT_ERR_TAMPERED);
	if (r == l->n || off < l->kind[r])
		return C(TRIB_VAULT_ERR_CORRUPT); /* magic, counts, lengths */
	if (off >= l->key_id[r] && off < l->stored[r]) {
		/* One record of two under another key id: not another
		 * key, tampering (test_wrong_key has the other case). */
		return C(TRIB_VAULT_ERR_TAMPERED);
	}
	if (off >= l->stored[r] && off < l->nonce[r]) {
		/* The top bit of a time makes it negative. */
		return (off - l->stored[r]) % 8 == 7 && (mask & 0x80) != 0
			       ? C(TRIB_VAULT_ERR_CORRUPT)
			       : C(TRIB_VAULT_ERR_TAMPERED);
	}
	if (off >= l->nonce[r])
		return C(TRIB_VAULT_ERR_TAMPERED);
	if (off == l->kind[r] && (now == 0 || now > TRIB_VAULT_KIND_MAX))
		return C(TRIB_VAULT_ERR_CORRUPT);
	if (off > l->kind[r + 0] + 1 &&
	    !((now >= 'a' && now <= 'z') || (now >= '0' && now <= '9') ||
	      now == '_' || now == '-'))
		return C(TRIB_VAULT_ERR_CORRUPT); /* not an account name */
	/* Another kind, account or account length: the records are out of
	 * order now (corrupt), or one does not authenticate where it is. */
	return C(TRIB_VAULT_ERR_CORRUPT) | C(TRIB_VAULT_ERR_TAMPERED);
}

/* Every byte of a small store, changed: refused, the file left alone. */
static void test_flipped_byte_everywhere(void **state)
{
	struct fixture *fx = *state;
	char *path = vault_file(fx, "alice");
	unsigned char *orig, *data;
	struct layout l;
	size_t size;
	struct uv uv;

	make_small_store(fx);
	orig = read_file(path, &size);
	layout_of(orig, size, &l);
	assert_int_equal(l.n, 2);
	data = trib_malloc(size);

	/* As a disk or a torn write would: the checksum says so. */
	for (size_t off = 0; off < size; off++) {
		memcpy(data, orig, size);
		data[off] ^= 0x01;
		write_file(path, data, size);
		assert_open_fails(fx, "alice", fx->key_a,
				  TRIB_VAULT_ERR_CORRUPT,
				  off < VAULT_MAGIC_SIZE ? "not a Tributary "
							   "vault file"
							 : "checksum mismatch");
		assert_file_is(path, data, size);
	}

	/* As a forger would, checksum recomputed: each field gets its own
	 * class, and nothing decrypts. */
	for (size_t off = 0; off < l.checksum; off++) {
		static const unsigned char masks[] = { 0x01, 0x80, 0xff };

		for (unsigned int m = 0; m < TRIB_N_ELEMENTS(masks); m++) {
			unsigned int want = flip_class(&l, orig, off, masks[m]);
			enum trib_vault_error ret;
			const char *error = NULL;

			memcpy(data, orig, size);
			data[off] ^= masks[m];
			fix_checksum(data, size);
			write_file(path, data, size);
			ret = uv_open(fx, "alice", fx->key_a, &uv, &error);
			if ((want & (1U << ret)) == 0 || ret == TRIB_VAULT_OK)
				fail_msg("offset %zu ^%02x: got %s: %s", off,
					 masks[m], trib_vault_error_name(ret),
					 error != NULL ? error : "(none)");
			assert_null(strstr(error, "refresh-token"));
			assert_null(strstr(error, "access-token"));
			assert_file_is(path, data, size);
		}
	}
	/* Put back, it opens. */
	write_file(path, orig, size);
	uv_open_ok(fx, "alice", fx->key_a, &uv);
	assert_secret(uv.vault, "work", TRIB_VAULT_ACCESS_TOKEN, ACCESS);
	uv_close(&uv);
	free(orig);
	free(data);
	free(path);
}

static void test_tampered_record_named(void **state)
{
	struct fixture *fx = *state;
	char *path = vault_file(fx, "alice");
	unsigned char *data;
	struct layout l;
	size_t size;

	make_small_store(fx);
	data = read_file(path, &size);
	layout_of(data, size, &l);
	data[l.tag[1]] ^= 0x40;
	fix_checksum(data, size);
	write_file(path, data, size);
	assert_open_fails(fx, "alice", fx->key_a, TRIB_VAULT_ERR_TAMPERED,
			  "/alice/vault: record 2 (work access_token): "
			  "authentication failed");
	assert_open_fails(fx, "alice", fx->key_a, TRIB_VAULT_ERR_TAMPERED,
			  "refusing it: restore it or move it away");
	free(data);
	free(path);
}

/* A record copied into another account's or user's place never
 * decrypts. */
static void test_record_moved(void **state)
{
	struct fixture *fx = *state;
	char *alice = vault_file(fx, "alice"), *carol = vault_file(fx, "carol");
	unsigned char *a, *c, *data;
	struct layout la, lc;
	size_t a_size, c_size;
	struct uv uv;

	/* Same lengths everywhere, so records can be swapped in place. */
	uv_open_ok(fx, "alice", fx->key_a, &uv);
	set_ok(uv.vault, "play", TRIB_VAULT_REFRESH_TOKEN, "alice-play-rt", 0);
	set_ok(uv.vault, "work", TRIB_VAULT_REFRESH_TOKEN, "alice-work-rt", 0);
	set_ok(uv.vault, "work", TRIB_VAULT_APP_PASSWORD, "alice-work-pw", 0);
	commit_ok(uv.vault);
	uv_close(&uv);
	uv_open_ok(fx, "carol", fx->key_a, &uv);
	set_ok(uv.vault, "play", TRIB_VAULT_REFRESH_TOKEN, "carol-play-rt", 0);
	set_ok(uv.vault, "work", TRIB_VAULT_REFRESH_TOKEN, "carol-work-rt", 0);
	set_ok(uv.vault, "work", TRIB_VAULT_APP_PASSWORD, "carol-work-pw", 0);
	commit_ok(uv.vault);
	uv_close(&uv);
	a = read_file(alice, &a_size);
	c = read_file(carol, &c_size);
	layout_of(a, a_size, &la);
	layout_of(c, c_size, &lc);
	assert_int_equal(a_size, c_size);
	data = trib_malloc(a_size);

	/* work's refresh token into play's place (same user). */
	memcpy(data, a, a_size);
	memcpy(data + la.key_id[0], a + la.key_id[1], la.end[1] - la.key_id[1]);
	fix_checksum(data, a_size);
	write_file(alice, data, a_size);
	assert_open_fails(fx, "alice", fx->key_a, TRIB_VAULT_ERR_TAMPERED,
			  "record 1 (play refresh_token): authentication "
			  "failed (changed, or moved");
	/* work's app password as its refresh token: the kind changed. */
	memcpy(data, a, a_size);
	memcpy(data + la.key_id[1], a + la.key_id[2], la.end[2] - la.key_id[2]);
	fix_checksum(data, a_size);
	write_file(alice, data, a_size);
	assert_open_fails(fx, "alice", fx->key_a, TRIB_VAULT_ERR_TAMPERED,
			  "record 2 (work refresh_token): authentication "
			  "failed");
	write_file(alice, a, a_size);

	/* Alice's record into carol's file, same account and kind. */
	memcpy(data, c, c_size);
	memcpy(data + lc.len_at[1], a + la.len_at[1], la.end[1] - la.len_at[1]);
	fix_checksum(data, c_size);
	write_file(carol, data, c_size);
	assert_open_fails(fx, "carol", fx->key_a, TRIB_VAULT_ERR_TAMPERED,
			  "record 2 (work refresh_token): authentication "
			  "failed");
	/* Alice's whole file as carol's. */
	write_file(carol, a, a_size);
	assert_open_fails(fx, "carol", fx->key_a, TRIB_VAULT_ERR_TAMPERED,
			  "written for user alice, not carol");
	/* ... with the user in its header changed too. */
	memcpy(data, a, a_size);
	memcpy(data + la.user, "carol", 5);
	fix_checksum(data, a_size);
	write_file(carol, data, a_size);
	assert_open_fails(fx, "carol", fx->key_a, TRIB_VAULT_ERR_TAMPERED,
			  "record 1 (play refresh_token): authentication "
			  "failed");

	/* Alice's own file is untouched by all this. */
	uv_open_ok(fx, "alice", fx->key_a, &uv);
	assert_secret(uv.vault, "work", TRIB_VAULT_REFRESH_TOKEN,
		      "alice-work-rt");
	uv_close(&uv);
	free(a);
	free(c);
	free(data);
	free(alice);
	free(carol);
}

static void test_truncated_every_length(void **state)
{
	struct fixture *fx = *state;
	char *path = vault_file(fx, "alice");
	unsigned char *orig;
	size_t size;

	make_small_store(fx);
	orig = read_file(path, &size);
	for (size_t len = 0; len < size; len++) {
		write_file(path, orig, len);
		assert_open_fails(fx, "alice", fx->key_a,
				  TRIB_VAULT_ERR_CORRUPT, "/alice/vault: ");
		assert_file_is(path, orig, len);
	}
	/* A byte too many. */
	orig = trib_realloc(orig, size + 1);
	orig[size] = '\n';
	write_file(path, orig, size + 1);
	assert_open_fails(fx, "alice", fx->key_a, TRIB_VAULT_ERR_CORRUPT,
			  "checksum mismatch");
	/* A truncated file whose checksum was made to fit. */
	fix_checksum(orig, size - 10);
	write_file(path, orig, size - 10);
	assert_open_fails(fx, "alice", fx->key_a, TRIB_VAULT_ERR_CORRUPT,
			  "record 2: length");
	free(orig);
	free(path);
}

/* Sizes from a hostile file are checked before anything is allocated. */
static void test_hostile_sizes(void **state)
{
	struct fixture *fx = *state;
	char *path = vault_file(fx, "alice");
	unsigned char *orig, *data;
	struct layout l;
	size_t size;
	int fd;

	make_small_store(fx);
	orig = read_file(path, &size);
	layout_of(orig, size, &l);
	data = trib_malloc(size);

	static const struct {
		uint32_t value;
		const char *what;
	} lens[] = {
		{ 0xffffffff, "record 1: length 4294967295 past the end" },
		{ 0x80000000, "record 1: length 2147483648 past the end" },
		{ 0, "record 1: bad length 0" },
		{ 10, "record 1: bad length 10" },
	};
	for (unsigned int i = 0; i < TRIB_N_ELEMENTS(lens); i++) {
		memcpy(data, orig, size);
		put_u32(data + l.len_at[0], lens[i].value);
		fix_checksum(data, size);
		write_file(path, data, size);
		assert_open_fails(fx, "alice", fx->key_a,
				  TRIB_VAULT_ERR_CORRUPT, lens[i].what);
	}
	memcpy(data, orig, size);
	put_u32(data + l.count, 0xffffffff);
	fix_checksum(data, size);
	write_file(path, data, size);
	assert_open_fails(fx, "alice", fx->key_a, TRIB_VAULT_ERR_CORRUPT,
			  "4294967295 records (at most 256)");
	memcpy(data, orig, size);
	put_u32(data + l.count, 3);
	fix_checksum(data, size);
	write_file(path, data, size);
	assert_open_fails(fx, "alice", fx->key_a, TRIB_VAULT_ERR_CORRUPT,
			  "record 3: truncated");
	memcpy(data, orig, size);
	put_u32(data + l.count, 1);
	fix_checksum(data, size);
	write_file(path, data, size);
	assert_open_fails(fx, "alice", fx->key_a, TRIB_VAULT_ERR_CORRUPT,
			  "stray bytes after the records");
	memcpy(data, orig, size);
	data[l.user_len] = 200;
	fix_checksum(data, size);
	write_file(path, data, size);
	assert_open_fails(fx, "alice", fx->key_a, TRIB_VAULT_ERR_CORRUPT,
			  "bad user name length");

	/* A 1 GB file (sparse): refused by its size, never read. */
	fd = open(path, O_WRONLY | O_TRUNC);
	assert_true(fd >= 0);
	assert_int_equal(ftruncate(fd, 1024LL * 1024 * 1024), 0);
	close(fd);
	assert_open_fails(fx, "alice", fx->key_a, TRIB_VAULT_ERR_CORRUPT,
			  "1073741824 bytes, more than any vault holds");
	free(orig);
	free(data);
	free(path);
}

static void test_unsupported_version(void **state)
{
	struct fixture *fx = *state;
	char *path = vault_file(fx, "alice");
	unsigned char *data;
	size_t size;

	make_small_store(fx);
	data = read_file(path, &size);
	put_u32(data + VAULT_MAGIC_SIZE, 2);
	fix_checksum(data, size);
	write_file(path, data, size);
	assert_open_fails(fx, "alice", fx->key_a, TRIB_VAULT_ERR_VERSION,
			  "/alice/vault: unsupported version 2 (this "
			  "Tributary reads version 1)");
	assert_file_is(path, data, size);
	free(data);
	free(path);
}

static void test_file_access_checked(void **state)
{
	struct fixture *fx = *state;
	char *path = vault_file(fx, "alice");
	char *userdir = trib_strdup_printf("%s/alice", fx->top);
	char *elsewhere = trib_strdup_printf("%s/elsewhere", fx->dir);
	char *tmp = trib_strdup_printf("%s/alice/vault.tmp", fx->top);
	struct stat st;
	struct uv uv;

	make_small_store(fx);
	for (mode_t mode = 0; mode <= 077; mode++) {
		if (mode == 0)
			continue;
		assert_int_equal(chmod(path, 0600 | mode), 0);
		assert_open_fails(fx, "alice", fx->key_a, TRIB_VAULT_ERR_ACCESS,
				  "gives group or others access");
	}
	assert_int_equal(chmod(path, 0644), 0);
	assert_open_fails(fx, "alice", fx->key_a, TRIB_VAULT_ERR_ACCESS,
			  "/alice/vault: mode 0644 gives group or others "
			  "access (refused: tokens must be private");
	assert_int_equal(chmod(path, 0400), 0);
	uv_open_ok(fx, "alice", fx->key_a, &uv);
	uv_close(&uv);
	assert_int_equal(chmod(path, 0600), 0);

	/* A directory others may write to. */
	assert_int_equal(chmod(userdir, 0770), 0);
	assert_open_fails(fx, "alice", fx->key_a, TRIB_VAULT_ERR_ACCESS,
			  "/alice: mode 0770 lets group or others replace "
			  "the vault");
	assert_int_equal(chmod(userdir, 0700), 0);

	/* A symbolic link, a directory in the vault's place. */
	assert_int_equal(rename(path, elsewhere), 0);
	assert_int_equal(symlink(elsewhere, path), 0);
	assert_open_fails(fx, "alice", fx->key_a, TRIB_VAULT_ERR_ACCESS,
			  "is a symbolic link (refused)");
	assert_int_equal(unlink(path), 0);
	assert_int_equal(mkdir(path, 0700), 0);
	assert_open_fails(fx, "alice", fx->key_a, TRIB_VAULT_ERR_ACCESS,
			  "not a regular file");
	assert_int_equal(rmdir(path), 0);
	assert_int_equal(rename(elsewhere, path), 0);

	/* A leftover temp file is removed at open. */
	write_file(tmp, "torn", 4);
	uv_open_ok(fx, "alice", fx->key_a, &uv);
	assert_int_not_equal(lstat(tmp, &st), 0);
	/* Root writes it owned like <user>/ (the tributary user). */
	if (geteuid() == 0) {
		assert_int_equal(chown(userdir, 65534, 65534), 0);
		set_ok(uv.vault, "work", TRIB_VAULT_APP_PASSWORD, "pw", 0);
		commit_ok(uv.vault);
		assert_int_equal(stat(path, &st), 0);
		assert_int_equal(st.st_uid, 65534);
		assert_int_equal(st.st_gid, 65534);
		assert_int_equal(st.st_mode & 07777, 0600);
	}
	uv_close(&uv);
	free(path);
	free(userdir);
	free(elsewhere);
	free(tmp);
}

/* ---- failed and interrupted commits ---- */

static void test_commit_failure_keeps_old(void **state)
{
	struct fixture *fx = *state;
	char *path = vault_file(fx, "alice");
	char *tmp = trib_strdup_printf("%s/alice/vault.tmp", fx->top);
	struct rlimit old_limit, limit;
	void (*old_handler)(int);
	unsigned char *before;
	const char *error = NULL;
	size_t before_size;
	struct stat st;
	struct uv uv;

	make_small_store(fx);
	before = read_file(path, &before_size);
	uv_open_ok(fx, "alice", fx->key_a, &uv);
	set_ok(uv.vault, "work", TRIB_VAULT_REFRESH_TOKEN, "rotated-token", 0);

	/* A full disk, as far as a write can tell: no file may grow past
	 * 64 bytes. */
	old_handler = signal(SIGXFSZ, SIG_IGN);
	assert_int_equal(getrlimit(RLIMIT_FSIZE, &old_limit), 0);
	limit = old_limit;
	limit.rlim_cur = 64;
	assert_int_equal(setrlimit(RLIMIT_FSIZE, &limit), 0);
	assert_int_equal(trib_vault_commit(uv.vault, &error),
			 TRIB_VAULT_ERR_IO);
	assert_int_equal(setrlimit(RLIMIT_FSIZE, &old_limit), 0);
	signal(SIGXFSZ, old_handler);
	if (strstr(error, "/alice/vault.tmp: write failed: File too large "
			  "(the previous vault is kept; the changes stay in "
			  "memory)") == NULL)
		fail_msg("unexpected error: %s", error);
	assert_null(strstr(error, "rotated"));
	assert_true(trib_vault_is_dirty(uv.vault));
	assert_int_not_equal(lstat(tmp, &st), 0);
	assert_file_is(path, before, before_size);

	/* The temp file cannot be made (a directory in its way). */
	assert_int_equal(mkdir(tmp, 0700), 0);
	assert_int_equal(trib_vault_commit(uv.vault, &error),
			 TRIB_VAULT_ERR_IO);
	assert_non_null(strstr(error, "/alice/vault.tmp: create failed: "));
	assert_file_is(path, before, before_size);
	assert_int_equal(rmdir(tmp), 0);

	/* The change is still there; the next commit writes it. */
	assert_secret(uv.vault, "work", TRIB_VAULT_REFRESH_TOKEN,
		      "rotated-token");
	commit_ok(uv.vault);
	uv_close(&uv);
	uv_open_ok(fx, "alice", fx->key_a, &uv);
	assert_secret(uv.vault, "work", TRIB_VAULT_REFRESH_TOKEN,
		      "rotated-token");
	assert_secret(uv.vault, "work", TRIB_VAULT_ACCESS_TOKEN, ACCESS);
	uv_close(&uv);
	free(before);
	free(path);
	free(tmp);
}

/* This program, for test_commit_killed's children (argv[0]: under
 * valgrind /proc/self/exe is valgrind itself). */
static const char *self_path;

/* Killed at each crash point of a commit: the old vault or the new one,
 * whole. */
static void test_commit_killed(void **state)
{
	static const struct {
		const char *point;
		bool new_one;
	} points[] = {
		{ "vault-temp-mid", false },
		{ "vault-before-rename", false },
		{ "vault-before-dir-fsync", true },
	};
	struct fixture *fx = *state;
	struct stat st;
	char *tmp;

	if (!trib_crash_points_enabled()) {
		skip();
		return;
	}
	tmp = trib_strdup_printf("%s/alice/vault.tmp", fx->top);
	make_small_store(fx);
	for (unsigned int i = 0; i < TRIB_N_ELEMENTS(points); i++) {
		char secret[64];
		struct uv uv;
		int status;
		pid_t pid;

		snprintf(secret, sizeof(secret), "new-token-%u", i);
		pid = fork();
		assert_true(pid >= 0);
		if (pid == 0) {
			/* A new process: crash points read their variable
			 * once, and this one has passed some already. */
			char *argv[] = { (char *)"test-vault",
					 (char *)"--crash-child", fx->top,
					 secret, NULL };

			setenv("TRIBUTARY_CRASH_AT", points[i].point, 1);
			execv(self_path, argv);
			_exit(4);
		}
		assert_int_equal(waitpid(pid, &status, 0), pid);
		if (!WIFSIGNALED(status) || WTERMSIG(status) != SIGKILL)
			fail_msg("%s: child not killed (status %d)",
				 points[i].point, status);
		assert_int_equal(lstat(tmp, &st) == 0, !points[i].new_one);
		uv_open_ok(fx, "alice", fx->key_a, &uv);
		assert_int_not_equal(lstat(tmp, &st), 0);
		assert_secret(uv.vault, "work", TRIB_VAULT_REFRESH_TOKEN,
			      points[i].new_one ? secret : REFRESH);
		assert_secret(uv.vault, "work", TRIB_VAULT_ACCESS_TOKEN,
			      ACCESS);
		/* Back to the old secret for the next point. */
		set_ok(uv.vault, "work", TRIB_VAULT_REFRESH_TOKEN, REFRESH, 0);
		commit_ok(uv.vault);
		uv_close(&uv);
	}
	free(tmp);
}

/* ---- the parser alone ---- */

static void test_parse_in_memory(void **state)
{
	struct fixture *fx = *state;
	struct trib_vault *v = trib_vault_create("alice", fx->key_a), *w;
	unsigned char *data, *again;
	const char *error = NULL;
	size_t size, size2;

	set_ok(v, "work", TRIB_VAULT_REFRESH_TOKEN, REFRESH, 0);
	set_ok(v, "home", TRIB_VAULT_ACCESS_TOKEN, ACCESS, 77);
	/* In memory only: no commit. */
	assert_int_equal(trib_vault_commit(v, &error), TRIB_VAULT_ERR_INVALID);
	assert_non_null(strstr(error, "in memory only"));
	data = trib_vault_file_serialize(v, &size);
	w = trib_vault_create("alice", fx->key_a);
	assert_int_equal(trib_vault_file_parse(w, data, size), TRIB_VAULT_OK);
	assert_int_equal(trib_vault_count(w), 2);
	assert_secret(w, "home", TRIB_VAULT_ACCESS_TOKEN, ACCESS);
	/* The same bytes again. */
	again = trib_vault_file_serialize(w, &size2);
	assert_int_equal(size, size2);
	assert_memory_equal(data, again, size);
	trib_vault_close(&w);
	/* Under another user or key. */
	w = trib_vault_create("bob", fx->key_a);
	assert_int_equal(trib_vault_file_parse(w, data, size),
			 TRIB_VAULT_ERR_TAMPERED);
	assert_int_equal(trib_vault_count(w), 0);
	trib_vault_close(&w);
	w = trib_vault_create("alice", fx->key_b);
	assert_int_equal(trib_vault_file_parse(w, data, size),
			 TRIB_VAULT_ERR_WRONG_KEY);
	trib_vault_close(&w);
	trib_vault_close(&v);
	assert_null(v);
	trib_vault_close(&v);
	free(data);
	free(again);
	assert_string_equal(trib_vault_error_name(TRIB_VAULT_ERR_TAMPERED),
			    "tampered");
	assert_string_equal(trib_vault_error_name(99), "unknown");
}

/* The child of test_commit_killed: commit secret as alice's refresh
 * token (killed on the way by TRIBUTARY_CRASH_AT). */
static int crash_child(const char *top, const char *secret)
{
	struct trib_vault_key *key = NULL;
	struct trib_state *state = NULL;
	struct trib_vault *vault = NULL;
	const char *error;

	if (trib_vault_key_parse(KEY_A_HEX, strlen(KEY_A_HEX), "test.key", &key,
				 &error) != TRIB_VAULT_OK ||
	    trib_state_open(top, "alice", &state, &error) < 0 ||
	    trib_vault_open(state, key, &vault, &error) != TRIB_VAULT_OK ||
	    trib_vault_set(vault, "work", TRIB_VAULT_REFRESH_TOKEN, secret, 0,
			   &error) != TRIB_VAULT_OK) {
		fprintf(stderr, "crash child: %s\n", error);
		return 2;
	}
	(void)trib_vault_commit(vault, &error);
	return 3; /* not killed */
}

int main(int argc, char **argv)
{
	if (argc == 4 && strcmp(argv[1], "--crash-child") == 0)
		return crash_child(argv[2], argv[3]);
	self_path = argv[0];

	const struct CMUnitTest tests[] = {
#define T(name) cmocka_unit_test_setup_teardown(name, setup, teardown)
		T(test_key_parse),
		T(test_key_load_checks),
		T(test_key_generate),
		T(test_round_trip_every_kind),
		T(test_many_records_and_caps),
		T(test_replace_delete_and_nonces),
		T(test_secret_ownership),
		T(test_second_open_refused),
		T(test_wrong_key),
		T(test_flipped_byte_everywhere),
		T(test_tampered_record_named),
		T(test_record_moved),
		T(test_truncated_every_length),
		T(test_hostile_sizes),
		T(test_unsupported_version),
		T(test_file_access_checked),
		T(test_commit_failure_keeps_old),
		T(test_commit_killed),
		T(test_parse_in_memory),
#undef T
	};

	return cmocka_run_group_tests(tests, NULL, NULL);
}
