/* sync.c: one pass over one remote account (see sync.h).
 *
 * Per folder: EXAMINE (CONDSTORE), then a metadata pass over the UIDs
 * above the cursor (UID, size, INTERNALDATE, flags, Message-ID), then the
 * bodies in windows, each literal streamed into one of N LMTP sessions
 * behind its trace header. The state records only what LMTP answered:
 * 250 delivered, 5xx rejected; anything else is left for the next pass. */

#include "sync.h"

#include "alloc.h"
#include "cli.h"
#include "imap-commands.h"
#include "lmtp-client.h"
#include "loop.h"
#include "state.h"
#include "trace.h"

#include <ctype.h>
#include <event2/buffer.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <time.h>

#define SYNC_WINDOW 100
#define SYNC_COMMIT_EVERY 100
#define SYNC_HEADER_MAX 8192
#define SYNC_DEFAULT_SESSIONS 4

enum msg_outcome {
	MSG_PENDING,   /* not sent yet */
	MSG_SENT,      /* handed to LMTP, no answer yet */
	MSG_DELIVERED, /* 250 */
	MSG_REJECTED,  /* 5xx */
	MSG_DEFERRED,  /* 4xx, or not delivered */
	MSG_REMAPPED,  /* found in the index after a UIDVALIDITY change */
};

struct sync;

struct sync_msg {
	struct sync *sync;
	uint32_t seq, uid;
	uint64_t size;
	struct trib_state_key key;
	char **flags;
	unsigned int flag_count;
	enum msg_outcome outcome;
};

struct sync {
	struct trib_loop *loop;
	const struct sync_settings *set;
	const struct trib_account *account;
	struct sync_result *result;
	char *name;	 /* user/account */
	char *recipient; /* user or user+Folder */

	struct trib_imap_client *imap;
	struct trib_lmtp_client **lmtp;
	unsigned int lmtp_count;
	bool reading_paused;

	unsigned int folder_idx;
	const char *folder_name;
	struct trib_state_folder *folder;
	uint32_t uidvalidity;
	bool uidvalidity_changed;

	struct sync_msg *msgs;
	unsigned int msg_count, msg_alloc;
	unsigned int next_window; /* index into msgs */

	/* metadata pass: the header literal of the current FETCH */
	char header[SYNC_HEADER_MAX + 1];
	size_t header_len;
	bool header_seen;

	/* body pass: the literal being streamed */
	struct sync_msg *cur;
	struct trib_lmtp_message *cur_lmtp;
	unsigned int lmtp_rr;

	unsigned int pending; /* LMTP answers outstanding */
	unsigned int since_commit;
	bool fetch_running;
	bool folder_failed;  /* stop this folder: wait for pending, then next */
	bool account_failed; /* stop the account */
	bool lmtp_error_shown;
	char *lmtp_error; /* why the last LMTP session closed */
	bool done;
};

static void next_folder(struct sync *s);
static void body_window(struct sync *s);

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

/* ---- helpers ---- */

static void msgs_clear(struct sync *s)
{
	for (unsigned int i = 0; i < s->msg_count; i++) {
		for (unsigned int j = 0; j < s->msgs[i].flag_count; j++)
			free(s->msgs[i].flags[j]);
		free(s->msgs[i].flags);
	}
	free(s->msgs);
	s->msgs = NULL;
	s->msg_count = s->msg_alloc = 0;
	s->next_window = 0;
}

static int msg_cmp(const void *a, const void *b)
{
	const struct sync_msg *x = a, *y = b;

	return x->uid < y->uid ? -1 : x->uid > y->uid ? 1 : 0;
}

static struct sync_msg *msg_find_uid(struct sync *s, uint32_t uid)
{
	struct sync_msg key = { .uid = uid };

	return bsearch(&key, s->msgs, s->msg_count, sizeof(*s->msgs), msg_cmp);
}

static struct sync_msg *msg_find_seq(struct sync *s, uint32_t seq)
{
	for (unsigned int i = 0; i < s->msg_count; i++) {
		if (s->msgs[i].seq == seq)
			return &s->msgs[i];
	}
	return NULL;
}

static const char *month_names[] = { "jan", "feb", "mar", "apr", "may", "jun",
				     "jul", "aug", "sep", "oct", "nov", "dec" };

/* INTERNALDATE "17-Jul-1996 02:44:25 -0700" into seconds since the
 * epoch; 0 when it cannot be parsed. */
static int64_t parse_internaldate(const char *str)
{
	char mon[4];
	int day, year, hh, mm, ss, zone, month = -1, n = 0;
	char sign;
	struct tm tm;
	int64_t t;

	if (str == NULL)
		return 0;
	while (*str == ' ')
		str++;
	if (sscanf(str, "%d-%3c-%d %d:%d:%d %c%4d%n", &day, mon, &year, &hh,
		   &mm, &ss, &sign, &zone, &n) != 8 ||
	    n == 0)
		return 0;
	mon[3] = '\0';
	for (int i = 0; i < 12; i++) {
		if (strcasecmp(mon, month_names[i]) == 0)
			month = i;
	}
	if (month < 0 || (sign != '+' && sign != '-'))
		return 0;
	memset(&tm, 0, sizeof(tm));
	tm.tm_mday = day;
	tm.tm_mon = month;
	tm.tm_year = year - 1900;
	tm.tm_hour = hh;
	tm.tm_min = mm;
	tm.tm_sec = ss;
	t = (int64_t)timegm(&tm);
	zone = (zone / 100) * 3600 + (zone % 100) * 60;
	return sign == '+' ? t - zone : t + zone;
}

/* The Message-ID value from a "Message-ID: ..." header block, unfolded
 * and trimmed, in buf; NULL when there is none. */
static const char *header_message_id(const char *block, size_t len, char *buf,
				     size_t size)
{
	static const char name[] = "message-id:";
	size_t i = 0, out = 0;

	while (i < len) {
		size_t line_end = i;

		while (line_end < len && block[line_end] != '\n')
			line_end++;
		if (line_end - i >= sizeof(name) - 1 &&
		    strncasecmp(block + i, name, sizeof(name) - 1) == 0) {
			size_t p = i + sizeof(name) - 1;

			for (;;) {
				for (; p < len && block[p] != '\n'; p++) {
					if (block[p] != '\r' && out + 1 < size)
						buf[out++] = block[p];
				}
				/* folded continuation line? */
				if (p + 1 < len && (block[p + 1] == ' ' ||
						    block[p + 1] == '\t'))
					p++;
				else
					break;
			}
			buf[out] = '\0';
			/* trim */
			while (out > 0 && isspace((unsigned char)buf[out - 1]))
				buf[--out] = '\0';
			i = 0;
			while (buf[i] != '\0' && isspace((unsigned char)buf[i]))
				i++;
			return buf[i] == '\0' ? NULL : buf + i;
		}
		i = line_end + 1;
	}
	return NULL;
}

/* A reply's error without the "user/account: " prefix it starts with. */
static const char *reply_error(const struct sync *s,
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

static void account_finish(struct sync *s)
{
	s->done = true;
	trib_loop_break(s->loop);
}

static void commit(struct sync *s)
{
	const char *error;

	s->since_commit = 0;
	if (s->result->state_failed)
		return;
	if (trib_state_commit(s->set->state, &error) < 0) {
		sync_result_error(s->result, SYNC_TEMP,
				  "%s: cannot save the state, stopping: %s",
				  s->name, error);
		s->result->state_failed = true;
		s->folder_failed = true;
		s->account_failed = true;
	}
}

static void folder_finish(struct sync *s)
{
	unsigned int deferred = 0;

	for (unsigned int i = 0; i < s->msg_count; i++) {
		if (s->msgs[i].outcome == MSG_PENDING ||
		    s->msgs[i].outcome == MSG_DEFERRED)
			deferred++;
	}
	s->result->deferred += deferred;
	if (deferred > 0 && s->result->status == SYNC_OK)
		s->result->status = SYNC_TEMP;
	commit(s);
	msgs_clear(s);
	s->folder = NULL;
	s->folder_failed = false;
	s->folder_idx++;
	next_folder(s);
}

/* Called whenever something finished: move on when nothing is left. */
static void maybe_folder_done(struct sync *s)
{
	if (s->done || s->fetch_running || s->pending > 0 ||
	    s->cur_lmtp != NULL)
		return;
	if (!s->folder_failed && s->next_window < s->msg_count) {
		body_window(s);
		return;
	}
	folder_finish(s);
}

static void fail_folder(struct sync *s, enum sync_status status,
			const char *what, const struct trib_imap_reply *reply)
{
	sync_result_error(s->result, status, "%s: %s: %s", s->name, what,
			  reply_error(s, reply));
	s->folder_failed = true;
	if (reply->error_class != TRIB_ERR_PERM || reply->status == 0)
		s->account_failed = true;
}

/* ---- LMTP ---- */

/* Every open session is full. With none open, reading goes on: the
 * bodies are then dropped and the folder fails (never a stall). */
static bool lmtp_all_full(struct sync *s)
{
	bool any_open = false;

	for (unsigned int i = 0; i < s->lmtp_count; i++) {
		if (trib_lmtp_client_is_closed(s->lmtp[i]))
			continue;
		any_open = true;
		if (!trib_lmtp_client_is_full(s->lmtp[i]))
			return false;
	}
	return any_open;
}

static void check_backpressure(struct sync *s)
{
	bool full = lmtp_all_full(s);

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

static const struct trib_lmtp_client_handlers lmtp_handlers = {
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

		if (trib_lmtp_client_is_closed(c))
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
	if (reply->error_class == TRIB_OK) {
		msg->outcome = MSG_DELIVERED;
		s->result->delivered++;
		trib_state_folder_delivered(s->folder, msg->uid, &msg->key);
	} else if (reply->error_class == TRIB_ERR_PERM) {
		msg->outcome = MSG_REJECTED;
		s->result->rejected++;
		trib_state_folder_rejected(s->folder, msg->uid, time(NULL),
					   reply->error);
		sync_result_error(s->result, SYNC_OK,
				  "%s: %s UID %u rejected: %s", s->name,
				  s->folder_name, msg->uid, reply->error);
	} else {
		msg->outcome = MSG_DEFERRED;
		/* TRIB_ERR_CANCELED: we aborted it ourselves (abort_current,
		 * the IMAP side failed mid-message) and that failure is
		 * already reported where it happened: one fault, one line. */
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
			commit(s);
	}
	check_backpressure(s);
	maybe_folder_done(s);
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
	msg = msg_find_seq(s, lit->seq);
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
	msg = msg_find_uid(s, literal_uid(s, lit));
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
	s->cur_lmtp = trib_lmtp_message_begin(lmtp, s->recipient,
					      lit->size + len, lmtp_reply, msg);
	buf = evbuffer_new();
	evbuffer_add(buf, line, len);
	trib_lmtp_message_write(s->cur_lmtp, buf);
	evbuffer_free(buf);
	free(line);
}

static void body_data(struct evbuffer *data, void *context)
{
	struct sync *s = context;

	if (s->cur_lmtp == NULL)
		return;
	trib_lmtp_message_write(s->cur_lmtp, data);
	check_backpressure(s);
}

static void body_end(void *context)
{
	struct sync *s = context;

	if (s->cur_lmtp != NULL)
		trib_lmtp_message_finish(&s->cur_lmtp);
	s->cur = NULL;
	check_backpressure(s);
}

static void abort_current(struct sync *s, const char *reason)
{
	if (s->cur_lmtp != NULL)
		trib_lmtp_message_abort(&s->cur_lmtp, reason);
	s->cur = NULL;
}

static void body_done(const struct trib_imap_reply *reply, void *context)
{
	struct sync *s = context;

	s->fetch_running = false;
	if (reply->status != TRIB_IMAP_STATUS_OK) {
		abort_current(s, "the IMAP connection failed mid-message");
		fail_folder(s, SYNC_TEMP, "fetching bodies", reply);
	}
	maybe_folder_done(s);
}

static const struct trib_imap_fetch_handler body_handler = {
	.literal_begin = body_begin,
	.literal_data = body_data,
	.literal_end = body_end,
	.done = body_done,
};

static void body_window(struct sync *s)
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
		maybe_folder_done(s);
		return;
	}
	len = evbuffer_get_length(set);
	str = trib_malloc(len + 1);
	evbuffer_remove(set, str, len);
	str[len] = '\0';
	evbuffer_free(set);
	s->fetch_running = true;
	trib_imap_uid_fetch(s->imap, str, "UID BODY.PEEK[]", &body_handler, s);
	free(str);
}

/* ---- metadata ---- */

static void meta_begin(const struct trib_imap_literal *lit, void *context)
{
	struct sync *s = context;

	(void)lit;
	s->header_len = 0;
	s->header_seen = true;
}

static void meta_data(struct evbuffer *data, void *context)
{
	struct sync *s = context;
	size_t room = SYNC_HEADER_MAX - s->header_len;
	size_t n = evbuffer_get_length(data);

	if (n > room)
		n = room;
	if (n > 0)
		evbuffer_remove(data, s->header + s->header_len, n);
	s->header_len += n;
	/* the rest is discarded by the client */
}

static void meta_end(void *context)
{
	(void)context;
}

static int flag_cmp(const void *a, const void *b)
{
	const char *x = *(char *const *)a, *y = *(char *const *)b;
	int sx = x[0] == '\\', sy = y[0] == '\\';

	return sx != sy ? sy - sx : 0;
}

static void meta_message(const struct trib_imap_fetch_msg *fm, void *context)
{
	struct sync *s = context;
	struct sync_msg *msg;
	const char *message_id = NULL, *str;
	char idbuf[SYNC_HEADER_MAX + 1];
	bool seen = s->header_seen;

	s->header_seen = false;
	if (fm->uid == 0 || fm->uid <= trib_state_folder_cursor(s->folder) ||
	    trib_state_folder_is_done(s->folder, fm->uid))
		return;
	if (seen) {
		s->header[s->header_len] = '\0';
		message_id = header_message_id(s->header, s->header_len, idbuf,
					       sizeof(idbuf));
	} else {
		/* a header sent as a quoted string */
		for (unsigned int i = 0; i + 1 < fm->item_count; i++) {
			if (fm->items[i].type == TRIB_IMAP_ARG_ATOM &&
			    strncasecmp(fm->items[i].u.s.str, "BODY[", 5) ==
				    0 &&
			    trib_imap_arg_get_astring(&fm->items[i + 1], &str))
				message_id = header_message_id(
					str, strlen(str), idbuf, sizeof(idbuf));
		}
	}
	if (s->msg_count == s->msg_alloc) {
		s->msg_alloc = s->msg_alloc == 0 ? 64 : s->msg_alloc * 2;
		s->msgs =
			trib_realloc(s->msgs, s->msg_alloc * sizeof(*s->msgs));
	}
	msg = &s->msgs[s->msg_count++];
	memset(msg, 0, sizeof(*msg));
	msg->sync = s;
	msg->seq = fm->seq;
	msg->uid = fm->uid;
	msg->size = fm->has_size ? fm->size : 0;
	trib_state_key_message(message_id, msg->size,
			       parse_internaldate(fm->internaldate), &msg->key);
	if (fm->flag_count > 0) {
		msg->flags = trib_calloc(fm->flag_count, sizeof(char *));
		for (unsigned int i = 0; i < fm->flag_count; i++) {
			/* \Recent belongs to one session, not the message */
			if (trib_imap_arg_get_astring(&fm->flags[i], &str) &&
			    str[0] != '\0' && strcasecmp(str, "\\Recent") != 0)
				msg->flags[msg->flag_count++] =
					trib_strdup(str);
		}
		qsort(msg->flags, msg->flag_count, sizeof(char *), flag_cmp);
	}
}

static void remap(struct sync *s)
{
	uint32_t old_uv, old_uid;
	const char *error;
	int ret;

	for (unsigned int i = 0; i < s->msg_count; i++) {
		struct sync_msg *msg = &s->msgs[i];

		ret = trib_state_folder_lookup(s->folder, &msg->key, &old_uv,
					       &old_uid, &error);
		if (ret < 0) {
			sync_result_error(s->result, SYNC_TEMP,
					  "%s: %s: dedupe index: %s", s->name,
					  s->folder_name, error);
			s->folder_failed = true;
			return;
		}
		if (ret == 0)
			continue;
		trib_log(s->set->logger, TRIB_LOG_INFO,
			 "%s: %s: UIDVALIDITY %u UID %u re-mapped to "
			 "UIDVALIDITY %u UID %u (delivered before)",
			 s->name, s->folder_name, old_uv, old_uid,
			 s->uidvalidity, msg->uid);
		trib_state_folder_delivered(s->folder, msg->uid, &msg->key);
		msg->outcome = MSG_REMAPPED;
		s->result->remapped++;
	}
}

static void meta_done(const struct trib_imap_reply *reply, void *context)
{
	struct sync *s = context;

	s->fetch_running = false;
	if (reply->status != TRIB_IMAP_STATUS_OK) {
		fail_folder(s, SYNC_TEMP, "fetching metadata", reply);
		msgs_clear(s);
		maybe_folder_done(s);
		return;
	}
	/* qsort() must not get NULL, even for zero elements (C11 7.22.5) */
	if (s->msg_count > 1)
		qsort(s->msgs, s->msg_count, sizeof(*s->msgs), msg_cmp);
	/* the same UID twice (it cannot be, but never deliver it twice) */
	for (unsigned int i = 1; i < s->msg_count; i++) {
		if (s->msgs[i].uid == s->msgs[i - 1].uid)
			s->msgs[i].outcome = MSG_REMAPPED;
	}
	s->result->new_count += s->msg_count;
	if (s->uidvalidity_changed)
		remap(s);
	maybe_folder_done(s);
}

static const struct trib_imap_fetch_handler meta_handler = {
	.message = meta_message,
	.literal_begin = meta_begin,
	.literal_data = meta_data,
	.literal_end = meta_end,
	.done = meta_done,
};

/* ---- folders ---- */

static void select_done(const struct trib_imap_reply *reply,
			const struct trib_imap_mailbox_info *info,
			void *context)
{
	struct sync *s = context;
	enum trib_state_uidvalidity_change change;
	char set[32];

	if (reply->status != TRIB_IMAP_STATUS_OK) {
		fail_folder(s, SYNC_TEMP, "EXAMINE failed", reply);
		maybe_folder_done(s);
		return;
	}
	if (info->uidvalidity == 0) {
		sync_result_error(s->result, SYNC_TEMP,
				  "%s: %s: the server sent no UIDVALIDITY",
				  s->name, s->folder_name);
		s->folder_failed = true;
		maybe_folder_done(s);
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
	if (info->exists == 0) {
		maybe_folder_done(s);
		return;
	}
	snprintf(set, sizeof(set), "%u:*",
		 trib_state_folder_cursor(s->folder) + 1);
	s->fetch_running = true;
	trib_imap_uid_fetch(s->imap, set,
			    "UID RFC822.SIZE INTERNALDATE FLAGS "
			    "BODY.PEEK[HEADER.FIELDS (MESSAGE-ID)]",
			    &meta_handler, s);
}

static void next_folder(struct sync *s)
{
	const char *name;

	if (s->account_failed || s->folder_idx >= s->account->folder_count) {
		account_finish(s);
		return;
	}
	name = s->account->folders[s->folder_idx];
	s->folder_name = name;
	s->lmtp_error_shown = false;
	if (strchr(name, '*') != NULL || strchr(name, '%') != NULL) {
		sync_result_error(s->result, SYNC_CONFIG,
				  "%s: folder pattern '%s' is not supported "
				  "yet (name folders one by one); skipped",
				  s->name, name);
		s->folder_idx++;
		next_folder(s);
		return;
	}
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
	trib_imap_select(s->imap, name, true, true, select_done, s);
}

/* ---- connection ---- */

static void imap_event(const struct trib_imap_event *event, void *context)
{
	struct sync *s = context;

	switch (event->type) {
	case TRIB_IMAP_EVENT_DISCONNECTED:
		abort_current(s, "the IMAP connection was lost mid-message");
		s->account_failed = true;
		break;
	case TRIB_IMAP_EVENT_ALERT:
		sync_result_error(s->result, SYNC_OK, "%s: server alert: %s",
				  s->name, event->text);
		break;
	default:
		break;
	}
}

static void auth_done(const struct trib_imap_reply *reply, void *context)
{
	struct sync *s = context;

	if (reply->status != TRIB_IMAP_STATUS_OK) {
		sync_result_error(
			s->result,
			reply->error_class == TRIB_ERR_PERM ||
					(reply->code != NULL &&
					 strcmp(reply->code,
						"AUTHENTICATIONFAILED") == 0)
				? SYNC_AUTH
				: SYNC_TEMP,
			"%s: authentication failed: %s", s->name,
			reply_error(s, reply));
		account_finish(s);
		return;
	}
	next_folder(s);
}

struct connect_ctx {
	struct sync *sync;
	char *password;
};

static void connect_done(const struct trib_imap_reply *reply, void *context)
{
	struct connect_ctx *ctx = context;
	struct sync *s = ctx->sync;
	char *password = ctx->password;

	free(ctx);
	if (reply->status != TRIB_IMAP_STATUS_OK) {
		trib_secret_free(&password);
		sync_result_error(s->result,
				  reply->error_class == TRIB_ERR_PERM
					  ? SYNC_AUTH
					  : SYNC_TEMP,
				  "%s: cannot connect: %s", s->name,
				  reply_error(s, reply));
		account_finish(s);
		return;
	}
	trib_imap_client_authenticate(s->imap, s->account->sasl[0],
				      s->account->login, password, auth_done,
				      s);
	trib_secret_free(&password);
}

void sync_account(struct trib_loop *loop, const struct sync_settings *set,
		  const struct trib_account *account,
		  struct sync_result *result_r)
{
	struct trib_imap_client_settings imap_set;
	struct trib_lmtp_client_settings lmtp_set;
	struct connect_ctx *ctx;
	struct sync s;
	const char *error;
	char *password;

	memset(result_r, 0, sizeof(*result_r));
	memset(&s, 0, sizeof(s));
	s.loop = loop;
	s.set = set;
	s.account = account;
	s.result = result_r;
	s.name = trib_strdup_printf("%s/%s", set->user, account->name);
	s.recipient = account->deliver_folder != NULL
			      ? trib_strdup_printf("%s+%s", set->user,
						   account->deliver_folder)
			      : trib_strdup(set->user);

	result_r->skipped = true;
	if (account->auth != TRIB_AUTH_PASSWORD_FILE) {
		sync_result_error(result_r, SYNC_CONFIG,
				  "%s: auth %s needs `tributary authorize` "
				  "(not built yet)",
				  s.name, trib_auth_method_name(account->auth));
		goto out;
	}
	if (account->password_file == NULL || account->sasl_count == 0) {
		sync_result_error(result_r, SYNC_CONFIG,
				  "%s: auth password_file needs "
				  "tributary_%s_password_file and a SASL "
				  "mechanism",
				  s.name, account->name);
		goto out;
	}
	password = cli_read_secret(account->password_file, "");
	if (password == NULL) {
		sync_result_error(result_r, SYNC_CONFIG,
				  "%s: cannot read the password from %s",
				  s.name, account->password_file);
		goto out;
	}

	memset(&imap_set, 0, sizeof(imap_set));
	imap_set.name = s.name;
	imap_set.host = account->host;
	imap_set.port = account->port;
	imap_set.tls_mode = account->tls;
	imap_set.ca_file = account->ca_file;
	imap_set.tls_verify = account->tls_verify;
	imap_set.logger = set->logger;
	s.imap = trib_imap_client_create(loop, &imap_set, &error);
	if (s.imap == NULL) {
		trib_secret_free(&password);
		sync_result_error(result_r, SYNC_CONFIG, "%s: %s", s.name,
				  error);
		goto out;
	}
	trib_imap_client_set_event_handler(s.imap, imap_event, &s);

	s.lmtp_count = set->lmtp_sessions > 0 ? set->lmtp_sessions
					      : SYNC_DEFAULT_SESSIONS;
	s.lmtp = trib_calloc(s.lmtp_count, sizeof(*s.lmtp));
	memset(&lmtp_set, 0, sizeof(lmtp_set));
	lmtp_set.address = set->lmtp;
	lmtp_set.logger = set->logger;
	for (unsigned int i = 0; i < s.lmtp_count; i++) {
		s.lmtp[i] = trib_lmtp_client_create(loop, &lmtp_set,
						    &lmtp_handlers, &s, &error);
		if (s.lmtp[i] == NULL) {
			trib_secret_free(&password);
			sync_result_error(result_r, SYNC_CONFIG,
					  "%s: tributary_lmtp: %s", s.name,
					  error);
			s.lmtp_count = i;
			goto out;
		}
	}

	result_r->skipped = false;
	ctx = trib_calloc(1, sizeof(*ctx));
	ctx->sync = &s;
	ctx->password = password;
	trib_imap_client_connect(s.imap, connect_done, ctx);
	while (!s.done)
		trib_loop_run(loop);
	if (trib_state_is_dirty(set->state))
		commit(&s);
out:
	abort_current(&s, "stopping");
	if (s.imap != NULL)
		trib_imap_client_destroy(&s.imap);
	for (unsigned int i = 0; i < s.lmtp_count; i++)
		trib_lmtp_client_destroy(&s.lmtp[i]);
	free(s.lmtp);
	msgs_clear(&s);
	free(s.lmtp_error);
	free(s.name);
	free(s.recipient);
}
