/* account.c: resolve and validate accounts from layered settings. */

#include "account.h"

#include "alloc.h"

#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#define PREFIX "tributary_"
#define DEFAULT_POLL_SECS 300
#define MIN_POLL_SECS 10
#define DEFAULT_MARGIN_SECS 300
#define MAX_MARGIN_SECS 3600
#define DEFAULT_PARALLEL_USERS 4
#define MAX_PARALLEL_USERS 1000

/* Fields an account may have: tributary_<account>_<suffix>. */
static const char *const account_suffixes[] = {
	"provider",
	"login",
	"host",
	"port",
	"tls",
	"tls_verify",
	"auth",
	"password_file",
	"sasl",
	"folders",
	"deliver",
	"remote",
	"poll_interval",
	"idle",
	"max_connections",
	"client_id",
	"client_secret_file",
	"tenant",
	"oauth_authorize_url",
	"oauth_token_url",
	"oauth_device_url",
	"oauth_scope",
	"ca_file",
	NULL,
};

/* Global settings a user's fields may override. */
static const char *const user_overridable[] = {
	"tributary_poll_interval",
	"tributary_idle",
	NULL,
};

static const char *const global_names[] = {
	"tributary_state_dir",
	"tributary_vault_key_file",
	"tributary_trace_key_file",
	/* read by the LMTP plugin only */
	"tributary_delivered_path",
	"tributary_poll_interval",
	"tributary_idle",
	"tributary_log_level",
	"tributary_lmtp",
	"tributary_notify_command",
	"tributary_reauth_notice",
	"tributary_oauth_refresh_margin",
	"tributary_max_parallel_users",
	"tributary_outlook_app_tenant",
	"tributary_outlook_app_client_id",
	"tributary_outlook_app_client_secret_file",
	NULL,
};

static const char *const provider_suffixes[] = {
	"max_connections",    "client_id", "client_secret",
	"client_secret_file", "tenant",	   NULL,
};

static bool in_list(const char *const *list, const char *name)
{
	for (; *list != NULL; list++) {
		if (strcmp(*list, name) == 0)
			return true;
	}
	return false;
}

static void strlist_add(char ***list, unsigned int *count, char *str)
{
	*list = trib_realloc(*list, (*count + 2) * sizeof(char *));
	(*list)[(*count)++] = str;
	(*list)[*count] = NULL;
}

static bool has_control_chars(const char *str)
{
	for (const unsigned char *p = (const unsigned char *)str; *p != '\0';
	     p++) {
		if (*p < 0x20 || *p == 0x7f)
			return true;
	}
	return false;
}

static const char *layer_get(const struct trib_settings_layer *layer,
			     const char *key)
{
	return layer == NULL || layer->get == NULL
		       ? NULL
		       : layer->get(layer->context, key);
}

/* ---- global settings ---- */

static void global_error(struct trib_global_settings *set, const char *fmt, ...)
	TRIB_ATTR_PRINTF(2, 3);

static void global_error(struct trib_global_settings *set, const char *fmt, ...)
{
	va_list args;
	char *msg, *line;

	va_start(args, fmt);
	msg = trib_strdup_vprintf(fmt, args);
	va_end(args);
	line = trib_strdup_printf("plugin settings: %s", msg);
	free(msg);
	strlist_add(&set->errors, &set->error_count, line);
}

static bool is_provider_setting(const char *key)
{
	const struct trib_provider *const *p;
	size_t len;

	for (p = trib_providers(); *p != NULL; p++) {
		len = strlen(PREFIX) + strlen((*p)->name);
		if (strncmp(key, PREFIX, strlen(PREFIX)) == 0 &&
		    strncmp(key + strlen(PREFIX), (*p)->name,
			    strlen((*p)->name)) == 0 &&
		    key[len] == '_' &&
		    in_list(provider_suffixes, key + len + 1))
			return true;
	}
	return false;
}

static char *global_path(struct trib_global_settings *set,
			 const struct trib_settings_layer *global,
			 const char *key, const char *def)
{
	const char *value = layer_get(global, key);

	if (value == NULL || value[0] == '\0')
		return trib_strdup(def);
	if (value[0] != '/')
		global_error(set, "%s: '%s' is not an absolute path", key,
			     value);
	return trib_strdup(value);
}

static void global_check_providers(struct trib_global_settings *set,
				   const struct trib_settings_layer *global)
{
	static const char *const app[] = {
		"tributary_outlook_app_tenant",
		"tributary_outlook_app_client_id",
		"tributary_outlook_app_client_secret_file",
	};
	unsigned int app_set = 0, num;
	char key[128];
	const char *value;

	for (const struct trib_provider *const *p = trib_providers();
	     *p != NULL; p++) {
		snprintf(key, sizeof(key), PREFIX "%s_max_connections",
			 (*p)->name);
		value = layer_get(global, key);
		if (value != NULL &&
		    !trib_settings_parse_uint(value, 1, 100, &num))
			global_error(set, "%s: '%s' is not 1-100", key, value);
		if ((*p)->client_secret != TRIB_CLIENT_SECRET_NEVER)
			continue;
		snprintf(key, sizeof(key), PREFIX "%s_client_secret",
			 (*p)->name);
		if (layer_get(global, key) != NULL)
			global_error(set,
				     "%s: %s apps are public clients, whose "
				     "token requests must carry no secret: "
				     "remove it",
				     key, (*p)->name);
		snprintf(key, sizeof(key), PREFIX "%s_client_secret_file",
			 (*p)->name);
		if (layer_get(global, key) != NULL)
			global_error(set,
				     "%s: %s apps are public clients, whose "
				     "token requests must carry no secret: "
				     "remove it",
				     key, (*p)->name);
	}
	for (size_t i = 0; i < TRIB_N_ELEMENTS(app); i++) {
		if (layer_get(global, app[i]) != NULL)
			app_set++;
	}
	if (app_set != 0 && app_set != TRIB_N_ELEMENTS(app))
		global_error(set,
			     "Microsoft 365 app-only access needs all of "
			     "tributary_outlook_app_tenant, _app_client_id "
			     "and _app_client_secret_file");
}

void trib_global_settings_load(const struct trib_settings_layer *global,
			       const char *base_dir,
			       struct trib_global_settings *set_r)
{
	static const char *const levels[] = { "debug", "info", "warning",
					      "error", NULL };
	const char *value;
	char *def_lmtp;

	memset(set_r, 0, sizeof(*set_r));
	set_r->state_dir = global_path(set_r, global, PREFIX "state_dir",
				       "/var/lib/tributary");
	set_r->vault_key_file =
		global_path(set_r, global, PREFIX "vault_key_file",
			    "/etc/tributary/vault.key");
	set_r->trace_key_file =
		global_path(set_r, global, PREFIX "trace_key_file",
			    "/etc/tributary/trace.key");
	set_r->poll_interval_secs = DEFAULT_POLL_SECS;
	value = layer_get(global, PREFIX "poll_interval");
	if (value != NULL &&
	    (!trib_settings_parse_time(value, &set_r->poll_interval_secs) ||
	     set_r->poll_interval_secs < MIN_POLL_SECS))
		global_error(set_r,
			     "tributary_poll_interval: '%s' is not a time "
			     "of 10s to 30 days",
			     value);
	set_r->idle = true;
	value = layer_get(global, PREFIX "idle");
	if (value != NULL && !trib_settings_parse_bool(value, &set_r->idle))
		global_error(set_r, "tributary_idle: '%s' is not yes or no",
			     value);
	value = layer_get(global, PREFIX "log_level");
	set_r->log_level = trib_strdup(value != NULL ? value : "info");
	if (!in_list(levels, set_r->log_level))
		global_error(set_r,
			     "tributary_log_level: '%s' is not debug, info, "
			     "warning or error",
			     set_r->log_level);
	def_lmtp = trib_strdup_printf(
		"unix:%s/lmtp", base_dir != NULL ? base_dir : "/run/dovecot");
	value = layer_get(global, PREFIX "lmtp");
	set_r->lmtp = trib_strdup(value != NULL ? value : def_lmtp);
	free(def_lmtp);
	if (strncmp(set_r->lmtp, "unix:/", 6) != 0 &&
	    strrchr(set_r->lmtp, ':') == NULL)
		global_error(set_r,
			     "tributary_lmtp: '%s' is not unix:/path or "
			     "host:port",
			     set_r->lmtp);
	value = layer_get(global, PREFIX "notify_command");
	if (value != NULL && value[0] != '\0') {
		set_r->notify_command = trib_strdup(value);
		if (has_control_chars(value))
			global_error(set_r, "tributary_notify_command: control "
					    "characters in the command line");
	}
	set_r->reauth_notice = true;
	value = layer_get(global, PREFIX "reauth_notice");
	if (value != NULL &&
	    !trib_settings_parse_bool(value, &set_r->reauth_notice))
		global_error(set_r,
			     "tributary_reauth_notice: '%s' is not yes or no",
			     value);
	set_r->oauth_refresh_margin_secs = DEFAULT_MARGIN_SECS;
	value = layer_get(global, PREFIX "oauth_refresh_margin");
	if (value != NULL &&
	    (!trib_settings_parse_time(value,
				       &set_r->oauth_refresh_margin_secs) ||
	     set_r->oauth_refresh_margin_secs > MAX_MARGIN_SECS))
		global_error(set_r,
			     "tributary_oauth_refresh_margin: '%s' is not a "
			     "time of 0 to 1h",
			     value);
	set_r->max_parallel_users = DEFAULT_PARALLEL_USERS;
	value = layer_get(global, PREFIX "max_parallel_users");
	if (value != NULL &&
	    !trib_settings_parse_uint(value, 1, MAX_PARALLEL_USERS,
				      &set_r->max_parallel_users))
		global_error(set_r,
			     "tributary_max_parallel_users: '%s' is not a "
			     "number of 1 to 1000",
			     value);
	global_check_providers(set_r, global);

	/* Unknown names: typos, or account fields put where only a user's
	 * userdb fields belong. */
	if (global != NULL && global->keys != NULL) {
		for (const char *const *k = global->keys(global->context);
		     *k != NULL; k++) {
			if (strncmp(*k, PREFIX, strlen(PREFIX)) != 0 ||
			    in_list(global_names, *k) ||
			    is_provider_setting(*k))
				continue;
			global_error(set_r,
				     "unknown setting %s (account settings "
				     "belong in the user's userdb fields)",
				     *k);
		}
	}
}

void trib_global_settings_free(struct trib_global_settings *set)
{
	free(set->state_dir);
	free(set->vault_key_file);
	free(set->trace_key_file);
	free(set->log_level);
	free(set->lmtp);
	free(set->notify_command);
	trib_strlist_free(set->errors);
	memset(set, 0, sizeof(*set));
}

/* ---- one account ---- */

struct resolve {
	struct trib_account_list *list;
	const struct trib_settings_layer *user, *global;
	const struct trib_global_settings *globals;
	struct trib_account *acct;
	bool failed;
	char key[160];
};

static void acct_error(struct resolve *r, const char *fmt, ...)
	TRIB_ATTR_PRINTF(2, 3);

static void acct_error(struct resolve *r, const char *fmt, ...)
{
	va_list args;
	char *msg;

	va_start(args, fmt);
	msg = trib_strdup_vprintf(fmt, args);
	va_end(args);
	strlist_add(&r->list->errors, &r->list->error_count,
		    trib_strdup_printf("%s/%s: %s", r->list->user,
				       r->acct->name, msg));
	free(msg);
	r->failed = true;
}

/* The account's own field (userdb only). */
static const char *field(struct resolve *r, const char *suffix)
{
	snprintf(r->key, sizeof(r->key), PREFIX "%s_%s", r->acct->name, suffix);
	return layer_get(r->user, r->key);
}

/* A global setting, overridable by the user's fields. */
static const char *layered(struct resolve *r, const char *key)
{
	const char *value = layer_get(r->user, key);

	return value != NULL ? value : layer_get(r->global, key);
}

static void resolve_provider(struct resolve *r)
{
	const char *value = field(r, "provider");

	if (value == NULL || value[0] == '\0') {
		acct_error(r, "provider is missing (%s: %s)", r->key,
			   trib_provider_names());
		return;
	}
	r->acct->provider = trib_provider_find(value);
	if (r->acct->provider == NULL)
		acct_error(r, "unknown provider '%s' (%s)", value,
			   trib_provider_names());
}

static void resolve_endpoint(struct resolve *r)
{
	const struct trib_provider *p = r->acct->provider;
	const char *value;
	bool tls_given;

	value = field(r, "login");
	if (value == NULL || value[0] == '\0')
		acct_error(r, "login is missing (%s)", r->key);
	else if (has_control_chars(value))
		acct_error(r, "login has control characters");
	else
		r->acct->login = trib_strdup(value);

	value = field(r, "host");
	if (value == NULL && p->host == NULL)
		acct_error(r, "host is missing (%s; the %s provider has none)",
			   r->key, p->name);
	else if (value != NULL &&
		 (value[0] == '\0' || strlen(value) > 253 ||
		  strpbrk(value, " \t/") != NULL || has_control_chars(value)))
		acct_error(r, "host '%s' is not a host name or address", value);
	else
		r->acct->host = trib_strdup(value != NULL ? value : p->host);

	r->acct->tls = p->tls;
	value = field(r, "tls");
	tls_given = value != NULL;
	if (value == NULL || strcmp(value, "implicit") == 0) {
		/* preset */
	} else if (strcmp(value, "starttls") == 0) {
		r->acct->tls = TRIB_IMAP_TLS_STARTTLS;
	} else {
		acct_error(r,
			   "tls '%s' is not implicit or starttls (there is "
			   "no clear-text mode)",
			   value);
	}

	value = field(r, "port");
	if (value == NULL)
		r->acct->port =
			tls_given && r->acct->tls == TRIB_IMAP_TLS_STARTTLS
				? 143
				: p->port;
	else if (!trib_settings_parse_uint(value, 1, 65535, &r->acct->port))
		acct_error(r, "port '%s' is not a port number (1-65535)",
			   value);

	value = field(r, "ca_file");
	if (value != NULL && value[0] != '/')
		acct_error(r, "ca_file '%s' is not an absolute path", value);
	else if (value != NULL)
		r->acct->ca_file = trib_strdup(value);

	r->acct->tls_verify = true;
	value = field(r, "tls_verify");
	if (value != NULL &&
	    !trib_settings_parse_bool(value, &r->acct->tls_verify))
		acct_error(r, "tls_verify '%s' is not yes or no", value);
}

static bool sasl_is_oauth(const char *mech)
{
	return strcasecmp(mech, "XOAUTH2") == 0 ||
	       strcasecmp(mech, "OAUTHBEARER") == 0;
}

static void resolve_auth(struct resolve *r)
{
	struct trib_account *acct = r->acct;
	const char *value;
	unsigned int count;
	char **mechs;

	acct->auth = acct->provider->auth;
	value = field(r, "auth");
	if (value != NULL && !trib_auth_method_parse(value, &acct->auth))
		acct_error(r,
			   "auth '%s' is not oauth2, app_password or "
			   "password_file",
			   value);

	value = field(r, "password_file");
	if (acct->auth == TRIB_AUTH_PASSWORD_FILE) {
		if (value == NULL || value[0] != '/')
			acct_error(r,
				   "auth password_file needs an absolute path "
				   "in %s",
				   r->key);
		else
			acct->password_file = trib_strdup(value);
	}

	value = field(r, "sasl");
	if (value != NULL) {
		mechs = trib_settings_split_list(value, &count);
		for (unsigned int i = 0; i < count; i++) {
			bool oauth = sasl_is_oauth(mechs[i]);

			if (!oauth && strcasecmp(mechs[i], "PLAIN") != 0 &&
			    strcasecmp(mechs[i], "LOGIN") != 0)
				acct_error(r,
					   "sasl '%s' is not PLAIN, LOGIN, "
					   "XOAUTH2 or OAUTHBEARER",
					   mechs[i]);
			else if (oauth != (acct->auth == TRIB_AUTH_OAUTH2))
				acct_error(r, "sasl '%s' does not fit auth %s",
					   mechs[i],
					   trib_auth_method_name(acct->auth));
		}
		if (count == 0)
			acct_error(r, "sasl is empty");
		acct->sasl = mechs;
		acct->sasl_count = count;
	} else if (acct->auth == TRIB_AUTH_OAUTH2) {
		acct->sasl =
			trib_calloc(TRIB_PROVIDER_MAX_SASL + 1, sizeof(char *));
		for (unsigned int i = 0; i < TRIB_PROVIDER_MAX_SASL &&
					 acct->provider->oauth_sasl[i] != NULL;
		     i++)
			acct->sasl[acct->sasl_count++] =
				trib_strdup(acct->provider->oauth_sasl[i]);
	} else {
		acct->sasl = trib_calloc(2, sizeof(char *));
		acct->sasl[0] = trib_strdup("PLAIN");
		acct->sasl_count = 1;
	}
}

static void resolve_delivery(struct resolve *r)
{
	struct trib_account *acct = r->acct;
	const char *value;

	value = field(r, "folders");
	acct->folders = trib_settings_split_list(
		value != NULL ? value : "INBOX", &acct->folder_count);
	if (acct->folder_count == 0)
		acct_error(r, "folders is empty (%s)", r->key);
	for (unsigned int i = 0; i < acct->folder_count; i++) {
		if (has_control_chars(acct->folders[i]) ||
		    strlen(acct->folders[i]) > 1000)
			acct_error(r, "folder '%s' is not a folder name",
				   acct->folders[i]);
	}

	value = field(r, "deliver");
	if (value == NULL || strcasecmp(value, "INBOX") == 0) {
		acct->deliver_folder = NULL;
	} else if (value[0] == '+' && value[1] != '\0' &&
		   !has_control_chars(value) && strlen(value) < 500) {
		acct->deliver_folder = trib_strdup(value + 1);
	} else {
		acct_error(r, "deliver '%s' is not INBOX or +Folder", value);
	}

	value = field(r, "remote");
	if (value == NULL || strcmp(value, "keep") == 0)
		acct->delete_remote = false;
	else if (strcmp(value, "delete") == 0)
		acct->delete_remote = true;
	else
		acct_error(r, "remote '%s' is not keep or delete", value);
}

static void resolve_schedule(struct resolve *r)
{
	struct trib_account *acct = r->acct;
	const char *value;
	char key[128];

	acct->poll_interval_secs = r->globals->poll_interval_secs;
	value = field(r, "poll_interval");
	if (value == NULL)
		value = layer_get(r->user, PREFIX "poll_interval");
	if (value != NULL &&
	    (!trib_settings_parse_time(value, &acct->poll_interval_secs) ||
	     acct->poll_interval_secs < MIN_POLL_SECS))
		acct_error(r,
			   "poll_interval '%s' is not a time of 10s to 30 "
			   "days",
			   value);

	acct->idle = r->globals->idle;
	value = field(r, "idle");
	if (value == NULL)
		value = layer_get(r->user, PREFIX "idle");
	if (value != NULL && !trib_settings_parse_bool(value, &acct->idle))
		acct_error(r, "idle '%s' is not yes or no", value);
	if (!acct->provider->idle)
		acct->idle = false;

	acct->max_connections = acct->provider->max_connections;
	snprintf(key, sizeof(key), PREFIX "%s_max_connections",
		 acct->provider->name);
	value = field(r, "max_connections");
	if (value == NULL)
		value = layered(r, key);
	if (value != NULL &&
	    !trib_settings_parse_uint(value, 1, 100, &acct->max_connections))
		acct_error(r, "max_connections '%s' is not 1-100", value);
}

/* "{tenant}" replaced. */
static char *fill_tenant(const char *url, const char *tenant)
{
	const char *p = strstr(url, "{tenant}");

	if (p == NULL || tenant == NULL)
		return trib_strdup(url);
	return trib_strdup_printf("%.*s%s%s", (int)(p - url), url, tenant,
				  p + strlen("{tenant}"));
}

static char *resolve_url(struct resolve *r, const char *suffix,
			 const char *preset, bool required)
{
	const char *value = field(r, suffix);

	if (value == NULL)
		value = preset;
	if (value == NULL) {
		if (required)
			acct_error(r,
				   "auth oauth2 with the %s provider needs "
				   "%s",
				   r->acct->provider->name, r->key);
		return NULL;
	}
	if (strncmp(value, "https://", 8) != 0)
		acct_error(r, "%s '%s' is not an https:// URL", suffix, value);
	return fill_tenant(value, r->acct->oauth.tenant);
}

static void resolve_oauth(struct resolve *r)
{
	struct trib_account *acct = r->acct;
	const struct trib_provider *p = acct->provider;
	struct trib_account_oauth *o = &acct->oauth;
	char key[128];
	const char *value;

	if (acct->auth != TRIB_AUTH_OAUTH2)
		return;
	snprintf(key, sizeof(key), PREFIX "%s_tenant", p->name);
	value = field(r, "tenant");
	if (value == NULL)
		value = layered(r, key);
	if (value == NULL)
		value = p->tenant;
	if (value != NULL) {
		if (value[0] == '\0' ||
		    strspn(value, "abcdefghijklmnopqrstuvwxyz"
				  "ABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789.-") !=
			    strlen(value))
			acct_error(r,
				   "tenant '%s' is not a tenant id or domain",
				   value);
		else
			o->tenant = trib_strdup(value);
	}
	o->authorize_url =
		resolve_url(r, "oauth_authorize_url", p->authorize_url, true);
	o->token_url = resolve_url(r, "oauth_token_url", p->token_url, true);
	o->device_url =
		resolve_url(r, "oauth_device_url", p->device_url, false);
	value = field(r, "oauth_scope");
	if (value == NULL)
		value = p->scope;
	if (value == NULL)
		acct_error(r, "auth oauth2 with the %s provider needs %s",
			   p->name, r->key);
	else
		o->scope = trib_strdup(value);
	o->authorize_params = p->authorize_params;

	snprintf(key, sizeof(key), PREFIX "%s_client_id", p->name);
	value = field(r, "client_id");
	if (value == NULL)
		value = layered(r, key);
	if (value == NULL || value[0] == '\0')
		acct_error(r,
			   "auth oauth2 needs the OAuth client id of your "
			   "registered app: set %s in conf.d/90-tributary.conf "
			   "(see docs/configuration.md)",
			   key);
	else
		o->client_id = trib_strdup(value);

	snprintf(key, sizeof(key), PREFIX "%s_client_secret", p->name);
	o->client_secret_set = layered(r, key) != NULL;
	snprintf(key, sizeof(key), PREFIX "%s_client_secret_file", p->name);
	value = field(r, "client_secret_file");
	if (value == NULL)
		value = layered(r, key);
	if (value != NULL) {
		if (value[0] != '/')
			acct_error(r,
				   "client_secret_file '%s' is not an "
				   "absolute path",
				   value);
		o->client_secret_file = trib_strdup(value);
	}
	if (p->client_secret == TRIB_CLIENT_SECRET_REQUIRED &&
	    !o->client_secret_set && o->client_secret_file == NULL)
		acct_error(r,
			   "%s needs the client secret of your desktop app: "
			   "set tributary_%s_client_secret or _client_secret_"
			   "file",
			   p->name, p->name);
	if (p->client_secret == TRIB_CLIENT_SECRET_NEVER &&
	    o->client_secret_file != NULL)
		acct_error(r,
			   "%s apps are public clients, whose token requests "
			   "must carry no secret: remove client_secret_file",
			   p->name);
}

static void account_free(struct trib_account *acct)
{
	if (acct == NULL)
		return;
	free(acct->user);
	free(acct->name);
	free(acct->login);
	free(acct->host);
	free(acct->password_file);
	free(acct->ca_file);
	trib_strlist_free(acct->sasl);
	trib_strlist_free(acct->folders);
	free(acct->deliver_folder);
	free(acct->oauth.client_id);
	free(acct->oauth.client_secret_file);
	free(acct->oauth.tenant);
	free(acct->oauth.authorize_url);
	free(acct->oauth.token_url);
	free(acct->oauth.device_url);
	free(acct->oauth.scope);
	free(acct);
}

static void account_resolve(struct resolve *r, const char *name)
{
	r->acct = trib_calloc(1, sizeof(*r->acct));
	r->acct->user = trib_strdup(r->list->user);
	r->acct->name = trib_strdup(name);
	r->failed = false;
	resolve_provider(r);
	if (!r->failed) {
		resolve_endpoint(r);
		resolve_auth(r);
		resolve_delivery(r);
		resolve_schedule(r);
		resolve_oauth(r);
	}
	if (r->failed) {
		account_free(r->acct);
		return;
	}
	r->list->accounts =
		trib_realloc(r->list->accounts,
			     (r->list->count + 1) * sizeof(*r->list->accounts));
	r->list->accounts[r->list->count++] = r->acct;
}

/* ---- the user's list ---- */

static void list_error(struct trib_account_list *list, const char *fmt, ...)
	TRIB_ATTR_PRINTF(2, 3);

static void list_error(struct trib_account_list *list, const char *fmt, ...)
{
	va_list args;
	char *msg;

	va_start(args, fmt);
	msg = trib_strdup_vprintf(fmt, args);
	va_end(args);
	strlist_add(&list->errors, &list->error_count,
		    trib_strdup_printf("%s: %s", list->user, msg));
	free(msg);
}

/* A user field is known if it is the list, an overridable global, a
 * provider setting, or tributary_<listed account>_<known suffix>. */
static bool user_key_known(const char *key, char **names, unsigned int count)
{
	size_t plen = strlen(PREFIX);

	if (strcmp(key, PREFIX "accounts") == 0 ||
	    in_list(user_overridable, key) || is_provider_setting(key))
		return true;
	for (unsigned int i = 0; i < count; i++) {
		size_t nlen = strlen(names[i]);

		if (strncmp(key + plen, names[i], nlen) == 0 &&
		    key[plen + nlen] == '_' &&
		    in_list(account_suffixes, key + plen + nlen + 1))
			return true;
	}
	return false;
}

static bool key_is_for_listed(const char *key, char **names, unsigned int count)
{
	size_t plen = strlen(PREFIX);

	for (unsigned int i = 0; i < count; i++) {
		size_t nlen = strlen(names[i]);

		if (strncmp(key + plen, names[i], nlen) == 0 &&
		    key[plen + nlen] == '_')
			return true;
	}
	return false;
}

static void check_unknown_fields(struct trib_account_list *list,
				 const struct trib_settings_layer *user,
				 char **names, unsigned int count)
{
	if (user == NULL || user->keys == NULL)
		return;
	for (const char *const *k = user->keys(user->context); *k != NULL;
	     k++) {
		if (strncmp(*k, PREFIX, strlen(PREFIX)) != 0 ||
		    user_key_known(*k, names, count))
			continue;
		/* Fields of accounts not in the list are ignored: that is
		 * how an account is switched off. Typos are reported. */
		if (key_is_for_listed(*k, names, count) ||
		    strchr(*k + strlen(PREFIX), '_') == NULL)
			list_error(list, "unknown setting %s", *k);
	}
}

/* tributary_<name>_client_id would be the provider-wide setting. */
static bool account_name_reserved(const char *name)
{
	return trib_provider_find(name) != NULL ||
	       strcmp(name, "outlook_app") == 0;
}

void trib_account_list_load(const char *user,
			    const struct trib_settings_layer *user_layer,
			    const struct trib_settings_layer *global,
			    const struct trib_global_settings *globals,
			    struct trib_account_list *list_r)
{
	struct resolve r;
	const char *value;
	char **names;
	unsigned int count;

	memset(list_r, 0, sizeof(*list_r));
	list_r->user = trib_strdup(user);
	if (user[0] == '\0' || user[0] == '.' || strchr(user, '/') != NULL ||
	    has_control_chars(user)) {
		list_error(list_r,
			   "user name cannot name a state directory (no '/', "
			   "no leading '.')");
		return;
	}
	value = layer_get(user_layer, PREFIX "accounts");
	if (value == NULL)
		return;
	names = trib_settings_split_list(value, &count);
	memset(&r, 0, sizeof(r));
	r.list = list_r;
	r.user = user_layer;
	r.global = global;
	r.globals = globals;
	for (unsigned int i = 0; i < count; i++) {
		bool dup = false;

		for (unsigned int j = 0; j < i; j++)
			dup = dup || strcmp(names[i], names[j]) == 0;
		if (dup) {
			list_error(list_r,
				   "tributary_accounts: '%s' is listed twice",
				   names[i]);
		} else if (account_name_reserved(names[i])) {
			list_error(list_r,
				   "tributary_accounts: account name '%s' is "
				   "reserved (its fields would clash with the "
				   "provider-wide settings)",
				   names[i]);
		} else if (!trib_settings_valid_account_name(names[i])) {
			list_error(list_r,
				   "tributary_accounts: bad account name '%s' "
				   "([a-z0-9_-], at most 32 characters)",
				   names[i]);
		} else {
			account_resolve(&r, names[i]);
		}
	}
	check_unknown_fields(list_r, user_layer, names, count);
	trib_strlist_free(names);
}

void trib_account_list_free(struct trib_account_list *list)
{
	for (unsigned int i = 0; i < list->count; i++)
		account_free(list->accounts[i]);
	free(list->accounts);
	trib_strlist_free(list->errors);
	free(list->user);
	memset(list, 0, sizeof(*list));
}

const char *trib_tls_mode_name(enum trib_imap_tls_mode mode)
{
	switch (mode) {
	case TRIB_IMAP_TLS_IMPLICIT:
		return "implicit";
	case TRIB_IMAP_TLS_STARTTLS:
		return "starttls";
	case TRIB_IMAP_TLS_NONE:
		return "none";
	}
	return "unknown";
}
