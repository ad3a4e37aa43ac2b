#ifndef TRIB_PROVIDER_H
#define TRIB_PROVIDER_H

/* provider.h: the provider presets, as data in one place (provider.c):
 * host, port, TLS, SASL mechanism order, OAuth endpoints and scopes,
 * connection caps. Every value can be overridden per account (account.h).
 * See docs/settings.md for the table and the sources of each value. */

#include "imap-client.h"

enum trib_auth_method {
	TRIB_AUTH_OAUTH2,
	TRIB_AUTH_APP_PASSWORD,
	TRIB_AUTH_PASSWORD_FILE,
};

enum trib_client_secret_rule {
	TRIB_CLIENT_SECRET_OPTIONAL,
	/* Google desktop apps: the token endpoint wants it. */
	TRIB_CLIENT_SECRET_REQUIRED,
	/* Microsoft public clients: the token endpoint refuses one. */
	TRIB_CLIENT_SECRET_NEVER,
};

#define TRIB_PROVIDER_MAX_SASL 3

struct trib_provider {
	const char *name;
	/* NULL: must be configured (imap). */
	const char *host;
	unsigned int port;
	enum trib_imap_tls_mode tls;
	enum trib_auth_method auth;
	/* SASL mechanisms for OAuth 2.0 tokens, in order of preference. */
	const char *oauth_sasl[TRIB_PROVIDER_MAX_SASL];
	/* NULL: must be configured. "{tenant}" stands for the tenant. */
	const char *authorize_url;
	const char *token_url;
	/* NULL: no device flow (Google refuses Gmail scopes there). */
	const char *device_url;
	const char *scope;
	/* Extra authorization request parameters, "k=v&k=v", or NULL. */
	const char *authorize_params;
	enum trib_client_secret_rule client_secret;
	/* Default tenant ("{tenant}" in the URLs), or NULL. */
	const char *tenant;
	unsigned int max_connections;
	/* Whether the server offers IDLE (Yahoo does not). */
	bool idle;
};

/* NULL when unknown. Case-sensitive: names are lowercase. */
const struct trib_provider *trib_provider_find(const char *name);
/* "gmail, outlook, yahoo, imap" */
const char *trib_provider_names(void);
/* All presets, NULL-terminated. */
const struct trib_provider *const *trib_providers(void);

const char *trib_auth_method_name(enum trib_auth_method method);
bool trib_auth_method_parse(const char *name, enum trib_auth_method *method_r);

#endif
