/* trace-parse.c: the X-Tributary-Trace header: parsing and verifying
 * it, and finding the topmost one in a header block. Building it is in
 * trace.c. No I/O. The grammar is in trace.h. */

#include "trace.h"

#include "alloc.h"
#include "trace-private.h"

#include <openssl/crypto.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>

/* v k r a p f uv u gm l ld fl fd m */
#define MAX_TOKENS 14

/* ---- small helpers ---- */

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
			if (!trib_trace_char_unreserved((unsigned char)str[i]))
				return false;
			continue;
		}
		if (len - i < 3)
			return false;
		hi = upper_hex_value(str[i + 1]);
		lo = upper_hex_value(str[i + 2]);
		if (hi < 0 || lo < 0 || (hi == 0 && lo == 0) ||
		    trib_trace_char_unreserved((unsigned char)(hi << 4 | lo)))
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
	if (p->a == NULL || !trib_trace_name_valid(p->a->val, p->a->val_len))
		return "malformed trace header: bad account";
	p->p = take(toks, "p");
	if (p->p == NULL || !trib_trace_name_valid(p->p->val, p->p->val_len))
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
			trib_trace_out_str(&text, "; ");
		trib_trace_out_mem(&text, toks->t[i].tag, toks->t[i].tag_len);
		trib_trace_out_char(&text, '=');
		trib_trace_out_mem(&text, toks->t[i].val, toks->t[i].val_len);
	}
	memcpy(key_id, p->k->val, TRIB_TRACE_KEY_ID_LEN);
	key_id[TRIB_TRACE_KEY_ID_LEN] = '\0';
	found = trib_trace_mac_text(keys, key_id, text.buf, text.len, mac);
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
		trib_trace_sha256(recipient, strlen(recipient), digest);
		trib_trace_out_hex(&out, digest, sizeof(digest));
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
	trib_trace_id_compute(f->account, f->have_gm_msgid, f->gm_msgid,
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
	trib_trace_out_mem(&out, first, first_len);
	while (pos < size && is_wsp(block[pos])) {
		line = next_line(block, size, &pos, &len);
		trib_trace_out_mem(&out, line, len);
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
