/* cmd-accounts.c: `tributary accounts` (what Dovecot says each user's
 * remote accounts are, presets expanded, secrets hidden) and `tributary
 * check-config` (every problem, one line each; non-zero exit on any). */

#include "cli.h"

#include "cli-env.h"

#include "account.h"
#include "alloc.h"
#include "doveconf.h"
#include "loop.h"
#include "userdb.h"

#include <getopt.h>
#include <json-c/json.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

struct user_result {
	char *name;
	bool found;
	struct trib_account_list list;
};

struct run {
	const char *user;
	bool all, json, check_only;
	struct cli_env_options options;
	struct cli_env env;

	struct user_result *users;
	unsigned int user_count, pending;
	char *fatal;
	bool done;
};

/* ---- a userdb reply as a settings layer ---- */

static void lookup_done(int result, const struct trib_userdb_user *user,
			const char *error, void *context);

struct lookup_ctx {
	struct run *run;
	unsigned int index;
};

static void start_lookup(struct run *run, unsigned int index)
{
	struct lookup_ctx *ctx = trib_calloc(1, sizeof(*ctx));

	ctx->run = run;
	ctx->index = index;
	run->pending++;
	trib_userdb_lookup(run->env.userdb, run->users[index].name, lookup_done,
			   ctx);
}

static void maybe_done(struct run *run)
{
	if (run->pending == 0) {
		run->done = true;
		trib_loop_break(run->env.loop);
	}
}

static void lookup_done(int result, const struct trib_userdb_user *user,
			const char *error, void *context)
{
	struct lookup_ctx *ctx = context;
	struct run *run = ctx->run;
	struct user_result *res = &run->users[ctx->index];

	free(ctx);
	run->pending--;
	if (result < 0) {
		if (run->fatal == NULL)
			run->fatal = trib_strdup(error);
	} else if (result > 0) {
		res->found = true;
		cli_accounts_from_userdb(user, res->name, &run->env.global,
					 &run->env.globals, &res->list);
	}
	maybe_done(run);
}

static void list_done(int result, const char *const *users, unsigned int count,
		      const char *error, void *context)
{
	struct run *run = context;

	run->pending--;
	if (result < 0) {
		run->fatal = trib_strdup_printf(
			"%s (a userdb that cannot list its users needs -u "
			"USER)",
			error);
		maybe_done(run);
		return;
	}
	run->users = trib_calloc(count + 1, sizeof(*run->users));
	run->user_count = count;
	for (unsigned int i = 0; i < count; i++)
		run->users[i].name = trib_strdup(users[i]);
	for (unsigned int i = 0; i < count; i++)
		start_lookup(run, i);
	maybe_done(run);
}

/* ---- output ---- */

static const char *deliver_str(const struct trib_account *a, char *buf,
			       size_t size)
{
	if (a->deliver_folder == NULL)
		return "INBOX";
	snprintf(buf, size, "+%s", a->deliver_folder);
	return buf;
}

static void print_list(char *const *items, unsigned int count)
{
	for (unsigned int i = 0; i < count; i++)
		printf("%s%s", i > 0 ? ", " : "", items[i]);
}

static void print_account_text(const struct trib_account *a)
{
	char buf[600];

	printf("  %-12s %-8s %s\n", a->name, a->provider->name, a->login);
	printf("      server   %s:%u (%s TLS%s)\n", a->host, a->port,
	       trib_tls_mode_name(a->tls),
	       a->tls_verify ? ", certificate verified"
			     : ", CERTIFICATE NOT VERIFIED");
	printf("      auth     %s (", trib_auth_method_name(a->auth));
	print_list(a->sasl, a->sasl_count);
	printf(")\n      folders  ");
	print_list(a->folders, a->folder_count);
	printf(" -> %s; remote mail %s\n", deliver_str(a, buf, sizeof(buf)),
	       a->delete_remote ? "DELETED after delivery" : "kept");
	printf("      schedule poll every %us%s, at most %u connections\n",
	       a->poll_interval_secs, a->idle ? ", IDLE" : "",
	       a->max_connections);
	if (a->auth == TRIB_AUTH_OAUTH2)
		printf("      oauth    client %s%s, token %s\n",
		       a->oauth.client_id,
		       a->oauth.client_secret_set ||
				       a->oauth.client_secret_file != NULL
			       ? " (secret: hidden)"
			       : "",
		       a->oauth.token_url);
}

static void print_text(struct run *run)
{
	for (unsigned int i = 0; i < run->user_count; i++) {
		struct user_result *u = &run->users[i];

		if (!u->found) {
			printf("%s: not found in the userdb\n", u->name);
			continue;
		}
		if (u->list.count == 0 && u->list.error_count == 0) {
			printf("%s: no accounts\n", u->name);
			continue;
		}
		printf("%s\n", u->name);
		for (unsigned int j = 0; j < u->list.count; j++)
			print_account_text(u->list.accounts[j]);
	}
}

static void add_str(json_object *obj, const char *key, const char *value)
{
	json_object_object_add(
		obj, key, value != NULL ? json_object_new_string(value) : NULL);
}

static json_object *account_json(const struct trib_account *a)
{
	json_object *obj = json_object_new_object(), *oauth;
	char buf[600];

	add_str(obj, "name", a->name);
	add_str(obj, "provider", a->provider->name);
	add_str(obj, "login", a->login);
	add_str(obj, "host", a->host);
	json_object_object_add(obj, "port", json_object_new_int((int)a->port));
	add_str(obj, "tls", trib_tls_mode_name(a->tls));
	json_object_object_add(obj, "tls_verify",
			       json_object_new_boolean(a->tls_verify));
	add_str(obj, "ca_file", a->ca_file);
	add_str(obj, "auth", trib_auth_method_name(a->auth));
	add_str(obj, "password_file", a->password_file);
	json_object_object_add(obj, "sasl",
			       cli_json_strings(a->sasl, a->sasl_count));
	json_object_object_add(obj, "folders",
			       cli_json_strings(a->folders, a->folder_count));
	add_str(obj, "deliver", deliver_str(a, buf, sizeof(buf)));
	add_str(obj, "remote", a->delete_remote ? "delete" : "keep");
	json_object_object_add(obj, "poll_interval",
			       json_object_new_int((int)a->poll_interval_secs));
	json_object_object_add(obj, "idle", json_object_new_boolean(a->idle));
	json_object_object_add(obj, "max_connections",
			       json_object_new_int((int)a->max_connections));
	if (a->auth == TRIB_AUTH_OAUTH2) {
		oauth = json_object_new_object();
		add_str(oauth, "client_id", a->oauth.client_id);
		add_str(oauth, "client_secret",
			a->oauth.client_secret_set ? "hidden" : NULL);
		add_str(oauth, "client_secret_file",
			a->oauth.client_secret_file);
		add_str(oauth, "tenant", a->oauth.tenant);
		add_str(oauth, "authorize_url", a->oauth.authorize_url);
		add_str(oauth, "token_url", a->oauth.token_url);
		add_str(oauth, "device_url", a->oauth.device_url);
		add_str(oauth, "scope", a->oauth.scope);
		json_object_object_add(obj, "oauth", oauth);
	}
	return obj;
}

static void print_json(struct run *run)
{
	json_object *root = json_object_new_object();
	json_object *users = json_object_new_array();

	json_object_object_add(root, "errors",
			       cli_json_strings(run->env.globals.errors,
						run->env.globals.error_count));
	for (unsigned int i = 0; i < run->user_count; i++) {
		struct user_result *u = &run->users[i];
		json_object *ju = json_object_new_object();
		json_object *accts = json_object_new_array();

		add_str(ju, "user", u->name);
		json_object_object_add(ju, "found",
				       json_object_new_boolean(u->found));
		for (unsigned int j = 0; j < u->list.count; j++)
			json_object_array_add(
				accts, account_json(u->list.accounts[j]));
		json_object_object_add(ju, "accounts", accts);
		json_object_object_add(
			ju, "errors",
			cli_json_strings(u->list.errors, u->list.error_count));
		json_object_array_add(users, ju);
	}
	json_object_object_add(root, "users", users);
	printf("%s\n", json_object_to_json_string_ext(
			       root, JSON_C_TO_STRING_PRETTY |
					     JSON_C_TO_STRING_SPACED));
	json_object_put(root);
}

/* One line per problem on stderr; returns how many. */
static unsigned int print_problems(struct run *run)
{
	unsigned int n = 0;

	for (unsigned int i = 0; i < run->env.globals.error_count; i++, n++)
		cli_error("%s", run->env.globals.errors[i]);
	for (unsigned int i = 0; i < run->user_count; i++) {
		struct user_result *u = &run->users[i];

		if (!u->found && run->user != NULL) {
			cli_error("%s: user not found in the userdb", u->name);
			n++;
		}
		for (unsigned int j = 0; j < u->list.error_count; j++, n++)
			cli_error("%s", u->list.errors[j]);
	}
	return n;
}

/* ---- command line ---- */

static void usage(FILE *out, bool check_only)
{
	fprintf(out,
		"usage: tributary %s [-c CONFIG] [-u USER | -A]%s\n"
		"\n"
		"%s"
		"\n"
		"  -c, --config FILE       Dovecot's config (default: its "
		"own)\n"
		"  -u, --user USER         one user\n"
		"  -A, --all               every user the userdb lists "
		"(default)\n"
		"%s"
		"      --userdb-socket P   default "
		"<base_dir>/tributary-userdb\n"
		"      --doveconf PATH     the doveconf binary\n",
		check_only ? "check-config" : "accounts",
		check_only ? "" : " [--json]",
		check_only
			? "Check the global settings and every user's "
			  "accounts; "
			  "print one line\nper problem and exit 78 if there is "
			  "any.\n"
			: "List each user's remote accounts as Dovecot's "
			  "settings give them,\nwith the provider presets "
			  "expanded and secrets hidden.\n",
		check_only ? "" : "      --json              as JSON\n");
}

static void run_free(struct run *run)
{
	for (unsigned int i = 0; i < run->user_count; i++) {
		free(run->users[i].name);
		trib_account_list_free(&run->users[i].list);
	}
	free(run->users);
	cli_env_close(&run->env);
	free(run->fatal);
}

static int parse_args(struct run *run, int argc, char **argv)
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
			if (run->check_only)
				goto bad;
			run->json = true;
			break;
		case 's':
			run->options.socket = optarg;
			break;
		case 'd':
			run->options.doveconf_bin = optarg;
			break;
		case 'h':
			usage(stdout, run->check_only);
			return 1;
		default:
			goto bad;
		}
	}
	if (optind != argc || (run->user != NULL && run->all))
		goto bad;
	if (run->user == NULL)
		run->all = true;
	return 0;
bad:
	usage(stderr, run->check_only);
	return -1;
}

static int run_command(int argc, char **argv, bool check_only)
{
	struct run run;
	unsigned int problems;
	int ret;

	memset(&run, 0, sizeof(run));
	run.check_only = check_only;
	ret = parse_args(&run, argc, argv);
	if (ret != 0)
		return ret > 0 ? CLI_EXIT_OK : CLI_EXIT_USAGE;

	ret = cli_env_load(&run.env, &run.options);
	if (ret == CLI_EXIT_OK)
		ret = cli_env_connect(&run.env, &run.options);
	if (ret != CLI_EXIT_OK) {
		run_free(&run);
		return ret;
	}
	if (run.all) {
		run.pending = 1;
		trib_userdb_list(run.env.userdb, list_done, &run);
	} else {
		run.users = trib_calloc(1, sizeof(*run.users));
		run.users[0].name = trib_strdup(run.user);
		run.user_count = 1;
		start_lookup(&run, 0);
	}
	while (!run.done)
		trib_loop_run(run.env.loop);

	if (run.fatal != NULL) {
		cli_error("%s", run.fatal);
		run_free(&run);
		return CLI_EXIT_TEMPFAIL;
	}
	if (run.json)
		print_json(&run);
	else if (!check_only)
		print_text(&run);
	problems = print_problems(&run);
	if (check_only && problems == 0)
		printf("tributary: configuration ok (%u user%s checked)\n",
		       run.user_count, run.user_count == 1 ? "" : "s");
	run_free(&run);
	return check_only && problems > 0 ? CLI_EXIT_CONFIG : CLI_EXIT_OK;
}

int cmd_accounts(int argc, char **argv)
{
	return run_command(argc, argv, false);
}

int cmd_check_config(int argc, char **argv)
{
	return run_command(argc, argv, true);
}
