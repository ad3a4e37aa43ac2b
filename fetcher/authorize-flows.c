/* authorize-flows.c: the sign-in flows of `tributary authorize` (see
 * authorize.h): device code (RFC 8628), the authorization code through a
 * loopback redirect or a pasted redirect URL (PKCE S256 and a checked
 * state), and Microsoft 365 app-only client credentials. Each ends in
 * token_done(), which sets run->token and the exit code. */

#include "cli.h"

#include "authorize.h"
#include "authorize-loopback.h"

#include "alloc.h"
#include "loop.h"

#include <event2/event.h>
#include <pwd.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

/* ---- the outcome ---- */

static int exit_for(const struct trib_oauth_result *result)
{
	switch (result->error_class) {
	case TRIB_OK:
		return CLI_EXIT_OK;
	case TRIB_ERR_TEMP:
	case TRIB_ERR_WAIT:
	case TRIB_ERR_CANCELED:
		return CLI_EXIT_TEMPFAIL;
	case TRIB_ERR_PERM:
		break;
	}
	if (result->reauthorize)
		return CLI_EXIT_NOPERM;
	/* a refused certificate is no configuration of ours to fix either,
	 * but the client id, secret, scope and URLs are */
	return CLI_EXIT_CONFIG;
}

static void flow_finish(struct auth_run *run, int exit_code)
{
	run->done = true;
	run->exit_code = exit_code;
	trib_loop_break(run->env.loop);
}

/* A token grant's answer: keep the token, or print why not. */
static void token_done(struct trib_oauth_result *result, void *context)
{
	struct auth_run *run = context;

	run->request = NULL;
	run->poll = NULL;
	if (result->warning != NULL)
		cli_error("%s: warning: %s", run->name, result->warning);
	if (result->error_class != TRIB_OK || result->token == NULL) {
		cli_error("%s: %s", run->name,
			  result->error != NULL ? result->error
						: "no token came back");
		flow_finish(run, result->error_class == TRIB_OK
					 ? CLI_EXIT_TEMPFAIL
					 : exit_for(result));
		return;
	}
	run->token = result->token;
	result->token = NULL;
	flow_finish(run, CLI_EXIT_OK);
}

static void run_loop(struct auth_run *run)
{
	while (!run->done)
		trib_loop_run(run->env.loop);
}

/* ---- device code (RFC 8628) ---- */

static void device_started(struct trib_oauth_result *result, void *context)
{
	struct auth_run *run = context;
	const struct trib_oauth_device_auth *d = result->device;

	run->request = NULL;
	if (result->error_class != TRIB_OK || d == NULL) {
		cli_error("%s: %s", run->name,
			  result->error != NULL ? result->error
						: "no device code came back");
		flow_finish(run, result->error_class == TRIB_OK
					 ? CLI_EXIT_TEMPFAIL
					 : exit_for(result));
		return;
	}
	printf("To sign %s in, open %s\nand enter the code %s\n", run->name,
	       d->verification_uri, d->user_code);
	if (d->verification_uri_complete != NULL)
		printf("(or open %s)\n", d->verification_uri_complete);
	printf("Waiting for the sign-in (the code is valid for %u minutes)"
	       "...\n",
	       (d->expires_in + 59) / 60);
	fflush(stdout);
	run->poll = trib_oauth_device_poll_start(run->http, &run->set, d,
						 token_done, run);
	if (run->poll == NULL)
		flow_finish(run, CLI_EXIT_SOFTWARE);
}

void authorize_flow_device(struct auth_run *run)
{
	run->request = trib_oauth_device_start(run->http, &run->set,
					       device_started, run);
	if (run->request == NULL) {
		flow_finish(run, CLI_EXIT_SOFTWARE);
		return;
	}
	run_loop(run);
}

/* ---- authorization code: loopback and paste ---- */

static char *authorize_url(struct auth_run *run, const char *state)
{
	char *challenge = NULL, *url;

	if (trib_oauth_pkce_make(&run->verifier, &challenge) < 0) {
		cli_error("the random generator failed");
		return NULL;
	}
	url = trib_oauth_authorize_url(&run->set, run->redirect_uri, state,
				       challenge, run->account->login,
				       run->account->oauth.authorize_params);
	free(challenge);
	return url;
}

static void exchange(struct auth_run *run, const char *code)
{
	run->request = trib_oauth_exchange_code(run->http, &run->set, code,
						run->redirect_uri,
						run->verifier, token_done, run);
	if (run->request == NULL)
		flow_finish(run, CLI_EXIT_SOFTWARE);
}

static int provider_error_exit(const char *error_code)
{
	if (error_code != NULL &&
	    (strcmp(error_code, "access_denied") == 0 ||
	     strcmp(error_code, "consent_required") == 0 ||
	     strcmp(error_code, "login_required") == 0 ||
	     strcmp(error_code, "interaction_required") == 0))
		return CLI_EXIT_NOPERM;
	return CLI_EXIT_CONFIG;
}

static void loopback_done(enum auth_loopback_status status, const char *code,
			  const char *error_code, const char *error,
			  void *context)
{
	struct auth_run *run = context;

	switch (status) {
	case AUTH_LOOPBACK_CODE:
		exchange(run, code);
		break;
	case AUTH_LOOPBACK_PROVIDER_ERROR:
		cli_error("%s: %s", run->name, error);
		flow_finish(run, provider_error_exit(error_code));
		break;
	case AUTH_LOOPBACK_REFUSED:
		cli_error("%s: %s", run->name, error);
		flow_finish(run, CLI_EXIT_NOPERM);
		break;
	}
}

static void loopback_timeout(evutil_socket_t fd, short what, void *context)
{
	struct auth_run *run = context;

	(void)fd;
	(void)what;
	if (run->request != NULL)
		return;
	cli_error("%s: no redirect came back within %u minutes", run->name,
		  AUTHORIZE_LOOPBACK_TIMEOUT_SECS / 60);
	flow_finish(run, CLI_EXIT_TEMPFAIL);
}

static void print_ssh_hint(unsigned int port)
{
	struct passwd *pw = getpwuid(getuid());
	char host[256];

	if (gethostname(host, sizeof(host)) < 0)
		snprintf(host, sizeof(host), "this-host");
	host[sizeof(host) - 1] = '\0';
	printf("If the browser runs on another machine, forward the port "
	       "first, from there:\n  ssh -L %u:127.0.0.1:%u %s@%s\n",
	       port, port, pw != NULL ? pw->pw_name : "USER", host);
}

void authorize_flow_loopback(struct auth_run *run)
{
	struct timeval tv = { AUTHORIZE_LOOPBACK_TIMEOUT_SECS, 0 };
	struct event *timer;
	const char *error;
	char *state, *url;

	state = trib_oauth_random_state();
	if (state == NULL) {
		cli_error("the random generator failed");
		flow_finish(run, CLI_EXIT_SOFTWARE);
		return;
	}
	run->loopback = auth_loopback_create(run->env.loop, state,
					     loopback_done, run, &error);
	if (run->loopback == NULL) {
		cli_error("%s: %s (try --flow paste)", run->name, error);
		free(state);
		flow_finish(run, CLI_EXIT_TEMPFAIL);
		return;
	}
	run->redirect_uri = trib_strdup_printf(
		"http://127.0.0.1:%u/", auth_loopback_port(run->loopback));
	url = authorize_url(run, state);
	free(state);
	if (url == NULL) {
		flow_finish(run, CLI_EXIT_SOFTWARE);
		return;
	}
	printf("To sign %s in, open this address in a browser:\n\n%s\n\n",
	       run->name, url);
	print_ssh_hint(auth_loopback_port(run->loopback));
	printf("Waiting for the browser to come back to "
	       "http://127.0.0.1:%u/ ...\n",
	       auth_loopback_port(run->loopback));
	fflush(stdout);
	free(url);
	timer = evtimer_new(trib_loop_base(run->env.loop), loopback_timeout,
			    run);
	evtimer_add(timer, &tv);
	run_loop(run);
	event_free(timer);
	auth_loopback_destroy(&run->loopback);
}

void authorize_flow_paste(struct auth_run *run)
{
	char *state, *url, *pasted, *query, *got_state, *code, *error;

	state = trib_oauth_random_state();
	if (state == NULL) {
		cli_error("the random generator failed");
		flow_finish(run, CLI_EXIT_SOFTWARE);
		return;
	}
	run->redirect_uri = trib_strdup(AUTHORIZE_PASTE_REDIRECT);
	url = authorize_url(run, state);
	if (url == NULL) {
		free(state);
		flow_finish(run, CLI_EXIT_SOFTWARE);
		return;
	}
	printf("To sign %s in, open this address in a browser:\n\n%s\n\n"
	       "After signing in, the browser goes to %s and shows an "
	       "error page:\nthat is expected. Copy the whole address from "
	       "its address bar and paste\nit here (it is not shown).\n",
	       run->name, url, AUTHORIZE_PASTE_REDIRECT);
	fflush(stdout);
	free(url);
	pasted = cli_read_secret(NULL, "Address: ");
	if (pasted == NULL) {
		free(state);
		flow_finish(run, CLI_EXIT_USAGE);
		return;
	}
	query = strchr(pasted, '?');
	query = query != NULL ? query + 1 : pasted;
	/* a fragment is no part of the query */
	if (strchr(query, '#') != NULL)
		*strchr(query, '#') = '\0';
	got_state = auth_query_param(query, "state");
	code = auth_query_param(query, "code");
	error = auth_query_param(query, "error");
	if (got_state == NULL || strcmp(got_state, state) != 0) {
		cli_error("%s: the pasted address's state does not match the "
			  "one sent: refused (an address from another "
			  "sign-in?)",
			  run->name);
		flow_finish(run, CLI_EXIT_NOPERM);
	} else if (error != NULL) {
		for (char *p = error; *p != '\0'; p++) {
			if (*p < 0x21 || *p > 0x7e)
				*p = '?';
		}
		cli_error("%s: the provider redirected with an error (%.64s)",
			  run->name, error);
		flow_finish(run, provider_error_exit(error));
	} else if (code == NULL || code[0] == '\0') {
		cli_error("%s: the pasted address carries no code", run->name);
		flow_finish(run, CLI_EXIT_USAGE);
	} else {
		exchange(run, code);
	}
	trib_secret_free(&pasted);
	trib_secret_free(&got_state);
	trib_secret_free(&code);
	trib_secret_free(&error);
	trib_secret_free(&state);
	run_loop(run);
}

/* ---- Microsoft 365 app-only ---- */

const char *authorize_global_get(struct auth_run *run, const char *key)
{
	return run->env.global.get(run->env.global.context, key);
}

void authorize_flow_client_credentials(struct auth_run *run)
{
	const struct trib_account *a = run->account;
	const char *tenant =
		authorize_global_get(run, "tributary_outlook_app_tenant");
	const char *client_id =
		authorize_global_get(run, "tributary_outlook_app_client_id");
	const char *secret_file = authorize_global_get(
		run, "tributary_outlook_app_client_secret_file");
	char *preset_url = NULL, *token_url = NULL;

	if (tenant == NULL || client_id == NULL || secret_file == NULL) {
		cli_error("%s: client-credentials needs "
			  "tributary_outlook_app_tenant, _app_client_id and "
			  "_app_client_secret_file in conf.d",
			  run->name);
		flow_finish(run, CLI_EXIT_CONFIG);
		return;
	}
	/* The tenant's token URL, unless the account names its own. */
	if (a->provider->token_url != NULL && a->oauth.tenant != NULL)
		preset_url = trib_oauth_tenant_url(a->provider->token_url,
						   a->oauth.tenant);
	if (preset_url != NULL && a->oauth.token_url != NULL &&
	    strcmp(preset_url, a->oauth.token_url) != 0)
		token_url = trib_strdup(a->oauth.token_url);
	else
		token_url =
			trib_oauth_tenant_url(a->provider->token_url, tenant);
	free(preset_url);
	if (token_url == NULL) {
		cli_error("%s: tributary_outlook_app_tenant '%s' is not a "
			  "tenant id or domain",
			  run->name, tenant);
		flow_finish(run, CLI_EXIT_CONFIG);
		return;
	}
	trib_secret_free(&run->client_secret);
	run->client_secret = cli_read_secret(secret_file, NULL);
	if (run->client_secret == NULL) {
		free(token_url);
		flow_finish(run, CLI_EXIT_CONFIG);
		return;
	}
	run->set.token_url = token_url;
	run->set.client_id = client_id;
	run->set.client_secret = run->client_secret;
	run->set.client_secret_rule = TRIB_CLIENT_SECRET_REQUIRED;
	run->set.scope = TRIB_OAUTH_M365_APP_SCOPE;
	run->request = trib_oauth_client_credentials(run->http, &run->set,
						     token_done, run);
	if (run->request == NULL)
		flow_finish(run, CLI_EXIT_SOFTWARE);
	run_loop(run);
	run->set.token_url = run->account->oauth.token_url;
	free(token_url);
}
