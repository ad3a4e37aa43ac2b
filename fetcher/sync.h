#ifndef SYNC_H
#define SYNC_H

/* sync.h: one pass over one remote account: connect, authenticate, and
 * for each configured folder bring every new message into the local
 * user's mailbox through LMTP, behind its signed trace header, recording
 * what LMTP answered in the user's state.
 *
 * A pass never blocks: sync_start() begins it on the loop and its
 * callback fires from the loop when it is over, so one loop runs many
 * passes side by side (the daemon); sync_stop() ends one early (SIGTERM).
 * sync_account() is the blocking form for the CLI.
 *
 * Accounts with auth = oauth2 log in with an access token from the
 * user's vault, refreshed at the token endpoint when it is about to
 * expire or the server refuses it (sync-oauth.c); a session the server
 * ends because the token expired is resumed after a refresh
 * (sync-connect.c). auth = app_password accounts log in with the app
 * password from the vault, password_file ones with the file's.
 *
 * Borrows: the loop, the state (open, locked), the vault, the trace
 * keys, the account and the logger. Owns: the result's strings. */

#include "account.h"
#include "log.h"

#include <stdbool.h>

struct trib_loop;
struct trib_settings_layer;
struct trib_state;
struct trib_trace_keys;
struct trib_vault;

/* How far the pass over the current folder is. */
struct sync_progress {
	const char *account;
	const char *folder;
	/* new messages of this folder's pass, and how many LMTP answered */
	unsigned int total, answered;
	/* their RFC822.SIZE sum, and the body bytes streamed so far */
	uint64_t bytes_total, bytes_streamed;
	/* the folder's pass is over (the last call for it) */
	bool finished;
};

typedef void sync_progress_callback_t(const struct sync_progress *progress,
				      void *context);

struct sync_settings {
	/* The local user: LMTP recipient and trace recipient. */
	const char *user;
	/* "unix:/path" or "host:port" */
	const char *lmtp;
	unsigned int lmtp_sessions; /* 0 = 4 */
	struct trib_state *state;
	const struct trib_trace_keys *keys;
	/* The user's token vault (oauth2 and app_password accounts),
	 * opened from state; NULL when no account needs it or it cannot be
	 * opened: then vault_error says why (shown for each such
	 * account). */
	struct trib_vault *vault;
	const char *vault_error;
	/* The global settings (an inline client secret), or NULL. */
	const struct trib_settings_layer *global;
	/* When an account needs reauthorization (incident.h): the admin's
	 * command (NULL: none) and whether the user gets a notice. */
	const char *notify_command;
	bool reauth_notice;
	/* A cached access token is used only while it is valid this much
	 * longer (tributary_oauth_refresh_margin). */
	unsigned int oauth_margin_secs;
	/* Per call, the account's: its token endpoint asked (Retry-After)
	 * not to be asked before this time (0: no such request), so no
	 * refresh is tried until then (status.h keeps it between runs). */
	int64_t token_not_before;
	const struct trib_logger *logger;
	/* Optional: called as the pass goes (often: after every chunk of a
	 * body), for a progress display. */
	sync_progress_callback_t *progress;
	void *progress_context;
	/* Optional: the secret the pass logs in with (the daemon's IDLE
	 * watcher, daemon-idle.c, copies it); called before each login. */
	void (*login_secret)(const struct trib_account *account,
			     const char *secret, void *context);
	void *login_context;
};

enum sync_status {
	SYNC_OK,
	SYNC_TEMP,   /* something deferred or failed for now: retry */
	SYNC_CONFIG, /* a configuration problem (a folder pattern ...) */
	SYNC_AUTH,   /* credentials or TLS refused */
};

struct sync_result {
	unsigned int new_count;
	unsigned int delivered;
	unsigned int rejected;
	unsigned int deferred;
	unsigned int remapped;
	/* One line each, naming user, account and cause. */
	char **errors;
	unsigned int error_count;
	enum sync_status status;
	/* Never connected (a configuration problem): no counts to show. */
	bool skipped;
	/* The state could not be committed: stop the whole run. */
	bool state_failed;
	/* The account needs `tributary authorize` (its refresh token is
	 * gone): an incident is recorded (incident.h). */
	bool reauthorize;
	/* The token endpoint asked not to be asked before this time
	 * (Retry-After), or 0. */
	int64_t token_not_before;
	/* sync_stop() ended the pass (its last error line says "stopped"). */
	bool stopped;
};

struct sync;

/* Fired exactly once per sync_start(), from the loop, never from inside
 * sync_start() or sync_stop(). The pass is over: nothing of it is in
 * flight any more, its state changes are committed (or result
 * ->state_failed says they could not be), and its struct sync is freed
 * once the callback returns. */
typedef void sync_done_callback_t(struct sync_result *result, void *context);

/* Start one pass of account without blocking: it runs on loop, side by
 * side with anything else there (other users' passes, the daemon's
 * timers). set, account and everything they point to must stay valid
 * until the callback. *result_r is filled as the pass goes and handed to
 * the callback (the caller frees it with sync_result_free()). Never
 * NULL. */
struct sync *sync_start(struct trib_loop *loop, const struct sync_settings *set,
			const struct trib_account *account,
			struct sync_result *result_r,
			sync_done_callback_t *callback, void *context);
/* Stop a pass soon (SIGTERM): the message being streamed into LMTP is
 * abandoned (the trace id makes a later re-send harmless), nothing new
 * is started, what LMTP already answered is committed, then the callback
 * fires (an error line "stopped", status TEMP). Not from the pass's own
 * callback. */
void sync_stop(struct sync *s);

/* One pass, blocking: sync_start() and the loop run until the callback
 * (for the CLI, whose loop runs nothing else). Fills *result_r (free
 * with sync_result_free()). */
void sync_account(struct trib_loop *loop, const struct sync_settings *set,
		  const struct trib_account *account,
		  struct sync_result *result_r);
void sync_result_free(struct sync_result *result);
/* Add an error line (printf-style) and raise the status to at least
 * status (AUTH > CONFIG > TEMP > OK). */
void sync_result_error(struct sync_result *result, enum sync_status status,
		       const char *fmt, ...) TRIB_ATTR_PRINTF(3, 4);

#endif
