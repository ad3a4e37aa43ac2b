/* cmd-check.c: `tributary check`: connect, log in, show capabilities and
 * folder counts. The first thing to run when trying an account. */

#include "cli.h"

#include "alloc.h"
#include "imap-commands.h"
#include "loop.h"

#include <getopt.h>
#include <json-c/json.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

struct check_folder {
	char *name;
	unsigned int flags;
	struct trib_imap_status_info status;
	bool have_status;
	char *error;
};

struct check {
	struct trib_loop *loop;
	struct trib_imap_client *client;
	const char *host;
	unsigned int port;
	const char *tls_name;
	char tls_desc[128];
	const char *user;
	const char *auth;
	char *secret;
	bool json;

	char **pre_caps;
	struct check_folder *folders;
	unsigned int folder_count, status_pending;

	int exit_code;
	char *error;
	enum trib_error_class error_class;
};

static void check_fail(struct check *check, const struct trib_imap_reply *r,
		       const char *fallback)
{
	if (check->error == NULL) {
		check->error =
			trib_strdup(r->error != NULL ? r->error : fallback);
		check->error_class = r->error_class;
		check->exit_code = r->error_class == TRIB_ERR_PERM
					   ? CLI_EXIT_NOPERM
					   : CLI_EXIT_TEMPFAIL;
	}
	trib_loop_break(check->loop);
}

static char **caps_copy(const char *const *caps)
{
	size_t n = 0;
	char **copy;

	while (caps[n] != NULL)
		n++;
	copy = trib_calloc(n + 1, sizeof(char *));
	for (size_t i = 0; i < n; i++)
		copy[i] = trib_strdup(caps[i]);
	return copy;
}

static void caps_free(char **caps)
{
	if (caps == NULL)
		return;
	for (char **c = caps; *c != NULL; c++)
		free(*c);
	free(caps);
}

static void logout_done(const struct trib_imap_reply *reply, void *context)
{
	struct check *check = context;

	/* A failed LOGOUT changes nothing for the user. */
	(void)reply;
	trib_loop_break(check->loop);
}

static void folder_set_status(struct check_folder *folder,
			      const struct trib_imap_reply *reply,
			      const struct trib_imap_status_info *info)
{
	if (reply->status == TRIB_IMAP_STATUS_OK) {
		folder->status = *info;
		folder->status.mailbox = folder->name;
		folder->have_status = true;
	} else {
		folder->error = trib_strdup(
			reply->error != NULL ? reply->error : "STATUS failed");
	}
}

struct status_ctx {
	struct check *check;
	struct check_folder *folder;
};

static void status_done_ctx(const struct trib_imap_reply *reply,
			    const struct trib_imap_status_info *info,
			    void *context)
{
	struct status_ctx *ctx = context;
	struct check *check = ctx->check;

	folder_set_status(ctx->folder, reply, info);
	free(ctx);
	if (reply->error_class == TRIB_ERR_CANCELED) {
		check_fail(check, reply, "connection lost");
		return;
	}
	if (--check->status_pending == 0)
		trib_imap_logout(check->client, logout_done, check);
}

/* INBOX first, then by name. */
static int folder_cmp(const void *a, const void *b)
{
	const struct check_folder *fa = a, *fb = b;
	bool ia = strcasecmp(fa->name, "INBOX") == 0;
	bool ib = strcasecmp(fb->name, "INBOX") == 0;

	if (ia != ib)
		return ia ? -1 : 1;
	return strcmp(fa->name, fb->name);
}

static void list_done(const struct trib_imap_reply *reply,
		      const struct trib_imap_list_entry *entries,
		      unsigned int count, void *context)
{
	struct check *check = context;

	if (reply->status != TRIB_IMAP_STATUS_OK) {
		check_fail(check, reply, "LIST failed");
		return;
	}
	check->folders = trib_calloc(count + 1, sizeof(*check->folders));
	for (unsigned int i = 0; i < count; i++) {
		struct check_folder *folder = &check->folders[i];

		folder->name = trib_strdup(entries[i].name);
		folder->flags = entries[i].flags;
	}
	check->folder_count = count;
	qsort(check->folders, count, sizeof(*check->folders), folder_cmp);
	/* STATUS for every selectable folder, pipelined. */
	for (unsigned int i = 0; i < count; i++) {
		struct status_ctx *ctx;

		if ((check->folders[i].flags &
		     (TRIB_IMAP_LIST_NOSELECT | TRIB_IMAP_LIST_NONEXISTENT)) !=
		    0)
			continue;
		ctx = trib_calloc(1, sizeof(*ctx));
		ctx->check = check;
		ctx->folder = &check->folders[i];
		check->status_pending++;
		trib_imap_status(check->client, check->folders[i].name,
				 status_done_ctx, ctx);
	}
	if (check->status_pending == 0)
		trib_imap_logout(check->client, logout_done, check);
}

static void auth_done(const struct trib_imap_reply *reply, void *context)
{
	struct check *check = context;

	trib_secret_free(&check->secret);
	if (reply->status != TRIB_IMAP_STATUS_OK) {
		check_fail(check, reply, "authentication failed");
		return;
	}
	trib_imap_list(check->client, "*", list_done, check);
}

static void connect_done(const struct trib_imap_reply *reply, void *context)
{
	struct check *check = context;

	if (reply->status != TRIB_IMAP_STATUS_OK) {
		check_fail(check, reply, "connect failed");
		return;
	}
	check->pre_caps =
		caps_copy(trib_imap_client_capabilities(check->client));
	snprintf(check->tls_desc, sizeof(check->tls_desc), "%s",
		 trib_imap_client_tls_description(check->client));
	check->tls_name = check->tls_desc;
	if (strcasecmp(check->auth, "login") == 0)
		trib_imap_client_login(check->client, check->user,
				       check->secret, auth_done, check);
	else
		trib_imap_client_authenticate(check->client, check->auth,
					      check->user, check->secret,
					      auth_done, check);
}

static void print_caps(const char *label, const char *const *caps)
{
	printf("%s:", label);
	for (; *caps != NULL; caps++)
		printf(" %s", *caps);
	printf("\n");
}

static void print_text(struct check *check)
{
	unsigned long long total = 0;
	char flags[200];

	printf("Connected to %s:%u (%s, certificate verified)\n", check->host,
	       check->port, check->tls_name);
	print_caps("Capabilities before login",
		   (const char *const *)check->pre_caps);
	printf("Logged in as %s (%s)\n", check->user, check->auth);
	print_caps("Capabilities",
		   trib_imap_client_capabilities(check->client));
	printf("Folders:\n");
	for (unsigned int i = 0; i < check->folder_count; i++) {
		struct check_folder *f = &check->folders[i];

		trib_imap_list_flags_str(
			f->flags & TRIB_IMAP_LIST_SPECIAL_USE_MASK, flags,
			sizeof(flags));
		printf("  %-24s", f->name);
		if (f->have_status) {
			printf(" %6u message%s %6u unseen  uidvalidity %u  "
			       "uidnext %u",
			       f->status.messages,
			       f->status.messages == 1 ? " " : "s",
			       f->status.unseen, f->status.uidvalidity,
			       f->status.uidnext);
			total += f->status.messages;
		} else if (f->error != NULL) {
			printf(" (%s)", f->error);
		} else {
			printf(" (not selectable)");
		}
		if (flags[0] != '\0')
			printf("  %s", flags);
		printf("\n");
	}
	printf("%u folders, %llu messages\n", check->folder_count, total);
}

static json_object *caps_json(const char *const *caps)
{
	json_object *arr = json_object_new_array();

	for (; *caps != NULL; caps++)
		json_object_array_add(arr, json_object_new_string(*caps));
	return arr;
}

static void print_json(struct check *check)
{
	json_object *root = json_object_new_object();
	json_object *folders;
	char flags[200];

	json_object_object_add(root, "ok",
			       json_object_new_boolean(check->error == NULL));
	json_object_object_add(root, "host",
			       json_object_new_string(check->host));
	json_object_object_add(root, "port",
			       json_object_new_int((int)check->port));
	json_object_object_add(root, "user",
			       json_object_new_string(check->user));
	if (check->error != NULL) {
		json_object_object_add(root, "error",
				       json_object_new_string(check->error));
		json_object_object_add(
			root, "error_class",
			json_object_new_string(
				trib_error_class_name(check->error_class)));
		printf("%s\n", json_object_to_json_string_ext(
				       root, JSON_C_TO_STRING_PRETTY |
						     JSON_C_TO_STRING_SPACED));
		json_object_put(root);
		return;
	}
	json_object_object_add(root, "tls",
			       json_object_new_string(check->tls_name));
	json_object_object_add(root, "mechanism",
			       json_object_new_string(check->auth));
	json_object_object_add(root, "capabilities_before_login",
			       caps_json((const char *const *)check->pre_caps));
	json_object_object_add(
		root, "capabilities",
		caps_json(trib_imap_client_capabilities(check->client)));
	folders = json_object_new_array();
	for (unsigned int i = 0; i < check->folder_count; i++) {
		struct check_folder *f = &check->folders[i];
		json_object *jf = json_object_new_object();

		json_object_object_add(jf, "name",
				       json_object_new_string(f->name));
		trib_imap_list_flags_str(f->flags, flags, sizeof(flags));
		json_object_object_add(jf, "flags",
				       json_object_new_string(flags));
		if (f->have_status) {
			json_object_object_add(
				jf, "messages",
				json_object_new_int64(f->status.messages));
			json_object_object_add(
				jf, "unseen",
				json_object_new_int64(f->status.unseen));
			json_object_object_add(
				jf, "uidvalidity",
				json_object_new_int64(f->status.uidvalidity));
			json_object_object_add(
				jf, "uidnext",
				json_object_new_int64(f->status.uidnext));
		}
		if (f->error != NULL)
			json_object_object_add(
				jf, "error", json_object_new_string(f->error));
		json_object_array_add(folders, jf);
	}
	json_object_object_add(root, "folders", folders);
	printf("%s\n", json_object_to_json_string_ext(
			       root, JSON_C_TO_STRING_PRETTY |
					     JSON_C_TO_STRING_SPACED));
	json_object_put(root);
}

static void check_usage(FILE *out)
{
	fprintf(out,
		"usage: tributary check --host HOST --user USER [options]\n"
		"\n"
		"Connect to an IMAP server, log in, and list the folders with\n"
		"their message counts. The password or access token is read\n"
		"from --secret-file, or asked for on the terminal: never\n"
		"from the command line.\n"
		"\n"
		"  --host HOST         IMAP server name or address\n"
		"  --port PORT         default 993 (tls), 143 (starttls)\n"
		"  --tls MODE          implicit (default) or starttls\n"
		"  --user USER         login name\n"
		"  --auth MECH         plain (default), login, xoauth2,\n"
		"                      oauthbearer\n"
		"  --secret-file FILE  first line is the password or token\n"
		"                      (- = standard input)\n"
		"  --ca-file FILE      trust these CAs instead of the system\n"
		"                      store\n"
		"  --timeout SECS      per connect and per command (default "
		"30)\n"
		"  --json              print the result as JSON\n"
		"  --verbose           log the session (credentials "
		"redacted)\n");
}

static void check_free(struct check *check)
{
	trib_imap_client_destroy(&check->client);
	trib_loop_destroy(&check->loop);
	trib_secret_free(&check->secret);
	caps_free(check->pre_caps);
	for (unsigned int i = 0; i < check->folder_count; i++) {
		free(check->folders[i].name);
		free(check->folders[i].error);
	}
	free(check->folders);
	free(check->error);
}

int cmd_check(int argc, char **argv)
{
	static const struct option options[] = {
		{ "host", required_argument, NULL, 'H' },
		{ "port", required_argument, NULL, 'p' },
		{ "tls", required_argument, NULL, 't' },
		{ "user", required_argument, NULL, 'u' },
		{ "auth", required_argument, NULL, 'a' },
		{ "secret-file", required_argument, NULL, 's' },
		{ "ca-file", required_argument, NULL, 'c' },
		{ "timeout", required_argument, NULL, 'T' },
		{ "json", no_argument, NULL, 'j' },
		{ "verbose", no_argument, NULL, 'v' },
		{ "help", no_argument, NULL, 'h' },
		{ NULL, 0, NULL, 0 },
	};
	struct trib_imap_client_settings set = { .tls_verify = true };
	struct check check = { .auth = "plain", .tls_name = "" };
	struct trib_logger logger;
	const char *secret_file = NULL, *tls = "implicit", *error;
	unsigned long timeout = 30, port = 0;
	bool verbose = false;
	char *end, prompt[300];
	int c, ret;

	optind = 1;
	while ((c = getopt_long(argc, argv, "", options, NULL)) != -1) {
		switch (c) {
		case 'H':
			check.host = optarg;
			break;
		case 'p':
			port = strtoul(optarg, &end, 10);
			if (*end != '\0' || port == 0 || port > 65535) {
				cli_error("check: --port must be 1-65535");
				return CLI_EXIT_USAGE;
			}
			break;
		case 't':
			tls = optarg;
			break;
		case 'u':
			check.user = optarg;
			break;
		case 'a':
			check.auth = optarg;
			break;
		case 's':
			secret_file = optarg;
			break;
		case 'c':
			set.ca_file = optarg;
			break;
		case 'T':
			timeout = strtoul(optarg, &end, 10);
			if (*end != '\0' || timeout == 0 || timeout > 3600) {
				cli_error("check: --timeout must be 1-3600");
				return CLI_EXIT_USAGE;
			}
			break;
		case 'j':
			check.json = true;
			break;
		case 'v':
			verbose = true;
			break;
		case 'h':
			check_usage(stdout);
			return CLI_EXIT_OK;
		default:
			check_usage(stderr);
			return CLI_EXIT_USAGE;
		}
	}
	if (optind != argc || check.host == NULL || check.user == NULL) {
		cli_error("check: --host and --user are required");
		check_usage(stderr);
		return CLI_EXIT_USAGE;
	}
	if (strcmp(tls, "implicit") == 0) {
		set.tls_mode = TRIB_IMAP_TLS_IMPLICIT;
		check.port = port != 0 ? (unsigned int)port : 993;
	} else if (strcmp(tls, "starttls") == 0) {
		set.tls_mode = TRIB_IMAP_TLS_STARTTLS;
		check.port = port != 0 ? (unsigned int)port : 143;
	} else {
		cli_error("check: --tls must be implicit or starttls (there is "
			  "no way to log in without TLS)");
		return CLI_EXIT_USAGE;
	}
	if (strcasecmp(check.auth, "plain") != 0 &&
	    strcasecmp(check.auth, "login") != 0 &&
	    strcasecmp(check.auth, "xoauth2") != 0 &&
	    strcasecmp(check.auth, "oauthbearer") != 0) {
		cli_error("check: unknown --auth '%s' (plain, login, xoauth2, "
			  "oauthbearer)",
			  check.auth);
		return CLI_EXIT_USAGE;
	}

	snprintf(prompt, sizeof(prompt),
		 "Password or token for %s: ", check.user);
	check.secret = cli_read_secret(secret_file, prompt);
	if (check.secret == NULL)
		return CLI_EXIT_USAGE;

	cli_logger_init(&logger, verbose);
	set.host = check.host;
	set.port = check.port;
	set.connect_timeout_secs = (unsigned int)timeout;
	set.command_timeout_secs = (unsigned int)timeout;
	set.logger = &logger;
	set.trace = verbose;
	check.loop = trib_loop_create(&error);
	if (check.loop == NULL) {
		cli_error("check: %s", error);
		trib_secret_free(&check.secret);
		return CLI_EXIT_SOFTWARE;
	}
	check.client = trib_imap_client_create(check.loop, &set, &error);
	if (check.client == NULL) {
		cli_error("check: %s", error);
		check_free(&check);
		return CLI_EXIT_USAGE;
	}
	trib_imap_client_connect(check.client, connect_done, &check);
	trib_loop_run(check.loop);

	if (check.error == NULL && check.folders == NULL) {
		check.error = trib_strdup("session ended unexpectedly");
		check.error_class = TRIB_ERR_TEMP;
		check.exit_code = CLI_EXIT_TEMPFAIL;
	}
	if (check.json)
		print_json(&check);
	else if (check.error == NULL)
		print_text(&check);
	if (check.error != NULL)
		cli_error("check: %s", check.error);
	ret = check.exit_code;
	check_free(&check);
	return ret;
}
