/* daemon-users.c: the daemon's users and their accounts, read from
 * Dovecot's auth userdb (LIST, then USER for each, a few at a time) at
 * start, every hour and on SIGHUP, and merged into what the daemon has:
 * accounts keep their schedules across a refresh, new ones are due at
 * once (or wait for their reauthorization record to go, or for a
 * Retry-After kept in the status file). A user whose pass is running
 * gets the new list when the pass ends. */

#include "daemon-private.h"

#include "alloc.h"
#include "cli.h"
#include "incident.h"
#include "state.h"
#include "status.h"
#include "userdb.h"

#include <errno.h>
#include <event2/event.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>

/* USER lookups in flight while the list is read. */
#define DAEMON_LOOKUPS 16

/* One name of the list and its lookup. */
struct daemon_found {
	struct daemon_refresh *refresh;
	/* 1 found, 0 not found, -1 failed (the user stays as it was) */
	int result;
	/* the name as USER answered it, or as LIST did */
	const char *key;
	char *name;
	struct trib_account_list list;
};

struct daemon_refresh {
	struct daemon *daemon;
	struct daemon_config *config;
	char **names;
	struct daemon_found *found;
	unsigned int count, next, pending;
};

/* ---- users ---- */

static int user_cmp(const void *a, const void *b)
{
	const struct daemon_user *const *ua = a, *const *ub = b;

	return strcmp((*ua)->name, (*ub)->name);
}

static struct daemon_user *user_find(struct daemon *d, const char *name)
{
	struct daemon_user key, *keyp = &key, **found;

	if (d->user_count == 0)
		return NULL;
	key.name = (char *)name;
	found = bsearch(&keyp, d->users, d->user_count, sizeof(*d->users),
			user_cmp);
	return found != NULL ? *found : NULL;
}

bool daemon_reauth_present(struct daemon *d, const char *user,
			   const char *account)
{
	char *dir = trib_strdup_printf("%s/%s", d->config->globals->state_dir,
				       user);
	char *path = incident_path(dir, account);
	struct stat st;
	bool present = true;

	if (stat(path, &st) < 0) {
		if (errno == ENOENT)
			present = false;
		else
			trib_log(&d->env.logger, TRIB_LOG_WARNING,
				 "%s/%s: %s: %s", user, account, path,
				 strerror(errno));
	}
	free(path);
	free(dir);
	return present;
}

/* A Retry-After the status file keeps for the account, on the
 * schedule's clock (0: none). */
static int64_t status_not_before(struct trib_status *status,
				 const char *account)
{
	struct trib_status_account *e =
		status != NULL ? trib_status_find(status, account) : NULL;
	int64_t wall = (int64_t)time(NULL);

	if (e == NULL || e->token_not_before <= wall)
		return 0;
	return daemon_now() + (e->token_not_before - wall);
}

/* Take list (moved) as the user's accounts: schedules are kept by
 * account name; a new account is due now, unless its reauthorization
 * record is there or the status file holds a Retry-After for it. */
static void user_apply(struct daemon *d, struct daemon_user *u,
		       struct trib_account_list *list)
{
	struct daemon_account *accounts =
		trib_calloc(list->count + 1, sizeof(*accounts));
	struct trib_status *status = NULL;
	bool status_read = false;
	int64_t now = daemon_now();
	char *path, *error = NULL;

	for (unsigned int i = 0; i < list->count; i++) {
		const struct trib_account *a = list->accounts[i];
		struct daemon_account *da = &accounts[i], *old = NULL;

		for (unsigned int j = 0; j < u->list.count && old == NULL;
		     j++) {
			if (u->accounts[j].name != NULL &&
			    strcmp(u->accounts[j].name, a->name) == 0)
				old = &u->accounts[j];
		}
		if (old != NULL) {
			*da = *old;
			old->name = NULL;
			old->idle = NULL;
			old->login_secret = NULL;
			schedule_account_set_interval(&da->sched,
						      a->poll_interval_secs);
			/* its watcher goes when it connects otherwise now;
			 * a server without IDLE is asked again */
			if (da->idle != NULL && !daemon_idle_same(da->idle, a))
				daemon_idle_close(&da->idle);
			da->idle_unsupported = false;
			continue;
		}
		da->name = trib_strdup(a->name);
		schedule_account_init(&da->sched, a->poll_interval_secs, now);
		if (daemon_reauth_present(d, u->name, a->name)) {
			schedule_account_set_reauth(&da->sched, now);
			trib_log(&d->env.logger, TRIB_LOG_INFO,
				 "%s/%s: waiting for reauthorization "
				 "(tributary authorize -u %s %s)",
				 u->name, a->name, u->name, a->name);
		}
		if (!status_read) {
			status_read = true;
			path = trib_status_path(d->config->globals->state_dir,
						u->name);
			if (path != NULL &&
			    trib_status_load(path, u->name, &status, NULL,
					     &error) < 0) {
				trib_log(&d->env.logger, TRIB_LOG_DEBUG, "%s",
					 error);
				free(error);
				error = NULL;
			}
			free(path);
		}
		schedule_account_set_not_before(
			&da->sched, status_not_before(status, a->name));
	}
	trib_status_free(&status);
	for (unsigned int j = 0; j < u->list.count; j++) {
		/* accounts no longer listed */
		daemon_idle_close(&u->accounts[j].idle);
		trib_secret_free(&u->accounts[j].login_secret);
		free(u->accounts[j].name);
	}
	free(u->accounts);
	trib_account_list_free(&u->list);
	u->list = *list;
	memset(list, 0, sizeof(*list));
	u->accounts = accounts;
}

static struct daemon_user *user_new(struct daemon *d, const char *name,
				    struct trib_account_list *list)
{
	struct daemon_user *u = trib_calloc(1, sizeof(*u));

	u->daemon = d;
	u->name = trib_strdup(name);
	user_apply(d, u, list);
	return u;
}

static void user_free(struct daemon_user *u)
{
	for (unsigned int i = 0; i < u->list.count; i++) {
		daemon_idle_close(&u->accounts[i].idle);
		trib_secret_free(&u->accounts[i].login_secret);
		free(u->accounts[i].name);
	}
	free(u->accounts);
	trib_account_list_free(&u->list);
	if (u->has_next)
		trib_account_list_free(&u->next);
	free(u->name);
	free(u);
}

/* A newer list for the user: now, or when its pass ends. */
static void user_update(struct daemon *d, struct daemon_user *u,
			struct trib_account_list *list)
{
	if (u->pass == NULL && !u->ended) {
		user_apply(d, u, list);
		return;
	}
	if (u->has_next)
		trib_account_list_free(&u->next);
	u->next = *list;
	u->has_next = true;
	memset(list, 0, sizeof(*list));
}

void daemon_users_tidy(struct daemon *d)
{
	unsigned int kept = 0;

	for (unsigned int i = 0; i < d->user_count; i++) {
		struct daemon_user *u = d->users[i];

		if (u->ended) {
			u->ended = false;
			daemon_config_unref(&u->config);
			if (u->has_next) {
				u->has_next = false;
				user_apply(d, u, &u->next);
			}
			if (u->gone) {
				user_free(u);
				continue;
			}
		}
		d->users[kept++] = u;
	}
	d->user_count = kept;
}

void daemon_users_free(struct daemon *d)
{
	for (unsigned int i = 0; i < d->user_count; i++) {
		daemon_config_unref(&d->users[i]->config);
		user_free(d->users[i]);
	}
	free(d->users);
	d->users = NULL;
	d->user_count = 0;
	daemon_users_forget_errors(d);
}

/* ---- configuration errors, logged once ---- */

static int str_cmp(const void *a, const void *b)
{
	return strcmp(*(char *const *)a, *(char *const *)b);
}

void daemon_users_forget_errors(struct daemon *d)
{
	for (unsigned int i = 0; i < d->logged_count; i++)
		free(d->logged[i]);
	free(d->logged);
	d->logged = NULL;
	d->logged_count = 0;
}

/* Log the lines not logged by the refresh before; remember this
 * refresh's (a problem fixed and back is logged again). */
static void log_errors(struct daemon *d, struct daemon_refresh *r)
{
	char **lines = NULL;
	unsigned int count = 0;

	for (unsigned int i = 0; i < r->count; i++) {
		const struct trib_account_list *l = &r->found[i].list;

		for (unsigned int j = 0; j < l->error_count; j++) {
			lines = trib_realloc(lines,
					     (count + 1) * sizeof(*lines));
			lines[count++] = trib_strdup(l->errors[j]);
		}
	}
	if (count > 0)
		qsort(lines, count, sizeof(*lines), str_cmp);
	for (unsigned int i = 0; i < count; i++) {
		if (d->logged_count == 0 ||
		    bsearch(&lines[i], d->logged, d->logged_count,
			    sizeof(*d->logged), str_cmp) == NULL)
			trib_log(&d->env.logger, TRIB_LOG_ERROR,
				 "%s (the account is left out)", lines[i]);
	}
	daemon_users_forget_errors(d);
	d->logged = lines;
	d->logged_count = count;
}

/* ---- merging a new list ---- */

static int found_cmp(const void *a, const void *b)
{
	const struct daemon_found *fa = a, *fb = b;

	return strcmp(fa->key, fb->key);
}

static void add_user(struct daemon_user ***users, unsigned int *count,
		     struct daemon_user *u)
{
	*users = trib_realloc(*users, (*count + 1) * sizeof(**users));
	(*users)[(*count)++] = u;
	u->seen = true;
}

static void users_merge(struct daemon *d, struct daemon_refresh *r)
{
	struct daemon_user **users = NULL, *u;
	unsigned int count = 0, kept = 0, accounts = 0;
	const char *prev = NULL;

	log_errors(d, r);
	for (unsigned int i = 0; i < d->user_count; i++)
		d->users[i]->seen = false;
	if (r->count > 0)
		qsort(r->found, r->count, sizeof(*r->found), found_cmp);
	for (unsigned int i = 0; i < r->count; i++) {
		struct daemon_found *f = &r->found[i];

		/* two names of the list for one user: the first counts */
		if (prev != NULL && strcmp(prev, f->key) == 0)
			continue;
		prev = f->key;
		u = user_find(d, f->key);
		if (f->result < 0) {
			/* not read this time: stays as it was */
			if (u != NULL)
				add_user(&users, &count, u);
			continue;
		}
		if (f->result == 0 || f->list.count == 0)
			continue;
		if (!trib_state_valid_user(f->key)) {
			trib_log(&d->env.logger, TRIB_LOG_ERROR,
				 "user '%s': a name Tributary cannot keep "
				 "state for (left out)",
				 f->key);
			continue;
		}
		if (u != NULL) {
			user_update(d, u, &f->list);
			add_user(&users, &count, u);
		} else {
			add_user(&users, &count, user_new(d, f->key, &f->list));
		}
	}
	for (unsigned int i = 0; i < d->user_count; i++) {
		u = d->users[i];
		if (u->seen)
			continue;
		if (u->pass == NULL && !u->ended) {
			daemon_config_unref(&u->config);
			user_free(u);
			continue;
		}
		/* dropped once its pass has ended; its watchers now */
		u->gone = true;
		for (unsigned int j = 0; j < u->list.count; j++)
			daemon_idle_close(&u->accounts[j].idle);
		add_user(&users, &count, u);
	}
	if (count > 0)
		qsort(users, count, sizeof(*users), user_cmp);
	free(d->users);
	d->users = users;
	d->user_count = count;
	for (unsigned int i = 0; i < count; i++) {
		if (users[i]->gone)
			continue;
		kept++;
		accounts += users[i]->list.count;
	}
	trib_log(&d->env.logger, TRIB_LOG_INFO,
		 "%u users with %u remote accounts (of %u users listed)", kept,
		 accounts, r->count);
}

/* ---- reading the list ---- */

static void refresh_free(struct daemon_refresh *r)
{
	for (unsigned int i = 0; i < r->count; i++) {
		free(r->names[i]);
		free(r->found[i].name);
		trib_account_list_free(&r->found[i].list);
	}
	free(r->names);
	free(r->found);
	daemon_config_unref(&r->config);
	free(r);
}

static void refresh_end(struct daemon_refresh *r, bool listed)
{
	struct daemon *d = r->daemon;
	struct timeval tv = { 0, 0 };

	d->refresh = NULL;
	if (d->stopping) {
		refresh_free(r);
		return;
	}
	if (listed)
		users_merge(d, r);
	refresh_free(r);
	tv.tv_sec = listed ? DAEMON_REFRESH_SECS : DAEMON_LIST_RETRY_SECS;
	evtimer_add(d->refresh_timer, &tv);
	if (d->refresh_again) {
		d->refresh_again = false;
		daemon_users_refresh(d);
	}
	daemon_kick(d);
}

static void refresh_lookup_done(int result, const struct trib_userdb_user *user,
				const char *error, void *context);

static void refresh_next(struct daemon_refresh *r)
{
	while (!r->daemon->stopping && r->next < r->count &&
	       r->pending < DAEMON_LOOKUPS) {
		struct daemon_found *f = &r->found[r->next];

		f->refresh = r;
		f->key = r->names[r->next++];
		r->pending++;
		trib_userdb_lookup(r->daemon->env.userdb, f->key,
				   refresh_lookup_done, f);
	}
	if (r->pending == 0)
		refresh_end(r, r->next == r->count && !r->daemon->stopping);
}

static void refresh_lookup_done(int result, const struct trib_userdb_user *user,
				const char *error, void *context)
{
	struct daemon_found *f = context;
	struct daemon_refresh *r = f->refresh;

	r->pending--;
	f->result = result;
	if (result > 0) {
		f->name = trib_strdup(user->name != NULL ? user->name : f->key);
		f->key = f->name;
		cli_accounts_from_userdb(user, f->name, r->config->global,
					 r->config->globals, &f->list);
	} else if (result < 0 && !r->daemon->stopping) {
		trib_log(&r->daemon->env.logger, TRIB_LOG_WARNING,
			 "%s: %s (its accounts stay as they were)", f->key,
			 error);
	}
	refresh_next(r);
}

static void refresh_listed(int result, const char *const *users,
			   unsigned int count, const char *error, void *context)
{
	struct daemon_refresh *r = context;
	struct daemon *d = r->daemon;

	if (result < 0) {
		if (!d->stopping)
			trib_log(&d->env.logger, TRIB_LOG_ERROR,
				 "cannot list the users: %s (trying again in "
				 "%u seconds)",
				 error, DAEMON_LIST_RETRY_SECS);
		refresh_end(r, false);
		return;
	}
	r->count = count;
	r->names = trib_calloc(count + 1, sizeof(*r->names));
	r->found = trib_calloc(count + 1, sizeof(*r->found));
	for (unsigned int i = 0; i < count; i++)
		r->names[i] = trib_strdup(users[i]);
	refresh_next(r);
}

void daemon_users_refresh(struct daemon *d)
{
	struct daemon_refresh *r;

	if (d->stopping)
		return;
	if (d->refresh != NULL) {
		d->refresh_again = true;
		return;
	}
	evtimer_del(d->refresh_timer);
	r = trib_calloc(1, sizeof(*r));
	r->daemon = d;
	r->config = daemon_config_ref(d->config);
	d->refresh = r;
	trib_userdb_list(d->env.userdb, refresh_listed, r);
}
