/* sync-oauth.c: the access token of an oauth2 account's pass.
 *
 * The cached access token in the user's vault is used while it is valid
 * for SYNC_OAUTH_MARGIN_SECS more; otherwise (or when the server refused
 * it) the refresh token is traded for a new one at the token endpoint.
 * A rotated refresh token and the new access token are committed to the
 * vault before the access token is used.
 *
 * When the token endpoint says the grant is gone (invalid_grant, a
 * revoked or expired refresh token), the account needs `tributary
 * authorize`: a marker file <state>/<user>/reauth-<account> holding the
 * refresh token's fingerprint (base64url SHA-256) keeps later passes from
 * asking the endpoint again with the same dead token. A new refresh token
 * in the vault (another fingerprint) clears it.
 *
 * Secrets: tokens and the client secret stay in buffers wiped with
 * trib_secret_free(); no error or log line holds one. */

#include "sync-private.h"

#include "alloc.h"
#include "cli.h"
#include "fileio.h"
#include "http.h"
#include "log.h"
#include "loop.h"
#include "oauth.h"
#include "settings.h"
#include "vault.h"

#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#define SYNC_REAUTH_MARKER_MAX 128

struct refresh_wait {
	struct trib_loop *loop;
	bool done;
	enum trib_error_class error_class;
	bool reauthorize;
	bool rotated;
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
	if (result->error != NULL)
		w->error = trib_strdup(result->error);
	if (result->error_class == TRIB_OK) {
		w->token = result->token;
		result->token = NULL;
	}
	trib_loop_break(w->loop);
}

/* ---- the reauthorization marker ---- */

static char *marker_path(const struct sync *s)
{
	return trib_strdup_printf("%s/reauth-%s",
				  trib_state_path(s->set->state),
				  s->account->name);
}

/* 1 when the marker names this fingerprint, 0 when there is none (a
 * marker of another refresh token is removed), -1 when it cannot be
 * read. */
static int marker_check(const struct sync *s, const char *fingerprint)
{
	char *path = marker_path(s);
	char buf[SYNC_REAUTH_MARKER_MAX + 1];
	ssize_t n;
	int fd, ret = 0;

	fd = open(path, O_RDONLY | O_NOFOLLOW | O_CLOEXEC);
	if (fd < 0) {
		ret = errno == ENOENT ? 0 : -1;
		free(path);
		return ret;
	}
	n = read(fd, buf, SYNC_REAUTH_MARKER_MAX);
	close(fd);
	if (n < 0) {
		free(path);
		return -1;
	}
	buf[n] = '\0';
	buf[strcspn(buf, "\n")] = '\0';
	if (strcmp(buf, fingerprint) == 0) {
		ret = 1;
	} else {
		/* a new refresh token was stored since */
		(void)unlink(path);
		(void)trib_fsync_dir_of(path);
	}
	free(path);
	return ret;
}

/* Write the marker atomically, owned like the state directory. */
static int marker_write(const struct sync *s, const char *fingerprint)
{
	char *path = marker_path(s);
	char *tmp = trib_strdup_printf("%s.tmp", path);
	char *text = trib_strdup_printf("%s\n", fingerprint);
	struct stat st;
	int fd, ret = -1;

	fd = open(tmp, O_WRONLY | O_CREAT | O_TRUNC | O_NOFOLLOW | O_CLOEXEC,
		  0600);
	if (fd >= 0) {
		if (geteuid() == 0 &&
		    stat(trib_state_path(s->set->state), &st) == 0 &&
		    fchown(fd, st.st_uid, st.st_gid) < 0)
			trib_log(s->set->logger, TRIB_LOG_WARNING,
				 "%s: cannot chown %s", s->name, tmp);
		if (trib_write_full(fd, text, strlen(text)) == 0 &&
		    fsync(fd) == 0 && close(fd) == 0) {
			fd = -1;
			if (rename(tmp, path) == 0 &&
			    trib_fsync_dir_of(path) == 0)
				ret = 0;
		}
		if (fd >= 0)
			close(fd);
		if (ret < 0)
			(void)unlink(tmp);
	}
	free(text);
	free(tmp);
	free(path);
	return ret;
}

/* ---- the token ---- */

static void reauth_error(struct sync *s, const char *why)
{
	sync_result_error(s->result, SYNC_AUTH,
			  "%s: reauthorization required: run `tributary "
			  "authorize -u %s %s` (%s)",
			  s->name, s->set->user, s->account->name, why);
}

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
		char *fingerprint = trib_oauth_pkce_challenge(refresh_token);

		reauth_error(s, w.error != NULL ? w.error : "refused");
		if (marker_write(s, fingerprint) < 0)
			trib_log(s->set->logger, TRIB_LOG_WARNING,
				 "%s: cannot record that the account needs "
				 "reauthorization in %s",
				 s->name, trib_state_path(s->set->state));
		free(fingerprint);
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
	}
	trib_oauth_token_free(&w.token);
	free(w.error);
	return ret;
}

int sync_oauth_token(struct sync *s, bool force, char **token_r)
{
	struct trib_vault *vault = s->set->vault;
	struct trib_vault_info info;
	const char *error;
	char *token = NULL, *refresh_token = NULL, *fingerprint;
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
			    (int64_t)time(NULL) + SYNC_OAUTH_MARGIN_SECS) {
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
	fingerprint = trib_oauth_pkce_challenge(refresh_token);
	ret = marker_check(s, fingerprint);
	free(fingerprint);
	if (ret != 0) {
		trib_secret_free(&refresh_token);
		reauth_error(s, ret > 0 ? "the token endpoint refused the "
					  "refresh token at an earlier pass"
					: "the reauthorization marker cannot "
					  "be read");
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
