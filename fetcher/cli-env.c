/* cli-env.c: settings, loop and userdb client of the commands (see
 * cli-env.h). */

#include "cli-env.h"

#include "alloc.h"
#include "cli.h"
#include "loop.h"
#include "userdb.h"

#include <stdlib.h>
#include <string.h>

/* Seconds an auth userdb request may take. */
#define CLI_USERDB_TIMEOUT 30

int cli_env_load(struct cli_env *env, const struct cli_env_options *options)
{
	char *err = NULL;

	memset(env, 0, sizeof(*env));
	if (doveconf_load(options->doveconf_bin, options->config, &env->conf,
			  &err) < 0) {
		cli_error("%s", err);
		free(err);
		return CLI_EXIT_CONFIG;
	}
	doveconf_layer(&env->conf, &env->global);
	trib_global_settings_load(&env->global, env->conf.base_dir,
				  &env->globals);
	return CLI_EXIT_OK;
}

int cli_env_connect(struct cli_env *env, const struct cli_env_options *options)
{
	const char *error;
	char *socket_path;

	env->loop = trib_loop_create(&error);
	if (env->loop == NULL) {
		cli_error("%s", error);
		return CLI_EXIT_SOFTWARE;
	}
	cli_logger_init(&env->logger, options->verbose);
	socket_path = options->socket != NULL
			      ? trib_strdup(options->socket)
			      : trib_strdup_printf("%s/tributary-userdb",
						   env->conf.base_dir);
	env->userdb = trib_userdb_client_create(
		env->loop, socket_path, CLI_USERDB_TIMEOUT, &env->logger);
	free(socket_path);
	return CLI_EXIT_OK;
}

struct lookup {
	struct cli_env *env;
	const char *user;
	bool done, found;
	char *error;
	char **name_r;
	struct trib_account_list *list_r;
};

static void lookup_done(int result, const struct trib_userdb_user *user,
			const char *error, void *context)
{
	struct lookup *l = context;

	l->done = true;
	trib_loop_break(l->env->loop);
	if (result < 0) {
		l->error = trib_strdup(error);
		return;
	}
	if (result == 0)
		return;
	l->found = true;
	*l->name_r = trib_strdup(user->name != NULL ? user->name : l->user);
	cli_accounts_from_userdb(user, *l->name_r, &l->env->global,
				 &l->env->globals, l->list_r);
}

int cli_env_lookup_user(struct cli_env *env, const char *user, char **name_r,
			struct trib_account_list *list_r)
{
	struct lookup l;

	memset(&l, 0, sizeof(l));
	l.env = env;
	l.user = user;
	l.name_r = name_r;
	l.list_r = list_r;
	trib_userdb_lookup(env->userdb, user, lookup_done, &l);
	while (!l.done)
		trib_loop_run(env->loop);
	if (l.error != NULL) {
		cli_error("%s", l.error);
		free(l.error);
		return CLI_EXIT_TEMPFAIL;
	}
	if (!l.found) {
		cli_error("%s: user not found in the userdb", user);
		return CLI_EXIT_CONFIG;
	}
	return CLI_EXIT_OK;
}

void cli_env_close(struct cli_env *env)
{
	trib_userdb_client_destroy(&env->userdb);
	trib_loop_destroy(&env->loop);
	trib_global_settings_free(&env->globals);
	doveconf_free(&env->conf);
}
