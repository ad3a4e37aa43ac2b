/* delivered-file.c: the delivered record's file format (delivered.h):
 * the header and its checksum, the open-addressing table of ids,
 * positioned I/O that keeps errno, and the fcntl locks. */

#include "delivered-private.h"

#include "fileio.h"

#include <errno.h>
#include <inttypes.h>
#include <stdarg.h>
#include <stdio.h>
#include <string.h>
#include <unistd.h>

static char rec_error[1024];

/* "delivered record PATH: ..." into rec_error, on one line. */
const char *trib_dlv_fail(const char *path, const char *fmt, ...)
{
	va_list args;
	int len;
	char *p;

	len = snprintf(rec_error, sizeof(rec_error),
		       "delivered record %s: ", path);
	if (len < 0 || (size_t)len >= sizeof(rec_error))
		len = 0;
	va_start(args, fmt);
	vsnprintf(rec_error + len, sizeof(rec_error) - len, fmt, args);
	va_end(args);
	for (p = rec_error; *p != '\0'; p++) {
		if ((unsigned char)*p < 0x20 || *p == 0x7f)
			*p = '?';
	}
	return rec_error;
}

const char *trib_dlv_corrupt(const char *path, const char *why)
{
	return trib_dlv_fail(
		path,
		"corrupt (%s); it is never reset automatically: "
		"restore it, or move it away to start an empty record "
		"(messages fetched again would then be stored again)",
		why);
}

/* ---- encoding ---- */

static void put_le32(unsigned char *p, uint32_t v)
{
	for (unsigned int i = 0; i < 4; i++)
		p[i] = (unsigned char)(v >> (8 * i));
}

static void put_le64(unsigned char *p, uint64_t v)
{
	for (unsigned int i = 0; i < 8; i++)
		p[i] = (unsigned char)(v >> (8 * i));
}

static uint32_t get_le32(const unsigned char *p)
{
	uint32_t v = 0;

	for (unsigned int i = 0; i < 4; i++)
		v |= (uint32_t)p[i] << (8 * i);
	return v;
}

uint64_t trib_dlv_get_le64(const unsigned char *p)
{
	uint64_t v = 0;

	for (unsigned int i = 0; i < 8; i++)
		v |= (uint64_t)p[i] << (8 * i);
	return v;
}

static uint64_t fnv1a64(const unsigned char *data, size_t size)
{
	uint64_t h = 0xcbf29ce484222325ULL;

	for (size_t i = 0; i < size; i++) {
		h ^= data[i];
		h *= 0x100000001b3ULL;
	}
	return h;
}

static void header_encode(const struct header *h,
			  unsigned char buf[HEADER_SIZE])
{
	memset(buf, 0, HEADER_SIZE);
	memcpy(buf, MAGIC, MAGIC_LEN);
	put_le32(buf + 8, FORMAT_VERSION);
	put_le32(buf + 12, HEADER_SIZE);
	put_le64(buf + 16, h->capacity);
	put_le64(buf + 24, h->count);
	put_le32(buf + 32, h->flags);
	put_le64(buf + CHECKSUM_OFFSET, fnv1a64(buf, CHECKSUM_OFFSET));
}

bool trib_dlv_is_zero(const unsigned char *data, size_t size)
{
	for (size_t i = 0; i < size; i++) {
		if (data[i] != 0)
			return false;
	}
	return true;
}

static uint64_t table_size(uint64_t capacity)
{
	return HEADER_SIZE + capacity * SLOT_SIZE;
}

/* Decode and check the header of a file of file_size bytes, of which
 * got were read into buf. */
int trib_dlv_header_decode(const char *path, const unsigned char *buf,
			   size_t got, uint64_t file_size, struct header *h_r,
			   const char **error_r)
{
	uint32_t version;
	char why[128];

	if (got == 0) {
		*error_r = trib_dlv_corrupt(path, "empty file");
		return -1;
	}
	if (got < HEADER_SIZE) {
		*error_r = trib_dlv_corrupt(path, "shorter than its header");
		return -1;
	}
	if (memcmp(buf, MAGIC, MAGIC_LEN) != 0) {
		*error_r = trib_dlv_corrupt(
			path, "not a delivered record: bad magic");
		return -1;
	}
	version = get_le32(buf + 8);
	if (version != FORMAT_VERSION) {
		*error_r =
			trib_dlv_fail(path,
				      "version %" PRIu32 ", but this Tributary "
				      "reads version %d only",
				      version, FORMAT_VERSION);
		return -1;
	}
	if (trib_dlv_get_le64(buf + CHECKSUM_OFFSET) !=
	    fnv1a64(buf, CHECKSUM_OFFSET)) {
		*error_r = trib_dlv_corrupt(path, "header checksum mismatch");
		return -1;
	}
	h_r->capacity = trib_dlv_get_le64(buf + 16);
	h_r->count = trib_dlv_get_le64(buf + 24);
	h_r->flags = get_le32(buf + 32);
	if (get_le32(buf + 12) != HEADER_SIZE || h_r->capacity < CAPACITY_MIN ||
	    h_r->capacity > CAPACITY_MAX ||
	    (h_r->capacity & (h_r->capacity - 1)) != 0 ||
	    h_r->count > h_r->capacity + 1 ||
	    (h_r->flags & ~FLAGS_KNOWN) != 0 ||
	    !trib_dlv_is_zero(buf + 36, CHECKSUM_OFFSET - 36)) {
		*error_r = trib_dlv_corrupt(path, "impossible header values");
		return -1;
	}
	if (file_size != table_size(h_r->capacity)) {
		snprintf(why, sizeof(why),
			 "%" PRIu64 " bytes, its header says %" PRIu64,
			 file_size, table_size(h_r->capacity));
		*error_r = trib_dlv_corrupt(path, why);
		return -1;
	}
	return 0;
}

/* ---- I/O helpers: they keep errno ---- */

/* Bytes read (fewer only at end of file), or -1. */
ssize_t trib_dlv_pread_full(int fd, void *buf, size_t size, uint64_t offset)
{
	size_t done = 0;

	while (done < size) {
		ssize_t ret = pread(fd, (char *)buf + done, size - done,
				    (off_t)(offset + done));
		if (ret < 0) {
			if (errno == EINTR)
				continue;
			return -1;
		}
		if (ret == 0)
			break;
		done += (size_t)ret;
	}
	return (ssize_t)done;
}

static int pwrite_full(int fd, const void *buf, size_t size, uint64_t offset)
{
	size_t done = 0;

	while (done < size) {
		ssize_t ret = pwrite(fd, (const char *)buf + done, size - done,
				     (off_t)(offset + done));
		if (ret < 0) {
			if (errno == EINTR)
				continue;
			return -1;
		}
		done += (size_t)ret;
	}
	return 0;
}

int trib_dlv_header_write(int fd, const char *path, const struct header *h,
			  const char **error_r)
{
	unsigned char buf[HEADER_SIZE];

	header_encode(h, buf);
	if (pwrite_full(fd, buf, sizeof(buf), 0) < 0) {
		*error_r = trib_dlv_fail(path, "write: %s", strerror(errno));
		return -1;
	}
	return 0;
}

/* fsync() the directory that holds path (a new name in it). */
int trib_dlv_fsync_dir(const char *path, const char **error_r)
{
	if (trib_fsync_dir_of(path) < 0) {
		*error_r = trib_dlv_fail(path, "fsync of its directory: %s",
					 strerror(errno));
		return -1;
	}
	return 0;
}

/* Lock len bytes at offset (0: to the end and beyond), waiting. */
int trib_dlv_range_lock(int fd, short type, uint64_t offset, uint64_t len)
{
	struct flock fl;

	memset(&fl, 0, sizeof(fl));
	fl.l_type = type;
	fl.l_whence = SEEK_SET;
	fl.l_start = (off_t)offset;
	fl.l_len = (off_t)len;
	while (fcntl(fd, LOCK_WAIT, &fl) < 0) {
		if (errno != EINTR)
			return -1;
	}
	return 0;
}

void trib_dlv_range_unlock(int fd, uint64_t offset, uint64_t len)
{
	struct flock fl;

	memset(&fl, 0, sizeof(fl));
	fl.l_type = F_UNLCK;
	fl.l_whence = SEEK_SET;
	fl.l_start = (off_t)offset;
	fl.l_len = (off_t)len;
	(void)fcntl(fd, LOCK_NOWAIT, &fl);
}

int trib_dlv_fd_lock(int fd, short type)
{
	return trib_dlv_range_lock(fd, type, 0, 0);
}

void trib_dlv_fd_unlock(int fd)
{
	trib_dlv_range_unlock(fd, 0, 0);
}

/* ---- the table ---- */

static uint64_t home_slot(const unsigned char *id, uint64_t capacity)
{
	return trib_dlv_get_le64(id) & (capacity - 1);
}

/* Probe for id (not all zero) in a table of capacity slots: 1 found, 0
 * absent with *slot_r the empty slot it would go to (NO_SLOT when the
 * table is full), -1 error. */
int trib_dlv_table_find(int fd, const char *path, uint64_t capacity,
			const unsigned char *id, uint64_t *slot_r,
			const char **error_r)
{
	unsigned char window[WINDOW_SLOTS * SLOT_SIZE];
	uint64_t slot = home_slot(id, capacity), seen = 0;

	while (seen < capacity) {
		uint64_t n = WINDOW_SLOTS;
		ssize_t got;

		if (n > capacity - slot)
			n = capacity - slot;
		if (n > capacity - seen)
			n = capacity - seen;
		got = trib_dlv_pread_full(fd, window, n * SLOT_SIZE,
					  HEADER_SIZE + slot * SLOT_SIZE);
		if (got < 0) {
			*error_r = trib_dlv_fail(path, "read: %s",
						 strerror(errno));
			return -1;
		}
		if ((uint64_t)got != n * SLOT_SIZE) {
			*error_r = trib_dlv_corrupt(path,
						    "shorter than its table");
			return -1;
		}
		for (uint64_t i = 0; i < n; i++) {
			const unsigned char *s = window + i * SLOT_SIZE;

			if (memcmp(s, id, SLOT_SIZE) == 0)
				return 1;
			if (trib_dlv_is_zero(s, SLOT_SIZE)) {
				*slot_r = slot + i;
				return 0;
			}
		}
		seen += n;
		slot = (slot + n) & (capacity - 1);
	}
	*slot_r = NO_SLOT;
	return 0;
}

int trib_dlv_slot_write(int fd, const char *path, uint64_t slot,
			const unsigned char *id, const char **error_r)
{
	if (pwrite_full(fd, id, SLOT_SIZE, HEADER_SIZE + slot * SLOT_SIZE) <
	    0) {
		*error_r = trib_dlv_fail(path, "write: %s", strerror(errno));
		return -1;
	}
	return 0;
}

/* Allocate a table of h->capacity zeroed slots in the empty file fd and
 * write its header. */
int trib_dlv_table_init(int fd, const char *path, const struct header *h,
			const char **error_r)
{
	int ret;

	ret = posix_fallocate(fd, 0, (off_t)table_size(h->capacity));
	if (ret != 0) {
		*error_r =
			trib_dlv_fail(path, "allocating %" PRIu64 " bytes: %s",
				      table_size(h->capacity), strerror(ret));
		return -1;
	}
	return trib_dlv_header_write(fd, path, h, error_r);
}

/* An id goes in while the table stays at most 3/4 full (a lookup makes
 * room beyond that), and a mark grows it only past 7/8. */
uint64_t trib_dlv_soft_limit(uint64_t capacity)
{
	return capacity - capacity / 4;
}

uint64_t trib_dlv_hard_limit(uint64_t capacity)
{
	return capacity - capacity / 8;
}
