#ifndef INCIDENT_H
#define INCIDENT_H

/* incident.h: an account that needs reauthorization, dealt with once per
 * incident.
 *
 * An incident starts when the token endpoint refuses an account's refresh
 * token for good (invalid_grant: revoked, expired) and ends when a new
 * refresh token is stored (`tributary authorize` removes the record; a
 * sync that finds another refresh token in the vault does too). It is
 * recorded in <state_dir>/<user>/reauth-<account>, lines of key=value:
 *
 *   fingerprint=<base64url SHA-256 of the refused refresh token>
 *   since=<unix seconds>
 *   reason=<one printable line, no secret>
 *   notified=<unix seconds>   the notify command ran (any exit status)
 *   noticed=<unix seconds>    the notice message was delivered (LMTP 250)
 *
 * written atomically (temp + fsync + rename), 0600, owned like the state
 * directory. While it names the refresh token in the vault, passes do not
 * ask the token endpoint again (no hammering the provider).
 *
 * Follow-up, once each per incident, on the loop without blocking
 * (incident_follow_up_start(); incident.c):
 * - the admin's notify command (tributary_notify_command) runs through
 *   /bin/sh -c with user, account, provider, login, reason, since and the
 *   fixing command in its environment (TRIBUTARY_*; besides them only
 *   PATH), never its argv; stdin /dev/null, in /, in a process group of
 *   its own, killed with its group after INCIDENT_NOTIFY_TIMEOUT_SECS;
 *   watched from the loop (its pidfd) and reaped with WNOHANG.
 *   Recorded after it ran: a crash in between may run it twice, never
 *   zero times; so may a follow-up aborted while it runs (it is killed,
 *   not recorded). (incident-notify.c)
 * - a plain notice message (tributary_reauth_notice, on by default) goes
 *   to the user over LMTP, as the account's mail does (so the user's
 *   Sieve sees it), saying which account stopped, why, and the exact
 *   command that fixes it. It carries an X-Tributary-Trace header whose
 *   id is the incident's (folder "(tributary notice)", UIDVALIDITY =
 *   since, UID 1), so the LMTP plugin stores it once even when a crash
 *   falls between LMTP's 250 and the record's update. Two incidents of
 *   one account starting in the same second would share that id.
 *   (incident-notice.c)
 *
 * Borrows everything; owns the struct incident's strings. */

#include <stdbool.h>
#include <stdint.h>

struct trib_account;
struct trib_logger;
struct trib_loop;
struct trib_trace_keys;

#define INCIDENT_NOTIFY_TIMEOUT_SECS 60
#define INCIDENT_NOTICE_FOLDER "(tributary notice)"
/* Longest reason kept, in bytes (a longer one is cut). */
#define INCIDENT_REASON_MAX 500

struct incident {
	char *account;	   /* the account's name (not in the file) */
	char *fingerprint; /* base64url SHA-256 of the refused token */
	int64_t since;	   /* nonzero */
	char *reason;	   /* incident_reason_clean()ed when read */
	int64_t notified;  /* 0: not yet */
	int64_t noticed;   /* 0: not yet */
};

/* reason as one line fit for the record and the notice: valid UTF-8 is
 * kept, control characters and invalid bytes become '?', cut to
 * INCIDENT_REASON_MAX bytes. malloc()ed. */
char *incident_reason_clean(const char *reason);

/* <user_dir>/reauth-<account>, malloc()ed. */
char *incident_path(const char *user_dir, const char *account);
/* Read the account's record: 1 with *incident_r, 0 when there is none,
 * -1 with *error_r (malloc()ed) when it cannot be read or makes no
 * sense. */
int incident_read(const char *user_dir, const char *account,
		  struct incident **incident_r, char **error_r);
/* Write it atomically: 0, or -1 with *error_r (malloc()ed). */
int incident_write(const char *user_dir, const struct incident *incident,
		   char **error_r);
/* Remove the account's record (none is fine): 0, or -1 with *error_r. */
int incident_remove(const char *user_dir, const char *account, char **error_r);
void incident_free(struct incident **incident);

struct incident_settings {
	const char *user; /* the local user, the notice's recipient */
	const struct trib_account *account;
	/* /bin/sh -c command line, or NULL/"" for none */
	const char *notify_command;
	/* 0: INCIDENT_NOTIFY_TIMEOUT_SECS (tests wait less) */
	unsigned int notify_timeout_secs;
	bool notice;	  /* deliver the notice message */
	const char *lmtp; /* "unix:/path" or "host:port" */
	const struct trib_trace_keys *keys;
	const struct trib_logger *logger;
};

/* "tributary authorize -u USER ACCOUNT", the command that ends an
 * incident. malloc()ed. */
char *incident_command(const char *user, const char *account);

/* incident-notify.c: start the admin's notify command for incident now
 * (whatever the record says). NULL with *error_r (malloc()ed) when it
 * cannot be started (then it is tried again at a later pass); else the
 * callback fires once, from the loop, when the command has ended:
 * warning NULL when it exited 0, else why it failed ("the notify
 * command exited with status 3", or killed at the timeout). */
struct incident_notify;
typedef void incident_notify_callback_t(const char *warning, void *context);
struct incident_notify *
incident_notify_start(struct trib_loop *loop, const struct incident *incident,
		      const struct incident_settings *set,
		      incident_notify_callback_t *callback, void *context,
		      char **error_r);
/* Kill the command with its group and reap it; the callback does not
 * fire. NULL is fine; sets *notify to NULL. */
void incident_notify_abort(struct incident_notify **notify);

/* incident-notice.c: deliver the notice message now (whatever the
 * record says). NULL with *error_r (malloc()ed) when it cannot be sent
 * (the trace header, a bad LMTP address); else the callback fires once,
 * from the loop, with LMTP's answer: error NULL on 250 (or the plugin's
 * 250 for a notice it stored before), else why not. */
struct incident_notice;
typedef void incident_notice_callback_t(const char *error, void *context);
struct incident_notice *
incident_notice_start(struct trib_loop *loop, const struct incident *incident,
		      const struct incident_settings *set,
		      incident_notice_callback_t *callback, void *context,
		      char **error_r);
/* Abandon the notice (never half delivered: see lmtp-client.h); the
 * callback does not fire. NULL is fine; sets *notice to NULL. */
void incident_notice_abort(struct incident_notice **notice);

/* Do what the incident still lacks (the notify command, the notice),
 * updating incident and its record in user_dir after each step, on the
 * loop. The callback fires once, from the loop (never inside this call):
 * error NULL when all went well, else the problems ("; " between
 * several): a step that could not be done (LMTP down, no fork, the
 * record not written) is done at a later pass; a notify command that ran
 * but failed ("the notify command exited with status 3", or killed at
 * the timeout) is reported once and not run again. The record is never
 * removed here. incident, set and what they point to are borrowed until
 * the callback. */
struct incident_follow_up;
typedef void incident_follow_up_callback_t(const char *error, void *context);
struct incident_follow_up *incident_follow_up_start(
	struct trib_loop *loop, const char *user_dir, struct incident *incident,
	const struct incident_settings *set,
	incident_follow_up_callback_t *callback, void *context);
/* Stop it: the step under way is left for a later pass (a running
 * notify command is killed with its group and not recorded as run, a
 * notice abandoned). The callback fires before this returns, with the
 * problems found so far (NULL: none). Not from its own callback. NULL is
 * fine; sets *follow_up to NULL. */
void incident_follow_up_abort(struct incident_follow_up **follow_up);

/* The same, blocking: runs the loop until the callback (for a caller
 * whose loop runs nothing else). Returns 0 when all went well, -1 with
 * *error_r (malloc()ed) otherwise. */
int incident_follow_up(struct trib_loop *loop, const char *user_dir,
		       struct incident *incident,
		       const struct incident_settings *set, char **error_r);

#endif
