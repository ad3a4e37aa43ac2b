/* sync-oauth.c: the access token of an oauth2 account's pass.
 *
 * The cached access token in the user's vault is used while it is valid
 * for the margin (tributary_oauth_refresh_margin) more; otherwise (or when the
 * server refused it) the refresh token is traded for a new one at the token
 * endpoint. A rotated refresh token and the new access token are committed to
 * the vault before the access token is used.
 *
 * When the token endpoint says the grant is gone (invalid_grant, a
 * revoked or expired refresh token), the account needs `tributary
 * authorize`: an incident is recorded (incident.h) holding the refresh
 * token's fingerprint (base64url SHA-256), which keeps later passes from
 * asking the endpoint again with the same dead token, and its follow-up
 * (the admin's notify command, the user's notice) is done, at this pass
 * or, when a step fails, at a later one. A new refresh token in the vault
 * (another fingerprint) ends the incident: its record is removed.
 *
 * Nothing here blocks: the token request and the follow-up run on the
 * loop, and their callbacks hand the pass its secret (or none) through
 * sync_connect_secret(). sync_stop() aborts whichever is in flight.
 *
 * Secrets: tokens and the client secret stay in buffers wiped with
 * trib_secret_free(); no error or log line holds one. */

#include "sync-private.h"

#include "alloc.h"
#include "cli.h"
#include "crash.h"
#include "http.h"
#include "incident.h"
#include "log.h"
#include "loop.h"
#include "oauth.h"
#include "settings.h"
#include "vault.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

/* What an oauth2 pass keeps while it waits. */
struct sync_oauth {
	/* the token endpoint's client, made at the first refresh */
	struct trib_http_client *http;
	/* the refresh in flight, and the refresh token it sent */
	struct trib_oauth_request *request;
	char *refresh_token;
	/* the reauthorization follow-up in flight, its incident and
	 * settings */
	struct incident_follow_up *follow_up;
	struct incident *incident;
	struct incident_settings incident_set;
};

static struct sync_oauth *oauth_get(struct sync *s)
{
	if (s->oauth == NULL)
		s->oauth = trib_calloc(1, sizeof(*s->oauth));
	return s->oauth;
}

/* ---- the reauthorization incident ---- */

static void reauth_error(struct sync *s, const char *why)
{
	s->result->reauthorize = true;
	sync_result_error(s->result, SYNC_AUTH,
			  "%s: reauthorization required: run `tributary "
			  "authorize -u %s %s` (%s)",
			  s->name, s->set->user, s->account->name, why);
}

static void follow_up_done(const char *error, void *context)
{
	struct sync *s = context;

	s->oauth->follow_up = NULL;
	if (error != NULL)
		sync_result_error(s->result, SYNC_OK,
				  "%s: reauthorization follow-up: %s", s->name,
				  error);
	incident_free(&s->oauth->incident);
	sync_connect_secret(s, NULL);
}

/* The notify command and the notice, whatever of them is still to do
 * (takes incident); the pass then ends without a secret. A failure is
 * one more line of the result: the status stays AUTH. */
static void reauth_follow_up(struct sync *s, struct incident *incident)
{
	struct sync_oauth *o = oauth_get(s);
	struct incident_settings *set = &o->incident_set;

	if (s->stopping) {
		/* left for a later pass */
		incident_free(&incident);
		sync_connect_secret(s, NULL);
		return;
	}
	memset(set, 0, sizeof(*set));
	set->user = s->set->user;
	set->account = s->account;
	set->notify_command = s->set->notify_command;
	set->notice = s->set->reauth_notice;
	set->lmtp = s->set->lmtp;
	set->keys = s->set->keys;
	set->logger = s->set->logger;
	o->incident = incident;
	o->follow_up = incident_follow_up_start(
		s->loop, trib_state_path(s->set->state), incident, set,
		follow_up_done, s);
}

/* The endpoint refused refresh_token for good: a new incident, then
 * its follow-up; the pass ends without a secret. */
static void reauth_begin(struct sync *s, const char *refresh_token,
			 const char *why)
{
	struct incident *incident;
	char *error;

	reauth_error(s, why);
	incident = trib_calloc(1, sizeof(*incident));
	incident->account = trib_strdup(s->account->name);
	incident->fingerprint = trib_oauth_pkce_challenge(refresh_token);
	incident->since = (int64_t)time(NULL);
	incident->reason = incident_reason_clean(why);
	if (incident_write(trib_state_path(s->set->state), incident, &error) <
	    0) {
		/* no follow-up that could not be remembered: it would be
		 * repeated at every pass */
		sync_result_error(s->result, SYNC_OK,
				  "%s: cannot record that the account needs "
				  "reauthorization: %s",
				  s->name, error);
		free(error);
		incident_free(&incident);
		sync_connect_secret(s, NULL);
		return;
	}
	reauth_follow_up(s, incident);
}

/* 1 when an incident names refresh_token: reported, its follow-up
 * started (the pass ends after it); -1 when the record cannot be read
 * (reported); 0 when there is none (a record of another refresh token is
 * removed: a new one was stored). */
static int reauth_check(struct sync *s, const char *refresh_token)
{
	const char *user_dir = trib_state_path(s->set->state);
	struct incident *incident;
	char *fingerprint, *error;
	int ret;

	ret = incident_read(user_dir, s->account->name, &incident, &error);
	if (ret < 0) {
		reauth_error(s, error);
		free(error);
		return -1;
	}
	if (ret == 0)
		return 0;
	fingerprint = trib_oauth_pkce_challenge(refresh_token);
	if (strcmp(incident->fingerprint, fingerprint) != 0) {
		free(fingerprint);
		incident_free(&incident);
		if (incident_remove(user_dir, s->account->name, &error) < 0) {
			sync_result_error(s->result, SYNC_OK, "%s: %s", s->name,
					  error);
			free(error);
		}
		return 0;
	}
	free(fingerprint);
	reauth_error(s, incident->reason[0] != '\0'
				? incident->reason
				: "the token endpoint refused the refresh "
				  "token at an earlier pass");
	reauth_follow_up(s, incident);
	return 1;
}

/* ---- the token ---- */

/* The client secret, when the account has one (NULL otherwise, or with
 * *failed_r when its file cannot be read). */
static char *client_secret(struct sync *s, bool *failed_r)
{
	const struct trib_account_oauth *o = &s->account->oauth;
	const struct trib_settings_layer *global = s->set->global;
	const char *value;
	char *key, *secret;

	*failed_r = false;
	if (o->client_secret_file != NULL) {
		secret = cli_read_secret(o->client_secret_file, "");
		if (secret == NULL) {
			*failed_r = true;
			sync_result_error(s->result, SYNC_CONFIG,
					  "%s: cannot read the client secret "
					  "from %s",
					  s->name, o->client_secret_file);
		}
		return secret;
	}
	if (!o->client_secret_set || global == NULL ||
	    s->account->provider == NULL)
		return NULL;
	key = trib_strdup_printf("tributary_%s_client_secret",
				 s->account->provider->name);
	value = global->get(global->context, key);
	free(key);
	return value != NULL ? trib_strdup(value) : NULL;
}

/* Store what the endpoint answered: the rotated refresh token first
 * among the changes, the access token with its expiry, and commit. */
static int store_tokens(struct sync *s, const struct trib_oauth_result *r)
{
	struct trib_vault *vault = s->set->vault;
	const char *error;

	if (r->refresh_token_rotated && r->token->refresh_token != NULL &&
	    trib_vault_set(vault, s->account->name, TRIB_VAULT_REFRESH_TOKEN,
			   r->token->refresh_token, 0,
			   &error) != TRIB_VAULT_OK) {
		sync_result_error(s->result, SYNC_TEMP,
				  "%s: cannot store the new refresh token: %s",
				  s->name, error);
		return -1;
	}
	if (trib_vault_set(vault, s->account->name, TRIB_VAULT_ACCESS_TOKEN,
			   r->token->access_token,
			   (int64_t)r->token->expires_at,
			   &error) != TRIB_VAULT_OK) {
		sync_result_error(s->result, SYNC_TEMP,
				  "%s: cannot store the access token: %s",
				  s->name, error);
		return -1;
	}
	if (trib_vault_commit(vault, &error) != TRIB_VAULT_OK) {
		sync_result_error(s->result, SYNC_TEMP,
				  "%s: cannot save the vault, deferred: %s",
				  s->name, error);
		return -1;
	}
	TRIB_CRASH_POINT("oauth-after-store");
	return 0;
}

static void refresh_done(struct trib_oauth_result *result, void *context)
{
	struct sync *s = context;
	struct sync_oauth *o = s->oauth;
	const char *why = result->error;
	char *token = NULL;

	o->request = NULL;
	if (result->error_class == TRIB_OK) {
		/* stored even when stopping: a rotated refresh token may be
		 * the only valid one now */
		if (store_tokens(s, result) == 0) {
			trib_log(s->set->logger, TRIB_LOG_DEBUG,
				 "%s: access token refreshed%s", s->name,
				 result->refresh_token_rotated
					 ? " (refresh token rotated)"
					 : "");
			token = trib_strdup(result->token->access_token);
		}
	} else if (s->stopping && result->error_class == TRIB_ERR_CANCELED) {
		/* sync_stop(): the pass ends */
	} else if (result->reauthorize) {
		reauth_begin(s, o->refresh_token,
			     why != NULL ? why : "refused");
		trib_secret_free(&o->refresh_token);
		return;
	} else if (result->error_class == TRIB_ERR_PERM) {
		sync_result_error(s->result, SYNC_CONFIG,
				  "%s: the token endpoint refused the refresh: "
				  "%s",
				  s->name, why != NULL ? why : "refused");
	} else {
		sync_result_error(s->result, SYNC_TEMP,
				  "%s: cannot refresh the access token, "
				  "deferred: %s",
				  s->name, why != NULL ? why : "failed");
		if (result->retry_after_secs > 0)
			s->result->token_not_before =
				(int64_t)time(NULL) + result->retry_after_secs;
	}
	trib_secret_free(&o->refresh_token);
	sync_connect_secret(s, token);
}

/* Ask the token endpoint for a new access token (takes refresh_token);
 * refresh_done() follows. */
static void refresh_start(struct sync *s, char *refresh_token)
{
	struct sync_oauth *o = oauth_get(s);
	struct trib_http_client_settings http_set;
	struct trib_oauth_settings oauth_set;
	const char *error;
	char *secret;
	bool failed;

	secret = client_secret(s, &failed);
	if (failed) {
		trib_secret_free(&refresh_token);
		sync_connect_secret(s, NULL);
		return;
	}
	if (o->http == NULL) {
		memset(&http_set, 0, sizeof(http_set));
		http_set.name = s->name;
		http_set.logger = s->set->logger;
		o->http = trib_http_client_create(s->loop, &http_set, &error);
		if (o->http == NULL) {
			trib_secret_free(&secret);
			trib_secret_free(&refresh_token);
			sync_result_error(s->result, SYNC_TEMP, "%s: %s",
					  s->name, error);
			sync_connect_secret(s, NULL);
			return;
		}
	}
	trib_oauth_settings_from_account(s->account, secret, &oauth_set);
	oauth_set.name = s->name;
	oauth_set.user = s->set->user;

	/* the request keeps copies of the secrets it sends */
	o->refresh_token = refresh_token;
	o->request = trib_oauth_refresh(o->http, &oauth_set, refresh_token,
					refresh_done, s);
	trib_secret_free(&secret);
	if (o->request == NULL) {
		trib_secret_free(&o->refresh_token);
		sync_result_error(s->result, SYNC_TEMP,
				  "%s: cannot start the token refresh",
				  s->name);
		sync_connect_secret(s, NULL);
	}
}

/* The token endpoint asked (Retry-After) not to be asked before
 * not_before: the account waits, without a request. */
static void not_before_error(struct sync *s, int64_t not_before)
{
	time_t t = (time_t)not_before;
	char when[32];
	struct tm tm;

	if (localtime_r(&t, &tm) == NULL ||
	    strftime(when, sizeof(when), "%Y-%m-%d %H:%M:%S", &tm) == 0)
		snprintf(when, sizeof(when), "%lld", (long long)not_before);
	sync_result_error(s->result, SYNC_TEMP,
			  "%s: the token endpoint asked not to be asked "
			  "again before %s (Retry-After); deferred",
			  s->name, when);
	s->result->token_not_before = not_before;
}

void sync_oauth_token(struct sync *s, bool force)
{
	struct trib_vault *vault = s->set->vault;
	struct trib_vault_info info;
	const char *error;
	char *token = NULL, *refresh_token = NULL;
	int ret;

	if (vault == NULL) {
		sync_result_error(s->result, SYNC_CONFIG, "%s: %s", s->name,
				  s->set->vault_error != NULL
					  ? s->set->vault_error
					  : "the token vault is not open");
		sync_connect_secret(s, NULL);
		return;
	}
	if (!force) {
		ret = trib_vault_get(vault, s->account->name,
				     TRIB_VAULT_ACCESS_TOKEN, &token, &info,
				     &error);
		if (ret > 0 && info.expires_at != 0 &&
		    info.expires_at >
			    (int64_t)time(NULL) + s->set->oauth_margin_secs) {
			trib_log(s->set->logger, TRIB_LOG_DEBUG,
				 "%s: cached access token, valid for %lld s",
				 s->name,
				 (long long)(info.expires_at - time(NULL)));
			sync_connect_secret(s, token);
			return;
		}
		trib_secret_free(&token);
	}

	ret = trib_vault_get(vault, s->account->name, TRIB_VAULT_REFRESH_TOKEN,
			     &refresh_token, NULL, &error);
	if (ret < 0) {
		sync_result_error(s->result, SYNC_CONFIG, "%s: %s", s->name,
				  error);
		sync_connect_secret(s, NULL);
		return;
	}
	if (ret == 0) {
		reauth_error(s, "no refresh token in the vault");
		sync_connect_secret(s, NULL);
		return;
	}
	ret = reauth_check(s, refresh_token);
	if (ret != 0) {
		trib_secret_free(&refresh_token);
		if (ret < 0)
			sync_connect_secret(s, NULL);
		/* else the follow-up goes on, then the pass ends */
		return;
	}
	if (s->set->token_not_before > (int64_t)time(NULL)) {
		trib_secret_free(&refresh_token);
		not_before_error(s, s->set->token_not_before);
		sync_connect_secret(s, NULL);
		return;
	}
	refresh_start(s, refresh_token);
}

void sync_oauth_stop(struct sync *s)
{
	if (s->oauth == NULL)
		return;
	/* each callback fires before the abort returns, and ends the
	 * pass (s->stopping) */
	trib_oauth_request_abort(&s->oauth->request);
	incident_follow_up_abort(&s->oauth->follow_up);
}

void sync_oauth_deinit(struct sync *s)
{
	struct sync_oauth *o = s->oauth;

	if (o == NULL)
		return;
	trib_oauth_request_abort(&o->request);
	incident_follow_up_abort(&o->follow_up);
	if (o->http != NULL)
		trib_http_client_destroy(&o->http);
	trib_secret_free(&o->refresh_token);
	incident_free(&o->incident);
	free(o);
	s->oauth = NULL;
}
