/* user-sync.c: one pass over a user's remote accounts (see user-sync.h),
 * as `tributary sync` and `tributary run` make it, on the loop:
 *
 *   user_sync_start(): the state opened (and locked), the vault when an
 *   account needs it, the status file loaded -> (from the loop) each
 *   account that is wanted: sync_start(), and when its callback fires
 *   the status recorded and saved, account_done -> the next account ->
 *   (from the loop) everything closed (the lock released), the
 *   callback.
 *
 * The state is committed by each account's pass; a commit that fails
 * stops the user's pass (the other accounts wait for the next one).
 * Warnings (a damaged status file, one that cannot be saved) go to the
 * logger. */

#include "user-sync.h"

#include "account.h"
#include "alloc.h"
#include "incident.h"
#include "log.h"
#include "loop.h"
#include "state.h"
#include "status.h"
#include "vault.h"

#include <event2/event.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

struct user_sync {
	struct trib_loop *loop;
	const struct user_sync_settings *set;
	user_sync_done_callback_t *callback;
	void *context;
	struct user_sync_result result;

	struct trib_state *state;
	struct trib_vault_key *vault_key;
	struct trib_vault *vault;
	char *vault_error;

	/* the status file, saved after each account's pass */
	struct trib_status *status;
	char *status_path;
	uid_t status_uid;
	gid_t status_gid;
	bool status_warned;

	struct sync_settings sync_set;
	/* the account whose pass runs, and that pass */
	const struct trib_account *account;
	struct sync *sync;
	struct sync_result sync_result;
	/* the next account to look at, in set->accounts */
	unsigned int next;
	/* the next step, from the loop: the next account or the end */
	struct event *step_ev;
	bool ending;
	bool stopping;
};

static enum sync_status worse(enum sync_status a, enum sync_status b)
{
	if (a == SYNC_AUTH || b == SYNC_AUTH)
		return SYNC_AUTH;
	if (a == SYNC_CONFIG || b == SYNC_CONFIG)
		return SYNC_CONFIG;
	if (a == SYNC_TEMP || b == SYNC_TEMP)
		return SYNC_TEMP;
	return SYNC_OK;
}

static bool account_selected(const struct user_sync *us,
			     const struct trib_account *a)
{
	const struct user_sync_settings *set = us->set;

	if (set->only_account != NULL &&
	    strcmp(a->name, set->only_account) != 0)
		return false;
	return set->want_account == NULL || set->want_account(a, set->context);
}

/* ---- the vault ---- */

/* Whether one of the accounts this pass syncs logs in with a secret
 * from the vault (OAuth tokens, an app password). */
static bool vault_needed(const struct user_sync *us)
{
	const struct trib_account_list *list = us->set->accounts;

	for (unsigned int i = 0; i < list->count; i++) {
		if (account_selected(us, list->accounts[i]) &&
		    list->accounts[i]->auth != TRIB_AUTH_PASSWORD_FILE)
			return true;
	}
	return false;
}

/* Open the user's vault from the open state. On failure vault_error says
 * why, and the accounts that need it (oauth2, app_password) report it;
 * the others go on. */
static void vault_open(struct user_sync *us)
{
	const char *error;

	if (trib_vault_key_load(us->set->globals->vault_key_file,
				&us->vault_key, &error) != TRIB_VAULT_OK) {
		/* a missing key's error already says to run `tributary
		 * init` */
		us->vault_error = trib_strdup(error);
		return;
	}
	if (trib_vault_open(us->state, us->vault_key, &us->vault, &error) !=
	    TRIB_VAULT_OK) {
		us->vault_error = trib_strdup(error);
		trib_vault_key_destroy(&us->vault_key);
	}
}

/* ---- the status file (status.h) ---- */

static bool list_has_account(const struct trib_account_list *list,
			     const char *name)
{
	for (unsigned int i = 0; i < list->count; i++) {
		if (strcmp(list->accounts[i]->name, name) == 0)
			return true;
	}
	return false;
}

/* Load it (a damaged one is replaced: said once) and drop the entries of
 * accounts the user no longer has. When root runs this, the file gets
 * the owner of the state directory. */
static void status_open(struct user_sync *us)
{
	const char *user = us->set->user;
	struct stat st;
	char *error = NULL;

	us->status_uid = (uid_t)-1;
	us->status_gid = (gid_t)-1;
	if (geteuid() == 0 && stat(trib_state_path(us->state), &st) == 0) {
		us->status_uid = st.st_uid;
		us->status_gid = st.st_gid;
	}
	us->status_path =
		trib_strdup_printf("%s/status", trib_state_path(us->state));
	if (trib_status_load(us->status_path, user, &us->status, NULL, &error) <
	    0) {
		trib_log(us->set->logger, TRIB_LOG_WARNING,
			 "%s (replaced by this pass)", error);
		free(error);
		us->status = trib_status_new(user);
	}
	for (unsigned int i = us->status->count; i > 0; i--) {
		const char *name = us->status->accounts[i - 1]->name;

		if (!list_has_account(us->set->accounts, name))
			trib_status_remove(us->status, name);
	}
}

/* Whether the account's reauthorization record is there (or is there
 * but unreadable). A pass that asks for reauthorization without one
 * (no refresh token was ever stored) counts as failing: `tributary
 * status` reads a reauthorization state without a record as "authorized
 * again". */
static bool reauth_recorded(struct trib_state *state, const char *account)
{
	struct incident *incident = NULL;
	char *error = NULL;
	int ret;

	ret = incident_read(trib_state_path(state), account, &incident, &error);
	incident_free(&incident);
	free(error);
	return ret != 0;
}

/* Record the account's pass and save. A failed save is a warning (once)
 * and changes nothing else. */
static void status_record(struct user_sync *us, const struct trib_account *a,
			  const struct sync_result *r)
{
	struct trib_status_account *e = trib_status_get(us->status, a->name);
	int64_t now = (int64_t)time(NULL);
	char *error = NULL;

	e->last_attempt = now;
	if (r->reauthorize && reauth_recorded(us->state, a->name))
		e->state = TRIB_ACCOUNT_STATE_REAUTH;
	else if (r->status == SYNC_OK)
		e->state = TRIB_ACCOUNT_STATE_OK;
	else if (r->status == SYNC_TEMP)
		e->state = TRIB_ACCOUNT_STATE_DEFERRED;
	else
		e->state = TRIB_ACCOUNT_STATE_FAILING;
	if (e->state == TRIB_ACCOUNT_STATE_OK) {
		e->last_success = now;
		e->failures = 0;
	} else {
		e->failures++;
	}
	e->new_count = r->new_count;
	e->delivered = r->delivered;
	e->rejected = r->rejected;
	e->deferred = r->deferred;
	e->delivered_total += r->delivered;
	e->token_not_before = r->token_not_before;
	trib_status_set_errors(e, r->errors, r->error_count);
	if (trib_status_save(us->status, us->status_path, us->status_uid,
			     us->status_gid, &error) < 0 &&
	    !us->status_warned) {
		trib_log(us->set->logger, TRIB_LOG_WARNING, "%s", error);
		us->status_warned = true;
	}
	free(error);
}

/* When the account's token endpoint may be asked again (0: now). */
static int64_t status_not_before(struct user_sync *us, const char *name)
{
	const struct trib_status_account *e =
		trib_status_find(us->status, name);

	return e != NULL ? e->token_not_before : 0;
}

/* ---- the accounts ---- */

static void step_schedule(struct user_sync *us)
{
	static const struct timeval now = { 0, 0 };

	evtimer_add(us->step_ev, &now);
}

static void user_sync_finish(struct user_sync *us)
{
	trib_vault_close(&us->vault);
	trib_vault_key_destroy(&us->vault_key);
	free(us->vault_error);
	trib_status_free(&us->status);
	free(us->status_path);
	trib_state_close(&us->state);
	us->callback(&us->result, us->context);
	event_free(us->step_ev);
	free(us->result.error);
	free(us);
}

static void account_done(struct sync_result *result, void *context)
{
	struct user_sync *us = context;
	const struct user_sync_settings *set = us->set;
	const struct trib_account *a = us->account;

	us->sync = NULL;
	us->account = NULL;
	status_record(us, a, result);
	if (set->account_done != NULL)
		set->account_done(a, result, set->context);
	us->result.status = worse(us->result.status, result->status);
	if (result->stopped)
		us->result.stopped = true;
	if (result->state_failed) {
		us->result.status = worse(us->result.status, SYNC_TEMP);
		us->result.state_failed = true;
		us->result.error = trib_strdup_printf(
			"%s: the state could not be saved; the other accounts "
			"wait for the next pass",
			set->user);
		us->ending = true;
	}
	sync_result_free(result);
	step_schedule(us);
}

/* Start the next wanted account's pass; false when none is left. */
static bool next_account(struct user_sync *us)
{
	const struct trib_account_list *list = us->set->accounts;

	while (us->next < list->count) {
		const struct trib_account *a = list->accounts[us->next++];

		if (!account_selected(us, a))
			continue;
		us->result.matched++;
		us->account = a;
		us->sync_set.token_not_before = status_not_before(us, a->name);
		us->sync = sync_start(us->loop, &us->sync_set, a,
				      &us->sync_result, account_done, us);
		return true;
	}
	return false;
}

static bool accounts_left(const struct user_sync *us)
{
	const struct trib_account_list *list = us->set->accounts;

	for (unsigned int i = us->next; i < list->count; i++) {
		if (account_selected(us, list->accounts[i]))
			return true;
	}
	return false;
}

static void step_run(evutil_socket_t fd, short what, void *context)
{
	struct user_sync *us = context;

	(void)fd;
	(void)what;
	if (us->stopping && !us->ending && accounts_left(us)) {
		/* stopped between two accounts: the rest waits */
		us->result.stopped = true;
		us->result.status = worse(us->result.status, SYNC_TEMP);
		us->ending = true;
	}
	if (us->ending || !next_account(us))
		user_sync_finish(us);
}

/* ---- the pass ---- */

static void settings_init(struct user_sync *us)
{
	const struct user_sync_settings *set = us->set;
	const struct trib_global_settings *globals = set->globals;
	struct sync_settings *ss = &us->sync_set;

	memset(ss, 0, sizeof(*ss));
	ss->user = set->user;
	ss->lmtp = globals->lmtp;
	ss->lmtp_sessions = set->lmtp_sessions;
	ss->state = us->state;
	ss->keys = set->keys;
	ss->vault = us->vault;
	ss->vault_error = us->vault_error;
	ss->global = set->global;
	ss->notify_command = globals->notify_command;
	ss->reauth_notice = globals->reauth_notice;
	ss->oauth_margin_secs = globals->oauth_refresh_margin_secs;
	ss->logger = set->logger;
	ss->progress = set->progress;
	ss->progress_context = set->progress_context;
	ss->login_secret = set->login_secret;
	ss->login_context = set->context;
}

struct user_sync *user_sync_start(struct trib_loop *loop,
				  const struct user_sync_settings *set,
				  user_sync_done_callback_t *callback,
				  void *context)
{
	struct user_sync *us = trib_calloc(1, sizeof(*us));
	const char *error;

	us->loop = loop;
	us->set = set;
	us->callback = callback;
	us->context = context;
	us->result.status = SYNC_OK;
	us->step_ev = evtimer_new(trib_loop_base(loop), step_run, us);
	step_schedule(us);
	if (trib_state_open(set->globals->state_dir, set->user, &us->state,
			    &error) < 0) {
		us->result.status = SYNC_TEMP;
		us->result.locked = trib_state_open_was_locked();
		us->result.error =
			trib_strdup_printf("%s: %s", set->user, error);
		us->ending = true;
		return us;
	}
	us->result.opened = true;
	if (vault_needed(us))
		vault_open(us);
	status_open(us);
	settings_init(us);
	return us;
}

void user_sync_stop(struct user_sync *us)
{
	if (us->stopping)
		return;
	us->stopping = true;
	if (us->sync != NULL)
		sync_stop(us->sync);
	/* else the next step sees it */
}
