#ifndef TRIB_CLI_H
#define TRIB_CLI_H

/* cli.h: the `tributary` command line: shared helpers of the commands. */

#include "log.h"

#include <stdbool.h>

/* Exit codes (sysexits.h), documented in docs/cli.md. */
#define CLI_EXIT_OK 0
#define CLI_EXIT_USAGE 64    /* EX_USAGE: bad command line */
#define CLI_EXIT_DATAERR 65  /* EX_DATAERR: bad input file */
#define CLI_EXIT_SOFTWARE 70 /* EX_SOFTWARE: internal error */
#define CLI_EXIT_TEMPFAIL 75 /* EX_TEMPFAIL: try again later */
#define CLI_EXIT_NOPERM 77   /* EX_NOPERM: refused: credentials, TLS */
#define CLI_EXIT_CONFIG 78   /* EX_CONFIG: configuration problems */

/* One line on stderr: "tributary: <message>". */
void cli_error(const char *fmt, ...) TRIB_ATTR_PRINTF(1, 2);

/* A logger writing "tributary: [level] message" to stderr. */
void cli_logger_init(struct trib_logger *logger, bool verbose);

/* Read a secret (password, token): the first line of path ("-" is
 * stdin), or, when path is NULL, from the terminal without echo (prompt
 * shown on stderr) or the first line of a non-terminal stdin. Secrets
 * never come from argv. Returns NULL with an error printed. Free with
 * trib_secret_free(). */
char *cli_read_secret(const char *path, const char *prompt);

struct trib_userdb_user;
struct trib_settings_layer;
struct trib_global_settings;
struct trib_account_list;
struct json_object;

/* The accounts of a userdb reply (user's fields over the globals). */
void cli_accounts_from_userdb(const struct trib_userdb_user *user,
			      const char *name,
			      const struct trib_settings_layer *global,
			      const struct trib_global_settings *globals,
			      struct trib_account_list *list_r);
/* A JSON array of the strings. */
struct json_object *cli_json_strings(char *const *items, unsigned int count);

int cmd_check(int argc, char **argv);
int cmd_accounts(int argc, char **argv);
int cmd_check_config(int argc, char **argv);
int cmd_sync(int argc, char **argv);
int cmd_run(int argc, char **argv);
int cmd_status(int argc, char **argv);
int cmd_init(int argc, char **argv);
int cmd_authorize(int argc, char **argv);

#endif
