/* cmd-status.c: `tributary status`: what each remote account of a user
 * (-u, its accounts as the userdb gives them) or of every user with a
 * state directory (-A, from the files alone) did last, from the status
 * file `tributary sync` writes (status.h) and the reauthorization records
 * (incident.h). Takes no lock: a running sync is never waited for. */

#include "cli.h"

#include "cli-env.h"

#include "account.h"
#include "alloc.h"
#include "incident.h"
#include "settings.h"
#include "state.h"
#include "status.h"

#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <getopt.h>
#include <json-c/json.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>

#define REAUTH_PREFIX "reauth-"

struct status_run {
	const char *user;
	bool all, json;
	struct cli_env_options options;
	struct cli_env env;
	time_t now;
	int exit_code;
	json_object *jusers;
};

/* One account as shown. */
struct shown {
	const char *user, *account;
	/* The status file's entry; NULL: never synced, or unknown. */
	const struct trib_status_account *entry;
	/* The status file could not be read. */
	bool unknown;
	/* Its reauthorization record, or NULL. */
	struct incident *incident;
};

/* The first of 75, 78, 65 that happened wins. */
static void run_fail(struct status_run *run, int code)
{
	static const int order[] = { CLI_EXIT_TEMPFAIL, CLI_EXIT_CONFIG,
				     CLI_EXIT_DATAERR };

	for (unsigned int i = 0; i < TRIB_N_ELEMENTS(order); i++) {
		if (run->exit_code == order[i])
			return;
		if (code == order[i]) {
			run->exit_code = code;
			return;
		}
	}
}

/* ---- what to show ---- */

static const char *shown_state(const struct shown *s)
{
	if (s->incident != NULL)
		return "reauthorization-required";
	if (s->unknown)
		return "unknown";
	if (s->entry == NULL)
		return "new";
	/* The record is gone: `tributary authorize` stored a new token. */
	if (s->entry->state == TRIB_ACCOUNT_STATE_REAUTH)
		return "authorized";
	return trib_account_state_name(s->entry->state);
}

static char *fix_command(const struct shown *s)
{
	return trib_strdup_printf("tributary authorize -u %s %s", s->user,
				  s->account);
}

/* "2026-11-27 21:00", local time */
static const char *time_str(int64_t t, char *buf, size_t size)
{
	time_t tt = (time_t)t;
	struct tm tm;

	if (localtime_r(&tt, &tm) == NULL ||
	    strftime(buf, size, "%Y-%m-%d %H:%M", &tm) == 0)
		snprintf(buf, size, "@%lld", (long long)t);
	return buf;
}

/* "3 min ago" */
static const char *ago_str(time_t now, int64_t t, char *buf, size_t size)
{
	int64_t d = (int64_t)now - t;

	if (d < -60)
		snprintf(buf, size, "in the future: check the clock");
	else if (d < 60)
		snprintf(buf, size, "just now");
	else if (d < 3600)
		snprintf(buf, size, "%lld min ago", (long long)(d / 60));
	else if (d < 48 * 3600)
		snprintf(buf, size, "%lld h ago", (long long)(d / 3600));
	else
		snprintf(buf, size, "%lld days ago", (long long)(d / 86400));
	return buf;
}

static void print_last_pass(const struct status_run *run,
			    const struct trib_status_account *e)
{
	char when[64], ago[64];

	printf("last pass %s (%s): %u new, %u delivered, %u rejected, "
	       "%u deferred",
	       time_str(e->last_attempt, when, sizeof(when)),
	       ago_str(run->now, e->last_attempt, ago, sizeof(ago)),
	       e->new_count, e->delivered, e->rejected, e->deferred);
}

static void print_text(const struct status_run *run, const struct shown *s)
{
	const struct trib_status_account *e = s->entry;
	const char *state = shown_state(s);
	bool errors = false;
	char when[64], *fix;

	printf("%s/%s  %s  ", s->user, s->account, state);
	if (s->incident != NULL) {
		fix = fix_command(s);
		printf("since %s: %s; run `%s`\n",
		       time_str(s->incident->since, when, sizeof(when)),
		       s->incident->reason, fix);
		free(fix);
		return;
	}
	if (s->unknown) {
		printf("(the status file cannot be read)\n");
		return;
	}
	if (e == NULL || e->last_attempt == 0) {
		printf("never synced\n");
		return;
	}
	switch (e->state) {
	case TRIB_ACCOUNT_STATE_REAUTH:
		printf("authorized again, waiting for the next pass\n");
		return;
	case TRIB_ACCOUNT_STATE_DEFERRED:
	case TRIB_ACCOUNT_STATE_FAILING:
		print_last_pass(run, e);
		printf("; %u pass%s in a row not ok, last success %s\n",
		       e->failures, e->failures == 1 ? "" : "es",
		       e->last_success == 0
			       ? "never"
			       : time_str(e->last_success, when, sizeof(when)));
		errors = true;
		break;
	default:
		print_last_pass(run, e);
		printf("\n");
		errors = true;
		break;
	}
	for (unsigned int i = 0; errors && i < e->error_count; i++)
		printf("    %s\n", e->errors[i]);
}

static void add_time(json_object *obj, const char *key, int64_t t)
{
	json_object_object_add(obj, key,
			       t != 0 ? json_object_new_int64(t) : NULL);
}

static void add_str(json_object *obj, const char *key, const char *value)
{
	json_object_object_add(
		obj, key, value != NULL ? json_object_new_string(value) : NULL);
}

static json_object *shown_json(const struct shown *s)
{
	static const struct trib_status_account none;
	const struct trib_status_account *e =
		s->entry != NULL ? s->entry : &none;
	json_object *obj = json_object_new_object();
	char *fix = s->incident != NULL ? fix_command(s) : NULL;

	add_str(obj, "account", s->account);
	add_str(obj, "state", shown_state(s));
	add_time(obj, "since", s->incident != NULL ? s->incident->since : 0);
	add_str(obj, "reason",
		s->incident != NULL ? s->incident->reason : NULL);
	add_str(obj, "fix", fix);
	free(fix);
	add_time(obj, "last_attempt", e->last_attempt);
	add_time(obj, "last_success", e->last_success);
	add_time(obj, "token_not_before", e->token_not_before);
	json_object_object_add(obj, "new", json_object_new_int64(e->new_count));
	json_object_object_add(obj, "delivered",
			       json_object_new_int64(e->delivered));
	json_object_object_add(obj, "rejected",
			       json_object_new_int64(e->rejected));
	json_object_object_add(obj, "deferred",
			       json_object_new_int64(e->deferred));
	json_object_object_add(obj, "delivered_total",
			       json_object_new_uint64(e->delivered_total));
	json_object_object_add(obj, "failures",
			       json_object_new_int64(e->failures));
	json_object_object_add(obj, "errors",
			       cli_json_strings(e->errors, e->error_count));
	return obj;
}

/* ---- one user ---- */

struct user_view {
	const char *name;
	char *dir;
	struct trib_status *status; /* NULL: unknown */
	char **errors;		    /* problems found, for the JSON */
	unsigned int error_count;
	unsigned int shown; /* accounts shown */
	json_object *jaccounts;
};

static void view_error(struct status_run *run, struct user_view *v, int code,
		       const char *error)
{
	cli_error("%s", error);
	run_fail(run, code);
	v->errors = trib_realloc(v->errors,
				 (v->error_count + 1) * sizeof(*v->errors));
	v->errors[v->error_count++] = trib_strdup(error);
}

static void view_load(struct status_run *run, struct user_view *v)
{
	char *path, *error = NULL;
	bool damaged = false;

	v->dir = trib_strdup_printf("%s/%s", run->env.globals.state_dir,
				    v->name);
	path = trib_status_path(run->env.globals.state_dir, v->name);
	if (path == NULL) {
		error = trib_strdup_printf(
			"%s: the user name is not a safe directory name: no "
			"state (letters, digits and ._@+=- only, not starting "
			"with '.' or '-')",
			v->name);
		view_error(run, v, CLI_EXIT_TEMPFAIL, error);
	} else if (trib_status_load(path, v->name, &v->status, &damaged,
				    &error) < 0) {
		view_error(run, v,
			   damaged ? CLI_EXIT_DATAERR : CLI_EXIT_TEMPFAIL,
			   error);
	}
	free(error);
	free(path);
	if (run->json)
		v->jaccounts = json_object_new_array();
}

static void view_account(struct status_run *run, struct user_view *v,
			 const char *account)
{
	struct shown s;
	char *error = NULL;

	memset(&s, 0, sizeof(s));
	v->shown++;
	s.user = v->name;
	s.account = account;
	s.unknown = v->status == NULL;
	if (v->status != NULL)
		s.entry = trib_status_find(v->status, account);
	if (trib_state_valid_user(v->name) &&
	    incident_read(v->dir, account, &s.incident, &error) < 0) {
		view_error(run, v, CLI_EXIT_DATAERR, error);
		free(error);
	}
	if (run->json)
		json_object_array_add(v->jaccounts, shown_json(&s));
	else
		print_text(run, &s);
	incident_free(&s.incident);
}

static void view_finish(struct status_run *run, struct user_view *v)
{
	json_object *ju;

	if (run->json) {
		ju = json_object_new_object();
		add_str(ju, "user", v->name);
		json_object_object_add(ju, "accounts", v->jaccounts);
		json_object_object_add(
			ju, "errors",
			cli_json_strings(v->errors, v->error_count));
		json_object_array_add(run->jusers, ju);
	} else if (v->shown == 0) {
		printf("%s  %s\n", v->name,
		       run->all ? "(nothing recorded)" : "(no accounts)");
	}
	for (unsigned int i = 0; i < v->error_count; i++)
		free(v->errors[i]);
	free(v->errors);
	free(v->dir);
	trib_status_free(&v->status);
}

/* -u: the user's configured accounts, as sync sees them. */
static int show_user(struct status_run *run)
{
	struct trib_account_list list;
	struct user_view v;
	char *name = NULL;
	int ret;

	memset(&list, 0, sizeof(list));
	ret = cli_env_connect(&run->env, &run->options);
	if (ret == CLI_EXIT_OK)
		ret = cli_env_lookup_user(&run->env, run->user, &name, &list);
	if (ret != CLI_EXIT_OK)
		return ret;
	memset(&v, 0, sizeof(v));
	v.name = name;
	for (unsigned int i = 0; i < list.error_count; i++)
		view_error(run, &v, CLI_EXIT_CONFIG, list.errors[i]);
	view_load(run, &v);
	for (unsigned int i = 0; i < list.count; i++)
		view_account(run, &v, list.accounts[i]->name);
	view_finish(run, &v);
	trib_account_list_free(&list);
	free(name);
	return CLI_EXIT_OK;
}

/* Add name to the sorted, unique list. */
static void names_add(char ***names, unsigned int *count, const char *name)
{
	unsigned int i = 0;

	while (i < *count && strcmp((*names)[i], name) < 0)
		i++;
	if (i < *count && strcmp((*names)[i], name) == 0)
		return;
	*names = trib_realloc(*names, (*count + 1) * sizeof(**names));
	memmove(*names + i + 1, *names + i, (*count - i) * sizeof(**names));
	(*names)[i] = trib_strdup(name);
	(*count)++;
}

static void names_free(char **names, unsigned int count)
{
	for (unsigned int i = 0; i < count; i++)
		free(names[i]);
	free(names);
}

/* The accounts with a reauthorization record in the user's directory
 * but none in the status file (a pass that stopped before saving). */
static void reauth_accounts(struct user_view *v, char ***names,
			    unsigned int *count)
{
	size_t len = strlen(REAUTH_PREFIX);
	struct dirent *d;
	DIR *dir = opendir(v->dir);

	if (dir == NULL)
		return;
	while ((d = readdir(dir)) != NULL) {
		if (strncmp(d->d_name, REAUTH_PREFIX, len) == 0 &&
		    trib_settings_valid_account_name(d->d_name + len) &&
		    (v->status == NULL ||
		     trib_status_find(v->status, d->d_name + len) == NULL))
			names_add(names, count, d->d_name + len);
	}
	closedir(dir);
}

/* -A: every user with a directory under the state dir, from the files
 * alone (no userdb lookup). */
static int show_all(struct status_run *run)
{
	const char *state_dir = run->env.globals.state_dir;
	char **users = NULL, **extra;
	unsigned int user_count = 0, extra_count;
	struct user_view v;
	struct dirent *d;
	struct stat st;
	DIR *dir;

	dir = opendir(state_dir);
	if (dir == NULL && errno == ENOENT)
		return CLI_EXIT_OK; /* nothing synced yet */
	if (dir == NULL) {
		cli_error("state directory %s: cannot read: %s", state_dir,
			  strerror(errno));
		return CLI_EXIT_TEMPFAIL;
	}
	while ((d = readdir(dir)) != NULL) {
		if (trib_state_valid_user(d->d_name) &&
		    fstatat(dirfd(dir), d->d_name, &st, AT_SYMLINK_NOFOLLOW) ==
			    0 &&
		    S_ISDIR(st.st_mode))
			names_add(&users, &user_count, d->d_name);
	}
	closedir(dir);
	for (unsigned int i = 0; i < user_count; i++) {
		memset(&v, 0, sizeof(v));
		v.name = users[i];
		view_load(run, &v);
		if (v.status != NULL) {
			for (unsigned int j = 0; j < v.status->count; j++)
				view_account(run, &v,
					     v.status->accounts[j]->name);
		}
		extra = NULL;
		extra_count = 0;
		reauth_accounts(&v, &extra, &extra_count);
		for (unsigned int j = 0; j < extra_count; j++)
			view_account(run, &v, extra[j]);
		names_free(extra, extra_count);
		view_finish(run, &v);
	}
	names_free(users, user_count);
	return CLI_EXIT_OK;
}

/* ---- command line ---- */

static void status_usage(FILE *out)
{
	fprintf(out,
		"usage: tributary status [-c CONFIG] (-u USER | -A) [--json]\n"
		"\n"
		"What each remote account did last: ok, deferred, failing, "
		"or\nreauthorization-required (with the command that fixes "
		"it).\n"
		"\n"
		"  -c, --config FILE       Dovecot's config (default: its "
		"own)\n"
		"  -u, --user USER         one user's configured accounts "
		"(asks the userdb)\n"
		"  -A, --all               every user with a state directory "
		"(no userdb)\n"
		"      --json              as JSON\n"
		"      --userdb-socket P   default "
		"<base_dir>/tributary-userdb\n"
		"      --doveconf PATH     the doveconf binary\n"
		"\nExit: 0 everything read (whatever the accounts' states), "
		"65 a damaged\nstatus file, 75 the userdb or a state "
		"directory unreadable, 78\nconfiguration.\n");
}

static int status_parse_args(struct status_run *run, int argc, char **argv)
{
	static const struct option options[] = {
		{ "config", required_argument, NULL, 'c' },
		{ "user", required_argument, NULL, 'u' },
		{ "all", no_argument, NULL, 'A' },
		{ "json", no_argument, NULL, 'j' },
		{ "userdb-socket", required_argument, NULL, 's' },
		{ "doveconf", required_argument, NULL, 'd' },
		{ "help", no_argument, NULL, 'h' },
		{ NULL, 0, NULL, 0 },
	};
	int c;

	optind = 1;
	while ((c = getopt_long(argc, argv, "c:u:A", options, NULL)) != -1) {
		switch (c) {
		case 'c':
			run->options.config = optarg;
			break;
		case 'u':
			run->user = optarg;
			break;
		case 'A':
			run->all = true;
			break;
		case 'j':
			run->json = true;
			break;
		case 's':
			run->options.socket = optarg;
			break;
		case 'd':
			run->options.doveconf_bin = optarg;
			break;
		case 'h':
			status_usage(stdout);
			return 1;
		default:
			goto bad;
		}
	}
	if (optind != argc || (run->user == NULL) == !run->all)
		goto bad;
	return 0;
bad:
	status_usage(stderr);
	return -1;
}

int cmd_status(int argc, char **argv)
{
	struct status_run run;
	json_object *root;
	int ret;

	memset(&run, 0, sizeof(run));
	ret = status_parse_args(&run, argc, argv);
	if (ret != 0)
		return ret > 0 ? CLI_EXIT_OK : CLI_EXIT_USAGE;
	ret = cli_env_load(&run.env, &run.options);
	if (ret != CLI_EXIT_OK) {
		cli_env_close(&run.env);
		return ret;
	}
	for (unsigned int i = 0; i < run.env.globals.error_count; i++) {
		cli_error("%s", run.env.globals.errors[i]);
		run_fail(&run, CLI_EXIT_CONFIG);
	}
	run.now = time(NULL);
	if (run.json)
		run.jusers = json_object_new_array();
	ret = run.all ? show_all(&run) : show_user(&run);
	if (ret == CLI_EXIT_OK && run.json) {
		root = json_object_new_object();
		json_object_object_add(root, "users", run.jusers);
		json_object_object_add(
			root, "errors",
			cli_json_strings(run.env.globals.errors,
					 run.env.globals.error_count));
		printf("%s\n",
		       json_object_to_json_string_ext(
			       root, JSON_C_TO_STRING_PRETTY |
					     JSON_C_TO_STRING_SPACED |
					     JSON_C_TO_STRING_NOSLASHESCAPE));
		json_object_put(root);
	} else {
		json_object_put(run.jusers);
	}
	cli_env_close(&run.env);
	if (ret != CLI_EXIT_OK)
		return ret;
	return run.exit_code;
}
