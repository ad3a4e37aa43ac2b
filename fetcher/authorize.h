#ifndef AUTHORIZE_H
#define AUTHORIZE_H

/* authorize.h: what cmd-authorize.c (the command: arguments, the
 * account, the vault) and authorize-flows.c (the sign-in flows: device
 * code, loopback, paste, Microsoft 365 app-only) share. */

#include "cli-env.h"

#include "account.h"
#include "http.h"
#include "oauth.h"

#include <stdbool.h>

/* How long a browser sign-in may take before the loopback wait ends. */
#define AUTHORIZE_LOOPBACK_TIMEOUT_SECS (10 * 60)
#define AUTHORIZE_PASTE_REDIRECT "http://localhost"

enum auth_flow {
	AUTH_FLOW_DEFAULT,
	AUTH_FLOW_DEVICE,
	AUTH_FLOW_LOOPBACK,
	AUTH_FLOW_PASTE,
	AUTH_FLOW_CLIENT_CREDENTIALS,
	AUTH_FLOW_APP_PASSWORD,
};

struct auth_run {
	const char *user, *account_name, *secret_file;
	enum auth_flow flow;
	bool no_browser;
	struct cli_env_options options;
	struct cli_env env;

	char *user_name;
	struct trib_account_list list;
	const struct trib_account *account;

	struct trib_http_client *http;
	struct trib_oauth_settings set;
	char *client_secret;
	char *name;

	/* the outcome of the flow */
	bool done;
	int exit_code;
	struct trib_oauth_token *token;
	struct trib_oauth_device_poll *poll;
	struct trib_oauth_request *request;
	struct auth_loopback *loopback;
	char *verifier;
	char *redirect_uri;
};

/* authorize-flows.c: each starts its flow; run->done and run->exit_code
 * (and run->token) tell the outcome once the loop has run. */
void authorize_flow_device(struct auth_run *run);
void authorize_flow_loopback(struct auth_run *run);
void authorize_flow_paste(struct auth_run *run);
void authorize_flow_client_credentials(struct auth_run *run);
/* A global (conf.d) plugin setting, or NULL. */
const char *authorize_global_get(struct auth_run *run, const char *key);

#endif
