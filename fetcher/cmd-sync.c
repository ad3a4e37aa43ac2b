/* cmd-sync.c: `tributary sync` (one pass over a user's remote accounts,
 * see sync.h) and `tributary init` (the trace and vault keys). */

#include "cli.h"

#include "cli-env.h"

#include "account.h"
#include "alloc.h"
#include "doveconf.h"
#include "incident.h"
#include "loop.h"
#include "progress.h"
#include "state.h"
#include "status.h"
#include "sync.h"
#include "trace.h"
#include "userdb.h"
#include "vault.h"

#include <errno.h>
#include <getopt.h>
#include <grp.h>
#include <json-c/json.h>
#include <pwd.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

struct sync_run {
	const char *user, *account;
	struct cli_env_options options;
	bool json;
	unsigned int lmtp_sessions;
	struct cli_env env;

	char *user_name;
	struct trib_account_list list;
};

static int exit_code(enum sync_status status)
{
	switch (status) {
	case SYNC_OK:
		return CLI_EXIT_OK;
	case SYNC_TEMP:
		return CLI_EXIT_TEMPFAIL;
	case SYNC_CONFIG:
		return CLI_EXIT_CONFIG;
	case SYNC_AUTH:
		return CLI_EXIT_NOPERM;
	}
	return CLI_EXIT_SOFTWARE;
}

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

static void sync_usage(FILE *out)
{
	fprintf(out, "usage: tributary sync [-c CONFIG] -u USER [ACCOUNT] "
		     "[--json]\n"
		     "\n"
		     "One pass: bring every new message of the user's remote "
		     "accounts (or\nof ACCOUNT) into the local mailbox through "
		     "LMTP.\n"
		     "\n"
		     "  -c, --config FILE       Dovecot's config (default: its "
		     "own)\n"
		     "  -u, --user USER         the local user\n"
		     "      --json              a JSON summary\n"
		     "      --lmtp-sessions N   LMTP sessions side by side "
		     "(default 4)\n"
		     "      --userdb-socket P   default "
		     "<base_dir>/tributary-userdb\n"
		     "      --doveconf PATH     the doveconf binary\n"
		     "  -v, --verbose           log the details\n"
		     "\nExit: 0 all done, 75 something deferred (run again), "
		     "77 refused\n(credentials, TLS), 78 configuration.\n");
}

static int sync_parse_args(struct sync_run *run, int argc, char **argv)
{
	static const struct option options[] = {
		{ "config", required_argument, NULL, 'c' },
		{ "user", required_argument, NULL, 'u' },
		{ "json", no_argument, NULL, 'j' },
		{ "lmtp-sessions", required_argument, NULL, 'n' },
		{ "userdb-socket", required_argument, NULL, 's' },
		{ "doveconf", required_argument, NULL, 'd' },
		{ "verbose", no_argument, NULL, 'v' },
		{ "help", no_argument, NULL, 'h' },
		{ NULL, 0, NULL, 0 },
	};
	char *end;
	unsigned long n;
	int c;

	optind = 1;
	while ((c = getopt_long(argc, argv, "c:u:v", options, NULL)) != -1) {
		switch (c) {
		case 'c':
			run->options.config = optarg;
			break;
		case 'u':
			run->user = optarg;
			break;
		case 'j':
			run->json = true;
			break;
		case 'n':
			errno = 0;
			n = strtoul(optarg, &end, 10);
			if (errno != 0 || *end != '\0' || n < 1 || n > 64) {
				cli_error("--lmtp-sessions: '%s' is not a "
					  "number from 1 to 64",
					  optarg);
				return -1;
			}
			run->lmtp_sessions = (unsigned int)n;
			break;
		case 's':
			run->options.socket = optarg;
			break;
		case 'd':
			run->options.doveconf_bin = optarg;
			break;
		case 'v':
			run->options.verbose = true;
			break;
		case 'h':
			sync_usage(stdout);
			return 1;
		default:
			goto bad;
		}
	}
	if (optind < argc)
		run->account = argv[optind++];
	if (optind != argc || run->user == NULL)
		goto bad;
	return 0;
bad:
	sync_usage(stderr);
	return -1;
}

static void sync_run_free(struct sync_run *run)
{
	trib_account_list_free(&run->list);
	free(run->user_name);
	cli_env_close(&run->env);
}

static json_object *result_json(const char *account,
				const struct sync_result *r)
{
	json_object *obj = json_object_new_object();

	json_object_object_add(obj, "account", json_object_new_string(account));
	json_object_object_add(obj, "new", json_object_new_int64(r->new_count));
	json_object_object_add(obj, "delivered",
			       json_object_new_int64(r->delivered));
	json_object_object_add(obj, "rejected",
			       json_object_new_int64(r->rejected));
	json_object_object_add(obj, "deferred",
			       json_object_new_int64(r->deferred));
	json_object_object_add(obj, "remapped",
			       json_object_new_int64(r->remapped));
	json_object_object_add(obj, "errors",
			       cli_json_strings(r->errors, r->error_count));
	return obj;
}

/* The global settings' problems, one line each; -1 if there is any. */
static int report_globals(const struct trib_global_settings *globals)
{
	for (unsigned int i = 0; i < globals->error_count; i++)
		cli_error("%s", globals->errors[i]);
	return globals->error_count > 0 ? -1 : 0;
}

/* Whether one of the accounts this run syncs logs in with a secret from
 * the vault (OAuth tokens, an app password). */
static bool run_needs_vault(const struct sync_run *run)
{
	for (unsigned int i = 0; i < run->list.count; i++) {
		const struct trib_account *a = run->list.accounts[i];

		if ((run->account == NULL ||
		     strcmp(a->name, run->account) == 0) &&
		    a->auth != TRIB_AUTH_PASSWORD_FILE)
			return true;
	}
	return false;
}

/* Open the user's vault from the open state. On failure *error_r says
 * why (a copy), and the accounts that need it (oauth2, app_password)
 * report it; the others go on. */
static void vault_open(const struct sync_run *run, struct trib_state *state,
		       struct trib_vault_key **key_r,
		       struct trib_vault **vault_r, char **error_r)
{
	const char *error;

	*vault_r = NULL;
	*error_r = NULL;
	if (trib_vault_key_load(run->env.globals.vault_key_file, key_r,
				&error) != TRIB_VAULT_OK) {
		/* a missing key's error already says to run `tributary
		 * init` */
		*error_r = trib_strdup(error);
		return;
	}
	if (trib_vault_open(state, *key_r, vault_r, &error) != TRIB_VAULT_OK) {
		*error_r = trib_strdup(error);
		trib_vault_key_destroy(key_r);
	}
}

/* ---- the status file (status.h) ---- */

/* The user's status file, saved after each account's pass. */
struct run_status {
	struct trib_status *status;
	char *path;
	uid_t uid;
	gid_t gid;
	bool warned;
};

static bool run_has_account(const struct sync_run *run, const char *name)
{
	for (unsigned int i = 0; i < run->list.count; i++) {
		if (strcmp(run->list.accounts[i]->name, name) == 0)
			return true;
	}
	return false;
}

/* Load it (a damaged one is replaced: said once) and drop the entries of
 * accounts the user no longer has. When root runs this, the file gets
 * the owner of the state directory. */
static void run_status_open(const struct sync_run *run,
			    struct trib_state *state, struct run_status *rs)
{
	struct stat st;
	char *error = NULL;

	memset(rs, 0, sizeof(*rs));
	rs->uid = (uid_t)-1;
	rs->gid = (gid_t)-1;
	if (geteuid() == 0 && stat(trib_state_path(state), &st) == 0) {
		rs->uid = st.st_uid;
		rs->gid = st.st_gid;
	}
	rs->path = trib_strdup_printf("%s/status", trib_state_path(state));
	if (trib_status_load(rs->path, run->user_name, &rs->status, NULL,
			     &error) < 0) {
		cli_error("warning: %s (replaced by this pass)", error);
		free(error);
		rs->status = trib_status_new(run->user_name);
	}
	for (unsigned int i = rs->status->count; i > 0; i--) {
		const char *name = rs->status->accounts[i - 1]->name;

		if (!run_has_account(run, name))
			trib_status_remove(rs->status, name);
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
static void run_status_record(struct run_status *rs, struct trib_state *state,
			      const struct trib_account *a,
			      const struct sync_result *r)
{
	struct trib_status_account *e = trib_status_get(rs->status, a->name);
	int64_t now = (int64_t)time(NULL);
	char *error = NULL;

	e->last_attempt = now;
	if (r->reauthorize && reauth_recorded(state, a->name))
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
	if (trib_status_save(rs->status, rs->path, rs->uid, rs->gid, &error) <
		    0 &&
	    !rs->warned) {
		cli_error("warning: %s", error);
		rs->warned = true;
	}
	free(error);
}

/* When the account's token endpoint may be asked again (0: now). */
static int64_t run_status_not_before(struct run_status *rs, const char *name)
{
	const struct trib_status_account *e =
		trib_status_find(rs->status, name);

	return e != NULL ? e->token_not_before : 0;
}

static void run_status_close(struct run_status *rs)
{
	trib_status_free(&rs->status);
	free(rs->path);
}

static int sync_accounts(struct sync_run *run, struct trib_state *state,
			 struct trib_vault *vault, const char *vault_error,
			 const struct trib_trace_keys *keys,
			 json_object *jaccounts, enum sync_status *status)
{
	struct sync_settings set;
	struct sync_result result;
	struct progress_bar bar;
	struct run_status rs;
	unsigned int matched = 0;

	memset(&set, 0, sizeof(set));
	set.user = run->user_name;
	set.lmtp = run->env.globals.lmtp;
	set.lmtp_sessions = run->lmtp_sessions;
	set.state = state;
	set.keys = keys;
	set.vault = vault;
	set.vault_error = vault_error;
	set.global = &run->env.global;
	set.notify_command = run->env.globals.notify_command;
	set.reauth_notice = run->env.globals.reauth_notice;
	set.oauth_margin_secs = run->env.globals.oauth_refresh_margin_secs;
	set.logger = &run->env.logger;
	if (!run->json && !run->options.verbose && progress_bar_wanted()) {
		progress_bar_init(&bar, stderr, run->user_name);
		set.progress = progress_bar_update;
		set.progress_context = &bar;
	}
	run_status_open(run, state, &rs);

	for (unsigned int i = 0; i < run->list.count; i++) {
		const struct trib_account *a = run->list.accounts[i];

		if (run->account != NULL && strcmp(a->name, run->account) != 0)
			continue;
		matched++;
		set.token_not_before = run_status_not_before(&rs, a->name);
		sync_account(run->env.loop, &set, a, &result);
		run_status_record(&rs, state, a, &result);
		if (!run->json && !result.skipped) {
			printf("%s/%s: %u new, %u delivered, %u rejected, "
			       "%u deferred",
			       run->user_name, a->name, result.new_count,
			       result.delivered, result.rejected,
			       result.deferred);
			if (result.remapped > 0)
				printf(", %u re-mapped", result.remapped);
			printf("\n");
			fflush(stdout);
		} else if (run->json) {
			json_object_array_add(jaccounts,
					      result_json(a->name, &result));
		}
		for (unsigned int j = 0; j < result.error_count; j++)
			cli_error("%s", result.errors[j]);
		*status = worse(*status, result.status);
		if (result.state_failed) {
			sync_result_free(&result);
			run_status_close(&rs);
			return -1;
		}
		sync_result_free(&result);
	}
	if (run->account != NULL && matched == 0) {
		cli_error("%s/%s: no such account (tributary accounts -u %s "
			  "lists them)",
			  run->user_name, run->account, run->user_name);
		*status = worse(*status, SYNC_CONFIG);
	}
	run_status_close(&rs);
	return 0;
}

int cmd_sync(int argc, char **argv)
{
	struct sync_run run;
	struct trib_trace_keys *keys = NULL;
	struct trib_state *state = NULL;
	struct trib_vault_key *vault_key = NULL;
	struct trib_vault *vault = NULL;
	char *vault_error = NULL;
	enum sync_status status = SYNC_OK;
	json_object *root = NULL, *jaccounts = NULL;
	const char *error;
	int ret;

	memset(&run, 0, sizeof(run));
	ret = sync_parse_args(&run, argc, argv);
	if (ret != 0)
		return ret > 0 ? CLI_EXIT_OK : CLI_EXIT_USAGE;
	ret = cli_env_load(&run.env, &run.options);
	if (ret == CLI_EXIT_OK && report_globals(&run.env.globals) < 0)
		ret = CLI_EXIT_CONFIG;
	if (ret == CLI_EXIT_OK)
		ret = cli_env_connect(&run.env, &run.options);
	if (ret != CLI_EXIT_OK) {
		sync_run_free(&run);
		return ret;
	}
	ret = cli_env_lookup_user(&run.env, run.user, &run.user_name,
				  &run.list);
	if (ret != CLI_EXIT_OK) {
		sync_run_free(&run);
		return ret;
	}
	for (unsigned int i = 0; i < run.list.error_count; i++) {
		cli_error("%s", run.list.errors[i]);
		status = SYNC_CONFIG;
	}

	if (trib_trace_keys_load(run.env.globals.trace_key_file, &keys,
				 &error) < 0) {
		cli_error("%s (run `tributary init` first)", error);
		sync_run_free(&run);
		return CLI_EXIT_CONFIG;
	}
	if (trib_state_open(run.env.globals.state_dir, run.user_name, &state,
			    &error) < 0) {
		cli_error("%s: %s", run.user_name, error);
		trib_trace_keys_destroy(&keys);
		sync_run_free(&run);
		return CLI_EXIT_TEMPFAIL;
	}
	if (run_needs_vault(&run))
		vault_open(&run, state, &vault_key, &vault, &vault_error);
	if (run.json) {
		root = json_object_new_object();
		jaccounts = json_object_new_array();
	}
	if (sync_accounts(&run, state, vault, vault_error, keys, jaccounts,
			  &status) < 0)
		status = worse(status, SYNC_TEMP);
	trib_vault_close(&vault);
	trib_vault_key_destroy(&vault_key);
	free(vault_error);
	trib_state_close(&state);
	trib_trace_keys_destroy(&keys);
	if (run.json) {
		json_object_object_add(root, "user",
				       json_object_new_string(run.user_name));
		json_object_object_add(root, "accounts", jaccounts);
		json_object_object_add(root, "exit",
				       json_object_new_int(exit_code(status)));
		printf("%s\n", json_object_to_json_string_ext(
				       root, JSON_C_TO_STRING_PRETTY |
						     JSON_C_TO_STRING_SPACED));
		json_object_put(root);
	}
	sync_run_free(&run);
	return exit_code(status);
}

/* ---- init ---- */

/* Create the vault key when it is missing (owned by the tributary user
 * when root runs this), or check the one in place: it is never
 * replaced, since a new key would orphan every stored token. */
static int init_vault_key(const char *path)
{
	struct trib_vault_key *key = NULL;
	struct passwd *pw = getpwnam("tributary");
	bool chown_it = pw != NULL && geteuid() == 0;
	const char *error;
	struct stat st;

	if (lstat(path, &st) == 0) {
		if (trib_vault_key_load(path, &key, &error) != TRIB_VAULT_OK) {
			cli_error("%s", error);
			return -1;
		}
		printf("vault key %s: exists already, left as it is (key id "
		       "%s)\n",
		       path, trib_vault_key_id(key));
		trib_vault_key_destroy(&key);
		return 0;
	}
	if (trib_vault_key_generate(path, chown_it ? pw->pw_uid : (uid_t)-1,
				    chown_it ? pw->pw_gid : (gid_t)-1,
				    &error) != TRIB_VAULT_OK) {
		cli_error("%s", error);
		return -1;
	}
	if (trib_vault_key_load(path, &key, &error) != TRIB_VAULT_OK) {
		cli_error("%s", error);
		return -1;
	}
	printf("vault key %s: created (mode 0600%s, key id %s; a cluster "
	       "copies this same file to every host)\n",
	       path, chown_it ? ", owner tributary" : "",
	       trib_vault_key_id(key));
	trib_vault_key_destroy(&key);
	return 0;
}

int cmd_init(int argc, char **argv)
{
	static const struct option options[] = {
		{ "config", required_argument, NULL, 'c' },
		{ "doveconf", required_argument, NULL, 'd' },
		{ "help", no_argument, NULL, 'h' },
		{ NULL, 0, NULL, 0 },
	};
	struct cli_env_options opts;
	struct cli_env env;
	const char *error;
	struct group *grp;
	struct stat st;
	gid_t gid = (gid_t)-1;
	int c, ret = CLI_EXIT_OK;

	memset(&opts, 0, sizeof(opts));
	optind = 1;
	while ((c = getopt_long(argc, argv, "c:", options, NULL)) != -1) {
		switch (c) {
		case 'c':
			opts.config = optarg;
			break;
		case 'd':
			opts.doveconf_bin = optarg;
			break;
		case 'h':
			printf("usage: tributary init [-c CONFIG]\n\nCreate "
			       "the trace key (tributary_trace_key_file) and "
			       "the vault key\n(tributary_vault_key_file) if "
			       "they are missing; never replace them.\n");
			return CLI_EXIT_OK;
		default:
			fprintf(stderr, "usage: tributary init [-c CONFIG]\n");
			return CLI_EXIT_USAGE;
		}
	}
	if (optind != argc) {
		fprintf(stderr, "usage: tributary init [-c CONFIG]\n");
		return CLI_EXIT_USAGE;
	}
	ret = cli_env_load(&env, &opts);
	if (ret == CLI_EXIT_OK && report_globals(&env.globals) < 0)
		ret = CLI_EXIT_CONFIG;
	if (ret != CLI_EXIT_OK) {
		cli_env_close(&env);
		return ret;
	}
	if (lstat(env.globals.trace_key_file, &st) == 0) {
		printf("trace key %s: exists already, left as it is\n",
		       env.globals.trace_key_file);
	} else {
		grp = getgrnam("tributary-trace");
		if (grp != NULL)
			gid = grp->gr_gid;
		if (trib_trace_key_generate(env.globals.trace_key_file, NULL,
					    gid, &error) < 0) {
			cli_error("%s", error);
			ret = CLI_EXIT_CONFIG;
		} else {
			printf("trace key %s: created (mode 0640%s%s)\n",
			       env.globals.trace_key_file,
			       grp != NULL ? ", group " : "",
			       grp != NULL ? "tributary-trace" : "");
		}
	}
	if (init_vault_key(env.globals.vault_key_file) < 0)
		ret = CLI_EXIT_CONFIG;
	cli_env_close(&env);
	return ret;
}
