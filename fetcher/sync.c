/* sync.c: one pass over one remote account (see sync.h and, for how the
 * pass is split up and chained on the loop, sync-private.h).
 *
 * Per folder: EXAMINE (CONDSTORE), then a metadata pass over the UIDs
 * above the cursor (UID, size, INTERNALDATE, flags, Message-ID), then the
 * bodies in windows, each literal streamed into one of N LMTP sessions
 * behind its trace header. The state records only what LMTP answered:
 * 250 delivered, 5xx rejected; anything else is left for the next pass.
 *
 * The pass starts with sync_start() and ends from the loop: the last
 * commit, the callback, then its struct sync is freed. sync_stop() ends
 * it early (see sync-private.h); sync_account() is the blocking form. */

#include "sync-private.h"

#include "alloc.h"
#include "crash.h"
#include "log.h"
#include "loop.h"

#include <event2/event.h>
#include <stdarg.h>
#include <stdlib.h>
#include <string.h>

static void next_folder(struct sync *s);

/* ---- results ---- */

void sync_result_error(struct sync_result *result, enum sync_status status,
		       const char *fmt, ...)
{
	va_list args;

	va_start(args, fmt);
	result->errors =
		trib_realloc(result->errors, (result->error_count + 1) *
						     sizeof(*result->errors));
	result->errors[result->error_count++] = trib_strdup_vprintf(fmt, args);
	va_end(args);
	if (status == SYNC_AUTH ||
	    (status == SYNC_CONFIG && result->status != SYNC_AUTH) ||
	    (status == SYNC_TEMP && result->status == SYNC_OK))
		result->status = status;
}

void sync_result_free(struct sync_result *result)
{
	for (unsigned int i = 0; i < result->error_count; i++)
		free(result->errors[i]);
	free(result->errors);
	memset(result, 0, sizeof(*result));
}

/* A reply's error without the "user/account: " prefix it starts with. */
const char *sync_reply_error(const struct sync *s,
			     const struct trib_imap_reply *reply)
{
	size_t len = strlen(s->name);

	if (reply->error == NULL)
		return "failed";
	if (strncmp(reply->error, s->name, len) == 0 &&
	    strncmp(reply->error + len, ": ", 2) == 0)
		return reply->error + len + 2;
	return reply->error;
}

/* ---- the end ---- */

void sync_progress_update(struct sync *s)
{
	if (s->set->progress != NULL)
		s->set->progress(&s->progress, s->set->progress_context);
}

static void logout_done(const struct trib_imap_reply *reply, void *context)
{
	struct sync *s = context;

	(void)reply; /* whatever the answer: the session is over */
	sync_session_over(s);
}

/* The end of the session: LOGOUT first while it is up, so the server
 * sees a polite goodbye rather than a dropped connection. */
void sync_account_finish(struct sync *s)
{
	if (s->logging_out)
		return; /* logout_done() follows */
	if (s->imap != NULL && trib_imap_client_is_authenticated(s->imap)) {
		s->logging_out = true;
		trib_imap_logout(s->imap, logout_done, s);
		return;
	}
	sync_session_over(s);
}

static void step_schedule(struct sync *s, enum sync_step step)
{
	static const struct timeval now = { 0, 0 };

	if (s->step == SYNC_STEP_END)
		return;
	s->step = step;
	evtimer_add(s->step_ev, &now);
}

void sync_session_over(struct sync *s)
{
	if (s->done)
		return;
	s->done = true;
	step_schedule(s, SYNC_STEP_SESSION_OVER);
}

void sync_end(struct sync *s)
{
	step_schedule(s, SYNC_STEP_END);
}

bool sync_stopped_reply(const struct sync *s,
			const struct trib_imap_reply *reply)
{
	return s->stopping && reply->status != TRIB_IMAP_STATUS_OK &&
	       reply->error_class == TRIB_ERR_CANCELED;
}

void sync_commit(struct sync *s)
{
	const char *error;

	s->since_commit = 0;
	if (s->result->state_failed)
		return;
	TRIB_CRASH_POINT("sync-before-commit");
	if (trib_state_commit(s->set->state, &error) < 0) {
		sync_result_error(s->result, SYNC_TEMP,
				  "%s: cannot save the state, stopping: %s",
				  s->name, error);
		s->result->state_failed = true;
		s->folder_failed = true;
		s->account_failed = true;
		return;
	}
	TRIB_CRASH_POINT("sync-after-commit");
}

/* Count the current window's messages left for the next pass, before
 * they are cleared. */
static void window_count_deferred(struct sync *s)
{
	unsigned int deferred = 0;

	for (unsigned int i = 0; i < s->msg_count; i++) {
		if (s->msgs[i].outcome == MSG_PENDING ||
		    s->msgs[i].outcome == MSG_DEFERRED)
			deferred++;
	}
	s->result->deferred += deferred;
	s->folder_deferred += deferred;
	if (deferred > 0 && s->result->status == SYNC_OK && !s->session_expired)
		s->result->status = SYNC_TEMP;
}

static void folder_finish(struct sync *s)
{
	window_count_deferred(s);
	if (s->session_expired) {
		/* the reconnect fetches them again (and counts them then),
		 * unless it does not happen (sync-connect.c) */
		s->result->new_count -= s->folder_deferred;
		s->result->deferred -= s->folder_deferred;
		s->cut_left += s->folder_deferred;
		s->folder_deferred = 0;
	}
	if (s->folder_deferred == 0 && !s->folder_failed && s->folder != NULL &&
	    s->uidnext != 0) {
		/* everything below UIDNEXT is done */
		trib_state_folder_set_uidnext(s->folder, s->uidnext);
		if (s->highestmodseq != 0)
			trib_state_folder_set_highestmodseq(s->folder,
							    s->highestmodseq);
	}
	s->uidnext = 0;
	s->highestmodseq = 0;
	s->meta_uidless = 0;
	s->meta_lo = s->meta_hi = 0;
	s->folder_deferred = 0;
	if (s->progress.total > 0) {
		s->progress.finished = true;
		sync_progress_update(s);
	}
	sync_commit(s);
	TRIB_CRASH_POINT("sync-folder-done");
	if (s->account->delete_remote && s->selected &&
	    !s->result->state_failed && !s->account_failed) {
		/* the commit above made what is done durable */
		sync_remove_done(s);
		return;
	}
	sync_folder_next(s);
}

void sync_folder_next(struct sync *s)
{
	s->selected = false;
	sync_msgs_clear(s);
	s->folder = NULL;
	s->folder_failed = false;
	/* the token expired: the reconnect goes on with this folder */
	if (!s->session_expired)
		s->folder_idx++;
	next_folder(s);
}

/* Called whenever something finished: move on when nothing is left. */
void sync_maybe_folder_done(struct sync *s)
{
	if (s->done || s->fetch_running || s->pending > 0 ||
	    s->cur_lmtp != NULL)
		return;
	if (!s->folder_failed && s->next_window < s->msg_count) {
		sync_body_window(s);
		return;
	}
	if (!s->folder_failed && sync_fetch_more(s)) {
		/* this window's messages are all answered: the next one */
		window_count_deferred(s);
		sync_msgs_clear(s);
		sync_fetch_metadata(s);
		return;
	}
	folder_finish(s);
}

void sync_fail_folder(struct sync *s, enum sync_status status, const char *what,
		      const struct trib_imap_reply *reply)
{
	if (sync_connect_expired(s, reply) || sync_stopped_reply(s, reply)) {
		/* not an error: the pass goes on after a reconnect */
		s->folder_failed = true;
		return;
	}
	sync_result_error(s->result, status, "%s: %s: %s", s->name, what,
			  sync_reply_error(s, reply));
	s->folder_failed = true;
	if (reply->error_class != TRIB_ERR_PERM || reply->status == 0)
		s->account_failed = true;
}

/* ---- folders ---- */

static void select_done(const struct trib_imap_reply *reply,
			const struct trib_imap_mailbox_info *info,
			void *context)
{
	struct sync *s = context;
	enum trib_state_uidvalidity_change change;
	uint32_t cursor;

	if (s->stopping) {
		/* no FETCH now: the folder ends here */
		s->folder_failed = true;
		sync_maybe_folder_done(s);
		return;
	}
	if (reply->status != TRIB_IMAP_STATUS_OK) {
		sync_fail_folder(s, SYNC_TEMP, "EXAMINE failed", reply);
		sync_maybe_folder_done(s);
		return;
	}
	if (info->uidvalidity == 0) {
		sync_result_error(s->result, SYNC_TEMP,
				  "%s: %s: the server sent no UIDVALIDITY",
				  s->name, s->folder_name);
		s->folder_failed = true;
		sync_maybe_folder_done(s);
		return;
	}
	s->uidvalidity = info->uidvalidity;
	change =
		trib_state_folder_set_uidvalidity(s->folder, info->uidvalidity);
	s->uidvalidity_changed = change == TRIB_STATE_UIDVALIDITY_CHANGED;
	if (s->uidvalidity_changed)
		trib_log(s->set->logger, TRIB_LOG_WARNING,
			 "%s: %s: UIDVALIDITY changed to %u: re-mapping "
			 "through the dedupe index",
			 s->name, s->folder_name, info->uidvalidity);
	TRIB_CRASH_POINT("sync-after-examine");
	s->selected = !info->read_only;
	s->uidnext = info->uidnext;
	s->highestmodseq = info->highestmodseq;
	cursor = trib_state_folder_cursor(s->folder);
	if (info->exists == 0 ||
	    (info->uidnext != 0 && info->uidnext <= cursor + 1)) {
		/* Nothing above the cursor: no FETCH at all (a pass with
		 * nothing new costs one EXAMINE per folder). An empty folder's
		 * UIDs below UIDNEXT are all gone. */
		if (info->uidnext > cursor + 1)
			trib_state_folder_skipped(s->folder, cursor + 1,
						  info->uidnext - 1);
		sync_maybe_folder_done(s);
		return;
	}
	sync_fetch_metadata(s);
}

static void next_folder(struct sync *s)
{
	const char *name;

	if (s->account_failed || s->folder_idx >= s->folder_count) {
		sync_account_finish(s);
		return;
	}
	name = s->folders[s->folder_idx];
	s->folder_name = name;
	memset(&s->progress, 0, sizeof(s->progress));
	s->progress.account = s->account->name;
	s->progress.folder = name;
	s->lmtp_error_shown = false;
	s->folder =
		trib_state_folder_get(s->set->state, s->account->name, name);
	if (s->folder == NULL) {
		sync_result_error(s->result, SYNC_CONFIG,
				  "%s: folder name '%s' cannot be kept in the "
				  "state; skipped",
				  s->name, name);
		s->folder_idx++;
		next_folder(s);
		return;
	}
	/* EXAMINE (read-only) unless fetched mail is removed afterwards */
	trib_imap_select(s->imap, name, !s->account->delete_remote, true,
			 select_done, s);
}

static void folders_resolved(struct sync *s)
{
	s->folders_listed = !s->account_failed;
	next_folder(s);
}

void sync_start_folders(struct sync *s)
{
	if (s->folders_listed)
		next_folder(s); /* a reconnect: where the pass was */
	else
		sync_folders_resolve(s, folders_resolved);
}

/* ---- the pass ---- */

int sync_lmtp_create(struct sync *s)
{
	struct trib_lmtp_client_settings lmtp_set;
	const char *error;

	s->lmtp_count = s->set->lmtp_sessions > 0 ? s->set->lmtp_sessions
						  : SYNC_DEFAULT_SESSIONS;
	s->lmtp = trib_calloc(s->lmtp_count, sizeof(*s->lmtp));
	memset(&lmtp_set, 0, sizeof(lmtp_set));
	lmtp_set.address = s->set->lmtp;
	lmtp_set.logger = s->set->logger;
	for (unsigned int i = 0; i < s->lmtp_count; i++) {
		s->lmtp[i] = trib_lmtp_client_create(
			s->loop, &lmtp_set, &sync_lmtp_handlers, s, &error);
		if (s->lmtp[i] == NULL) {
			sync_result_error(s->result, SYNC_CONFIG,
					  "%s: tributary_lmtp: %s", s->name,
					  error);
			s->lmtp_count = i;
			return -1;
		}
	}
	return 0;
}

/* The end: commit, let go of everything, the callback, free. */
static void sync_finish(struct sync *s)
{
	struct sync_result *result = s->result;

	evtimer_del(s->stop_ev);
	if (!result->skipped && trib_state_is_dirty(s->set->state))
		sync_commit(s);
	sync_abort_current(s, "stopping");
	sync_connect_close(s);
	sync_oauth_deinit(s);
	for (unsigned int i = 0; i < s->lmtp_count; i++)
		trib_lmtp_client_destroy(&s->lmtp[i]);
	if (s->stopping) {
		result->stopped = true;
		sync_result_error(result, SYNC_TEMP, "%s: stopped", s->name);
	}
	s->callback(result, s->context);

	free(s->lmtp);
	sync_msgs_clear(s);
	free(s->lmtp_error);
	free(s->remove_set);
	sync_folders_free(s);
	event_free(s->step_ev);
	event_free(s->stop_ev);
	free(s->name);
	free(s->recipient);
	free(s);
}

static void step_run(evutil_socket_t fd, short what, void *context)
{
	struct sync *s = context;

	(void)fd;
	(void)what;
	switch (s->step) {
	case SYNC_STEP_NONE:
		break;
	case SYNC_STEP_SESSION_OVER:
		s->step = SYNC_STEP_NONE;
		sync_connect_next(s);
		break;
	case SYNC_STEP_END:
		sync_finish(s);
		break;
	}
}

/* sync_stop() waited long enough: LMTP's answers still out are given up
 * (those messages are left for the next pass), the connection closed. */
static void stop_expired(evutil_socket_t fd, short what, void *context)
{
	struct sync *s = context;

	(void)fd;
	(void)what;
	trib_log(s->set->logger, TRIB_LOG_DEBUG,
		 "%s: stopping: no answer after %d s; closing", s->name,
		 SYNC_STOP_GRACE_SECS);
	for (unsigned int i = 0; i < s->lmtp_count; i++)
		trib_lmtp_client_destroy(&s->lmtp[i]);
	sync_connect_close(s);
	/* what the closing did not end yet (once per session) */
	sync_session_over(s);
}

struct sync *sync_start(struct trib_loop *loop, const struct sync_settings *set,
			const struct trib_account *account,
			struct sync_result *result_r,
			sync_done_callback_t *callback, void *context)
{
	struct event_base *base = trib_loop_base(loop);
	struct sync *s = trib_calloc(1, sizeof(*s));

	memset(result_r, 0, sizeof(*result_r));
	s->loop = loop;
	s->set = set;
	s->account = account;
	s->result = result_r;
	s->callback = callback;
	s->context = context;
	s->name = trib_strdup_printf("%s/%s", set->user, account->name);
	s->recipient = account->deliver_folder != NULL
			       ? trib_strdup_printf("%s+%s", set->user,
						    account->deliver_folder)
			       : trib_strdup(set->user);
	s->step_ev = evtimer_new(base, step_run, s);
	s->stop_ev = evtimer_new(base, stop_expired, s);

	result_r->skipped = true;
	sync_connect_begin(s);
	return s;
}

void sync_stop(struct sync *s)
{
	const struct timeval grace = { SYNC_STOP_GRACE_SECS, 0 };

	if (s->stopping || s->step == SYNC_STEP_END)
		return;
	trib_log(s->set->logger, TRIB_LOG_DEBUG, "%s: stopping", s->name);
	s->stopping = true;
	/* nothing new: no further window, folder or connection */
	s->folder_failed = true;
	s->account_failed = true;
	sync_abort_current(s, "stopping");
	evtimer_add(s->stop_ev, &grace);
	sync_oauth_stop(s);
	sync_connect_stop(s);
}

struct sync_wait {
	struct trib_loop *loop;
	bool done;
};

static void sync_wait_done(struct sync_result *result, void *context)
{
	struct sync_wait *w = context;

	(void)result;
	w->done = true;
	trib_loop_break(w->loop);
}

void sync_account(struct trib_loop *loop, const struct sync_settings *set,
		  const struct trib_account *account,
		  struct sync_result *result_r)
{
	struct sync_wait w = { .loop = loop };

	(void)sync_start(loop, set, account, result_r, sync_wait_done, &w);
	while (!w.done)
		trib_loop_run(loop);
}
