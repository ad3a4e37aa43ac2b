/* test-schedule.c: the daemon's scheduling rules (fetcher/schedule.h),
 * exact to the second: the clock and the random numbers are the test's.
 * A new account is due at once; an OK pass makes the next one due a poll
 * interval after its end; passes that are not OK back off from 30 s,
 * doubling, to 1 h, with "equal jitter" (half fixed, half random), and an
 * OK pass resets that; a Retry-After pushes every due time, a wake
 * included; an account waiting for reauthorization is never due and is
 * looked at once a minute until its record is gone; a locked user is
 * retried a minute later without backoff; a wake makes everything due at
 * once, a running pass due again when it ends; a new poll interval counts
 * from the last OK pass. */

#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>

#include <cmocka.h>

#include "schedule.h"

#define T0 100000
#define POLL 300
#define RAND_MIN32 0u
#define RAND_MAX32 UINT32_MAX
#define RAND_HALF 0x80000000u

static void test_new_account_is_due(void **state)
{
	struct schedule_account a;

	(void)state;
	schedule_account_init(&a, POLL, T0);
	assert_true(schedule_account_due(&a, T0));
	assert_false(schedule_account_due(&a, T0 - 1));
	assert_int_equal(schedule_account_next(&a), T0);
	assert_false(schedule_account_check_reauth(&a, T0 + 1000));

	schedule_account_start(&a);
	assert_false(schedule_account_due(&a, T0 + 100000));
	assert_true(schedule_account_next(&a) == SCHEDULE_NEVER);
}

static void test_ok_pass_polls(void **state)
{
	struct schedule_account a;

	(void)state;
	schedule_account_init(&a, POLL, T0);
	schedule_account_start(&a);
	/* the interval counts from the end of the pass */
	schedule_account_done(&a, SCHEDULE_OK, 0, T0 + 42, RAND_MAX32);
	assert_int_equal(a.failures, 0);
	assert_int_equal(schedule_account_next(&a), T0 + 42 + POLL);
	assert_false(schedule_account_due(&a, T0 + 42 + POLL - 1));
	assert_true(schedule_account_due(&a, T0 + 42 + POLL));
}

static void test_backoff_values(void **state)
{
	static const unsigned int lowest[] = { 15,  30,	 60,   120,  240,
					       480, 960, 1800, 1800, 1800 };
	static const unsigned int highest[] = { 30,  60,   120,	 240,  480,
						960, 1920, 3600, 3600, 3600 };

	(void)state;
	for (unsigned int n = 1; n <= 10; n++) {
		assert_int_equal(schedule_backoff_secs(n, RAND_MIN32),
				 lowest[n - 1]);
		assert_int_equal(schedule_backoff_secs(n, RAND_MAX32),
				 highest[n - 1]);
	}
	/* half way: 15 s + 7.5 s, rounded up */
	assert_int_equal(schedule_backoff_secs(1, RAND_HALF), 23);
	assert_int_equal(schedule_backoff_secs(8, RAND_HALF), 2700);
	/* far past the cap: no overflow */
	assert_int_equal(schedule_backoff_secs(1000, RAND_MAX32), 3600);
	assert_int_equal(schedule_backoff_secs(UINT32_MAX, RAND_MIN32), 1800);
}

static void fail_once(struct schedule_account *a, int64_t now, uint32_t r)
{
	schedule_account_start(a);
	schedule_account_done(a, SCHEDULE_FAILED, 0, now, r);
}

static void test_failures_back_off_and_reset(void **state)
{
	struct schedule_account a;
	int64_t now = T0;

	(void)state;
	schedule_account_init(&a, POLL, now);
	/* the backoff ignores the poll interval: 30, 60, 120 ... 3600 */
	fail_once(&a, now, RAND_MAX32);
	assert_int_equal(a.failures, 1);
	assert_int_equal(schedule_account_next(&a), now + 30);
	now += 30;
	fail_once(&a, now, RAND_MAX32);
	assert_int_equal(schedule_account_next(&a), now + 60);
	now += 60;
	fail_once(&a, now, RAND_MIN32);
	assert_int_equal(a.failures, 3);
	assert_int_equal(schedule_account_next(&a), now + 60);
	for (unsigned int i = 0; i < 10; i++)
		fail_once(&a, now, RAND_MAX32);
	assert_int_equal(a.failures, 13);
	assert_int_equal(schedule_account_next(&a), now + 3600);

	/* an OK pass resets it: the poll interval, then 30 s again */
	now += 3600;
	schedule_account_start(&a);
	schedule_account_done(&a, SCHEDULE_OK, 0, now, RAND_MAX32);
	assert_int_equal(a.failures, 0);
	assert_int_equal(schedule_account_next(&a), now + POLL);
	now += POLL;
	fail_once(&a, now, RAND_MAX32);
	assert_int_equal(a.failures, 1);
	assert_int_equal(schedule_account_next(&a), now + 30);
}

static void test_retry_after(void **state)
{
	struct schedule_account a;

	(void)state;
	schedule_account_init(&a, POLL, T0);
	/* from the status file at start */
	schedule_account_set_not_before(&a, T0 + 500);
	assert_false(schedule_account_due(&a, T0));
	assert_int_equal(schedule_account_next(&a), T0 + 500);
	/* a wake does not go past it */
	schedule_account_wake(&a, T0 + 10);
	assert_int_equal(schedule_account_next(&a), T0 + 500);

	/* a pass's Retry-After later than the backoff wins ... */
	schedule_account_start(&a);
	schedule_account_done(&a, SCHEDULE_FAILED, T0 + 900, T0 + 500,
			      RAND_MAX32);
	assert_int_equal(schedule_account_next(&a), T0 + 900);
	/* ... an earlier one changes nothing */
	schedule_account_start(&a);
	schedule_account_done(&a, SCHEDULE_FAILED, T0 + 910, T0 + 900,
			      RAND_MAX32);
	assert_int_equal(schedule_account_next(&a), T0 + 900 + 60);
	/* and a pass without one drops it: a wake is due at once */
	schedule_account_start(&a);
	schedule_account_done(&a, SCHEDULE_OK, 0, T0 + 1000, RAND_MAX32);
	assert_int_equal(a.not_before, 0);
	schedule_account_wake(&a, T0 + 1001);
	assert_true(schedule_account_due(&a, T0 + 1001));

	/* over a poll interval too; dropped by hand */
	schedule_account_start(&a);
	schedule_account_done(&a, SCHEDULE_OK, T0 + 5000, T0 + 1002,
			      RAND_MAX32);
	assert_int_equal(schedule_account_next(&a), T0 + 5000);
	schedule_account_set_not_before(&a, 0);
	assert_int_equal(schedule_account_next(&a), T0 + 5000);
	schedule_account_wake(&a, T0 + 1003);
	assert_int_equal(schedule_account_next(&a), T0 + 1003);
}

static void test_reauth_waits_for_record(void **state)
{
	struct schedule_account a;
	int64_t now = T0;

	(void)state;
	schedule_account_init(&a, POLL, now);
	schedule_account_start(&a);
	schedule_account_done(&a, SCHEDULE_REAUTH, 0, now, RAND_MAX32);
	assert_true(a.reauth);
	/* never due, however long; looked at once a minute */
	assert_false(schedule_account_due(&a, now + 100000));
	assert_false(schedule_account_check_reauth(&a, now + 59));
	assert_true(schedule_account_check_reauth(&a, now + 60));
	assert_int_equal(schedule_account_next(&a), now + 60);
	now += 60;
	schedule_account_reauth_checked(&a, true, now);
	assert_false(schedule_account_check_reauth(&a, now + 59));
	assert_int_equal(schedule_account_next(&a), now + 60);

	/* a wake looks now */
	now += 5;
	schedule_account_wake(&a, now);
	assert_true(schedule_account_check_reauth(&a, now));
	assert_false(schedule_account_due(&a, now));

	/* the record is gone: due at once, the backoff reset */
	schedule_account_reauth_checked(&a, false, now);
	assert_false(a.reauth);
	assert_int_equal(a.failures, 0);
	assert_true(schedule_account_due(&a, now));
	assert_false(schedule_account_check_reauth(&a, now + 1000));
}

static void test_reauth_at_start(void **state)
{
	struct schedule_account a;

	(void)state;
	schedule_account_init(&a, POLL, T0);
	schedule_account_set_reauth(&a, T0);
	assert_false(schedule_account_due(&a, T0));
	assert_int_equal(schedule_account_next(&a), T0 + 60);
	/* gone, but a Retry-After still holds */
	schedule_account_set_not_before(&a, T0 + 200);
	schedule_account_reauth_checked(&a, false, T0 + 60);
	assert_false(schedule_account_due(&a, T0 + 60));
	assert_int_equal(schedule_account_next(&a), T0 + 200);
}

static void test_locked_retries_in_a_minute(void **state)
{
	struct schedule_account a;

	(void)state;
	schedule_account_init(&a, POLL, T0);
	fail_once(&a, T0, RAND_MAX32);
	schedule_account_set_not_before(&a, T0 + 10);
	schedule_account_start(&a);
	/* woken meanwhile: still a minute, the lock is someone else's */
	schedule_account_wake(&a, T0 + 31);
	schedule_account_done(&a, SCHEDULE_LOCKED, 0, T0 + 31, RAND_MAX32);
	assert_int_equal(a.failures, 1); /* no backoff for it */
	assert_int_equal(a.not_before, T0 + 10);
	assert_int_equal(schedule_account_next(&a), T0 + 91);
	assert_false(schedule_account_due(&a, T0 + 90));
	assert_true(schedule_account_due(&a, T0 + 91));
}

static void test_wake(void **state)
{
	struct schedule_account a;

	(void)state;
	schedule_account_init(&a, POLL, T0);
	schedule_account_start(&a);
	schedule_account_done(&a, SCHEDULE_OK, 0, T0, RAND_MAX32);
	assert_false(schedule_account_due(&a, T0 + 1));
	schedule_account_wake(&a, T0 + 1);
	assert_true(schedule_account_due(&a, T0 + 1));

	/* woken while running: due again when the pass ends */
	schedule_account_start(&a);
	schedule_account_wake(&a, T0 + 2);
	assert_false(schedule_account_due(&a, T0 + 2));
	schedule_account_done(&a, SCHEDULE_OK, 0, T0 + 3, RAND_MAX32);
	assert_true(schedule_account_due(&a, T0 + 3));
	/* once: the next pass goes back to the interval */
	schedule_account_start(&a);
	schedule_account_done(&a, SCHEDULE_OK, 0, T0 + 4, RAND_MAX32);
	assert_int_equal(schedule_account_next(&a), T0 + 4 + POLL);

	/* also after a failed pass (the count still grows) */
	schedule_account_start(&a);
	schedule_account_wake(&a, T0 + 5);
	schedule_account_done(&a, SCHEDULE_FAILED, 0, T0 + 6, RAND_MAX32);
	assert_int_equal(a.failures, 1);
	assert_true(schedule_account_due(&a, T0 + 6));

	/* a wake before the start is forgotten by the start */
	schedule_account_wake(&a, T0 + 7);
	schedule_account_start(&a);
	schedule_account_done(&a, SCHEDULE_OK, 0, T0 + 8, RAND_MAX32);
	assert_int_equal(schedule_account_next(&a), T0 + 8 + POLL);
}

static void test_new_interval(void **state)
{
	struct schedule_account a;

	(void)state;
	/* never ran: still due now */
	schedule_account_init(&a, POLL, T0);
	schedule_account_set_interval(&a, 60);
	assert_int_equal(schedule_account_next(&a), T0);

	/* after an OK pass: from its end */
	schedule_account_start(&a);
	schedule_account_done(&a, SCHEDULE_OK, 0, T0 + 10, RAND_MAX32);
	assert_int_equal(schedule_account_next(&a), T0 + 70);
	schedule_account_set_interval(&a, 3600);
	assert_int_equal(schedule_account_next(&a), T0 + 3610);
	schedule_account_set_not_before(&a, T0 + 4000);
	schedule_account_set_interval(&a, 600);
	assert_int_equal(schedule_account_next(&a), T0 + 4000);

	/* while backing off: the backoff stays */
	fail_once(&a, T0 + 5000, RAND_MAX32);
	assert_int_equal(schedule_account_next(&a), T0 + 5030);
	schedule_account_set_interval(&a, 10);
	assert_int_equal(schedule_account_next(&a), T0 + 5030);
	assert_int_equal(a.poll_interval_secs, 10);

	/* while running: the pass's end decides */
	schedule_account_start(&a);
	schedule_account_set_interval(&a, 20);
	assert_true(schedule_account_next(&a) == SCHEDULE_NEVER);
	schedule_account_done(&a, SCHEDULE_OK, 0, T0 + 6000, RAND_MAX32);
	assert_int_equal(schedule_account_next(&a), T0 + 6020);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_new_account_is_due),
		cmocka_unit_test(test_ok_pass_polls),
		cmocka_unit_test(test_backoff_values),
		cmocka_unit_test(test_failures_back_off_and_reset),
		cmocka_unit_test(test_retry_after),
		cmocka_unit_test(test_reauth_waits_for_record),
		cmocka_unit_test(test_reauth_at_start),
		cmocka_unit_test(test_locked_retries_in_a_minute),
		cmocka_unit_test(test_wake),
		cmocka_unit_test(test_new_interval),
	};

	return cmocka_run_group_tests(tests, NULL, NULL);
}
