/* schedule.c: when each remote account's next pass is due (see
 * schedule.h). */

#include "schedule.h"

#include "oauth.h"

#include <string.h>

static int64_t max64(int64_t a, int64_t b)
{
	return a > b ? a : b;
}

/* The due time, pushed past a Retry-After. */
static void set_due(struct schedule_account *a, int64_t due)
{
	a->due = max64(due, a->not_before);
}

void schedule_account_init(struct schedule_account *a,
			   unsigned int poll_interval_secs, int64_t now)
{
	memset(a, 0, sizeof(*a));
	a->poll_interval_secs = poll_interval_secs;
	a->due = now;
}

void schedule_account_set_interval(struct schedule_account *a,
				   unsigned int poll_interval_secs)
{
	if (a->poll_interval_secs == poll_interval_secs)
		return;
	a->poll_interval_secs = poll_interval_secs;
	if (a->last_ok && a->last_end != 0 && !a->running)
		set_due(a, a->last_end + poll_interval_secs);
}

void schedule_account_set_not_before(struct schedule_account *a,
				     int64_t not_before)
{
	a->not_before = not_before;
	set_due(a, a->due);
}

void schedule_account_set_reauth(struct schedule_account *a, int64_t now)
{
	a->reauth = true;
	a->reauth_checked = now;
}

bool schedule_account_due(const struct schedule_account *a, int64_t now)
{
	return !a->running && !a->reauth && a->due <= now;
}

bool schedule_account_check_reauth(const struct schedule_account *a,
				   int64_t now)
{
	return !a->running && a->reauth &&
	       now >= a->reauth_checked + SCHEDULE_REAUTH_CHECK_SECS;
}

void schedule_account_reauth_checked(struct schedule_account *a, bool present,
				     int64_t now)
{
	a->reauth_checked = now;
	if (present)
		return;
	a->reauth = false;
	a->failures = 0;
	set_due(a, now);
}

int64_t schedule_account_next(const struct schedule_account *a)
{
	if (a->running)
		return SCHEDULE_NEVER;
	if (a->reauth)
		return a->reauth_checked + SCHEDULE_REAUTH_CHECK_SECS;
	return a->due;
}

void schedule_account_start(struct schedule_account *a)
{
	a->running = true;
	a->woken = false;
}

unsigned int schedule_backoff_secs(unsigned int failures, uint32_t random)
{
	uint64_t ceiling = SCHEDULE_BACKOFF_BASE_SECS * 1000, msecs;

	for (unsigned int i = 1;
	     i < failures && ceiling < SCHEDULE_BACKOFF_CAP_SECS * 1000; i++)
		ceiling *= 2;
	if (ceiling > SCHEDULE_BACKOFF_CAP_SECS * 1000)
		ceiling = SCHEDULE_BACKOFF_CAP_SECS * 1000;
	/* "equal jitter": half of it for sure, the other half at random
	 * (never a retry right away) */
	msecs = ceiling / 2 + trib_oauth_backoff_msecs(0, ceiling / 2,
						       ceiling / 2, -1, random);
	return (unsigned int)((msecs + 999) / 1000);
}

void schedule_account_done(struct schedule_account *a,
			   enum schedule_outcome outcome, int64_t not_before,
			   int64_t now, uint32_t random)
{
	bool woken = a->woken;

	a->running = false;
	a->woken = false;
	if (outcome != SCHEDULE_LOCKED)
		a->not_before = not_before;
	switch (outcome) {
	case SCHEDULE_OK:
		a->failures = 0;
		a->last_end = now;
		a->last_ok = true;
		set_due(a, woken ? now : now + a->poll_interval_secs);
		break;
	case SCHEDULE_FAILED:
		a->failures++;
		a->last_end = now;
		a->last_ok = false;
		set_due(a, woken ? now
				 : now + schedule_backoff_secs(a->failures,
							       random));
		break;
	case SCHEDULE_REAUTH:
		a->failures++;
		a->last_end = now;
		a->last_ok = false;
		schedule_account_set_reauth(a, now);
		break;
	case SCHEDULE_LOCKED:
		/* nothing ran (not_before stays): no backoff, and a wake
		 * changes nothing while the other fetcher holds the lock */
		set_due(a, now + SCHEDULE_LOCKED_SECS);
		break;
	}
}

void schedule_account_wake(struct schedule_account *a, int64_t now)
{
	if (a->running) {
		a->woken = true;
		return;
	}
	if (a->reauth) {
		/* look for the record now */
		a->reauth_checked = now - SCHEDULE_REAUTH_CHECK_SECS;
		return;
	}
	set_due(a, now);
}
