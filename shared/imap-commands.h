#ifndef TRIB_IMAP_COMMANDS_H
#define TRIB_IMAP_COMMANDS_H

/* imap-commands.h: the IMAP commands Tributary uses, on top of the
 * generic command queue of imap-client.h. Each collects its untagged data
 * and reports it with the tagged reply, once. Data handed to a callback
 * is valid only during the call. */

#include "imap-client.h"

#include <stddef.h>
#include <stdint.h>

/* ---- NOOP, LOGOUT, CAPABILITY ---- */

void trib_imap_noop(struct trib_imap_client *client,
		    trib_imap_callback_t *callback, void *context);
/* The server answers BYE then OK and closes. */
void trib_imap_logout(struct trib_imap_client *client,
		      trib_imap_callback_t *callback, void *context);
void trib_imap_capability(struct trib_imap_client *client,
			  trib_imap_callback_t *callback, void *context);

/* ---- SELECT / EXAMINE ---- */

struct trib_imap_mailbox_info {
	uint32_t exists;
	uint32_t uidvalidity; /* 0 = not sent */
	uint32_t uidnext;     /* 0 = not sent */
	/* HIGHESTMODSEQ with CONDSTORE; 0 = NOMODSEQ or not sent. */
	uint64_t highestmodseq;
	bool read_only;
};

typedef void
trib_imap_select_callback_t(const struct trib_imap_reply *reply,
			    const struct trib_imap_mailbox_info *info,
			    void *context);

/* examine: read-only (EXAMINE). condstore: add "(CONDSTORE)" when the
 * server offers it. */
void trib_imap_select(struct trib_imap_client *client, const char *mailbox,
		      bool examine, bool condstore,
		      trib_imap_select_callback_t *callback, void *context);

/* ---- STATUS ---- */

struct trib_imap_status_info {
	const char *mailbox;
	bool has_messages, has_uidnext, has_uidvalidity, has_unseen,
		has_highestmodseq;
	uint32_t messages, uidnext, uidvalidity, unseen;
	uint64_t highestmodseq;
};

typedef void
trib_imap_status_callback_t(const struct trib_imap_reply *reply,
			    const struct trib_imap_status_info *info,
			    void *context);

/* Asks MESSAGES UIDNEXT UIDVALIDITY UNSEEN, and HIGHESTMODSEQ when the
 * server offers CONDSTORE. */
void trib_imap_status(struct trib_imap_client *client, const char *mailbox,
		      trib_imap_status_callback_t *callback, void *context);

/* ---- LIST ---- */

enum trib_imap_list_flags {
	TRIB_IMAP_LIST_NOSELECT = 1 << 0,
	TRIB_IMAP_LIST_NONEXISTENT = 1 << 1,
	TRIB_IMAP_LIST_HASCHILDREN = 1 << 2,
	TRIB_IMAP_LIST_HASNOCHILDREN = 1 << 3,
	/* special use (RFC 6154), plus Gmail's \Important */
	TRIB_IMAP_LIST_ALL = 1 << 8,
	TRIB_IMAP_LIST_ARCHIVE = 1 << 9,
	TRIB_IMAP_LIST_DRAFTS = 1 << 10,
	TRIB_IMAP_LIST_FLAGGED = 1 << 11,
	TRIB_IMAP_LIST_JUNK = 1 << 12,
	TRIB_IMAP_LIST_SENT = 1 << 13,
	TRIB_IMAP_LIST_TRASH = 1 << 14,
	TRIB_IMAP_LIST_IMPORTANT = 1 << 15,
};
#define TRIB_IMAP_LIST_SPECIAL_USE_MASK 0xff00u

struct trib_imap_list_entry {
	const char *name; /* as sent (modified UTF-7) */
	char delimiter;	  /* '\0' for NIL */
	unsigned int flags;
};

typedef void
trib_imap_list_callback_t(const struct trib_imap_reply *reply,
			  const struct trib_imap_list_entry *entries,
			  unsigned int count, void *context);

/* LIST "" pattern; with RETURN (SPECIAL-USE) when the server offers
 * SPECIAL-USE (servers such as Gmail send the attributes anyway). */
void trib_imap_list(struct trib_imap_client *client, const char *pattern,
		    trib_imap_list_callback_t *callback, void *context);
/* " \Sent \HasNoChildren" style text for an entry's flags. */
const char *trib_imap_list_flags_str(unsigned int flags, char *buf,
				     size_t size);

/* ---- UID SEARCH ---- */

typedef void trib_imap_search_callback_t(const struct trib_imap_reply *reply,
					 const uint32_t *uids,
					 unsigned int count, void *context);

/* criteria is sent as is, e.g. "UID 5:*" or "ALL". */
void trib_imap_uid_search(struct trib_imap_client *client, const char *criteria,
			  trib_imap_search_callback_t *callback, void *context);

/* ---- UID FETCH ---- */

struct trib_imap_fetch_msg {
	uint32_t seq;
	uint32_t uid; /* 0 = not in the response */
	bool has_size, has_modseq;
	uint64_t size;
	uint64_t modseq;
	/* FLAGS as a list of atoms, or NULL/0. */
	const struct trib_imap_arg *flags;
	unsigned int flag_count;
	const char *internaldate; /* or NULL */
	/* Every item as the server sent it (body literals appear as
	 * TRIB_IMAP_ARG_LITERAL_STREAM). */
	const struct trib_imap_arg *items;
	unsigned int item_count;
};

struct trib_imap_fetch_handler {
	/* Each FETCH response, once complete (after its literals). */
	void (*message)(const struct trib_imap_fetch_msg *msg, void *context);
	/* Optional: body literals streamed, as in imap-client.h. */
	void (*literal_begin)(const struct trib_imap_literal *lit,
			      void *context);
	void (*literal_data)(struct evbuffer *data, void *context);
	void (*literal_end)(void *context);
	trib_imap_callback_t *done;
};

/* "UID FETCH uidset (items)". uidset and items are sent as is. */
void trib_imap_uid_fetch(struct trib_imap_client *client, const char *uidset,
			 const char *items,
			 const struct trib_imap_fetch_handler *handler,
			 void *context);

/* ---- removing messages ---- */

/* "UID STORE uidset +FLAGS.SILENT (\Deleted)": needs a SELECTed (not
 * EXAMINEd) mailbox. uidset is sent as is. */
void trib_imap_uid_store_deleted(struct trib_imap_client *client,
				 const char *uidset,
				 trib_imap_callback_t *callback, void *context);
/* "UID EXPUNGE uidset" (RFC 4315): removes only those of uidset that are
 * flagged \Deleted, never another message someone else flagged. Refused
 * (PERM, nothing sent) without the UIDPLUS capability: a plain EXPUNGE
 * would remove every \Deleted message of the mailbox. */
void trib_imap_uid_expunge(struct trib_imap_client *client, const char *uidset,
			   trib_imap_callback_t *callback, void *context);

/* ---- IDLE ---- */

struct trib_imap_idle;

/* Starts IDLE (RFC 2177). News arrives as client events (EXISTS,
 * EXPUNGE). callback fires once, when IDLE ends: after
 * trib_imap_idle_done(), when the server ends it, or when the connection
 * dies; the handle is freed then. Fails (PERM) without the IDLE
 * capability. */
struct trib_imap_idle *trib_imap_idle(struct trib_imap_client *client,
				      trib_imap_callback_t *callback,
				      void *context);
/* Ends IDLE: sends DONE once the server has said "+" (at once if it has).
 * Only before the callback has fired. */
void trib_imap_idle_done(struct trib_imap_idle *idle);

#endif
