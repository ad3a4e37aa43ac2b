#ifndef DAEMON_PRIVATE_H
#define DAEMON_PRIVATE_H

/* daemon-private.h: what daemon.c (the loop, signals, passes) and
 * daemon-users.c (the user list) share. */

#include "cli-env.h"
#include "schedule.h"
#include "user-sync.h"

#include <stdbool.h>
#include <stdint.h>

struct event;
struct trib_trace_keys;

/* The user list is read again this often; a list that could not be read
 * is tried again after DAEMON_LIST_RETRY_SECS. */
#define DAEMON_REFRESH_SECS 3600
#define DAEMON_LIST_RETRY_SECS 60
/* An IDLE is ended and started again this often (RFC 2177: servers may
 * end one after 30 minutes). */
#define DAEMON_IDLE_RENEW_SECS (25 * 60)

struct daemon_idle;

/* One load of the settings. A pass holds a reference to the one it
 * started with, so a reload never changes what a running pass sees. */
struct daemon_config {
	unsigned int refcount;
	/* NULL: the daemon's own env (the first load) */
	struct cli_env *env;
	const struct trib_settings_layer *global;
	const struct trib_global_settings *globals;
	struct trib_trace_keys *keys;
};

struct daemon_account {
	char *name;
	struct schedule_account sched;
	/* part of the running pass, and whether it has ended */
	bool selected, reported;
	/* Its IDLE watcher (daemon-idle.c), or NULL; the secret the running
	 * pass last logged in with (handed to the watcher when the pass
	 * ends OK, else wiped); the server has no IDLE (until the account's
	 * settings change). */
	struct daemon_idle *idle;
	char *login_secret;
	bool idle_unsupported;
};

struct daemon_user {
	struct daemon *daemon;
	char *name;
	struct trib_account_list list;
	/* list.count of them, in the list's order */
	struct daemon_account *accounts;
	/* A newer list, read while the pass ran: applied when it ends. */
	struct trib_account_list next;
	bool has_next;
	/* No longer listed: dropped when its pass ends. */
	bool gone;
	/* merging a new user list: already in it */
	bool seen;

	/* The running pass and what it borrows; ended: its callback
	 * fired, the rest is tidied up from the loop. */
	struct user_sync *pass;
	struct user_sync_settings set;
	struct daemon_config *config;
	bool ended;
};

struct daemon_refresh;

struct daemon {
	struct cli_env_options options;
	/* loop, userdb client, logger, and the first settings */
	struct cli_env env;
	bool journal;
	struct daemon_config *config;

	/* sorted by name */
	struct daemon_user **users;
	unsigned int user_count;
	unsigned int running;
	bool stopping;

	struct daemon_refresh *refresh;
	bool refresh_again;
	/* configuration errors of the accounts already logged (sorted),
	 * so the hourly refresh does not repeat them */
	char **logged;
	unsigned int logged_count;

	struct event *timer, *refresh_timer;
	struct event *signals[4];
};

/* daemon.c */
/* Seconds on CLOCK_MONOTONIC: the schedule's clock. */
int64_t daemon_now(void);
/* Run the scheduler soon, from the loop. */
void daemon_kick(struct daemon *d);
struct daemon_config *daemon_config_ref(struct daemon_config *config);
void daemon_config_unref(struct daemon_config **config);

/* daemon-users.c */
/* Read the user list (LIST, then USER for each) and merge it; when one
 * is being read already, once more after it. */
void daemon_users_refresh(struct daemon *d);
/* Forget the accounts' configuration errors logged so far (SIGHUP: show
 * them again). */
void daemon_users_forget_errors(struct daemon *d);
/* Users whose pass ended: a newer account list applied, a user no
 * longer listed dropped. */
void daemon_users_tidy(struct daemon *d);
/* Whether the account's reauthorization record (incident.h) is there. */
bool daemon_reauth_present(struct daemon *d, const char *user,
			   const char *account);
/* Free every user (none may be running) and the logged errors. */
void daemon_users_free(struct daemon *d);

/* daemon-idle.c */
/* After the account's pass ended OK: start its watcher with
 * da->login_secret (taken; wiped in any case), unless one runs already
 * with the same settings, or the account does not IDLE (idle = no,
 * max_connections below 2, a server without IDLE). */
void daemon_idle_start(struct daemon_user *u, struct daemon_account *da,
		       const struct trib_account *account);
/* Close it at once (no LOGOUT); NULL is fine. Not from inside its own
 * client's callbacks. */
void daemon_idle_close(struct daemon_idle **w);
/* Whether the watcher still connects as account says (a reload). */
bool daemon_idle_same(const struct daemon_idle *w,
		      const struct trib_account *account);
/* SIGTERM: every watcher closed. */
void daemon_idle_close_all(struct daemon *d);

#endif
