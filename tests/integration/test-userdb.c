/* test-userdb.c: the userdb client against the auth service of the
 * harness's real remote Dovecot 2.3 (its auth-userdb listener, mode 0666;
 * `userdb static` with allow_all_users, uid/gid 65534, homes
 * DIR/remote/home/<user>): lookups, Dovecot's own answers to odd names,
 * LIST on a userdb that cannot iterate, many lookups on one connection,
 * the wrong socket, and what an unprivileged fetcher is told. */

#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>

#include <cmocka.h>

#include "alloc.h"
#include "itest.h"
#include "userdb.h"

#include <pwd.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <unistd.h>

#define DEADLINE 20
#define MANY 200

struct answer {
	unsigned int calls;
	int result;
	char *error;
	char *name;
	char *uid, *gid, *home;
	unsigned int count;
	char *users; /* "a|b|" */
};

struct session {
	struct trib_loop *loop;
	struct trib_userdb_client *client;
	char *socket_path;
	unsigned int pending;
	bool done;
};

static char *dup_or_null(const char *str)
{
	return str != NULL ? trib_strdup(str) : NULL;
}

static void answer_clear(struct answer *a)
{
	free(a->error);
	free(a->name);
	free(a->uid);
	free(a->gid);
	free(a->home);
	free(a->users);
	memset(a, 0, sizeof(*a));
}

struct call {
	struct session *s;
	struct answer *a;
};

static void lookup_cb(int result, const struct trib_userdb_user *user,
		      const char *error, void *context)
{
	struct call *c = context;
	struct answer *a = c->a;

	a->calls++;
	a->result = result;
	a->error = dup_or_null(error);
	if (user != NULL) {
		a->name = trib_strdup(user->name);
		a->count = user->count;
		a->uid = dup_or_null(trib_userdb_field_get(user, "uid"));
		a->gid = dup_or_null(trib_userdb_field_get(user, "gid"));
		a->home = dup_or_null(trib_userdb_field_get(user, "home"));
	}
	if (--c->s->pending == 0)
		c->s->done = true;
	free(c);
}

static void list_cb(int result, const char *const *users, unsigned int count,
		    const char *error, void *context)
{
	struct call *c = context;
	struct answer *a = c->a;
	size_t size = 1;

	a->calls++;
	a->result = result;
	a->count = count;
	a->error = dup_or_null(error);
	for (unsigned int i = 0; i < count; i++)
		size += strlen(users[i]) + 1;
	a->users = trib_calloc(1, size);
	for (unsigned int i = 0, used = 0; i < count; i++)
		used += (unsigned int)snprintf(a->users + used, size - used,
					       "%s|", users[i]);
	if (--c->s->pending == 0)
		c->s->done = true;
	free(c);
}

static struct session *session_new(const char *socket_name)
{
	const struct itest_env *env = itest_env();
	struct session *s = trib_calloc(1, sizeof(*s));
	const char *error;

	s->loop = trib_loop_create(&error);
	assert_non_null(s->loop);
	s->socket_path =
		trib_strdup_printf("%s/remote/run/%s", env->dir, socket_name);
	s->client = trib_userdb_client_create(s->loop, s->socket_path, 10,
					      &itest_logger);
	return s;
}

static void session_free(struct session **s)
{
	trib_userdb_client_destroy(&(*s)->client);
	trib_loop_destroy(&(*s)->loop);
	free((*s)->socket_path);
	free(*s);
	*s = NULL;
}

static struct call *call_new(struct session *s, struct answer *a)
{
	struct call *c = trib_calloc(1, sizeof(*c));

	c->s = s;
	c->a = a;
	s->pending++;
	s->done = false;
	return c;
}

static void lookup(struct session *s, const char *user, struct answer *a)
{
	trib_userdb_lookup(s->client, user, lookup_cb, call_new(s, a));
}

static void wait_all(struct session *s)
{
	assert_true(itest_run_until(s->loop, &s->done, DEADLINE));
}

static char *home_of(const char *user)
{
	return trib_strdup_printf("%s/remote/home/%s", itest_env()->dir, user);
}

/* ---- tests ---- */

static void test_lookup_alice(void **state)
{
	struct session *s = session_new("auth-userdb");
	const char *user = itest_env()->user;
	struct answer a = { 0 };
	char *home = home_of(user);

	(void)state;
	lookup(s, user, &a);
	assert_int_equal(a.calls, 0);
	wait_all(s);
	assert_int_equal(a.calls, 1);
	assert_int_equal(a.result, 1);
	assert_null(a.error);
	assert_string_equal(a.name, user);
	assert_string_equal(a.uid, "65534");
	assert_string_equal(a.gid, "65534");
	assert_string_equal(a.home, home);
	assert_int_equal(a.count, 3);
	free(home);
	answer_clear(&a);
	session_free(&s);
}

static void test_dovecot_answers_odd_names(void **state)
{
	struct session *s = session_new("auth-userdb");
	struct answer folded = { 0 }, unknown = { 0 }, space = { 0 };
	struct answer dollar = { 0 };
	char *home = home_of("nobody-such@example.com");

	(void)state;
	/* auth_username_format = %Lu (the default): the answer names the
	 * user in lower case */
	lookup(s, "Alice@Example.COM", &folded);
	/* userdb static with allow_all_users: every user exists */
	lookup(s, "nobody-such@example.com", &unknown);
	/* auth_username_chars refuses a space or a '$': NOTFOUND */
	lookup(s, "bad user", &space);
	lookup(s, "x$y", &dollar);
	wait_all(s);
	assert_int_equal(folded.result, 1);
	assert_string_equal(folded.name, "alice@example.com");
	assert_int_equal(unknown.result, 1);
	assert_string_equal(unknown.home, home);
	assert_int_equal(space.result, 0);
	assert_null(space.error);
	assert_int_equal(dollar.result, 0);
	free(home);
	answer_clear(&folded);
	answer_clear(&unknown);
	answer_clear(&space);
	answer_clear(&dollar);
	session_free(&s);
}

static void test_list_on_static_userdb_fails(void **state)
{
	struct session *s = session_new("auth-userdb");
	struct answer l = { 0 }, after = { 0 };
	char *want = trib_strdup_printf(
		"userdb socket %s: listing users failed (no userdb that can "
		"iterate, e.g. only static, or a listener whose peer may not "
		"list; Dovecot's auth log has the cause)",
		s->socket_path);

	(void)state;
	trib_userdb_list(s->client, list_cb, call_new(s, &l));
	wait_all(s);
	assert_int_equal(l.calls, 1);
	assert_int_equal(l.result, -1);
	assert_string_equal(l.error, want);
	assert_int_equal(l.count, 0);
	/* lookups are unaffected */
	lookup(s, itest_env()->user2, &after);
	wait_all(s);
	assert_int_equal(after.result, 1);
	free(want);
	answer_clear(&l);
	answer_clear(&after);
	session_free(&s);
}

static void test_many_lookups_in_flight(void **state)
{
	struct session *s = session_new("auth-userdb");
	struct answer *a = trib_calloc(MANY, sizeof(*a));
	char name[64];

	(void)state;
	for (unsigned int i = 0; i < MANY; i++) {
		snprintf(name, sizeof(name), "user%03u@example.com", i);
		lookup(s, name, &a[i]);
	}
	wait_all(s);
	for (unsigned int i = 0; i < MANY; i++) {
		char *home;

		snprintf(name, sizeof(name), "user%03u@example.com", i);
		home = home_of(name);
		assert_int_equal(a[i].calls, 1);
		assert_int_equal(a[i].result, 1);
		assert_string_equal(a[i].name, name);
		assert_string_equal(a[i].home, home);
		free(home);
		answer_clear(&a[i]);
	}
	free(a);
	session_free(&s);
}

static void test_longest_name(void **state)
{
	/* 989 bytes is the longest name this client sends: with a 10-digit
	 * id the request is 1024 bytes, all Dovecot's auth service reads */
	struct session *s = session_new("auth-userdb");
	char *name = trib_malloc(991);
	struct answer fits = { 0 }, over = { 0 }, after = { 0 };

	(void)state;
	memset(name, 'a', 990);
	name[989] = '\0';
	lookup(s, name, &fits);
	wait_all(s);
	assert_int_equal(fits.result, 1);
	assert_string_equal(fits.name, name);
	name[989] = 'a';
	name[990] = '\0';
	lookup(s, name, &over);
	lookup(s, itest_env()->user, &after);
	wait_all(s);
	assert_int_equal(over.result, -1);
	assert_non_null(strstr(over.error, "refused: the name is longer than "
					   "989 bytes"));
	assert_int_equal(after.result, 1);
	free(name);
	answer_clear(&fits);
	answer_clear(&over);
	answer_clear(&after);
	session_free(&s);
}

static void test_wrong_sockets(void **state)
{
	struct session *client_sock = session_new("auth-client");
	struct session *missing = session_new("no-such-listener");
	struct answer a = { 0 }, b = { 0 };
	char *want;

	(void)state;
	/* the authentication client socket speaks another protocol */
	lookup(client_sock, itest_env()->user, &a);
	wait_all(client_sock);
	want = trib_strdup_printf(
		"userdb socket %s: this is an authentication client socket, "
		"not a userdb listener (auth-userdb or tributary-userdb)",
		client_sock->socket_path);
	assert_string_equal(a.error, want);
	free(want);
	lookup(missing, itest_env()->user, &b);
	wait_all(missing);
	want = trib_strdup_printf("userdb socket %s: No such file or directory "
				  "(is Dovecot running, with the listener in "
				  "its configuration?)",
				  missing->socket_path);
	assert_string_equal(b.error, want);
	free(want);
	answer_clear(&a);
	answer_clear(&b);
	session_free(&client_sock);
	session_free(&missing);
}

/* What a fetcher running as the wrong user hears: run in a child that
 * drops root for `daemon` (uid 1) and writes the three errors to a pipe. */
static void unprivileged_child(int fd)
{
	static const char *const names[] = { "auth-master", "auth-userdb",
					     "auth-userdb" };
	struct answer a[3];
	struct session *s[3];
	FILE *out = fdopen(fd, "w");

	memset(a, 0, sizeof(a));
	for (unsigned int i = 0; i < 3; i++) {
		s[i] = session_new(names[i]);
		if (i < 2) {
			lookup(s[i], itest_env()->user, &a[i]);
		} else {
			trib_userdb_list(s[i]->client, list_cb,
					 call_new(s[i], &a[i]));
		}
		if (!itest_run_until(s[i]->loop, &s[i]->done, DEADLINE))
			_exit(3);
		fprintf(out, "%d %s\n", a[i].result,
			a[i].error != NULL ? a[i].error : "");
		answer_clear(&a[i]);
		session_free(&s[i]);
	}
	fclose(out);
	_exit(0);
}

static void test_unprivileged_fetcher(void **state)
{
	struct passwd *pw = getpwnam("daemon");
	char buf[4096], *want;
	const char *dir = itest_env()->dir;
	size_t used = 0;
	ssize_t n;
	int fds[2], status;
	pid_t pid;

	(void)state;
	if (geteuid() != 0 || pw == NULL)
		skip();
	assert_int_equal(pipe(fds), 0);
	pid = fork();
	assert_true(pid >= 0);
	if (pid == 0) {
		close(fds[0]);
		if (setgid(pw->pw_gid) < 0 || setuid(pw->pw_uid) < 0)
			_exit(2);
		unprivileged_child(fds[1]);
	}
	close(fds[1]);
	while (used + 1 < sizeof(buf) &&
	       (n = read(fds[0], buf + used, sizeof(buf) - used - 1)) > 0)
		used += (size_t)n;
	buf[used] = '\0';
	close(fds[0]);
	assert_int_equal(waitpid(pid, &status, 0), pid);
	assert_true(WIFEXITED(status));
	assert_int_equal(WEXITSTATUS(status), 0);
	/* auth-master is root's, mode 0600: connect() is refused; on
	 * auth-userdb (0666, not the peer's) Dovecot answers only for users
	 * whose uid is the peer's, and refuses to list */
	want = trib_strdup_printf(
		"-1 userdb socket %s/remote/run/auth-master: Permission denied "
		"(the socket belongs to root, mode 0600: the fetcher must run "
		"as the user the listener belongs to)\n"
		"-1 userdb socket %s/remote/run/auth-userdb: lookup of "
		"'alice@example.com' failed without a reason (Dovecot's auth "
		"log has it; a listener with mode 0666 answers only for users "
		"whose uid is the fetcher's)\n"
		"-1 userdb socket %s/remote/run/auth-userdb: listing users "
		"failed (no userdb that can iterate, e.g. only static, or a "
		"listener whose peer may not list; Dovecot's auth log has the "
		"cause)\n",
		dir, dir, dir);
	assert_string_equal(buf, want);
	free(want);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_lookup_alice),
		cmocka_unit_test(test_dovecot_answers_odd_names),
		cmocka_unit_test(test_list_on_static_userdb_fails),
		cmocka_unit_test(test_many_lookups_in_flight),
		cmocka_unit_test(test_longest_name),
		cmocka_unit_test(test_wrong_sockets),
		cmocka_unit_test(test_unprivileged_fetcher),
	};

	signal(SIGPIPE, SIG_IGN);
	itest_env();
	return cmocka_run_group_tests(tests, NULL, NULL);
}
