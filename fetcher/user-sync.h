#ifndef USER_SYNC_H
#define USER_SYNC_H

/* user-sync.h: one pass over a user's remote accounts, the way both
 * `tributary sync` and `tributary run` make it: take the user's state
 * lock and open the state, open the token vault when an account needs
 * it, run the accounts' passes one after another (sync_start()),
 * record each in the status file (status.h) as it ends, commit, and
 * release the lock. Runs on the loop without blocking, so the daemon
 * runs several users' passes side by side (never two of one user: the
 * state lock).
 *
 * Warnings (a damaged status file replaced, one that cannot be saved)
 * go to the settings' logger; everything else reaches the caller through
 * account_done and the result.
 *
 * Borrows: the settings and everything they point to, until the
 * callback. Owns: the state, the vault, the status while it runs. */

#include "sync.h"

#include <stdbool.h>
#include <stdint.h>

struct trib_account_list;
struct trib_global_settings;
struct trib_loop;
struct trib_settings_layer;
struct trib_trace_keys;
struct user_sync;

struct user_sync_settings {
	/* The user's name as the userdb gives it. */
	const char *user;
	const struct trib_account_list *accounts;
	/* Only this account (NULL: all of them). */
	const char *only_account;
	/* Optional: run only the accounts this says yes to (the daemon:
	 * those that are due). */
	bool (*want_account)(const struct trib_account *account, void *context);
	const struct trib_global_settings *globals;
	/* The global plugin {} settings (inline client secrets). */
	const struct trib_settings_layer *global;
	const struct trib_trace_keys *keys;
	unsigned int lmtp_sessions; /* 0: the default */
	const struct trib_logger *logger;
	/* Optional: progress of the current folder (the CLI's bar). */
	sync_progress_callback_t *progress;
	void *progress_context;
	/* Optional: after each account's pass (and its status record),
	 * with its result (the CLI prints the summary line and errors). */
	void (*account_done)(const struct trib_account *account,
			     const struct sync_result *result, void *context);
	/* Optional: see sync_settings.login_secret (gets context). */
	void (*login_secret)(const struct trib_account *account,
			     const char *secret, void *context);
	void *context;
};

struct user_sync_result {
	/* The worst of the accounts' (and of opening the user's state). */
	enum sync_status status;
	/* Nothing was done: another fetcher holds the user's lock (status
	 * TEMP, error says who). */
	bool locked;
	/* Why the pass could not start or had to stop (the state could not
	 * be opened or committed), or NULL. */
	char *error;
	/* Accounts whose pass ran (only_account: 0 when there is no such
	 * account). */
	unsigned int matched;
	/* The user's state was opened (false: nothing was done, error says
	 * why). */
	bool opened;
	/* A commit of the state failed: the pass stopped there (the
	 * account's error lines said why; error says the rest waits). */
	bool state_failed;
	/* user_sync_stop() cut the pass short (status at least TEMP): the
	 * running account's pass said "stopped" (sync_result.stopped), or
	 * the stop came between two accounts and the rest did not run. */
	bool stopped;
};

/* Fired exactly once, from the loop (never inside user_sync_start() or
 * user_sync_stop()); the struct user_sync is freed after it returns, and
 * result with it. */
typedef void user_sync_done_callback_t(const struct user_sync_result *result,
				       void *context);

/* Never NULL. */
struct user_sync *user_sync_start(struct trib_loop *loop,
				  const struct user_sync_settings *set,
				  user_sync_done_callback_t *callback,
				  void *context);
/* Stop soon: the running account's pass stops (sync_stop()), no further
 * account starts, then the callback fires. Not from its own callback. */
void user_sync_stop(struct user_sync *us);

#endif
