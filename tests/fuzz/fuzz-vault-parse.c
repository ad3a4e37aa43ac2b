/* fuzz-vault-parse.c: libFuzzer target for the token vault: the store
 * file's parser, building stores from hostile records, and the key file
 * syntax.
 *
 * The first input byte picks the mode (byte % 4), the rest is its input:
 *   0: a vault file, parsed for user alice under key A. Refused: one line
 *      of error, no record kept. Taken: every record decrypts to a
 *      secret without NUL, and writing the vault again gives the very
 *      same bytes.
 *   1: the same, with the right SHA-256 appended first, so the fuzzer
 *      gets past the checksum to the structure, the caps and the tags.
 *   2: a key file: one key with a 16-digit id, or one line of error.
 *   3: records. The rest is split at NUL bytes; in each part the first
 *      byte picks the kind (some invalid), the second the account (some
 *      invalid), the rest is the secret. Each set must succeed exactly
 *      when its input is valid; the vault written and read back must hold
 *      the same secrets, under user bob or key B it must be refused, and
 *      with any one byte changed it must be refused.
 * The seeds in corpus-vault/ are a few of each, made with key A (the
 * KEY_A_HEX of tests/unit/test-vault.c). Any broken promise aborts. */

#include "alloc.h"
#include "vault-private.h"
#include "vault.h"

#include <openssl/evp.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

#define CHECK(cond)                                                            \
	do {                                                                   \
		if (!(cond))                                                   \
			abort();                                               \
	} while (0)

#define KEY_A_HEX                                                              \
	"000102030405060708090a0b0c0d0e0f101112131415161718191a1b1c1d1e1f"
#define KEY_B_HEX                                                              \
	"e0e1e2e3e4e5e6e7e8e9eaebecedeeeff0f1f2f3f4f5f6f7f8f9fafbfcfdfeff"
#define MAX_PARTS 64

static const struct trib_vault_key *fuzz_key(bool b)
{
	static struct trib_vault_key *keys[2];
	const char *hex = b ? KEY_B_HEX : KEY_A_HEX, *error;

	if (keys[b] == NULL)
		CHECK(trib_vault_key_parse(hex, strlen(hex), "fuzz", &keys[b],
					   &error) == TRIB_VAULT_OK);
	return keys[b];
}

static void check_error(const char *error)
{
	CHECK(error != NULL && error[0] != '\0' && strchr(error, '\n') == NULL);
}

/* Every record decrypts; the vault's bytes are data's. */
static void check_taken(struct trib_vault *vault, const unsigned char *data,
			size_t size)
{
	unsigned int count = trib_vault_count(vault);
	unsigned char *again;
	size_t again_size;

	CHECK(count <= TRIB_VAULT_RECORDS_MAX);
	for (unsigned int i = 0; i < count; i++) {
		struct trib_vault_info info, got_info;
		const char *error = NULL;
		char *secret = NULL;

		CHECK(trib_vault_info_at(vault, i, &info));
		CHECK(trib_vault_kind_name(info.kind) != NULL);
		CHECK(trib_vault_get(vault, info.account, info.kind, &secret,
				     &got_info, &error) == 1);
		CHECK(secret != NULL && strlen(secret) > 0 &&
		      strlen(secret) <= TRIB_VAULT_SECRET_MAX);
		CHECK(memcmp(&info, &got_info, sizeof(info)) == 0);
		trib_secret_free(&secret);
	}
	again = trib_vault_file_serialize(vault, &again_size);
	CHECK(again_size == size && memcmp(again, data, size) == 0);
	free(again);
}

/* Modes 0 and 1. */
static void fuzz_file(const unsigned char *data, size_t size, bool checksum)
{
	struct trib_vault *vault = trib_vault_create("alice", fuzz_key(false));
	unsigned char *copy = NULL;
	unsigned int md_len = 0;

	if (checksum) {
		copy = trib_malloc(size + VAULT_CHECKSUM_SIZE);
		memcpy(copy, data, size);
		CHECK(EVP_Digest(data, size, copy + size, &md_len, EVP_sha256(),
				 NULL) == 1);
		data = copy;
		size += VAULT_CHECKSUM_SIZE;
	}
	if (trib_vault_file_parse(vault, data, size) == TRIB_VAULT_OK) {
		check_taken(vault, data, size);
	} else {
		check_error(vault->error);
		CHECK(trib_vault_count(vault) == 0);
	}
	trib_vault_close(&vault);
	CHECK(vault == NULL);
	free(copy);
}

/* Mode 2. */
static void fuzz_key_file(const char *text, size_t size)
{
	struct trib_vault_key *key = NULL;
	const char *error = NULL;

	if (trib_vault_key_parse(text, size, "fuzz", &key, &error) !=
	    TRIB_VAULT_OK) {
		CHECK(key == NULL);
		check_error(error);
		return;
	}
	CHECK(strlen(trib_vault_key_id(key)) == TRIB_VAULT_KEY_ID_LEN);
	trib_vault_key_destroy(&key);
	CHECK(key == NULL);
}

static bool valid_account(const char *account)
{
	size_t len = strlen(account);

	if (len == 0 || len > TRIB_VAULT_ACCOUNT_MAX)
		return false;
	for (size_t i = 0; i < len; i++) {
		char c = account[i];

		if (!((c >= 'a' && c <= 'z') || (c >= '0' && c <= '9') ||
		      c == '_' || c == '-'))
			return false;
	}
	return true;
}

/* Refused under another user or key, or with any byte changed. */
static void check_refusals(const unsigned char *file, size_t size,
			   unsigned int count, size_t flip)
{
	struct trib_vault *vault;
	unsigned char *bad;

	vault = trib_vault_create("bob", fuzz_key(false));
	CHECK(trib_vault_file_parse(vault, file, size) ==
	      TRIB_VAULT_ERR_TAMPERED);
	trib_vault_close(&vault);
	vault = trib_vault_create("alice", fuzz_key(true));
	CHECK(trib_vault_file_parse(vault, file, size) ==
	      (count > 0 ? TRIB_VAULT_ERR_WRONG_KEY : TRIB_VAULT_OK));
	trib_vault_close(&vault);
	bad = trib_malloc(size);
	memcpy(bad, file, size);
	bad[flip % size] ^= (unsigned char)(1 + flip / size % 255);
	vault = trib_vault_create("alice", fuzz_key(false));
	CHECK(trib_vault_file_parse(vault, bad, size) != TRIB_VAULT_OK);
	trib_vault_close(&vault);
	free(bad);
}

/* Mode 3. */
static void fuzz_records(const uint8_t *data, size_t size)
{
	static const char *const accounts[] = {
		"work",
		"home",
		"a",
		"gmail-2",
		"x_y",
		"abcdefghijabcdefghijabcdefghijab", /* 32: the longest */
		"",
		"Work",
		"a b",
		"abcdefghijabcdefghijabcdefghijabc",
	};
	struct trib_vault *vault = trib_vault_create("alice", fuzz_key(false));
	struct trib_vault *back = trib_vault_create("alice", fuzz_key(false));
	char *copy = trib_strndup((const char *)data, size);
	unsigned char *file, *again;
	size_t pos = 0, file_size, again_size;

	while (pos <= size) {
		const char *part = copy + pos, *error = NULL, *account;
		size_t len = strlen(part);
		enum trib_vault_kind kind;
		enum trib_vault_error ret;
		bool valid;

		pos += len + 1;
		if (len < 2)
			continue;
		kind = (enum trib_vault_kind)((unsigned char)part[0] % 5);
		account = accounts[(unsigned char)part[1] %
				   TRIB_N_ELEMENTS(accounts)];
		valid = kind >= 1 && kind <= TRIB_VAULT_KIND_MAX &&
			valid_account(account) && len > 2;
		ret = trib_vault_set(vault, account, kind, part + 2, 0, &error);
		if (ret == TRIB_VAULT_OK) {
			CHECK(valid && error == NULL);
		} else {
			CHECK(ret == TRIB_VAULT_ERR_INVALID && !valid);
			check_error(error);
		}
	}
	file = trib_vault_file_serialize(vault, &file_size);
	CHECK(trib_vault_file_parse(back, file, file_size) == TRIB_VAULT_OK);
	CHECK(trib_vault_count(back) == trib_vault_count(vault));
	for (unsigned int i = 0; i < trib_vault_count(vault); i++) {
		struct trib_vault_info info;
		char *s1 = NULL, *s2 = NULL;
		const char *error = NULL;

		CHECK(trib_vault_info_at(vault, i, &info));
		CHECK(trib_vault_get(vault, info.account, info.kind, &s1, NULL,
				     &error) == 1);
		CHECK(trib_vault_get(back, info.account, info.kind, &s2, NULL,
				     &error) == 1);
		CHECK(strcmp(s1, s2) == 0);
		trib_secret_free(&s1);
		trib_secret_free(&s2);
	}
	again = trib_vault_file_serialize(back, &again_size);
	CHECK(again_size == file_size && memcmp(again, file, file_size) == 0);
	check_refusals(file, file_size, trib_vault_count(vault),
		       size > 0 ? data[0] * 257u + data[size - 1] : 0);
	free(again);
	free(file);
	free(copy);
	trib_vault_close(&vault);
	trib_vault_close(&back);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	if (size == 0)
		return 0;
	switch (data[0] % 4) {
	case 0:
		fuzz_file(data + 1, size - 1, false);
		break;
	case 1:
		fuzz_file(data + 1, size - 1, true);
		break;
	case 2:
		fuzz_key_file((const char *)data + 1, size - 1);
		break;
	default:
		fuzz_records(data + 1, size - 1);
		break;
	}
	return 0;
}
