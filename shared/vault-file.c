/* vault-file.c: the vault file's binary format (docs/vault.md).
 *
 * A header (magic, version, user, record count), length-prefixed
 * records, and the SHA-256 of every byte before it. Parsing checks the
 * checksum first (a torn or damaged file is "corrupt"), then every size
 * against its cap before it is used (a hostile length is refused, never
 * allocated), then the structure, the key ids ("wrong key") and finally
 * each record's GCM tag ("tampered"). Little-endian integers. */

#include "vault-private.h"

#include "settings.h"

#include <openssl/crypto.h>
#include <openssl/evp.h>
#include <stdlib.h>
#include <string.h>

#define HEADER_MIN (VAULT_MAGIC_SIZE + 4 + 1 + 1 + 4)

static void put_u32(unsigned char *p, uint32_t v)
{
	for (unsigned int i = 0; i < 4; i++)
		p[i] = (unsigned char)(v >> (8 * i));
}

static void put_i64(unsigned char *p, int64_t v)
{
	uint64_t u = (uint64_t)v;

	for (unsigned int i = 0; i < 8; i++)
		p[i] = (unsigned char)(u >> (8 * i));
}

static uint32_t get_u32(const unsigned char *p)
{
	uint32_t v = 0;

	for (unsigned int i = 0; i < 4; i++)
		v |= (uint32_t)p[i] << (8 * i);
	return v;
}

static int64_t get_i64(const unsigned char *p)
{
	uint64_t u = 0;

	for (unsigned int i = 0; i < 8; i++)
		u |= (uint64_t)p[i] << (8 * i);
	return (int64_t)u;
}

static void sha256(const unsigned char *data, size_t size,
		   unsigned char md_r[VAULT_CHECKSUM_SIZE])
{
	unsigned int md_len = 0;

	if (EVP_Digest(data, size, md_r, &md_len, EVP_sha256(), NULL) != 1 ||
	    md_len != VAULT_CHECKSUM_SIZE)
		abort(); /* SHA-256 itself failing: OpenSSL is broken */
}

/* The record's fields from its kind through its expiry time, as in the
 * file; returns their length. */
static size_t record_head(const struct vault_record *rec, unsigned char *p)
{
	size_t alen = strlen(rec->account), n = 0;

	p[n++] = (unsigned char)rec->kind;
	p[n++] = (unsigned char)alen;
	memcpy(p + n, rec->account, alen);
	n += alen;
	memcpy(p + n, rec->key_id, VAULT_KEY_ID_SIZE);
	n += VAULT_KEY_ID_SIZE;
	put_i64(p + n, rec->stored_at);
	n += 8;
	put_i64(p + n, rec->expires_at);
	n += 8;
	return n;
}

size_t trib_vault_record_aad(const struct trib_vault *vault,
			     const struct vault_record *rec,
			     unsigned char *aad_r)
{
	size_t ulen = strlen(vault->user), n = sizeof(VAULT_AAD_LABEL);

	/* The label with its NUL, the version, the user, the head. */
	memcpy(aad_r, VAULT_AAD_LABEL, n);
	put_u32(aad_r + n, VAULT_VERSION);
	n += 4;
	aad_r[n++] = (unsigned char)ulen;
	memcpy(aad_r + n, vault->user, ulen);
	n += ulen;
	return n + record_head(rec, aad_r + n);
}

/* ---- writing ---- */

unsigned char *trib_vault_file_serialize(const struct trib_vault *vault,
					 size_t *size_r)
{
	size_t ulen = strlen(vault->user), size, n = 0;
	unsigned char *out;

	size = VAULT_MAGIC_SIZE + 4 + 1 + ulen + 4 + VAULT_CHECKSUM_SIZE;
	for (unsigned int i = 0; i < vault->count; i++) {
		size += 4 + VAULT_RECORD_FIXED +
			strlen(vault->records[i].account) +
			vault->records[i].ct_len + VAULT_TAG_SIZE;
	}
	out = trib_malloc(size);
	memcpy(out, VAULT_MAGIC, VAULT_MAGIC_SIZE);
	n += VAULT_MAGIC_SIZE;
	put_u32(out + n, VAULT_VERSION);
	n += 4;
	out[n++] = (unsigned char)ulen;
	memcpy(out + n, vault->user, ulen);
	n += ulen;
	put_u32(out + n, vault->count);
	n += 4;
	for (unsigned int i = 0; i < vault->count; i++) {
		const struct vault_record *rec = &vault->records[i];
		size_t len = VAULT_RECORD_FIXED + strlen(rec->account) +
			     rec->ct_len + VAULT_TAG_SIZE;

		put_u32(out + n, (uint32_t)len);
		n += 4;
		n += record_head(rec, out + n);
		memcpy(out + n, rec->nonce, VAULT_NONCE_SIZE);
		n += VAULT_NONCE_SIZE;
		memcpy(out + n, rec->ct, rec->ct_len);
		n += rec->ct_len;
		memcpy(out + n, rec->tag, VAULT_TAG_SIZE);
		n += VAULT_TAG_SIZE;
	}
	sha256(out, n, out + n);
	n += VAULT_CHECKSUM_SIZE;
	if (n != size)
		abort();
	*size_r = size;
	return out;
}

/* ---- reading ---- */

static void records_free(struct trib_vault *vault)
{
	for (unsigned int i = 0; i < vault->count; i++)
		free(vault->records[i].ct);
	vault->count = 0;
}

/* (account, kind) order; 0 when alike. */
static int record_cmp(const struct vault_record *a,
		      const struct vault_record *b)
{
	int ret = strcmp(a->account, b->account);

	if (ret != 0)
		return ret;
	return (int)a->kind - (int)b->kind;
}

/* One record of len bytes at p (its length field already read and
 * checked against what is left), appended to the vault. */
static enum trib_vault_error parse_record(struct trib_vault *vault,
					  unsigned int num,
					  const unsigned char *p, size_t len)
{
	struct vault_record *rec;
	size_t alen, n = 0;
	unsigned int kind;

	if (len < VAULT_RECORD_MIN || len > VAULT_RECORD_MAX) {
		trib_vault_set_error(vault, "record %u: bad length %zu", num,
				     len);
		return TRIB_VAULT_ERR_CORRUPT;
	}
	kind = p[n++];
	alen = p[n++];
	if (kind == 0 || kind > TRIB_VAULT_KIND_MAX) {
		trib_vault_set_error(vault, "record %u: unknown kind %u", num,
				     kind);
		return TRIB_VAULT_ERR_CORRUPT;
	}
	if (alen == 0 || alen > TRIB_VAULT_ACCOUNT_MAX ||
	    len < VAULT_RECORD_FIXED + alen + 1 + VAULT_TAG_SIZE) {
		trib_vault_set_error(vault, "record %u: bad account length",
				     num);
		return TRIB_VAULT_ERR_CORRUPT;
	}
	if (vault->count == vault->alloc) {
		vault->alloc = vault->alloc == 0 ? 8 : vault->alloc * 2;
		vault->records = trib_realloc(
			vault->records, vault->alloc * sizeof(*vault->records));
	}
	rec = &vault->records[vault->count];
	memset(rec, 0, sizeof(*rec));
	rec->kind = (enum trib_vault_kind)kind;
	memcpy(rec->account, p + n, alen);
	rec->account[alen] = '\0';
	n += alen;
	if (strlen(rec->account) != alen ||
	    !trib_settings_valid_account_name(rec->account)) {
		trib_vault_set_error(vault, "record %u: bad account name", num);
		return TRIB_VAULT_ERR_CORRUPT;
	}
	memcpy(rec->key_id, p + n, VAULT_KEY_ID_SIZE);
	n += VAULT_KEY_ID_SIZE;
	rec->stored_at = get_i64(p + n);
	rec->expires_at = get_i64(p + n + 8);
	n += 16;
	if (rec->stored_at < 0 || rec->expires_at < 0) {
		trib_vault_set_error(vault, "record %u: negative time", num);
		return TRIB_VAULT_ERR_CORRUPT;
	}
	memcpy(rec->nonce, p + n, VAULT_NONCE_SIZE);
	n += VAULT_NONCE_SIZE;
	rec->ct_len = len - n - VAULT_TAG_SIZE;
	if (rec->ct_len > TRIB_VAULT_SECRET_MAX) {
		trib_vault_set_error(vault, "record %u: secret too long", num);
		return TRIB_VAULT_ERR_CORRUPT;
	}
	if (vault->count > 0 &&
	    record_cmp(&vault->records[vault->count - 1], rec) >= 0) {
		trib_vault_set_error(
			vault, "record %u: out of order or repeated", num);
		return TRIB_VAULT_ERR_CORRUPT;
	}
	rec->ct = trib_malloc(rec->ct_len);
	memcpy(rec->ct, p + n, rec->ct_len);
	memcpy(rec->tag, p + n + rec->ct_len, VAULT_TAG_SIZE);
	vault->count++;
	return TRIB_VAULT_OK;
}

/* The header and the records, the checksum being right. */
static enum trib_vault_error parse_body(struct trib_vault *vault,
					const unsigned char *data, size_t size)
{
	size_t ulen, n = VAULT_MAGIC_SIZE;
	uint32_t version, count;
	enum trib_vault_error ret;

	version = get_u32(data + n);
	n += 4;
	if (version != VAULT_VERSION) {
		trib_vault_set_error(vault,
				     "unsupported version %u (this Tributary "
				     "reads version %d)",
				     version, VAULT_VERSION);
		return TRIB_VAULT_ERR_VERSION;
	}
	ulen = data[n++];
	if (ulen == 0 || n + ulen + 4 > size) {
		trib_vault_set_error(vault, "bad user name length");
		return TRIB_VAULT_ERR_CORRUPT;
	}
	if (ulen != strlen(vault->user) ||
	    memcmp(data + n, vault->user, ulen) != 0) {
		/* Not authenticated, but the records are bound to their
		 * user: a file moved or edited this way never decrypts. */
		char other[VAULT_USER_MAX + 1];

		for (size_t i = 0; i < ulen; i++) {
			other[i] = data[n + i] > 0x20 && data[n + i] < 0x7f
					   ? (char)data[n + i]
					   : '?';
		}
		other[ulen] = '\0';
		trib_vault_set_error(vault,
				     "written for user %s, not %s (copied "
				     "from another user's directory?)",
				     other, vault->user);
		return TRIB_VAULT_ERR_TAMPERED;
	}
	n += ulen;
	count = get_u32(data + n);
	n += 4;
	if (count > TRIB_VAULT_RECORDS_MAX) {
		trib_vault_set_error(vault, "%u records (at most %d)", count,
				     TRIB_VAULT_RECORDS_MAX);
		return TRIB_VAULT_ERR_CORRUPT;
	}
	for (uint32_t i = 0; i < count; i++) {
		uint32_t len;

		if (size - n < 4) {
			trib_vault_set_error(vault, "record %u: truncated",
					     i + 1);
			return TRIB_VAULT_ERR_CORRUPT;
		}
		len = get_u32(data + n);
		n += 4;
		if (len > size - n) {
			trib_vault_set_error(vault,
					     "record %u: length %u past the "
					     "end of the file",
					     i + 1, len);
			return TRIB_VAULT_ERR_CORRUPT;
		}
		ret = parse_record(vault, i + 1, data + n, len);
		if (ret != TRIB_VAULT_OK)
			return ret;
		n += len;
	}
	if (n != size) {
		trib_vault_set_error(vault, "%zu stray bytes after the records",
				     size - n);
		return TRIB_VAULT_ERR_CORRUPT;
	}
	return TRIB_VAULT_OK;
}

/* Every record was written with this key and decrypts under it. A vault
 * none of whose records carries the key's id was written with another
 * key; one where only some do was tampered with. */
static enum trib_vault_error parse_check_records(struct trib_vault *vault)
{
	const unsigned char *id = trib_vault_key_id_raw(vault->key);
	unsigned char aad[VAULT_AAD_MAX], *plain;
	char hex[TRIB_VAULT_KEY_ID_LEN + 1];
	unsigned int i, foreign = 0, first_foreign = 0;
	bool ok = true;

	for (i = 0; i < vault->count; i++) {
		if (memcmp(vault->records[i].key_id, id, VAULT_KEY_ID_SIZE) ==
		    0)
			continue;
		if (foreign++ == 0)
			first_foreign = i;
	}
	if (foreign > 0) {
		const struct vault_record *rec = &vault->records[first_foreign];

		for (unsigned int j = 0; j < VAULT_KEY_ID_SIZE; j++)
			snprintf(hex + 2 * j, 3, "%02x", rec->key_id[j]);
	}
	if (foreign > 0 && foreign == vault->count) {
		trib_vault_set_error(
			vault,
			"written with another vault key (id %s), not the one "
			"in %s (id %s): put the key that wrote it in place "
			"(every host of a cluster needs the same key)",
			hex, trib_vault_key_name(vault->key),
			trib_vault_key_id(vault->key));
		return TRIB_VAULT_ERR_WRONG_KEY;
	}
	if (foreign > 0) {
		trib_vault_set_error(
			vault,
			"record %u (%s %s): key id %s, unlike "
			"the other records' (tampered with)",
			first_foreign + 1,
			vault->records[first_foreign].account,
			trib_vault_kind_name(
				vault->records[first_foreign].kind),
			hex);
		return TRIB_VAULT_ERR_TAMPERED;
	}
	plain = trib_malloc(TRIB_VAULT_SECRET_MAX);
	for (i = 0; i < vault->count && ok; i++) {
		const struct vault_record *rec = &vault->records[i];
		size_t aad_len = trib_vault_record_aad(vault, rec, aad);

		ok = trib_vault_key_unseal(vault->key, aad, aad_len, rec->nonce,
					   rec->ct, rec->ct_len, rec->tag,
					   plain) &&
		     memchr(plain, '\0', rec->ct_len) == NULL;
		OPENSSL_cleanse(plain, rec->ct_len);
	}
	free(plain);
	if (ok)
		return TRIB_VAULT_OK;
	i--;
	trib_vault_set_error(vault,
			     "record %u (%s %s): authentication failed "
			     "(changed, or moved from another user's or "
			     "account's place)",
			     i + 1, vault->records[i].account,
			     trib_vault_kind_name(vault->records[i].kind));
	return TRIB_VAULT_ERR_TAMPERED;
}

enum trib_vault_error trib_vault_file_parse(struct trib_vault *vault,
					    const unsigned char *data,
					    size_t size)
{
	unsigned char md[VAULT_CHECKSUM_SIZE];
	enum trib_vault_error ret;

	if (size < VAULT_MAGIC_SIZE ||
	    memcmp(data, VAULT_MAGIC, VAULT_MAGIC_SIZE) != 0) {
		trib_vault_set_error(vault, "not a Tributary vault file");
		return TRIB_VAULT_ERR_CORRUPT;
	}
	if (size < HEADER_MIN + VAULT_CHECKSUM_SIZE) {
		trib_vault_set_error(vault, "truncated (%zu bytes)", size);
		return TRIB_VAULT_ERR_CORRUPT;
	}
	size -= VAULT_CHECKSUM_SIZE;
	sha256(data, size, md);
	if (CRYPTO_memcmp(md, data + size, sizeof(md)) != 0) {
		trib_vault_set_error(vault, "checksum mismatch (torn, "
					    "truncated or damaged file)");
		return TRIB_VAULT_ERR_CORRUPT;
	}
	ret = parse_body(vault, data, size);
	if (ret == TRIB_VAULT_OK)
		ret = parse_check_records(vault);
	if (ret != TRIB_VAULT_OK)
		records_free(vault);
	return ret;
}
