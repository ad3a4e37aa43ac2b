/* imap-commands.c: SELECT, STATUS, LIST, SEARCH, FETCH, IDLE and friends. */

#include "imap-commands.h"

#include "alloc.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

/* Every request below is one allocation holding the handlers struct the
 * queue points to; it is freed in its done callback. */

/* Queue "<verb> <quoted mailbox><suffix>", or a refused command when the
 * name cannot be sent as a quoted string. */
static void queue_mailbox_command(struct trib_imap_client *client,
				  const char *verb, const char *mailbox,
				  const char *suffix,
				  enum trib_imap_command_flags flags,
				  const struct trib_imap_command_handlers *h,
				  void *context)
{
	char quoted[1024];
	char *line;

	if (trib_imap_quote(quoted, sizeof(quoted), mailbox) < 0) {
		trib_imap_client_command_refused(
			client, verb, h, context, TRIB_ERR_PERM,
			"mailbox name holds CR, LF or 8-bit characters, or is "
			"too long");
		return;
	}
	line = trib_strdup_printf("%s %s%s", verb, quoted, suffix);
	trib_imap_client_command(client, line, flags, h, context);
	free(line);
}

/* ---- simple commands ---- */

struct simple_req {
	struct trib_imap_command_handlers handlers;
	trib_imap_callback_t *callback;
	void *context;
};

static void simple_done(const struct trib_imap_reply *reply, void *context)
{
	struct simple_req *req = context;

	req->callback(reply, req->context);
	free(req);
}

static void simple_command(struct trib_imap_client *client, const char *line,
			   enum trib_imap_command_flags flags,
			   const char *const *names,
			   trib_imap_callback_t *callback, void *context)
{
	struct simple_req *req = trib_calloc(1, sizeof(*req));

	req->callback = callback;
	req->context = context;
	req->handlers.done = simple_done;
	req->handlers.untagged_names = names;
	trib_imap_client_command(client, line, flags, &req->handlers, req);
}

void trib_imap_noop(struct trib_imap_client *client,
		    trib_imap_callback_t *callback, void *context)
{
	simple_command(client, "NOOP", 0, NULL, callback, context);
}

void trib_imap_logout(struct trib_imap_client *client,
		      trib_imap_callback_t *callback, void *context)
{
	simple_command(client, "LOGOUT", TRIB_IMAP_COMMAND_FLAG_BARRIER, NULL,
		       callback, context);
}

void trib_imap_capability(struct trib_imap_client *client,
			  trib_imap_callback_t *callback, void *context)
{
	static const char *const names[] = { "CAPABILITY", NULL };

	simple_command(client, "CAPABILITY", TRIB_IMAP_COMMAND_FLAG_BARRIER,
		       names, callback, context);
}

/* ---- removing messages ---- */

void trib_imap_uid_store_deleted(struct trib_imap_client *client,
				 const char *uidset,
				 trib_imap_callback_t *callback, void *context)
{
	static const char *const names[] = { "FETCH", NULL };
	char *line;

	line = trib_strdup_printf("UID STORE %s +FLAGS.SILENT (\\Deleted)",
				  uidset);
	simple_command(client, line, 0, names, callback, context);
	free(line);
}

void trib_imap_uid_expunge(struct trib_imap_client *client, const char *uidset,
			   trib_imap_callback_t *callback, void *context)
{
	struct simple_req *req;
	char *line;

	if (!trib_imap_client_has_capability(client, "UIDPLUS")) {
		req = trib_calloc(1, sizeof(*req));
		req->callback = callback;
		req->context = context;
		req->handlers.done = simple_done;
		trib_imap_client_command_refused(
			client, "UID EXPUNGE", &req->handlers, req,
			TRIB_ERR_PERM, "the server has no UIDPLUS");
		return;
	}
	line = trib_strdup_printf("UID EXPUNGE %s", uidset);
	simple_command(client, line, 0, NULL, callback, context);
	free(line);
}

/* ---- SELECT / EXAMINE ---- */

struct select_req {
	struct trib_imap_command_handlers handlers;
	struct trib_imap_mailbox_info info;
	trib_imap_select_callback_t *callback;
	void *context;
};

static bool code_u32(const struct trib_imap_response *resp, const char *code,
		     uint32_t *num_r)
{
	return strcasecmp(resp->code, code) == 0 && resp->code_arg_count == 1 &&
	       trib_imap_arg_get_u32(&resp->code_args[0], num_r);
}

static bool select_untagged(const struct trib_imap_response *resp,
			    void *context)
{
	struct select_req *req = context;

	if (resp->status == TRIB_IMAP_STATUS_NONE) {
		if (resp->has_number && strcasecmp(resp->name, "EXISTS") == 0) {
			req->info.exists = resp->number;
			return true;
		}
		return false;
	}
	if (resp->code == NULL)
		return false;
	if (code_u32(resp, "UIDVALIDITY", &req->info.uidvalidity) ||
	    code_u32(resp, "UIDNEXT", &req->info.uidnext))
		return true;
	if (strcasecmp(resp->code, "HIGHESTMODSEQ") == 0 &&
	    resp->code_arg_count == 1 &&
	    trib_imap_arg_get_u64(&resp->code_args[0],
				  &req->info.highestmodseq))
		return true;
	if (strcasecmp(resp->code, "NOMODSEQ") == 0) {
		req->info.highestmodseq = 0;
		return true;
	}
	return false;
}

static void select_done(const struct trib_imap_reply *reply, void *context)
{
	struct select_req *req = context;

	if (reply->code != NULL && strcasecmp(reply->code, "READ-ONLY") == 0)
		req->info.read_only = true;
	req->callback(reply, &req->info, req->context);
	free(req);
}

void trib_imap_select(struct trib_imap_client *client, const char *mailbox,
		      bool examine, bool condstore,
		      trib_imap_select_callback_t *callback, void *context)
{
	static const char *const names[] = { "EXISTS", "OK", NULL };
	struct select_req *req = trib_calloc(1, sizeof(*req));

	req->callback = callback;
	req->context = context;
	req->handlers.done = select_done;
	req->handlers.untagged_names = names;
	req->handlers.untagged = select_untagged;
	condstore = condstore &&
		    trib_imap_client_has_capability(client, "CONDSTORE");
	queue_mailbox_command(client, examine ? "EXAMINE" : "SELECT", mailbox,
			      condstore ? " (CONDSTORE)" : "",
			      TRIB_IMAP_COMMAND_FLAG_BARRIER, &req->handlers,
			      req);
}

/* ---- STATUS ---- */

struct status_req {
	struct trib_imap_command_handlers handlers;
	struct trib_imap_status_info info;
	char *mailbox;
	trib_imap_status_callback_t *callback;
	void *context;
};

static bool status_untagged(const struct trib_imap_response *resp,
			    void *context)
{
	struct status_req *req = context;
	const struct trib_imap_arg *items;
	unsigned int count;
	const char *name;

	if (resp->arg_count != 2 ||
	    !trib_imap_arg_get_astring(&resp->args[0], &name) ||
	    strcmp(name, req->mailbox) != 0 ||
	    !trib_imap_arg_get_list(&resp->args[1], &items, &count))
		return false;
	for (unsigned int i = 0; i + 1 < count; i += 2) {
		const struct trib_imap_arg *key = &items[i],
					   *val = &items[i + 1];
		struct trib_imap_status_info *info = &req->info;

		if (trib_imap_arg_atom_equals(key, "MESSAGES"))
			info->has_messages =
				trib_imap_arg_get_u32(val, &info->messages);
		else if (trib_imap_arg_atom_equals(key, "UIDNEXT"))
			info->has_uidnext =
				trib_imap_arg_get_u32(val, &info->uidnext);
		else if (trib_imap_arg_atom_equals(key, "UIDVALIDITY"))
			info->has_uidvalidity =
				trib_imap_arg_get_u32(val, &info->uidvalidity);
		else if (trib_imap_arg_atom_equals(key, "UNSEEN"))
			info->has_unseen =
				trib_imap_arg_get_u32(val, &info->unseen);
		else if (trib_imap_arg_atom_equals(key, "HIGHESTMODSEQ"))
			info->has_highestmodseq = trib_imap_arg_get_u64(
				val, &info->highestmodseq);
	}
	return true;
}

static void status_done(const struct trib_imap_reply *reply, void *context)
{
	struct status_req *req = context;

	req->callback(reply, &req->info, req->context);
	free(req->mailbox);
	free(req);
}

void trib_imap_status(struct trib_imap_client *client, const char *mailbox,
		      trib_imap_status_callback_t *callback, void *context)
{
	static const char *const names[] = { "STATUS", NULL };
	struct status_req *req = trib_calloc(1, sizeof(*req));

	req->mailbox = trib_strdup(mailbox);
	req->info.mailbox = req->mailbox;
	req->callback = callback;
	req->context = context;
	req->handlers.done = status_done;
	req->handlers.untagged_names = names;
	req->handlers.untagged = status_untagged;
	queue_mailbox_command(
		client, "STATUS", mailbox,
		trib_imap_client_has_capability(client, "CONDSTORE")
			? " (MESSAGES UIDNEXT UIDVALIDITY UNSEEN HIGHESTMODSEQ)"
			: " (MESSAGES UIDNEXT UIDVALIDITY UNSEEN)",
		0, &req->handlers, req);
}

/* ---- LIST ---- */

struct list_req {
	struct trib_imap_command_handlers handlers;
	struct trib_imap_list_entry *entries;
	unsigned int count, alloc;
	trib_imap_list_callback_t *callback;
	void *context;
};

static const struct {
	const char *name;
	unsigned int flag;
} list_flag_names[] = {
	{ "\\Noselect", TRIB_IMAP_LIST_NOSELECT },
	{ "\\NonExistent", TRIB_IMAP_LIST_NONEXISTENT },
	{ "\\HasChildren", TRIB_IMAP_LIST_HASCHILDREN },
	{ "\\HasNoChildren", TRIB_IMAP_LIST_HASNOCHILDREN },
	{ "\\All", TRIB_IMAP_LIST_ALL },
	{ "\\Archive", TRIB_IMAP_LIST_ARCHIVE },
	{ "\\Drafts", TRIB_IMAP_LIST_DRAFTS },
	{ "\\Flagged", TRIB_IMAP_LIST_FLAGGED },
	{ "\\Junk", TRIB_IMAP_LIST_JUNK },
	{ "\\Sent", TRIB_IMAP_LIST_SENT },
	{ "\\Trash", TRIB_IMAP_LIST_TRASH },
	{ "\\Important", TRIB_IMAP_LIST_IMPORTANT },
};

static unsigned int list_parse_flags(const struct trib_imap_arg *args,
				     unsigned int count)
{
	unsigned int flags = 0;

	for (unsigned int i = 0; i < count; i++) {
		for (size_t j = 0; j < TRIB_N_ELEMENTS(list_flag_names); j++) {
			if (trib_imap_arg_atom_equals(&args[i],
						      list_flag_names[j].name))
				flags |= list_flag_names[j].flag;
		}
	}
	return flags;
}

const char *trib_imap_list_flags_str(unsigned int flags, char *buf, size_t size)
{
	size_t used = 0;

	buf[0] = '\0';
	for (size_t j = 0; j < TRIB_N_ELEMENTS(list_flag_names); j++) {
		if ((flags & list_flag_names[j].flag) == 0)
			continue;
		int n = snprintf(buf + used, size - used, "%s%s",
				 used > 0 ? " " : "", list_flag_names[j].name);

		if (n < 0 || (size_t)n >= size - used)
			break;
		used += (size_t)n;
	}
	return buf;
}

static bool list_untagged(const struct trib_imap_response *resp, void *context)
{
	struct list_req *req = context;
	const struct trib_imap_arg *attrs;
	unsigned int attr_count;
	const char *delim, *name;
	struct trib_imap_list_entry *entry;

	if (resp->arg_count < 3 ||
	    !trib_imap_arg_get_list(&resp->args[0], &attrs, &attr_count) ||
	    !trib_imap_arg_get_nstring(&resp->args[1], &delim) ||
	    !trib_imap_arg_get_astring(&resp->args[2], &name))
		return false;
	if (req->count == req->alloc) {
		req->alloc = req->alloc == 0 ? 16 : req->alloc * 2;
		req->entries = trib_realloc(req->entries,
					    req->alloc * sizeof(*req->entries));
	}
	entry = &req->entries[req->count++];
	entry->name = trib_strdup(name);
	entry->delimiter = delim != NULL ? delim[0] : '\0';
	entry->flags = list_parse_flags(attrs, attr_count);
	return true;
}

static void list_done(const struct trib_imap_reply *reply, void *context)
{
	struct list_req *req = context;

	req->callback(reply, req->entries, req->count, req->context);
	for (unsigned int i = 0; i < req->count; i++)
		free((char *)req->entries[i].name);
	free(req->entries);
	free(req);
}

void trib_imap_list(struct trib_imap_client *client, const char *pattern,
		    trib_imap_list_callback_t *callback, void *context)
{
	static const char *const names[] = { "LIST", NULL };
	struct list_req *req = trib_calloc(1, sizeof(*req));
	bool special_use =
		trib_imap_client_has_capability(client, "SPECIAL-USE") &&
		trib_imap_client_has_capability(client, "LIST-EXTENDED");
	char quoted[1024];
	char *line;

	req->callback = callback;
	req->context = context;
	req->handlers.done = list_done;
	req->handlers.untagged_names = names;
	req->handlers.untagged = list_untagged;
	if (trib_imap_quote(quoted, sizeof(quoted), pattern) < 0) {
		trib_imap_client_command_refused(client, "LIST", &req->handlers,
						 req, TRIB_ERR_PERM,
						 "pattern cannot be sent");
		return;
	}
	line = trib_strdup_printf("LIST \"\" %s%s", quoted,
				  special_use ? " RETURN (SPECIAL-USE)" : "");
	trib_imap_client_command(client, line, 0, &req->handlers, req);
	free(line);
}

/* ---- UID SEARCH ---- */

struct search_req {
	struct trib_imap_command_handlers handlers;
	uint32_t *uids;
	unsigned int count, alloc;
	trib_imap_search_callback_t *callback;
	void *context;
};

static bool search_untagged(const struct trib_imap_response *resp,
			    void *context)
{
	struct search_req *req = context;
	uint32_t uid;

	for (unsigned int i = 0; i < resp->arg_count; i++) {
		if (!trib_imap_arg_get_u32(&resp->args[i], &uid) || uid == 0)
			continue; /* "(MODSEQ n)" from CONDSTORE */
		if (req->count == req->alloc) {
			req->alloc = req->alloc == 0 ? 64 : req->alloc * 2;
			req->uids = trib_realloc(req->uids,
						 req->alloc * sizeof(uint32_t));
		}
		req->uids[req->count++] = uid;
	}
	return true;
}

static void search_done(const struct trib_imap_reply *reply, void *context)
{
	struct search_req *req = context;

	req->callback(reply, req->uids, req->count, req->context);
	free(req->uids);
	free(req);
}

void trib_imap_uid_search(struct trib_imap_client *client, const char *criteria,
			  trib_imap_search_callback_t *callback, void *context)
{
	static const char *const names[] = { "SEARCH", NULL };
	struct search_req *req = trib_calloc(1, sizeof(*req));
	char *line;

	req->callback = callback;
	req->context = context;
	req->handlers.done = search_done;
	req->handlers.untagged_names = names;
	req->handlers.untagged = search_untagged;
	line = trib_strdup_printf("UID SEARCH %s", criteria);
	trib_imap_client_command(client, line, 0, &req->handlers, req);
	free(line);
}

/* ---- UID FETCH ---- */

struct fetch_req {
	struct trib_imap_command_handlers handlers;
	const struct trib_imap_fetch_handler *handler;
	void *context;
};

static bool fetch_untagged(const struct trib_imap_response *resp, void *context)
{
	struct fetch_req *req = context;
	struct trib_imap_fetch_msg msg;
	const struct trib_imap_arg *items;
	unsigned int count;

	if (!resp->has_number || resp->arg_count != 1 ||
	    !trib_imap_arg_get_list(&resp->args[0], &items, &count))
		return false;
	memset(&msg, 0, sizeof(msg));
	msg.seq = resp->number;
	msg.items = items;
	msg.item_count = count;
	for (unsigned int i = 0; i + 1 < count; i += 2) {
		const struct trib_imap_arg *key = &items[i],
					   *val = &items[i + 1];

		if (trib_imap_arg_atom_equals(key, "UID")) {
			if (!trib_imap_arg_get_u32(val, &msg.uid))
				msg.uid = 0;
		} else if (trib_imap_arg_atom_equals(key, "RFC822.SIZE")) {
			msg.has_size = trib_imap_arg_get_u64(val, &msg.size);
		} else if (trib_imap_arg_atom_equals(key, "FLAGS")) {
			if (!trib_imap_arg_get_list(val, &msg.flags,
						    &msg.flag_count))
				msg.flags = NULL;
		} else if (trib_imap_arg_atom_equals(key, "INTERNALDATE")) {
			if (!trib_imap_arg_get_astring(val, &msg.internaldate))
				msg.internaldate = NULL;
		} else if (trib_imap_arg_atom_equals(key, "MODSEQ")) {
			const struct trib_imap_arg *m;
			unsigned int mc;

			msg.has_modseq = trib_imap_arg_get_list(val, &m, &mc) &&
					 mc == 1 &&
					 trib_imap_arg_get_u64(m, &msg.modseq);
		}
	}
	/* A FETCH without UID is an unsolicited flag change (RFC 3501
	 * 7.4.2), not part of this UID FETCH. */
	if (msg.uid == 0)
		return false;
	if (req->handler->message != NULL)
		req->handler->message(&msg, req->context);
	return true;
}

static void fetch_literal_begin(const struct trib_imap_literal *lit,
				void *context)
{
	struct fetch_req *req = context;

	if (req->handler->literal_begin != NULL)
		req->handler->literal_begin(lit, req->context);
}

static void fetch_literal_data(struct evbuffer *data, void *context)
{
	struct fetch_req *req = context;

	if (req->handler->literal_data != NULL)
		req->handler->literal_data(data, req->context);
}

static void fetch_literal_end(void *context)
{
	struct fetch_req *req = context;

	if (req->handler->literal_end != NULL)
		req->handler->literal_end(req->context);
}

static void fetch_done(const struct trib_imap_reply *reply, void *context)
{
	struct fetch_req *req = context;

	if (req->handler->done != NULL)
		req->handler->done(reply, req->context);
	free(req);
}

void trib_imap_uid_fetch(struct trib_imap_client *client, const char *uidset,
			 const char *items,
			 const struct trib_imap_fetch_handler *handler,
			 void *context)
{
	static const char *const names[] = { "FETCH", NULL };
	struct fetch_req *req = trib_calloc(1, sizeof(*req));
	char *line;

	req->handler = handler;
	req->context = context;
	req->handlers.done = fetch_done;
	req->handlers.untagged_names = names;
	req->handlers.untagged = fetch_untagged;
	req->handlers.literal_begin = fetch_literal_begin;
	req->handlers.literal_data = fetch_literal_data;
	req->handlers.literal_end = fetch_literal_end;
	line = trib_strdup_printf("UID FETCH %s (%s)", uidset, items);
	trib_imap_client_command(client, line, 0, &req->handlers, req);
	free(line);
}

/* ---- IDLE ---- */

struct trib_imap_idle {
	struct trib_imap_command_handlers handlers;
	struct trib_imap_client *client;
	trib_imap_callback_t *callback;
	void *context;
	bool continued, done_requested, done_sent;
};

static void idle_send_done(struct trib_imap_idle *idle)
{
	if (idle->done_sent)
		return;
	idle->done_sent = true;
	trib_imap_client_send_raw(idle->client, "DONE");
}

static void idle_continuation(const char *text, void *context)
{
	struct trib_imap_idle *idle = context;

	(void)text;
	idle->continued = true;
	if (idle->done_requested)
		idle_send_done(idle);
}

static void idle_done_cb(const struct trib_imap_reply *reply, void *context)
{
	struct trib_imap_idle *idle = context;

	idle->callback(reply, idle->context);
	free(idle);
}

struct trib_imap_idle *trib_imap_idle(struct trib_imap_client *client,
				      trib_imap_callback_t *callback,
				      void *context)
{
	struct trib_imap_idle *idle = trib_calloc(1, sizeof(*idle));

	idle->client = client;
	idle->callback = callback;
	idle->context = context;
	idle->handlers.done = idle_done_cb;
	idle->handlers.continuation = idle_continuation;
	if (!trib_imap_client_has_capability(client, "IDLE")) {
		trib_imap_client_command_refused(
			client, "IDLE", &idle->handlers, idle, TRIB_ERR_PERM,
			"server does not offer IDLE");
		return idle;
	}
	trib_imap_client_command(client, "IDLE",
				 TRIB_IMAP_COMMAND_FLAG_BARRIER |
					 TRIB_IMAP_COMMAND_FLAG_NO_TIMEOUT,
				 &idle->handlers, idle);
	return idle;
}

void trib_imap_idle_done(struct trib_imap_idle *idle)
{
	idle->done_requested = true;
	if (idle->continued)
		idle_send_done(idle);
}
