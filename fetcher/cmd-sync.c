/* cmd-sync.c: `tributary sync` (one pass over a user's remote accounts,
 * see user-sync.h: run on the loop until it is over, stopped cleanly by
 * SIGINT or SIGTERM) and `tributary init` (the trace and vault keys). */

#include "cli.h"

#include "cli-env.h"

#include "account.h"
#include "alloc.h"
#include "doveconf.h"
#include "loop.h"
#include "progress.h"
#include "trace.h"
#include "user-sync.h"
#include "userdb.h"
#include "vault.h"

#include <errno.h>
#include <event2/event.h>
#include <getopt.h>
#include <grp.h>
#include <json-c/json.h>
#include <pwd.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
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
		     "\nCtrl-C or SIGTERM stops the pass cleanly: what is "
		     "done is committed (exit 75).\n"
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

/* ---- the pass (user-sync.h) ---- */

/* What the pass of the user's accounts prints as it goes, and what its
 * end says. */
struct sync_cli {
	struct sync_run *run;
	struct user_sync *us;
	json_object *jaccounts;
	bool done;
	/* an account's pass said "stopped" */
	bool stopped_shown;
	/* the user_sync_result, copied (its error is printed only when
	 * the state could not be opened: a failed commit was said by the
	 * account's lines) */
	enum sync_status status;
	bool opened, stopped;
	unsigned int matched;
	char *error;
};

/* One account's pass is over: its summary line (or JSON entry), then
 * its error lines. */
static void cli_account_done(const struct trib_account *a,
			     const struct sync_result *result, void *context)
{
	struct sync_cli *c = context;
	const struct sync_run *run = c->run;

	if (!run->json && !result->skipped) {
		printf("%s/%s: %u new, %u delivered, %u rejected, %u deferred",
		       run->user_name, a->name, result->new_count,
		       result->delivered, result->rejected, result->deferred);
		if (result->remapped > 0)
			printf(", %u re-mapped", result->remapped);
		printf("\n");
		fflush(stdout);
	} else if (run->json) {
		json_object_array_add(c->jaccounts,
				      result_json(a->name, result));
	}
	for (unsigned int j = 0; j < result->error_count; j++)
		cli_error("%s", result->errors[j]);
	if (result->stopped)
		c->stopped_shown = true;
}

static void cli_user_done(const struct user_sync_result *result, void *context)
{
	struct sync_cli *c = context;

	c->done = true;
	c->us = NULL;
	c->status = result->status;
	c->opened = result->opened;
	c->stopped = result->stopped;
	c->matched = result->matched;
	c->error = result->error != NULL ? trib_strdup(result->error) : NULL;
	trib_loop_break(c->run->env.loop);
}

/* SIGINT, SIGTERM: stop soon, committing what is done. */
static void cli_signal(evutil_socket_t sig, short what, void *context)
{
	struct sync_cli *c = context;

	(void)sig;
	(void)what;
	if (c->us != NULL)
		user_sync_stop(c->us);
}

/* Run the user's pass on the loop until it is over; stops on SIGINT and
 * SIGTERM. */
static void sync_user(struct sync_run *run, const struct trib_trace_keys *keys,
		      struct sync_cli *c)
{
	static const int signals[] = { SIGINT, SIGTERM };
	struct event_base *base = trib_loop_base(run->env.loop);
	struct event *sig_ev[TRIB_N_ELEMENTS(signals)];
	struct user_sync_settings set;
	struct progress_bar bar;

	memset(&set, 0, sizeof(set));
	set.user = run->user_name;
	set.accounts = &run->list;
	set.only_account = run->account;
	set.globals = &run->env.globals;
	set.global = &run->env.global;
	set.keys = keys;
	set.lmtp_sessions = run->lmtp_sessions;
	set.logger = &run->env.logger;
	if (!run->json && !run->options.verbose && progress_bar_wanted()) {
		progress_bar_init(&bar, stderr, run->user_name);
		set.progress = progress_bar_update;
		set.progress_context = &bar;
	}
	set.account_done = cli_account_done;
	set.context = c;

	for (unsigned int i = 0; i < TRIB_N_ELEMENTS(signals); i++) {
		sig_ev[i] = evsignal_new(base, signals[i], cli_signal, c);
		evsignal_add(sig_ev[i], NULL);
	}
	c->us = user_sync_start(run->env.loop, &set, cli_user_done, c);
	while (!c->done)
		trib_loop_run(run->env.loop);
	for (unsigned int i = 0; i < TRIB_N_ELEMENTS(signals); i++)
		event_free(sig_ev[i]);
}

int cmd_sync(int argc, char **argv)
{
	struct sync_run run;
	struct sync_cli c;
	struct trib_trace_keys *keys = NULL;
	enum sync_status status = SYNC_OK;
	json_object *root = NULL;
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
	memset(&c, 0, sizeof(c));
	c.run = &run;
	if (run.json) {
		root = json_object_new_object();
		c.jaccounts = json_object_new_array();
	}
	sync_user(&run, keys, &c);
	trib_trace_keys_destroy(&keys);
	if (!c.opened) {
		/* the state could not be opened (locked): nothing was done */
		cli_error("%s", c.error);
		free(c.error);
		json_object_put(c.jaccounts);
		json_object_put(root);
		sync_run_free(&run);
		return CLI_EXIT_TEMPFAIL;
	}
	status = worse(status, c.status);
	if (c.stopped && !c.stopped_shown)
		cli_error("%s: stopped", run.user_name);
	if (run.account != NULL && c.matched == 0 && !c.stopped) {
		cli_error("%s/%s: no such account (tributary accounts -u %s "
			  "lists them)",
			  run.user_name, run.account, run.user_name);
		status = worse(status, SYNC_CONFIG);
	}
	free(c.error);
	if (run.json) {
		json_object_object_add(root, "user",
				       json_object_new_string(run.user_name));
		json_object_object_add(root, "accounts", c.jaccounts);
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
