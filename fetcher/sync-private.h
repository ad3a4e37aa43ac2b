#ifndef SYNC_PRIVATE_H
#define SYNC_PRIVATE_H

/* sync-private.h: what the parts of one account's pass share.
 *
 *   sync.c          the pass: sync_start(), the folders one by one, the
 *                   state commits, sync_stop(), the end and the result
 *   sync-connect.c  the secret, connect, authenticate; when a session
 *                   ends, whether a new connection follows (the server
 *                   refused the access token at login, or ended the
 *                   session because it expired)
 *   sync-fetch.c    the metadata pass over the new UIDs of a folder and
 *                   the UIDVALIDITY re-map
 *   sync-oauth.c    the access token of an oauth2 account (a request to
 *                   the token endpoint, a reauthorization follow-up)
 *   sync-deliver.c  the bodies, streamed from IMAP into the LMTP
 *                   sessions behind their trace headers, and LMTP's
 *                   answers
 *   sync-folders.c  the folders of the pass (patterns expanded by LIST)
 *   sync-remove.c   remote = delete: what is done is removed from the
 *                   server after the commit
 *
 * Nothing blocks: every step is a callback from the loop. A pass is a
 * chain of them:
 *
 *   sync_start() -> the secret (sync-connect.c; an oauth2 token may wait
 *   for the token endpoint or a reauthorization follow-up) ->
 *   sync_connect_secret() -> connect, authenticate -> the folders ->
 *   LOGOUT -> sync_session_over() -> (from the loop) sync_connect_next():
 *   a new secret and connection, or sync_end() -> (from the loop) the
 *   last commit and the callback.
 *
 * sync_stop() cuts the chain short: the message being streamed is
 * abandoned, a token request or follow-up is aborted, a FETCH in flight
 * is cut by closing the connection, LMTP's answers are awaited for at
 * most SYNC_STOP_GRACE_SECS, then the chain ends as above.
 *
 * struct sync is the pass (heap, freed after its callback); struct
 * sync_msg one new message of the current folder (owned by sync->msgs,
 * freed by sync_msgs_clear()). */

#include "sync.h"

#include "imap-commands.h"
#include "lmtp-client.h"
#include "state.h"

#include <stdint.h>

struct event;
struct sync_oauth;

#define SYNC_WINDOW 100
/* The metadata pass goes by UID ranges aiming at this many messages, so
 * memory stays flat however many messages are new. */
#define SYNC_META_WINDOW 1000
#define SYNC_COMMIT_EVERY 100
#define SYNC_HEADER_MAX 8192
#define SYNC_DEFAULT_SESSIONS 4
/* How many times a pass reconnects after the server ended the session
 * because the access token expired. */
#define SYNC_RECONNECT_MAX 3
/* After sync_stop(), how long LMTP may take to answer what it has
 * before the pass gives up on those answers (the messages are then left
 * for the next pass). */
#define SYNC_STOP_GRACE_SECS 10

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

/* The folders a pattern of the account matched (sync-folders.c). */
struct sync_matches {
	char **names;
	unsigned int count;
};

enum sync_step {
	SYNC_STEP_NONE,
	/* the session is over: sync_connect_next() from the loop */
	SYNC_STEP_SESSION_OVER,
	/* the pass is over: the last commit and the callback */
	SYNC_STEP_END,
};

struct sync {
	struct trib_loop *loop;
	const struct sync_settings *set;
	const struct trib_account *account;
	struct sync_result *result;
	sync_done_callback_t *callback;
	void *context;
	char *name;	 /* user/account */
	char *recipient; /* user or user+Folder */
	/* what runs next from the loop (a zero timer), never inside the
	 * call that decided it */
	struct event *step_ev;
	enum sync_step step;
	/* sync_stop() was called; the timer bounding the wait after it */
	bool stopping;
	struct event *stop_ev;

	struct trib_imap_client *imap;
	/* the connect is under way with this secret for the login */
	bool connecting;
	char *connect_secret;
	/* the secret being obtained is for a new connection of the pass */
	bool reconnecting;
	/* oauth2: the token's request and follow-up (sync-oauth.c);
	 * whether the server refused the token (then: one refresh, one
	 * reconnect) */
	struct sync_oauth *oauth;
	bool token_refused;
	bool oauth_retry, oauth_retried;
	/* oauth2: the server ended the authenticated session because the
	 * token expired (sync-connect.c); the folder's messages left then,
	 * taken out of the result's counts until the reconnect; how many
	 * reconnects this pass made */
	bool session_expired;
	unsigned int cut_left;
	unsigned int reconnects;
	struct trib_lmtp_client **lmtp;
	unsigned int lmtp_count;
	bool reading_paused;

	unsigned int folder_idx;
	const char *folder_name;
	struct trib_state_folder *folder;
	uint32_t uidvalidity;
	bool uidvalidity_changed;
	/* UIDNEXT and HIGHESTMODSEQ from EXAMINE (0: not sent) */
	uint32_t uidnext;
	uint64_t highestmodseq;
	/* FETCH responses of the metadata pass without a UID: then no gap
	 * below UIDNEXT may be taken for expunged */
	unsigned int meta_uidless;
	/* the metadata window: UIDs meta_lo..meta_hi (0: "*", the last
	 * window), and how wide the next one is */
	uint32_t meta_lo, meta_hi, meta_width;
	unsigned int folder_deferred; /* left for the next pass, so far */

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
	struct trib_lmtp_client *cur_client; /* the session cur_lmtp is on */
	unsigned int lmtp_rr;

	unsigned int pending; /* LMTP answers outstanding */
	unsigned int since_commit;
	bool fetch_running;
	bool folder_failed;  /* stop this folder: wait for pending, then next */
	bool account_failed; /* stop the account */
	bool lmtp_error_shown;
	char *lmtp_error; /* why the last LMTP session closed */
	bool logging_out;
	/* the folders of this pass, patterns expanded (sync-folders.c) */
	char **folders;
	unsigned int folder_count;
	/* the list is complete: a reconnect keeps it */
	bool folders_listed;
	struct sync_matches *matches; /* per account->folders entry */
	unsigned int lists_pending;
	void (*folders_ready)(struct sync *s);
	struct sync_progress progress;
	/* remote = delete: the folder was SELECTed read-write and its
	 * UIDVALIDITY is known (what sync-remove.c needs) */
	bool selected;
	char *remove_set; /* the UID set being removed */
	bool remove_warned;
	/* this connection's session is over (sync_session_over()) */
	bool done;
};

/* sync.c */
const char *sync_reply_error(const struct sync *s,
			     const struct trib_imap_reply *reply);
/* Whether reply is a command canceled because sync_stop() closed the
 * connection (no error line for it: the pass says "stopped"). */
bool sync_stopped_reply(const struct sync *s,
			const struct trib_imap_reply *reply);
/* The LMTP sessions of the pass (once, before the first connection):
 * 0, or -1 with the error recorded. */
int sync_lmtp_create(struct sync *s);
/* Logged in: the folders (listed first unless a reconnect goes on with
 * them). */
void sync_start_folders(struct sync *s);
/* This connection's work is over: LOGOUT while the session is up, then
 * sync_session_over(). */
void sync_account_finish(struct sync *s);
/* The session is over (once per connection): sync_connect_next() runs
 * from the loop. */
void sync_session_over(struct sync *s);
/* The pass is over: the last commit and the callback run from the
 * loop. */
void sync_end(struct sync *s);
/* Save the state now; a failure stops the account. */
void sync_commit(struct sync *s);
/* Called whenever something finished: the next window, or the next
 * folder when nothing is left in flight. */
void sync_maybe_folder_done(struct sync *s);
/* Record the failure of a command and stop the folder (and the account,
 * unless the server refused just this folder). */
void sync_fail_folder(struct sync *s, enum sync_status status, const char *what,
		      const struct trib_imap_reply *reply);

/* Done with the current folder (and its removals): on to the next. */
void sync_folder_next(struct sync *s);

/* sync-connect.c */
/* Get the secret of the first login; sync_connect_secret() follows. */
void sync_connect_begin(struct sync *s);
/* The secret to log in with (taken; wiped by then), or NULL with the
 * error recorded: connect (the LMTP sessions made first), or end the
 * pass (a first login that never happens leaves the account
 * skipped). */
void sync_connect_secret(struct sync *s, char *secret);
/* The session is over (from the loop): connect again when the token was
 * refused or expired and that may still be tried, else end the pass. */
void sync_connect_next(struct sync *s);
/* sync_stop(): close the connection at once unless a LOGOUT can follow
 * soon (connecting, logging in, or a FETCH in flight: closed). */
void sync_connect_stop(struct sync *s);
/* Close the connection now, without LOGOUT: its commands are canceled
 * (their callbacks run the pass on to its end). */
void sync_connect_close(struct sync *s);
/* Whether a command failed because the server ended the session as the
 * access token expired (then: no error, the pass goes on after a
 * reconnect, and the account stops on this connection). */
bool sync_connect_expired(struct sync *s, const struct trib_imap_reply *reply);

/* sync-oauth.c */
/* The access token of an oauth2 account: the vault's while it is valid
 * for the settings' margin more (unless force), else a new one from the
 * token endpoint. Then sync_connect_secret() with it, or with NULL and
 * the error in the result (TEMP: deferred; AUTH: reauthorization
 * required, after the incident's follow-up); perhaps before this
 * returns, else from the loop. */
void sync_oauth_token(struct sync *s, bool force);
/* sync_stop(): abort the token request or the follow-up in flight (its
 * continuation then ends the pass). */
void sync_oauth_stop(struct sync *s);
void sync_oauth_deinit(struct sync *s);

/* sync-folders.c */
/* Expand the account's folder patterns (LIST), then call ready. */
void sync_folders_resolve(struct sync *s, void (*ready)(struct sync *s));
void sync_folders_free(struct sync *s);

/* sync-remove.c */
/* remote = delete: after the folder's commit, remove what is done from
 * the server, then sync_folder_next(). */
void sync_remove_done(struct sync *s);

/* Tell the progress callback, if any. */
void sync_progress_update(struct sync *s);

/* sync-fetch.c */
/* UID FETCH the metadata of the next window of UIDs above the folder's
 * cursor (the first: from cursor + 1). */
void sync_fetch_metadata(struct sync *s);
/* Whether a metadata window is still to come after the current one. */
bool sync_fetch_more(const struct sync *s);
void sync_msgs_clear(struct sync *s);
struct sync_msg *sync_msg_find_uid(struct sync *s, uint32_t uid);
struct sync_msg *sync_msg_find_seq(struct sync *s, uint32_t seq);

/* sync-deliver.c */
extern const struct trib_lmtp_client_handlers sync_lmtp_handlers;
/* UID FETCH the bodies of the next window of pending messages. */
void sync_body_window(struct sync *s);
/* Abort the message being streamed into LMTP (it stays undelivered). */
void sync_abort_current(struct sync *s, const char *reason);

#endif
