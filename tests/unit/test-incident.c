/* test-incident.c: the reauthorization incident record and the notify
 * command of fetcher/incident.h. A record survives a write and a read
 * with its file 0600 and no temp file left; every kind of damage (torn,
 * no fingerprint, a bad number, too big, a NUL, a link) is refused with
 * the file named; unknown keys are ignored; reasons are cleaned. The
 * notify command runs once per incident with exactly PATH and the
 * TRIBUTARY_* variables, stdin /dev/null, in its own process group; a
 * nonzero exit is a warning, a command that outlives the timeout is
 * killed with its whole group; a notice that LMTP cannot take is left for
 * later. Each test runs in a temp dir of its own. (The notice's delivery
 * is tested end to end in tests/integration/test_sync_reauth.py.) */

#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>

#include <cmocka.h>

#include "account.h"
#include "alloc.h"
#include "incident.h"
#include "loop.h"
#include "provider.h"
#include "trace.h"

#include <errno.h>
#include <fcntl.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#define FP "5iG0k4n6Lm-KHzpW1a4_2DZV1WK5eo6a1R_t3gWDueI"
#define TEST_KEY                                                               \
	"00112233445566778899aabbccddeeff00112233445566778899aabbccddeeff"

struct fixture {
	char *dir;
	char *path; /* dir/reauth-work */
	struct trib_loop *loop;
	struct trib_trace_keys *keys;
	struct trib_account account;
	struct incident_settings set;
};

static int setup(void **state)
{
	struct fixture *fx = trib_calloc(1, sizeof(*fx));
	char tmpl[] = "/tmp/test-incident.XXXXXX";
	const char *error;

	assert_non_null(mkdtemp(tmpl));
	fx->dir = trib_strdup(tmpl);
	fx->path = trib_strdup_printf("%s/reauth-work", fx->dir);
	fx->loop = trib_loop_create(&error);
	assert_non_null(fx->loop);
	assert_int_equal(trib_trace_keys_parse(TEST_KEY, strlen(TEST_KEY), "t",
					       &fx->keys, &error),
			 0);
	fx->account.name = trib_strdup("work");
	fx->account.login = trib_strdup("alice@example.com");
	fx->account.provider = trib_provider_find("gmail");
	assert_non_null(fx->account.provider);
	fx->set.user = "carol";
	fx->set.account = &fx->account;
	fx->set.lmtp = "unix:/nonexistent/tributary-test/lmtp";
	fx->set.keys = fx->keys;
	*state = fx;
	return 0;
}

static int teardown(void **state)
{
	struct fixture *fx = *state;
	char *cmd = trib_strdup_printf("rm -rf '%s'", fx->dir);

	assert_int_equal(system(cmd), 0);
	free(cmd);
	trib_trace_keys_destroy(&fx->keys);
	trib_loop_destroy(&fx->loop);
	free(fx->account.name);
	free(fx->account.login);
	free(fx->path);
	free(fx->dir);
	free(fx);
	return 0;
}

static void write_text(const char *path, const char *text, size_t len)
{
	int fd = open(path, O_WRONLY | O_CREAT | O_TRUNC, 0600);

	assert_true(fd >= 0);
	assert_int_equal(write(fd, text, len), (ssize_t)len);
	close(fd);
}

static char *read_text(const char *path)
{
	char buf[8192];
	ssize_t n;
	int fd = open(path, O_RDONLY);

	if (fd < 0)
		return NULL;
	n = read(fd, buf, sizeof(buf) - 1);
	close(fd);
	assert_true(n >= 0);
	buf[n] = '\0';
	return trib_strdup(buf);
}

static struct incident *new_incident(void)
{
	struct incident *inc = trib_calloc(1, sizeof(*inc));

	inc->account = trib_strdup("work");
	inc->fingerprint = trib_strdup(FP);
	inc->since = 1700000000;
	inc->reason = trib_strdup("invalid_grant: Token has been revoked.");
	return inc;
}

/* ---- the record ---- */

static void test_round_trip(void **state)
{
	struct fixture *fx = *state;
	struct incident *inc = new_incident(), *got;
	struct stat st;
	char *error, *tmp;

	inc->notified = 1700000005;
	assert_int_equal(incident_write(fx->dir, inc, &error), 0);
	assert_int_equal(stat(fx->path, &st), 0);
	assert_int_equal(st.st_mode & 0777, 0600);
	tmp = trib_strdup_printf("%s.tmp", fx->path);
	assert_int_equal(access(tmp, F_OK), -1);
	free(tmp);

	assert_int_equal(incident_read(fx->dir, "work", &got, &error), 1);
	assert_string_equal(got->account, "work");
	assert_string_equal(got->fingerprint, FP);
	assert_int_equal(got->since, 1700000000);
	assert_string_equal(got->reason, inc->reason);
	assert_int_equal(got->notified, 1700000005);
	assert_int_equal(got->noticed, 0);
	incident_free(&got);
	assert_null(got);

	/* another account has none */
	assert_int_equal(incident_read(fx->dir, "home", &got, &error), 0);
	assert_null(got);
	assert_null(error);

	assert_int_equal(incident_remove(fx->dir, "work", &error), 0);
	assert_int_equal(incident_read(fx->dir, "work", &got, &error), 0);
	/* removing what is not there is fine */
	assert_int_equal(incident_remove(fx->dir, "work", &error), 0);
	incident_free(&inc);
}

static void test_damage(void **state)
{
	static const char *const bad[] = {
		"", /* no fingerprint, no since */
		"fingerprint=" FP "\n",
		"since=1700000000\nreason=x\n",
		"fingerprint=" FP "\nsince=1700000000", /* torn */
		"fingerprint=short\nsince=1700000000\n",
		"fingerprint=" FP "\nsince=0\n",
		"fingerprint=" FP "\nsince=-5\n",
		"fingerprint=" FP "\nsince=17e8\n",
		"fingerprint=" FP "\nsince=99999999999999999999999\n",
		"fingerprint=" FP "\nsince=1700000000\nnoticed=soon\n",
		"fingerprint=" FP "\nsince=1700000000\nno equals sign\n",
		"fingerprint=" FP "\nfingerprint=" FP "\nsince=1\n",
	};
	struct fixture *fx = *state;
	struct incident *got;
	char *error, *big, *link;

	for (size_t i = 0; i < TRIB_N_ELEMENTS(bad); i++) {
		write_text(fx->path, bad[i], strlen(bad[i]));
		if (incident_read(fx->dir, "work", &got, &error) != -1)
			fail_msg("record %zu was accepted", i);
		assert_null(got);
		assert_non_null(strstr(error, fx->path));
		free(error);
	}
	/* a NUL inside */
	write_text(fx->path, "fingerprint=" FP "\n\0since=1\n",
		   sizeof("fingerprint=" FP "\n\0since=1\n") - 1);
	assert_int_equal(incident_read(fx->dir, "work", &got, &error), -1);
	free(error);
	/* too big */
	big = trib_malloc(5000);
	memset(big, 'x', 5000);
	write_text(fx->path, big, 5000);
	free(big);
	assert_int_equal(incident_read(fx->dir, "work", &got, &error), -1);
	free(error);
	/* a link is not followed */
	unlink(fx->path);
	link = trib_strdup_printf("%s/elsewhere", fx->dir);
	write_text(link, "fingerprint=" FP "\nsince=1\n",
		   strlen("fingerprint=" FP "\nsince=1\n"));
	assert_int_equal(symlink(link, fx->path), 0);
	assert_int_equal(incident_read(fx->dir, "work", &got, &error), -1);
	assert_non_null(strstr(error, "cannot open"));
	free(error);
	free(link);
}

static void test_unknown_keys_and_reason(void **state)
{
	static const char text[] = "fingerprint=" FP "\n"
				   "since=1700000000\n"
				   "future=whatever\n"
				   "reason=a\tb\x01 c \xff\xc3\xa9\n";
	struct fixture *fx = *state;
	struct incident *got, *inc = new_incident();
	char *error;

	write_text(fx->path, text, strlen(text));
	assert_int_equal(incident_read(fx->dir, "work", &got, &error), 1);
	assert_string_equal(got->reason, "a?b? c ?\xc3\xa9");
	assert_int_equal(got->notified, 0);
	incident_free(&got);

	/* a bad fingerprint is never written */
	free(inc->fingerprint);
	inc->fingerprint = trib_strdup("not/a/fingerprint");
	assert_int_equal(incident_write(fx->dir, inc, &error), -1);
	assert_non_null(error);
	free(error);
	incident_free(&inc);
}

static void test_reason_clean(void **state)
{
	char *long_reason, *s;

	(void)state;
	s = incident_reason_clean("line\r\nbreak \x7f");
	assert_string_equal(s, "line??break ?");
	free(s);
	/* overlong, surrogate, beyond U+10FFFF, truncated */
	s = incident_reason_clean("\xc0\xaf \xed\xa0\x80 \xf4\x90\x80\x80 "
				  "\xe2\x82");
	assert_string_equal(s, "?? ??? ???? ??");
	free(s);
	s = incident_reason_clean("\xe2\x82\xac \xf0\x9f\x94\x91");
	assert_string_equal(s, "\xe2\x82\xac \xf0\x9f\x94\x91");
	free(s);
	long_reason = trib_malloc(INCIDENT_REASON_MAX + 100);
	memset(long_reason, 'r', INCIDENT_REASON_MAX + 99);
	/* a two-byte character across the cut is not kept half */
	long_reason[INCIDENT_REASON_MAX - 1] = '\xc3';
	long_reason[INCIDENT_REASON_MAX] = '\xa9';
	long_reason[INCIDENT_REASON_MAX + 99] = '\0';
	s = incident_reason_clean(long_reason);
	assert_int_equal(strlen(s), INCIDENT_REASON_MAX);
	assert_int_equal(s[INCIDENT_REASON_MAX - 1], '?');
	free(s);
	free(long_reason);
	s = incident_command("carol", "work");
	assert_string_equal(s, "tributary authorize -u carol work");
	free(s);
}

/* ---- the follow-up ---- */

static void test_notify_once(void **state)
{
	struct fixture *fx = *state;
	struct incident *inc = new_incident(), *got;
	char *cmd, *out, *error, *env;

	cmd = trib_strdup_printf("env > '%s/env'; echo run >> '%s/runs'; "
				 "read x && echo stdin >> '%s/runs'; exit 3",
				 fx->dir, fx->dir, fx->dir);
	fx->set.notify_command = cmd;
	setenv("TRIBUTARY_SECRET_TEST", "must-not-pass", 1);
	assert_int_equal(incident_write(fx->dir, inc, &error), 0);
	assert_int_equal(
		incident_follow_up(fx->loop, fx->dir, inc, &fx->set, &error),
		-1);
	assert_string_equal(error, "the notify command exited with status 3");
	free(error);
	assert_true(inc->notified > 0);
	assert_int_equal(incident_read(fx->dir, "work", &got, &error), 1);
	assert_int_equal(got->notified, inc->notified);
	incident_free(&got);

	env = trib_strdup_printf("%s/env", fx->dir);
	out = read_text(env);
	free(env);
	assert_non_null(out);
	assert_non_null(strstr(out, "PATH=/usr/local/sbin:/usr/local/bin:"
				    "/usr/sbin:/usr/bin:/sbin:/bin\n"));
	assert_non_null(strstr(out, "TRIBUTARY_EVENT=reauthorization-"
				    "required\n"));
	assert_non_null(strstr(out, "TRIBUTARY_USER=carol\n"));
	assert_non_null(strstr(out, "TRIBUTARY_ACCOUNT=work\n"));
	assert_non_null(strstr(out, "TRIBUTARY_PROVIDER=gmail\n"));
	assert_non_null(strstr(out, "TRIBUTARY_LOGIN=alice@example.com\n"));
	assert_non_null(strstr(out, "TRIBUTARY_REASON=invalid_grant: Token "
				    "has been revoked.\n"));
	assert_non_null(strstr(out, "TRIBUTARY_COMMAND=tributary authorize "
				    "-u carol work\n"));
	assert_non_null(strstr(out, "TRIBUTARY_SINCE=1700000000\n"));
	assert_non_null(strstr(out, "PWD=/\n"));
	assert_null(strstr(out, "must-not-pass"));
	assert_null(strstr(out, "HOME="));
	free(out);

	/* once: a later pass does not run it again */
	assert_int_equal(
		incident_follow_up(fx->loop, fx->dir, inc, &fx->set, &error),
		0);
	assert_null(error);
	env = trib_strdup_printf("%s/runs", fx->dir);
	out = read_text(env);
	free(env);
	assert_string_equal(out, "run\n"); /* and stdin was empty */
	free(out);
	unsetenv("TRIBUTARY_SECRET_TEST");
	incident_free(&inc);
	free(cmd);
}

static void test_notify_timeout_kills_the_group(void **state)
{
	struct fixture *fx = *state;
	struct incident *inc = new_incident();
	char *cmd, *path, *pid_text, *error, *proc;
	char stat_text[256];
	FILE *f;

	cmd = trib_strdup_printf("sleep 60 & echo $! > '%s/pid'; wait",
				 fx->dir);
	fx->set.notify_command = cmd;
	fx->set.notify_timeout_secs = 1;
	assert_int_equal(
		incident_follow_up(fx->loop, fx->dir, inc, &fx->set, &error),
		-1);
	assert_string_equal(error, "the notify command did not finish within "
				   "1 s: killed");
	free(error);
	assert_true(inc->notified > 0);
	path = trib_strdup_printf("%s/pid", fx->dir);
	pid_text = read_text(path);
	assert_non_null(pid_text);
	/* the background sleep went with the group: gone, or a zombie
	 * waiting for init */
	proc = trib_strdup_printf("/proc/%d/stat", atoi(pid_text));
	f = fopen(proc, "r");
	if (f != NULL) {
		assert_non_null(fgets(stat_text, sizeof(stat_text), f));
		fclose(f);
		assert_non_null(strstr(stat_text, ") Z "));
	}
	free(proc);
	free(pid_text);
	free(path);
	incident_free(&inc);
	free(cmd);
}

static void test_notice_left_for_later(void **state)
{
	struct fixture *fx = *state;
	struct incident *inc = new_incident(), *got;
	char *error;

	fx->set.notice = true;
	assert_int_equal(
		incident_follow_up(fx->loop, fx->dir, inc, &fx->set, &error),
		-1);
	assert_non_null(strstr(error, "notice not delivered"));
	free(error);
	assert_int_equal(inc->noticed, 0);
	/* the record was not written: nothing to record */
	assert_int_equal(incident_read(fx->dir, "work", &got, &error), 0);
	/* a bad LMTP address is an error of this step too */
	fx->set.lmtp = "nowhere";
	assert_int_equal(
		incident_follow_up(fx->loop, fx->dir, inc, &fx->set, &error),
		-1);
	assert_non_null(strstr(error, "tributary_lmtp"));
	free(error);
	incident_free(&inc);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test_setup_teardown(test_round_trip, setup,
						teardown),
		cmocka_unit_test_setup_teardown(test_damage, setup, teardown),
		cmocka_unit_test_setup_teardown(test_unknown_keys_and_reason,
						setup, teardown),
		cmocka_unit_test(test_reason_clean),
		cmocka_unit_test_setup_teardown(test_notify_once, setup,
						teardown),
		cmocka_unit_test_setup_teardown(
			test_notify_timeout_kills_the_group, setup, teardown),
		cmocka_unit_test_setup_teardown(test_notice_left_for_later,
						setup, teardown),
	};

	signal(SIGPIPE, SIG_IGN);
	return cmocka_run_group_tests(tests, NULL, NULL);
}
