/* incident.c: the reauthorization incident of an account (see
 * incident.h): its record in the user's state directory, and the
 * follow-up done once per incident: the admin's notify command here, the
 * notice message to the user in incident-notice.c. */

#include "incident.h"

#include "account.h"
#include "alloc.h"
#include "crash.h"
#include "fileio.h"
#include "log.h"
#include "provider.h"

#include <errno.h>
#include <fcntl.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

/* A record is a few short lines: anything longer is not one. */
#define INCIDENT_FILE_MAX 4096
#define INCIDENT_FINGERPRINT_LEN 43

/* ---- the record ---- */

char *incident_path(const char *user_dir, const char *account)
{
	return trib_strdup_printf("%s/reauth-%s", user_dir, account);
}

char *incident_command(const char *user, const char *account)
{
	return trib_strdup_printf("tributary authorize -u %s %s", user,
				  account);
}

void incident_free(struct incident **incident)
{
	struct incident *inc = *incident;

	if (inc == NULL)
		return;
	*incident = NULL;
	free(inc->account);
	free(inc->fingerprint);
	free(inc->reason);
	free(inc);
}

static bool fingerprint_valid(const char *fp)
{
	size_t len = strlen(fp);

	if (len != INCIDENT_FINGERPRINT_LEN)
		return false;
	return strspn(fp, "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz"
			  "0123456789-_") == len;
}

/* The length of the UTF-8 sequence at p (at most max bytes), or 0 when
 * it is not a valid one. */
static size_t utf8_seq_len(const unsigned char *p, size_t max)
{
	size_t len;
	uint32_t cp;

	if (p[0] < 0x80)
		return 1;
	if (p[0] >= 0xc2 && p[0] <= 0xdf) {
		len = 2;
		cp = p[0] & 0x1f;
	} else if (p[0] >= 0xe0 && p[0] <= 0xef) {
		len = 3;
		cp = p[0] & 0x0f;
	} else if (p[0] >= 0xf0 && p[0] <= 0xf4) {
		len = 4;
		cp = p[0] & 0x07;
	} else {
		return 0;
	}
	if (len > max)
		return 0;
	for (size_t i = 1; i < len; i++) {
		if ((p[i] & 0xc0) != 0x80)
			return 0;
		cp = (cp << 6) | (p[i] & 0x3f);
	}
	/* overlong forms, surrogates, beyond U+10FFFF */
	if ((len == 3 && (cp < 0x800 || (cp >= 0xd800 && cp <= 0xdfff))) ||
	    (len == 4 && (cp < 0x10000 || cp > 0x10ffff)))
		return 0;
	return len;
}

char *incident_reason_clean(const char *reason)
{
	const unsigned char *p = (const unsigned char *)reason;
	size_t len = strlen(reason), out_len = 0, n;
	char *out;

	if (len > INCIDENT_REASON_MAX)
		len = INCIDENT_REASON_MAX;
	out = trib_malloc(len + 1);
	for (size_t i = 0; i < len; i += n) {
		n = utf8_seq_len(p + i, len - i);
		if (n == 0 || (n == 1 && (p[i] < 0x20 || p[i] == 0x7f))) {
			out[out_len++] = '?';
			n = 1;
		} else {
			memcpy(out + out_len, p + i, n);
			out_len += n;
		}
	}
	out[out_len] = '\0';
	return out;
}

static bool parse_time(const char *value, int64_t *time_r)
{
	char *end;
	long long num;

	if (value[0] < '0' || value[0] > '9')
		return false;
	errno = 0;
	num = strtoll(value, &end, 10);
	if (errno != 0 || *end != '\0' || num < 0)
		return false;
	*time_r = num;
	return true;
}

/* One key=value line into inc: false when it makes no sense. Unknown
 * keys are ignored (a later version may add some). */
static bool parse_line(struct incident *inc, char *line)
{
	char *value = strchr(line, '=');

	if (value == NULL)
		return false;
	*value++ = '\0';
	if (strcmp(line, "fingerprint") == 0) {
		if (inc->fingerprint != NULL || !fingerprint_valid(value))
			return false;
		inc->fingerprint = trib_strdup(value);
	} else if (strcmp(line, "since") == 0) {
		return parse_time(value, &inc->since) && inc->since > 0;
	} else if (strcmp(line, "reason") == 0) {
		free(inc->reason);
		inc->reason = incident_reason_clean(value);
	} else if (strcmp(line, "notified") == 0) {
		return parse_time(value, &inc->notified);
	} else if (strcmp(line, "noticed") == 0) {
		return parse_time(value, &inc->noticed);
	}
	return true;
}

static int parse_record(struct incident *inc, char *text)
{
	char *line = text, *nl;

	while (*line != '\0') {
		nl = strchr(line, '\n');
		if (nl == NULL)
			return -1; /* torn: the writer ends every line */
		*nl = '\0';
		if (!parse_line(inc, line))
			return -1;
		line = nl + 1;
	}
	if (inc->fingerprint == NULL || inc->since == 0)
		return -1;
	if (inc->reason == NULL)
		inc->reason = trib_strdup("");
	return 0;
}

int incident_read(const char *user_dir, const char *account,
		  struct incident **incident_r, char **error_r)
{
	char *path = incident_path(user_dir, account);
	char buf[INCIDENT_FILE_MAX + 1];
	struct incident *inc;
	size_t len = 0;
	ssize_t n;
	int fd;

	*incident_r = NULL;
	*error_r = NULL;
	fd = open(path, O_RDONLY | O_NOFOLLOW | O_CLOEXEC | O_NOCTTY);
	if (fd < 0) {
		if (errno == ENOENT) {
			free(path);
			return 0;
		}
		*error_r = trib_strdup_printf("%s: cannot open: %s", path,
					      strerror(errno));
		free(path);
		return -1;
	}
	do {
		n = read(fd, buf + len, sizeof(buf) - len);
		if (n > 0)
			len += (size_t)n;
	} while ((n > 0 && len < sizeof(buf)) || (n < 0 && errno == EINTR));
	if (n < 0) {
		*error_r = trib_strdup_printf("%s: cannot read: %s", path,
					      strerror(errno));
		close(fd);
		free(path);
		return -1;
	}
	close(fd);
	if (len > INCIDENT_FILE_MAX || memchr(buf, '\0', len) != NULL) {
		*error_r = trib_strdup_printf("%s: not a reauthorization "
					      "record",
					      path);
		free(path);
		return -1;
	}
	buf[len] = '\0';
	inc = trib_calloc(1, sizeof(*inc));
	inc->account = trib_strdup(account);
	if (parse_record(inc, buf) < 0) {
		*error_r = trib_strdup_printf("%s: not a valid reauthorization "
					      "record",
					      path);
		incident_free(&inc);
		free(path);
		return -1;
	}
	free(path);
	*incident_r = inc;
	return 1;
}

static char *record_text(const struct incident *inc)
{
	char *reason =
		incident_reason_clean(inc->reason != NULL ? inc->reason : "");
	char *text;

	text = trib_strdup_printf("fingerprint=%s\n"
				  "since=%lld\n"
				  "reason=%s\n"
				  "notified=%lld\n"
				  "noticed=%lld\n",
				  inc->fingerprint, (long long)inc->since,
				  reason, (long long)inc->notified,
				  (long long)inc->noticed);
	free(reason);
	return text;
}

/* Fill the temp file: NULL, or the step that failed (errno set). */
static const char *write_tmp(int fd, const char *user_dir, const char *text)
{
	struct stat st;

	/* root writing for the state directory's owner: give it the file */
	if (geteuid() == 0 && stat(user_dir, &st) == 0 &&
	    fchown(fd, st.st_uid, st.st_gid) < 0)
		return "chown";
	if (trib_write_full(fd, text, strlen(text)) < 0)
		return "write";
	if (fsync(fd) < 0)
		return "fsync";
	return NULL;
}

int incident_write(const char *user_dir, const struct incident *incident,
		   char **error_r)
{
	char *path, *tmp, *text;
	const char *what;
	int fd, ret = -1;

	*error_r = NULL;
	path = incident_path(user_dir, incident->account);
	if (incident->fingerprint == NULL ||
	    !fingerprint_valid(incident->fingerprint) || incident->since <= 0) {
		*error_r = trib_strdup_printf("%s: not writing an invalid "
					      "record",
					      path);
		free(path);
		return -1;
	}
	tmp = trib_strdup_printf("%s.tmp", path);
	text = record_text(incident);
	(void)unlink(tmp); /* a crash's leftover */
	fd = open(tmp,
		  O_WRONLY | O_CREAT | O_EXCL | O_NOFOLLOW | O_CLOEXEC |
			  O_NOCTTY,
		  0600);
	if (fd < 0) {
		*error_r = trib_strdup_printf("%s: cannot create: %s", tmp,
					      strerror(errno));
	} else if ((what = write_tmp(fd, user_dir, text)) != NULL) {
		*error_r = trib_strdup_printf("%s: %s failed: %s", tmp, what,
					      strerror(errno));
		close(fd);
	} else if (close(fd) < 0) {
		*error_r = trib_strdup_printf("%s: close failed: %s", tmp,
					      strerror(errno));
	} else if (rename(tmp, path) < 0) {
		*error_r = trib_strdup_printf("%s: cannot rename it to %s: %s",
					      tmp, path, strerror(errno));
	} else if (trib_fsync_dir_of(path) < 0) {
		*error_r = trib_strdup_printf("%s: written, but cannot fsync "
					      "its directory: %s",
					      path, strerror(errno));
	} else {
		ret = 0;
	}
	if (ret < 0)
		(void)unlink(tmp);
	free(text);
	free(tmp);
	free(path);
	return ret;
}

int incident_remove(const char *user_dir, const char *account, char **error_r)
{
	char *path = incident_path(user_dir, account);
	int ret = 0;

	*error_r = NULL;
	if (unlink(path) < 0) {
		if (errno != ENOENT) {
			*error_r = trib_strdup_printf("%s: cannot remove: %s",
						      path, strerror(errno));
			ret = -1;
		}
	} else if (trib_fsync_dir_of(path) < 0) {
		*error_r = trib_strdup_printf("%s: removed, but cannot fsync "
					      "its directory: %s",
					      path, strerror(errno));
		ret = -1;
	}
	free(path);
	return ret;
}

/* ---- the notify command ---- */

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

/* Wait for pid until deadline (CLOCK_MONOTONIC seconds): 1 with
 * *status_r when it ended, 0 at the deadline, -1 on a waitpid() error. */
static int notify_wait(pid_t pid, time_t deadline, int *status_r)
{
	const struct timespec step = { 0, 50 * 1000 * 1000 };
	struct timespec now;
	pid_t ret;

	for (;;) {
		ret = waitpid(pid, status_r, WNOHANG);
		if (ret == pid)
			return 1;
		if (ret < 0 && errno != EINTR)
			return -1;
		clock_gettime(CLOCK_MONOTONIC, &now);
		if (now.tv_sec >= deadline)
			return 0;
		(void)nanosleep(&step, NULL);
	}
}

/* Reap pid for good (after SIGKILL). */
static void notify_reap(pid_t pid, int *status_r)
{
	while (waitpid(pid, status_r, 0) < 0 && errno == EINTR)
		;
}

/* Run the admin's command and wait for it. 1 when it ran (*warning_r
 * set when it failed or was killed), -1 with *error_r when it could not
 * be started (then it is tried again at a later pass).
 *
 * This blocks for up to INCIDENT_NOTIFY_TIMEOUT_SECS: the CLI works on
 * one account at a time, so that is fine here; the daemon will run it
 * asynchronously (a child watched from the loop) instead. */
static int notify_run(const struct incident *inc,
		      const struct incident_settings *set, char **warning_r,
		      char **error_r)
{
	struct timespec now;
	char **env = notify_env(inc, set);
	long max_fd = sysconf(_SC_OPEN_MAX);
	unsigned int timeout = set->notify_timeout_secs != 0
				       ? set->notify_timeout_secs
				       : INCIDENT_NOTIFY_TIMEOUT_SECS;
	int status = 0, ret;
	pid_t pid;

	*warning_r = NULL;
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
		return -1;
	}
	if (pid == 0)
		notify_exec(set->notify_command, env, max_fd);
	strv_free(env);
	(void)setpgid(pid, pid); /* either of us may be first */
	clock_gettime(CLOCK_MONOTONIC, &now);
	ret = notify_wait(pid, now.tv_sec + (time_t)timeout, &status);
	if (ret <= 0) {
		int wait_errno = errno;

		(void)kill(-pid, SIGKILL);
		(void)kill(pid, SIGKILL);
		notify_reap(pid, &status);
		if (ret == 0)
			*warning_r = trib_strdup_printf(
				"the notify command did not finish within "
				"%u s: killed",
				timeout);
		else
			*warning_r = trib_strdup_printf(
				"cannot wait for the notify command (killed): "
				"%s",
				strerror(wait_errno));
	} else if (WIFEXITED(status) && WEXITSTATUS(status) != 0) {
		*warning_r = trib_strdup_printf("the notify command exited "
						"with status %d",
						WEXITSTATUS(status));
	} else if (WIFSIGNALED(status)) {
		*warning_r = trib_strdup_printf("the notify command was killed "
						"by signal %d",
						WTERMSIG(status));
	}
	return 1;
}

/* ---- follow-up ---- */

/* Add line to the "; "-separated list *errors (taking it). */
static void errors_add(char **errors, char *line)
{
	char *joined;

	if (*errors == NULL) {
		*errors = line;
		return;
	}
	joined = trib_strdup_printf("%s; %s", *errors, line);
	free(*errors);
	free(line);
	*errors = joined;
}

/* Record a step: a failure is one more error (the step may then be
 * done again at a later pass). */
static void record(const char *user_dir, const struct incident *inc,
		   char **errors)
{
	char *error;

	if (incident_write(user_dir, inc, &error) < 0)
		errors_add(errors, error);
}

int incident_follow_up(struct trib_loop *loop, const char *user_dir,
		       struct incident *incident,
		       const struct incident_settings *set, char **error_r)
{
	char *errors = NULL, *warning = NULL, *error = NULL;

	*error_r = NULL;
	if (set->notify_command != NULL && set->notify_command[0] != '\0' &&
	    incident->notified == 0) {
		if (notify_run(incident, set, &warning, &error) < 0) {
			errors_add(&errors, error);
		} else {
			trib_log(set->logger, TRIB_LOG_DEBUG,
				 "%s/%s: notify command ran", set->user,
				 set->account->name);
			incident->notified = (int64_t)time(NULL);
			if (warning != NULL)
				errors_add(&errors, warning);
			record(user_dir, incident, &errors);
		}
	}
	if (set->notice && incident->noticed == 0) {
		if (incident_notice_send(loop, incident, set, &error) < 0) {
			errors_add(&errors, error);
		} else {
			TRIB_CRASH_POINT("incident-after-notice");
			trib_log(set->logger, TRIB_LOG_DEBUG,
				 "%s/%s: reauthorization notice delivered",
				 set->user, set->account->name);
			incident->noticed = (int64_t)time(NULL);
			record(user_dir, incident, &errors);
		}
	}
	*error_r = errors;
	return errors != NULL ? -1 : 0;
}
