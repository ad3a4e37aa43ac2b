/* vault-key.c: the vault key: the key file's syntax, loading it with
 * strict checks, generating one atomically without ever replacing a
 * file, and the AES-256-GCM sealing of records. Only keys derived from
 * the file's key are kept, they never leave this file, and they are wiped
 * when freed. */

#include "vault-private.h"

#include "fileio.h"

#include <errno.h>
#include <fcntl.h>
#include <openssl/crypto.h>
#include <openssl/evp.h>
#include <openssl/hmac.h>
#include <openssl/rand.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#define KEY_HEX_LEN (2 * TRIB_VAULT_KEY_SIZE)
/* A key file is a few lines; anything this big is not one. */
#define KEY_FILE_MAX 4096
#define KEY_ID_LABEL "tributary-vault-key-id"
#define KEY_ENC_LABEL "tributary-vault-aes-256-gcm-1"
#define KEY_FILE_COMMENT                                                       \
	"# Tributary vault key (docs/vault.md): 64 hex digits, the key of "    \
	"the\n# encrypted token store. Keep it tributary:tributary 0600. "     \
	"Every host of\n# a cluster needs this same key: without it the "      \
	"stored tokens are lost.\n"

struct trib_vault_key {
	/* AES-256 key, derived from the file's key. */
	unsigned char enc[TRIB_VAULT_KEY_SIZE];
	unsigned char id[VAULT_KEY_ID_SIZE];
	char id_hex[TRIB_VAULT_KEY_ID_LEN + 1];
	char *name;
};

static char key_error[768];

/* Format the error into key_error, on one line (a path may hold control
 * characters). */
static TRIB_ATTR_PRINTF(1, 2) const char *key_fail(const char *fmt, ...)
{
	va_list args;

	va_start(args, fmt);
	vsnprintf(key_error, sizeof(key_error), fmt, args);
	va_end(args);
	for (char *p = key_error; *p != '\0'; p++) {
		if ((unsigned char)*p < 0x20 || *p == 0x7f)
			*p = '?';
	}
	return key_error;
}

static void hex_write(char *dest, const unsigned char *data, size_t size)
{
	static const char digits[] = "0123456789abcdef";

	for (size_t i = 0; i < size; i++) {
		dest[2 * i] = digits[data[i] >> 4];
		dest[2 * i + 1] = digits[data[i] & 0x0f];
	}
}

static void hmac_label(const unsigned char master[TRIB_VAULT_KEY_SIZE],
		       const char *label, unsigned char mac_r[32])
{
	unsigned int len = 0;

	if (HMAC(EVP_sha256(), master, TRIB_VAULT_KEY_SIZE, (const void *)label,
		 strlen(label), mac_r, &len) == NULL ||
	    len != 32)
		abort(); /* HMAC-SHA256 itself failing: OpenSSL is broken */
}

static struct trib_vault_key *
key_from_master(const unsigned char master[TRIB_VAULT_KEY_SIZE],
		const char *name)
{
	struct trib_vault_key *key = trib_calloc(1, sizeof(*key));
	unsigned char mac[32];

	hmac_label(master, KEY_ENC_LABEL, key->enc);
	hmac_label(master, KEY_ID_LABEL, mac);
	memcpy(key->id, mac, sizeof(key->id));
	hex_write(key->id_hex, key->id, sizeof(key->id));
	key->id_hex[TRIB_VAULT_KEY_ID_LEN] = '\0';
	OPENSSL_cleanse(mac, sizeof(mac));
	key->name = trib_strdup(name);
	return key;
}

static bool is_blank(char c)
{
	return c == ' ' || c == '\t' || c == '\r';
}

enum trib_vault_error trib_vault_key_parse(const char *text, size_t size,
					   const char *name,
					   struct trib_vault_key **key_r,
					   const char **error_r)
{
	unsigned char master[TRIB_VAULT_KEY_SIZE];
	unsigned int line_num = 0, keys = 0;
	size_t pos = 0;

	*key_r = NULL;
	while (pos < size) {
		const char *line = text + pos;
		const char *lf = memchr(line, '\n', size - pos);
		size_t len = lf != NULL ? (size_t)(lf - line) : size - pos;

		pos += len + (lf != NULL ? 1 : 0);
		line_num++;
		while (len > 0 && is_blank(line[len - 1]))
			len--;
		while (len > 0 && is_blank(line[0])) {
			line++;
			len--;
		}
		if (len == 0 || line[0] == '#')
			continue;
		for (size_t i = 0; i < len; i++) {
			if (trib_hex_value(line[i]) < 0) {
				*error_r = key_fail(
					"vault key %s: line %u: bad syntax "
					"(the key is %d hex digits)",
					name, line_num, KEY_HEX_LEN);
				goto fail;
			}
		}
		if (len != KEY_HEX_LEN) {
			*error_r = key_fail("vault key %s: line %u: wrong key "
					    "length: %zu hex digits, expected "
					    "%d",
					    name, line_num, len, KEY_HEX_LEN);
			goto fail;
		}
		if (++keys > 1) {
			*error_r = key_fail("vault key %s: line %u: a second "
					    "key (the file holds exactly one)",
					    name, line_num);
			goto fail;
		}
		for (size_t i = 0; i < TRIB_VAULT_KEY_SIZE; i++) {
			master[i] = (unsigned char)(trib_hex_value(line[2 * i])
							    << 4 |
						    trib_hex_value(
							    line[2 * i + 1]));
		}
	}
	if (keys == 0) {
		*error_r = key_fail("vault key %s: no key in the file", name);
		return TRIB_VAULT_ERR_KEY_INVALID;
	}
	*key_r = key_from_master(master, name);
	OPENSSL_cleanse(master, sizeof(master));
	return TRIB_VAULT_OK;
fail:
	OPENSSL_cleanse(master, sizeof(master));
	return TRIB_VAULT_ERR_KEY_INVALID;
}

void trib_vault_key_destroy(struct trib_vault_key **_key)
{
	struct trib_vault_key *key = *_key;

	if (key == NULL)
		return;
	free(key->name);
	OPENSSL_cleanse(key, sizeof(*key));
	free(key);
	*_key = NULL;
}

const char *trib_vault_key_id(const struct trib_vault_key *key)
{
	return key->id_hex;
}

const char *trib_vault_key_name(const struct trib_vault_key *key)
{
	return key->name;
}

const unsigned char *trib_vault_key_id_raw(const struct trib_vault_key *key)
{
	return key->id;
}

/* ---- loading ---- */

static enum trib_vault_error open_error(const char *path, int err,
					const char **error_r)
{
	if (err == ENOENT) {
		*error_r = key_fail("vault key %s: missing (run `tributary "
				    "init` to create it; on a cluster, copy "
				    "the key of the other hosts: a new key "
				    "cannot read the tokens stored already)",
				    path);
		return TRIB_VAULT_ERR_KEY_MISSING;
	}
	*error_r =
		key_fail("vault key %s: cannot open: %s%s", path, strerror(err),
			 err == EACCES ? " (it must be readable by the user "
					 "tributary runs as)"
				       : "");
	return TRIB_VAULT_ERR_KEY_ACCESS;
}

/* Read all of fd into buf (KEY_FILE_MAX + 1 bytes): the size, or -1 with
 * the error set. */
static ssize_t read_key_file(int fd, const char *path, char *buf,
			     enum trib_vault_error *class_r)
{
	size_t size = 0;
	ssize_t ret;

	for (;;) {
		ret = read(fd, buf + size, KEY_FILE_MAX + 1 - size);
		if (ret < 0 && errno == EINTR)
			continue;
		if (ret < 0) {
			key_fail("vault key %s: read failed: %s", path,
				 strerror(errno));
			*class_r = TRIB_VAULT_ERR_KEY_ACCESS;
			return -1;
		}
		if (ret == 0)
			return (ssize_t)size;
		size += (size_t)ret;
		if (size > KEY_FILE_MAX) {
			key_fail("vault key %s: too large for a key file "
				 "(over %d bytes)",
				 path, KEY_FILE_MAX);
			*class_r = TRIB_VAULT_ERR_KEY_INVALID;
			return -1;
		}
	}
}

enum trib_vault_error trib_vault_key_load(const char *path,
					  struct trib_vault_key **key_r,
					  const char **error_r)
{
	enum trib_vault_error ret = TRIB_VAULT_ERR_KEY_ACCESS;
	char buf[KEY_FILE_MAX + 1];
	struct stat st;
	ssize_t size;
	int fd;

	*key_r = NULL;
	/* O_NONBLOCK: a FIFO put in the key's place must not hang us. */
	fd = open(path, O_RDONLY | O_CLOEXEC | O_NOCTTY | O_NONBLOCK);
	if (fd < 0)
		return open_error(path, errno, error_r);
	if (fstat(fd, &st) < 0) {
		*error_r = key_fail("vault key %s: fstat failed: %s", path,
				    strerror(errno));
		close(fd);
		return TRIB_VAULT_ERR_KEY_ACCESS;
	}
	if (!S_ISREG(st.st_mode)) {
		*error_r = key_fail("vault key %s: not a regular file", path);
		close(fd);
		return TRIB_VAULT_ERR_KEY_ACCESS;
	}
	if ((st.st_mode & (S_IRWXG | S_IRWXO)) != 0) {
		*error_r = key_fail("vault key %s: mode %04o gives group or "
				    "others access (refused: only the "
				    "tributary user may read it; chmod 600 "
				    "it, and check who has read it)",
				    path, (unsigned int)(st.st_mode & 07777));
		close(fd);
		return TRIB_VAULT_ERR_KEY_ACCESS;
	}
	size = read_key_file(fd, path, buf, &ret);
	close(fd);
	if (size < 0)
		*error_r = key_error;
	else
		ret = trib_vault_key_parse(buf, (size_t)size, path, key_r,
					   error_r);
	OPENSSL_cleanse(buf, sizeof(buf));
	return ret;
}

/* ---- generating ---- */

/* Write text into a new temporary file beside path: its name, or NULL
 * with the error set. */
static char *write_temp(const char *path, const char *text, size_t len,
			uid_t uid, gid_t gid)
{
	char *tmp = trib_strdup_printf("%s.tmp-XXXXXX", path);
	int fd = mkstemp(tmp);

	if (fd < 0) {
		key_fail("vault key %s: cannot create a file beside it: %s",
			 path, strerror(errno));
		free(tmp);
		return NULL;
	}
	(void)fcntl(fd, F_SETFD, FD_CLOEXEC);
	if ((uid != (uid_t)-1 || gid != (gid_t)-1) && fchown(fd, uid, gid) < 0)
		key_fail("vault key %s: cannot set owner %ld:%ld: %s", path,
			 uid == (uid_t)-1 ? -1L : (long)uid,
			 gid == (gid_t)-1 ? -1L : (long)gid, strerror(errno));
	else if (fchmod(fd, 0600) < 0)
		key_fail("vault key %s: cannot set mode 0600: %s", path,
			 strerror(errno));
	else if (trib_write_full(fd, text, len) < 0 || fsync(fd) < 0)
		key_fail("vault key %s: write failed: %s", path,
			 strerror(errno));
	else if (close(fd) < 0) {
		fd = -1;
		key_fail("vault key %s: write failed: %s", path,
			 strerror(errno));
	} else
		return tmp;
	if (fd >= 0)
		close(fd);
	(void)unlink(tmp);
	free(tmp);
	return NULL;
}

enum trib_vault_error trib_vault_key_generate(const char *path, uid_t uid,
					      gid_t gid, const char **error_r)
{
	unsigned char master[TRIB_VAULT_KEY_SIZE];
	char text[sizeof(KEY_FILE_COMMENT) + KEY_HEX_LEN + 1];
	size_t len = strlen(KEY_FILE_COMMENT);
	struct stat st;
	char *tmp;
	int ret, link_errno;

	/* Checked again by link(); this only spares a temp file. */
	if (lstat(path, &st) == 0) {
		*error_r = key_fail("vault key %s: exists already (never "
				    "overwritten)",
				    path);
		return TRIB_VAULT_ERR_KEY_EXISTS;
	}
	if (RAND_bytes(master, sizeof(master)) != 1) {
		*error_r = key_fail("vault key %s: no random bytes "
				    "(RAND_bytes failed)",
				    path);
		return TRIB_VAULT_ERR_IO;
	}
	memcpy(text, KEY_FILE_COMMENT, len);
	hex_write(text + len, master, sizeof(master));
	len += KEY_HEX_LEN;
	text[len++] = '\n';
	OPENSSL_cleanse(master, sizeof(master));
	tmp = write_temp(path, text, len, uid, gid);
	OPENSSL_cleanse(text, sizeof(text));
	if (tmp == NULL) {
		*error_r = key_error;
		return TRIB_VAULT_ERR_IO;
	}
	/* link(), not rename(): an existing file is never replaced, even
	 * one made by someone else since the lstat(). */
	ret = link(tmp, path);
	link_errno = ret < 0 ? errno : 0;
	if (ret < 0 && link_errno == EEXIST) {
		*error_r = key_fail("vault key %s: exists already (never "
				    "overwritten)",
				    path);
	} else if (ret < 0) {
		*error_r = key_fail("vault key %s: link failed: %s", path,
				    strerror(link_errno));
	}
	(void)unlink(tmp);
	free(tmp);
	if (ret < 0)
		return link_errno == EEXIST ? TRIB_VAULT_ERR_KEY_EXISTS
					    : TRIB_VAULT_ERR_IO;
	if (trib_fsync_dir_of(path) < 0) {
		*error_r = key_fail("vault key %s: fsync of its directory "
				    "failed: %s",
				    path, strerror(errno));
		return TRIB_VAULT_ERR_IO;
	}
	return TRIB_VAULT_OK;
}

/* ---- the cipher ---- */

void trib_vault_key_seal(const struct trib_vault_key *key,
			 const unsigned char *aad, size_t aad_len,
			 const unsigned char *plain, size_t len,
			 unsigned char nonce_r[VAULT_NONCE_SIZE],
			 unsigned char *ct_r,
			 unsigned char tag_r[VAULT_TAG_SIZE])
{
	EVP_CIPHER_CTX *ctx = EVP_CIPHER_CTX_new();
	int out_len = 0, final_len = 0;

	/* A failing cipher or random source means OpenSSL is broken. */
	if (ctx == NULL || RAND_bytes(nonce_r, VAULT_NONCE_SIZE) != 1 ||
	    EVP_EncryptInit_ex(ctx, EVP_aes_256_gcm(), NULL, NULL, NULL) != 1 ||
	    EVP_CIPHER_CTX_ctrl(ctx, EVP_CTRL_GCM_SET_IVLEN, VAULT_NONCE_SIZE,
				NULL) != 1 ||
	    EVP_EncryptInit_ex(ctx, NULL, NULL, key->enc, nonce_r) != 1 ||
	    EVP_EncryptUpdate(ctx, NULL, &out_len, aad, (int)aad_len) != 1 ||
	    EVP_EncryptUpdate(ctx, ct_r, &out_len, plain, (int)len) != 1 ||
	    (size_t)out_len != len ||
	    EVP_EncryptFinal_ex(ctx, ct_r + out_len, &final_len) != 1 ||
	    final_len != 0 ||
	    EVP_CIPHER_CTX_ctrl(ctx, EVP_CTRL_GCM_GET_TAG, VAULT_TAG_SIZE,
				tag_r) != 1)
		abort();
	EVP_CIPHER_CTX_free(ctx);
}

bool trib_vault_key_unseal(const struct trib_vault_key *key,
			   const unsigned char *aad, size_t aad_len,
			   const unsigned char nonce[VAULT_NONCE_SIZE],
			   const unsigned char *ct, size_t ct_len,
			   const unsigned char tag[VAULT_TAG_SIZE],
			   unsigned char *plain_r)
{
	EVP_CIPHER_CTX *ctx = EVP_CIPHER_CTX_new();
	unsigned char tag_copy[VAULT_TAG_SIZE];
	int out_len = 0, final_len = 0;
	bool ok;

	memcpy(tag_copy, tag, sizeof(tag_copy));
	if (ctx == NULL ||
	    EVP_DecryptInit_ex(ctx, EVP_aes_256_gcm(), NULL, NULL, NULL) != 1 ||
	    EVP_CIPHER_CTX_ctrl(ctx, EVP_CTRL_GCM_SET_IVLEN, VAULT_NONCE_SIZE,
				NULL) != 1 ||
	    EVP_DecryptInit_ex(ctx, NULL, NULL, key->enc, nonce) != 1 ||
	    EVP_DecryptUpdate(ctx, NULL, &out_len, aad, (int)aad_len) != 1 ||
	    EVP_DecryptUpdate(ctx, plain_r, &out_len, ct, (int)ct_len) != 1 ||
	    (size_t)out_len != ct_len ||
	    EVP_CIPHER_CTX_ctrl(ctx, EVP_CTRL_GCM_SET_TAG, VAULT_TAG_SIZE,
				tag_copy) != 1)
		abort();
	/* The tag is checked here: nothing decrypted counts before it. */
	ok = EVP_DecryptFinal_ex(ctx, plain_r + out_len, &final_len) == 1 &&
	     final_len == 0;
	EVP_CIPHER_CTX_free(ctx);
	if (!ok)
		OPENSSL_cleanse(plain_r, ct_len);
	return ok;
}
