/* sync-deliver.c: the bodies of a folder's new messages (see
 * sync-private.h), fetched in windows and each literal streamed into the
 * least busy LMTP session behind its trace header; IMAP reading pauses
 * while every session is full. LMTP's answer is recorded in the state:
 * 250 delivered, 5xx rejected, anything else left for the next pass. */

#include "sync-private.h"

#include "alloc.h"
#include "crash.h"
#include "log.h"
#include "trace.h"

#include <event2/buffer.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

static void check_backpressure(struct sync *s);

/* ---- LMTP ---- */

/* Every open session is full. With none open, reading goes on: the
 * bodies are then dropped and the folder fails (never a stall). */
static bool lmtp_all_full(struct sync *s)
{
	bool any_open = false;

	for (unsigned int i = 0; i < s->lmtp_count; i++) {
		/* NULL: destroyed when sync_stop() gave up waiting */
		if (s->lmtp[i] == NULL ||
		    trib_lmtp_client_is_closed(s->lmtp[i]))
			continue;
		any_open = true;
		if (!trib_lmtp_client_is_full(s->lmtp[i]))
			return false;
	}
	return any_open;
}

/* Reading pauses while the session taking the literal being streamed is
 * full (the rest of that literal could go nowhere else: without this it
 * would pile up in that session's queue, and memory would grow with the
 * message's size), and, between literals, while every session is full
 * (the next message goes to the least busy one). */
static void check_backpressure(struct sync *s)
{
	bool full = s->cur_client != NULL &&
				    !trib_lmtp_client_is_closed(s->cur_client)
			    ? trib_lmtp_client_is_full(s->cur_client)
			    : lmtp_all_full(s);

	if (full != s->reading_paused && s->imap != NULL) {
		s->reading_paused = full;
		trib_imap_client_set_reading(s->imap, !full);
		trib_log(s->set->logger, TRIB_LOG_DEBUG,
			 "%s: LMTP sessions %s: IMAP reading %s", s->name,
			 full ? "full" : "drained",
			 full ? "paused" : "resumed");
	}
}

static void lmtp_drained(void *context)
{
	check_backpressure(context);
}

static void lmtp_closed(enum trib_error_class error_class, const char *error,
			void *context)
{
	struct sync *s = context;

	(void)error_class;
	if (error != NULL) {
		free(s->lmtp_error);
		s->lmtp_error = trib_strdup(error);
	}
	if (error != NULL && !s->lmtp_error_shown && s->pending > 0) {
		s->lmtp_error_shown = true;
		sync_result_error(s->result, SYNC_TEMP, "%s: LMTP: %s", s->name,
				  error);
	}
}

const struct trib_lmtp_client_handlers sync_lmtp_handlers = {
	.closed = lmtp_closed,
	.drained = lmtp_drained,
};

static struct trib_lmtp_client *lmtp_pick(struct sync *s)
{
	struct trib_lmtp_client *best = NULL;
	unsigned int best_pending = 0;

	for (unsigned int k = 0; k < s->lmtp_count; k++) {
		struct trib_lmtp_client *c =
			s->lmtp[(s->lmtp_rr + k) % s->lmtp_count];
		unsigned int p;

		if (c == NULL || trib_lmtp_client_is_closed(c))
			continue;
		p = trib_lmtp_client_messages_pending(c);
		if (best == NULL || p < best_pending) {
			best = c;
			best_pending = p;
		}
	}
	s->lmtp_rr++;
	return best;
}

static void lmtp_reply(const struct trib_lmtp_reply *reply, void *context)
{
	struct sync_msg *msg = context;
	struct sync *s = msg->sync;

	s->pending--;
	s->progress.answered++;
	sync_progress_update(s);
	if (reply->error_class == TRIB_OK) {
		TRIB_CRASH_POINT("sync-lmtp-250");
		msg->outcome = MSG_DELIVERED;
		s->result->delivered++;
		trib_state_folder_delivered(s->folder, msg->uid, &msg->key);
		TRIB_CRASH_POINT("sync-lmtp-recorded");
	} else if (reply->error_class == TRIB_ERR_PERM) {
		TRIB_CRASH_POINT("sync-lmtp-5xx");
		msg->outcome = MSG_REJECTED;
		s->result->rejected++;
		trib_state_folder_rejected(s->folder, msg->uid, time(NULL),
					   reply->error);
		sync_result_error(s->result, SYNC_OK,
				  "%s: %s UID %u rejected: %s", s->name,
				  s->folder_name, msg->uid, reply->error);
	} else {
		msg->outcome = MSG_DEFERRED;
		/* TRIB_ERR_CANCELED: we aborted it ourselves
		 * (sync_abort_current, the IMAP side failed mid-message) and
		 * that failure is already reported where it happened: one
		 * fault, one line. */
		if (!s->lmtp_error_shown &&
		    reply->error_class != TRIB_ERR_CANCELED) {
			s->lmtp_error_shown = true;
			sync_result_error(s->result, SYNC_TEMP,
					  "%s: %s UID %u deferred: %s", s->name,
					  s->folder_name, msg->uid,
					  reply->error != NULL ? reply->error
							       : "?");
		}
	}
	if (reply->error_class == TRIB_OK ||
	    reply->error_class == TRIB_ERR_PERM) {
		if (++s->since_commit >= SYNC_COMMIT_EVERY)
			sync_commit(s);
	}
	check_backpressure(s);
	sync_maybe_folder_done(s);
}

/* ---- bodies ---- */

static uint32_t literal_uid(struct sync *s, const struct trib_imap_literal *lit)
{
	struct sync_msg *msg;
	uint32_t uid;

	for (unsigned int i = 0; i + 1 < lit->prev_count; i++) {
		if (trib_imap_arg_atom_equals(&lit->prev_args[i], "UID") &&
		    trib_imap_arg_get_u32(&lit->prev_args[i + 1], &uid))
			return uid;
	}
	msg = sync_msg_find_seq(s, lit->seq);
	return msg != NULL ? msg->uid : 0;
}

static void body_begin(const struct trib_imap_literal *lit, void *context)
{
	struct sync *s = context;
	struct trib_trace_fields fields;
	struct trib_lmtp_client *lmtp;
	struct sync_msg *msg;
	struct evbuffer *buf;
	const char *error;
	char *line;
	size_t len;

	s->cur = NULL;
	s->cur_client = NULL;
	msg = sync_msg_find_uid(s, literal_uid(s, lit));
	if (msg == NULL || msg->outcome != MSG_PENDING || s->folder_failed)
		return;
	lmtp = lmtp_pick(s);
	if (lmtp == NULL) {
		if (!s->lmtp_error_shown) {
			s->lmtp_error_shown = true;
			sync_result_error(
				s->result, SYNC_TEMP, "%s: LMTP: %s%s", s->name,
				s->lmtp_error != NULL ? s->lmtp_error
						      : s->set->lmtp,
				s->lmtp_error != NULL ? ""
						      : ": no session is up");
		}
		s->folder_failed = true;
		return;
	}
	memset(&fields, 0, sizeof(fields));
	fields.recipient = s->set->user;
	fields.account = s->account->name;
	fields.provider = s->account->provider->name;
	fields.folder = s->folder_name;
	fields.uidvalidity = s->uidvalidity;
	fields.uid = msg->uid;
	fields.have_flags = true;
	fields.flags = (const char *const *)msg->flags;
	fields.flag_count = msg->flag_count;
	line = trib_trace_header_build(s->set->keys, &fields, &len, &error);
	if (line == NULL) {
		sync_result_error(s->result, SYNC_TEMP,
				  "%s: %s UID %u: trace header: %s", s->name,
				  s->folder_name, msg->uid, error);
		return;
	}
	msg->outcome = MSG_SENT;
	s->pending++;
	s->cur = msg;
	s->cur_client = lmtp;
	s->cur_lmtp = trib_lmtp_message_begin(lmtp, s->recipient,
					      lit->size + len, lmtp_reply, msg);
	buf = evbuffer_new();
	evbuffer_add(buf, line, len);
	trib_lmtp_message_write(s->cur_lmtp, buf);
	evbuffer_free(buf);
	free(line);
	TRIB_CRASH_POINT("sync-body-begin");
}

static void body_data(struct evbuffer *data, void *context)
{
	struct sync *s = context;

	if (s->cur_lmtp == NULL)
		return;
	s->progress.bytes_streamed += evbuffer_get_length(data);
	trib_lmtp_message_write(s->cur_lmtp, data);
	TRIB_CRASH_POINT("sync-body-data");
	check_backpressure(s);
}

static void body_end(void *context)
{
	struct sync *s = context;

	if (s->cur_lmtp != NULL)
		trib_lmtp_message_finish(&s->cur_lmtp);
	s->cur = NULL;
	s->cur_client = NULL;
	TRIB_CRASH_POINT("sync-body-end");
	check_backpressure(s);
}

void sync_abort_current(struct sync *s, const char *reason)
{
	if (s->cur_lmtp != NULL)
		trib_lmtp_message_abort(&s->cur_lmtp, reason);
	s->cur = NULL;
	s->cur_client = NULL;
}

static void body_done(const struct trib_imap_reply *reply, void *context)
{
	struct sync *s = context;

	s->fetch_running = false;
	if (reply->status != TRIB_IMAP_STATUS_OK) {
		sync_abort_current(s, "the IMAP connection failed mid-message");
		sync_fail_folder(s, SYNC_TEMP, "fetching bodies", reply);
	}
	sync_maybe_folder_done(s);
}

static const struct trib_imap_fetch_handler body_handler = {
	.literal_begin = body_begin,
	.literal_data = body_data,
	.literal_end = body_end,
	.done = body_done,
};

void sync_body_window(struct sync *s)
{
	struct evbuffer *set = evbuffer_new();
	unsigned int n = 0;
	size_t len;
	char *str;

	while (s->next_window < s->msg_count && n < SYNC_WINDOW) {
		struct sync_msg *msg = &s->msgs[s->next_window++];

		if (msg->outcome != MSG_PENDING)
			continue;
		evbuffer_add_printf(set, "%s%u", n > 0 ? "," : "", msg->uid);
		n++;
	}
	if (n == 0) {
		evbuffer_free(set);
		sync_maybe_folder_done(s);
		return;
	}
	len = evbuffer_get_length(set);
	str = trib_malloc(len + 1);
	evbuffer_remove(set, str, len);
	str[len] = '\0';
	evbuffer_free(set);
	TRIB_CRASH_POINT("sync-body-window");
	s->fetch_running = true;
	trib_imap_uid_fetch(s->imap, str, "UID BODY.PEEK[]", &body_handler, s);
	free(str);
}
