/* sync-fetch.c: the metadata pass of a folder (see sync-private.h):
 * UID, size, INTERNALDATE, flags and Message-ID of every UID above the
 * cursor, sorted by UID; after a UIDVALIDITY change the messages the
 * dedupe index knows are re-mapped instead of delivered again. */

#include "sync-private.h"

#include "alloc.h"
#include "crash.h"
#include "log.h"

#include <ctype.h>
#include <event2/buffer.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <time.h>

void sync_msgs_clear(struct sync *s)
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

struct sync_msg *sync_msg_find_uid(struct sync *s, uint32_t uid)
{
	struct sync_msg key = { .uid = uid };

	return bsearch(&key, s->msgs, s->msg_count, sizeof(*s->msgs), msg_cmp);
}

struct sync_msg *sync_msg_find_seq(struct sync *s, uint32_t seq)
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
	if (fm->uid == 0)
		s->meta_uidless++;
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
	TRIB_CRASH_POINT("sync-meta-message");
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
		TRIB_CRASH_POINT("sync-remapped");
	}
}

/* UIDs above the cursor and below EXAMINE's UIDNEXT that the metadata
 * pass did not return do not exist any more (RFC 3501 2.3.1.1: UIDs are
 * given in ascending order, and every message below UIDNEXT existed when
 * the folder was examined): mark them done so that the cursor can move
 * past them. Without this an expunged message would hold the cursor
 * down, and every later pass would fetch the metadata from there on. */
static void skip_gaps(struct sync *s)
{
	uint32_t next = s->meta_lo, end;

	if (s->uidnext == 0 || s->meta_uidless > 0)
		return;
	/* the window's UIDs below UIDNEXT: next .. end - 1 */
	end = s->meta_hi != 0 && s->meta_hi < s->uidnext ? s->meta_hi + 1
							 : s->uidnext;
	for (unsigned int i = 0; i < s->msg_count && next < end; i++) {
		uint32_t uid = s->msgs[i].uid;

		if (uid > next)
			trib_state_folder_skipped(
				s->folder, next, uid < end ? uid - 1 : end - 1);
		if (uid >= next)
			next = uid + 1;
	}
	if (next < end)
		trib_state_folder_skipped(s->folder, next, end - 1);
}

static void meta_done(const struct trib_imap_reply *reply, void *context)
{
	struct sync *s = context;

	s->fetch_running = false;
	if (reply->status != TRIB_IMAP_STATUS_OK) {
		sync_fail_folder(s, SYNC_TEMP, "fetching metadata", reply);
		sync_msgs_clear(s);
		sync_maybe_folder_done(s);
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
	skip_gaps(s);
	if (s->uidvalidity_changed)
		remap(s);
	TRIB_CRASH_POINT("sync-meta-done");
	if (s->meta_hi != 0) {
		/* the next window starts after this one; sparse UIDs
		 * (few messages in this window) widen it */
		s->meta_lo = s->meta_hi + 1;
		if (s->msg_count < SYNC_META_WINDOW / 4 &&
		    s->meta_width < (1u << 30))
			s->meta_width *= 2;
	}
	for (unsigned int i = 0; i < s->msg_count; i++) {
		if (s->msgs[i].outcome != MSG_PENDING)
			continue;
		s->progress.total++;
		s->progress.bytes_total += s->msgs[i].size;
	}
	sync_progress_update(s);
	sync_maybe_folder_done(s);
}

static const struct trib_imap_fetch_handler meta_handler = {
	.message = meta_message,
	.literal_begin = meta_begin,
	.literal_data = meta_data,
	.literal_end = meta_end,
	.done = meta_done,
};

bool sync_fetch_more(const struct sync *s)
{
	return s->meta_hi != 0;
}

void sync_fetch_metadata(struct sync *s)
{
	char set[32];

	if (s->meta_lo == 0) {
		/* the folder's first window */
		s->meta_lo = trib_state_folder_cursor(s->folder) + 1;
		s->meta_width = SYNC_META_WINDOW;
	}
	/* The last window is "lo:*"; before it, ranges below UIDNEXT. */
	if (s->uidnext == 0 || s->meta_width >= s->uidnext ||
	    s->meta_lo >= s->uidnext - s->meta_width) {
		s->meta_hi = 0;
		snprintf(set, sizeof(set), "%u:*", s->meta_lo);
	} else {
		s->meta_hi = s->meta_lo + s->meta_width - 1;
		snprintf(set, sizeof(set), "%u:%u", s->meta_lo, s->meta_hi);
	}
	s->fetch_running = true;
	trib_imap_uid_fetch(s->imap, set,
			    "UID RFC822.SIZE INTERNALDATE FLAGS "
			    "BODY.PEEK[HEADER.FIELDS (MESSAGE-ID)]",
			    &meta_handler, s);
}
