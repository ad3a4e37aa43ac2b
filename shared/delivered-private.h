#ifndef TRIB_DELIVERED_PRIVATE_H
#define TRIB_DELIVERED_PRIVATE_H

/* delivered-private.h: what the two halves of the delivered record share:
 *
 *   delivered-file.c  the file format (header, checksum, the open-
 *                     addressing table of ids), positioned I/O, locks
 *   delivered.c       opening, locking, growing, and the API
 *
 * The format is described in delivered.h. */

#define _GNU_SOURCE /* F_OFD_SETLKW */

#include "delivered.h"

#include "alloc.h"

#include <fcntl.h>
#include <stdbool.h>
#include <stdint.h>
#include <sys/types.h>

#define HEADER_SIZE 64
#define SLOT_SIZE TRIB_DELIVERED_ID_SIZE
#define MAGIC "TRIBDLVR"
#define MAGIC_LEN 8
#define FORMAT_VERSION 1
#define CHECKSUM_OFFSET 56
#define FLAG_ZERO_ID 0x1u
#define FLAGS_KNOWN FLAG_ZERO_ID

#define CAPACITY_MIN 16
#define CAPACITY_MAX ((uint64_t)1 << 32)
/* Slots read at once while probing, and while copying into a new table. */
#define WINDOW_SLOTS 32
#define COPY_SLOTS 4096
#define NO_SLOT UINT64_MAX
/* Times a lock is retried because the file was replaced meanwhile. */
#define REPLACED_RETRIES 1000
/* An id's claim is a write lock on one byte of the lock file: byte
 * (the id's last 8 bytes modulo this). Two ids sharing a byte only
 * wait for each other a moment. */
#define CLAIM_BYTES ((uint64_t)1 << 20)

#ifdef F_OFD_SETLKW
#define LOCK_WAIT F_OFD_SETLKW
#define LOCK_NOWAIT F_OFD_SETLK
#else
#define LOCK_WAIT F_SETLKW
#define LOCK_NOWAIT F_SETLK
#endif

struct trib_delivered {
	char *path;
	int fd;
	enum trib_delivered_flags flags;
	/* "<path>.lock", never replaced: the claims on ids */
	int claim_fd;
	bool claimed;
	uint64_t claim_offset;
};

struct header {
	uint64_t capacity;
	uint64_t count;
	uint32_t flags;
};

/* delivered-file.c */
/* "delivered record PATH: ..." on one line, in a static buffer. */
const char *trib_dlv_fail(const char *path, const char *fmt, ...)
	TRIB_ATTR_PRINTF(2, 3);
/* The error of a damaged record: never reset automatically. */
const char *trib_dlv_corrupt(const char *path, const char *why);
/* Encoding. */
uint64_t trib_dlv_get_le64(const unsigned char *p);
bool trib_dlv_is_zero(const unsigned char *data, size_t size);
/* Check and decode a header read from a file of file_size bytes. */
int trib_dlv_header_decode(const char *path, const unsigned char *buf,
			   size_t got, uint64_t file_size, struct header *h_r,
			   const char **error_r);
/* Positioned I/O and locks; they keep errno. */
ssize_t trib_dlv_pread_full(int fd, void *buf, size_t size, uint64_t offset);
int trib_dlv_header_write(int fd, const char *path, const struct header *h,
			  const char **error_r);
int trib_dlv_fsync_dir(const char *path, const char **error_r);
int trib_dlv_range_lock(int fd, short type, uint64_t offset, uint64_t len);
void trib_dlv_range_unlock(int fd, uint64_t offset, uint64_t len);
int trib_dlv_fd_lock(int fd, short type);
void trib_dlv_fd_unlock(int fd);
/* The table: 1 found, 0 absent with *slot_r its empty slot (NO_SLOT:
 * the table is full), -1 error. */
int trib_dlv_table_find(int fd, const char *path, uint64_t capacity,
			const unsigned char *id, uint64_t *slot_r,
			const char **error_r);
int trib_dlv_slot_write(int fd, const char *path, uint64_t slot,
			const unsigned char *id, const char **error_r);
int trib_dlv_table_init(int fd, const char *path, const struct header *h,
			const char **error_r);
/* How many ids a table of capacity takes before it grows, and at
 * most. */
uint64_t trib_dlv_soft_limit(uint64_t capacity);
uint64_t trib_dlv_hard_limit(uint64_t capacity);

#endif
