/* vault.c: one user's token vault: open (under the state's lock), the
 * records in memory, commit. The file format is in vault-file.c, the key
 * and the cipher in vault-key.c. */

#include "vault-private.h"

#include "crash.h"
#include "settings.h"
#include "state.h"

#include <errno.h>
#include <fcntl.h>
#include <openssl/crypto.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

/* Vaults open in this process: one per state, so that two vault objects
 * never rewrite one file from two different copies. */
struct open_vault {
	struct open_vault *next;
	struct trib_vault *vault;
};
static struct open_vault *open_vaults;
static char open_error[1280];

static const char *const error_names[] = {
	[TRIB_VAULT_OK] = "ok",
	[TRIB_VAULT_ERR_KEY_MISSING] = "key missing",
	[TRIB_VAULT_ERR_KEY_ACCESS] = "key not private or unreadable",
	[TRIB_VAULT_ERR_KEY_INVALID] = "key invalid",
	[TRIB_VAULT_ERR_KEY_EXISTS] = "key exists",
	[TRIB_VAULT_ERR_WRONG_KEY] = "wrong key",
	[TRIB_VAULT_ERR_CORRUPT] = "corrupt",
	[TRIB_VAULT_ERR_TAMPERED] = "tampered",
	[TRIB_VAULT_ERR_VERSION] = "unsupported version",
	[TRIB_VAULT_ERR_ACCESS] = "not private or unreadable",
	[TRIB_VAULT_ERR_IO] = "I/O error",
	[TRIB_VAULT_ERR_INVALID] = "invalid call",
};

static const char *const kind_names[] = {
	[TRIB_VAULT_REFRESH_TOKEN] = "refresh_token",
	[TRIB_VAULT_ACCESS_TOKEN] = "access_token",
	[TRIB_VAULT_APP_PASSWORD] = "app_password",
};

const char *trib_vault_error_name(enum trib_vault_error error)
{
	if ((unsigned int)error >= TRIB_N_ELEMENTS(error_names))
		return "unknown";
	return error_names[error];
}

const char *trib_vault_kind_name(enum trib_vault_kind kind)
{
	if ((unsigned int)kind >= TRIB_N_ELEMENTS(kind_names))
		return NULL;
	return kind_names[kind];
}

static void one_line(char *str)
{
	for (char *p = str; *p != '\0'; p++) {
		if ((unsigned char)*p < 0x20 || *p == 0x7f)
			*p = '?';
	}
}

void trib_vault_set_error(struct trib_vault *vault, const char *fmt, ...)
{
	va_list args;

	free(vault->error);
	va_start(args, fmt);
	vault->error = trib_strdup_vprintf(fmt, args);
	va_end(args);
	one_line(vault->error);
}

static TRIB_ATTR_PRINTF(1, 2) const char *set_open_error(const char *fmt, ...)
{
	va_list args;

	va_start(args, fmt);
	vsnprintf(open_error, sizeof(open_error), fmt, args);
	va_end(args);
	one_line(open_error);
	return open_error;
}

struct trib_vault *trib_vault_create(const char *user,
				     const struct trib_vault_key *key)
{
	struct trib_vault *vault = trib_calloc(1, sizeof(*vault));

	vault->user = trib_strdup(user);
	vault->key = key;
	vault->dir_fd = -1;
	return vault;
}

void trib_vault_close(struct trib_vault **_vault)
{
	struct trib_vault *vault = *_vault;

	if (vault == NULL)
		return;
	for (struct open_vault **o = &open_vaults; *o != NULL;
	     o = &(*o)->next) {
		if ((*o)->vault == vault) {
			struct open_vault *dead = *o;

			*o = dead->next;
			free(dead);
			break;
		}
	}
	for (unsigned int i = 0; i < vault->count; i++)
		free(vault->records[i].ct);
	free(vault->records);
	if (vault->dir_fd >= 0)
		close(vault->dir_fd);
	free(vault->user);
	free(vault->dir_path);
	free(vault->path);
	free(vault->error);
	free(vault);
	*_vault = NULL;
}

/* ---- open ---- */

/* Read the whole vault file, or find it missing (*data_r NULL). */
static enum trib_vault_error load_file(struct trib_vault *vault,
				       unsigned char **data_r, size_t *size_r)
{
	struct stat st;
	unsigned char *data;
	size_t done = 0;
	int fd;

	*data_r = NULL;
	*size_r = 0;
	fd = openat(vault->dir_fd, VAULT_FILE,
		    O_RDONLY | O_NOFOLLOW | O_NONBLOCK | O_CLOEXEC);
	if (fd < 0 && errno == ENOENT)
		return TRIB_VAULT_OK;
	if (fd < 0 && errno == ELOOP) {
		set_open_error("vault %s: is a symbolic link (refused)",
			       vault->path);
		return TRIB_VAULT_ERR_ACCESS;
	}
	if (fd < 0) {
		set_open_error("vault %s: cannot open: %s", vault->path,
			       strerror(errno));
		return errno == EACCES ? TRIB_VAULT_ERR_ACCESS
				       : TRIB_VAULT_ERR_IO;
	}
	if (fstat(fd, &st) < 0 || !S_ISREG(st.st_mode)) {
		set_open_error("vault %s: not a regular file", vault->path);
		close(fd);
		return TRIB_VAULT_ERR_ACCESS;
	}
	if ((st.st_mode & (S_IRWXG | S_IRWXO)) != 0) {
		set_open_error("vault %s: mode %04o gives group or others "
			       "access (refused: tokens must be private; "
			       "chmod 600 it)",
			       vault->path, (unsigned int)(st.st_mode & 07777));
		close(fd);
		return TRIB_VAULT_ERR_ACCESS;
	}
	if (st.st_size > VAULT_FILE_MAX) {
		set_open_error("vault %s: %lld bytes, more than any vault "
			       "holds (at most %d; corrupted?)",
			       vault->path, (long long)st.st_size,
			       VAULT_FILE_MAX);
		close(fd);
		return TRIB_VAULT_ERR_CORRUPT;
	}
	data = trib_malloc((size_t)st.st_size + 1);
	while (done < (size_t)st.st_size) {
		ssize_t ret = read(fd, data + done, (size_t)st.st_size - done);

		if (ret < 0 && errno == EINTR)
			continue;
		if (ret <= 0) {
			set_open_error("vault %s: read failed: %s", vault->path,
				       ret < 0 ? strerror(errno)
					       : "the file shrank while read");
			free(data);
			close(fd);
			return TRIB_VAULT_ERR_IO;
		}
		done += (size_t)ret;
	}
	close(fd);
	*data_r = data;
	*size_r = done;
	return TRIB_VAULT_OK;
}

static enum trib_vault_error open_dir(struct trib_vault *vault)
{
	struct stat st;

	vault->dir_fd = open(vault->dir_path,
			     O_RDONLY | O_DIRECTORY | O_NOFOLLOW | O_CLOEXEC);
	if (vault->dir_fd < 0) {
		set_open_error("vault %s: cannot open: %s", vault->dir_path,
			       strerror(errno));
		return TRIB_VAULT_ERR_IO;
	}
	if (fstat(vault->dir_fd, &st) < 0) {
		set_open_error("vault %s: fstat failed: %s", vault->dir_path,
			       strerror(errno));
		return TRIB_VAULT_ERR_IO;
	}
	if ((st.st_mode & (S_IWGRP | S_IWOTH)) != 0) {
		set_open_error("vault %s: mode %04o lets group or others "
			       "replace the vault (refused: chmod 700 it)",
			       vault->dir_path,
			       (unsigned int)(st.st_mode & 07777));
		return TRIB_VAULT_ERR_ACCESS;
	}
	return TRIB_VAULT_OK;
}

enum trib_vault_error trib_vault_open(struct trib_state *state,
				      const struct trib_vault_key *key,
				      struct trib_vault **vault_r,
				      const char **error_r)
{
	struct trib_vault *vault;
	struct open_vault *o;
	enum trib_vault_error ret;
	unsigned char *data = NULL;
	size_t size = 0;

	*vault_r = NULL;
	*error_r = open_error;
	for (o = open_vaults; o != NULL; o = o->next) {
		if (o->vault->state == state) {
			set_open_error("vault %s: already open in this "
				       "process",
				       o->vault->path);
			return TRIB_VAULT_ERR_INVALID;
		}
	}
	vault = trib_vault_create(trib_state_user(state), key);
	vault->state = state;
	vault->dir_path = trib_strdup(trib_state_path(state));
	vault->path = trib_strdup_printf("%s/%s", vault->dir_path, VAULT_FILE);
	ret = open_dir(vault);
	if (ret == TRIB_VAULT_OK) {
		/* A commit that died before its rename; the state's lock
		 * says nobody else is writing it. */
		(void)unlinkat(vault->dir_fd, VAULT_TEMP_FILE, 0);
		ret = load_file(vault, &data, &size);
	}
	if (ret == TRIB_VAULT_OK && data != NULL) {
		ret = trib_vault_file_parse(vault, data, size);
		free(data);
		if (ret == TRIB_VAULT_ERR_WRONG_KEY ||
		    ret == TRIB_VAULT_ERR_VERSION)
			set_open_error("vault %s: %s", vault->path,
				       vault->error);
		else if (ret != TRIB_VAULT_OK)
			set_open_error("vault %s: %s; refusing it: restore it "
				       "or move it away (its accounts then "
				       "need `tributary authorize` again)",
				       vault->path, vault->error);
	}
	if (ret != TRIB_VAULT_OK) {
		trib_vault_close(&vault);
		return ret;
	}
	o = trib_calloc(1, sizeof(*o));
	o->vault = vault;
	o->next = open_vaults;
	open_vaults = o;
	*vault_r = vault;
	*error_r = NULL;
	return TRIB_VAULT_OK;
}

/* ---- records ---- */

/* For errors: the path, or the user of a vault in memory. */
static const char *vault_name(const struct trib_vault *vault)
{
	return vault->path != NULL ? vault->path : vault->user;
}

static bool valid_call(struct trib_vault *vault, const char *account,
		       enum trib_vault_kind kind)
{
	if (!trib_settings_valid_account_name(account)) {
		trib_vault_set_error(vault,
				     "vault %s: invalid account name (not "
				     "[a-z0-9_-]{1,32})",
				     vault_name(vault));
		return false;
	}
	if (trib_vault_kind_name(kind) == NULL) {
		trib_vault_set_error(vault, "vault %s: unknown kind %d",
				     vault_name(vault), (int)kind);
		return false;
	}
	return true;
}

/* The index of (account, kind), or where it would go (*found_r false). */
static unsigned int record_search(const struct trib_vault *vault,
				  const char *account,
				  enum trib_vault_kind kind, bool *found_r)
{
	unsigned int lo = 0, hi = vault->count;

	while (lo < hi) {
		unsigned int mid = lo + (hi - lo) / 2;
		const struct vault_record *rec = &vault->records[mid];
		int cmp = strcmp(rec->account, account);

		if (cmp == 0)
			cmp = (int)rec->kind - (int)kind;
		if (cmp == 0) {
			*found_r = true;
			return mid;
		}
		if (cmp < 0)
			lo = mid + 1;
		else
			hi = mid;
	}
	*found_r = false;
	return lo;
}

static void record_info(const struct vault_record *rec,
			struct trib_vault_info *info_r)
{
	if (info_r == NULL)
		return;
	memset(info_r, 0, sizeof(*info_r));
	info_r->kind = rec->kind;
	memcpy(info_r->account, rec->account, sizeof(info_r->account));
	info_r->stored_at = rec->stored_at;
	info_r->expires_at = rec->expires_at;
}

bool trib_vault_find(const struct trib_vault *vault, const char *account,
		     enum trib_vault_kind kind, struct trib_vault_info *info_r)
{
	unsigned int idx;
	bool found;

	idx = record_search(vault, account, kind, &found);
	if (found)
		record_info(&vault->records[idx], info_r);
	return found;
}

int trib_vault_get(struct trib_vault *vault, const char *account,
		   enum trib_vault_kind kind, char **secret_r,
		   struct trib_vault_info *info_r, const char **error_r)
{
	unsigned char aad[VAULT_AAD_MAX], *plain;
	const struct vault_record *rec;
	unsigned int idx;
	size_t aad_len;
	bool found;

	*secret_r = NULL;
	*error_r = NULL;
	if (!valid_call(vault, account, kind)) {
		*error_r = vault->error;
		return -1;
	}
	idx = record_search(vault, account, kind, &found);
	if (!found)
		return 0;
	rec = &vault->records[idx];
	aad_len = trib_vault_record_aad(vault, rec, aad);
	plain = trib_malloc(rec->ct_len + 1);
	if (!trib_vault_key_unseal(vault->key, aad, aad_len, rec->nonce,
				   rec->ct, rec->ct_len, rec->tag, plain)) {
		free(plain);
		trib_vault_set_error(vault,
				     "vault %s: %s %s: authentication failed "
				     "(damaged in memory)",
				     vault_name(vault), rec->account,
				     trib_vault_kind_name(rec->kind));
		*error_r = vault->error;
		return -1;
	}
	plain[rec->ct_len] = '\0';
	record_info(rec, info_r);
	*secret_r = (char *)plain;
	return 1;
}

enum trib_vault_error trib_vault_set(struct trib_vault *vault,
				     const char *account,
				     enum trib_vault_kind kind,
				     const char *secret, int64_t expires_at,
				     const char **error_r)
{
	unsigned char aad[VAULT_AAD_MAX];
	struct vault_record *rec, new_rec;
	const char *what = NULL;
	size_t len, aad_len;
	unsigned int idx;
	bool found;

	*error_r = NULL;
	if (!valid_call(vault, account, kind)) {
		*error_r = vault->error;
		return TRIB_VAULT_ERR_INVALID;
	}
	len = strnlen(secret, TRIB_VAULT_SECRET_MAX + 1);
	if (len == 0)
		what = "empty secret";
	else if (len > TRIB_VAULT_SECRET_MAX)
		what = "secret too long";
	else if (expires_at < 0)
		what = "negative expiry time";
	if (what != NULL) {
		trib_vault_set_error(vault,
				     "vault %s: %s %s: %s (1 to %d bytes, "
				     "expiry 0 or a time)",
				     vault_name(vault), account,
				     trib_vault_kind_name(kind), what,
				     TRIB_VAULT_SECRET_MAX);
		*error_r = vault->error;
		return TRIB_VAULT_ERR_INVALID;
	}
	idx = record_search(vault, account, kind, &found);
	if (!found && vault->count >= TRIB_VAULT_RECORDS_MAX) {
		trib_vault_set_error(vault,
				     "vault %s: full (%d records at most)",
				     vault_name(vault), TRIB_VAULT_RECORDS_MAX);
		*error_r = vault->error;
		return TRIB_VAULT_ERR_INVALID;
	}

	memset(&new_rec, 0, sizeof(new_rec));
	new_rec.kind = kind;
	memcpy(new_rec.account, account, strlen(account) + 1);
	memcpy(new_rec.key_id, trib_vault_key_id_raw(vault->key),
	       VAULT_KEY_ID_SIZE);
	new_rec.stored_at = (int64_t)time(NULL);
	new_rec.expires_at = expires_at;
	new_rec.ct_len = len;
	new_rec.ct = trib_malloc(len);
	aad_len = trib_vault_record_aad(vault, &new_rec, aad);
	trib_vault_key_seal(vault->key, aad, aad_len,
			    (const unsigned char *)secret, len, new_rec.nonce,
			    new_rec.ct, new_rec.tag);

	if (found) {
		free(vault->records[idx].ct);
	} else {
		if (vault->count == vault->alloc) {
			vault->alloc = vault->alloc == 0 ? 8 : vault->alloc * 2;
			vault->records = trib_realloc(
				vault->records,
				vault->alloc * sizeof(*vault->records));
		}
		memmove(vault->records + idx + 1, vault->records + idx,
			(vault->count - idx) * sizeof(*vault->records));
		vault->count++;
	}
	rec = &vault->records[idx];
	*rec = new_rec;
	vault->dirty = true;
	return TRIB_VAULT_OK;
}

static void record_remove(struct trib_vault *vault, unsigned int idx)
{
	free(vault->records[idx].ct);
	memmove(vault->records + idx, vault->records + idx + 1,
		(vault->count - idx - 1) * sizeof(*vault->records));
	vault->count--;
	vault->dirty = true;
}

bool trib_vault_delete(struct trib_vault *vault, const char *account,
		       enum trib_vault_kind kind)
{
	unsigned int idx;
	bool found;

	idx = record_search(vault, account, kind, &found);
	if (found)
		record_remove(vault, idx);
	return found;
}

unsigned int trib_vault_delete_account(struct trib_vault *vault,
				       const char *account)
{
	unsigned int removed = 0;

	for (unsigned int i = vault->count; i > 0; i--) {
		if (strcmp(vault->records[i - 1].account, account) == 0) {
			record_remove(vault, i - 1);
			removed++;
		}
	}
	return removed;
}

unsigned int trib_vault_count(const struct trib_vault *vault)
{
	return vault->count;
}

bool trib_vault_info_at(const struct trib_vault *vault, unsigned int idx,
			struct trib_vault_info *info_r)
{
	if (idx >= vault->count)
		return false;
	record_info(&vault->records[idx], info_r);
	return true;
}

bool trib_vault_is_dirty(const struct trib_vault *vault)
{
	return vault->dirty;
}

const char *trib_vault_path(const struct trib_vault *vault)
{
	return vault->path;
}

/* ---- commit ---- */

static TRIB_ATTR_PRINTF(2, 3) enum trib_vault_error
	commit_fail(struct trib_vault *vault, const char *fmt, ...)
{
	va_list args;
	char *what;

	va_start(args, fmt);
	what = trib_strdup_vprintf(fmt, args);
	va_end(args);
	trib_vault_set_error(vault,
			     "vault %s/%s: %s (the previous vault is kept; "
			     "the changes stay in memory)",
			     vault->dir_path, VAULT_TEMP_FILE, what);
	free(what);
	(void)unlinkat(vault->dir_fd, VAULT_TEMP_FILE, 0);
	return TRIB_VAULT_ERR_IO;
}

/* The new file gets the owner of <user>/ (the tributary user) when root
 * writes it, so that `tributary sync` run as root leaves the daemon a
 * vault it can read. */
static int temp_set_owner(struct trib_vault *vault, int fd)
{
	struct stat st;

	if (geteuid() != 0)
		return 0;
	if (fstat(vault->dir_fd, &st) < 0)
		return -1;
	if (st.st_uid == 0)
		return 0;
	return fchown(fd, st.st_uid, st.st_gid);
}

static enum trib_vault_error write_temp(struct trib_vault *vault,
					const unsigned char *data, size_t size)
{
	size_t half = size / 2, done = 0;
	int fd;

	fd = openat(vault->dir_fd, VAULT_TEMP_FILE,
		    O_WRONLY | O_CREAT | O_TRUNC | O_NOFOLLOW | O_CLOEXEC,
		    0600);
	if (fd < 0)
		return commit_fail(vault, "create failed: %s", strerror(errno));
	if (fchmod(fd, 0600) < 0 || temp_set_owner(vault, fd) < 0) {
		close(fd);
		return commit_fail(vault, "cannot set mode 0600 and owner: %s",
				   strerror(errno));
	}
	while (done < size) {
		size_t chunk = (done < half ? half : size) - done;
		ssize_t ret = write(fd, data + done, chunk);

		if (ret < 0 && errno == EINTR)
			continue;
		if (ret <= 0) {
			if (ret == 0)
				errno = EIO;
			close(fd);
			return commit_fail(vault, "write failed: %s",
					   strerror(errno));
		}
		done += (size_t)ret;
		if (done == half)
			TRIB_CRASH_POINT("vault-temp-mid");
	}
	if (fsync(fd) < 0) {
		close(fd);
		return commit_fail(vault, "fsync failed: %s", strerror(errno));
	}
	if (close(fd) < 0)
		return commit_fail(vault, "close failed: %s", strerror(errno));
	return TRIB_VAULT_OK;
}

enum trib_vault_error trib_vault_commit(struct trib_vault *vault,
					const char **error_r)
{
	enum trib_vault_error ret;
	unsigned char *data;
	size_t size;

	*error_r = NULL;
	if (!vault->dirty)
		return TRIB_VAULT_OK;
	if (vault->dir_fd < 0) {
		trib_vault_set_error(vault, "vault of %s: in memory only",
				     vault->user);
		*error_r = vault->error;
		return TRIB_VAULT_ERR_INVALID;
	}
	data = trib_vault_file_serialize(vault, &size);
	ret = write_temp(vault, data, size);
	free(data);
	if (ret != TRIB_VAULT_OK) {
		*error_r = vault->error;
		return ret;
	}
	TRIB_CRASH_POINT("vault-before-rename");
	if (renameat(vault->dir_fd, VAULT_TEMP_FILE, vault->dir_fd,
		     VAULT_FILE) < 0) {
		ret = commit_fail(vault, "rename to %s failed: %s", VAULT_FILE,
				  strerror(errno));
		*error_r = vault->error;
		return ret;
	}
	/* The new vault is in place: from here on, no undoing. */
	TRIB_CRASH_POINT("vault-before-dir-fsync");
	if (fsync(vault->dir_fd) < 0) {
		/* Not known to be durable: written again next time. */
		trib_vault_set_error(vault,
				     "vault %s: fsync of %s failed: %s (the "
				     "new vault is written but may not be "
				     "durable yet)",
				     vault->path, vault->dir_path,
				     strerror(errno));
		*error_r = vault->error;
		return TRIB_VAULT_ERR_IO;
	}
	vault->dirty = false;
	return TRIB_VAULT_OK;
}
