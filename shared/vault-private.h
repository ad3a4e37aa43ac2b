#ifndef TRIB_VAULT_PRIVATE_H
#define TRIB_VAULT_PRIVATE_H

/* vault-private.h: what vault.c (open, records, commit), vault-file.c
 * (the file format) and vault-key.c (the key file and the cipher) share,
 * and what the unit tests and the fuzz target reach into. Nothing here is
 * for other modules. */

#include "alloc.h"
#include "vault.h"

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#define VAULT_FILE "vault"
#define VAULT_TEMP_FILE "vault.tmp"

/* The file (docs/vault.md): little-endian integers. */
#define VAULT_MAGIC "TRIB-VLT"
#define VAULT_MAGIC_SIZE 8
#define VAULT_VERSION 1
#define VAULT_KEY_ID_SIZE 8
#define VAULT_NONCE_SIZE 12
#define VAULT_TAG_SIZE 16
#define VAULT_CHECKSUM_SIZE 32
#define VAULT_USER_MAX 255
/* A record after its length field: kind (1), account length (1), the
 * account, key id, stored at (8), expires at (8), nonce, ciphertext (as
 * long as the secret), tag. */
#define VAULT_RECORD_FIXED                                                     \
	(1 + 1 + VAULT_KEY_ID_SIZE + 8 + 8 + VAULT_NONCE_SIZE)
#define VAULT_RECORD_MIN (VAULT_RECORD_FIXED + 1 + 1 + VAULT_TAG_SIZE)
#define VAULT_RECORD_MAX                                                       \
	(VAULT_RECORD_FIXED + TRIB_VAULT_ACCOUNT_MAX + TRIB_VAULT_SECRET_MAX + \
	 VAULT_TAG_SIZE)
#define VAULT_HEADER_MAX (VAULT_MAGIC_SIZE + 4 + 1 + VAULT_USER_MAX + 4)
/* Ceiling of a vault file: more than the largest one the caps allow. */
#define VAULT_FILE_MAX (8 * 1024 * 1024)
_Static_assert(VAULT_HEADER_MAX +
			       TRIB_VAULT_RECORDS_MAX * (4 + VAULT_RECORD_MAX) +
			       VAULT_CHECKSUM_SIZE <=
		       VAULT_FILE_MAX,
	       "a full vault must fit under VAULT_FILE_MAX");
/* The additional data of a record: a label, the version, the user, the
 * record's fields before its nonce. */
#define VAULT_AAD_LABEL "tributary-vault"
#define VAULT_AAD_MAX                                                          \
	(sizeof(VAULT_AAD_LABEL) + 4 + 1 + VAULT_USER_MAX + 1 + 1 +            \
	 TRIB_VAULT_ACCOUNT_MAX + VAULT_KEY_ID_SIZE + 8 + 8)

struct vault_record {
	enum trib_vault_kind kind;
	char account[TRIB_VAULT_ACCOUNT_MAX + 1];
	unsigned char key_id[VAULT_KEY_ID_SIZE];
	int64_t stored_at, expires_at;
	unsigned char nonce[VAULT_NONCE_SIZE];
	unsigned char tag[VAULT_TAG_SIZE];
	/* The ciphertext, as long as the secret. */
	unsigned char *ct;
	size_t ct_len;
};

struct trib_vault {
	char *user;
	/* <state_dir>/<user>, its fd, and <dir>/vault; NULL and -1 for a
	 * vault made by trib_vault_create() (it cannot be committed). */
	char *dir_path;
	char *path;
	int dir_fd;
	/* Only for the open-vault list of vault.c. */
	const struct trib_state *state;
	const struct trib_vault_key *key;
	/* Sorted by account, then kind; no two alike. */
	struct vault_record *records;
	unsigned int count, alloc;
	bool dirty;
	char *error;
};

/* Replace the vault's error (one line: control characters become '?'). */
void trib_vault_set_error(struct trib_vault *vault, const char *fmt, ...)
	TRIB_ATTR_PRINTF(2, 3);

/* vault.c: an empty vault of user, in memory only (tests, fuzzing);
 * freed with trib_vault_close(). */
struct trib_vault *trib_vault_create(const char *user,
				     const struct trib_vault_key *key);

/* vault-key.c: the raw key id, and the cipher. seal encrypts plain with
 * a fresh random nonce; unseal decrypts into plain_r (ct_len bytes) and
 * returns false, with plain_r wiped, when the tag does not match. */
const unsigned char *trib_vault_key_id_raw(const struct trib_vault_key *key);
void trib_vault_key_seal(const struct trib_vault_key *key,
			 const unsigned char *aad, size_t aad_len,
			 const unsigned char *plain, size_t len,
			 unsigned char nonce_r[VAULT_NONCE_SIZE],
			 unsigned char *ct_r,
			 unsigned char tag_r[VAULT_TAG_SIZE]);
bool trib_vault_key_unseal(const struct trib_vault_key *key,
			   const unsigned char *aad, size_t aad_len,
			   const unsigned char nonce[VAULT_NONCE_SIZE],
			   const unsigned char *ct, size_t ct_len,
			   const unsigned char tag[VAULT_TAG_SIZE],
			   unsigned char *plain_r);

/* vault-file.c: the additional data of a record of vault's user (aad_r:
 * VAULT_AAD_MAX bytes); returns its length. */
size_t trib_vault_record_aad(const struct trib_vault *vault,
			     const struct vault_record *rec,
			     unsigned char *aad_r);
/* The bytes of the vault file. */
unsigned char *trib_vault_file_serialize(const struct trib_vault *vault,
					 size_t *size_r);
/* Fill an empty vault from the bytes of its file: checksum, structure,
 * version, user, key ids, and every record authenticated. Returns
 * TRIB_VAULT_OK, or the class with the vault's error set (without the
 * path: the caller adds it) and no record kept. */
enum trib_vault_error trib_vault_file_parse(struct trib_vault *vault,
					    const unsigned char *data,
					    size_t size);

#endif
