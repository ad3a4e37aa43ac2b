#ifndef TRIB_STATUS_H
#define TRIB_STATUS_H

/* status.h: what a user's accounts did last, for `tributary status` (and
 * later the daemon, the Dovecot plugin's METADATA and doveadm).
 *
 * One file per user, <state_dir>/<user>/status: a small JSON object
 * (docs/state.md) replaced atomically (temp + fsync + rename), 0600,
 * owned like the user's state directory. Writers hold the user's state
 * lock (`tributary sync`, `tributary run`); readers take no lock, since a
 * rename is atomic. Nothing secret is ever put in it: error lines are the
 * fetcher's own, which never hold a token or password.
 *
 * A missing file is an empty status (nothing synced yet). A damaged one
 * is an error for readers; a writer replaces it (it is a report, not
 * state: nothing is lost with it). */

#include <stdbool.h>
#include <stdint.h>
#include <sys/types.h>

/* The most error lines kept per account, and the longest line kept. */
#define TRIB_STATUS_ERRORS_MAX 8
#define TRIB_STATUS_LINE_MAX 1000
/* The largest status file read, in bytes. */
#define TRIB_STATUS_FILE_MAX (1024 * 1024)

enum trib_account_state {
	/* Listed but never synced. */
	TRIB_ACCOUNT_STATE_NEW,
	/* The last pass did everything it found. */
	TRIB_ACCOUNT_STATE_OK,
	/* The last pass left something for later (a 4xx, a lost
	 * connection, a token endpoint down): retried by itself. */
	TRIB_ACCOUNT_STATE_DEFERRED,
	/* The last pass failed on something a person must fix: the
	 * configuration, a refused password, a TLS certificate. */
	TRIB_ACCOUNT_STATE_FAILING,
	/* The refresh token is gone (revoked, expired): the user must run
	 * `tributary authorize`. */
	TRIB_ACCOUNT_STATE_REAUTH,
};

struct trib_status_account {
	char *name;
	enum trib_account_state state;
	/* Unix seconds; 0: never. */
	int64_t last_attempt;
	int64_t last_success; /* the last pass that ended OK */
	/* The last pass's counts. */
	unsigned int new_count, delivered, rejected, deferred;
	/* Delivered by every pass since the file was made. */
	uint64_t delivered_total;
	/* Passes in a row that did not end OK. */
	unsigned int failures;
	/* The token endpoint asked (Retry-After) not to be asked again
	 * before this time (unix seconds; 0: no such request). Kept in
	 * the status because a run started by cron must honour it too. */
	int64_t token_not_before;
	/* The last pass's error lines ("alice/work: ..."), at most
	 * TRIB_STATUS_ERRORS_MAX, each at most TRIB_STATUS_LINE_MAX bytes. */
	char **errors;
	unsigned int error_count;
};

struct trib_status {
	char *user;
	int64_t updated; /* when it was last saved, unix seconds */
	struct trib_status_account **accounts;
	unsigned int count;
};

/* "new", "ok", "deferred", "failing", "reauthorization-required" */
const char *trib_account_state_name(enum trib_account_state state);

/* <state_dir>/<user>/status, malloc()ed; NULL for a user name
 * trib_state_valid_user() refuses. */
char *trib_status_path(const char *state_dir, const char *user);

/* Read path. Returns 0 with *status_r (an empty status for user when the
 * file does not exist), or -1 with *error_r (malloc()ed) naming the file
 * and the problem. *damaged_r (may be NULL) then tells a damaged file
 * (too big, empty, not JSON, nested too deeply, the wrong shape, another
 * version or user, not a regular file) from one that cannot be read
 * (permission, I/O). Fields it does not know are ignored; error lines
 * are cut to the limits above. */
int trib_status_load(const char *path, const char *user,
		     struct trib_status **status_r, bool *damaged_r,
		     char **error_r);
/* An empty status for user. */
struct trib_status *trib_status_new(const char *user);
/* The account's entry, or NULL. */
struct trib_status_account *trib_status_find(struct trib_status *status,
					     const char *name);
/* The account's entry, made (state NEW) when missing. */
struct trib_status_account *trib_status_get(struct trib_status *status,
					    const char *name);
/* Drop the account's entry (none is fine). */
void trib_status_remove(struct trib_status *status, const char *name);
/* Replace the entry's error lines: control characters and bytes that are
 * not UTF-8 become '?', a line longer than TRIB_STATUS_LINE_MAX is cut
 * (ending "..."), and past TRIB_STATUS_ERRORS_MAX lines the last one
 * kept says how many more there were. */
void trib_status_set_errors(struct trib_status_account *account,
			    char *const *errors, unsigned int count);
/* Write path atomically (<path>.tmp, fsync, rename, fsync of the
 * directory), mode 0600, owned by (uid, gid) when they are not -1 (root
 * writing for the tributary user). Sets status->updated. Returns 0 or -1
 * with *error_r (malloc()ed); the old file then stays (except when only
 * the directory's fsync failed: the new one is in place, maybe not
 * durable). A status that would be larger than TRIB_STATUS_FILE_MAX is
 * refused. */
int trib_status_save(struct trib_status *status, const char *path, uid_t uid,
		     gid_t gid, char **error_r);
void trib_status_free(struct trib_status **status);

#endif
