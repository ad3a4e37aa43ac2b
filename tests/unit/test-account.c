/* test-account.c: accounts from layered settings: presets expand,
 * overrides win, every malformed field gets its own clear line, and one
 * broken account never stops the others. */

#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>

#include <cmocka.h>

#include "account.h"
#include "alloc.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

/* Globals as an admin would set them in 90-tributary.conf. */
static const char *const global_kv[] = {
	"tributary_gmail_client_id",
	"gmail-app.apps.googleusercontent.com",
	"tributary_gmail_client_secret",
	"gmail-desktop-secret",
	"tributary_outlook_client_id",
	"00000000-aaaa-bbbb-cccc-000000000001",
	"tributary_yahoo_max_connections",
	"3",
	NULL,
	NULL,
};

struct loaded {
	struct trib_settings_pairs user_pairs, global_pairs;
	struct trib_settings_layer user, global;
	struct trib_global_settings globals;
	struct trib_account_list list;
};

static void load(struct loaded *l, const char *user, const char *const *user_kv,
		 const char *const *global)
{
	memset(l, 0, sizeof(*l));
	trib_settings_pairs_layer(&l->user_pairs, user_kv, &l->user);
	trib_settings_pairs_layer(&l->global_pairs,
				  global != NULL ? global : global_kv,
				  &l->global);
	trib_global_settings_load(&l->global, "/run/dovecot", &l->globals);
	trib_account_list_load(user, &l->user, &l->global, &l->globals,
			       &l->list);
}

static void unload(struct loaded *l)
{
	trib_account_list_free(&l->list);
	trib_global_settings_free(&l->globals);
	trib_settings_pairs_free(&l->user_pairs);
	trib_settings_pairs_free(&l->global_pairs);
}

static const struct trib_account *find(const struct loaded *l, const char *name)
{
	for (unsigned int i = 0; i < l->list.count; i++) {
		if (strcmp(l->list.accounts[i]->name, name) == 0)
			return l->list.accounts[i];
	}
	fail_msg("account %s not loaded", name);
	return NULL;
}

static void print_errors(const struct loaded *l)
{
	for (unsigned int i = 0; i < l->list.error_count; i++)
		fprintf(stderr, "  error: %s\n", l->list.errors[i]);
}

/* ---- presets ---- */

static void test_presets_expand(void **state)
{
	static const char *const kv[] = {
		"tributary_accounts",
		"home, work, y, own",
		"tributary_home_provider",
		"gmail",
		"tributary_home_login",
		"alice@gmail.com",
		"tributary_work_provider",
		"outlook",
		"tributary_work_login",
		"alice@contoso.example",
		"tributary_y_provider",
		"yahoo",
		"tributary_y_login",
		"alice@yahoo.com",
		"tributary_own_provider",
		"imap",
		"tributary_own_login",
		"alice",
		"tributary_own_host",
		"mail.example.net",
		NULL,
		NULL,
	};
	struct loaded l;
	const struct trib_account *a;

	(void)state;
	load(&l, "alice", kv, NULL);
	print_errors(&l);
	assert_int_equal(l.list.error_count, 0);
	assert_int_equal(l.list.count, 4);

	a = find(&l, "home");
	assert_string_equal(a->user, "alice");
	assert_string_equal(a->provider->name, "gmail");
	assert_string_equal(a->host, "imap.gmail.com");
	assert_int_equal(a->port, 993);
	assert_int_equal(a->tls, TRIB_IMAP_TLS_IMPLICIT);
	assert_true(a->tls_verify);
	assert_int_equal(a->auth, TRIB_AUTH_OAUTH2);
	assert_int_equal(a->sasl_count, 2);
	assert_string_equal(a->sasl[0], "XOAUTH2");
	assert_string_equal(a->sasl[1], "OAUTHBEARER");
	assert_int_equal(a->folder_count, 1);
	assert_string_equal(a->folders[0], "INBOX");
	assert_null(a->deliver_folder);
	assert_false(a->delete_remote);
	assert_int_equal(a->poll_interval_secs, 300);
	assert_true(a->idle);
	assert_int_equal(a->max_connections, 15);
	assert_string_equal(a->oauth.token_url,
			    "https://oauth2.googleapis.com/token");
	assert_null(a->oauth.device_url);
	assert_string_equal(a->oauth.scope, "https://mail.google.com/");
	assert_string_equal(a->oauth.authorize_params,
			    "access_type=offline&prompt=consent");
	assert_string_equal(a->oauth.client_id,
			    "gmail-app.apps.googleusercontent.com");
	assert_true(a->oauth.client_secret_set);

	a = find(&l, "work");
	assert_string_equal(a->host, "outlook.office365.com");
	assert_int_equal(a->sasl_count, 1);
	assert_string_equal(a->sasl[0], "XOAUTH2");
	assert_string_equal(a->oauth.tenant, "common");
	assert_string_equal(a->oauth.authorize_url,
			    "https://login.microsoftonline.com/common/oauth2/"
			    "v2.0/authorize");
	assert_string_equal(a->oauth.device_url,
			    "https://login.microsoftonline.com/common/oauth2/"
			    "v2.0/devicecode");
	assert_non_null(strstr(a->oauth.scope, "offline_access"));
	assert_false(a->oauth.client_secret_set);
	assert_int_equal(a->max_connections, 16);

	a = find(&l, "y");
	assert_int_equal(a->auth, TRIB_AUTH_APP_PASSWORD);
	assert_int_equal(a->sasl_count, 1);
	assert_string_equal(a->sasl[0], "PLAIN");
	assert_false(a->idle);			 /* Yahoo has no IDLE */
	assert_int_equal(a->max_connections, 3); /* global per provider */
	assert_null(a->oauth.token_url);

	a = find(&l, "own");
	assert_string_equal(a->host, "mail.example.net");
	assert_int_equal(a->auth, TRIB_AUTH_APP_PASSWORD);
	unload(&l);
}

static void test_overrides_win(void **state)
{
	static const char *const kv[] = {
		"tributary_poll_interval",
		"10m",
		"tributary_accounts",
		"work",
		"tributary_work_provider",
		"outlook",
		"tributary_work_login",
		"alice@contoso.example",
		"tributary_work_host",
		"127.0.0.1",
		"tributary_work_ca_file",
		"/etc/ssl/private-ca.pem",
		"tributary_work_tls",
		"starttls",
		"tributary_work_tls_verify",
		"no",
		"tributary_work_folders",
		"INBOX, Archive/2024 ,[Gmail]/All Mail",
		"tributary_work_deliver",
		"+Work",
		"tributary_work_remote",
		"delete",
		"tributary_work_max_connections",
		"2",
		"tributary_work_idle",
		"no",
		"tributary_work_tenant",
		"contoso.onmicrosoft.com",
		"tributary_work_client_id",
		"per-account-client",
		"tributary_work_oauth_scope",
		"https://outlook.office365.com/.default",
		NULL,
		NULL,
	};
	struct loaded l;
	const struct trib_account *a;

	(void)state;
	load(&l, "alice", kv, NULL);
	print_errors(&l);
	assert_int_equal(l.list.error_count, 0);
	a = find(&l, "work");
	assert_string_equal(a->host, "127.0.0.1");
	assert_int_equal(a->tls, TRIB_IMAP_TLS_STARTTLS);
	assert_int_equal(a->port, 143); /* STARTTLS's port */
	assert_false(a->tls_verify);
	assert_string_equal(a->ca_file, "/etc/ssl/private-ca.pem");
	assert_int_equal(a->folder_count, 3);
	assert_string_equal(a->folders[1], "Archive/2024");
	assert_string_equal(a->folders[2], "[Gmail]/All Mail");
	assert_string_equal(a->deliver_folder, "Work");
	assert_true(a->delete_remote);
	assert_int_equal(a->max_connections, 2);
	assert_false(a->idle);
	assert_int_equal(a->poll_interval_secs, 600); /* user-wide override */
	assert_string_equal(a->oauth.client_id, "per-account-client");
	assert_string_equal(a->oauth.scope,
			    "https://outlook.office365.com/.default");
	assert_string_equal(a->oauth.token_url,
			    "https://login.microsoftonline.com/"
			    "contoso.onmicrosoft.com/oauth2/v2.0/token");
	unload(&l);
}

static void test_port_and_sasl_overrides(void **state)
{
	static const char *const kv[] = {
		"tributary_accounts",
		"own",
		"tributary_own_provider",
		"imap",
		"tributary_own_login",
		"me",
		"tributary_own_host",
		"imap.example.org",
		"tributary_own_port",
		"10993",
		"tributary_own_auth",
		"password_file",
		"tributary_own_password_file",
		"/etc/tributary/own.pw",
		"tributary_own_sasl",
		"LOGIN",
		"tributary_own_poll_interval",
		"90s",
		NULL,
		NULL,
	};
	struct loaded l;
	const struct trib_account *a;

	(void)state;
	load(&l, "bob", kv, NULL);
	print_errors(&l);
	assert_int_equal(l.list.error_count, 0);
	a = find(&l, "own");
	assert_int_equal(a->port, 10993);
	assert_int_equal(a->auth, TRIB_AUTH_PASSWORD_FILE);
	assert_string_equal(a->password_file, "/etc/tributary/own.pw");
	assert_string_equal(a->sasl[0], "LOGIN");
	assert_int_equal(a->poll_interval_secs, 90);
	unload(&l);
}

static void test_user_without_accounts(void **state)
{
	static const char *const kv[] = { "uid", "1000", NULL, NULL };
	struct loaded l;

	(void)state;
	load(&l, "carol", kv, NULL);
	assert_int_equal(l.list.count, 0);
	assert_int_equal(l.list.error_count, 0);
	unload(&l);
}

/* ---- malformed fields: one case, one line ---- */

struct bad_case {
	/* extra fields for account "work" (outlook unless overridden) */
	const char *fields[14];
	const char *expected;
};

static const struct bad_case bad_cases[] = {
	{ { "tributary_work_provider", "gmial" },
	  "alice/work: unknown provider 'gmial' (gmail, outlook, yahoo, "
	  "imap)" },
	{ { "tributary_work_provider", "" },
	  "alice/work: provider is missing (tributary_work_provider" },
	{ { "tributary_work_login", "" },
	  "alice/work: login is missing (tributary_work_login)" },
	{ { "tributary_work_login", "a\tb" },
	  "alice/work: login has control characters" },
	{ { "tributary_work_host", "bad host" },
	  "alice/work: host 'bad host' is not a host name or address" },
	{ { "tributary_work_tls", "ssl" },
	  "alice/work: tls 'ssl' is not implicit or starttls" },
	{ { "tributary_work_tls", "none" }, "no clear-text mode" },
	{ { "tributary_work_port", "99999" },
	  "alice/work: port '99999' is not a port number (1-65535)" },
	{ { "tributary_work_port", "0" }, "port '0' is not a port number" },
	{ { "tributary_work_port", "99a" }, "port '99a' is not a port number" },
	{ { "tributary_work_tls_verify", "maybe" },
	  "alice/work: tls_verify 'maybe' is not yes or no" },
	{ { "tributary_work_auth", "kerberos" },
	  "alice/work: auth 'kerberos' is not oauth2, app_password or "
	  "password_file" },
	{ { "tributary_work_auth", "password_file" },
	  "alice/work: auth password_file needs an absolute path in "
	  "tributary_work_password_file" },
	{ { "tributary_work_auth", "password_file",
	    "tributary_work_password_file", "relative.pw" },
	  "needs an absolute path" },
	{ { "tributary_work_sasl", "CRAM-MD5" },
	  "alice/work: sasl 'CRAM-MD5' is not PLAIN, LOGIN, XOAUTH2 or "
	  "OAUTHBEARER" },
	{ { "tributary_work_sasl", "PLAIN" },
	  "alice/work: sasl 'PLAIN' does not fit auth oauth2" },
	{ { "tributary_work_sasl", " , " }, "alice/work: sasl is empty" },
	{ { "tributary_work_folders", " , ," },
	  "alice/work: folders is empty (tributary_work_folders)" },
	{ { "tributary_work_folders", "INBOX, a\rb" }, "is not a folder name" },
	{ { "tributary_work_deliver", "Work" },
	  "alice/work: deliver 'Work' is not INBOX or +Folder" },
	{ { "tributary_work_deliver", "+" },
	  "deliver '+' is not INBOX or +Folder" },
	{ { "tributary_work_remote", "move" },
	  "alice/work: remote 'move' is not keep or delete" },
	{ { "tributary_work_poll_interval", "5x" },
	  "alice/work: poll_interval '5x' is not a time of 10s to 30 days" },
	{ { "tributary_work_poll_interval", "1s" },
	  "poll_interval '1s' is not a time" },
	{ { "tributary_work_idle", "sometimes" },
	  "alice/work: idle 'sometimes' is not yes or no" },
	{ { "tributary_work_max_connections", "0" },
	  "alice/work: max_connections '0' is not 1-100" },
	{ { "tributary_work_tenant", "con/toso" },
	  "alice/work: tenant 'con/toso' is not a tenant id or domain" },
	{ { "tributary_work_oauth_token_url", "http://login.example/token" },
	  "alice/work: oauth_token_url 'http://login.example/token' is not "
	  "an https:// URL" },
	{ { "tributary_work_provider", "imap", "tributary_work_host",
	    "mail.example", "tributary_work_auth", "oauth2",
	    "tributary_imap_client_id", "x", "tributary_work_oauth_token_url",
	    "https://login.example/token", "tributary_work_oauth_authorize_url",
	    "https://login.example/auth" },
	  "alice/work: auth oauth2 with the imap provider needs "
	  "tributary_work_oauth_scope" },
	{ { "tributary_work_provider", "imap" },
	  "alice/work: host is missing (tributary_work_host; the imap "
	  "provider has none)" },
	{ { "tributary_work_client_secret_file", "/etc/secret" },
	  "alice/work: outlook apps are public clients, whose token "
	  "requests must carry no secret" },
	{ { "tributary_work_ca_file", "certs/ca.pem" },
	  "alice/work: ca_file 'certs/ca.pem' is not an absolute path" },
	{ { "tributary_work_prot", "993" },
	  "alice: unknown setting tributary_work_prot" },
};

static void test_malformed_fields(void **state)
{
	(void)state;
	for (size_t c = 0; c < TRIB_N_ELEMENTS(bad_cases); c++) {
		const struct bad_case *bc = &bad_cases[c];
		const char *kv[48];
		unsigned int n = 0;
		struct loaded l;
		bool overridden_provider = false, overridden_login = false;

		for (unsigned int i = 0; bc->fields[i] != NULL; i += 2) {
			overridden_provider |=
				strcmp(bc->fields[i], "tributary_work_"
						      "provider") == 0;
			overridden_login |= strcmp(bc->fields[i],
						   "tributary_work_login") == 0;
		}
		kv[n++] = "tributary_accounts";
		kv[n++] = "work, fine";
		kv[n++] = "tributary_fine_provider";
		kv[n++] = "yahoo";
		kv[n++] = "tributary_fine_login";
		kv[n++] = "alice@yahoo.example";
		if (!overridden_provider) {
			kv[n++] = "tributary_work_provider";
			kv[n++] = "outlook";
		}
		if (!overridden_login) {
			kv[n++] = "tributary_work_login";
			kv[n++] = "alice@contoso.example";
		}
		for (unsigned int i = 0; bc->fields[i] != NULL; i++)
			kv[n++] = bc->fields[i];
		kv[n++] = NULL;
		kv[n++] = NULL;

		load(&l, "alice", kv, NULL);
		if (l.list.error_count != 1 ||
		    strstr(l.list.errors[0], bc->expected) == NULL) {
			print_errors(&l);
			fail_msg("case %zu: expected one error with '%s'", c,
				 bc->expected);
		}
		/* the other account still loads */
		assert_non_null(find(&l, "fine"));
		unload(&l);
	}
}

static void test_account_names(void **state)
{
	static const char *const kv[] = {
		"tributary_accounts",
		"Work, ok, ok, a/b, "
		"abcdefghijklmnopqrstuvwxyz0123456, gmail",
		"tributary_ok_provider",
		"yahoo",
		"tributary_ok_login",
		"x@yahoo.example",
		"tributary_Work_provider",
		"yahoo",
		NULL,
		NULL,
	};
	struct loaded l;

	(void)state;
	load(&l, "alice", kv, NULL);
	assert_int_equal(l.list.count, 1);
	assert_int_equal(l.list.error_count, 5);
	assert_string_equal(l.list.errors[0],
			    "alice: tributary_accounts: bad account name "
			    "'Work' ([a-z0-9_-], at most 32 characters)");
	assert_string_equal(l.list.errors[1],
			    "alice: tributary_accounts: 'ok' is listed twice");
	assert_non_null(strstr(l.list.errors[2], "'a/b'"));
	assert_non_null(strstr(l.list.errors[3],
			       "'abcdefghijklmnopqrstuvwxyz0123456'"));
	unload(&l);
}

static void test_bad_user_name(void **state)
{
	static const char *const kv[] = { "tributary_accounts", "x", NULL,
					  NULL };
	struct loaded l;

	(void)state;
	load(&l, "../etc", kv, NULL);
	assert_int_equal(l.list.count, 0);
	assert_int_equal(l.list.error_count, 1);
	assert_non_null(strstr(l.list.errors[0], "state directory"));
	unload(&l);
}

static void test_missing_client_credentials(void **state)
{
	static const char *const kv[] = {
		"tributary_accounts",
		"home, work",
		"tributary_home_provider",
		"gmail",
		"tributary_home_login",
		"a@gmail.com",
		"tributary_work_provider",
		"outlook",
		"tributary_work_login",
		"a@contoso.example",
		NULL,
		NULL,
	};
	static const char *const no_globals[] = { NULL, NULL };
	struct loaded l;

	(void)state;
	load(&l, "alice", kv, no_globals);
	assert_int_equal(l.list.count, 0);
	/* gmail: client id and secret; outlook: client id */
	assert_int_equal(l.list.error_count, 3);
	assert_non_null(strstr(l.list.errors[0], "alice/home: auth oauth2 "
						 "needs the OAuth client id"));
	assert_non_null(strstr(l.list.errors[0], "tributary_gmail_client_id"));
	assert_non_null(strstr(l.list.errors[1], "alice/home: gmail needs the "
						 "client secret"));
	assert_non_null(
		strstr(l.list.errors[2], "tributary_outlook_client_id"));
	unload(&l);
}

static void test_two_users(void **state)
{
	static const char *const alice[] = {
		"tributary_accounts",
		"work",
		"tributary_work_provider",
		"outlook",
		"tributary_work_login",
		"alice@contoso.example",
		NULL,
		NULL,
	};
	static const char *const bob[] = {
		"tributary_accounts",
		"mail",
		"tributary_mail_provider",
		"yahoo",
		"tributary_mail_login",
		"bob@yahoo.example",
		"tributary_mail_folders",
		"INBOX, Archive",
		NULL,
		NULL,
	};
	struct loaded a, b;

	(void)state;
	load(&a, "alice", alice, NULL);
	load(&b, "bob", bob, NULL);
	assert_int_equal(a.list.count, 1);
	assert_int_equal(b.list.count, 1);
	assert_string_equal(a.list.accounts[0]->login, "alice@contoso.example");
	assert_string_equal(b.list.accounts[0]->login, "bob@yahoo.example");
	assert_int_equal(b.list.accounts[0]->folder_count, 2);
	assert_string_equal(b.list.accounts[0]->user, "bob");
	unload(&a);
	unload(&b);
}

/* ---- global settings ---- */

static void test_global_defaults(void **state)
{
	static const char *const none[] = { NULL, NULL };
	struct trib_settings_pairs pairs;
	struct trib_settings_layer layer;
	struct trib_global_settings g;

	(void)state;
	trib_settings_pairs_layer(&pairs, none, &layer);
	trib_global_settings_load(&layer, "/run/dovecot", &g);
	assert_int_equal(g.error_count, 0);
	assert_string_equal(g.state_dir, "/var/lib/tributary");
	assert_string_equal(g.vault_key_file, "/etc/tributary/vault.key");
	assert_string_equal(g.trace_key_file, "/etc/tributary/trace.key");
	assert_int_equal(g.poll_interval_secs, 300);
	assert_true(g.idle);
	assert_string_equal(g.log_level, "info");
	assert_string_equal(g.lmtp, "unix:/run/dovecot/lmtp");
	assert_null(g.notify_command);
	assert_true(g.reauth_notice);
	assert_int_equal(g.oauth_refresh_margin_secs, 300);
	assert_int_equal(g.max_parallel_users, 4);
	trib_global_settings_free(&g);
	trib_settings_pairs_free(&pairs);
}

/* tributary_max_parallel_users: 1 to 1000; anything else is an error
 * that keeps the default. */
static void test_global_max_parallel_users(void **state)
{
	static const struct {
		const char *value;
		unsigned int expected; /* 0: refused */
	} cases[] = {
		{ "1", 1 },    { "16", 16 },  { "1000", 1000 },
		{ "0", 0 },    { "1001", 0 }, { "-1", 0 },
		{ "four", 0 }, { "", 0 },     { "4 ", 0 },
	};
	struct trib_settings_pairs pairs;
	struct trib_settings_layer layer;
	struct trib_global_settings g;

	(void)state;
	for (size_t i = 0; i < TRIB_N_ELEMENTS(cases); i++) {
		const char *kv[] = { "tributary_max_parallel_users",
				     cases[i].value, NULL, NULL };

		trib_settings_pairs_layer(&pairs, kv, &layer);
		trib_global_settings_load(&layer, NULL, &g);
		if (cases[i].expected > 0) {
			assert_int_equal(g.error_count, 0);
			assert_int_equal(g.max_parallel_users,
					 cases[i].expected);
		} else {
			assert_int_equal(g.error_count, 1);
			assert_non_null(strstr(g.errors[0],
					       "tributary_max_parallel_users: "
					       "'"));
			assert_non_null(strstr(g.errors[0],
					       "is not a number of 1 to "
					       "1000"));
			assert_int_equal(g.max_parallel_users, 4);
		}
		trib_global_settings_free(&g);
		trib_settings_pairs_free(&pairs);
	}
}

static void test_global_errors(void **state)
{
	static const char *const kv[] = {
		"tributary_state_dir",
		"var/lib/tributary",
		"tributary_poll_interval",
		"often",
		"tributary_log_level",
		"loud",
		"tributary_lmtp",
		"lmtp-socket",
		"tributary_idle",
		"perhaps",
		"tributary_work_tls_verify",
		"no",
		"tributary_outlook_client_secret",
		"s3cret",
		"tributary_gmail_max_connections",
		"500",
		"tributary_outlook_app_tenant",
		"contoso.example",
		"sieve",
		"file:~/sieve",
		NULL,
		NULL,
	};
	static const char *const expected[] = {
		"plugin settings: tributary_state_dir: 'var/lib/tributary' is "
		"not an absolute path",
		"plugin settings: tributary_poll_interval: 'often' is not a "
		"time",
		"plugin settings: tributary_idle: 'perhaps' is not yes or no",
		"plugin settings: tributary_log_level: 'loud' is not debug",
		"plugin settings: tributary_lmtp: 'lmtp-socket' is not "
		"unix:/path or host:port",
		"tributary_gmail_max_connections: '500' is not 1-100",
		"tributary_outlook_client_secret: outlook apps are public "
		"clients",
		"Microsoft 365 app-only access needs all of",
		"plugin settings: unknown setting tributary_work_tls_verify "
		"(account settings belong in the user's userdb fields)",
	};
	struct trib_settings_pairs pairs;
	struct trib_settings_layer layer;
	struct trib_global_settings g;

	(void)state;
	trib_settings_pairs_layer(&pairs, kv, &layer);
	trib_global_settings_load(&layer, NULL, &g);
	if (g.error_count != TRIB_N_ELEMENTS(expected)) {
		for (unsigned int i = 0; i < g.error_count; i++)
			fprintf(stderr, "  %s\n", g.errors[i]);
		fail_msg("%u errors", g.error_count);
	}
	for (size_t i = 0; i < TRIB_N_ELEMENTS(expected); i++) {
		if (strstr(g.errors[i], expected[i]) == NULL)
			fail_msg("error %zu: '%s' lacks '%s'", i, g.errors[i],
				 expected[i]);
	}
	trib_global_settings_free(&g);
	trib_settings_pairs_free(&pairs);
}

/* The reauthorization settings: set, off, and refused values (which
 * check-config must not call unknown). */
static void test_global_reauth(void **state)
{
	static const char *const set_kv[] = {
		"tributary_notify_command",
		"/usr/local/bin/page-admin --reauth",
		"tributary_reauth_notice",
		"no",
		"tributary_oauth_refresh_margin",
		"90s",
		NULL,
		NULL,
	};
	static const char *const empty_kv[] = {
		"tributary_notify_command",
		"",
		"tributary_reauth_notice",
		"YES",
		"tributary_oauth_refresh_margin",
		"0",
		NULL,
		NULL,
	};
	static const char *const bad_kv[] = {
		"tributary_notify_command",
		"logger\nrm -rf /",
		"tributary_reauth_notice",
		"sometimes",
		"tributary_oauth_refresh_margin",
		"2h",
		NULL,
		NULL,
	};
	static const char *const expected[] = {
		"plugin settings: tributary_notify_command: control "
		"characters in the command line",
		"plugin settings: tributary_reauth_notice: 'sometimes' is not "
		"yes or no",
		"plugin settings: tributary_oauth_refresh_margin: '2h' is not "
		"a "
		"time of 0 to 1h",
	};
	struct trib_settings_pairs pairs;
	struct trib_settings_layer layer;
	struct trib_global_settings g;

	(void)state;
	trib_settings_pairs_layer(&pairs, set_kv, &layer);
	trib_global_settings_load(&layer, NULL, &g);
	assert_int_equal(g.error_count, 0);
	assert_string_equal(g.notify_command,
			    "/usr/local/bin/page-admin --reauth");
	assert_false(g.reauth_notice);
	assert_int_equal(g.oauth_refresh_margin_secs, 90);
	trib_global_settings_free(&g);
	trib_settings_pairs_free(&pairs);

	trib_settings_pairs_layer(&pairs, empty_kv, &layer);
	trib_global_settings_load(&layer, NULL, &g);
	assert_int_equal(g.error_count, 0);
	assert_null(g.notify_command);
	assert_true(g.reauth_notice);
	assert_int_equal(g.oauth_refresh_margin_secs, 0);
	trib_global_settings_free(&g);
	trib_settings_pairs_free(&pairs);

	trib_settings_pairs_layer(&pairs, bad_kv, &layer);
	trib_global_settings_load(&layer, NULL, &g);
	if (g.error_count != TRIB_N_ELEMENTS(expected)) {
		for (unsigned int i = 0; i < g.error_count; i++)
			fprintf(stderr, "  %s\n", g.errors[i]);
		fail_msg("%u errors", g.error_count);
	}
	for (size_t i = 0; i < TRIB_N_ELEMENTS(expected); i++) {
		if (strstr(g.errors[i], expected[i]) == NULL)
			fail_msg("error %zu: '%s' lacks '%s'", i, g.errors[i],
				 expected[i]);
	}
	assert_true(g.reauth_notice); /* the default stays */
	trib_global_settings_free(&g);
	trib_settings_pairs_free(&pairs);
}

/* ---- value syntaxes ---- */

static void test_values(void **state)
{
	unsigned int secs, n;
	bool b;
	char **list;

	(void)state;
	assert_true(trib_settings_parse_time("90", &secs) && secs == 90);
	assert_true(trib_settings_parse_time("90s", &secs) && secs == 90);
	assert_true(trib_settings_parse_time("5m", &secs) && secs == 300);
	assert_true(trib_settings_parse_time("5 mins", &secs) && secs == 300);
	assert_true(trib_settings_parse_time("2 minutes", &secs) &&
		    secs == 120);
	assert_true(trib_settings_parse_time("1h", &secs) && secs == 3600);
	assert_true(trib_settings_parse_time("1 hour", &secs) && secs == 3600);
	assert_true(trib_settings_parse_time("2d", &secs) && secs == 172800);
	assert_true(trib_settings_parse_time("1 week", &secs) &&
		    secs == 604800);
	assert_false(trib_settings_parse_time("", &secs));
	assert_false(trib_settings_parse_time("m", &secs));
	assert_false(trib_settings_parse_time("-5", &secs));
	assert_false(trib_settings_parse_time("5 fortnights", &secs));
	assert_false(trib_settings_parse_time("31d", &secs));
	assert_false(trib_settings_parse_time("99999999999999999999", &secs));

	assert_true(trib_settings_parse_bool("YES", &b) && b);
	assert_true(trib_settings_parse_bool("off", &b) && !b);
	assert_false(trib_settings_parse_bool("y", &b));

	assert_true(trib_settings_parse_uint("65535", 1, 65535, &n));
	assert_false(trib_settings_parse_uint("65536", 1, 65535, &n));
	assert_false(trib_settings_parse_uint("", 0, 5, &n));
	assert_false(trib_settings_parse_uint("+1", 0, 5, &n));

	list = trib_settings_split_list(" a ,, b c ,", &n);
	assert_int_equal(n, 2);
	assert_string_equal(list[0], "a");
	assert_string_equal(list[1], "b c");
	assert_null(list[2]);
	trib_strlist_free(list);

	assert_true(trib_settings_valid_account_name("work-2_x"));
	assert_false(trib_settings_valid_account_name("Work"));
	assert_false(trib_settings_valid_account_name(""));
	assert_false(trib_settings_valid_account_name("a.b"));
}

static void test_providers(void **state)
{
	enum trib_auth_method m;

	(void)state;
	assert_null(trib_provider_find("Gmail"));
	assert_null(trib_provider_find("aol"));
	for (const struct trib_provider *const *p = trib_providers();
	     *p != NULL; p++) {
		assert_ptr_equal(trib_provider_find((*p)->name), *p);
		assert_non_null(strstr(trib_provider_names(), (*p)->name));
		assert_true((*p)->max_connections > 0);
		assert_non_null((*p)->oauth_sasl[0]);
	}
	assert_true(trib_auth_method_parse("password_file", &m));
	assert_int_equal(m, TRIB_AUTH_PASSWORD_FILE);
	assert_string_equal(trib_auth_method_name(TRIB_AUTH_APP_PASSWORD),
			    "app_password");
	assert_false(trib_auth_method_parse("oauth", &m));
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_presets_expand),
		cmocka_unit_test(test_overrides_win),
		cmocka_unit_test(test_port_and_sasl_overrides),
		cmocka_unit_test(test_user_without_accounts),
		cmocka_unit_test(test_malformed_fields),
		cmocka_unit_test(test_account_names),
		cmocka_unit_test(test_bad_user_name),
		cmocka_unit_test(test_missing_client_credentials),
		cmocka_unit_test(test_two_users),
		cmocka_unit_test(test_global_defaults),
		cmocka_unit_test(test_global_errors),
		cmocka_unit_test(test_global_reauth),
		cmocka_unit_test(test_global_max_parallel_users),
		cmocka_unit_test(test_values),
		cmocka_unit_test(test_providers),
	};

	return cmocka_run_group_tests(tests, NULL, NULL);
}
