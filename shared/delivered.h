#ifndef TRIB_DELIVERED_H
#define TRIB_DELIVERED_H

/* delivered.h: the delivered record, one file per user that remembers
 * every trace id the LMTP plugin delivered to that user, so that a
 * message the fetcher sends again is answered "delivered" without being
 * stored a second time (DESIGN.md, data flow item 4).
 *
 * Pure libc: no libevent, no OpenSSL; it is linked into the LMTP plugin
 * (the core's PIC slice) as well as the core. It never prints.
 *
 * Owns: a struct trib_delivered owns its path (a copy), one file
 * descriptor of the record and one of its lock file "<path>.lock"; it
 * holds a lock on the record only while one of the functions below runs,
 * and a claim on one id from trib_delivered_lookup() until it is closed.
 * Borrows: nothing.
 *
 * The file, version 1 (integers little-endian):
 *
 *   offset  size
 *        0     8  magic "TRIBDLVR"
 *        8     4  version, 1
 *       12     4  header size, 64
 *       16     8  capacity: number of slots, a power of two
 *       24     8  count: ids stored (a kill between the two writes of a
 *                 mark can leave it one short; growing recounts)
 *       32     4  flags: bit 0 = the id of sixteen zero bytes is stored
 *                 (it has no slot: a zero slot is an empty one)
 *       36    20  zero
 *       56     8  FNV-1a 64 of bytes 0..55
 *       64        capacity slots of 16 bytes: an id, or zeros (empty)
 *
 * An open-addressing hash table with linear probing: an id's first slot
 * is its first 8 bytes (little-endian) modulo the capacity. Ids are
 * prefixes of SHA-256 digests taken from headers whose HMAC verified, so
 * nobody can choose them to collide. Ids are never removed (the record
 * never expires), so there are no tombstones. A lookup reads the header
 * and usually one window of slots: O(1) however large the record grows.
 *
 * Growing: trib_delivered_lookup() of an absent id makes room for it
 * (the table grows when one more id would fill more than 3/4 of it), so
 * the mark after a delivery only writes into space the file already has;
 * trib_delivered_mark() itself grows only past 7/8, which takes parallel
 * sessions racing past the lookup's check. To grow, the live file's
 * write lock is held, a table of twice the size (or more) is written to
 * "<path>.grow" with every id, fsync()ed, locked, and renamed over the
 * record, and the directory fsync()ed. Space is allocated up front
 * (posix_fallocate), so a full disk shows at creation or growth, never
 * in the middle of a mark. A new record is created the same way (a
 * temporary file, complete and fsync()ed, then link()ed into place), so
 * the file at path is always whole: an empty or short file, a bad magic
 * or checksum is corruption, reported as such and never reset.
 *
 * Locking: open file description locks (fcntl F_OFD_SETLKW) on the
 * whole record: a read lock for a lookup or a count, a write lock for a
 * mark or a growth, held for that call only. After taking a lock the
 * file at path must still be the locked one (same device and inode):
 * when another process grew it meanwhile, the new file is opened and
 * locked instead. So parallel LMTP sessions of one user only serialise
 * for the few microseconds of a lookup or a mark, not across Sieve and
 * the save.
 *
 * Claims: the SAME id delivered by two sessions at once must not be
 * stored twice. The fetcher's per-user lock keeps two fetchers apart,
 * but not a killed fetcher's last LMTP transaction, which Dovecot
 * carries on with while the next pass sends the message again. So a
 * lookup first claims its id: a write lock on one byte of "<path>.lock"
 * (a file that is never replaced; the byte is chosen by the id), held
 * until the handle is closed, i.e. across the delivery and the mark. A
 * second lookup of that id waits for it and then finds the id marked
 * (or, when the first delivery failed or its process died, claims it
 * and delivers). Ids sharing a byte (1 in 2^20) only wait for each
 * other. No record lock is ever held while waiting for a claim, so
 * there is no deadlock.
 *
 * Durability: a mark writes the slot, then the header, under the write
 * lock, then fdatasync()s after releasing it (other sessions read the
 * page cache; they need not wait for the flush), so an id is on disk
 * before the plugin reports success (Dovecot has fsync()ed the mail by
 * then).
 *
 * Errors are one line naming the file, e.g. "delivered record
 * /home/alice/.tributary.delivered: open: Permission denied", in a
 * static buffer valid until the next call of a trib_delivered_ function
 * (Dovecot's processes and the fetcher are single threaded). */

#include <stdbool.h>
#include <stdint.h>

#define TRIB_DELIVERED_ID_SIZE 16
/* The default file name, in the user's home directory (beside Dovecot's
 * own ~/.dovecot.lda-dupes). */
#define TRIB_DELIVERED_DEFAULT_PATH "~/.tributary.delivered"
/* Slots of a new record: 4 KiB of slots. */
#define TRIB_DELIVERED_INITIAL_CAPACITY 256

struct trib_delivered;

enum trib_delivered_flags {
	/* Open for reading only (tools, tests): a missing file is an
	 * error, a lookup never makes room, a mark fails. */
	TRIB_DELIVERED_FLAG_READONLY = 0x01,
};

/* Open the record at path, creating an empty one (mode 0600) when there
 * is none. The directory must exist. Takes no lock and reads nothing
 * but what creating needs: a corrupt file shows at the first lookup,
 * mark or count. Returns 0, or -1 with *error_r. */
int trib_delivered_open(const char *path, enum trib_delivered_flags flags,
			struct trib_delivered **rec_r, const char **error_r);
/* Close the record, dropping the claim. NULL is fine. */
void trib_delivered_close(struct trib_delivered **rec);
const char *trib_delivered_get_path(const struct trib_delivered *rec);

/* Is id in the record? 1 yes, 0 no, -1 error (*error_r). First claims
 * id (waiting while another handle has it claimed; letting go of this
 * handle's previous claim) and keeps the claim until the handle is
 * closed: deliver, mark, then close. When id is absent, the record is
 * also made ready to take it without growing (see above), which may
 * take the write lock for a moment. A read-only handle claims nothing. */
int trib_delivered_lookup(struct trib_delivered *rec,
			  const unsigned char id[TRIB_DELIVERED_ID_SIZE],
			  const char **error_r);
/* Add id: 1 added (and on disk), 0 it was there already, -1 error
 * (*error_r; the id may or may not have been added). */
int trib_delivered_mark(struct trib_delivered *rec,
			const unsigned char id[TRIB_DELIVERED_ID_SIZE],
			const char **error_r);
/* The number of ids in the record, and its capacity in slots (may be
 * NULL). 0 or -1 with *error_r. */
int trib_delivered_count(struct trib_delivered *rec, uint64_t *count_r,
			 uint64_t *capacity_r, const char **error_r);

/* A trace id as trib_trace_id() writes it (32 hex digits, either case)
 * into its 16 bytes. False when hex is not exactly that. */
bool trib_delivered_id_parse(const char *hex,
			     unsigned char id_r[TRIB_DELIVERED_ID_SIZE]);

#endif
