/* sync-folders.c: the folders one pass goes through (see
 * sync-private.h). tributary_<acct>_folders holds names and patterns
 * (`*` any characters, `%` any but the hierarchy separator, as in IMAP
 * LIST); each pattern is expanded with LIST "" pattern, all of them
 * pipelined, before the first folder is examined.
 *
 * The list keeps the configured order (a pattern's matches in the order
 * the server lists them) and each folder once. A name given as such is
 * always fetched. A pattern never selects a folder the server marks
 * \Noselect or \NonExistent, nor one whose special use says it holds
 * copies of mail kept elsewhere (\All, \Flagged, Gmail's \Important) or
 * mail nobody wants in an inbox by surprise (\Junk, \Trash, \Sent,
 * \Drafts): to fetch those, name them. A pattern that matches nothing is
 * not an error (the folders may come later); it is logged. */

#include "sync-private.h"

#include "alloc.h"
#include "log.h"

#include <stdlib.h>
#include <string.h>

#define PATTERN_SKIP_FLAGS                                                     \
	(TRIB_IMAP_LIST_NOSELECT | TRIB_IMAP_LIST_NONEXISTENT |                \
	 TRIB_IMAP_LIST_ALL | TRIB_IMAP_LIST_FLAGGED |                         \
	 TRIB_IMAP_LIST_IMPORTANT | TRIB_IMAP_LIST_JUNK |                      \
	 TRIB_IMAP_LIST_TRASH | TRIB_IMAP_LIST_SENT | TRIB_IMAP_LIST_DRAFTS)

struct list_req {
	struct sync *sync;
	unsigned int idx; /* into account->folders */
};

static bool is_pattern(const char *name)
{
	return strchr(name, '*') != NULL || strchr(name, '%') != NULL;
}

static void folders_add(struct sync *s, const char *name)
{
	for (unsigned int i = 0; i < s->folder_count; i++) {
		if (strcmp(s->folders[i], name) == 0)
			return;
	}
	s->folders = trib_realloc(s->folders,
				  (s->folder_count + 1) * sizeof(*s->folders));
	s->folders[s->folder_count++] = trib_strdup(name);
}

/* Everything is answered: build the list in the configured order. */
static void folders_build(struct sync *s)
{
	const struct trib_account *a = s->account;

	for (unsigned int i = 0; i < a->folder_count; i++) {
		if (!is_pattern(a->folders[i])) {
			folders_add(s, a->folders[i]);
			continue;
		}
		for (unsigned int j = 0; j < s->matches[i].count; j++)
			folders_add(s, s->matches[i].names[j]);
	}
}

static void list_done(const struct trib_imap_reply *reply,
		      const struct trib_imap_list_entry *entries,
		      unsigned int count, void *context)
{
	struct list_req *req = context;
	struct sync *s = req->sync;
	const char *pattern = s->account->folders[req->idx];
	struct sync_matches *m = &s->matches[req->idx];

	free(req);
	if (reply->status != TRIB_IMAP_STATUS_OK) {
		/* a token that expired mid-session: the reconnect lists
		 * again, without an error line */
		if (!s->account_failed && !sync_connect_expired(s, reply))
			sync_result_error(s->result, SYNC_TEMP,
					  "%s: LIST \"%s\": %s", s->name,
					  pattern, sync_reply_error(s, reply));
		s->account_failed = true;
	} else {
		for (unsigned int i = 0; i < count; i++) {
			if ((entries[i].flags & PATTERN_SKIP_FLAGS) != 0)
				continue;
			m->names = trib_realloc(
				m->names, (m->count + 1) * sizeof(char *));
			m->names[m->count++] = trib_strdup(entries[i].name);
		}
		trib_log(s->set->logger,
			 m->count == 0 ? TRIB_LOG_INFO : TRIB_LOG_DEBUG,
			 "%s: folder pattern '%s' matches %u folder%s", s->name,
			 pattern, m->count, m->count == 1 ? "" : "s");
	}
	if (--s->lists_pending > 0)
		return;
	if (!s->account_failed)
		folders_build(s);
	s->folders_ready(s);
}

void sync_folders_resolve(struct sync *s, void (*ready)(struct sync *s))
{
	const struct trib_account *a = s->account;

	s->folders_ready = ready;
	s->matches = trib_calloc(a->folder_count + 1, sizeof(*s->matches));
	for (unsigned int i = 0; i < a->folder_count; i++) {
		struct list_req *req;

		if (!is_pattern(a->folders[i]))
			continue;
		req = trib_calloc(1, sizeof(*req));
		req->sync = s;
		req->idx = i;
		s->lists_pending++;
		trib_imap_list(s->imap, a->folders[i], list_done, req);
	}
	if (s->lists_pending == 0) {
		folders_build(s);
		ready(s);
	}
}

void sync_folders_free(struct sync *s)
{
	for (unsigned int i = 0; i < s->folder_count; i++)
		free(s->folders[i]);
	free(s->folders);
	s->folders = NULL;
	s->folder_count = 0;
	if (s->matches != NULL) {
		for (unsigned int i = 0; i < s->account->folder_count; i++) {
			for (unsigned int j = 0; j < s->matches[i].count; j++)
				free(s->matches[i].names[j]);
			free(s->matches[i].names);
		}
		free(s->matches);
		s->matches = NULL;
	}
}
