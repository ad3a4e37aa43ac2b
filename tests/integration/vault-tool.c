/* vault-tool.c: what the authorize integration test (test_authorize.py)
 * needs to see in a user's vault, read-only, without Python re-implementing
 * the format, and without ever printing a secret:
 *
 *   vault-tool list STATE_DIR USER KEYFILE ACCOUNT
 *       one line per record of ACCOUNT:
 *       "<kind> <expires_at> <sha256 of the secret in hex>"
 *       (the hash lets the test compare with a token it knows; the
 *       secret itself is never printed)
 *
 *   vault-tool put STATE_DIR USER KEYFILE ACCOUNT KIND
 *       set the secret of (ACCOUNT, KIND: refresh_token, access_token or
 *       app_password), read as the first line of stdin, with no expiry,
 *       and commit (the sync test seeds refresh tokens this way)
 *
 * It takes the user's state lock like any other user of the vault (list
 * writes nothing: the vault is never committed). Errors: one line on
 * stderr, exit 2. For tests only: not installed. */

#include "alloc.h"
#include "state.h"
#include "vault.h"

#include <inttypes.h>
#include <openssl/sha.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static TRIB_ATTR_NORETURN void die(const char *what, const char *error)
{
	fprintf(stderr, "vault-tool: %s: %s\n", what, error);
	exit(2);
}

static void list(const char *state_dir, const char *user, const char *keyfile,
		 const char *account)
{
	struct trib_vault_key *key = NULL;
	struct trib_state *state = NULL;
	struct trib_vault *vault = NULL;
	struct trib_vault_info info;
	unsigned char md[SHA256_DIGEST_LENGTH];
	const char *error;
	char *secret;

	if (trib_vault_key_load(keyfile, &key, &error) != TRIB_VAULT_OK)
		die(keyfile, error);
	if (trib_state_open(state_dir, user, &state, &error) < 0)
		die(user, error);
	if (trib_vault_open(state, key, &vault, &error) != TRIB_VAULT_OK)
		die(user, error);
	for (unsigned int i = 0; i < trib_vault_count(vault); i++) {
		if (!trib_vault_info_at(vault, i, &info) ||
		    strcmp(info.account, account) != 0)
			continue;
		if (trib_vault_get(vault, account, info.kind, &secret, NULL,
				   &error) != 1)
			die(account, "a record cannot be read");
		SHA256((const unsigned char *)secret, strlen(secret), md);
		trib_secret_free(&secret);
		printf("%s %" PRId64 " ", trib_vault_kind_name(info.kind),
		       info.expires_at);
		for (size_t j = 0; j < sizeof(md); j++)
			printf("%02x", md[j]);
		printf("\n");
	}
	trib_vault_close(&vault);
	trib_state_close(&state);
	trib_vault_key_destroy(&key);
}

static enum trib_vault_kind parse_kind(const char *name)
{
	for (int k = 1; k <= TRIB_VAULT_KIND_MAX; k++) {
		const char *kname =
			trib_vault_kind_name((enum trib_vault_kind)k);

		if (kname != NULL && strcmp(kname, name) == 0)
			return (enum trib_vault_kind)k;
	}
	die(name, "not refresh_token, access_token or app_password");
}

static void put(const char *state_dir, const char *user, const char *keyfile,
		const char *account, const char *kind_name)
{
	enum trib_vault_kind kind = parse_kind(kind_name);
	struct trib_vault_key *key = NULL;
	struct trib_state *state = NULL;
	struct trib_vault *vault = NULL;
	char line[TRIB_VAULT_SECRET_MAX + 2];
	const char *error;

	if (fgets(line, sizeof(line), stdin) == NULL)
		die("stdin", "no secret");
	line[strcspn(line, "\r\n")] = '\0';
	if (trib_vault_key_load(keyfile, &key, &error) != TRIB_VAULT_OK)
		die(keyfile, error);
	if (trib_state_open(state_dir, user, &state, &error) < 0)
		die(user, error);
	if (trib_vault_open(state, key, &vault, &error) != TRIB_VAULT_OK)
		die(user, error);
	if (trib_vault_set(vault, account, kind, line, 0, &error) !=
		    TRIB_VAULT_OK ||
	    trib_vault_commit(vault, &error) != TRIB_VAULT_OK)
		die(account, error);
	explicit_bzero(line, sizeof(line));
	trib_vault_close(&vault);
	trib_state_close(&state);
	trib_vault_key_destroy(&key);
}

int main(int argc, char **argv)
{
	if (argc == 6 && strcmp(argv[1], "list") == 0) {
		list(argv[2], argv[3], argv[4], argv[5]);
		return 0;
	}
	if (argc == 7 && strcmp(argv[1], "put") == 0) {
		put(argv[2], argv[3], argv[4], argv[5], argv[6]);
		return 0;
	}
	fprintf(stderr,
		"usage: vault-tool list STATE_DIR USER KEYFILE ACCOUNT\n"
		"       vault-tool put STATE_DIR USER KEYFILE ACCOUNT KIND "
		"< SECRET\n");
	return 2;
}
