/* incident.c: the reauthorization incident of an account (see
 * incident.h): its record in the user's state directory, and the
 * follow-up done once per incident, step by step on the loop: the
 * admin's notify command (incident-notify.c), then the notice message to
 * the user (incident-notice.c), each recorded as it is done. */

#include "incident.h"

#include "account.h"
#include "alloc.h"
#include "crash.h"
#include "fileio.h"
#include "log.h"
#include "loop.h"

#include <errno.h>
#include <event2/event.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
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

/* ---- follow-up ---- */

struct incident_follow_up {
	struct trib_loop *loop;
	char *user_dir;
	struct incident *incident;
	const struct incident_settings *set;
	incident_follow_up_callback_t *callback;
	void *context;
	/* the next step, from the loop */
	struct event *step_ev;
	bool notify_taken, notice_taken;
	struct incident_notify *notify;
	struct incident_notice *notice;
	char *errors;
};

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
static void record(struct incident_follow_up *fu)
{
	char *error;

	if (incident_write(fu->user_dir, fu->incident, &error) < 0)
		errors_add(&fu->errors, error);
}

static void follow_up_finish(struct incident_follow_up *fu)
{
	fu->callback(fu->errors, fu->context);
	event_free(fu->step_ev);
	free(fu->errors);
	free(fu->user_dir);
	free(fu);
}

static void follow_up_next(struct incident_follow_up *fu)
{
	static const struct timeval now = { 0, 0 };

	evtimer_add(fu->step_ev, &now);
}

static void notify_done(const char *warning, void *context)
{
	struct incident_follow_up *fu = context;

	fu->notify = NULL;
	trib_log(fu->set->logger, TRIB_LOG_DEBUG, "%s/%s: notify command ran",
		 fu->set->user, fu->set->account->name);
	fu->incident->notified = (int64_t)time(NULL);
	if (warning != NULL)
		errors_add(&fu->errors, trib_strdup(warning));
	record(fu);
	follow_up_next(fu);
}

static void notice_done(const char *error, void *context)
{
	struct incident_follow_up *fu = context;

	fu->notice = NULL;
	if (error != NULL) {
		errors_add(&fu->errors, trib_strdup(error));
	} else {
		TRIB_CRASH_POINT("incident-after-notice");
		trib_log(fu->set->logger, TRIB_LOG_DEBUG,
			 "%s/%s: reauthorization notice delivered",
			 fu->set->user, fu->set->account->name);
		fu->incident->noticed = (int64_t)time(NULL);
		record(fu);
	}
	follow_up_next(fu);
}

/* The next step still to take: the notify command, then the notice,
 * then the callback. */
static void follow_up_step(evutil_socket_t fd, short what, void *context)
{
	struct incident_follow_up *fu = context;
	const struct incident_settings *set = fu->set;
	char *error;

	(void)fd;
	(void)what;
	if (!fu->notify_taken) {
		fu->notify_taken = true;
		if (set->notify_command != NULL &&
		    set->notify_command[0] != '\0' &&
		    fu->incident->notified == 0) {
			fu->notify = incident_notify_start(
				fu->loop, fu->incident, set, notify_done, fu,
				&error);
			if (fu->notify != NULL)
				return;
			errors_add(&fu->errors, error);
		}
	}
	if (!fu->notice_taken) {
		fu->notice_taken = true;
		if (set->notice && fu->incident->noticed == 0) {
			fu->notice = incident_notice_start(
				fu->loop, fu->incident, set, notice_done, fu,
				&error);
			if (fu->notice != NULL)
				return;
			errors_add(&fu->errors, error);
		}
	}
	follow_up_finish(fu);
}

struct incident_follow_up *
incident_follow_up_start(struct trib_loop *loop, const char *user_dir,
			 struct incident *incident,
			 const struct incident_settings *set,
			 incident_follow_up_callback_t *callback, void *context)
{
	struct incident_follow_up *fu = trib_calloc(1, sizeof(*fu));

	fu->loop = loop;
	fu->user_dir = trib_strdup(user_dir);
	fu->incident = incident;
	fu->set = set;
	fu->callback = callback;
	fu->context = context;
	fu->step_ev = evtimer_new(trib_loop_base(loop), follow_up_step, fu);
	follow_up_next(fu);
	return fu;
}

void incident_follow_up_abort(struct incident_follow_up **_fu)
{
	struct incident_follow_up *fu = *_fu;

	if (fu == NULL)
		return;
	*_fu = NULL;
	evtimer_del(fu->step_ev);
	incident_notify_abort(&fu->notify);
	incident_notice_abort(&fu->notice);
	follow_up_finish(fu);
}

struct follow_up_wait {
	struct trib_loop *loop;
	bool done;
	char *error;
};

static void follow_up_wait_done(const char *error, void *context)
{
	struct follow_up_wait *w = context;

	w->done = true;
	w->error = error != NULL ? trib_strdup(error) : NULL;
	trib_loop_break(w->loop);
}

int incident_follow_up(struct trib_loop *loop, const char *user_dir,
		       struct incident *incident,
		       const struct incident_settings *set, char **error_r)
{
	struct follow_up_wait w = { .loop = loop };

	(void)incident_follow_up_start(loop, user_dir, incident, set,
				       follow_up_wait_done, &w);
	while (!w.done)
		trib_loop_run(loop);
	*error_r = w.error;
	return w.error != NULL ? -1 : 0;
}
