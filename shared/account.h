#ifndef TRIB_ACCOUNT_H
#define TRIB_ACCOUNT_H

/* account.h: a user's remote accounts, resolved from their settings:
 * the userdb fields over the global plugin {} settings over the provider
 * preset (see docs/settings.md). Validation gives one line per problem,
 * naming user, account and field; a broken account is left out, the
 * others load.
 *
 * Owns: everything in the structs below (free with trib_account_list_free).
 * Secrets: a client secret given inline is kept only as "set"; secrets
 * themselves stay in files, read by whoever needs them, when needed. */

#include "imap-client.h"
#include "provider.h"
#include "settings.h"

#include <stdbool.h>

struct trib_account_oauth {
	char *client_id;
	/* The secret is never copied here: only where it comes from. */
	bool client_secret_set;	  /* given inline in a setting */
	char *client_secret_file; /* or in this file */
	char *tenant;
	char *authorize_url; /* {tenant} already filled in */
	char *token_url;
	char *device_url; /* NULL: no device flow */
	char *scope;
	const char *authorize_params;
};

struct trib_account {
	char *user;
	char *name;
	const struct trib_provider *provider;
	char *login;
	char *host;
	unsigned int port;
	enum trib_imap_tls_mode tls;
	bool tls_verify;
	/* CAs to trust instead of the system store, or NULL. */
	char *ca_file;
	enum trib_auth_method auth;
	char *password_file;
	/* SASL mechanisms in order (for passwords: PLAIN). */
	char **sasl;
	unsigned int sasl_count;
	char **folders;
	unsigned int folder_count;
	/* NULL: INBOX (Sieve decides); else the LMTP +detail folder. */
	char *deliver_folder;
	bool delete_remote;
	unsigned int poll_interval_secs;
	bool idle;
	unsigned int max_connections;
	struct trib_account_oauth oauth;
};

struct trib_account_list {
	char *user;
	struct trib_account **accounts;
	unsigned int count;
	/* One line each: "alice/work: unknown provider 'gmial' (...)". */
	char **errors;
	unsigned int error_count;
};

/* Global settings every user shares (plugin {} in 90-tributary.conf). */
struct trib_global_settings {
	char *state_dir;
	char *vault_key_file;
	char *trace_key_file;
	unsigned int poll_interval_secs;
	bool idle;
	char *log_level;
	char *lmtp;
	/* Run through /bin/sh -c when an account needs reauthorization
	 * (fetcher/incident.h); NULL: none. */
	char *notify_command;
	/* Send the user a notice message then (default yes). */
	bool reauth_notice;
	/* A cached access token is refreshed once it is valid for less
	 * than this (tributary_oauth_refresh_margin). */
	unsigned int oauth_refresh_margin_secs;
	/* `tributary run`: at most this many users' passes side by side
	 * (tributary_max_parallel_users). */
	unsigned int max_parallel_users;
	char **errors;
	unsigned int error_count;
};

/* base_dir: Dovecot's base_dir, for the default LMTP socket. */
void trib_global_settings_load(const struct trib_settings_layer *global,
			       const char *base_dir,
			       struct trib_global_settings *set_r);
void trib_global_settings_free(struct trib_global_settings *set);

/* user_layer: the user's userdb fields; global: plugin {} settings. */
void trib_account_list_load(const char *user,
			    const struct trib_settings_layer *user_layer,
			    const struct trib_settings_layer *global,
			    const struct trib_global_settings *globals,
			    struct trib_account_list *list_r);
void trib_account_list_free(struct trib_account_list *list);

/* "implicit" / "starttls" */
const char *trib_tls_mode_name(enum trib_imap_tls_mode mode);

#endif
