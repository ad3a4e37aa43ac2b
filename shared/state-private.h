#ifndef TRIB_STATE_PRIVATE_H
#define TRIB_STATE_PRIVATE_H

/* state-private.h: what state.c (open, lock, folders, commit),
 * state-file.c (the state file's format) and state-index.c (the dedupe
 * index) share. Nothing here is for other modules. */

#include "alloc.h"
#include "state.h"

#include <stddef.h>
#include <stdint.h>
#include <sys/types.h>

#define STATE_FILE "state"
#define STATE_TEMP_FILE "state.tmp"
#define STATE_LOCK_FILE "lock"
#define STATE_INDEX_DIR "index"

/* Index files: a 20-byte header, then 20-byte records: the 16-byte key
 * and the UID, little-endian. */
#define STATE_INDEX_RECORD_SIZE 20
#define STATE_INDEX_HEADER_SIZE 20
#define STATE_INDEX_MAGIC "TRIB-IDX"
#define STATE_INDEX_VERSION 1
/* Ceiling of one folder's index: 16 M records, 320 MB. */
#define STATE_INDEX_MAX_RECORDS (16ULL * 1024 * 1024)

/* UIDs first..last, all done (above the cursor). */
struct state_range {
	uint32_t first, last;
};

/* A generation of the index: the records from start on were delivered
 * under uidvalidity (until the next generation's start). */
struct state_gen {
	uint32_t uidvalidity;
	uint64_t start;
};

/* What the commit in progress is making durable for one index. */
struct state_index_next {
	bool prepared;
	uint32_t file_id;
	uint64_t records;
	uint32_t crc;
	/* Set when the commit rewrote (compacted) the index into a new
	 * file: all its records and generations. */
	bool compacted;
	unsigned char *recs;
	struct state_gen *gens;
	unsigned int gen_count;
};

struct state_index {
	/* index/<file_id>; allocated with the folder, never 0. */
	uint32_t file_id;
	/* Records the state file on disk counts, and their CRC-32C. */
	uint64_t committed;
	uint32_t crc;
	struct state_gen *gens;
	unsigned int gen_count, gen_alloc;

	/* Records [base, count) are in recs: all of them once loaded (base
	 * 0), else only those not committed yet (base == committed). */
	bool loaded;
	uint64_t base, count;
	unsigned char *recs;
	uint64_t rec_alloc;
	/* Loaded only: open addressing over the record numbers + 1 (0 is
	 * empty), newest record of each key; live = distinct keys. */
	uint32_t *slots;
	uint64_t slot_cap, live;

	bool compact_requested;
	struct state_index_next next;
};

struct trib_state_folder {
	struct trib_state *state;
	char *account;
	char *name;
	uint32_t uidvalidity;
	uint32_t cursor;
	uint32_t uidnext;
	uint64_t highestmodseq;
	/* Done above the cursor: sorted, disjoint, never adjacent. */
	struct state_range *done;
	unsigned int done_count, done_alloc;
	struct trib_state_rejected *rejected;
	unsigned int rejected_count, rejected_alloc;
	struct state_index index;
};

struct trib_state {
	char *user;
	char *path;	  /* <state_dir>/<user> */
	char *index_path; /* <state_dir>/<user>/index */
	int dir_fd, index_fd, lock_fd;
	struct trib_state_folder **folders;
	unsigned int folder_count, folder_alloc;
	uint32_t next_index_id;
	bool dirty;
	char *error;
	/* Root works for the state_dir's owner: what it makes is chowned
	 * to (owner_uid, owner_gid). */
	bool chown_files;
	uid_t owner_uid;
	gid_t owner_gid;
};

/* Give a file or directory the state's owner when root made it (see
 * trib_state_open()). Best effort: a failure shows when the owner opens
 * the state next. */
void trib_state_own_fd(const struct trib_state *state, int fd);

/* Replace the state's error. */
void trib_state_set_error(struct trib_state *state, const char *fmt, ...)
	TRIB_ATTR_PRINTF(2, 3);

/* state.c: a new folder (for the parser); its index file id is given. */
struct trib_state_folder *trib_state_folder_new(struct trib_state *state,
						const char *account,
						const char *name);
/* Mark first..last done, moving the cursor over what became contiguous. */
void trib_state_folder_mark_done(struct trib_state_folder *folder,
				 uint32_t first, uint32_t last);

/* state-file.c: the state file. serialize uses the indexes' prepared
 * values (next). parse fills an empty state; -1 sets the state's error
 * (without the path: the caller adds it). */
char *trib_state_file_serialize(struct trib_state *state,
				uint32_t next_index_id, size_t *size_r);
int trib_state_file_parse(struct trib_state *state, const char *data,
			  size_t size);

/* state-index.c */
uint32_t trib_state_crc32c(uint32_t crc, const void *data, size_t size);
void trib_state_index_free(struct state_index *idx);
void trib_state_index_add_gen(struct state_index *idx, uint32_t uidvalidity,
			      uint64_t start);
void trib_state_index_add(struct state_index *idx,
			  const struct trib_state_key *key, uint32_t uid);
int trib_state_index_lookup(struct trib_state *state, struct state_index *idx,
			    const struct trib_state_key *key,
			    uint32_t *uidvalidity_r, uint32_t *uid_r);
/* Commit, step 1: make the index's new records durable (append, or a
 * compacted rewrite into index/<*next_file_id>, which is then
 * incremented) and fill idx->next. *created_r is set when a file was
 * created (the index directory must be fsync'd). -1 sets the state's
 * error; nothing is left half-done that the state file on disk counts. */
int trib_state_index_prepare(struct trib_state *state, struct state_index *idx,
			     uint32_t *next_file_id, bool *created_r);
/* The commit failed: undo prepare (drop the appended bytes, delete a
 * compacted file), keeping the records in memory. */
void trib_state_index_abort(struct trib_state *state, struct state_index *idx);
/* The state file now counts idx->next: take it over. Returns the file id
 * the commit made obsolete (to be deleted), or 0. */
uint32_t trib_state_index_finish(struct state_index *idx);

#endif
