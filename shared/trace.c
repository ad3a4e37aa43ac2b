/* trace.c: the X-Tributary-Trace header: building it within its length
 * cap, parsing and verifying it, finding the topmost one in a header
 * block, and the trace id. No I/O; the keys and the HMACs made with them
 * live in trace-key.c. The grammar is in trace.h. */

#include "trace.h"

#include "alloc.h"

#include <inttypes.h>
#include <openssl/crypto.h>
#include <openssl/evp.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

#define LINE_PREFIX TRIB_TRACE_HEADER_NAME ": "
#define MAC_LABEL "tributary-trace-mac\n"
#define ID_LABEL "tributary-trace-id"
/* Unreserved besides letters and digits: see trace.h. */
#define UNRESERVED_PUNCT "-._~!$&'*+/:@[]\\^{|}"
#define NAME_MAX_LEN 32
#define HEX64_LEN (2 * TRIB_TRACE_DIGEST_SIZE)
#define MAC_B64_LEN 43
/* v k r a p f uv u gm l ld fl fd m */
#define MAX_TOKENS 14
#define CONST_LEN(str) (sizeof(str) - 1)

/* ---- small helpers ---- */

static bool char_unreserved(unsigned char c)
{
	if ((c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') ||
	    (c >= '0' && c <= '9'))
		return true;
	return c != '\0' && strchr(UNRESERVED_PUNCT, c) != NULL;
}

static int upper_hex_value(char c)
{
	if (c >= '0' && c <= '9')
		return c - '0';
	if (c >= 'A' && c <= 'F')
		return c - 'A' + 10;
	return -1;
}

static int lower_hex_value(char c)
{
	if (c >= '0' && c <= '9')
		return c - '0';
	if (c >= 'a' && c <= 'f')
		return c - 'a' + 10;
	return -1;
}

static bool is_wsp(char c)
{
	return c == ' ' || c == '\t';
}

static bool name_valid(const char *name, size_t len)
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
		len += char_unreserved((unsigned char)*str) ? 1 : 3;
	return len;
}

static void sha256(const void *data, size_t size,
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
	sha256(folder, strlen(folder), digest_r);
}

/* ---- output into a buffer of known size ---- */

struct out {
	char *buf;
	size_t len;
	size_t size;
};

static void out_mem(struct out *out, const void *data, size_t len)
{
	if (len > out->size - out->len)
		abort();
	memcpy(out->buf + out->len, data, len);
	out->len += len;
}

static void out_str(struct out *out, const char *str)
{
	out_mem(out, str, strlen(str));
}

static void out_char(struct out *out, char c)
{
	out_mem(out, &c, 1);
}

static void out_u64(struct out *out, uint64_t num)
{
	char tmp[24];
	int len = snprintf(tmp, sizeof(tmp), "%" PRIu64, num);

	out_mem(out, tmp, (size_t)len);
}

static void out_hex(struct out *out, const unsigned char *data, size_t size)
{
	static const char digits[] = "0123456789abcdef";
	size_t i;

	for (i = 0; i < size; i++) {
		out_char(out, digits[data[i] >> 4]);
		out_char(out, digits[data[i] & 0x0f]);
	}
}

static void out_pstring(struct out *out, const char *str)
{
	static const char digits[] = "0123456789ABCDEF";
	unsigned char c;

	for (; *str != '\0'; str++) {
		c = (unsigned char)*str;
		if (char_unreserved(c)) {
			out_char(out, (char)c);
		} else {
			out_char(out, '%');
			out_char(out, digits[c >> 4]);
			out_char(out, digits[c & 0x0f]);
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
			out_char(out, alphabet[(bits >> nbits) & 0x3f]);
		}
	}
	if (nbits > 0)
		out_char(out, alphabet[(bits << (6 - nbits)) & 0x3f]);
}

/* The MAC of text (the value before "; m="), as base64url into mac_r
 * (MAC_B64_LEN + 1 bytes). False: no key with that id. */
static bool mac_text(const struct trib_trace_keys *keys, const char *key_id,
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
	out_char(&out, '\0');
	return true;
}

/* ---- the trace id ---- */

static void trace_id_compute(const char *account, bool have_gm_msgid,
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
	out_mem(&out, ID_LABEL, sizeof(ID_LABEL));
	out_mem(&out, have_gm_msgid ? "gm" : "uid", have_gm_msgid ? 3 : 4);
	out_mem(&out, account, account_len + 1);
	if (have_gm_msgid) {
		for (i = 56; i >= 0; i -= 8)
			out_char(&out, (char)(gm_msgid >> i));
	} else {
		out_mem(&out, digest, TRIB_TRACE_DIGEST_SIZE);
		for (i = 24; i >= 0; i -= 8)
			out_char(&out, (char)(uidvalidity >> i));
		for (i = 24; i >= 0; i -= 8)
			out_char(&out, (char)(uid >> i));
	}
	sha256(buf, out.len, hash);
	out_hex(&id, hash, TRIB_TRACE_ID_LEN / 2);
	out_char(&id, '\0');
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
	trace_id_compute(fields->account, fields->have_gm_msgid,
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
	if (f->account == NULL || !name_valid(f->account, strlen(f->account)))
		return "trace: invalid account name";
	if (f->provider == NULL ||
	    !name_valid(f->provider, strlen(f->provider)))
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

	out_str(out, tag);
	for (i = 0; i < count; i++) {
		if (!keep[i])
			continue;
		if (!first)
			out_char(out, ',');
		out_pstring(out, items[i]);
		first = false;
	}
	if (dropped > 0) {
		out_str(out, drop_tag);
		out_u64(out, dropped);
	}
}

/* The value up to "; m=", as planned. */
static void out_fields(struct out *out, const struct trib_trace_keys *keys,
		       const struct trib_trace_fields *f,
		       const struct trace_plan *plan)
{
	unsigned char digest[TRIB_TRACE_DIGEST_SIZE];

	out_str(out, "v=1; k=");
	out_str(out, trib_trace_keys_id(keys, 0));
	if (plan->hash_recipient) {
		out_str(out, "; rh=");
		sha256(f->recipient, strlen(f->recipient), digest);
		out_hex(out, digest, sizeof(digest));
	} else {
		out_str(out, "; r=");
		out_pstring(out, f->recipient);
	}
	out_str(out, "; a=");
	out_str(out, f->account);
	out_str(out, "; p=");
	out_str(out, f->provider);
	if (plan->hash_folder) {
		out_str(out, "; fh=");
		trib_trace_folder_digest(f->folder, digest);
		out_hex(out, digest, sizeof(digest));
	} else {
		out_str(out, "; f=");
		out_pstring(out, f->folder);
	}
	out_str(out, "; uv=");
	out_u64(out, f->uidvalidity);
	out_str(out, "; u=");
	out_u64(out, f->uid);
	if (f->have_gm_msgid) {
		out_str(out, "; gm=");
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
	out_str(&out, LINE_PREFIX);
	start = out.len;
	out_fields(&out, keys, fields, &plan);
	if (!mac_text(keys, NULL, out.buf + start, out.len - start, mac))
		abort();
	out_str(&out, "; m=");
	out_str(&out, mac);
	out_str(&out, "\r\n");
	if (out.len != plan.total || out.len > TRIB_TRACE_LINE_MAX)
		abort();
	out.buf[out.len] = '\0';
	free(plan.keep_labels);
	free(plan.keep_flags);
	if (len_r != NULL)
		*len_r = out.len;
	return out.buf;
}

/* ---- parsing ---- */

struct token {
	const char *tag;
	size_t tag_len;
	const char *val;
	size_t val_len;
};

struct tokens {
	struct token t[MAX_TOKENS];
	unsigned int count;
	unsigned int pos;
};

/* The fields of a header, still encoded, checked for syntax. */
struct parsed {
	const struct token *k, *r, *rh, *a, *p, *f, *fh, *l, *fl, *m;
	uint64_t uidvalidity, uid, gm_msgid, labels_dropped, flags_dropped;
	bool have_gm_msgid;
	unsigned int mac_tokens;
};

/* Split "tag=val; tag=val" with optional blanks around the ';'. */
static const char *tokenize(const char *value, size_t size, struct tokens *toks)
{
	size_t pos = 0, start;
	const char *eq;
	struct token *tok;

	toks->count = toks->pos = 0;
	while (pos < size && is_wsp(value[pos]))
		pos++;
	for (;;) {
		if (toks->count == MAX_TOKENS)
			return "malformed trace header: too many fields";
		tok = &toks->t[toks->count++];
		start = pos;
		while (pos < size && value[pos] != ';' && !is_wsp(value[pos]))
			pos++;
		eq = memchr(value + start, '=', pos - start);
		if (eq == NULL)
			return "malformed trace header: a field is not "
			       "tag=value";
		tok->tag = value + start;
		tok->tag_len = (size_t)(eq - tok->tag);
		tok->val = eq + 1;
		tok->val_len = (size_t)(value + pos - tok->val);
		while (pos < size && is_wsp(value[pos]))
			pos++;
		if (pos == size)
			return NULL;
		if (value[pos] != ';')
			return "malformed trace header: blank inside a field";
		pos++;
		while (pos < size && is_wsp(value[pos]))
			pos++;
	}
}

/* The next token if its tag is tag. */
static const struct token *take(struct tokens *toks, const char *tag)
{
	const struct token *tok;

	if (toks->pos == toks->count)
		return NULL;
	tok = &toks->t[toks->pos];
	if (tok->tag_len != strlen(tag) || memcmp(tok->tag, tag, tok->tag_len))
		return NULL;
	toks->pos++;
	return tok;
}

/* Canonical percent-encoding of a non-empty string. */
static bool pstring_valid(const char *str, size_t len)
{
	size_t i;
	int hi, lo;

	if (len == 0)
		return false;
	for (i = 0; i < len; i++) {
		if (str[i] != '%') {
			if (!char_unreserved((unsigned char)str[i]))
				return false;
			continue;
		}
		if (len - i < 3)
			return false;
		hi = upper_hex_value(str[i + 1]);
		lo = upper_hex_value(str[i + 2]);
		if (hi < 0 || lo < 0 || (hi == 0 && lo == 0) ||
		    char_unreserved((unsigned char)(hi << 4 | lo)))
			return false;
		i += 2;
	}
	return true;
}

/* Comma-separated pstrings, or empty. */
static bool list_valid(const char *str, size_t len)
{
	const char *comma;
	size_t item_len;

	if (len == 0)
		return true;
	for (;;) {
		comma = memchr(str, ',', len);
		item_len = comma == NULL ? len : (size_t)(comma - str);
		if (!pstring_valid(str, item_len))
			return false;
		if (comma == NULL)
			return true;
		str += item_len + 1;
		len -= item_len + 1;
	}
}

static bool lower_hex_valid(const char *str, size_t len, size_t want)
{
	size_t i;

	if (len != want)
		return false;
	for (i = 0; i < len; i++) {
		if (lower_hex_value(str[i]) < 0)
			return false;
	}
	return true;
}

/* Nonzero decimal without leading zeros, at most max. */
static bool num_parse(const struct token *tok, uint64_t max, uint64_t *num_r)
{
	uint64_t num = 0;
	size_t i;

	if (tok->val_len == 0 || tok->val[0] == '0')
		return false;
	for (i = 0; i < tok->val_len; i++) {
		unsigned int digit = (unsigned char)tok->val[i] - '0';

		if (digit > 9 || num > (max - digit) / 10)
			return false;
		num = num * 10 + digit;
	}
	*num_r = num;
	return true;
}

static bool mac_syntax_valid(const char *str, size_t len)
{
	size_t i;

	if (len != MAC_B64_LEN)
		return false;
	for (i = 0; i < len; i++) {
		char c = str[i];

		if (!((c >= 'A' && c <= 'Z') || (c >= 'a' && c <= 'z') ||
		      (c >= '0' && c <= '9') || c == '-' || c == '_'))
			return false;
	}
	return true;
}

static const char *parse_identity(struct tokens *toks, struct parsed *p)
{
	const struct token *v = take(toks, "v");

	if (v == NULL)
		return "malformed trace header: no version first";
	if (v->val_len != 1 || v->val[0] != '1')
		return "unsupported trace header version";
	p->k = take(toks, "k");
	if (p->k == NULL ||
	    !lower_hex_valid(p->k->val, p->k->val_len, TRIB_TRACE_KEY_ID_LEN))
		return "malformed trace header: bad key id";
	p->r = take(toks, "r");
	p->rh = p->r == NULL ? take(toks, "rh") : NULL;
	if (p->r != NULL ? !pstring_valid(p->r->val, p->r->val_len)
			 : p->rh == NULL ||
				   !lower_hex_valid(p->rh->val, p->rh->val_len,
						    HEX64_LEN))
		return "malformed trace header: bad recipient";
	p->a = take(toks, "a");
	if (p->a == NULL || !name_valid(p->a->val, p->a->val_len))
		return "malformed trace header: bad account";
	p->p = take(toks, "p");
	if (p->p == NULL || !name_valid(p->p->val, p->p->val_len))
		return "malformed trace header: bad provider";
	return NULL;
}

static const char *parse_message(struct tokens *toks, struct parsed *p)
{
	const struct token *tok;

	p->f = take(toks, "f");
	p->fh = p->f == NULL ? take(toks, "fh") : NULL;
	if (p->f != NULL ? !pstring_valid(p->f->val, p->f->val_len)
			 : p->fh == NULL ||
				   !lower_hex_valid(p->fh->val, p->fh->val_len,
						    HEX64_LEN))
		return "malformed trace header: bad folder";
	tok = take(toks, "uv");
	if (tok == NULL || !num_parse(tok, UINT32_MAX, &p->uidvalidity))
		return "malformed trace header: bad UIDVALIDITY";
	tok = take(toks, "u");
	if (tok == NULL || !num_parse(tok, UINT32_MAX, &p->uid))
		return "malformed trace header: bad UID";
	tok = take(toks, "gm");
	p->have_gm_msgid = tok != NULL;
	if (tok != NULL && !num_parse(tok, UINT64_MAX, &p->gm_msgid))
		return "malformed trace header: bad X-GM-MSGID";
	return NULL;
}

static const char *parse_lists(struct tokens *toks, struct parsed *p)
{
	const struct token *tok;

	p->l = take(toks, "l");
	if (p->l != NULL) {
		if (!list_valid(p->l->val, p->l->val_len))
			return "malformed trace header: bad labels";
		tok = take(toks, "ld");
		if (tok != NULL &&
		    !num_parse(tok, UINT32_MAX, &p->labels_dropped))
			return "malformed trace header: bad count of labels "
			       "left out";
	}
	p->fl = take(toks, "fl");
	if (p->fl != NULL) {
		if (!list_valid(p->fl->val, p->fl->val_len))
			return "malformed trace header: bad flags";
		tok = take(toks, "fd");
		if (tok != NULL &&
		    !num_parse(tok, UINT32_MAX, &p->flags_dropped))
			return "malformed trace header: bad count of flags "
			       "left out";
	}
	p->mac_tokens = toks->pos;
	p->m = take(toks, "m");
	if (p->m == NULL)
		return "malformed trace header: unknown or misplaced field";
	if (toks->pos != toks->count)
		return "malformed trace header: field after the MAC";
	if (!mac_syntax_valid(p->m->val, p->m->val_len))
		return "malformed trace header: bad MAC";
	return NULL;
}

static const char *parse_tokens(struct tokens *toks, struct parsed *p)
{
	const char *error;

	memset(p, 0, sizeof(*p));
	error = parse_identity(toks, p);
	if (error == NULL)
		error = parse_message(toks, p);
	if (error == NULL)
		error = parse_lists(toks, p);
	return error;
}

/* Check the MAC over the canonical text of the fields before m=. */
static const char *verify_mac(const struct tokens *toks, const struct parsed *p,
			      const struct trib_trace_keys *keys)
{
	char key_id[TRIB_TRACE_KEY_ID_LEN + 1], mac[MAC_B64_LEN + 1];
	struct out text;
	unsigned int i;
	bool found;

	text.size = 0;
	for (i = 0; i < p->mac_tokens; i++)
		text.size += toks->t[i].tag_len + toks->t[i].val_len + 3;
	text.buf = trib_malloc(text.size);
	text.len = 0;
	for (i = 0; i < p->mac_tokens; i++) {
		if (i > 0)
			out_str(&text, "; ");
		out_mem(&text, toks->t[i].tag, toks->t[i].tag_len);
		out_char(&text, '=');
		out_mem(&text, toks->t[i].val, toks->t[i].val_len);
	}
	memcpy(key_id, p->k->val, TRIB_TRACE_KEY_ID_LEN);
	key_id[TRIB_TRACE_KEY_ID_LEN] = '\0';
	found = mac_text(keys, key_id, text.buf, text.len, mac);
	free(text.buf);
	if (!found)
		return "trace header signed with an unknown key";
	if (CRYPTO_memcmp(mac, p->m->val, MAC_B64_LEN) != 0)
		return "trace header MAC does not match";
	return NULL;
}

/* Decode a pstring (already validated) into the pool. */
static char *pool_decode(struct trib_pool *pool, const char *str, size_t len)
{
	char *dest = trib_pool_alloc(pool, len + 1);
	size_t i, n = 0;

	for (i = 0; i < len; i++) {
		if (str[i] == '%') {
			dest[n++] = (char)(upper_hex_value(str[i + 1]) << 4 |
					   upper_hex_value(str[i + 2]));
			i += 2;
		} else {
			dest[n++] = str[i];
		}
	}
	dest[n] = '\0';
	return dest;
}

static const char *recipient_check(const struct parsed *p,
				   const char *recipient)
{
	unsigned char digest[TRIB_TRACE_DIGEST_SIZE];
	char hex[HEX64_LEN + 1];
	struct out out = { hex, 0, sizeof(hex) };
	struct trib_pool *pool;
	bool match;

	if (p->rh != NULL) {
		sha256(recipient, strlen(recipient), digest);
		out_hex(&out, digest, sizeof(digest));
		match = memcmp(hex, p->rh->val, HEX64_LEN) == 0;
	} else {
		pool = trib_pool_create(0);
		match = strcmp(pool_decode(pool, p->r->val, p->r->val_len),
			       recipient) == 0;
		trib_pool_destroy(&pool);
	}
	return match ? NULL : "trace header addressed to another recipient";
}

/* A NULL-terminated array of the decoded list items. */
static const char *const *pool_list(struct trib_pool *pool,
				    const struct token *tok,
				    unsigned int *count_r)
{
	const char **items;
	const char *str = tok->val, *comma;
	size_t len = tok->val_len, item_len;
	unsigned int count = 0, i;

	for (i = 0; i < len; i++)
		count += str[i] == ',' ? 1 : 0;
	count = len == 0 ? 0 : count + 1;
	items = trib_pool_alloc(pool, (count + 1) * sizeof(*items));
	for (i = 0; i < count; i++) {
		comma = memchr(str, ',', len);
		item_len = comma == NULL ? len : (size_t)(comma - str);
		items[i] = pool_decode(pool, str, item_len);
		if (comma != NULL) {
			str += item_len + 1;
			len -= item_len + 1;
		}
	}
	items[count] = NULL;
	*count_r = count;
	return items;
}

static void hex_decode(const char *hex, unsigned char *dest, size_t size)
{
	size_t i;

	for (i = 0; i < size; i++) {
		dest[i] = (unsigned char)(lower_hex_value(hex[2 * i]) << 4 |
					  lower_hex_value(hex[2 * i + 1]));
	}
}

static struct trib_trace *trace_create(const struct parsed *p,
				       const char *recipient)
{
	struct trib_pool *pool = trib_pool_create(0);
	struct trib_trace *trace = trib_pool_alloc(pool, sizeof(*trace));
	struct trib_trace_fields *f = &trace->fields;

	trace->pool = pool;
	memcpy(trace->key_id, p->k->val, TRIB_TRACE_KEY_ID_LEN);
	trace->key_id[TRIB_TRACE_KEY_ID_LEN] = '\0';
	f->recipient = trib_pool_strdup(pool, recipient);
	trace->recipient_hashed = p->rh != NULL;
	f->account = trib_pool_strndup(pool, p->a->val, p->a->val_len);
	f->provider = trib_pool_strndup(pool, p->p->val, p->p->val_len);
	if (p->f != NULL) {
		f->folder = pool_decode(pool, p->f->val, p->f->val_len);
		trib_trace_folder_digest(f->folder, trace->folder_digest);
	} else {
		trace->folder_hashed = true;
		hex_decode(p->fh->val, trace->folder_digest,
			   TRIB_TRACE_DIGEST_SIZE);
	}
	f->uidvalidity = (uint32_t)p->uidvalidity;
	f->uid = (uint32_t)p->uid;
	f->have_gm_msgid = p->have_gm_msgid;
	f->gm_msgid = p->gm_msgid;
	f->have_labels = p->l != NULL;
	if (p->l != NULL)
		f->labels = pool_list(pool, p->l, &f->label_count);
	trace->labels_dropped = (unsigned int)p->labels_dropped;
	f->have_flags = p->fl != NULL;
	if (p->fl != NULL)
		f->flags = pool_list(pool, p->fl, &f->flag_count);
	trace->flags_dropped = (unsigned int)p->flags_dropped;
	trace_id_compute(f->account, f->have_gm_msgid, f->gm_msgid,
			 trace->folder_digest, f->uidvalidity, f->uid,
			 trace->id);
	return trace;
}

int trib_trace_parse_verify(const char *value, size_t size,
			    const struct trib_trace_keys *keys,
			    const char *recipient, struct trib_trace **trace_r,
			    const char **error_r)
{
	struct tokens toks;
	struct parsed parsed;
	const char *error;

	*trace_r = NULL;
	if (size > TRIB_TRACE_VALUE_MAX)
		error = "trace header too long";
	else if ((error = tokenize(value, size, &toks)) == NULL &&
		 (error = parse_tokens(&toks, &parsed)) == NULL &&
		 (error = verify_mac(&toks, &parsed, keys)) == NULL)
		error = recipient_check(&parsed, recipient);
	if (error != NULL) {
		*error_r = error;
		return -1;
	}
	*trace_r = trace_create(&parsed, recipient);
	return 0;
}

void trib_trace_free(struct trib_trace **trace)
{
	struct trib_pool *pool;

	if (*trace == NULL)
		return;
	pool = (*trace)->pool;
	trib_pool_destroy(&pool);
	*trace = NULL;
}

/* ---- finding the topmost header ---- */

/* Whether the line (no line end) is our header field; *value_r: where
 * its value starts. The field name may be followed by blanks before the
 * colon (RFC 5322 obsolete syntax). */
static bool line_is_trace(const char *line, size_t len, size_t *value_r)
{
	size_t name_len = CONST_LEN(TRIB_TRACE_HEADER_NAME), pos;

	if (len <= name_len ||
	    strncasecmp(line, TRIB_TRACE_HEADER_NAME, name_len) != 0)
		return false;
	for (pos = name_len; pos < len && is_wsp(line[pos]); pos++)
		;
	if (pos == len || line[pos] != ':')
		return false;
	*value_r = pos + 1;
	return true;
}

/* The next line from *pos: its start and length without CR LF / LF. */
static const char *next_line(const char *block, size_t size, size_t *pos,
			     size_t *len_r)
{
	const char *line = block + *pos;
	const char *lf = memchr(line, '\n', size - *pos);
	size_t len = lf != NULL ? (size_t)(lf - line) : size - *pos;

	*pos += len + (lf != NULL ? 1 : 0);
	if (len > 0 && line[len - 1] == '\r')
		len--;
	*len_r = len;
	return line;
}

/* Join the value's first line with its continuation lines. */
static char *unfold_value(const char *block, size_t size, size_t pos,
			  const char *first, size_t first_len, size_t *len_r)
{
	struct out out;
	const char *line;
	size_t scan = pos, len, start = 0;

	out.size = first_len + 1;
	while (scan < size && is_wsp(block[scan])) {
		next_line(block, size, &scan, &len);
		out.size += len;
	}
	out.buf = trib_malloc(out.size);
	out.len = 0;
	out_mem(&out, first, first_len);
	while (pos < size && is_wsp(block[pos])) {
		line = next_line(block, size, &pos, &len);
		out_mem(&out, line, len);
	}
	while (start < out.len && is_wsp(out.buf[start]))
		start++;
	while (out.len > start && is_wsp(out.buf[out.len - 1]))
		out.len--;
	memmove(out.buf, out.buf + start, out.len - start);
	out.len -= start;
	out.buf[out.len] = '\0';
	*len_r = out.len;
	return out.buf;
}

int trib_trace_header_find(const char *block, size_t size, char **value_r,
			   size_t *len_r)
{
	size_t pos = 0, len, value_pos;
	const char *line;

	*value_r = NULL;
	*len_r = 0;
	while (pos < size) {
		line = next_line(block, size, &pos, &len);
		if (len == 0)
			break; /* the empty line ends the header */
		/* A continuation line belongs to the field above it. */
		if (is_wsp(line[0]) || !line_is_trace(line, len, &value_pos))
			continue;
		*value_r = unfold_value(block, size, pos, line + value_pos,
					len - value_pos, len_r);
		return 1;
	}
	return 0;
}

int trib_trace_header_verify(const char *block, size_t size,
			     const struct trib_trace_keys *keys,
			     const char *recipient, struct trib_trace **trace_r,
			     const char **error_r)
{
	char *value;
	size_t len;
	int ret;

	*trace_r = NULL;
	if (trib_trace_header_find(block, size, &value, &len) == 0)
		return 0;
	ret = trib_trace_parse_verify(value, len, keys, recipient, trace_r,
				      error_r);
	free(value);
	return ret == 0 ? 1 : -1;
}
