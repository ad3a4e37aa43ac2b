/* tributary-lmtp-plugin.c: the delivery hook of the LMTP plugin
 * (tributary-lmtp-plugin.h): trace header, delivered record, and the
 * delivery itself through the hook it wraps.
 *
 * What lib-lda's mail_deliver() does with a hook's answer (2.3.19.1,
 * src/lib-lda/mail-deliver.c, mail_do_deliver()), which this file relies
 * on:
 *   > 0  success; the mail may or may not have been saved (Sieve's
 *        discard, redirect) -> LMTP 250;
 *   <= 0 failure, unless ctx->saved_mail (then 250 all the same); a
 *        temporary one (ctx->tempfail_error, or a MAIL_ERROR_TEMP of the
 *        storage in *storage_r) -> LMTP 451 with that text; otherwise
 *        lib-lda saves into the default mailbox (unless the hook tried
 *        that: ctx->tried_default_save) and then into INBOX.
 * So for a traced message those fallback saves are done here, inside the
 * hook, where the id can be marked after them; an untraced message gets
 * exactly the answer of the hook we wrap. */

#include "lib.h"
#include "buffer.h"
#include "istream.h"
#include "mail-deliver.h"
#include "message-size.h"
#include "mail-storage.h"
#include "mail-user.h"

#include "tributary-lmtp-plugin.h"

#include "delivered.h"
#include "trace.h"

#include <stdlib.h>

/* How much of a message's header is searched for the topmost trace
 * header. The fetcher writes its header first; LMTP puts only its
 * Return-Path, Delivered-To and Received before it, so a trace header
 * of Tributary's is always within the first few kilobytes, and none
 * past this can be the topmost one of a fetched message. */
#define TRIB_LMTP_HEADER_SCAN_MAX (64 * 1024)

const char *tributary_lmtp_plugin_version = DOVECOT_ABI_VERSION;
const char tributary_lmtp_plugin_binary_dependency[] = "lmtp";

static deliver_mail_func_t *next_deliver_mail;

enum trace_check {
	TRACE_CHECK_TEMPFAIL = -1,
	/* no trace header, or the topmost does not verify */
	TRACE_CHECK_UNTRACED = 0,
	TRACE_CHECK_NEW,
	TRACE_CHECK_DUPLICATE,
};

struct delivery {
	struct mail_deliver_context *ctx;
	struct event *event;
	struct trib_trace *trace;
	struct trib_delivered *rec;
	unsigned char id[TRIB_DELIVERED_ID_SIZE];
};

/* The message's header block, at most TRIB_LMTP_HEADER_SCAN_MAX bytes of
 * it, cut after a line end when it is longer. */
static int header_read(struct mail *mail, buffer_t *buf, const char **error_r)
{
	struct message_size hdr_size;
	struct istream *input;
	const unsigned char *data;
	const char *error = NULL;
	size_t size, want;
	uoff_t start;

	if (mail_get_hdr_stream_because(mail, &hdr_size,
					"tributary trace header", &input) < 0) {
		*error_r = mailbox_get_last_internal_error(mail->box, NULL);
		return -1;
	}
	want = hdr_size.physical_size < TRIB_LMTP_HEADER_SCAN_MAX
		       ? (size_t)hdr_size.physical_size
		       : TRIB_LMTP_HEADER_SCAN_MAX;
	start = input->v_offset;
	while (buf->used < want &&
	       i_stream_read_more(input, &data, &size) > 0) {
		if (size > want - buf->used)
			size = want - buf->used;
		buffer_append(buf, data, size);
		i_stream_skip(input, size);
	}
	if (input->stream_errno != 0)
		error = t_strdup(i_stream_get_error(input));
	i_stream_seek(input, start);
	if (error != NULL) {
		*error_r = error;
		return -1;
	}
	if (want < hdr_size.physical_size) {
		const unsigned char *p = buf->data;
		size_t len = buf->used;

		while (len > 0 && p[len - 1] != '\n')
			len--;
		buffer_set_used_size(buf, len);
	}
	return 0;
}

/* The record's path for the user: tributary_delivered_path, ~/ expanded. */
static const char *record_path(struct mail_user *user, const char **error_r)
{
	const char *path;

	path = tributary_lmtp_setting(user, "tributary_delivered_path",
				      TRIB_DELIVERED_DEFAULT_PATH);
	if (str_begins(path, "~/") &&
	    mail_user_try_home_expand(user, &path) < 0) {
		*error_r = t_strdup_printf("delivered record %s: user %s has "
					   "no home directory",
					   path, user->username);
		return NULL;
	}
	if (path[0] != '/') {
		*error_r = t_strdup_printf("delivered record %s: "
					   "tributary_delivered_path must be "
					   "an absolute path or start with ~/",
					   path);
		return NULL;
	}
	return path;
}

/* Is this a traced message, and was it delivered before? On
 * TRACE_CHECK_TEMPFAIL, *error_r says why (one line; logged already). */
static enum trace_check trace_check(struct delivery *d, const char **error_r)
{
	struct mail_user *user = d->ctx->rcpt_user;
	const struct trib_trace_keys *keys;
	const char *error, *path;
	buffer_t *buf;
	char *value;
	size_t value_len;
	int ret;

	buf = t_buffer_create(4096);
	if (header_read(d->ctx->src_mail, buf, &error) < 0) {
		*error_r = t_strdup_printf("reading the message header for "
					   "its trace header: %s",
					   error);
		e_error(d->event, "%s", *error_r);
		return TRACE_CHECK_TEMPFAIL;
	}
	if (trib_trace_header_find(buf->data, buf->used, &value, &value_len) ==
	    0)
		return TRACE_CHECK_UNTRACED;

	/* logs a key problem once per process, not once a message */
	keys = tributary_lmtp_keys_get(user, d->event, error_r);
	if (keys == NULL) {
		free(value);
		return TRACE_CHECK_TEMPFAIL;
	}
	ret = trib_trace_parse_verify(value, value_len, keys, user->username,
				      &d->trace, &error);
	free(value);
	if (ret < 0) {
		e_debug(d->event,
			"the topmost X-Tributary-Trace header does not verify "
			"(%s): delivered as an untraced message",
			error);
		return TRACE_CHECK_UNTRACED;
	}
	if (!trib_delivered_id_parse(d->trace->id, d->id))
		i_panic("tributary: bad trace id %s", d->trace->id);

	path = record_path(user, &error);
	if (path == NULL || trib_delivered_open(path, 0, &d->rec, &error) < 0 ||
	    (ret = trib_delivered_lookup(d->rec, d->id, &error)) < 0) {
		*error_r = t_strdup(error);
		e_error(d->event, "trace id %s: %s", d->trace->id, error);
		return TRACE_CHECK_TEMPFAIL;
	}
	return ret > 0 ? TRACE_CHECK_DUPLICATE : TRACE_CHECK_NEW;
}

static bool deliver_tempfailed(struct mail_deliver_context *ctx,
			       struct mail_storage *storage)
{
	enum mail_error error;

	if (ctx->tempfail_error != NULL)
		return TRUE;
	if (storage == NULL)
		return FALSE;
	(void)mail_storage_get_last_error(storage, &error);
	return error == MAIL_ERROR_TEMP;
}

/* The hook we wrap, or none: 0 tells lib-lda to do its default save. */
static int deliver_next(struct mail_deliver_context *ctx,
			struct mail_storage **storage_r)
{
	if (next_deliver_mail == NULL)
		return 0;
	return next_deliver_mail(ctx, storage_r);
}

/* What mail_deliver() does after a hook that failed without saving and
 * without a temporary error: the default mailbox (unless tried), then
 * INBOX. 1 saved, -1 not. */
static int deliver_fallback(struct mail_deliver_context *ctx,
			    struct mail_storage **storage_r)
{
	int ret = -1;

	if (!ctx->tried_default_save) {
		ret = mail_deliver_save(ctx, ctx->rcpt_default_mailbox, 0, NULL,
					storage_r);
		if (ret < 0 && deliver_tempfailed(ctx, *storage_r))
			return -1;
	}
	if (ret < 0 && strcasecmp(ctx->rcpt_default_mailbox, "INBOX") != 0)
		ret = mail_deliver_save(ctx, "INBOX", 0, NULL, storage_r);
	return ret < 0 ? -1 : 1;
}

/* A traced message seen for the first time: deliver, then mark. */
static int deliver_traced(struct delivery *d, struct mail_storage **storage_r)
{
	struct mail_deliver_context *ctx = d->ctx;
	const char *error;
	int ret;

	ret = deliver_next(ctx, storage_r);
	if (ret <= 0 && !ctx->saved_mail &&
	    !deliver_tempfailed(ctx, *storage_r))
		ret = deliver_fallback(ctx, storage_r);
	if (ret <= 0 && !ctx->saved_mail)
		return ret; /* not delivered: not marked, LMTP says why */

	if (trib_delivered_mark(d->rec, d->id, &error) >= 0) {
		e_debug(d->event, "trace id %s delivered and recorded",
			d->trace->id);
		return ret;
	}
	if (ctx->saved_mail) {
		/* lib-lda answers 250 for saved mail whatever we return */
		e_error(d->event,
			"trace id %s was delivered but not recorded: %s "
			"(fetched again, it would be stored again)",
			d->trace->id, error);
		return ret;
	}
	/* handled without a save (discard, redirect): defer it, the
	 * retry does the same again */
	ctx->tempfail_error = p_strdup(ctx->pool, error);
	e_error(d->event, "trace id %s: %s", d->trace->id, error);
	return -1;
}

static int tributary_lmtp_deliver_mail(struct mail_deliver_context *ctx,
				       struct mail_storage **storage_r)
{
	struct delivery d;
	const char *error = NULL;
	int ret;

	i_zero(&d);
	d.ctx = ctx;
	d.event = event_create(ctx->event);
	event_set_append_log_prefix(d.event, "tributary: ");

	*storage_r = NULL;
	switch (trace_check(&d, &error)) {
	case TRACE_CHECK_UNTRACED:
		ret = deliver_next(ctx, storage_r);
		break;
	case TRACE_CHECK_DUPLICATE:
		e_info(d.event,
		       "trace id %s was delivered before: not stored again",
		       d.trace->id);
		ret = 1;
		break;
	case TRACE_CHECK_NEW:
		ret = deliver_traced(&d, storage_r);
		break;
	case TRACE_CHECK_TEMPFAIL:
	default:
		ctx->tempfail_error = p_strdup(ctx->pool, error);
		ret = -1;
		break;
	}
	trib_delivered_close(&d.rec);
	trib_trace_free(&d.trace);
	event_unref(&d.event);
	return ret;
}

void tributary_lmtp_plugin_init(struct module *module ATTR_UNUSED)
{
	next_deliver_mail = mail_deliver_hook_set(tributary_lmtp_deliver_mail);
}

void tributary_lmtp_plugin_deinit(void)
{
	mail_deliver_hook_set(next_deliver_mail);
	tributary_lmtp_keys_deinit();
}
