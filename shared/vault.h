#ifndef TRIB_VAULT_H
#define TRIB_VAULT_H

/* vault.h: the token vault, an encrypted store of one user's secrets:
 * OAuth refresh tokens, cached access tokens (with their expiry) and app
 * passwords, per remote account. It lives in <state_dir>/<user>/vault,
 * beside the sync state, and is opened from an open trib_state: the
 * state's per-user lock (state.h) is the vault's lock too, so one process
 * at a time reads and rewrites a user's vault, and no second lock exists.
 *
 * Each record is encrypted on its own with AES-256-GCM under the vault key
 * (a random 96-bit nonce every time a record is set), its additional data
 * binding it to the user, the account, the kind, its times and the format
 * version: a changed byte, or a record moved into another user's or
 * account's place, is refused, never decrypted to garbage. The whole file
 * also ends with a SHA-256 of its bytes, so a torn or damaged file is told
 * apart from a forged one. The format is in docs/vault.md.
 *
 * Changes are made in memory; trib_vault_commit() writes a new file
 * atomically (temp file, fsync, rename, fsync of the directory) and
 * returns only once it is durable: a crash leaves the old vault or the
 * new one, and a rotated refresh token is committed before it is used. A
 * failed commit (a full disk) leaves the old file in place and keeps the
 * changes in memory.
 *
 * Secrets: a record's plaintext exists only in the buffer trib_vault_get()
 * hands out (the caller wipes it with trib_secret_free()) and briefly
 * inside OpenSSL; the vault holds only ciphertext. The key bytes stay in
 * struct trib_vault_key and are wiped when it is destroyed. No error
 * string ever holds a secret.
 *
 * Errors are one line naming the file and the cause, and come with a
 * class (enum trib_vault_error) that says what happened. Strings of the
 * key functions and of trib_vault_open() live in static buffers, valid
 * until the next such call; a vault's own errors are owned by the vault,
 * valid until its next call or trib_vault_close(). */

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <sys/types.h>
#include <time.h>

struct trib_state;
struct trib_vault;
struct trib_vault_key;

enum trib_vault_error {
	TRIB_VAULT_OK = 0,
	/* The key file does not exist: `tributary init` makes it (on a
	 * cluster: copy it from another host). */
	TRIB_VAULT_ERR_KEY_MISSING,
	/* The key file is not private (group or others may access it), is
	 * not a regular file, or cannot be read. */
	TRIB_VAULT_ERR_KEY_ACCESS,
	/* The key file's text is not one key. */
	TRIB_VAULT_ERR_KEY_INVALID,
	/* trib_vault_key_generate(): the file exists; it was left alone. */
	TRIB_VAULT_ERR_KEY_EXISTS,
	/* The vault was written with another key (its id is in the error). */
	TRIB_VAULT_ERR_WRONG_KEY,
	/* Torn, truncated or damaged: the checksum or the structure is
	 * wrong, or a size is beyond its cap. */
	TRIB_VAULT_ERR_CORRUPT,
	/* The checksum holds but a record does not authenticate: changed
	 * on purpose, or moved from another user's or account's place. */
	TRIB_VAULT_ERR_TAMPERED,
	/* A format version this Tributary does not read. */
	TRIB_VAULT_ERR_VERSION,
	/* The vault file or directory is not private, is a symbolic link or
	 * not a regular file. */
	TRIB_VAULT_ERR_ACCESS,
	/* Reading or writing failed: a full disk, an I/O error. */
	TRIB_VAULT_ERR_IO,
	/* The call itself was wrong: a bad account name, an empty or too
	 * long secret, too many records, a second open of one user. */
	TRIB_VAULT_ERR_INVALID,
};

/* "ok", "key missing", "wrong key", "corrupt", "tampered", ... */
const char *trib_vault_error_name(enum trib_vault_error error);

/* ---- the key ----
 *
 * The key file (tributary_vault_key_file, /etc/tributary/vault.key) is
 * text: one line of 64 hex digits (32 random bytes); blank lines and
 * lines starting with '#' are ignored. It must be a regular file (a
 * symbolic link to one is followed) that neither group nor others may
 * access (mode 0600 or 0400, owned by the tributary user), else it is
 * refused. The key's id, the first 8 bytes of HMAC-SHA256(key,
 * "tributary-vault-key-id") in hex, is stored with each record so that a
 * store written under another key is reported as such; the id reveals
 * nothing of the key. The AES key is derived from the key as well (never
 * the file's bytes themselves). */

#define TRIB_VAULT_KEY_SIZE 32
#define TRIB_VAULT_KEY_ID_LEN 16

/* Parse the text of a key file (no I/O). name (the path) is used in
 * errors. */
enum trib_vault_error trib_vault_key_parse(const char *text, size_t size,
					   const char *name,
					   struct trib_vault_key **key_r,
					   const char **error_r);
/* Load the key file at path, checking its type and mode first. */
enum trib_vault_error trib_vault_key_load(const char *path,
					  struct trib_vault_key **key_r,
					  const char **error_r);
/* Wipe and free; sets *key to NULL. NULL is fine. */
void trib_vault_key_destroy(struct trib_vault_key **key);
/* 16 lower-case hex digits. */
const char *trib_vault_key_id(const struct trib_vault_key *key);
/* The path or name the key was loaded from. */
const char *trib_vault_key_name(const struct trib_vault_key *key);

/* Make a key file with 32 fresh random bytes at path, atomically and
 * without ever replacing a file: a temporary file beside it, mode 0600,
 * owned by uid:gid (each left as it is when (uid_t)-1 / (gid_t)-1),
 * written and fsync()ed, then linked into place (failing with
 * TRIB_VAULT_ERR_KEY_EXISTS when path exists, even as a dangling link)
 * and the directory fsync()ed. The directory must exist. */
enum trib_vault_error trib_vault_key_generate(const char *path, uid_t uid,
					      gid_t gid, const char **error_r);

/* ---- the store ---- */

/* What a record holds. Stored as a byte: new kinds get new numbers. */
enum trib_vault_kind {
	/* OAuth 2.0 refresh token. */
	TRIB_VAULT_REFRESH_TOKEN = 1,
	/* OAuth 2.0 access token, cached until its expiry. */
	TRIB_VAULT_ACCESS_TOKEN = 2,
	/* A provider's app password (Yahoo, Gmail without OAuth...). */
	TRIB_VAULT_APP_PASSWORD = 3,
};
#define TRIB_VAULT_KIND_MAX 3

/* "refresh_token", "access_token", "app_password"; NULL when unknown. */
const char *trib_vault_kind_name(enum trib_vault_kind kind);

/* Caps: a secret's bytes, the records of one user's vault. */
#define TRIB_VAULT_SECRET_MAX 16384
#define TRIB_VAULT_RECORDS_MAX 256
#define TRIB_VAULT_ACCOUNT_MAX 32

/* A record, without its secret. Self-contained: no pointers. */
struct trib_vault_info {
	enum trib_vault_kind kind;
	char account[TRIB_VAULT_ACCOUNT_MAX + 1];
	/* When it was set, seconds since the epoch. */
	int64_t stored_at;
	/* When it stops being valid (access tokens); 0: no expiry. */
	int64_t expires_at;
};

/* Open the vault of the state's user: <trib_state_path(state)>/vault,
 * read whole (at most 8 MiB), checksum verified and every record
 * authenticated before anything is returned. A missing file is an empty
 * vault (nothing is written until a commit). The vault must be closed
 * before the state: the state's lock covers it. key is borrowed and must
 * outlive the vault. A leftover vault.tmp of a commit that crashed is
 * removed. Returns TRIB_VAULT_OK with *vault_r, or the class and
 * *error_r (a static string), e.g. "vault /var/lib/tributary/alice/vault:
 * written with another vault key (id 0123456789abcdef; ...)". Nothing is
 * changed on disk when it fails. */
enum trib_vault_error trib_vault_open(struct trib_state *state,
				      const struct trib_vault_key *key,
				      struct trib_vault **vault_r,
				      const char **error_r);
/* Free; changes not committed are lost. Sets *vault to NULL; NULL is
 * fine. */
void trib_vault_close(struct trib_vault **vault);

/* The secret of (account, kind): 1 with *secret_r, a NUL-terminated copy
 * the caller owns and wipes with trib_secret_free(), and *info_r (may be
 * NULL); 0 when there is none (*secret_r NULL); -1 with *error_r when it
 * cannot be decrypted (only a vault damaged in memory) or the account
 * name is invalid. An access token is returned whatever its expiry: the
 * caller compares expires_at with the time (and its margin). */
int trib_vault_get(struct trib_vault *vault, const char *account,
		   enum trib_vault_kind kind, char **secret_r,
		   struct trib_vault_info *info_r, const char **error_r);
/* Whether (account, kind) has a record, and its info (may be NULL). */
bool trib_vault_find(const struct trib_vault *vault, const char *account,
		     enum trib_vault_kind kind, struct trib_vault_info *info_r);
/* Set (add or replace) the secret of (account, kind): encrypted at once
 * with a fresh nonce, stored_at the current time, expires_at as given (0:
 * none). The vault keeps no copy of the plaintext. account: a valid
 * account name ([a-z0-9_-]{1,32}); secret: 1 to TRIB_VAULT_SECRET_MAX
 * bytes. Returns TRIB_VAULT_OK, or TRIB_VAULT_ERR_INVALID with *error_r.
 * Durable only after trib_vault_commit(). */
enum trib_vault_error trib_vault_set(struct trib_vault *vault,
				     const char *account,
				     enum trib_vault_kind kind,
				     const char *secret, int64_t expires_at,
				     const char **error_r);
/* Remove the record of (account, kind); false when there was none. */
bool trib_vault_delete(struct trib_vault *vault, const char *account,
		       enum trib_vault_kind kind);
/* Remove every record of account; returns how many there were. */
unsigned int trib_vault_delete_account(struct trib_vault *vault,
				       const char *account);
/* Every record, sorted by account, then kind. */
unsigned int trib_vault_count(const struct trib_vault *vault);
bool trib_vault_info_at(const struct trib_vault *vault, unsigned int idx,
			struct trib_vault_info *info_r);

/* Make every change since the last commit durable: the whole vault is
 * written to vault.tmp (mode 0600, owned like <user>/ when running as
 * root), fsync()ed, renamed over vault, and <user>/ fsync()ed. Returns
 * TRIB_VAULT_OK once all of that is done, or TRIB_VAULT_ERR_IO with
 * *error_r: the old vault is then on disk, no temp file is left, and the
 * changes stay in memory for the next commit (when only the last fsync
 * of the directory failed, the new vault is in place but not known to be
 * durable, and the next commit writes it again). Does nothing when
 * nothing changed. */
enum trib_vault_error trib_vault_commit(struct trib_vault *vault,
					const char **error_r);
/* Whether there are changes not committed yet. */
bool trib_vault_is_dirty(const struct trib_vault *vault);
/* <state_dir>/<user>/vault */
const char *trib_vault_path(const struct trib_vault *vault);

#endif
