/* state-folder.c: a user's folders in the state (state.h): their
 * UIDVALIDITY, cursor and done UIDs above it, rejected messages,
 * HIGHESTMODSEQ and UIDNEXT, and their dedupe index (state-index.c). */

#include "state-private.h"

#include "settings.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

/* ---- folders ---- */

struct trib_state_folder *trib_state_folder_new(struct trib_state *state,
						const char *account,
						const char *name)
{
	struct trib_state_folder *folder = trib_calloc(1, sizeof(*folder));

	folder->state = state;
	folder->account = trib_strdup(account);
	folder->name = trib_strdup(name);
	if (state->folder_count == state->folder_alloc) {
		state->folder_alloc =
			state->folder_alloc == 0 ? 8 : state->folder_alloc * 2;
		state->folders = trib_realloc(state->folders,
					      state->folder_alloc *
						      sizeof(*state->folders));
	}
	state->folders[state->folder_count++] = folder;
	return folder;
}

struct trib_state_folder *trib_state_folder_find(struct trib_state *state,
						 const char *account,
						 const char *name)
{
	for (unsigned int i = 0; i < state->folder_count; i++) {
		struct trib_state_folder *f = state->folders[i];

		if (strcmp(f->account, account) == 0 &&
		    strcmp(f->name, name) == 0)
			return f;
	}
	return NULL;
}

struct trib_state_folder *trib_state_folder_get(struct trib_state *state,
						const char *account,
						const char *name)
{
	struct trib_state_folder *folder;
	size_t len = strlen(name);

	if (!trib_settings_valid_account_name(account) || len == 0 ||
	    len > TRIB_STATE_FOLDER_NAME_MAX)
		return NULL;
	folder = trib_state_folder_find(state, account, name);
	if (folder != NULL)
		return folder;
	folder = trib_state_folder_new(state, account, name);
	folder->index.file_id = state->next_index_id++;
	folder->index.base = 0;
	state->dirty = true;
	return folder;
}

unsigned int trib_state_folder_count(const struct trib_state *state)
{
	return state->folder_count;
}

struct trib_state_folder *trib_state_folder_at(struct trib_state *state,
					       unsigned int idx)
{
	return idx < state->folder_count ? state->folders[idx] : NULL;
}

const char *trib_state_folder_account(const struct trib_state_folder *folder)
{
	return folder->account;
}

const char *trib_state_folder_name(const struct trib_state_folder *folder)
{
	return folder->name;
}

uint32_t trib_state_folder_uidvalidity(const struct trib_state_folder *folder)
{
	return folder->uidvalidity;
}

enum trib_state_uidvalidity_change
trib_state_folder_set_uidvalidity(struct trib_state_folder *folder,
				  uint32_t uidvalidity)
{
	bool first = folder->uidvalidity == 0;

	if (uidvalidity == 0 || uidvalidity == folder->uidvalidity)
		return TRIB_STATE_UIDVALIDITY_SAME;
	folder->uidvalidity = uidvalidity;
	folder->cursor = 0;
	folder->done_count = 0;
	folder->highestmodseq = 0;
	folder->uidnext = 0;
	trib_state_index_add_gen(&folder->index, uidvalidity,
				 folder->index.count);
	folder->state->dirty = true;
	return first ? TRIB_STATE_UIDVALIDITY_FIRST
		     : TRIB_STATE_UIDVALIDITY_CHANGED;
}

uint32_t trib_state_folder_cursor(const struct trib_state_folder *folder)
{
	return folder->cursor;
}

/* The first range whose last >= uid, or done_count. */
static unsigned int done_search(const struct trib_state_folder *folder,
				uint64_t uid)
{
	unsigned int lo = 0, hi = folder->done_count;

	while (lo < hi) {
		unsigned int mid = lo + (hi - lo) / 2;

		if (folder->done[mid].last < uid)
			lo = mid + 1;
		else
			hi = mid;
	}
	return lo;
}

bool trib_state_folder_is_done(const struct trib_state_folder *folder,
			       uint32_t uid)
{
	unsigned int i;

	if (uid <= folder->cursor)
		return true;
	i = done_search(folder, uid);
	return i < folder->done_count && folder->done[i].first <= uid;
}

uint64_t trib_state_folder_done_above(const struct trib_state_folder *folder)
{
	uint64_t n = 0;

	for (unsigned int i = 0; i < folder->done_count; i++)
		n += (uint64_t)folder->done[i].last - folder->done[i].first + 1;
	return n;
}

void trib_state_folder_mark_done(struct trib_state_folder *folder,
				 uint32_t first, uint32_t last)
{
	unsigned int i, j;
	uint32_t new_first = first, new_last = last;

	if (first == 0)
		first = new_first = 1;
	if (last < first || last <= folder->cursor)
		return;
	if (first <= folder->cursor)
		first = new_first = folder->cursor + 1;
	folder->state->dirty = true;
	/* Ranges i..j-1 touch or overlap first..last: merge them. */
	i = done_search(folder, (uint64_t)first - 1);
	for (j = i; j < folder->done_count &&
		    folder->done[j].first <= (uint64_t)last + 1;
	     j++) {
		if (folder->done[j].first < new_first)
			new_first = folder->done[j].first;
		if (folder->done[j].last > new_last)
			new_last = folder->done[j].last;
	}
	if (j == i) {
		if (folder->done_count == folder->done_alloc) {
			folder->done_alloc = folder->done_alloc == 0
						     ? 16
						     : folder->done_alloc * 2;
			folder->done = trib_realloc(
				folder->done,
				folder->done_alloc * sizeof(*folder->done));
		}
		memmove(folder->done + i + 1, folder->done + i,
			(folder->done_count - i) * sizeof(*folder->done));
		folder->done_count++;
	} else if (j > i + 1) {
		memmove(folder->done + i + 1, folder->done + j,
			(folder->done_count - j) * sizeof(*folder->done));
		folder->done_count -= j - i - 1;
	}
	folder->done[i].first = new_first;
	folder->done[i].last = new_last;
	/* The cursor moves over a contiguous run only. */
	if (folder->done[0].first == (uint64_t)folder->cursor + 1) {
		folder->cursor = folder->done[0].last;
		memmove(folder->done, folder->done + 1,
			(folder->done_count - 1) * sizeof(*folder->done));
		folder->done_count--;
	}
}

void trib_state_folder_delivered(struct trib_state_folder *folder, uint32_t uid,
				 const struct trib_state_key *key)
{
	if (uid == 0)
		return;
	if (key != NULL) {
		if (folder->index.gen_count == 0) {
			trib_state_index_add_gen(&folder->index,
						 folder->uidvalidity,
						 folder->index.count);
		}
		trib_state_index_add(&folder->index, key, uid);
		folder->state->dirty = true;
	}
	trib_state_folder_mark_done(folder, uid, uid);
}

void trib_state_folder_skipped(struct trib_state_folder *folder, uint32_t first,
			       uint32_t last)
{
	trib_state_folder_mark_done(folder, first, last);
}

/* One printable line of at most TRIB_STATE_REASON_MAX bytes, not cut
 * inside a UTF-8 sequence. */
static char *reason_clean(const char *reason)
{
	size_t len = strlen(reason);
	char *clean;

	while (len > 0 && (reason[len - 1] == '\n' || reason[len - 1] == '\r'))
		len--;
	if (len == 0)
		return trib_strdup("(no reason given)");
	if (len > TRIB_STATE_REASON_MAX) {
		len = TRIB_STATE_REASON_MAX;
		while (len > 0 && ((unsigned char)reason[len] & 0xc0) == 0x80)
			len--;
	}
	clean = trib_strndup(reason, len);
	for (size_t i = 0; i < len; i++) {
		if ((unsigned char)clean[i] < 0x20 || clean[i] == 0x7f)
			clean[i] = '?';
	}
	return clean;
}

void trib_state_folder_rejected(struct trib_state_folder *folder, uint32_t uid,
				time_t when, const char *reason)
{
	struct trib_state_rejected *r = NULL;

	if (uid == 0)
		return;
	for (unsigned int i = 0; i < folder->rejected_count; i++) {
		if (folder->rejected[i].uid == uid &&
		    folder->rejected[i].uidvalidity == folder->uidvalidity) {
			r = &folder->rejected[i];
			free((char *)r->reason);
			break;
		}
	}
	if (r == NULL) {
		if (folder->rejected_count == folder->rejected_alloc) {
			folder->rejected_alloc =
				folder->rejected_alloc == 0
					? 4
					: folder->rejected_alloc * 2;
			folder->rejected =
				trib_realloc(folder->rejected,
					     folder->rejected_alloc *
						     sizeof(*folder->rejected));
		}
		r = &folder->rejected[folder->rejected_count++];
	}
	r->uidvalidity = folder->uidvalidity;
	r->uid = uid;
	r->time = (int64_t)when;
	r->reason = reason_clean(reason);
	folder->state->dirty = true;
	trib_state_folder_mark_done(folder, uid, uid);
}

const struct trib_state_rejected *
trib_state_folder_rejected_list(const struct trib_state_folder *folder,
				unsigned int *count_r)
{
	*count_r = folder->rejected_count;
	return folder->rejected;
}

uint64_t trib_state_folder_highestmodseq(const struct trib_state_folder *folder)
{
	return folder->highestmodseq;
}

void trib_state_folder_set_highestmodseq(struct trib_state_folder *folder,
					 uint64_t modseq)
{
	if (folder->highestmodseq != modseq)
		folder->state->dirty = true;
	folder->highestmodseq = modseq;
}

uint32_t trib_state_folder_uidnext(const struct trib_state_folder *folder)
{
	return folder->uidnext;
}

void trib_state_folder_set_uidnext(struct trib_state_folder *folder,
				   uint32_t uidnext)
{
	if (folder->uidnext != uidnext)
		folder->state->dirty = true;
	folder->uidnext = uidnext;
}

int trib_state_folder_lookup(struct trib_state_folder *folder,
			     const struct trib_state_key *key,
			     uint32_t *uidvalidity_r, uint32_t *uid_r,
			     const char **error_r)
{
	int ret = trib_state_index_lookup(folder->state, &folder->index, key,
					  uidvalidity_r, uid_r);

	*error_r = ret < 0 ? folder->state->error : NULL;
	return ret;
}

uint64_t trib_state_folder_key_count(const struct trib_state_folder *folder)
{
	return folder->index.count;
}

void trib_state_folder_compact(struct trib_state_folder *folder)
{
	folder->index.compact_requested = true;
	folder->state->dirty = true;
}
