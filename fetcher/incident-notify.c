/* incident-notify.c: the admin's notify command of a reauthorization
 * incident (incident.h): /bin/sh -c in a clean process of its own group,
 * watched from the loop without blocking. Its exit is seen on a pidfd
 * (pidfd_open(), Linux 5.3; where that is missing, a short timer asks
 * waitpid()), a timer kills its group at the timeout, and it is reaped
 * with waitpid(WNOHANG) once it has exited. */

#include "incident.h"

#include "account.h"
#include "alloc.h"
#include "loop.h"
#include "provider.h"

#include <errno.h>
#include <event2/event.h>
#include <fcntl.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/syscall.h>
#include <sys/wait.h>
#include <unistd.h>

/* Without a pidfd: how often waitpid() asks, in milliseconds. */
#define NOTIFY_POLL_MSECS 50

struct incident_notify {
	pid_t pid;
	int pidfd; /* -1: polled */
	/* the pidfd readable, or the poll timer */
	struct event *exit_ev;
	struct event *timeout_ev;
	unsigned int timeout_secs;
	bool killed; /* at the timeout */
	incident_notify_callback_t *callback;
	void *context;
};

/* The command's whole environment: PATH and what it is about. No
 * secret is in it. */
static char **notify_env(const struct incident *inc,
			 const struct incident_settings *set)
{
	const struct trib_account *a = set->account;
	char **env = trib_calloc(10, sizeof(*env));
	char *command = incident_command(set->user, a->name);
	unsigned int n = 0;

	env[n++] = trib_strdup("PATH=/usr/local/sbin:/usr/local/bin:"
			       "/usr/sbin:/usr/bin:/sbin:/bin");
	env[n++] = trib_strdup("TRIBUTARY_EVENT=reauthorization-required");
	env[n++] = trib_strdup_printf("TRIBUTARY_USER=%s", set->user);
	env[n++] = trib_strdup_printf("TRIBUTARY_ACCOUNT=%s", a->name);
	env[n++] = trib_strdup_printf("TRIBUTARY_PROVIDER=%s",
				      a->provider != NULL ? a->provider->name
							  : "imap");
	env[n++] = trib_strdup_printf("TRIBUTARY_LOGIN=%s",
				      a->login != NULL ? a->login : "");
	env[n++] = trib_strdup_printf("TRIBUTARY_REASON=%s", inc->reason);
	env[n++] = trib_strdup_printf("TRIBUTARY_COMMAND=%s", command);
	env[n++] = trib_strdup_printf("TRIBUTARY_SINCE=%lld",
				      (long long)inc->since);
	free(command);
	return env;
}

static void strv_free(char **strv)
{
	for (unsigned int i = 0; strv[i] != NULL; i++)
		free(strv[i]);
	free(strv);
}

/* In the child: a clean process running /bin/sh -c command. Only
 * async-signal-safe calls. */
static void TRIB_ATTR_NORETURN notify_exec(const char *command, char **env,
					   long max_fd)
{
	char *const argv[] = { (char *)"sh", (char *)"-c", (char *)command,
			       NULL };
	sigset_t none;
	int fd;

	(void)setpgid(0, 0);
	if (chdir("/") < 0)
		_exit(126);
	sigemptyset(&none);
	(void)sigprocmask(SIG_SETMASK, &none, NULL);
	(void)signal(SIGPIPE, SIG_DFL);
	fd = open("/dev/null", O_RDONLY);
	if (fd < 0 || dup2(fd, STDIN_FILENO) < 0)
		_exit(126);
	for (long i = STDERR_FILENO + 1; i < max_fd; i++)
		(void)close((int)i);
	execve("/bin/sh", argv, env);
	_exit(127);
}

/* A descriptor that becomes readable when pid exits (close-on-exec), or
 * -1 when the kernel has none. */
static int pidfd_of(pid_t pid)
{
#ifdef SYS_pidfd_open
	return (int)syscall(SYS_pidfd_open, pid, 0);
#else
	(void)pid;
	errno = ENOSYS;
	return -1;
#endif
}

static void notify_free(struct incident_notify *n)
{
	event_free(n->exit_ev);
	event_free(n->timeout_ev);
	if (n->pidfd >= 0)
		close(n->pidfd);
	free(n);
}

/* Why the command failed, from its wait status (NULL: it exited 0). */
static char *notify_warning(const struct incident_notify *n, int status)
{
	if (n->killed)
		return trib_strdup_printf("the notify command did not finish "
					  "within %u s: killed",
					  n->timeout_secs);
	if (WIFEXITED(status) && WEXITSTATUS(status) != 0)
		return trib_strdup_printf("the notify command exited with "
					  "status %d",
					  WEXITSTATUS(status));
	if (WIFSIGNALED(status))
		return trib_strdup_printf("the notify command was killed by "
					  "signal %d",
					  WTERMSIG(status));
	return NULL;
}

static void notify_kill(const struct incident_notify *n)
{
	(void)kill(-n->pid, SIGKILL);
	(void)kill(n->pid, SIGKILL);
}

/* The pidfd is readable (or the poll timer fired): reap it if it has
 * exited, then report. */
static void notify_exit(evutil_socket_t fd, short what, void *context)
{
	struct incident_notify *n = context;
	incident_notify_callback_t *callback = n->callback;
	void *callback_context = n->context;
	char *warning;
	int status = 0;
	pid_t ret;

	(void)fd;
	(void)what;
	ret = waitpid(n->pid, &status, WNOHANG);
	if (ret == 0 || (ret < 0 && errno == EINTR))
		return; /* not yet */
	if (ret < 0) {
		/* it cannot be waited for (SIGCHLD ignored?): make sure it
		 * is gone */
		int wait_errno = errno;

		notify_kill(n);
		warning = trib_strdup_printf("cannot wait for the notify "
					     "command (killed): %s",
					     strerror(wait_errno));
	} else {
		warning = notify_warning(n, status);
	}
	notify_free(n);
	callback(warning, callback_context);
	free(warning);
}

static void notify_timeout(evutil_socket_t fd, short what, void *context)
{
	struct incident_notify *n = context;

	(void)fd;
	(void)what;
	n->killed = true;
	notify_kill(n); /* notify_exit() reaps it */
}

struct incident_notify *
incident_notify_start(struct trib_loop *loop, const struct incident *incident,
		      const struct incident_settings *set,
		      incident_notify_callback_t *callback, void *context,
		      char **error_r)
{
	struct event_base *base = trib_loop_base(loop);
	const struct timeval poll = { 0, NOTIFY_POLL_MSECS * 1000 };
	struct timeval timeout = { 0, 0 };
	struct incident_notify *n;
	char **env = notify_env(incident, set);
	long max_fd = sysconf(_SC_OPEN_MAX);
	pid_t pid;

	*error_r = NULL;
	if (max_fd < 0 || max_fd > 65536)
		max_fd = 65536;
	/* what the CLI printed so far comes before the command's output */
	(void)fflush(NULL);
	pid = fork();
	if (pid < 0) {
		*error_r = trib_strdup_printf("cannot start the notify "
					      "command: fork: %s",
					      strerror(errno));
		strv_free(env);
		return NULL;
	}
	if (pid == 0)
		notify_exec(set->notify_command, env, max_fd);
	strv_free(env);
	(void)setpgid(pid, pid); /* either of us may be first */

	n = trib_calloc(1, sizeof(*n));
	n->pid = pid;
	n->callback = callback;
	n->context = context;
	n->timeout_secs = set->notify_timeout_secs != 0
				  ? set->notify_timeout_secs
				  : INCIDENT_NOTIFY_TIMEOUT_SECS;
	n->pidfd = pidfd_of(pid);
	if (n->pidfd >= 0) {
		n->exit_ev = event_new(base, n->pidfd, EV_READ | EV_PERSIST,
				       notify_exit, n);
		event_add(n->exit_ev, NULL);
	} else {
		n->exit_ev = event_new(base, -1, EV_PERSIST, notify_exit, n);
		event_add(n->exit_ev, &poll);
	}
	n->timeout_ev = evtimer_new(base, notify_timeout, n);
	timeout.tv_sec = (time_t)n->timeout_secs;
	evtimer_add(n->timeout_ev, &timeout);
	return n;
}

void incident_notify_abort(struct incident_notify **_notify)
{
	struct incident_notify *n = *_notify;
	int status;

	if (n == NULL)
		return;
	*_notify = NULL;
	notify_kill(n);
	/* SIGKILLed: it is gone at once, and reaped here */
	while (waitpid(n->pid, &status, 0) < 0 && errno == EINTR)
		;
	notify_free(n);
}
