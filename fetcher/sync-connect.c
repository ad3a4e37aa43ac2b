/* sync-connect.c: the connection of one account's pass (see
 * sync-private.h): the secret to log in with (a password file's, the
 * vault's app password, an oauth2 account's access token, which may
 * take a request to the token endpoint), connect, authenticate, and,
 * when a session is over, the two reasons to connect again within the
 * pass (decided from the loop, sync_connect_next()).
 *
 *   - The server refuses an oauth2 account's access token at login: one
 *     refresh, one new connection (oauth_retry).
 *   - The server ends an oauth2 account's authenticated session because
 *     the token expired (Exchange: "* BYE Session invalidated -
 *     AccessTokenExpired"; or a command answered NO [EXPIRED] or
 *     [AUTHENTICATIONFAILED]): what LMTP already has is answered and
 *     committed as on any lost connection, then a new token, a new
 *     connection, and the pass goes on with the folder it was in, from
 *     the committed cursors. That is not an error (one debug line); at
 *     most SYNC_RECONNECT_MAX times a pass, each time with a token
 *     refreshed for it, so it can never loop.
 *
 * A connection lost for any other reason stays what it is: the rest of
 * the account waits for the next pass. So does everything after
 * sync_stop(): no new connection, and one closed at once when its
 * LOGOUT would have to wait (sync_connect_stop()). */

#include "sync-private.h"

#include "alloc.h"
#include "cli.h"
#include "crash.h"
#include "log.h"
#include "loop.h"
#include "vault.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

/* ---- the token expiring mid-session ---- */

static bool code_is(const char *code, const char *name)
{
	return code != NULL && strcmp(code, name) == 0;
}

static void session_expired(struct sync *s, const char *how)
{
	if (s->session_expired)
		return;
	trib_log(s->set->logger, TRIB_LOG_DEBUG,
		 "%s: the server ended the session, the access token "
		 "expired (%s): finishing what LMTP has, then reconnecting",
		 s->name, how);
	s->session_expired = true;
	s->account_failed = true;
}

bool sync_connect_expired(struct sync *s, const struct trib_imap_reply *reply)
{
	if (s->account->auth != TRIB_AUTH_OAUTH2 || s->logging_out)
		return false;
	if (!s->session_expired && reply->status == TRIB_IMAP_STATUS_NO &&
	    (code_is(reply->code, "EXPIRED") ||
	     code_is(reply->code, "AUTHENTICATIONFAILED")))
		session_expired(s, reply->code);
	return s->session_expired;
}

static void imap_event(const struct trib_imap_event *event, void *context)
{
	struct sync *s = context;
	bool expired = event->text != NULL &&
		       strstr(event->text, "AccessTokenExpired") != NULL;

	switch (event->type) {
	case TRIB_IMAP_EVENT_DISCONNECTED:
		sync_abort_current(s,
				   "the IMAP connection was lost mid-message");
		s->account_failed = true;
		break;
	case TRIB_IMAP_EVENT_BYE:
		/* Exchange: "* BYE ... AccessTokenExpired" instead of NO at
		 * login, and when the token expires in a session */
		if (s->account->auth != TRIB_AUTH_OAUTH2 || !expired)
			break;
		if (!trib_imap_client_is_authenticated(s->imap))
			s->token_refused = true;
		else if (!s->logging_out)
			session_expired(s, "BYE AccessTokenExpired");
		break;
	case TRIB_IMAP_EVENT_ALERT:
		sync_result_error(s->result, SYNC_OK, "%s: server alert: %s",
				  s->name, event->text);
		break;
	default:
		break;
	}
}

/* ---- login ---- */

/* Whether an oauth2 login failed because of the token: NO
 * [AUTHENTICATIONFAILED] (after the XOAUTH2 error challenge too), or the
 * BYE AccessTokenExpired seen before the connection went away. */
static bool oauth_refused(const struct sync *s,
			  const struct trib_imap_reply *reply)
{
	if (s->account->auth != TRIB_AUTH_OAUTH2)
		return false;
	return s->token_refused || code_is(reply->code, "AUTHENTICATIONFAILED");
}

static void auth_failed(struct sync *s, const struct trib_imap_reply *reply)
{
	bool refused = reply->error_class == TRIB_ERR_PERM ||
		       code_is(reply->code, "AUTHENTICATIONFAILED");

	if (refused && s->account->auth == TRIB_AUTH_APP_PASSWORD) {
		sync_result_error(s->result, SYNC_AUTH,
				  "%s: the server refused the app password: "
				  "it may have been revoked; run `tributary "
				  "authorize -u %s %s` to store a new one (%s)",
				  s->name, s->set->user, s->account->name,
				  sync_reply_error(s, reply));
		return;
	}
	sync_result_error(s->result, refused ? SYNC_AUTH : SYNC_TEMP,
			  "%s: authentication failed: %s", s->name,
			  sync_reply_error(s, reply));
}

static void auth_done(const struct trib_imap_reply *reply, void *context)
{
	struct sync *s = context;

	if (s->stopping) {
		sync_account_finish(s); /* LOGOUT when logged in */
		return;
	}
	if (reply->status != TRIB_IMAP_STATUS_OK && oauth_refused(s, reply) &&
	    !s->oauth_retried) {
		/* refresh once and connect again (sync_connect_next) */
		trib_log(s->set->logger, TRIB_LOG_DEBUG,
			 "%s: the server refused the access token: "
			 "refreshing it",
			 s->name);
		s->oauth_retry = true;
		sync_session_over(s);
		return;
	}
	if (reply->status != TRIB_IMAP_STATUS_OK) {
		auth_failed(s, reply);
		sync_account_finish(s);
		return;
	}
	TRIB_CRASH_POINT("sync-after-login");
	sync_start_folders(s);
}

/* The first of the account's SASL mechanisms the server offers (the
 * first of all when it offers none: its refusal then says so). */
static const char *sasl_mech(const struct sync *s)
{
	char cap[64];

	for (unsigned int i = 0; i < s->account->sasl_count; i++) {
		snprintf(cap, sizeof(cap), "AUTH=%s", s->account->sasl[i]);
		if (trib_imap_client_has_capability(s->imap, cap))
			return s->account->sasl[i];
	}
	return s->account->sasl[0];
}

static void connect_done(const struct trib_imap_reply *reply, void *context)
{
	struct sync *s = context;
	char *password = s->connect_secret;

	s->connect_secret = NULL;
	s->connecting = false;
	if (s->stopping) {
		trib_secret_free(&password);
		sync_account_finish(s);
		return;
	}
	if (reply->status != TRIB_IMAP_STATUS_OK) {
		trib_secret_free(&password);
		sync_result_error(s->result,
				  reply->error_class == TRIB_ERR_PERM
					  ? SYNC_AUTH
					  : SYNC_TEMP,
				  "%s: cannot connect: %s", s->name,
				  sync_reply_error(s, reply));
		sync_account_finish(s);
		return;
	}
	trib_log(s->set->logger, TRIB_LOG_DEBUG, "%s: AUTHENTICATE %s", s->name,
		 sasl_mech(s));
	if (s->set->login_secret != NULL)
		s->set->login_secret(s->account, password,
				     s->set->login_context);
	trib_imap_client_authenticate(s->imap, sasl_mech(s), s->account->login,
				      password, auth_done, s);
	trib_secret_free(&password);
}

/* ---- the secret ---- */

/* The app password `tributary authorize` stored in the vault. */
static char *app_password(struct sync *s)
{
	const char *error;
	char *secret;
	int ret;

	if (s->set->vault == NULL) {
		sync_result_error(s->result, SYNC_CONFIG, "%s: %s", s->name,
				  s->set->vault_error != NULL
					  ? s->set->vault_error
					  : "the token vault is not open");
		return NULL;
	}
	ret = trib_vault_get(s->set->vault, s->account->name,
			     TRIB_VAULT_APP_PASSWORD, &secret, NULL, &error);
	if (ret < 0) {
		sync_result_error(s->result, SYNC_CONFIG, "%s: %s", s->name,
				  error);
		return NULL;
	}
	if (ret == 0)
		sync_result_error(s->result, SYNC_AUTH,
				  "%s: no app password stored: run `tributary "
				  "authorize -u %s %s`",
				  s->name, s->set->user, s->account->name);
	return secret;
}

static char *password_file(struct sync *s)
{
	const struct trib_account *account = s->account;
	char *secret;

	if (account->password_file == NULL) {
		sync_result_error(s->result, SYNC_CONFIG,
				  "%s: auth password_file needs "
				  "tributary_%s_password_file",
				  s->name, account->name);
		return NULL;
	}
	secret = cli_read_secret(account->password_file, "");
	if (secret == NULL)
		sync_result_error(s->result, SYNC_CONFIG,
				  "%s: cannot read the password from %s",
				  s->name, account->password_file);
	return secret;
}

/* Get the secret to log in with: sync_connect_secret() follows, with
 * NULL after recording the error. */
static void account_secret(struct sync *s, bool force_refresh)
{
	if (s->account->sasl_count == 0) {
		sync_result_error(s->result, SYNC_CONFIG,
				  "%s: no SASL mechanism for auth %s", s->name,
				  trib_auth_method_name(s->account->auth));
		sync_connect_secret(s, NULL);
		return;
	}
	switch (s->account->auth) {
	case TRIB_AUTH_OAUTH2:
		sync_oauth_token(s, force_refresh);
		return;
	case TRIB_AUTH_APP_PASSWORD:
		sync_connect_secret(s, app_password(s));
		return;
	case TRIB_AUTH_PASSWORD_FILE:
		sync_connect_secret(s, password_file(s));
		return;
	}
	sync_connect_secret(s, NULL);
}

/* ---- the connection ---- */

static int imap_create(struct sync *s)
{
	struct trib_imap_client_settings imap_set;
	const struct trib_account *account = s->account;
	const char *error;

	memset(&imap_set, 0, sizeof(imap_set));
	imap_set.name = s->name;
	imap_set.host = account->host;
	imap_set.port = account->port;
	imap_set.tls_mode = account->tls;
	imap_set.ca_file = account->ca_file;
	imap_set.tls_verify = account->tls_verify;
	imap_set.logger = s->set->logger;
	s->imap = trib_imap_client_create(s->loop, &imap_set, &error);
	if (s->imap == NULL) {
		sync_result_error(s->result, SYNC_CONFIG, "%s: %s", s->name,
				  error);
		return -1;
	}
	trib_imap_client_set_event_handler(s->imap, imap_event, s);
	return 0;
}

void sync_connect_begin(struct sync *s)
{
	account_secret(s, false);
}

/* Ready for another connection: what the one before left behind goes,
 * except where it was (the folder list when it was complete, the
 * folder, the results). Nothing is in flight by then: a session ends
 * only once LMTP has answered everything and the state is committed. */
static void pass_reset(struct sync *s)
{
	s->done = false;
	s->logging_out = false;
	s->account_failed = false;
	s->folder_failed = false;
	s->token_refused = false;
	s->session_expired = false;
	s->cut_left = 0;
	s->reading_paused = false;
	s->fetch_running = false;
	s->selected = false;
	s->folder = NULL;
	s->folder_name = NULL;
	s->uidnext = 0;
	s->highestmodseq = 0;
	s->meta_uidless = 0;
	s->meta_lo = s->meta_hi = s->meta_width = 0;
	s->folder_deferred = 0;
	s->header_len = 0;
	s->header_seen = false;
	s->since_commit = 0;
	sync_abort_current(s, "reconnecting");
	sync_msgs_clear(s);
	free(s->remove_set);
	s->remove_set = NULL;
	if (!s->folders_listed) {
		/* cut while the patterns were being listed: again */
		sync_folders_free(s);
		s->lists_pending = 0;
		s->folder_idx = 0;
	}
}

/* No reconnect after the token expired: what was left for it is left
 * for the next pass (sync.c's folder_finish() took it out of the
 * counts). */
static void expired_give_up(struct sync *s)
{
	s->result->new_count += s->cut_left;
	s->result->deferred += s->cut_left;
	if (s->cut_left > 0 && s->result->status == SYNC_OK)
		s->result->status = SYNC_TEMP;
	s->cut_left = 0;
	s->session_expired = false;
}

/* No (further) connection: the pass ends. */
static void connect_give_up(struct sync *s)
{
	if (s->reconnecting)
		expired_give_up(s);
	sync_end(s);
}

void sync_connect_secret(struct sync *s, char *secret)
{
	if (s->stopping)
		trib_secret_free(&secret);
	if (secret == NULL) {
		connect_give_up(s);
		return;
	}
	if (imap_create(s) < 0 ||
	    (s->lmtp == NULL && sync_lmtp_create(s) < 0)) {
		trib_secret_free(&secret);
		connect_give_up(s);
		return;
	}
	s->result->skipped = false;
	if (s->reconnecting)
		pass_reset(s);
	s->connect_secret = secret;
	s->connecting = true;
	trib_imap_client_connect(s->imap, connect_done, s);
}

/* Whether the pass goes on over a new connection: true after recording
 * why; false when it is over (any error recorded). */
static bool reconnect_wanted(struct sync *s)
{
	if (s->stopping)
		return false;
	if (s->oauth_retry) {
		s->oauth_retry = false;
		s->oauth_retried = true;
		return true;
	}
	if (!s->session_expired)
		return false;
	if (s->reconnects >= SYNC_RECONNECT_MAX) {
		sync_result_error(s->result, SYNC_TEMP,
				  "%s: the server ended the session %u times "
				  "in this pass because the access token "
				  "expired; the rest is left for the next pass",
				  s->name, s->reconnects + 1);
		return false;
	}
	s->reconnects++;
	trib_log(s->set->logger, TRIB_LOG_DEBUG,
		 "%s: refreshing the access token and reconnecting (%u of at "
		 "most %u)",
		 s->name, s->reconnects, SYNC_RECONNECT_MAX);
	if (trib_state_is_dirty(s->set->state))
		sync_commit(s);
	return true;
}

void sync_connect_next(struct sync *s)
{
	if (!reconnect_wanted(s)) {
		expired_give_up(s);
		sync_end(s);
		return;
	}
	trib_imap_client_destroy(&s->imap);
	s->reconnecting = true;
	if (s->result->state_failed) {
		connect_give_up(s);
		return;
	}
	account_secret(s, true);
}

void sync_connect_close(struct sync *s)
{
	struct trib_imap_client *imap = s->imap;
	bool connecting = s->connecting;

	if (imap == NULL)
		return;
	s->imap = NULL;
	s->connecting = false;
	trib_secret_free(&s->connect_secret);
	/* the commands' callbacks fire (canceled) and see s->imap NULL */
	trib_imap_client_destroy(&imap);
	if (connecting)
		sync_session_over(s); /* no connect callback comes */
}

void sync_connect_stop(struct sync *s)
{
	if (s->imap == NULL || s->done)
		return;
	/* a FETCH could stream for long: cut it; before the login there
	 * is no one to say goodbye to */
	if (s->connecting || s->fetch_running ||
	    !trib_imap_client_is_authenticated(s->imap))
		sync_connect_close(s);
}
