/* provider.c: the presets. Sources: docs/settings.md and the providers'
 * own documentation (see docs/configuration.md). */

#include "provider.h"

#include <string.h>

#define MS_LOGIN "https://login.microsoftonline.com/{tenant}/oauth2/v2.0"

static const struct trib_provider gmail = {
	.name = "gmail",
	.host = "imap.gmail.com",
	.port = 993,
	.tls = TRIB_IMAP_TLS_IMPLICIT,
	.auth = TRIB_AUTH_OAUTH2,
	.oauth_sasl = { "XOAUTH2", "OAUTHBEARER" },
	.authorize_url = "https://accounts.google.com/o/oauth2/v2/auth",
	.token_url = "https://oauth2.googleapis.com/token",
	.device_url = NULL,
	.scope = "https://mail.google.com/",
	/* Without both, Google hands out no refresh token the second time. */
	.authorize_params = "access_type=offline&prompt=consent",
	.client_secret = TRIB_CLIENT_SECRET_REQUIRED,
	.max_connections = 15,
	.idle = true,
};

static const struct trib_provider outlook = {
	.name = "outlook",
	.host = "outlook.office365.com",
	.port = 993,
	.tls = TRIB_IMAP_TLS_IMPLICIT,
	.auth = TRIB_AUTH_OAUTH2,
	/* Exchange Online offers XOAUTH2 only. */
	.oauth_sasl = { "XOAUTH2" },
	.authorize_url = MS_LOGIN "/authorize",
	.token_url = MS_LOGIN "/token",
	.device_url = MS_LOGIN "/devicecode",
	/* offline_access: or there is no refresh token. */
	.scope = "https://outlook.office.com/IMAP.AccessAsUser.All "
		 "offline_access",
	.client_secret = TRIB_CLIENT_SECRET_NEVER,
	.tenant = "common",
	.max_connections = 16,
	.idle = true,
};

static const struct trib_provider yahoo = {
	.name = "yahoo",
	.host = "imap.mail.yahoo.com",
	.port = 993,
	.tls = TRIB_IMAP_TLS_IMPLICIT,
	/* New OAuth registrations with the mail scope are gated. */
	.auth = TRIB_AUTH_APP_PASSWORD,
	.oauth_sasl = { "XOAUTH2", "OAUTHBEARER" },
	.authorize_url = "https://api.login.yahoo.com/oauth2/request_auth",
	.token_url = "https://api.login.yahoo.com/oauth2/get_token",
	.scope = "mail-r",
	.client_secret = TRIB_CLIENT_SECRET_OPTIONAL,
	.max_connections = 5,
	.idle = false,
};

static const struct trib_provider imap = {
	.name = "imap",
	.port = 993,
	.tls = TRIB_IMAP_TLS_IMPLICIT,
	.auth = TRIB_AUTH_APP_PASSWORD,
	.oauth_sasl = { "XOAUTH2", "OAUTHBEARER" },
	.client_secret = TRIB_CLIENT_SECRET_OPTIONAL,
	.max_connections = 5,
	.idle = true,
};

static const struct trib_provider *const providers[] = {
	&gmail, &outlook, &yahoo, &imap, NULL,
};

const struct trib_provider *trib_provider_find(const char *name)
{
	for (unsigned int i = 0; providers[i] != NULL; i++) {
		if (strcmp(providers[i]->name, name) == 0)
			return providers[i];
	}
	return NULL;
}

const char *trib_provider_names(void)
{
	return "gmail, outlook, yahoo, imap";
}

const struct trib_provider *const *trib_providers(void)
{
	return providers;
}

static const char *const auth_names[] = {
	[TRIB_AUTH_OAUTH2] = "oauth2",
	[TRIB_AUTH_APP_PASSWORD] = "app_password",
	[TRIB_AUTH_PASSWORD_FILE] = "password_file",
};

const char *trib_auth_method_name(enum trib_auth_method method)
{
	return auth_names[method];
}

bool trib_auth_method_parse(const char *name, enum trib_auth_method *method_r)
{
	for (unsigned int i = 0; i < 3; i++) {
		if (strcmp(auth_names[i], name) == 0) {
			*method_r = (enum trib_auth_method)i;
			return true;
		}
	}
	return false;
}
