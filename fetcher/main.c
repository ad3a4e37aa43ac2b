/* main.c: `tributary`, the fetcher's command line. */

#include "cli.h"

#include "alloc.h"

#include <errno.h>
#include <openssl/crypto.h>
#include <signal.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/prctl.h>
#include <termios.h>
#include <unistd.h>

struct command {
	const char *name;
	int (*run)(int argc, char **argv);
	const char *summary;
};

static const struct command commands[] = {
	{ "check", cmd_check,
	  "connect to an IMAP server, log in, list folders and counts" },
	{ "accounts", cmd_accounts,
	  "list users' remote accounts as Dovecot's settings give them" },
	{ "check-config", cmd_check_config,
	  "check the settings; one line per problem, exit 78 if any" },
	{ "init", cmd_init, "create the trace key if it is missing" },
	{ "sync", cmd_sync,
	  "one pass: new remote mail into the local mailbox over LMTP" },
	{ "run", cmd_run,
	  "the service: poll every user's accounts until SIGTERM" },
	{ "status", cmd_status,
	  "what each remote account did last; what needs fixing" },
	{ "authorize", cmd_authorize,
	  "sign a remote account in; keep its tokens in the vault" },
};

void cli_error(const char *fmt, ...)
{
	va_list args;

	fputs("tributary: ", stderr);
	va_start(args, fmt);
	vfprintf(stderr, fmt, args);
	va_end(args);
	fputc('\n', stderr);
}

static void cli_log(void *context, enum trib_log_level level,
		    const char *message)
{
	(void)context;
	if (level >= TRIB_LOG_WARNING)
		fprintf(stderr, "tributary: %s: %s\n",
			trib_log_level_name(level), message);
	else
		fprintf(stderr, "tributary: %s\n", message);
}

void cli_logger_init(struct trib_logger *logger, bool verbose)
{
	logger->log = cli_log;
	logger->context = NULL;
	logger->min_level = verbose ? TRIB_LOG_DEBUG : TRIB_LOG_WARNING;
}

static char *read_line(FILE *f)
{
	char *line = NULL;
	size_t alloc = 0;
	ssize_t len = getline(&line, &alloc, f);
	char *copy;

	if (len < 0) {
		free(line);
		return NULL;
	}
	while (len > 0 && (line[len - 1] == '\n' || line[len - 1] == '\r'))
		line[--len] = '\0';
	/* getline's buffer may be larger than the line: copy, then wipe. */
	copy = trib_strdup(line);
	OPENSSL_cleanse(line, alloc);
	free(line);
	return copy;
}

char *cli_read_secret(const char *path, const char *prompt)
{
	struct termios old, noecho;
	FILE *f;
	char *secret;

	if (path != NULL) {
		f = strcmp(path, "-") == 0 ? stdin : fopen(path, "r");
		if (f == NULL) {
			cli_error("cannot read %s: %s", path, strerror(errno));
			return NULL;
		}
		secret = read_line(f);
		if (f != stdin)
			fclose(f);
		if (secret == NULL || secret[0] == '\0') {
			cli_error("%s: no secret in the first line", path);
			trib_secret_free(&secret);
			return NULL;
		}
		return secret;
	}
	if (isatty(STDIN_FILENO) && tcgetattr(STDIN_FILENO, &old) == 0) {
		fprintf(stderr, "%s", prompt);
		fflush(stderr);
		noecho = old;
		noecho.c_lflag &= ~(tcflag_t)ECHO;
		tcsetattr(STDIN_FILENO, TCSAFLUSH, &noecho);
		secret = read_line(stdin);
		tcsetattr(STDIN_FILENO, TCSAFLUSH, &old);
		fputc('\n', stderr);
	} else {
		secret = read_line(stdin);
	}
	if (secret == NULL || secret[0] == '\0') {
		cli_error("no password or token given (use --secret-file "
			  "FILE, or type it when asked)");
		trib_secret_free(&secret);
		return NULL;
	}
	return secret;
}

static void usage(FILE *out)
{
	fprintf(out, "usage: tributary COMMAND [OPTIONS]\n\ncommands:\n");
	for (size_t i = 0; i < TRIB_N_ELEMENTS(commands); i++)
		fprintf(out, "  %-13s %s\n", commands[i].name,
			commands[i].summary);
	fprintf(out, "\n`tributary COMMAND --help` shows a command's "
		     "options.\n");
}

int main(int argc, char **argv)
{
	/* Secrets pass through this process: no core dumps of it. */
	(void)prctl(PR_SET_DUMPABLE, 0, 0, 0, 0);
	/* A peer that closes early is an error to report, not a signal. */
	signal(SIGPIPE, SIG_IGN);

	if (argc < 2) {
		usage(stderr);
		return CLI_EXIT_USAGE;
	}
	if (strcmp(argv[1], "--help") == 0 || strcmp(argv[1], "help") == 0) {
		usage(stdout);
		return CLI_EXIT_OK;
	}
	if (strcmp(argv[1], "--version") == 0) {
		printf("tributary %s\n", PACKAGE_VERSION);
		return CLI_EXIT_OK;
	}
	for (size_t i = 0; i < TRIB_N_ELEMENTS(commands); i++) {
		if (strcmp(argv[1], commands[i].name) == 0)
			return commands[i].run(argc - 1, argv + 1);
	}
	cli_error("unknown command '%s'", argv[1]);
	usage(stderr);
	return CLI_EXIT_USAGE;
}
