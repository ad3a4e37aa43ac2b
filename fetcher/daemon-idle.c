/* daemon-idle.c: the daemon's IDLE watchers (see docs/daemon.md, "IDLE").
 *
 * An account whose pass ended OK, with idle = yes and max_connections of
 * at least 2 (the watcher takes one, a pass one more), gets one watcher:
 * its own connection, logged in with the secret that pass logged in
 * with (handed over through user_sync_settings.login_secret, copied,
 * wiped once sent), EXAMINE of the account's first folder (INBOX when
 * it has none), then IDLE. A new message there (EXISTS above what the
 * watcher knew) ends IDLE (DONE), makes the account due now
 * (schedule_account_wake()) and IDLE starts again; so it does every
 * DAEMON_IDLE_RENEW_SECS (RFC 2177: servers may drop an IDLE after 30
 * minutes).
 *
 * The watcher never gets a secret by itself (the vault and the state
 * are only open during the user's pass, under the state lock): when its
 * session ends because the access token expired (BYE AccessTokenExpired,
 * NO [EXPIRED] or [AUTHENTICATIONFAILED]) after it had been idling for
 * DAEMON_IDLE_MIN_SECS at least (so a server that refuses it at once
 * cannot make passes loop), it closes and makes the account due now: that pass
 * refreshes the token and starts a new watcher. Any other end (login refused,
 * connection lost, a server without IDLE) only closes it; the next OK pass
 * starts it again, and the poll interval keeps working regardless. A server
 * without IDLE is remembered for the account (until its settings
 * change): polling only. */

#include "daemon-private.h"

#include "alloc.h"
#include "imap-client.h"
#include "imap-commands.h"
#include "log.h"
#include "loop.h"

#include <event2/event.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define DAEMON_IDLE_MIN_SECS 60

struct daemon_idle {
	struct daemon_user *user;
	char *account; /* the account's name: its daemon_account moves */
	char *name;    /* "alice/work" */

	/* what it connects with (compared on a reload) */
	char *host, *ca_file, *login, *folder;
	char **sasl;
	unsigned int sasl_count, port, max_connections;
	enum trib_imap_tls_mode tls;
	enum trib_auth_method auth;
	bool tls_verify;

	char *secret;
	struct trib_imap_client *imap;
	struct trib_imap_idle *idle;
	struct event *renew_timer, *close_timer;
	uint32_t exists;
	/* IDLE ended by us: start it again when its reply comes */
	bool renewing;
	/* it has been idling (since idle_since): an expired token then
	 * means "pass now" */
	bool idled;
	int64_t idle_since;
	bool expired, failed;
};

static bool str_same(const char *a, const char *b)
{
	if (a == NULL || b == NULL)
		return a == b;
	return strcmp(a, b) == 0;
}

static const char *first_folder(const struct trib_account *account)
{
	return account->folder_count > 0 ? account->folders[0] : "INBOX";
}

bool daemon_idle_same(const struct daemon_idle *w, const struct trib_account *a)
{
	if (!a->idle || a->max_connections < 2 ||
	    a->sasl_count != w->sasl_count)
		return false;
	for (unsigned int i = 0; i < a->sasl_count; i++) {
		if (strcmp(a->sasl[i], w->sasl[i]) != 0)
			return false;
	}
	return str_same(a->host, w->host) && str_same(a->ca_file, w->ca_file) &&
	       str_same(a->login, w->login) &&
	       str_same(first_folder(a), w->folder) && a->port == w->port &&
	       a->tls == w->tls && a->auth == w->auth &&
	       a->tls_verify == w->tls_verify;
}

static struct daemon_account *idle_account(struct daemon_idle *w)
{
	struct daemon_user *u = w->user;

	for (unsigned int i = 0; i < u->list.count; i++) {
		if (u->accounts[i].name != NULL &&
		    strcmp(u->accounts[i].name, w->account) == 0)
			return &u->accounts[i];
	}
	return NULL;
}

static const struct trib_logger *idle_logger(struct daemon_idle *w)
{
	return &w->user->daemon->env.logger;
}

void daemon_idle_close(struct daemon_idle **_w)
{
	struct daemon_idle *w = *_w;

	*_w = NULL;
	if (w == NULL)
		return;
	w->failed = true;
	/* pending commands' callbacks fire (canceled) and see failed */
	trib_imap_client_destroy(&w->imap);
	event_free(w->renew_timer);
	event_free(w->close_timer);
	trib_secret_free(&w->secret);
	for (unsigned int i = 0; i < w->sasl_count; i++)
		free(w->sasl[i]);
	free(w->sasl);
	free(w->host);
	free(w->ca_file);
	free(w->login);
	free(w->folder);
	free(w->name);
	free(w->account);
	free(w);
}

/* The account due now (a pass), from the watcher. */
static void idle_wake(struct daemon_idle *w, const char *why)
{
	struct daemon_account *da = idle_account(w);
	struct daemon *d = w->user->daemon;

	if (da == NULL || d->stopping)
		return;
	trib_log(idle_logger(w), TRIB_LOG_DEBUG, "%s: %s: due now", w->name,
		 why);
	schedule_account_wake(&da->sched, daemon_now());
	daemon_kick(d);
}

static void on_close_timer(evutil_socket_t fd, short what, void *context)
{
	struct daemon_idle *w = context;
	struct daemon_account *da = idle_account(w);

	(void)fd;
	(void)what;
	if (w->expired && w->idled &&
	    daemon_now() - w->idle_since >= DAEMON_IDLE_MIN_SECS)
		idle_wake(w, "IDLE ended, the access token expired");
	if (da != NULL && da->idle == w)
		daemon_idle_close(&da->idle);
	else
		daemon_idle_close(&w);
}

/* Close it soon, from the loop (not inside the client's callbacks). */
static void idle_fail(struct daemon_idle *w, enum trib_log_level level,
		      const char *why)
{
	struct timeval tv = { 0, 0 };

	if (w->failed)
		return;
	w->failed = true;
	trib_log(idle_logger(w), level, "%s: IDLE watcher closed: %s", w->name,
		 why);
	evtimer_add(w->close_timer, &tv);
}

static bool code_is(const char *code, const char *name)
{
	return code != NULL && strcmp(code, name) == 0;
}

static void idle_begin(struct daemon_idle *w);

static void idle_done(const struct trib_imap_reply *reply, void *context)
{
	struct daemon_idle *w = context;

	w->idle = NULL;
	if (w->failed)
		return;
	evtimer_del(w->renew_timer);
	if (reply->status != TRIB_IMAP_STATUS_OK) {
		if (w->auth == TRIB_AUTH_OAUTH2 &&
		    (code_is(reply->code, "EXPIRED") ||
		     code_is(reply->code, "AUTHENTICATIONFAILED")))
			w->expired = true;
		idle_fail(w, TRIB_LOG_DEBUG,
			  reply->error != NULL ? reply->error : "IDLE failed");
		return;
	}
	if (!w->renewing) {
		idle_fail(w, TRIB_LOG_DEBUG, "the server ended IDLE");
		return;
	}
	idle_begin(w);
}

static void idle_end(struct daemon_idle *w)
{
	if (w->idle == NULL || w->renewing)
		return;
	w->renewing = true;
	trib_imap_idle_done(w->idle);
}

static void on_renew_timer(evutil_socket_t fd, short what, void *context)
{
	(void)fd;
	(void)what;
	idle_end(context);
}

static void idle_begin(struct daemon_idle *w)
{
	struct timeval tv = { DAEMON_IDLE_RENEW_SECS, 0 };

	w->renewing = false;
	w->idle = trib_imap_idle(w->imap, idle_done, w);
	if (!w->idled)
		w->idle_since = daemon_now();
	w->idled = true;
	evtimer_add(w->renew_timer, &tv);
}

static void examine_done(const struct trib_imap_reply *reply,
			 const struct trib_imap_mailbox_info *info,
			 void *context)
{
	struct daemon_idle *w = context;

	if (w->failed)
		return;
	if (reply->status != TRIB_IMAP_STATUS_OK) {
		idle_fail(w, TRIB_LOG_WARNING, reply->error);
		return;
	}
	w->exists = info->exists;
	trib_log(idle_logger(w), TRIB_LOG_DEBUG, "%s: IDLE on %s (%u messages)",
		 w->name, w->folder, info->exists);
	idle_begin(w);
}

static void auth_done(const struct trib_imap_reply *reply, void *context)
{
	struct daemon_idle *w = context;
	struct daemon_account *da;

	if (w->failed)
		return;
	if (reply->status != TRIB_IMAP_STATUS_OK) {
		idle_fail(w, TRIB_LOG_DEBUG, reply->error);
		return;
	}
	if (!trib_imap_client_has_capability(w->imap, "IDLE")) {
		da = idle_account(w);
		if (da != NULL)
			da->idle_unsupported = true;
		idle_fail(w, TRIB_LOG_INFO,
			  "the server does not offer IDLE: polling only");
		return;
	}
	trib_imap_select(w->imap, w->folder, true, false, examine_done, w);
}

static const char *idle_mech(const struct daemon_idle *w)
{
	char cap[64];

	for (unsigned int i = 0; i < w->sasl_count; i++) {
		snprintf(cap, sizeof(cap), "AUTH=%s", w->sasl[i]);
		if (trib_imap_client_has_capability(w->imap, cap))
			return w->sasl[i];
	}
	return w->sasl[0];
}

static void connect_done(const struct trib_imap_reply *reply, void *context)
{
	struct daemon_idle *w = context;

	if (w->failed) {
		trib_secret_free(&w->secret);
		return;
	}
	if (reply->status != TRIB_IMAP_STATUS_OK) {
		trib_secret_free(&w->secret);
		idle_fail(w, TRIB_LOG_DEBUG, reply->error);
		return;
	}
	trib_imap_client_authenticate(w->imap, idle_mech(w), w->login,
				      w->secret, auth_done, w);
	trib_secret_free(&w->secret);
}

static void imap_event(const struct trib_imap_event *event, void *context)
{
	struct daemon_idle *w = context;

	if (w->failed)
		return;
	switch (event->type) {
	case TRIB_IMAP_EVENT_EXISTS:
		if (event->number > w->exists && w->idled) {
			w->exists = event->number;
			idle_wake(w, "new mail (IDLE)");
			idle_end(w);
		}
		w->exists = event->number;
		break;
	case TRIB_IMAP_EVENT_EXPUNGE:
		if (w->exists > 0)
			w->exists--;
		break;
	case TRIB_IMAP_EVENT_BYE:
		if (w->auth == TRIB_AUTH_OAUTH2 && event->text != NULL &&
		    strstr(event->text, "AccessTokenExpired") != NULL)
			w->expired = true;
		break;
	case TRIB_IMAP_EVENT_DISCONNECTED:
		idle_fail(w, TRIB_LOG_DEBUG,
			  event->text != NULL ? event->text
					      : "the connection was lost");
		break;
	default:
		break;
	}
}

static struct daemon_idle *idle_new(struct daemon_user *u,
				    const struct trib_account *a)
{
	struct daemon_idle *w = trib_calloc(1, sizeof(*w));
	struct event_base *base = trib_loop_base(u->daemon->env.loop);

	w->user = u;
	w->account = trib_strdup(a->name);
	w->name = trib_strdup_printf("%s/%s", u->name, a->name);
	w->host = trib_strdup(a->host);
	w->ca_file = a->ca_file != NULL ? trib_strdup(a->ca_file) : NULL;
	w->login = trib_strdup(a->login);
	w->folder = trib_strdup(first_folder(a));
	w->sasl = trib_calloc(a->sasl_count + 1, sizeof(*w->sasl));
	for (unsigned int i = 0; i < a->sasl_count; i++)
		w->sasl[i] = trib_strdup(a->sasl[i]);
	w->sasl_count = a->sasl_count;
	w->port = a->port;
	w->max_connections = a->max_connections;
	w->tls = a->tls;
	w->auth = a->auth;
	w->tls_verify = a->tls_verify;
	w->renew_timer = evtimer_new(base, on_renew_timer, w);
	w->close_timer = evtimer_new(base, on_close_timer, w);
	return w;
}

void daemon_idle_start(struct daemon_user *u, struct daemon_account *da,
		       const struct trib_account *account)
{
	struct trib_imap_client_settings set;
	struct daemon_idle *w;
	const char *error;

	if (da->idle != NULL && !daemon_idle_same(da->idle, account))
		daemon_idle_close(&da->idle);
	if (da->idle != NULL || da->login_secret == NULL ||
	    u->daemon->stopping || !account->idle ||
	    account->max_connections < 2 || account->sasl_count == 0 ||
	    da->idle_unsupported) {
		trib_secret_free(&da->login_secret);
		return;
	}
	w = idle_new(u, account);
	w->secret = da->login_secret;
	da->login_secret = NULL;
	memset(&set, 0, sizeof(set));
	set.name = w->name;
	set.host = w->host;
	set.port = w->port;
	set.tls_mode = w->tls;
	set.ca_file = w->ca_file;
	set.tls_verify = w->tls_verify;
	set.logger = idle_logger(w);
	w->imap = trib_imap_client_create(u->daemon->env.loop, &set, &error);
	if (w->imap == NULL) {
		trib_log(idle_logger(w), TRIB_LOG_WARNING,
			 "%s: IDLE watcher: %s", w->name, error);
		daemon_idle_close(&w);
		return;
	}
	da->idle = w;
	trib_log(idle_logger(w), TRIB_LOG_DEBUG, "%s: IDLE watcher connecting",
		 w->name);
	trib_imap_client_set_event_handler(w->imap, imap_event, w);
	trib_imap_client_connect(w->imap, connect_done, w);
}

void daemon_idle_close_all(struct daemon *d)
{
	for (unsigned int i = 0; i < d->user_count; i++) {
		struct daemon_user *u = d->users[i];

		for (unsigned int j = 0; j < u->list.count; j++)
			daemon_idle_close(&u->accounts[j].idle);
	}
}
