/* cmd-authorize.c: `tributary authorize`: sign a user's remote account in
 * (OAuth 2.0 device code, loopback redirect or pasted redirect, each with
 * the engine of oauth.h; Microsoft 365 app-only; or an app password) and
 * keep what it yields in the user's vault (vault.h).
 *
 * The user's state is opened (its lock is the vault's) before the flow
 * starts, so a key or vault problem is found before anyone signs in and
 * no sync of this user rewrites the vault meanwhile. Secrets never come
 * from argv and are never printed: the authorization URL holds only the
 * PKCE challenge and the state, the device flow's user code is meant to
 * be shown. */

#include "cli.h"

#include "authorize.h"

#include "authorize-loopback.h"
#include "cli-env.h"
#include "incident.h"

#include "account.h"
#include "alloc.h"
#include "http.h"
#include "loop.h"
#include "oauth.h"
#include "state.h"
#include "userdb.h"
#include "vault.h"

#include <getopt.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

static const char *const flow_names[] = {
	[AUTH_FLOW_DEFAULT] = "default",
	[AUTH_FLOW_DEVICE] = "device",
	[AUTH_FLOW_LOOPBACK] = "loopback",
	[AUTH_FLOW_PASTE] = "paste",
	[AUTH_FLOW_CLIENT_CREDENTIALS] = "client-credentials",
	[AUTH_FLOW_APP_PASSWORD] = "app-password",
};

static void authorize_usage(FILE *out)
{
	fprintf(out,
		"usage: tributary authorize [-c CONFIG] -u USER ACCOUNT\n"
		"           [--flow device|loopback|paste|client-credentials|"
		"app-password]\n"
		"           [--no-browser] [--secret-file FILE]\n"
		"\n"
		"Sign the user's remote ACCOUNT in and keep the tokens (or the "
		"app\npassword) in the user's vault.\n"
		"\n"
		"  -c, --config FILE       Dovecot's config (default: its "
		"own)\n"
		"  -u, --user USER         the local user\n"
		"      --flow FLOW         default: device for Microsoft, "
		"loopback for\n"
		"                          Google (paste without a terminal or "
		"with\n"
		"                          --no-browser), paste for Yahoo, "
		"app-password\n"
		"                          for auth app_password\n"
		"      --no-browser        no browser on this host: paste "
		"instead of\n"
		"                          loopback\n"
		"      --secret-file FILE  app-password: read it from FILE's "
		"first line\n"
		"      --userdb-socket P   default "
		"<base_dir>/tributary-userdb\n"
		"      --doveconf PATH     the doveconf binary\n"
		"  -v, --verbose           log the details\n"
		"\nExit: 0 stored, 64 usage, 75 try again later, 77 refused or "
		"denied,\n78 configuration.\n");
}

static int authorize_parse_args(struct auth_run *run, int argc, char **argv)
{
	static const struct option options[] = {
		{ "config", required_argument, NULL, 'c' },
		{ "user", required_argument, NULL, 'u' },
		{ "flow", required_argument, NULL, 'f' },
		{ "no-browser", no_argument, NULL, 'n' },
		{ "secret-file", required_argument, NULL, 'S' },
		{ "userdb-socket", required_argument, NULL, 's' },
		{ "doveconf", required_argument, NULL, 'd' },
		{ "verbose", no_argument, NULL, 'v' },
		{ "help", no_argument, NULL, 'h' },
		{ NULL, 0, NULL, 0 },
	};
	bool known;
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
		case 'f':
			known = false;
			for (size_t i = 1; i < TRIB_N_ELEMENTS(flow_names);
			     i++) {
				if (strcmp(optarg, flow_names[i]) == 0) {
					run->flow = (enum auth_flow)i;
					known = true;
				}
			}
			if (!known) {
				cli_error("--flow: unknown flow '%s'", optarg);
				goto bad;
			}
			break;
		case 'n':
			run->no_browser = true;
			break;
		case 'S':
			run->secret_file = optarg;
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
			authorize_usage(stdout);
			return 1;
		default:
			goto bad;
		}
	}
	if (optind < argc)
		run->account_name = argv[optind++];
	if (optind != argc || run->user == NULL || run->account_name == NULL)
		goto bad;
	return 0;
bad:
	authorize_usage(stderr);
	return -1;
}

static void auth_run_free(struct auth_run *run)
{
	trib_oauth_device_poll_abort(&run->poll);
	trib_oauth_request_abort(&run->request);
	auth_loopback_destroy(&run->loopback);
	trib_http_client_destroy(&run->http);
	trib_oauth_token_free(&run->token);
	trib_secret_free(&run->verifier);
	trib_secret_free(&run->client_secret);
	free(run->redirect_uri);
	free(run->name);
	trib_account_list_free(&run->list);
	free(run->user_name);
	cli_env_close(&run->env);
}

/* ---- choosing the flow ---- */

static bool provider_is(const struct trib_account *a, const char *name)
{
	return a->provider != NULL && strcmp(a->provider->name, name) == 0;
}

static enum auth_flow default_flow(const struct auth_run *run)
{
	const struct trib_account *a = run->account;
	bool browser = !run->no_browser && isatty(STDIN_FILENO);

	if (a->auth == TRIB_AUTH_APP_PASSWORD)
		return AUTH_FLOW_APP_PASSWORD;
	if (provider_is(a, "outlook") && a->oauth.device_url != NULL)
		return AUTH_FLOW_DEVICE;
	if (provider_is(a, "yahoo"))
		return AUTH_FLOW_PASTE;
	return browser ? AUTH_FLOW_LOOPBACK : AUTH_FLOW_PASTE;
}

/* CLI_EXIT_OK when flow fits the account; else the exit code with the
 * error printed (a flow asked for that the account cannot use is a usage
 * error). */
static int flow_check(const struct auth_run *run, enum auth_flow flow)
{
	int misfit = run->flow != AUTH_FLOW_DEFAULT ? CLI_EXIT_USAGE
						    : CLI_EXIT_CONFIG;

	const struct trib_account *a = run->account;
	const char *name = run->name;

	if (a->auth == TRIB_AUTH_PASSWORD_FILE) {
		cli_error("%s: auth password_file: the password is read from "
			  "%s, nothing to authorize",
			  name, a->password_file);
		return CLI_EXIT_CONFIG;
	}
	if (flow == AUTH_FLOW_APP_PASSWORD)
		return CLI_EXIT_OK;
	if (a->auth != TRIB_AUTH_OAUTH2) {
		cli_error("%s: auth %s: --flow %s needs auth oauth2 (or use "
			  "--flow app-password)",
			  name, trib_auth_method_name(a->auth),
			  flow_names[flow]);
		return misfit;
	}
	if (flow == AUTH_FLOW_DEVICE && a->oauth.device_url == NULL) {
		if (provider_is(a, "gmail"))
			cli_error("%s: Google's device flow allows no Gmail "
				  "scope: use --flow loopback (or paste)",
				  name);
		else
			cli_error("%s: the %s provider has no device "
				  "authorization endpoint (oauth_device_url): "
				  "use --flow loopback or paste",
				  name, a->provider->name);
		return misfit;
	}
	if (flow == AUTH_FLOW_CLIENT_CREDENTIALS &&
	    !provider_is(a, "outlook")) {
		cli_error("%s: client-credentials is Microsoft 365 app-only "
			  "access (provider outlook)",
			  name);
		return misfit;
	}
	return CLI_EXIT_OK;
}

/* ---- storing ---- */

static int vault_put(struct auth_run *run, struct trib_vault *vault,
		     enum trib_vault_kind kind, const char *secret,
		     int64_t expires_at)
{
	const char *error;

	if (trib_vault_set(vault, run->account->name, kind, secret, expires_at,
			   &error) != TRIB_VAULT_OK) {
		cli_error("%s: %s", run->name, error);
		return -1;
	}
	return 0;
}

/* Put the outcome into the vault and commit it. */
static int store(struct auth_run *run, struct trib_vault *vault,
		 enum auth_flow flow, const char *app_password)
{
	const struct trib_oauth_token *t = run->token;
	const char *name = run->account->name;
	const char *error;

	if (flow == AUTH_FLOW_APP_PASSWORD) {
		if (vault_put(run, vault, TRIB_VAULT_APP_PASSWORD, app_password,
			      0) < 0)
			return CLI_EXIT_DATAERR;
	} else {
		if (t->refresh_token != NULL &&
		    vault_put(run, vault, TRIB_VAULT_REFRESH_TOKEN,
			      t->refresh_token, 0) < 0)
			return CLI_EXIT_SOFTWARE;
		if (t->refresh_token == NULL &&
		    flow != AUTH_FLOW_CLIENT_CREDENTIALS)
			(void)trib_vault_delete(vault, name,
						TRIB_VAULT_REFRESH_TOKEN);
		if (vault_put(run, vault, TRIB_VAULT_ACCESS_TOKEN,
			      t->access_token, (int64_t)t->expires_at) < 0)
			return CLI_EXIT_SOFTWARE;
		(void)trib_vault_delete(vault, name, TRIB_VAULT_APP_PASSWORD);
	}
	if (trib_vault_commit(vault, &error) != TRIB_VAULT_OK) {
		cli_error("%s: %s", run->name, error);
		return CLI_EXIT_TEMPFAIL;
	}
	return CLI_EXIT_OK;
}

static void report_stored(struct auth_run *run, enum auth_flow flow)
{
	const struct trib_oauth_token *t = run->token;

	if (flow == AUTH_FLOW_APP_PASSWORD) {
		printf("%s: app password stored in the vault\n", run->name);
		return;
	}
	if (flow == AUTH_FLOW_CLIENT_CREDENTIALS) {
		printf("%s: app-only access works: access token for %lld s "
		       "cached in the vault\n",
		       run->name, t->expires_in);
		return;
	}
	printf("%s: authorized: %s stored in the vault (access token for "
	       "%lld s)\n",
	       run->name,
	       t->refresh_token != NULL
		       ? "refresh token"
		       : "access token only, no refresh token,",
	       t->expires_in);
}

/* A new grant is stored: the account's reauthorization incident, if
 * any, is over (incident.h). Failing to remove its record is only a
 * warning: the next sync sees another refresh token and removes it. */
static void end_incident(struct auth_run *run, struct trib_state *state)
{
	char *error;

	if (incident_remove(trib_state_path(state), run->account->name,
			    &error) < 0) {
		cli_error("warning: %s", error);
		free(error);
	}
}

/* ---- the command ---- */

static int setup_oauth(struct auth_run *run)
{
	const struct trib_account *a = run->account;
	struct trib_http_client_settings hset;
	char key[128];
	const char *value, *error;

	if (a->oauth.client_secret_file != NULL) {
		run->client_secret =
			cli_read_secret(a->oauth.client_secret_file, NULL);
		if (run->client_secret == NULL)
			return CLI_EXIT_CONFIG;
	} else if (a->oauth.client_secret_set) {
		snprintf(key, sizeof(key), "tributary_%s_client_secret",
			 a->provider->name);
		value = authorize_global_get(run, key);
		if (value == NULL) {
			cli_error("%s: %s is set for this user only: give it "
				  "in conf.d or as client_secret_file",
				  run->name, key);
			return CLI_EXIT_CONFIG;
		}
		run->client_secret = trib_strdup(value);
	}
	trib_oauth_settings_from_account(a, run->client_secret, &run->set);
	run->set.name = run->name;

	memset(&hset, 0, sizeof(hset));
	hset.name = run->name;
	hset.logger = &run->env.logger;
	run->http = trib_http_client_create(run->env.loop, &hset, &error);
	if (run->http == NULL) {
		cli_error("%s", error);
		return CLI_EXIT_SOFTWARE;
	}
	return CLI_EXIT_OK;
}

static int run_flow(struct auth_run *run, enum auth_flow flow,
		    char **app_password_r)
{
	int ret;

	if (flow == AUTH_FLOW_APP_PASSWORD) {
		*app_password_r =
			cli_read_secret(run->secret_file, "App password: ");
		return *app_password_r != NULL ? CLI_EXIT_OK : CLI_EXIT_USAGE;
	}
	ret = setup_oauth(run);
	if (ret != CLI_EXIT_OK)
		return ret;
	switch (flow) {
	case AUTH_FLOW_DEVICE:
		authorize_flow_device(run);
		break;
	case AUTH_FLOW_LOOPBACK:
		authorize_flow_loopback(run);
		break;
	case AUTH_FLOW_PASTE:
		authorize_flow_paste(run);
		break;
	case AUTH_FLOW_CLIENT_CREDENTIALS:
		authorize_flow_client_credentials(run);
		break;
	case AUTH_FLOW_DEFAULT:
	case AUTH_FLOW_APP_PASSWORD:
		return CLI_EXIT_SOFTWARE;
	}
	return run->exit_code;
}

static int find_account(struct auth_run *run)
{
	int ret;

	ret = cli_env_lookup_user(&run->env, run->user, &run->user_name,
				  &run->list);
	if (ret != CLI_EXIT_OK)
		return ret;
	for (unsigned int i = 0; i < run->list.count; i++) {
		if (strcmp(run->list.accounts[i]->name, run->account_name) == 0)
			run->account = run->list.accounts[i];
	}
	run->name =
		trib_strdup_printf("%s/%s", run->user_name, run->account_name);
	if (run->account != NULL)
		return CLI_EXIT_OK;
	/* a broken account is left out of the list: say why */
	for (unsigned int i = 0; i < run->list.error_count; i++)
		cli_error("%s", run->list.errors[i]);
	cli_error("%s: no such account (tributary accounts -u %s lists them)",
		  run->name, run->user_name);
	return CLI_EXIT_CONFIG;
}

static int authorize_account(struct auth_run *run)
{
	struct trib_vault_key *key = NULL;
	struct trib_state *state = NULL;
	struct trib_vault *vault = NULL;
	enum auth_flow flow;
	char *app_password = NULL;
	const char *error;
	int ret;

	flow = run->flow != AUTH_FLOW_DEFAULT ? run->flow : default_flow(run);
	ret = flow_check(run, flow);
	if (ret != CLI_EXIT_OK)
		return ret;
	if (trib_vault_key_load(run->env.globals.vault_key_file, &key,
				&error) != TRIB_VAULT_OK) {
		cli_error("%s (run `tributary init` first)", error);
		return CLI_EXIT_CONFIG;
	}
	if (trib_state_open(run->env.globals.state_dir, run->user_name, &state,
			    &error) < 0) {
		cli_error("%s: %s", run->user_name, error);
		trib_vault_key_destroy(&key);
		return CLI_EXIT_TEMPFAIL;
	}
	if (trib_vault_open(state, key, &vault, &error) != TRIB_VAULT_OK) {
		cli_error("%s", error);
		trib_state_close(&state);
		trib_vault_key_destroy(&key);
		return CLI_EXIT_CONFIG;
	}
	ret = run_flow(run, flow, &app_password);
	if (ret == CLI_EXIT_OK) {
		ret = store(run, vault, flow, app_password);
		if (ret == CLI_EXIT_OK) {
			report_stored(run, flow);
			end_incident(run, state);
		}
	}
	trib_secret_free(&app_password);
	trib_vault_close(&vault);
	trib_state_close(&state);
	trib_vault_key_destroy(&key);
	return ret;
}

int cmd_authorize(int argc, char **argv)
{
	struct auth_run run;
	int ret;

	memset(&run, 0, sizeof(run));
	ret = authorize_parse_args(&run, argc, argv);
	if (ret != 0)
		return ret > 0 ? CLI_EXIT_OK : CLI_EXIT_USAGE;
	ret = cli_env_load(&run.env, &run.options);
	for (unsigned int i = 0;
	     ret == CLI_EXIT_OK && i < run.env.globals.error_count; i++) {
		cli_error("%s", run.env.globals.errors[i]);
		if (i + 1 == run.env.globals.error_count)
			ret = CLI_EXIT_CONFIG;
	}
	if (ret == CLI_EXIT_OK)
		ret = cli_env_connect(&run.env, &run.options);
	if (ret == CLI_EXIT_OK)
		ret = find_account(&run);
	if (ret == CLI_EXIT_OK)
		ret = authorize_account(&run);
	auth_run_free(&run);
	return ret;
}
