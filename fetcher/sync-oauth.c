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

struct refresh_wait {
	struct trib_loop *loop;
	bool done;
	enum trib_error_class error_class;
	bool reauthorize;
	bool rotated;
	long retry_after_secs;
	char *error;
	struct trib_oauth_token *token;
};

static void refresh_done(struct trib_oauth_result *result, void *context)
{
	struct refresh_wait *w = context;

	w->done = true;
	w->error_class = result->error_class;
	w->reauthorize = result->reauthorize;
	w->rotated = result->refresh_token_rotated;
	w->retry_after_secs = result->retry_after_secs;
	if (result->error != NULL)
		w->error = trib_strdup(result->error);
	if (result->error_class == TRIB_OK) {
		w->token = result->token;
		result->token = NULL;
	}
	trib_loop_break(w->loop);
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

/* The notify command and the notice, whatever of them is still to do.
 * A failure is one more line of the result: the status stays AUTH. */
static void reauth_follow_up(struct sync *s, struct incident *incident)
{
	struct incident_settings set;
	char *error;

	memset(&set, 0, sizeof(set));
	set.user = s->set->user;
	set.account = s->account;
	set.notify_command = s->set->notify_command;
	set.notice = s->set->reauth_notice;
	set.lmtp = s->set->lmtp;
	set.keys = s->set->keys;
	set.logger = s->set->logger;
	if (incident_follow_up(s->loop, trib_state_path(s->set->state),
			       incident, &set, &error) < 0) {
		sync_result_error(s->result, SYNC_OK,
				  "%s: reauthorization follow-up: %s", s->name,
				  error);
		free(error);
	}
}

/* The endpoint refused refresh_token for good: a new incident. */
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
	} else {
		reauth_follow_up(s, incident);
	}
	incident_free(&incident);
}

/* 1 when an incident names refresh_token (reported, its follow-up
 * done): no asking the endpoint again; 0 when there is none (a record of
 * another refresh token is removed: a new one was stored). */
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
		return 1;
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
	incident_free(&incident);
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
static int store_tokens(struct sync *s, const struct refresh_wait *w)
{
	struct trib_vault *vault = s->set->vault;
	const char *error;

	if (w->rotated && w->token->refresh_token != NULL &&
	    trib_vault_set(vault, s->account->name, TRIB_VAULT_REFRESH_TOKEN,
			   w->token->refresh_token, 0,
			   &error) != TRIB_VAULT_OK) {
		sync_result_error(s->result, SYNC_TEMP,
				  "%s: cannot store the new refresh token: %s",
				  s->name, error);
		return -1;
	}
	if (trib_vault_set(vault, s->account->name, TRIB_VAULT_ACCESS_TOKEN,
			   w->token->access_token,
			   (int64_t)w->token->expires_at,
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

static int refresh(struct sync *s, const char *refresh_token, char **token_r)
{
	struct trib_http_client_settings http_set;
	struct trib_oauth_settings oauth_set;
	struct trib_oauth_request *req;
	struct refresh_wait w;
	const char *error;
	char *secret;
	bool failed;
	int ret = -1;

	secret = client_secret(s, &failed);
	if (failed)
		return -1;
	if (s->http == NULL) {
		memset(&http_set, 0, sizeof(http_set));
		http_set.name = s->name;
		http_set.logger = s->set->logger;
		s->http = trib_http_client_create(s->loop, &http_set, &error);
		if (s->http == NULL) {
			trib_secret_free(&secret);
			sync_result_error(s->result, SYNC_TEMP, "%s: %s",
					  s->name, error);
			return -1;
		}
	}
	trib_oauth_settings_from_account(s->account, secret, &oauth_set);
	oauth_set.name = s->name;
	oauth_set.user = s->set->user;

	memset(&w, 0, sizeof(w));
	w.loop = s->loop;
	req = trib_oauth_refresh(s->http, &oauth_set, refresh_token,
				 refresh_done, &w);
	if (req == NULL) {
		trib_secret_free(&secret);
		sync_result_error(s->result, SYNC_TEMP,
				  "%s: cannot start the token refresh",
				  s->name);
		return -1;
	}
	while (!w.done)
		trib_loop_run(s->loop);
	trib_secret_free(&secret);

	if (w.error_class == TRIB_OK) {
		if (store_tokens(s, &w) == 0) {
			trib_log(s->set->logger, TRIB_LOG_DEBUG,
				 "%s: access token refreshed%s", s->name,
				 w.rotated ? " (refresh token rotated)" : "");
			*token_r = trib_strdup(w.token->access_token);
			ret = 0;
		}
	} else if (w.reauthorize) {
		reauth_begin(s, refresh_token,
			     w.error != NULL ? w.error : "refused");
	} else if (w.error_class == TRIB_ERR_PERM) {
		sync_result_error(s->result, SYNC_CONFIG,
				  "%s: the token endpoint refused the refresh: "
				  "%s",
				  s->name,
				  w.error != NULL ? w.error : "refused");
	} else {
		sync_result_error(s->result, SYNC_TEMP,
				  "%s: cannot refresh the access token, "
				  "deferred: %s",
				  s->name,
				  w.error != NULL ? w.error : "failed");
		if (w.retry_after_secs > 0)
			s->result->token_not_before =
				(int64_t)time(NULL) + w.retry_after_secs;
	}
	trib_oauth_token_free(&w.token);
	free(w.error);
	return ret;
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

int sync_oauth_token(struct sync *s, bool force, char **token_r)
{
	struct trib_vault *vault = s->set->vault;
	struct trib_vault_info info;
	const char *error;
	char *token = NULL, *refresh_token = NULL;
	int ret;

	*token_r = NULL;
	if (vault == NULL) {
		sync_result_error(s->result, SYNC_CONFIG, "%s: %s", s->name,
				  s->set->vault_error != NULL
					  ? s->set->vault_error
					  : "the token vault is not open");
		return -1;
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
			s->oauth_cached = true;
			*token_r = token;
			return 0;
		}
		trib_secret_free(&token);
	}
	s->oauth_cached = false;

	ret = trib_vault_get(vault, s->account->name, TRIB_VAULT_REFRESH_TOKEN,
			     &refresh_token, NULL, &error);
	if (ret < 0) {
		sync_result_error(s->result, SYNC_CONFIG, "%s: %s", s->name,
				  error);
		return -1;
	}
	if (ret == 0) {
		reauth_error(s, "no refresh token in the vault");
		return -1;
	}
	if (reauth_check(s, refresh_token) != 0) {
		trib_secret_free(&refresh_token);
		return -1;
	}
	if (s->set->token_not_before > (int64_t)time(NULL)) {
		trib_secret_free(&refresh_token);
		not_before_error(s, s->set->token_not_before);
		return -1;
	}
	ret = refresh(s, refresh_token, token_r);
	trib_secret_free(&refresh_token);
	return ret;
}

void sync_oauth_deinit(struct sync *s)
{
	if (s->http != NULL)
		trib_http_client_destroy(&s->http);
}
