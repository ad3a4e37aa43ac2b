#ifndef SCHEDULE_H
#define SCHEDULE_H

/* schedule.h: when each remote account's next pass is due, for
 * `tributary run` (daemon.c). Pure: no I/O, no clock and no randomness
 * of its own. The caller hands in the time (now: seconds on a clock that
 * does not jump; the daemon's is CLOCK_MONOTONIC) and the random numbers
 * (uniform over 32 bits), so every result is exact in the tests.
 *
 * The rules (docs/daemon.md):
 * - after a pass that ended OK, the next is due poll_interval_secs
 *   after its end;
 * - after one that did not (something deferred, credentials or TLS
 *   refused, a configuration problem), the nth such pass in a row waits
 *   a backoff with jitter: uniform between half of and all of
 *   min(SCHEDULE_BACKOFF_CAP_SECS, SCHEDULE_BACKOFF_BASE_SECS * 2^(n-1));
 *   an OK pass resets the count;
 * - a token endpoint's Retry-After (not_before) pushes the due time to
 *   it, also for a wake;
 * - an account that needs reauthorization is not due at all until its
 *   record is gone: schedule_account_check_reauth() says when to look
 *   (at most every SCHEDULE_REAUTH_CHECK_SECS), the caller looks (a
 *   stat) and says what it found;
 * - accounts whose user's state lock someone else holds are tried again
 *   SCHEDULE_LOCKED_SECS later, with no backoff;
 * - a wake (SIGUSR1) makes an account due now, and one whose pass is
 *   running due again as soon as that pass ends.
 *
 * Owns nothing. */

#include <stdbool.h>
#include <stdint.h>

#define SCHEDULE_BACKOFF_BASE_SECS 30
#define SCHEDULE_BACKOFF_CAP_SECS 3600
#define SCHEDULE_REAUTH_CHECK_SECS 60
#define SCHEDULE_LOCKED_SECS 60
/* "never": the next event of an account whose pass is running */
#define SCHEDULE_NEVER INT64_MAX

/* How an account's pass ended, as far as its schedule is concerned. */
enum schedule_outcome {
	SCHEDULE_OK,
	/* not OK: deferred, refused, misconfigured (backoff) */
	SCHEDULE_FAILED,
	/* needs `tributary authorize`, and its record is there */
	SCHEDULE_REAUTH,
	/* never ran: another fetcher holds the user's state lock */
	SCHEDULE_LOCKED,
};

struct schedule_account {
	unsigned int poll_interval_secs;
	/* When the next pass is due (not running, not waiting for
	 * reauthorization). */
	int64_t due;
	/* When the last pass ended, and whether it was OK (a new poll
	 * interval counts from there); last_end 0: none yet. */
	int64_t last_end;
	bool last_ok;
	/* Passes in a row that did not end OK. */
	unsigned int failures;
	/* No pass before this time (Retry-After); 0: none. */
	int64_t not_before;
	/* Waiting for the reauthorization record to go; it was last
	 * looked for at reauth_checked. */
	bool reauth;
	int64_t reauth_checked;
	bool running;
	/* Woken while running: due again when the pass ends. */
	bool woken;
};

/* A new account: due now. */
void schedule_account_init(struct schedule_account *a,
			   unsigned int poll_interval_secs, int64_t now);
/* A new poll interval (the settings were reloaded): after an OK pass the
 * next one is due that long after its end. */
void schedule_account_set_interval(struct schedule_account *a,
				   unsigned int poll_interval_secs);
/* No pass before not_before (0: drop the limit). */
void schedule_account_set_not_before(struct schedule_account *a,
				     int64_t not_before);
/* Its reauthorization record is there (found when the daemon starts):
 * nothing is due until schedule_account_reauth_checked() says it has
 * gone. */
void schedule_account_set_reauth(struct schedule_account *a, int64_t now);

/* Whether a pass should start now. */
bool schedule_account_due(const struct schedule_account *a, int64_t now);
/* Whether its reauthorization record should be looked for now. */
bool schedule_account_check_reauth(const struct schedule_account *a,
				   int64_t now);
/* What the look found: still there (keep waiting), or gone (due now,
 * the backoff reset: someone ran `tributary authorize`). */
void schedule_account_reauth_checked(struct schedule_account *a, bool present,
				     int64_t now);
/* When something next happens to it: its due time, its next look for
 * the record, or SCHEDULE_NEVER while its pass runs. */
int64_t schedule_account_next(const struct schedule_account *a);

void schedule_account_start(struct schedule_account *a);
/* Its pass ended at now. not_before: the token endpoint's Retry-After
 * (0: none), which replaces the one before (SCHEDULE_LOCKED: ignored,
 * nothing ran). random: for the jitter. */
void schedule_account_done(struct schedule_account *a,
			   enum schedule_outcome outcome, int64_t not_before,
			   int64_t now, uint32_t random);
/* Due now (SIGUSR1); see above. */
void schedule_account_wake(struct schedule_account *a, int64_t now);

/* The wait after the failures-th pass in a row that was not OK
 * (failures >= 1), in seconds. */
unsigned int schedule_backoff_secs(unsigned int failures, uint32_t random);

#endif
