#ifndef TRIB_CLI_ENV_H
#define TRIB_CLI_ENV_H

/* cli-env.h: what the commands that read users and accounts from
 * Dovecot share: Dovecot's global plugin {} settings (through doveconf),
 * and, for those that ask the auth service, the event loop, the userdb
 * client on the drop-in's tributary-userdb listener and a logger.
 *
 * Owns all of it; cli_env_close() frees what was opened. */

#include "account.h"
#include "doveconf.h"
#include "log.h"
#include "settings.h"

#include <stdbool.h>

struct trib_loop;
struct trib_userdb_client;

struct cli_env_options {
	const char *config;	  /* -c: Dovecot's config, NULL: its own */
	const char *doveconf_bin; /* --doveconf, NULL: from PATH */
	const char *socket;	  /* --userdb-socket, NULL: the default */
	bool verbose;
};

struct cli_env {
	struct doveconf conf;
	struct trib_settings_layer global;
	struct trib_global_settings globals;
	struct trib_loop *loop;
	struct trib_userdb_client *userdb;
	struct trib_logger logger;
};

/* The global settings. Returns CLI_EXIT_OK, or the exit code with the
 * error printed. Problems in the settings themselves are left in
 * env->globals.errors for the command to judge. */
int cli_env_load(struct cli_env *env, const struct cli_env_options *options);
/* The loop, the logger and the userdb client (at options->socket or
 * <base_dir>/tributary-userdb), after cli_env_load(). Returns CLI_EXIT_OK
 * or the exit code with the error printed. */
int cli_env_connect(struct cli_env *env, const struct cli_env_options *options);
/* Look user up through the userdb client (running the loop until the
 * answer) and build their accounts over the globals: *name_r is the
 * user's name as the userdb gives it (malloc()ed), *list_r the accounts
 * (free with trib_account_list_free()). Returns CLI_EXIT_OK, or
 * CLI_EXIT_TEMPFAIL (auth service unreachable) / CLI_EXIT_CONFIG (no
 * such user) with the error printed. */
int cli_env_lookup_user(struct cli_env *env, const char *user, char **name_r,
			struct trib_account_list *list_r);
void cli_env_close(struct cli_env *env);

#endif
