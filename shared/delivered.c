/* delivered.c: the delivered record (delivered.h): creating and growing
 * it, locking, lookups and marks (the file format is delivered-file.c). */

#include "delivered-private.h"

#include "fileio.h"

#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

/* ---- opening and locking ---- */

/* Create an empty record at path, unless one appears meanwhile. */
static int rec_create(const char *path, const char **error_r)
{
	struct header h = { TRIB_DELIVERED_INITIAL_CAPACITY, 0, 0 };
	char *tmp = trib_strdup_printf("%s.new.%ld", path, (long)getpid());
	int fd, ret = -1;

	fd = open(tmp, O_RDWR | O_CREAT | O_EXCL | O_CLOEXEC, 0600);
	if (fd < 0 && errno == EEXIST) {
		/* left by a killed process that had our pid */
		(void)unlink(tmp);
		fd = open(tmp, O_RDWR | O_CREAT | O_EXCL | O_CLOEXEC, 0600);
	}
	if (fd < 0) {
		*error_r = trib_dlv_fail(path, "create %s: %s", tmp,
					 strerror(errno));
		free(tmp);
		return -1;
	}
	if (trib_dlv_table_init(fd, path, &h, error_r) < 0)
		;
	else if (fsync(fd) < 0)
		*error_r = trib_dlv_fail(path, "fsync: %s", strerror(errno));
	else if (link(tmp, path) < 0 && errno != EEXIST)
		*error_r = trib_dlv_fail(path, "link from %s: %s", tmp,
					 strerror(errno));
	else
		ret = 0;
	close(fd);
	(void)unlink(tmp);
	free(tmp);
	if (ret == 0)
		ret = trib_dlv_fsync_dir(path, error_r);
	return ret;
}

static int rec_open_fd(struct trib_delivered *rec, const char **error_r)
{
	bool readonly = (rec->flags & TRIB_DELIVERED_FLAG_READONLY) != 0;

	for (unsigned int i = 0; i < REPLACED_RETRIES; i++) {
		rec->fd = open(rec->path,
			       (readonly ? O_RDONLY : O_RDWR) | O_CLOEXEC);
		if (rec->fd >= 0)
			return 0;
		if (errno != ENOENT || readonly) {
			*error_r = trib_dlv_fail(rec->path, "open: %s",
						 strerror(errno));
			return -1;
		}
		if (rec_create(rec->path, error_r) < 0)
			return -1;
	}
	*error_r = trib_dlv_fail(rec->path, "open: it keeps disappearing");
	return -1;
}

static void rec_unlock(struct trib_delivered *rec)
{
	if (rec->fd >= 0)
		trib_dlv_fd_unlock(rec->fd);
}

/* Lock the file at rec->path (F_RDLCK or F_WRLCK), following it when it
 * was replaced, and read its header. */
static int rec_lock(struct trib_delivered *rec, short type, struct header *h,
		    const char **error_r)
{
	unsigned char buf[HEADER_SIZE];
	struct stat st, fst;
	unsigned int tries = 0;
	ssize_t got;

	for (;;) {
		if (rec->fd < 0 && rec_open_fd(rec, error_r) < 0)
			return -1;
		if (trib_dlv_fd_lock(rec->fd, type) < 0) {
			*error_r = trib_dlv_fail(rec->path, "lock: %s",
						 strerror(errno));
			return -1;
		}
		if (fstat(rec->fd, &fst) < 0) {
			*error_r = trib_dlv_fail(rec->path, "fstat: %s",
						 strerror(errno));
			rec_unlock(rec);
			return -1;
		}
		if (stat(rec->path, &st) == 0) {
			if (st.st_dev == fst.st_dev && st.st_ino == fst.st_ino)
				break;
		} else if (errno != ENOENT) {
			*error_r = trib_dlv_fail(rec->path, "stat: %s",
						 strerror(errno));
			rec_unlock(rec);
			return -1;
		}
		/* grown by another process (or removed): the new file */
		close(rec->fd);
		rec->fd = -1;
		if (++tries >= REPLACED_RETRIES) {
			*error_r = trib_dlv_fail(rec->path,
						 "lock: the file keeps being "
						 "replaced");
			return -1;
		}
	}
	got = trib_dlv_pread_full(rec->fd, buf, sizeof(buf), 0);
	if (got < 0) {
		*error_r =
			trib_dlv_fail(rec->path, "read: %s", strerror(errno));
	} else if (trib_dlv_header_decode(rec->path, buf, (size_t)got,
					  (uint64_t)fst.st_size, h,
					  error_r) == 0) {
		return 0;
	}
	rec_unlock(rec);
	return -1;
}

/* ---- growing ---- */

/* The ids in the table (not counting the zero id), counted. */
static int table_count(int fd, const char *path, uint64_t capacity,
		       unsigned char *buf, uint64_t *count_r,
		       const char **error_r)
{
	uint64_t count = 0;

	for (uint64_t slot = 0; slot < capacity; slot += COPY_SLOTS) {
		uint64_t n = capacity - slot < COPY_SLOTS ? capacity - slot
							  : COPY_SLOTS;
		ssize_t got = trib_dlv_pread_full(
			fd, buf, n * SLOT_SIZE, HEADER_SIZE + slot * SLOT_SIZE);

		if (got < 0 || (uint64_t)got != n * SLOT_SIZE) {
			*error_r = got < 0 ? trib_dlv_fail(path, "read: %s",
							   strerror(errno))
					   : trib_dlv_corrupt(
						     path, "shorter than its "
							   "table");
			return -1;
		}
		for (uint64_t i = 0; i < n; i++) {
			if (!trib_dlv_is_zero(buf + i * SLOT_SIZE, SLOT_SIZE))
				count++;
		}
	}
	*count_r = count;
	return 0;
}

/* Copy every id of the locked table (h) into the new table in tfd
 * (nh, its count updated). */
static int table_copy(struct trib_delivered *rec, const struct header *h,
		      int tfd, const char *tmp, struct header *nh,
		      unsigned char *buf, const char **error_r)
{
	for (uint64_t slot = 0; slot < h->capacity; slot += COPY_SLOTS) {
		uint64_t n = h->capacity - slot < COPY_SLOTS
				     ? h->capacity - slot
				     : COPY_SLOTS;
		ssize_t got =
			trib_dlv_pread_full(rec->fd, buf, n * SLOT_SIZE,
					    HEADER_SIZE + slot * SLOT_SIZE);

		if (got < 0 || (uint64_t)got != n * SLOT_SIZE) {
			*error_r =
				got < 0 ? trib_dlv_fail(rec->path, "read: %s",
							strerror(errno))
					: trib_dlv_corrupt(rec->path,
							   "shorter than "
							   "its table");
			return -1;
		}
		for (uint64_t i = 0; i < n; i++) {
			const unsigned char *id = buf + i * SLOT_SIZE;
			uint64_t to;
			int ret;

			if (trib_dlv_is_zero(id, SLOT_SIZE))
				continue;
			ret = trib_dlv_table_find(tfd, tmp, nh->capacity, id,
						  &to, error_r);
			if (ret < 0)
				return -1;
			if (ret > 0)
				continue; /* twice in the old table */
			if (to == NO_SLOT) {
				*error_r = trib_dlv_fail(
					rec->path, "growing: the new table "
						   "filled up");
				return -1;
			}
			if (trib_dlv_slot_write(tfd, tmp, to, id, error_r) < 0)
				return -1;
			nh->count++;
		}
	}
	return 0;
}

/* Replace the write-locked record (h) with a table big enough for one
 * more id than it holds; on success rec->fd is the new file, locked, and
 * *h its header. */
static int rec_grow(struct trib_delivered *rec, struct header *h,
		    const char **error_r)
{
	unsigned char *buf = trib_malloc(COPY_SLOTS * SLOT_SIZE);
	struct header nh;
	struct stat st;
	uint64_t used;
	char *tmp = NULL;
	int tfd = -1, ret = -1;

	if (table_count(rec->fd, rec->path, h->capacity, buf, &used, error_r) <
	    0)
		goto out;
	nh.capacity = h->capacity;
	nh.flags = h->flags;
	nh.count = 0;
	while (used + 1 > trib_dlv_soft_limit(nh.capacity) &&
	       nh.capacity < CAPACITY_MAX)
		nh.capacity *= 2;
	if (used + 1 > trib_dlv_hard_limit(nh.capacity)) {
		*error_r = trib_dlv_fail(rec->path, "full (%" PRIu64 " ids)",
					 used);
		goto out;
	}
	if (nh.capacity == h->capacity) {
		/* only the count was behind (a mark cut short) */
		h->count = used + ((h->flags & FLAG_ZERO_ID) != 0 ? 1 : 0);
		ret = trib_dlv_header_write(rec->fd, rec->path, h, error_r);
		goto out;
	}
	tmp = trib_strdup_printf("%s.grow", rec->path);
	tfd = open(tmp, O_RDWR | O_CREAT | O_TRUNC | O_CLOEXEC, 0600);
	if (tfd < 0) {
		*error_r = trib_dlv_fail(rec->path, "create %s: %s", tmp,
					 strerror(errno));
		goto out;
	}
	if (fstat(rec->fd, &st) == 0) {
		/* the same owner (when root grows it) and mode; only root
		 * can fail to give it, and then the file was ours */
		if (fchown(tfd, st.st_uid, st.st_gid) < 0)
			st.st_mode &= 0700;
		(void)fchmod(tfd, st.st_mode & 0777);
	}
	if (trib_dlv_fd_lock(tfd, F_WRLCK) < 0) {
		*error_r = trib_dlv_fail(rec->path, "lock %s: %s", tmp,
					 strerror(errno));
		goto out;
	}
	if (trib_dlv_table_init(tfd, rec->path, &nh, error_r) < 0 ||
	    table_copy(rec, h, tfd, tmp, &nh, buf, error_r) < 0)
		goto out;
	if ((nh.flags & FLAG_ZERO_ID) != 0)
		nh.count++;
	if (trib_dlv_header_write(tfd, rec->path, &nh, error_r) < 0)
		goto out;
	if (fsync(tfd) < 0) {
		*error_r = trib_dlv_fail(rec->path, "fsync %s: %s", tmp,
					 strerror(errno));
		goto out;
	}
	if (rename(tmp, rec->path) < 0) {
		*error_r = trib_dlv_fail(rec->path, "rename from %s: %s", tmp,
					 strerror(errno));
		goto out;
	}
	free(tmp);
	tmp = NULL;
	/* Closing the old file drops its lock: waiters find it replaced
	 * and queue on the new one, which we hold. */
	close(rec->fd);
	rec->fd = tfd;
	tfd = -1;
	*h = nh;
	ret = trib_dlv_fsync_dir(rec->path, error_r);
out:
	if (tfd >= 0)
		close(tfd);
	if (tmp != NULL) {
		(void)unlink(tmp);
		free(tmp);
	}
	free(buf);
	return ret;
}

/* ---- the API ---- */

int trib_delivered_open(const char *path, enum trib_delivered_flags flags,
			struct trib_delivered **rec_r, const char **error_r)
{
	struct trib_delivered *rec;

	if (path == NULL || path[0] == '\0') {
		*error_r = "delivered record: no path";
		return -1;
	}
	rec = trib_calloc(1, sizeof(*rec));
	rec->path = trib_strdup(path);
	rec->flags = flags;
	rec->claim_fd = -1;
	if (rec_open_fd(rec, error_r) < 0) {
		trib_delivered_close(&rec);
		return -1;
	}
	*rec_r = rec;
	return 0;
}

void trib_delivered_close(struct trib_delivered **_rec)
{
	struct trib_delivered *rec = *_rec;

	if (rec == NULL)
		return;
	*_rec = NULL;
	if (rec->fd >= 0)
		close(rec->fd);
	/* drops the claim */
	if (rec->claim_fd >= 0)
		close(rec->claim_fd);
	free(rec->path);
	free(rec);
}

const char *trib_delivered_get_path(const struct trib_delivered *rec)
{
	return rec->path;
}

/* Under any lock: 1 present, 0 absent (*need_room_r: one more id would
 * pass the soft limit), -1 error. */
static int lookup_locked(struct trib_delivered *rec, const struct header *h,
			 const unsigned char *id, bool *need_room_r,
			 const char **error_r)
{
	uint64_t slot;
	int ret;

	*need_room_r = false;
	if (trib_dlv_is_zero(id, SLOT_SIZE))
		return (h->flags & FLAG_ZERO_ID) != 0 ? 1 : 0;
	ret = trib_dlv_table_find(rec->fd, rec->path, h->capacity, id, &slot,
				  error_r);
	if (ret == 0)
		*need_room_r = slot == NO_SLOT ||
			       h->count + 1 > trib_dlv_soft_limit(h->capacity);
	return ret;
}

/* Claim id for this handle: wait while another handle (any process)
 * has it claimed. The previous claim of this handle is let go. */
static int rec_claim(struct trib_delivered *rec, const unsigned char *id,
		     const char **error_r)
{
	uint64_t offset = trib_dlv_get_le64(id + 8) & (CLAIM_BYTES - 1);
	char *lock_path;

	if (rec->claimed) {
		if (rec->claim_offset == offset)
			return 0;
		trib_dlv_range_unlock(rec->claim_fd, rec->claim_offset, 1);
		rec->claimed = false;
	}
	if (rec->claim_fd < 0) {
		lock_path = trib_strdup_printf("%s.lock", rec->path);
		rec->claim_fd =
			open(lock_path, O_RDWR | O_CREAT | O_CLOEXEC, 0600);
		if (rec->claim_fd < 0) {
			*error_r = trib_dlv_fail(rec->path, "open %s: %s",
						 lock_path, strerror(errno));
			free(lock_path);
			return -1;
		}
		free(lock_path);
	}
	if (trib_dlv_range_lock(rec->claim_fd, F_WRLCK, offset, 1) < 0) {
		*error_r = trib_dlv_fail(rec->path, "claim lock: %s",
					 strerror(errno));
		return -1;
	}
	rec->claimed = true;
	rec->claim_offset = offset;
	return 0;
}

int trib_delivered_lookup(struct trib_delivered *rec,
			  const unsigned char id[TRIB_DELIVERED_ID_SIZE],
			  const char **error_r)
{
	struct header h;
	bool need_room;
	int ret;

	if ((rec->flags & TRIB_DELIVERED_FLAG_READONLY) == 0 &&
	    rec_claim(rec, id, error_r) < 0)
		return -1;
	if (rec_lock(rec, F_RDLCK, &h, error_r) < 0)
		return -1;
	ret = lookup_locked(rec, &h, id, &need_room, error_r);
	rec_unlock(rec);
	if (ret != 0 || !need_room ||
	    (rec->flags & TRIB_DELIVERED_FLAG_READONLY) != 0)
		return ret;

	/* Make room while nothing has been delivered yet: a read lock
	 * cannot be upgraded without the risk of two readers waiting for
	 * each other, so let go and take the write lock. */
	if (rec_lock(rec, F_WRLCK, &h, error_r) < 0)
		return -1;
	ret = lookup_locked(rec, &h, id, &need_room, error_r);
	if (ret == 0 && need_room && rec_grow(rec, &h, error_r) < 0)
		ret = -1;
	rec_unlock(rec);
	return ret;
}

static int mark_locked(struct trib_delivered *rec, struct header *h,
		       const unsigned char *id, const char **error_r)
{
	uint64_t slot;
	int ret;

	if (trib_dlv_is_zero(id, SLOT_SIZE)) {
		if ((h->flags & FLAG_ZERO_ID) != 0)
			return 0;
		h->flags |= FLAG_ZERO_ID;
	} else {
		ret = trib_dlv_table_find(rec->fd, rec->path, h->capacity, id,
					  &slot, error_r);
		if (ret != 0)
			return ret < 0 ? -1 : 0;
		if (slot == NO_SLOT ||
		    h->count + 1 > trib_dlv_hard_limit(h->capacity)) {
			if (rec_grow(rec, h, error_r) < 0)
				return -1;
			ret = trib_dlv_table_find(rec->fd, rec->path,
						  h->capacity, id, &slot,
						  error_r);
			if (ret != 0)
				return ret < 0 ? -1 : 0;
			if (slot == NO_SLOT) {
				*error_r = trib_dlv_fail(rec->path,
							 "no free slot after "
							 "growing");
				return -1;
			}
		}
		if (trib_dlv_slot_write(rec->fd, rec->path, slot, id, error_r) <
		    0)
			return -1;
	}
	h->count++;
	if (trib_dlv_header_write(rec->fd, rec->path, h, error_r) < 0)
		return -1;
	return 1;
}

int trib_delivered_mark(struct trib_delivered *rec,
			const unsigned char id[TRIB_DELIVERED_ID_SIZE],
			const char **error_r)
{
	struct header h;
	int ret;

	if ((rec->flags & TRIB_DELIVERED_FLAG_READONLY) != 0) {
		*error_r = trib_dlv_fail(rec->path, "opened read-only");
		return -1;
	}
	if (rec_lock(rec, F_WRLCK, &h, error_r) < 0)
		return -1;
	ret = mark_locked(rec, &h, id, error_r);
	rec_unlock(rec);
	/* Durable before the caller goes on, but flushed outside the lock:
	 * the other sessions of the user need not wait for this disk
	 * flush (what they read is the page cache, already updated). If
	 * the file was grown meanwhile, the grower copied this slot and
	 * flushed its new file itself. */
	if (ret > 0 && fdatasync(rec->fd) < 0) {
		*error_r = trib_dlv_fail(rec->path, "fdatasync: %s",
					 strerror(errno));
		return -1;
	}
	return ret;
}

int trib_delivered_count(struct trib_delivered *rec, uint64_t *count_r,
			 uint64_t *capacity_r, const char **error_r)
{
	struct header h;

	if (rec_lock(rec, F_RDLCK, &h, error_r) < 0)
		return -1;
	rec_unlock(rec);
	*count_r = h.count;
	if (capacity_r != NULL)
		*capacity_r = h.capacity;
	return 0;
}

bool trib_delivered_id_parse(const char *hex,
			     unsigned char id_r[TRIB_DELIVERED_ID_SIZE])
{
	for (unsigned int i = 0; i < TRIB_DELIVERED_ID_SIZE; i++) {
		int hi = trib_hex_value(hex[2 * i]);
		int lo = hi < 0 ? -1 : trib_hex_value(hex[2 * i + 1]);

		if (hi < 0 || lo < 0)
			return false;
		id_r[i] = (unsigned char)(hi << 4 | lo);
	}
	return hex[2 * TRIB_DELIVERED_ID_SIZE] == '\0';
}
