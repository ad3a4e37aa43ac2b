/* cmd-run.c: `tributary run`, the service (daemon.h). */

#include "cli.h"

#include "cli-env.h"
#include "daemon.h"

#include <getopt.h>
#include <stdio.h>
#include <string.h>

static void run_usage(FILE *out)
{
	fprintf(out,
		"usage: tributary run [-c CONFIG] [-v]\n"
		"\n"
		"The service: bring new mail of every user's remote accounts "
		"into the\nlocal mailboxes through LMTP, polling each account "
		"and, where the\nserver has IDLE, told of new mail at once; "
		"until SIGTERM. "
		"SIGHUP reads the\nsettings and the users again, SIGUSR1 "
		"makes every account due now.\nLogs go to stderr (the "
		"journal under systemd).\n"
		"\n"
		"  -c, --config FILE       Dovecot's config (default: its "
		"own)\n"
		"      --userdb-socket P   default "
		"<base_dir>/tributary-userdb\n"
		"      --doveconf PATH     the doveconf binary\n"
		"  -v, --verbose           log the details (debug)\n"
		"\nExit: 0 stopped by SIGTERM or SIGINT, 78 configuration "
		"(settings,\ntrace key), 70 internal error.\n");
}

int cmd_run(int argc, char **argv)
{
	static const struct option options[] = {
		{ "config", required_argument, NULL, 'c' },
		{ "userdb-socket", required_argument, NULL, 's' },
		{ "doveconf", required_argument, NULL, 'd' },
		{ "verbose", no_argument, NULL, 'v' },
		{ "help", no_argument, NULL, 'h' },
		{ NULL, 0, NULL, 0 },
	};
	struct cli_env_options opts;
	int c;

	memset(&opts, 0, sizeof(opts));
	optind = 1;
	while ((c = getopt_long(argc, argv, "c:v", options, NULL)) != -1) {
		switch (c) {
		case 'c':
			opts.config = optarg;
			break;
		case 's':
			opts.socket = optarg;
			break;
		case 'd':
			opts.doveconf_bin = optarg;
			break;
		case 'v':
			opts.verbose = true;
			break;
		case 'h':
			run_usage(stdout);
			return CLI_EXIT_OK;
		default:
			run_usage(stderr);
			return CLI_EXIT_USAGE;
		}
	}
	if (optind != argc) {
		run_usage(stderr);
		return CLI_EXIT_USAGE;
	}
	return daemon_run(&opts);
}
