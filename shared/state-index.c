/* state-index.c: the dedupe index of one folder.
 *
 * An append-only file of fixed-size records (a 16-byte key, a 4-byte UID)
 * behind a 20-byte header. The state file counts the records that belong
 * to it and holds their CRC-32C: bytes past that count (a torn append of a
 * commit that never finished) are ignored and overwritten by the next
 * append, and a file that does not match its count and CRC is refused.
 * Generations (one per UIDVALIDITY) are ranges of record numbers, listed
 * in the state file. A compaction writes a new file holding the newest
 * record of each key; the commit's state file then names it, and the old
 * file is deleted.
 *
 * The records are read only for a lookup or a compaction; until then only
 * the ones added since the last commit are in memory, so an idle pass
 * costs nothing per message in the folder. */

#include "state-private.h"

#include "crash.h"

#include <errno.h>
#include <fcntl.h>
#include <openssl/evp.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#define SLOTS_MIN 1024
/* Compact by itself once this many records are replaced ones, and no
 * fewer than the live ones. */
#define AUTO_COMPACT_MIN 1024

/* ---- CRC-32C (Castagnoli), reflected ---- */

static uint32_t crc_table[256];
static bool crc_table_ready;

static void crc_table_init(void)
{
	for (uint32_t i = 0; i < 256; i++) {
		uint32_t c = i;

		for (int k = 0; k < 8; k++)
			c = (c & 1) != 0 ? (c >> 1) ^ 0x82f63b78U : c >> 1;
		crc_table[i] = c;
	}
	crc_table_ready = true;
}

uint32_t trib_state_crc32c(uint32_t crc, const void *data, size_t size)
{
	const unsigned char *p = data;

	if (!crc_table_ready)
		crc_table_init();
	crc = ~crc;
	for (size_t i = 0; i < size; i++)
		crc = crc_table[(crc ^ p[i]) & 0xff] ^ (crc >> 8);
	return ~crc;
}

/* ---- keys ---- */

static void key_digest(const void *const *parts, const size_t *sizes,
		       unsigned int count, struct trib_state_key *key_r)
{
	unsigned char md[EVP_MAX_MD_SIZE];
	unsigned int md_len = 0;
	EVP_MD_CTX *ctx = EVP_MD_CTX_new();
	bool ok =
		ctx != NULL && EVP_DigestInit_ex(ctx, EVP_sha256(), NULL) == 1;

	for (unsigned int i = 0; ok && i < count; i++)
		ok = EVP_DigestUpdate(ctx, parts[i], sizes[i]) == 1;
	ok = ok && EVP_DigestFinal_ex(ctx, md, &md_len) == 1;
	EVP_MD_CTX_free(ctx);
	if (!ok || md_len < TRIB_STATE_KEY_SIZE)
		abort(); /* SHA-256 itself failing: OpenSSL is broken */
	memcpy(key_r->hash, md, TRIB_STATE_KEY_SIZE);
}

void trib_state_key_message(const char *message_id, uint64_t size,
			    int64_t internaldate, struct trib_state_key *key_r)
{
	static const char prefix[] = "tributary-key-1\0message\0";
	char numbers[64];
	int len;

	if (message_id == NULL)
		message_id = "";
	len = snprintf(numbers, sizeof(numbers), "%llu%c%lld",
		       (unsigned long long)size, '\0', (long long)internaldate);
	const void *parts[] = { prefix, message_id, "", numbers };
	const size_t sizes[] = { sizeof(prefix) - 1, strlen(message_id), 1,
				 (size_t)len };

	key_digest(parts, sizes, TRIB_N_ELEMENTS(parts), key_r);
}

void trib_state_key_gmail(uint64_t msgid, struct trib_state_key *key_r)
{
	static const char prefix[] = "tributary-key-1\0x-gm-msgid\0";
	char number[32];
	int len = snprintf(number, sizeof(number), "%llu",
			   (unsigned long long)msgid);
	const void *parts[] = { prefix, number };
	const size_t sizes[] = { sizeof(prefix) - 1, (size_t)len };

	key_digest(parts, sizes, TRIB_N_ELEMENTS(parts), key_r);
}

/* ---- records in memory ---- */

static uint32_t get_le32(const unsigned char *p)
{
	return (uint32_t)p[0] | (uint32_t)p[1] << 8 | (uint32_t)p[2] << 16 |
	       (uint32_t)p[3] << 24;
}

static void put_le32(unsigned char *p, uint32_t value)
{
	p[0] = value & 0xff;
	p[1] = (value >> 8) & 0xff;
	p[2] = (value >> 16) & 0xff;
	p[3] = (value >> 24) & 0xff;
}

static unsigned char *index_rec(const struct state_index *idx, uint64_t recno)
{
	return idx->recs + (recno - idx->base) * STATE_INDEX_RECORD_SIZE;
}

static void recs_reserve(struct state_index *idx, uint64_t n)
{
	uint64_t need = idx->count - idx->base + n;

	if (need <= idx->rec_alloc)
		return;
	idx->rec_alloc = idx->rec_alloc < 64 ? 64 : idx->rec_alloc;
	while (idx->rec_alloc < need)
		idx->rec_alloc *= 2;
	idx->recs = trib_realloc(idx->recs,
				 idx->rec_alloc * STATE_INDEX_RECORD_SIZE);
}

static uint64_t slot_of(const unsigned char *key, uint64_t cap)
{
	uint64_t h;

	memcpy(&h, key, sizeof(h));
	return h & (cap - 1);
}

static void slots_place(uint32_t *slots, uint64_t cap, const unsigned char *key,
			uint32_t value)
{
	uint64_t i = slot_of(key, cap);

	while (slots[i] != 0)
		i = (i + 1) & (cap - 1);
	slots[i] = value;
}

static void slots_resize(struct state_index *idx, uint64_t cap)
{
	uint32_t *slots = trib_calloc(cap, sizeof(*slots));

	for (uint64_t i = 0; i < idx->slot_cap; i++) {
		if (idx->slots[i] != 0) {
			slots_place(slots, cap,
				    index_rec(idx, idx->slots[i] - 1),
				    idx->slots[i]);
		}
	}
	free(idx->slots);
	idx->slots = slots;
	idx->slot_cap = cap;
}

/* Record recno becomes the newest of its key. */
static void slots_insert(struct state_index *idx, uint64_t recno)
{
	const unsigned char *key = index_rec(idx, recno);
	uint64_t i;

	if ((idx->live + 1) * 2 > idx->slot_cap)
		slots_resize(idx, idx->slot_cap < SLOTS_MIN
					  ? SLOTS_MIN
					  : idx->slot_cap * 2);
	for (i = slot_of(key, idx->slot_cap); idx->slots[i] != 0;
	     i = (i + 1) & (idx->slot_cap - 1)) {
		if (memcmp(index_rec(idx, idx->slots[i] - 1), key,
			   TRIB_STATE_KEY_SIZE) == 0) {
			idx->slots[i] = (uint32_t)(recno + 1);
			return;
		}
	}
	idx->slots[i] = (uint32_t)(recno + 1);
	idx->live++;
}

/* The newest record of key, or -1. */
static int64_t slots_find(const struct state_index *idx,
			  const unsigned char *key)
{
	if (idx->slot_cap == 0)
		return -1;
	for (uint64_t i = slot_of(key, idx->slot_cap); idx->slots[i] != 0;
	     i = (i + 1) & (idx->slot_cap - 1)) {
		if (memcmp(index_rec(idx, idx->slots[i] - 1), key,
			   TRIB_STATE_KEY_SIZE) == 0)
			return (int64_t)idx->slots[i] - 1;
	}
	return -1;
}

static void slots_build(struct state_index *idx)
{
	uint64_t cap = SLOTS_MIN;

	while (cap < idx->count * 2)
		cap *= 2;
	free(idx->slots);
	idx->slots = trib_calloc(cap, sizeof(*idx->slots));
	idx->slot_cap = cap;
	idx->live = 0;
	for (uint64_t r = 0; r < idx->count; r++)
		slots_insert(idx, r);
}

void trib_state_index_add_gen(struct state_index *idx, uint32_t uidvalidity,
			      uint64_t start)
{
	if (idx->gen_count == idx->gen_alloc) {
		idx->gen_alloc = idx->gen_alloc == 0 ? 4 : idx->gen_alloc * 2;
		idx->gens = trib_realloc(idx->gens,
					 idx->gen_alloc * sizeof(*idx->gens));
	}
	idx->gens[idx->gen_count].uidvalidity = uidvalidity;
	idx->gens[idx->gen_count].start = start;
	idx->gen_count++;
}

void trib_state_index_add(struct state_index *idx,
			  const struct trib_state_key *key, uint32_t uid)
{
	unsigned char *rec;

	recs_reserve(idx, 1);
	rec = idx->recs + (idx->count - idx->base) * STATE_INDEX_RECORD_SIZE;
	memcpy(rec, key->hash, TRIB_STATE_KEY_SIZE);
	put_le32(rec + TRIB_STATE_KEY_SIZE, uid);
	idx->count++;
	if (idx->loaded)
		slots_insert(idx, idx->count - 1);
}

void trib_state_index_free(struct state_index *idx)
{
	free(idx->recs);
	free(idx->slots);
	free(idx->gens);
	free(idx->next.recs);
	free(idx->next.gens);
	memset(idx, 0, sizeof(*idx));
}

/* ---- files ---- */

static void index_name(uint32_t file_id, char name[static 16])
{
	snprintf(name, 16, "%u", file_id);
}

static void index_header(unsigned char header[static STATE_INDEX_HEADER_SIZE])
{
	memset(header, 0, STATE_INDEX_HEADER_SIZE);
	memcpy(header, STATE_INDEX_MAGIC, 8);
	put_le32(header + 8, STATE_INDEX_VERSION);
}

static int pwrite_full(int fd, const void *data, size_t size, off_t offset)
{
	const unsigned char *p = data;

	while (size > 0) {
		ssize_t ret = pwrite(fd, p, size, offset);

		if (ret < 0 && errno == EINTR)
			continue;
		if (ret < 0)
			return -1;
		if (ret == 0) {
			errno = EIO;
			return -1;
		}
		p += ret;
		size -= (size_t)ret;
		offset += ret;
	}
	return 0;
}

static int pread_full(int fd, void *data, size_t size, off_t offset)
{
	unsigned char *p = data;

	while (size > 0) {
		ssize_t ret = pread(fd, p, size, offset);

		if (ret < 0 && errno == EINTR)
			continue;
		if (ret < 0)
			return -1;
		if (ret == 0) {
			errno = ENODATA;
			return -1;
		}
		p += ret;
		size -= (size_t)ret;
		offset += ret;
	}
	return 0;
}

/* Read the committed records, keep the pending ones after them. */
static int index_load(struct trib_state *state, struct state_index *idx)
{
	unsigned char header[STATE_INDEX_HEADER_SIZE], expect[sizeof(header)];
	uint64_t committed = idx->committed;
	uint64_t pending = idx->count - idx->committed;
	size_t size = (size_t)committed * STATE_INDEX_RECORD_SIZE;
	unsigned char *recs;
	struct stat st;
	char name[16];
	int fd;

	if (idx->loaded)
		return 0;
	index_name(idx->file_id, name);
	if (committed + pending > STATE_INDEX_MAX_RECORDS) {
		trib_state_set_error(
			state,
			"state %s/%s: more than %llu keys "
			"(refusing to read it)",
			state->index_path, name,
			(unsigned long long)STATE_INDEX_MAX_RECORDS);
		return -1;
	}
	recs = trib_malloc((size_t)(committed + pending + 64) *
			   STATE_INDEX_RECORD_SIZE);
	if (committed > 0) {
		fd = openat(state->index_fd, name,
			    O_RDONLY | O_NOFOLLOW | O_CLOEXEC);
		if (fd < 0) {
			trib_state_set_error(
				state,
				"state %s/%s: cannot open: %s (the state file "
				"counts %llu keys in it)",
				state->index_path, name, strerror(errno),
				(unsigned long long)committed);
			free(recs);
			return -1;
		}
		index_header(expect);
		if (fstat(fd, &st) < 0 ||
		    (uint64_t)st.st_size < STATE_INDEX_HEADER_SIZE + size) {
			trib_state_set_error(
				state,
				"state %s/%s: shorter than the %llu keys the "
				"state file counts (corrupted index)",
				state->index_path, name,
				(unsigned long long)committed);
		} else if (pread_full(fd, header, sizeof(header), 0) < 0 ||
			   pread_full(fd, recs, size, sizeof(header)) < 0) {
			trib_state_set_error(state, "state %s/%s: read: %s",
					     state->index_path, name,
					     strerror(errno));
		} else if (memcmp(header, expect, sizeof(header)) != 0) {
			trib_state_set_error(state,
					     "state %s/%s: not a Tributary "
					     "index (bad header)",
					     state->index_path, name);
		} else if (trib_state_crc32c(0, recs, size) != idx->crc) {
			trib_state_set_error(
				state,
				"state %s/%s: checksum mismatch over its %llu "
				"keys (corrupted index)",
				state->index_path, name,
				(unsigned long long)committed);
		} else {
			close(fd);
			goto loaded;
		}
		close(fd);
		free(recs);
		return -1;
	}
loaded:
	if (pending > 0) {
		memcpy(recs + size, idx->recs,
		       (size_t)pending * STATE_INDEX_RECORD_SIZE);
	}
	free(idx->recs);
	idx->recs = recs;
	idx->rec_alloc = committed + pending + 64;
	idx->base = 0;
	idx->loaded = true;
	slots_build(idx);
	return 0;
}

int trib_state_index_lookup(struct trib_state *state, struct state_index *idx,
			    const struct trib_state_key *key,
			    uint32_t *uidvalidity_r, uint32_t *uid_r)
{
	int64_t recno;

	if (index_load(state, idx) < 0)
		return -1;
	recno = slots_find(idx, key->hash);
	if (recno < 0)
		return 0;
	*uid_r =
		get_le32(index_rec(idx, (uint64_t)recno) + TRIB_STATE_KEY_SIZE);
	*uidvalidity_r = 0;
	for (unsigned int i = idx->gen_count; i > 0; i--) {
		if (idx->gens[i - 1].start <= (uint64_t)recno) {
			*uidvalidity_r = idx->gens[i - 1].uidvalidity;
			break;
		}
	}
	return 1;
}

/* Write records at offset in two parts, with a crash point between them:
 * the first one ends in the middle of a record. */
static int write_halves(int fd, const unsigned char *data, size_t size,
			off_t offset, const char *crash_point)
{
	size_t half = size / 2 - size / 2 % STATE_INDEX_RECORD_SIZE +
		      STATE_INDEX_RECORD_SIZE / 2;

	if (half > size)
		half = size / 2;

	if (pwrite_full(fd, data, half, offset) < 0)
		return -1;
	TRIB_CRASH_POINT(crash_point);
	(void)crash_point;
	return pwrite_full(fd, data + half, size - half, offset + (off_t)half);
}

static int index_append(struct trib_state *state, struct state_index *idx,
			bool *created_r)
{
	unsigned char header[STATE_INDEX_HEADER_SIZE];
	off_t offset = STATE_INDEX_HEADER_SIZE +
		       (off_t)idx->committed * STATE_INDEX_RECORD_SIZE;
	const unsigned char *data = index_rec(idx, idx->committed);
	size_t size =
		(size_t)(idx->count - idx->committed) * STATE_INDEX_RECORD_SIZE;
	const char *what = "open";
	struct stat st;
	char name[16];
	int fd;

	index_name(idx->file_id, name);
	if (idx->committed == 0) {
		fd = openat(state->index_fd, name,
			    O_RDWR | O_CREAT | O_EXCL | O_NOFOLLOW | O_CLOEXEC,
			    0600);
		if (fd >= 0) {
			*created_r = true;
			trib_state_own_fd(state, fd);
		} else if (errno == EEXIST)
			fd = openat(state->index_fd, name,
				    O_RDWR | O_NOFOLLOW | O_CLOEXEC);
		index_header(header);
		if (fd >= 0 && pwrite_full(fd, header, sizeof(header), 0) < 0) {
			what = "write";
			goto fail;
		}
	} else {
		fd = openat(state->index_fd, name,
			    O_RDWR | O_NOFOLLOW | O_CLOEXEC);
		if (fd >= 0 && fstat(fd, &st) == 0 && st.st_size < offset) {
			trib_state_set_error(
				state,
				"state %s/%s: shorter than the %llu keys the "
				"state file counts (corrupted index)",
				state->index_path, name,
				(unsigned long long)idx->committed);
			close(fd);
			return -1;
		}
	}
	if (fd < 0)
		goto fail;
	what = "write";
	if (write_halves(fd, data, size, offset, "index-append-mid") < 0 ||
	    ftruncate(fd, offset + (off_t)size) < 0)
		goto fail;
	TRIB_CRASH_POINT("index-append-before-fsync");
	what = "fsync";
	if (fsync(fd) < 0)
		goto fail;
	what = "close";
	if (close(fd) < 0) {
		fd = -1;
		goto fail;
	}
	idx->next.prepared = true;
	idx->next.file_id = idx->file_id;
	idx->next.records = idx->count;
	idx->next.crc = trib_state_crc32c(idx->crc, data, size);
	return 0;
fail:
	trib_state_set_error(state,
			     "state %s/%s: %s failed: %s (the previous state "
			     "is kept; the changes stay in memory)",
			     state->index_path, name, what, strerror(errno));
	if (fd >= 0) {
		/* Best effort: the state file never counted these bytes. */
		if (idx->committed > 0 && ftruncate(fd, offset) < 0)
			errno = 0;
		close(fd);
	}
	if (idx->committed == 0)
		(void)unlinkat(state->index_fd, name, 0);
	return -1;
}

/* The newest record of each key, generations renumbered; empty old
 * generations are dropped, the current one is always kept. */
static void index_compacted(struct state_index *idx,
			    struct state_index_next *next)
{
	unsigned int g = 0, gens = 0;
	uint64_t kept = 0;

	next->recs =
		trib_malloc((size_t)(idx->live + 1) * STATE_INDEX_RECORD_SIZE);
	next->gens = trib_calloc(idx->gen_count + 1, sizeof(*next->gens));
	for (uint64_t r = 0; r <= idx->count; r++) {
		/* Open every generation that starts at r. */
		while (g < idx->gen_count && idx->gens[g].start <= r) {
			if (gens > 0 && next->gens[gens - 1].start == kept)
				gens--; /* the previous one stayed empty */
			next->gens[gens].uidvalidity = idx->gens[g].uidvalidity;
			next->gens[gens].start = kept;
			gens++;
			g++;
		}
		if (r == idx->count)
			break;
		if (slots_find(idx, index_rec(idx, r)) != (int64_t)r)
			continue;
		memcpy(next->recs + kept * STATE_INDEX_RECORD_SIZE,
		       index_rec(idx, r), STATE_INDEX_RECORD_SIZE);
		kept++;
	}
	next->records = kept;
	next->gen_count = gens;
}

static int index_compact(struct trib_state *state, struct state_index *idx,
			 uint32_t *next_file_id, bool *created_r)
{
	struct state_index_next *next = &idx->next;
	unsigned char header[STATE_INDEX_HEADER_SIZE];
	size_t size;
	const char *what = "create";
	char name[16];
	int fd;

	index_compacted(idx, next);
	size = (size_t)next->records * STATE_INDEX_RECORD_SIZE;
	next->file_id = (*next_file_id)++;
	index_name(next->file_id, name);
	fd = openat(state->index_fd, name,
		    O_WRONLY | O_CREAT | O_TRUNC | O_NOFOLLOW | O_CLOEXEC,
		    0600);
	if (fd < 0)
		goto fail;
	*created_r = true;
	trib_state_own_fd(state, fd);
	index_header(header);
	what = "write";
	if (pwrite_full(fd, header, sizeof(header), 0) < 0 ||
	    write_halves(fd, next->recs, size, sizeof(header),
			 "index-compact-mid") < 0)
		goto fail;
	TRIB_CRASH_POINT("index-compact-before-fsync");
	what = "fsync";
	if (fsync(fd) < 0)
		goto fail;
	what = "close";
	if (close(fd) < 0) {
		fd = -1;
		goto fail;
	}
	next->prepared = true;
	next->compacted = true;
	next->crc = trib_state_crc32c(0, next->recs, size);
	return 0;
fail:
	trib_state_set_error(state,
			     "state %s/%s: %s failed while compacting: %s "
			     "(the previous state is kept; the changes stay in "
			     "memory)",
			     state->index_path, name, what, strerror(errno));
	if (fd >= 0)
		close(fd);
	(void)unlinkat(state->index_fd, name, 0);
	free(next->recs);
	free(next->gens);
	memset(next, 0, sizeof(*next));
	return -1;
}

int trib_state_index_prepare(struct trib_state *state, struct state_index *idx,
			     uint32_t *next_file_id, bool *created_r)
{
	uint64_t replaced = idx->count - idx->live;
	bool compact = idx->compact_requested ||
		       (idx->loaded && replaced >= AUTO_COMPACT_MIN &&
			replaced >= idx->live);

	memset(&idx->next, 0, sizeof(idx->next));
	if (compact) {
		if (index_load(state, idx) < 0)
			return -1;
		return index_compact(state, idx, next_file_id, created_r);
	}
	if (idx->count > idx->committed)
		return index_append(state, idx, created_r);
	idx->next.prepared = true;
	idx->next.file_id = idx->file_id;
	idx->next.records = idx->committed;
	idx->next.crc = idx->crc;
	return 0;
}

void trib_state_index_abort(struct trib_state *state, struct state_index *idx)
{
	struct state_index_next *next = &idx->next;
	char name[16];
	int fd;

	if (!next->prepared)
		return;
	index_name(next->file_id, name);
	if (next->compacted || idx->committed == 0) {
		if (next->compacted || next->records > 0)
			(void)unlinkat(state->index_fd, name, 0);
	} else if (next->records > idx->committed) {
		/* Give the space back; the state file on disk never counted
		 * these bytes. */
		off_t size = STATE_INDEX_HEADER_SIZE +
			     (off_t)idx->committed * STATE_INDEX_RECORD_SIZE;

		fd = openat(state->index_fd, name,
			    O_WRONLY | O_NOFOLLOW | O_CLOEXEC);
		if (fd >= 0) {
			if (ftruncate(fd, size) < 0)
				errno = 0; /* best effort */
			close(fd);
		}
	}
	free(next->recs);
	free(next->gens);
	memset(next, 0, sizeof(*next));
}

uint32_t trib_state_index_finish(struct state_index *idx)
{
	struct state_index_next *next = &idx->next;
	uint32_t obsolete = 0;

	if (!next->prepared)
		return 0;
	if (next->compacted) {
		obsolete = idx->file_id;
		free(idx->recs);
		free(idx->gens);
		idx->recs = next->recs;
		idx->rec_alloc = next->records + 1;
		idx->gens = next->gens;
		idx->gen_count = next->gen_count;
		idx->gen_alloc = next->gen_count + 1;
		idx->file_id = next->file_id;
		idx->count = next->records;
		idx->base = 0;
		idx->loaded = true;
		idx->compact_requested = false;
		slots_build(idx);
	} else if (!idx->loaded) {
		/* Nothing is pending any more: forget the records. */
		free(idx->recs);
		idx->recs = NULL;
		idx->rec_alloc = 0;
		idx->base = next->records;
	}
	idx->committed = next->records;
	idx->crc = next->crc;
	memset(next, 0, sizeof(*next));
	return obsolete;
}
