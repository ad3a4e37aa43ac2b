/* daemon.c: `tributary run` (see daemon.h): the settings, the signals,
 * the scheduler's timer and the users' passes. The user list is
 * daemon-users.c's. */

#include "daemon.h"

#include "daemon-private.h"

#include "alloc.h"
#include "cli.h"
#include "loop.h"
#include "oauth.h"
#include "trace.h"
#include "userdb.h"

#include <event2/event.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

int64_t daemon_now(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (int64_t)ts.tv_sec;
}

/* ---- logging ---- */

/* Whether stderr is the journal (systemd sets JOURNAL_STREAM to its
 * device:inode): then each line starts with its priority, <N>. */
static bool stderr_is_journal(void)
{
	const char *value = getenv("JOURNAL_STREAM");
	unsigned long long dev, ino;
	struct stat st;

	return value != NULL && sscanf(value, "%llu:%llu", &dev, &ino) == 2 &&
	       fstat(STDERR_FILENO, &st) == 0 &&
	       (unsigned long long)st.st_dev == dev &&
	       (unsigned long long)st.st_ino == ino;
}

static void daemon_log(void *context, enum trib_log_level level,
		       const char *message)
{
	/* syslog priorities: debug, info, warning, err */
	static const int priorities[] = { 7, 6, 4, 3 };
	struct daemon *d = context;
	char *line;

	if (d->journal)
		line = trib_strdup_printf(
			"<%d>%s%s%s\n", priorities[level],
			level >= TRIB_LOG_WARNING ? trib_log_level_name(level)
						  : "",
			level >= TRIB_LOG_WARNING ? ": " : "", message);
	else
		line = trib_strdup_printf(
			"tributary: %s%s%s\n",
			level >= TRIB_LOG_WARNING ? trib_log_level_name(level)
						  : "",
			level >= TRIB_LOG_WARNING ? ": " : "", message);
	/* one write per line: lines of a pass never interleave */
	fputs(line, stderr);
	fflush(stderr);
	free(line);
}

static enum trib_log_level log_level(const char *name, bool verbose)
{
	if (verbose || strcmp(name, "debug") == 0)
		return TRIB_LOG_DEBUG;
	if (strcmp(name, "warning") == 0)
		return TRIB_LOG_WARNING;
	if (strcmp(name, "error") == 0)
		return TRIB_LOG_ERROR;
	return TRIB_LOG_INFO;
}

/* ---- settings ---- */

struct daemon_config *daemon_config_ref(struct daemon_config *config)
{
	config->refcount++;
	return config;
}

void daemon_config_unref(struct daemon_config **_config)
{
	struct daemon_config *config = *_config;

	*_config = NULL;
	if (config == NULL || --config->refcount > 0)
		return;
	trib_trace_keys_destroy(&config->keys);
	if (config->env != NULL) {
		cli_env_close(config->env);
		free(config->env);
	}
	free(config);
}

static struct daemon_config *config_new(struct cli_env *env,
					struct cli_env *owned,
					struct trib_trace_keys *keys)
{
	struct daemon_config *config = trib_calloc(1, sizeof(*config));

	config->refcount = 1;
	config->env = owned;
	config->global = &env->global;
	config->globals = &env->globals;
	config->keys = keys;
	return config;
}

/* SIGHUP: the settings and trace keys again. Any problem is logged and
 * the old ones stay. */
static void config_reload(struct daemon *d)
{
	struct cli_env *env = trib_calloc(1, sizeof(*env));
	struct trib_trace_keys *keys = NULL;
	const char *error;
	char *err = NULL;

	if (doveconf_load(d->options.doveconf_bin, d->options.config,
			  &env->conf, &err) < 0) {
		trib_log(&d->env.logger, TRIB_LOG_ERROR,
			 "reload: %s (the settings stay as they were)", err);
		free(err);
		free(env);
		return;
	}
	doveconf_layer(&env->conf, &env->global);
	trib_global_settings_load(&env->global, env->conf.base_dir,
				  &env->globals);
	for (unsigned int i = 0; i < env->globals.error_count; i++)
		trib_log(&d->env.logger, TRIB_LOG_ERROR, "reload: %s",
			 env->globals.errors[i]);
	if (env->globals.error_count == 0 &&
	    trib_trace_keys_load(env->globals.trace_key_file, &keys, &error) <
		    0)
		trib_log(&d->env.logger, TRIB_LOG_ERROR, "reload: %s", error);
	if (keys == NULL) {
		trib_log(&d->env.logger, TRIB_LOG_ERROR,
			 "reload refused: the settings stay as they were");
		cli_env_close(env);
		free(env);
		return;
	}
	daemon_config_unref(&d->config);
	d->config = config_new(env, env, keys);
	d->env.logger.min_level =
		log_level(env->globals.log_level, d->options.verbose);
	trib_log(&d->env.logger, TRIB_LOG_INFO,
		 "settings reloaded; at most %u users' passes side by side",
		 env->globals.max_parallel_users);
}

/* ---- passes ---- */

static struct daemon_account *user_account(struct daemon_user *u,
					   const struct trib_account *account)
{
	for (unsigned int i = 0; i < u->list.count; i++) {
		if (u->list.accounts[i] == account)
			return &u->accounts[i];
	}
	return NULL;
}

static bool want_account(const struct trib_account *account, void *context)
{
	struct daemon_account *da = user_account(context, account);

	return da != NULL && da->selected;
}

/* A Retry-After (unix time) on the schedule's clock; 0: none. */
static int64_t not_before_now(int64_t wall_not_before)
{
	int64_t wall = (int64_t)time(NULL);

	if (wall_not_before <= wall)
		return 0;
	return daemon_now() + (wall_not_before - wall);
}

static void account_done(const struct trib_account *account,
			 const struct sync_result *r, void *context)
{
	struct daemon_user *u = context;
	struct daemon *d = u->daemon;
	struct daemon_account *da = user_account(u, account);
	enum schedule_outcome outcome = SCHEDULE_OK;
	enum trib_log_level level;
	char remapped[40] = "";

	if (r->remapped > 0)
		snprintf(remapped, sizeof(remapped), ", %u re-mapped",
			 r->remapped);
	if (!r->skipped)
		trib_log(&d->env.logger, TRIB_LOG_INFO,
			 "%s/%s: %u new, %u delivered, %u rejected, %u "
			 "deferred%s",
			 u->name, account->name, r->new_count, r->delivered,
			 r->rejected, r->deferred, remapped);
	level = r->status == SYNC_TEMP ? TRIB_LOG_WARNING : TRIB_LOG_ERROR;
	for (unsigned int i = 0; i < r->error_count; i++) {
		/* "stopped" (SIGTERM) is no problem */
		bool stop_line = r->stopped && i + 1 == r->error_count;

		trib_log(&d->env.logger, stop_line ? TRIB_LOG_INFO : level,
			 "%s", r->errors[i]);
	}
	if (da == NULL)
		return;
	da->reported = true;
	if (r->reauthorize && daemon_reauth_present(d, u->name, account->name))
		outcome = SCHEDULE_REAUTH;
	else if (r->status != SYNC_OK || r->reauthorize || r->state_failed)
		outcome = SCHEDULE_FAILED;
	if (outcome == SCHEDULE_OK && !r->stopped) {
		daemon_idle_start(u, da, account);
	} else {
		trib_secret_free(&da->login_secret);
		daemon_idle_close(&da->idle);
	}
	schedule_account_done(&da->sched, outcome,
			      not_before_now(r->token_not_before), daemon_now(),
			      trib_oauth_random32());
}

/* The secret a login of the pass uses: kept for the IDLE watcher. */
static void login_secret(const struct trib_account *account, const char *secret,
			 void *context)
{
	struct daemon_account *da = user_account(context, account);

	if (da == NULL)
		return;
	trib_secret_free(&da->login_secret);
	if (account->idle && account->max_connections >= 2 &&
	    !da->idle_unsupported)
		da->login_secret = trib_strdup(secret);
}

static void user_done(const struct user_sync_result *result, void *context)
{
	struct daemon_user *u = context;
	struct daemon *d = u->daemon;
	int64_t now = daemon_now();

	/* accounts that never ran: the lock was someone else's, or the
	 * user's state could not be opened or committed */
	for (unsigned int i = 0; i < u->list.count; i++) {
		struct daemon_account *da = &u->accounts[i];

		trib_secret_free(&da->login_secret);
		if (!da->selected || da->reported)
			continue;
		schedule_account_done(
			&da->sched,
			result->locked ? SCHEDULE_LOCKED : SCHEDULE_FAILED,
			da->sched.not_before, now, trib_oauth_random32());
	}
	/* result->error names the user */
	if (result->locked)
		trib_log(&d->env.logger, TRIB_LOG_INFO,
			 "%s; trying again in %u seconds",
			 result->error != NULL ? result->error : u->name,
			 SCHEDULE_LOCKED_SECS);
	else if (result->error != NULL)
		trib_log(&d->env.logger,
			 result->stopped ? TRIB_LOG_INFO : TRIB_LOG_ERROR, "%s",
			 result->error);
	u->pass = NULL;
	u->ended = true;
	d->running--;
	if (d->stopping) {
		if (d->running == 0)
			trib_loop_break(d->env.loop);
		return;
	}
	daemon_kick(d);
}

static void user_start(struct daemon *d, struct daemon_user *u, int64_t now)
{
	struct user_sync_settings *set = &u->set;
	char *names = trib_strdup(""), *more;

	for (unsigned int i = 0; i < u->list.count; i++) {
		struct daemon_account *da = &u->accounts[i];

		da->reported = false;
		da->selected = schedule_account_due(&da->sched, now);
		if (!da->selected)
			continue;
		schedule_account_start(&da->sched);
		more = trib_strdup_printf("%s%s%s", names,
					  names[0] != '\0' ? ", " : "",
					  da->name);
		free(names);
		names = more;
	}
	trib_log(&d->env.logger, TRIB_LOG_DEBUG, "%s: pass started (%s)",
		 u->name, names);
	free(names);
	u->config = daemon_config_ref(d->config);
	memset(set, 0, sizeof(*set));
	set->user = u->name;
	set->accounts = &u->list;
	set->want_account = want_account;
	set->globals = u->config->globals;
	set->global = u->config->global;
	set->keys = u->config->keys;
	set->logger = &d->env.logger;
	set->account_done = account_done;
	set->login_secret = login_secret;
	set->context = u;
	d->running++;
	u->pass = user_sync_start(d->env.loop, set, user_done, u);
}

/* ---- the scheduler ---- */

/* The earliest due time of the user's due accounts, or SCHEDULE_NEVER. */
static int64_t user_due(struct daemon_user *u, int64_t now)
{
	int64_t due = SCHEDULE_NEVER;

	if (u->pass != NULL || u->ended || u->gone)
		return SCHEDULE_NEVER;
	for (unsigned int i = 0; i < u->list.count; i++) {
		const struct schedule_account *s = &u->accounts[i].sched;

		if (schedule_account_due(s, now) && s->due < due)
			due = s->due;
	}
	return due;
}

/* Look for the reauthorization records that are due a look. */
static void check_reauth(struct daemon *d, int64_t now)
{
	for (unsigned int i = 0; i < d->user_count; i++) {
		struct daemon_user *u = d->users[i];

		for (unsigned int j = 0; j < u->list.count; j++) {
			struct daemon_account *da = &u->accounts[j];
			bool present;

			if (!schedule_account_check_reauth(&da->sched, now))
				continue;
			present = daemon_reauth_present(d, u->name, da->name);
			schedule_account_reauth_checked(&da->sched, present,
							now);
			if (!present)
				trib_log(&d->env.logger, TRIB_LOG_INFO,
					 "%s/%s: authorized again", u->name,
					 da->name);
		}
	}
}

/* Start the passes that are due, the earliest first, as far as the
 * limit allows. */
static void start_due(struct daemon *d, int64_t now)
{
	unsigned int max = d->config->globals->max_parallel_users;

	while (d->running < max) {
		struct daemon_user *best = NULL;
		int64_t best_due = SCHEDULE_NEVER, due;

		for (unsigned int i = 0; i < d->user_count; i++) {
			due = user_due(d->users[i], now);
			if (due < best_due) {
				best_due = due;
				best = d->users[i];
			}
		}
		if (best == NULL)
			break;
		user_start(d, best, now);
	}
}

/* The timer for the next thing to do. Accounts that are due but wait
 * for a free slot are started when a pass ends. */
static void arm_timer(struct daemon *d, int64_t now)
{
	int64_t next = SCHEDULE_NEVER, n;
	struct timeval tv = { 0, 0 };

	for (unsigned int i = 0; i < d->user_count; i++) {
		struct daemon_user *u = d->users[i];

		if (u->pass != NULL || u->ended || u->gone)
			continue;
		for (unsigned int j = 0; j < u->list.count; j++) {
			const struct schedule_account *s =
				&u->accounts[j].sched;

			if (schedule_account_due(s, now))
				continue;
			n = schedule_account_next(s);
			if (n < next)
				next = n;
		}
	}
	if (next == SCHEDULE_NEVER)
		return;
	tv.tv_sec = next > now ? (time_t)(next - now) : 1;
	evtimer_add(d->timer, &tv);
}

static void daemon_tick(evutil_socket_t fd, short what, void *context)
{
	struct daemon *d = context;
	int64_t now = daemon_now();

	(void)fd;
	(void)what;
	if (d->stopping)
		return;
	evtimer_del(d->timer);
	daemon_users_tidy(d);
	check_reauth(d, now);
	start_due(d, now);
	arm_timer(d, now);
}

void daemon_kick(struct daemon *d)
{
	struct timeval tv = { 0, 0 };

	if (!d->stopping)
		evtimer_add(d->timer, &tv);
}

/* ---- signals ---- */

static void daemon_stop(struct daemon *d, const char *why)
{
	if (d->stopping)
		return;
	d->stopping = true;
	evtimer_del(d->timer);
	evtimer_del(d->refresh_timer);
	trib_log(&d->env.logger, TRIB_LOG_INFO,
		 "%s: stopping (%u passes to end)", why, d->running);
	daemon_idle_close_all(d);
	for (unsigned int i = 0; i < d->user_count; i++) {
		if (d->users[i]->pass != NULL)
			user_sync_stop(d->users[i]->pass);
	}
	if (d->running == 0)
		trib_loop_break(d->env.loop);
}

static void wake_all(struct daemon *d)
{
	int64_t now = daemon_now();

	trib_log(&d->env.logger, TRIB_LOG_INFO,
		 "SIGUSR1: every account is due now");
	for (unsigned int i = 0; i < d->user_count; i++) {
		struct daemon_user *u = d->users[i];

		for (unsigned int j = 0; j < u->list.count; j++)
			schedule_account_wake(&u->accounts[j].sched, now);
	}
	daemon_kick(d);
}

static void on_signal(evutil_socket_t sig, short what, void *context)
{
	struct daemon *d = context;

	(void)what;
	switch (sig) {
	case SIGTERM:
		daemon_stop(d, "SIGTERM");
		break;
	case SIGINT:
		daemon_stop(d, "SIGINT");
		break;
	case SIGHUP:
		if (d->stopping)
			break;
		trib_log(&d->env.logger, TRIB_LOG_INFO,
			 "SIGHUP: reading the settings and the users again");
		config_reload(d);
		daemon_users_forget_errors(d);
		daemon_users_refresh(d);
		break;
	case SIGUSR1:
		if (!d->stopping)
			wake_all(d);
		break;
	}
}

static void on_refresh_timer(evutil_socket_t fd, short what, void *context)
{
	(void)fd;
	(void)what;
	daemon_users_refresh(context);
}

/* ---- start and end ---- */

static int daemon_init(struct daemon *d, const struct cli_env_options *options)
{
	static const int sigs[] = { SIGTERM, SIGINT, SIGHUP, SIGUSR1 };
	struct trib_trace_keys *keys = NULL;
	struct event_base *base;
	const char *error;
	int ret;

	d->options = *options;
	ret = cli_env_load(&d->env, options);
	if (ret != CLI_EXIT_OK)
		return ret;
	for (unsigned int i = 0; i < d->env.globals.error_count; i++)
		cli_error("%s", d->env.globals.errors[i]);
	if (d->env.globals.error_count > 0)
		return CLI_EXIT_CONFIG;
	if (trib_trace_keys_load(d->env.globals.trace_key_file, &keys, &error) <
	    0) {
		cli_error("%s (run `tributary init` first)", error);
		return CLI_EXIT_CONFIG;
	}
	ret = cli_env_connect(&d->env, options);
	if (ret != CLI_EXIT_OK) {
		trib_trace_keys_destroy(&keys);
		return ret;
	}
	d->config = config_new(&d->env, NULL, keys);
	d->journal = stderr_is_journal();
	d->env.logger.log = daemon_log;
	d->env.logger.context = d;
	d->env.logger.min_level =
		log_level(d->env.globals.log_level, options->verbose);

	base = trib_loop_base(d->env.loop);
	d->timer = evtimer_new(base, daemon_tick, d);
	d->refresh_timer = evtimer_new(base, on_refresh_timer, d);
	for (unsigned int i = 0; i < TRIB_N_ELEMENTS(sigs); i++) {
		d->signals[i] = evsignal_new(base, sigs[i], on_signal, d);
		if (d->signals[i] == NULL ||
		    evsignal_add(d->signals[i], NULL) < 0) {
			cli_error("cannot handle signal %d", sigs[i]);
			return CLI_EXIT_SOFTWARE;
		}
	}
	return CLI_EXIT_OK;
}

static void daemon_deinit(struct daemon *d)
{
	for (unsigned int i = 0; i < TRIB_N_ELEMENTS(d->signals); i++) {
		if (d->signals[i] != NULL)
			event_free(d->signals[i]);
	}
	if (d->timer != NULL)
		event_free(d->timer);
	if (d->refresh_timer != NULL)
		event_free(d->refresh_timer);
	/* a user list being read: its callbacks fire ("canceled") */
	d->stopping = true;
	trib_userdb_client_destroy(&d->env.userdb);
	daemon_users_free(d);
	daemon_config_unref(&d->config);
	cli_env_close(&d->env);
}

int daemon_run(const struct cli_env_options *options)
{
	struct daemon d;
	int ret;

	memset(&d, 0, sizeof(d));
	ret = daemon_init(&d, options);
	if (ret == CLI_EXIT_OK) {
		trib_log(&d.env.logger, TRIB_LOG_INFO,
			 "started (pid %ld): at most %u users' passes side by "
			 "side; accounts are polled, and watched with IDLE "
			 "where they can be",
			 (long)getpid(), d.config->globals->max_parallel_users);
		daemon_users_refresh(&d);
		trib_loop_run(d.env.loop);
		trib_log(&d.env.logger, TRIB_LOG_INFO, "stopped");
	}
	daemon_deinit(&d);
	return ret;
}
