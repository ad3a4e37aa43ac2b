/* sync-remove.c: for an account with tributary_<acct>_remote = delete,
 * the folder's messages that are done are removed from the remote server
 * once the state that records them is committed (see sync-private.h).
 *
 * What is removed is every UID up to the cursor (all of them delivered,
 * re-mapped after a UIDVALIDITY change, or gaps) except the ones LMTP
 * rejected for good, which stay on the server where the user can still
 * read them. So a pass cut after its commit and before its EXPUNGE (a
 * lost connection, a crash) is made up for by the next pass, and turning
 * an account from keep to delete removes what was fetched before too, as
 * fetchmail without --keep would. UIDs done above the cursor wait until
 * the cursor passes them.
 *
 * UID STORE +FLAGS.SILENT (\Deleted), then UID EXPUNGE of the same set
 * (UIDPLUS): a plain EXPUNGE would also remove messages that the user or
 * another client flagged \Deleted, so without UIDPLUS nothing is touched
 * and the pass says why. */

#include "sync-private.h"

#include "alloc.h"
#include "crash.h"
#include "log.h"

#include <event2/buffer.h>
#include <stdlib.h>
#include <string.h>

static int uid_cmp(const void *a, const void *b)
{
	uint32_t x = *(const uint32_t *)a, y = *(const uint32_t *)b;

	return x < y ? -1 : x > y ? 1 : 0;
}

static void add_range(struct evbuffer *set, uint32_t first, uint32_t last)
{
	const char *sep = evbuffer_get_length(set) > 0 ? "," : "";

	if (first == last)
		evbuffer_add_printf(set, "%s%u", sep, first);
	else
		evbuffer_add_printf(set, "%s%u:%u", sep, first, last);
}

/* "1:cursor" without the rejected UIDs of this UIDVALIDITY; NULL when
 * that leaves nothing. */
static char *removable_set(struct sync *s)
{
	const struct trib_state_rejected *rejected;
	uint32_t cursor = trib_state_folder_cursor(s->folder), next = 1;
	unsigned int count, n = 0;
	struct evbuffer *set;
	uint32_t *skip;
	size_t len;
	char *str;

	if (cursor == 0)
		return NULL;
	rejected = trib_state_folder_rejected_list(s->folder, &count);
	skip = trib_calloc(count + 1, sizeof(*skip));
	for (unsigned int i = 0; i < count; i++) {
		if (rejected[i].uidvalidity == s->uidvalidity &&
		    rejected[i].uid <= cursor)
			skip[n++] = rejected[i].uid;
	}
	if (n > 1)
		qsort(skip, n, sizeof(*skip), uid_cmp);
	set = evbuffer_new();
	for (unsigned int i = 0; i < n; i++) {
		if (skip[i] > next)
			add_range(set, next, skip[i] - 1);
		if (skip[i] >= next)
			next = skip[i] + 1;
	}
	if (next <= cursor)
		add_range(set, next, cursor);
	free(skip);
	len = evbuffer_get_length(set);
	if (len == 0) {
		evbuffer_free(set);
		return NULL;
	}
	str = trib_malloc(len + 1);
	evbuffer_remove(set, str, len);
	str[len] = '\0';
	evbuffer_free(set);
	return str;
}

static void remove_finish(struct sync *s)
{
	free(s->remove_set);
	s->remove_set = NULL;
	sync_folder_next(s);
}

static void expunge_done(const struct trib_imap_reply *reply, void *context)
{
	struct sync *s = context;

	if (reply->status != TRIB_IMAP_STATUS_OK &&
	    (sync_connect_expired(s, reply) || sync_stopped_reply(s, reply))) {
		/* the reconnect (or the next pass) removes them: the cursor
		 * is committed */
	} else if (reply->status != TRIB_IMAP_STATUS_OK) {
		sync_result_error(s->result, SYNC_TEMP,
				  "%s: %s: delivered messages not removed from "
				  "the server (next pass tries again): UID "
				  "EXPUNGE: %s",
				  s->name, s->folder_name,
				  sync_reply_error(s, reply));
	} else {
		trib_log(s->set->logger, TRIB_LOG_DEBUG,
			 "%s: %s: removed UIDs %s from the server", s->name,
			 s->folder_name, s->remove_set);
	}
	remove_finish(s);
}

static void store_done(const struct trib_imap_reply *reply, void *context)
{
	struct sync *s = context;

	if (reply->status != TRIB_IMAP_STATUS_OK &&
	    (sync_connect_expired(s, reply) || sync_stopped_reply(s, reply))) {
		/* the reconnect (or the next pass) removes them */
		remove_finish(s);
		return;
	}
	if (reply->status != TRIB_IMAP_STATUS_OK) {
		sync_result_error(s->result, SYNC_TEMP,
				  "%s: %s: delivered messages not removed from "
				  "the server (next pass tries again): UID "
				  "STORE: %s",
				  s->name, s->folder_name,
				  sync_reply_error(s, reply));
		remove_finish(s);
		return;
	}
	TRIB_CRASH_POINT("sync-remove-flagged");
	trib_imap_uid_expunge(s->imap, s->remove_set, expunge_done, s);
}

void sync_remove_done(struct sync *s)
{
	if (!trib_imap_client_has_capability(s->imap, "UIDPLUS")) {
		if (!s->remove_warned) {
			s->remove_warned = true;
			sync_result_error(s->result, SYNC_CONFIG,
					  "%s: the server has no UIDPLUS, so "
					  "fetched mail "
					  "stays on it (remote = delete would "
					  "also remove "
					  "messages others flagged \\Deleted)",
					  s->name);
		}
		sync_folder_next(s);
		return;
	}
	s->remove_set = removable_set(s);
	if (s->remove_set == NULL) {
		sync_folder_next(s);
		return;
	}
	trib_imap_uid_store_deleted(s->imap, s->remove_set, store_done, s);
}
