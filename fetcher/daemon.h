#ifndef DAEMON_H
#define DAEMON_H

/* daemon.h: `tributary run`, the service: one event loop (loop.h) for
 * everything. It reads the users from Dovecot's auth userdb (LIST, then
 * USER for each; again every hour and on SIGHUP), keeps those with
 * remote accounts, and starts a user's pass (user-sync.h) over the
 * accounts that are due by the rules of schedule.h: never two passes of
 * one user at once, at most tributary_max_parallel_users users side by
 * side. Accounts are polled, and watched with IMAP IDLE where they can
 * be (daemon-idle.c): new mail makes the account due now.
 *
 * Signals (through libevent, on the loop):
 * - SIGTERM, SIGINT: the IDLE watchers are closed, every running pass
 *   is stopped (user_sync_stop(): what LMTP answered is committed),
 *   nothing new starts, and the process exits 0 once the last pass has
 *   ended;
 * - SIGHUP: the settings (doveconf), the trace keys and the user list
 *   are read again; running passes finish with the settings they
 *   started with. Settings with errors are refused: the old ones stay;
 * - SIGUSR1: every account is due now.
 *
 * Logging: through its logger on stderr, one line each (journald adds
 * the time; when stderr is the journal, lines carry its priority
 * prefix): a line per account at the end of its pass at info ("alice/
 * work: 12 new, 12 delivered, 0 rejected, 0 deferred"), problems at
 * warning or error. Never a secret. See docs/daemon.md. */

struct cli_env_options;

/* Run until SIGTERM/SIGINT. Returns the exit code (CLI_EXIT_*): 0 after
 * a stop, or why it could not start (the error printed). */
int daemon_run(const struct cli_env_options *options);

#endif
