/* trace.c: the X-Tributary-Trace header: building it within its length
 * cap, and the trace id. Parsing, verifying and finding it are in
 * trace-parse.c. No I/O; the keys and the HMACs made with them live in
 * trace-key.c. The grammar is in trace.h. */

#include "trace.h"

#include "alloc.h"
#include "trace-private.h"

#include <inttypes.h>
#include <openssl/evp.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define LINE_PREFIX TRIB_TRACE_HEADER_NAME ": "
#define MAC_LABEL "tributary-trace-mac\n"
#define ID_LABEL "tributary-trace-id"
/* Unreserved besides letters and digits: see trace.h. */
#define UNRESERVED_PUNCT "-._~!$&'*+/:@[]\\^{|}"
#define NAME_MAX_LEN 32

/* ---- small helpers ---- */

bool trib_trace_char_unreserved(unsigned char c)
{
	if ((c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') ||
	    (c >= '0' && c <= '9'))
		return true;
	return c != '\0' && strchr(UNRESERVED_PUNCT, c) != NULL;
}

bool trib_trace_name_valid(const char *name, size_t len)
{
	size_t i;

	if (len == 0 || len > NAME_MAX_LEN)
		return false;
	for (i = 0; i < len; i++) {
		char c = name[i];

		if (!((c >= 'a' && c <= 'z') || (c >= '0' && c <= '9') ||
		      c == '_' || c == '-'))
			return false;
	}
	return true;
}

static size_t decimal_len(uint64_t num)
{
	size_t len = 1;

	while (num >= 10) {
		num /= 10;
		len++;
	}
	return len;
}

static size_t pstring_len(const char *str)
{
	size_t len = 0;

	for (; *str != '\0'; str++)
		len += trib_trace_char_unreserved((unsigned char)*str) ? 1 : 3;
	return len;
}

void trib_trace_sha256(const void *data, size_t size,
		       unsigned char digest_r[TRIB_TRACE_DIGEST_SIZE])
{
	unsigned int len = 0;

	if (EVP_Digest(data, size, digest_r, &len, EVP_sha256(), NULL) != 1 ||
	    len != TRIB_TRACE_DIGEST_SIZE)
		abort();
}

void trib_trace_folder_digest(const char *folder,
			      unsigned char digest_r[TRIB_TRACE_DIGEST_SIZE])
{
	trib_trace_sha256(folder, strlen(folder), digest_r);
}

/* ---- output into a buffer of known size ---- */

void trib_trace_out_mem(struct out *out, const void *data, size_t len)
{
	if (len > out->size - out->len)
		abort();
	memcpy(out->buf + out->len, data, len);
	out->len += len;
}

void trib_trace_out_str(struct out *out, const char *str)
{
	trib_trace_out_mem(out, str, strlen(str));
}

void trib_trace_out_char(struct out *out, char c)
{
	trib_trace_out_mem(out, &c, 1);
}

static void out_u64(struct out *out, uint64_t num)
{
	char tmp[24];
	int len = snprintf(tmp, sizeof(tmp), "%" PRIu64, num);

	trib_trace_out_mem(out, tmp, (size_t)len);
}

void trib_trace_out_hex(struct out *out, const unsigned char *data, size_t size)
{
	static const char digits[] = "0123456789abcdef";
	size_t i;

	for (i = 0; i < size; i++) {
		trib_trace_out_char(out, digits[data[i] >> 4]);
		trib_trace_out_char(out, digits[data[i] & 0x0f]);
	}
}

static void out_pstring(struct out *out, const char *str)
{
	static const char digits[] = "0123456789ABCDEF";
	unsigned char c;

	for (; *str != '\0'; str++) {
		c = (unsigned char)*str;
		if (trib_trace_char_unreserved(c)) {
			trib_trace_out_char(out, (char)c);
		} else {
			trib_trace_out_char(out, '%');
			trib_trace_out_char(out, digits[c >> 4]);
			trib_trace_out_char(out, digits[c & 0x0f]);
		}
	}
}

/* base64url (RFC 4648 section 5) without padding. */
static void out_b64url(struct out *out, const unsigned char *data, size_t size)
{
	static const char alphabet[] = "ABCDEFGHIJKLMNOPQRSTUVWXYZ"
				       "abcdefghijklmnopqrstuvwxyz"
				       "0123456789-_";
	uint32_t bits = 0;
	unsigned int nbits = 0;
	size_t i;

	for (i = 0; i < size; i++) {
		bits = (bits << 8) | data[i];
		nbits += 8;
		while (nbits >= 6) {
			nbits -= 6;
			trib_trace_out_char(out,
					    alphabet[(bits >> nbits) & 0x3f]);
		}
	}
	if (nbits > 0)
		trib_trace_out_char(out,
				    alphabet[(bits << (6 - nbits)) & 0x3f]);
}

/* The MAC of text (the value before "; m="), as base64url into mac_r
 * (MAC_B64_LEN + 1 bytes). False: no key with that id. */
bool trib_trace_mac_text(const struct trib_trace_keys *keys, const char *key_id,
			 const char *text, size_t len, char *mac_r)
{
	unsigned char mac[TRIB_TRACE_MAC_SIZE];
	struct out out = { mac_r, 0, MAC_B64_LEN + 1 };
	size_t input_len = CONST_LEN(MAC_LABEL) + len;
	char *input = trib_malloc(input_len);
	bool found;

	memcpy(input, MAC_LABEL, CONST_LEN(MAC_LABEL));
	memcpy(input + CONST_LEN(MAC_LABEL), text, len);
	found = trib_trace_keys_mac(keys, key_id, input, input_len, mac);
	free(input);
	if (!found)
		return false;
	out_b64url(&out, mac, sizeof(mac));
	trib_trace_out_char(&out, '\0');
	return true;
}

/* ---- the trace id ---- */

void trib_trace_id_compute(const char *account, bool have_gm_msgid,
			   uint64_t gm_msgid, const unsigned char *digest,
			   uint32_t uidvalidity, uint32_t uid,
			   char id_r[TRIB_TRACE_ID_LEN + 1])
{
	unsigned char buf[CONST_LEN(ID_LABEL) + 5 + NAME_MAX_LEN + 1 +
			  TRIB_TRACE_DIGEST_SIZE + 8];
	unsigned char hash[TRIB_TRACE_DIGEST_SIZE];
	struct out out = { (char *)buf, 0, sizeof(buf) };
	struct out id = { id_r, 0, TRIB_TRACE_ID_LEN + 1 };
	size_t account_len = strlen(account);
	int i;

	if (account_len > NAME_MAX_LEN)
		abort();
	trib_trace_out_mem(&out, ID_LABEL, sizeof(ID_LABEL));
	trib_trace_out_mem(&out, have_gm_msgid ? "gm" : "uid",
			   have_gm_msgid ? 3 : 4);
	trib_trace_out_mem(&out, account, account_len + 1);
	if (have_gm_msgid) {
		for (i = 56; i >= 0; i -= 8)
			trib_trace_out_char(&out, (char)(gm_msgid >> i));
	} else {
		trib_trace_out_mem(&out, digest, TRIB_TRACE_DIGEST_SIZE);
		for (i = 24; i >= 0; i -= 8)
			trib_trace_out_char(&out, (char)(uidvalidity >> i));
		for (i = 24; i >= 0; i -= 8)
			trib_trace_out_char(&out, (char)(uid >> i));
	}
	trib_trace_sha256(buf, out.len, hash);
	trib_trace_out_hex(&id, hash, TRIB_TRACE_ID_LEN / 2);
	trib_trace_out_char(&id, '\0');
}

void trib_trace_id(const struct trib_trace_fields *fields,
		   char id_r[TRIB_TRACE_ID_LEN + 1])
{
	unsigned char digest[TRIB_TRACE_DIGEST_SIZE];

	memset(digest, 0, sizeof(digest));
	if (!fields->have_gm_msgid) {
		if (fields->folder == NULL)
			abort();
		trib_trace_folder_digest(fields->folder, digest);
	}
	trib_trace_id_compute(fields->account, fields->have_gm_msgid,
			      fields->gm_msgid, digest, fields->uidvalidity,
			      fields->uid, id_r);
}

/* ---- building ---- */

struct trace_plan {
	bool hash_recipient;
	bool hash_folder;
	bool *keep_labels;
	bool *keep_flags;
	unsigned int labels_dropped;
	unsigned int flags_dropped;
	size_t total;
};

static const char *list_check(bool have, const char *const *items,
			      unsigned int count)
{
	unsigned int i;

	if (!have || count == 0)
		return NULL;
	if (items == NULL)
		return "trace: list of labels or flags is NULL";
	for (i = 0; i < count; i++) {
		if (items[i] == NULL)
			return "trace: NULL label or flag";
	}
	return NULL;
}

static const char *fields_check(const struct trib_trace_keys *keys,
				const struct trib_trace_fields *f)
{
	const char *error;

	if (keys == NULL || trib_trace_keys_count(keys) == 0)
		return "trace: no key";
	if (f->recipient == NULL || f->recipient[0] == '\0')
		return "trace: no recipient";
	if (f->account == NULL ||
	    !trib_trace_name_valid(f->account, strlen(f->account)))
		return "trace: invalid account name";
	if (f->provider == NULL ||
	    !trib_trace_name_valid(f->provider, strlen(f->provider)))
		return "trace: invalid provider name";
	if (f->folder == NULL || f->folder[0] == '\0')
		return "trace: no folder";
	if (f->uidvalidity == 0 || f->uid == 0)
		return "trace: UIDVALIDITY and UID must be nonzero";
	if (f->have_gm_msgid && f->gm_msgid == 0)
		return "trace: X-GM-MSGID must be nonzero";
	error = list_check(f->have_labels, f->labels, f->label_count);
	if (error == NULL)
		error = list_check(f->have_flags, f->flags, f->flag_count);
	return error;
}

/* Everything but the lists of labels and flags. */
static size_t fixed_len(const struct trib_trace_fields *f, bool hash_r,
			bool hash_f)
{
	size_t len = CONST_LEN(LINE_PREFIX) + CONST_LEN("v=1") +
		     CONST_LEN("; k=") + TRIB_TRACE_KEY_ID_LEN;

	len += hash_r ? CONST_LEN("; rh=") + HEX64_LEN
		      : CONST_LEN("; r=") + pstring_len(f->recipient);
	len += CONST_LEN("; a=") + strlen(f->account);
	len += CONST_LEN("; p=") + strlen(f->provider);
	len += hash_f ? CONST_LEN("; fh=") + HEX64_LEN
		      : CONST_LEN("; f=") + pstring_len(f->folder);
	len += CONST_LEN("; uv=") + decimal_len(f->uidvalidity);
	len += CONST_LEN("; u=") + decimal_len(f->uid);
	if (f->have_gm_msgid)
		len += CONST_LEN("; gm=") + decimal_len(f->gm_msgid);
	return len + CONST_LEN("; m=") + MAC_B64_LEN + CONST_LEN("\r\n");
}

static unsigned int list_nonempty(const char *const *items, unsigned int count)
{
	unsigned int i, n = 0;

	for (i = 0; i < count; i++) {
		if (items[i][0] != '\0')
			n++;
	}
	return n;
}

/* "; ld=N" / "; fd=N", or nothing. */
static size_t dropped_len(unsigned int dropped)
{
	return dropped == 0 ? 0 : CONST_LEN("; ld=") + decimal_len(dropped);
}

/* Keep, in order, the items that fit in room (which holds at least the
 * section with every item left out). Returns the section's length. The
 * "left out" count is taken as if every later item were left out too,
 * so the final section is never longer than what was checked. */
static size_t list_fill(const char *const *items, unsigned int count,
			size_t tag_len, size_t room, bool *keep,
			unsigned int *dropped_r)
{
	unsigned int i, kept = 0, nonempty = list_nonempty(items, count);
	size_t list_len = 0, add;

	for (i = 0; i < count; i++) {
		keep[i] = false;
		if (items[i][0] == '\0')
			continue;
		add = pstring_len(items[i]) + (kept > 0 ? 1 : 0);
		if (tag_len + list_len + add +
			    dropped_len(nonempty - kept - 1) <=
		    room) {
			keep[i] = true;
			list_len += add;
			kept++;
		}
	}
	*dropped_r = nonempty - kept;
	return tag_len + list_len + dropped_len(*dropped_r);
}

static void trace_plan(const struct trib_trace_fields *f,
		       struct trace_plan *plan)
{
	size_t labels_min = 0, flags_min = 0, need, base;

	memset(plan, 0, sizeof(*plan));
	if (f->have_labels)
		labels_min =
			CONST_LEN("; l=") +
			dropped_len(list_nonempty(f->labels, f->label_count));
	if (f->have_flags)
		flags_min = CONST_LEN("; fl=") +
			    dropped_len(list_nonempty(f->flags, f->flag_count));
	need = labels_min + flags_min;

	/* Names are at most 32 bytes, so with both hashed this always fits
	 * (under 400 bytes). */
	base = fixed_len(f, false, false);
	if (base + need > TRIB_TRACE_LINE_MAX) {
		plan->hash_folder = true;
		base = fixed_len(f, false, true);
	}
	if (base + need > TRIB_TRACE_LINE_MAX) {
		plan->hash_recipient = true;
		plan->hash_folder =
			fixed_len(f, true, false) + need > TRIB_TRACE_LINE_MAX;
		base = fixed_len(f, true, plan->hash_folder);
	}
	if (base + need > TRIB_TRACE_LINE_MAX)
		abort();
	if (f->have_flags) {
		plan->keep_flags = trib_calloc(f->flag_count, sizeof(bool));
		base += list_fill(f->flags, f->flag_count, CONST_LEN("; fl="),
				  TRIB_TRACE_LINE_MAX - base - labels_min,
				  plan->keep_flags, &plan->flags_dropped);
	}
	if (f->have_labels) {
		plan->keep_labels = trib_calloc(f->label_count, sizeof(bool));
		base += list_fill(f->labels, f->label_count, CONST_LEN("; l="),
				  TRIB_TRACE_LINE_MAX - base, plan->keep_labels,
				  &plan->labels_dropped);
	}
	plan->total = base;
}

static void out_list(struct out *out, const char *tag, const char *drop_tag,
		     const char *const *items, unsigned int count,
		     const bool *keep, unsigned int dropped)
{
	bool first = true;
	unsigned int i;

	trib_trace_out_str(out, tag);
	for (i = 0; i < count; i++) {
		if (!keep[i])
			continue;
		if (!first)
			trib_trace_out_char(out, ',');
		out_pstring(out, items[i]);
		first = false;
	}
	if (dropped > 0) {
		trib_trace_out_str(out, drop_tag);
		out_u64(out, dropped);
	}
}

/* The value up to "; m=", as planned. */
static void out_fields(struct out *out, const struct trib_trace_keys *keys,
		       const struct trib_trace_fields *f,
		       const struct trace_plan *plan)
{
	unsigned char digest[TRIB_TRACE_DIGEST_SIZE];

	trib_trace_out_str(out, "v=1; k=");
	trib_trace_out_str(out, trib_trace_keys_id(keys, 0));
	if (plan->hash_recipient) {
		trib_trace_out_str(out, "; rh=");
		trib_trace_sha256(f->recipient, strlen(f->recipient), digest);
		trib_trace_out_hex(out, digest, sizeof(digest));
	} else {
		trib_trace_out_str(out, "; r=");
		out_pstring(out, f->recipient);
	}
	trib_trace_out_str(out, "; a=");
	trib_trace_out_str(out, f->account);
	trib_trace_out_str(out, "; p=");
	trib_trace_out_str(out, f->provider);
	if (plan->hash_folder) {
		trib_trace_out_str(out, "; fh=");
		trib_trace_folder_digest(f->folder, digest);
		trib_trace_out_hex(out, digest, sizeof(digest));
	} else {
		trib_trace_out_str(out, "; f=");
		out_pstring(out, f->folder);
	}
	trib_trace_out_str(out, "; uv=");
	out_u64(out, f->uidvalidity);
	trib_trace_out_str(out, "; u=");
	out_u64(out, f->uid);
	if (f->have_gm_msgid) {
		trib_trace_out_str(out, "; gm=");
		out_u64(out, f->gm_msgid);
	}
	if (f->have_labels)
		out_list(out, "; l=", "; ld=", f->labels, f->label_count,
			 plan->keep_labels, plan->labels_dropped);
	if (f->have_flags)
		out_list(out, "; fl=", "; fd=", f->flags, f->flag_count,
			 plan->keep_flags, plan->flags_dropped);
}

char *trib_trace_header_build(const struct trib_trace_keys *keys,
			      const struct trib_trace_fields *fields,
			      size_t *len_r, const char **error_r)
{
	char mac[MAC_B64_LEN + 1];
	struct trace_plan plan;
	struct out out;
	size_t start;

	*error_r = fields_check(keys, fields);
	if (*error_r != NULL)
		return NULL;
	trace_plan(fields, &plan);
	out.size = plan.total + 1;
	out.buf = trib_malloc(out.size);
	out.len = 0;
	trib_trace_out_str(&out, LINE_PREFIX);
	start = out.len;
	out_fields(&out, keys, fields, &plan);
	if (!trib_trace_mac_text(keys, NULL, out.buf + start, out.len - start,
				 mac))
		abort();
	trib_trace_out_str(&out, "; m=");
	trib_trace_out_str(&out, mac);
	trib_trace_out_str(&out, "\r\n");
	if (out.len != plan.total || out.len > TRIB_TRACE_LINE_MAX)
		abort();
	out.buf[out.len] = '\0';
	free(plan.keep_labels);
	free(plan.keep_flags);
	if (len_r != NULL)
		*len_r = out.len;
	return out.buf;
}
