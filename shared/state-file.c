/* state-file.c: the state file's text format (docs/state.md).
 *
 * One record a line, fields separated by one space, strings with every
 * byte <= 0x20, 0x7f and '%' as %XX; a folder is a block from "folder" to
 * "end"; the last line is "checksum " and the SHA-256 of everything
 * before it, so a torn or damaged file is refused as a whole. */

#include "state-private.h"

#include "settings.h"
#include "fileio.h"

#include <openssl/evp.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define STATE_MAGIC "tributary-state"
#define STATE_VERSION 1
#define CHECKSUM_PREFIX "checksum "
#define CHECKSUM_HEX 64

static void sha256_hex(const char *data, size_t size,
		       char hex[static CHECKSUM_HEX + 1])
{
	unsigned char md[EVP_MAX_MD_SIZE];
	unsigned int md_len = 0;

	if (EVP_Digest(data, size, md, &md_len, EVP_sha256(), NULL) != 1 ||
	    md_len != CHECKSUM_HEX / 2)
		abort(); /* SHA-256 itself failing: OpenSSL is broken */
	for (unsigned int i = 0; i < md_len; i++)
		snprintf(hex + i * 2, 3, "%02x", md[i]);
}

/* ---- writing ---- */

struct out {
	char *data;
	size_t len, alloc;
};

static void out_reserve(struct out *out, size_t n)
{
	if (out->len + n < out->alloc)
		return;
	while (out->len + n >= out->alloc)
		out->alloc = out->alloc == 0 ? 4096 : out->alloc * 2;
	out->data = trib_realloc(out->data, out->alloc);
}

static TRIB_ATTR_PRINTF(2, 3) void out_printf(struct out *out, const char *fmt,
					      ...)
{
	va_list args;
	int len;

	va_start(args, fmt);
	len = vsnprintf(NULL, 0, fmt, args);
	va_end(args);
	if (len < 0)
		abort();
	out_reserve(out, (size_t)len + 1);
	va_start(args, fmt);
	vsnprintf(out->data + out->len, (size_t)len + 1, fmt, args);
	va_end(args);
	out->len += (size_t)len;
}

static void out_escaped(struct out *out, const char *str)
{
	static const char hex[] = "0123456789ABCDEF";

	out_reserve(out, strlen(str) * 3 + 1);
	for (const unsigned char *p = (const unsigned char *)str; *p != '\0';
	     p++) {
		if (*p <= 0x20 || *p == 0x7f || *p == '%') {
			out->data[out->len++] = '%';
			out->data[out->len++] = hex[*p >> 4];
			out->data[out->len++] = hex[*p & 0xf];
		} else {
			out->data[out->len++] = (char)*p;
		}
	}
}

static void serialize_folder(struct out *out, struct trib_state_folder *f)
{
	const struct state_index *idx = &f->index;
	const struct state_gen *gens = idx->gens;
	unsigned int gen_count = idx->gen_count;

	if (idx->next.compacted) {
		gens = idx->next.gens;
		gen_count = idx->next.gen_count;
	}
	out_printf(out, "folder ");
	out_escaped(out, f->account);
	out_printf(out, " ");
	out_escaped(out, f->name);
	out_printf(out, "\nuidvalidity %u\ncursor %u\n", f->uidvalidity,
		   f->cursor);
	if (f->done_count > 0) {
		out_printf(out, "done");
		for (unsigned int i = 0; i < f->done_count; i++) {
			if (f->done[i].first == f->done[i].last)
				out_printf(out, " %u", f->done[i].first);
			else
				out_printf(out, " %u:%u", f->done[i].first,
					   f->done[i].last);
		}
		out_printf(out, "\n");
	}
	out_printf(out, "highestmodseq %llu\nuidnext %u\nindex %u %llu %08x\n",
		   (unsigned long long)f->highestmodseq, f->uidnext,
		   idx->next.file_id, (unsigned long long)idx->next.records,
		   idx->next.crc);
	for (unsigned int i = 0; i < gen_count; i++) {
		out_printf(out, "gen %u %llu\n", gens[i].uidvalidity,
			   (unsigned long long)gens[i].start);
	}
	for (unsigned int i = 0; i < f->rejected_count; i++) {
		const struct trib_state_rejected *r = &f->rejected[i];

		out_printf(out, "rejected %u %u %lld ", r->uidvalidity, r->uid,
			   (long long)r->time);
		out_escaped(out, r->reason);
		out_printf(out, "\n");
	}
	out_printf(out, "end\n");
}

char *trib_state_file_serialize(struct trib_state *state,
				uint32_t next_index_id, size_t *size_r)
{
	struct out out = { NULL, 0, 0 };
	char hex[CHECKSUM_HEX + 1];

	out_printf(&out, "%s %d\nnext-index %u\n", STATE_MAGIC, STATE_VERSION,
		   next_index_id);
	for (unsigned int i = 0; i < state->folder_count; i++)
		serialize_folder(&out, state->folders[i]);
	sha256_hex(out.data, out.len, hex);
	out_printf(&out, "%s%s\n", CHECKSUM_PREFIX, hex);
	*size_r = out.len;
	return out.data;
}

/* ---- reading ---- */

#define MAX_TOKENS 6

struct parser {
	struct trib_state *state;
	const char *p, *end;
	unsigned int line_no;
	/* The current line, split at spaces (the first MAX_TOKENS; the last
	 * one holds the rest of the line). */
	const char *tok[MAX_TOKENS];
	size_t tok_len[MAX_TOKENS];
	unsigned int tok_count;
	const char *line;
	size_t line_len;
};

static TRIB_ATTR_PRINTF(2, 3) int parse_error(struct parser *ps,
					      const char *fmt, ...)
{
	va_list args;
	char *what;

	va_start(args, fmt);
	what = trib_strdup_vprintf(fmt, args);
	va_end(args);
	trib_state_set_error(ps->state, "line %u: %s", ps->line_no, what);
	free(what);
	return -1;
}

/* 1: a line, 0: the end. */
static int next_line(struct parser *ps)
{
	const char *nl, *p;
	unsigned int n = 0;

	if (ps->p >= ps->end)
		return 0;
	nl = memchr(ps->p, '\n', (size_t)(ps->end - ps->p));
	if (nl == NULL)
		nl = ps->end;
	ps->line_no++;
	ps->line = ps->p;
	ps->line_len = (size_t)(nl - ps->p);
	ps->p = nl + 1;
	for (p = ps->line; n < MAX_TOKENS; n++) {
		const char *sp = memchr(p, ' ', (size_t)(nl - p));

		ps->tok[n] = p;
		if (sp == NULL || n == MAX_TOKENS - 1) {
			ps->tok_len[n] = (size_t)(nl - p);
			n++;
			break;
		}
		ps->tok_len[n] = (size_t)(sp - p);
		p = sp + 1;
	}
	ps->tok_count = n;
	return 1;
}

static bool tok_is(const struct parser *ps, unsigned int i, const char *word)
{
	return i < ps->tok_count && ps->tok_len[i] == strlen(word) &&
	       memcmp(ps->tok[i], word, ps->tok_len[i]) == 0;
}

static bool parse_number(const char *s, size_t len, uint64_t max,
			 uint64_t *num_r)
{
	uint64_t num = 0;

	if (len == 0 || len > 20)
		return false;
	for (size_t i = 0; i < len; i++) {
		if (s[i] < '0' || s[i] > '9')
			return false;
		if (num > (UINT64_MAX - (uint64_t)(s[i] - '0')) / 10)
			return false;
		num = num * 10 + (uint64_t)(s[i] - '0');
	}
	if (num > max)
		return false;
	*num_r = num;
	return true;
}

static bool tok_number(const struct parser *ps, unsigned int i, uint64_t max,
		       uint64_t *num_r)
{
	return i < ps->tok_count &&
	       parse_number(ps->tok[i], ps->tok_len[i], max, num_r);
}

static bool tok_u32(const struct parser *ps, unsigned int i, uint32_t *num_r)
{
	uint64_t num;

	if (!tok_number(ps, i, UINT32_MAX, &num))
		return false;
	*num_r = (uint32_t)num;
	return true;
}

/* The unescaped token, or NULL when malformed or empty. */
static char *tok_string(const struct parser *ps, unsigned int i)
{
	const char *s = ps->tok[i];
	size_t len = ps->tok_len[i], n = 0;
	char *str;

	if (i >= ps->tok_count || len == 0)
		return NULL;
	str = trib_malloc(len + 1);
	for (size_t j = 0; j < len; j++) {
		if (s[j] != '%') {
			if (s[j] == ' ')
				goto bad;
			str[n++] = s[j];
			continue;
		}
		if (j + 2 >= len)
			goto bad;
		int hi = trib_hex_value(s[j + 1]),
		    lo = trib_hex_value(s[j + 2]);

		if (hi < 0 || lo < 0 || (hi == 0 && lo == 0))
			goto bad;
		str[n++] = (char)(hi << 4 | lo);
		j += 2;
	}
	str[n] = '\0';
	return str;
bad:
	free(str);
	return NULL;
}

static int parse_done(struct parser *ps, struct trib_state_folder *f)
{
	const char *p = ps->line + 4, *end = ps->line + ps->line_len;
	uint64_t prev = f->cursor;

	if (p == end)
		return parse_error(ps, "empty done list");
	while (p < end) {
		const char *sp, *colon;
		uint64_t first, last;

		if (*p++ != ' ')
			return parse_error(ps, "malformed done list");
		sp = memchr(p, ' ', (size_t)(end - p));
		if (sp == NULL)
			sp = end;
		colon = memchr(p, ':', (size_t)(sp - p));
		if (colon == NULL) {
			if (!parse_number(p, (size_t)(sp - p), UINT32_MAX,
					  &first))
				return parse_error(ps, "bad UID in done list");
			last = first;
		} else if (!parse_number(p, (size_t)(colon - p), UINT32_MAX,
					 &first) ||
			   !parse_number(colon + 1, (size_t)(sp - colon - 1),
					 UINT32_MAX, &last) ||
			   last < first) {
			return parse_error(ps, "bad range in done list");
		}
		/* Sorted, above the cursor, never touching each other. */
		if (first <= prev + 1)
			return parse_error(ps, "done list out of order");
		if (f->done_count == f->done_alloc) {
			f->done_alloc =
				f->done_alloc == 0 ? 16 : f->done_alloc * 2;
			f->done = trib_realloc(
				f->done, f->done_alloc * sizeof(*f->done));
		}
		f->done[f->done_count].first = (uint32_t)first;
		f->done[f->done_count].last = (uint32_t)last;
		f->done_count++;
		prev = last;
		p = sp;
	}
	return 0;
}

static int parse_rejected(struct parser *ps, struct trib_state_folder *f)
{
	struct trib_state_rejected r;
	uint64_t time;
	char *reason;

	if (ps->tok_count != 5 || !tok_u32(ps, 1, &r.uidvalidity) ||
	    !tok_u32(ps, 2, &r.uid) || r.uid == 0 ||
	    !tok_number(ps, 3, INT64_MAX, &time) ||
	    (reason = tok_string(ps, 4)) == NULL)
		return parse_error(ps, "bad rejected record");
	r.time = (int64_t)time;
	r.reason = reason;
	if (f->rejected_count == f->rejected_alloc) {
		f->rejected_alloc =
			f->rejected_alloc == 0 ? 4 : f->rejected_alloc * 2;
		f->rejected = trib_realloc(
			f->rejected, f->rejected_alloc * sizeof(*f->rejected));
	}
	f->rejected[f->rejected_count++] = r;
	return 0;
}

static int parse_index(struct parser *ps, struct trib_state_folder *f,
		       uint32_t next_index_id)
{
	struct state_index *idx = &f->index;
	uint64_t records, crc;
	struct trib_state *state = ps->state;

	if (ps->tok_count != 4 || !tok_u32(ps, 1, &idx->file_id) ||
	    idx->file_id == 0 || idx->file_id >= next_index_id ||
	    !tok_number(ps, 2, STATE_INDEX_MAX_RECORDS, &records) ||
	    ps->tok_len[3] != 8)
		return parse_error(ps, "bad index record");
	crc = 0;
	for (unsigned int i = 0; i < 8; i++) {
		int d = trib_hex_value(ps->tok[3][i]);

		if (d < 0)
			return parse_error(ps, "bad index checksum");
		crc = crc << 4 | (uint64_t)d;
	}
	for (unsigned int i = 0; i + 1 < state->folder_count; i++) {
		if (state->folders[i]->index.file_id == idx->file_id)
			return parse_error(ps, "index file used twice");
	}
	idx->committed = idx->count = idx->base = records;
	idx->crc = (uint32_t)crc;
	return 0;
}

static int parse_gen(struct parser *ps, struct trib_state_folder *f)
{
	struct state_index *idx = &f->index;
	uint32_t uidvalidity;
	uint64_t start;

	if (ps->tok_count != 3 || !tok_u32(ps, 1, &uidvalidity) ||
	    !tok_number(ps, 2, STATE_INDEX_MAX_RECORDS, &start) ||
	    start > idx->count ||
	    (idx->gen_count > 0 && start < idx->gens[idx->gen_count - 1].start))
		return parse_error(ps, "bad generation record");
	trib_state_index_add_gen(idx, uidvalidity, start);
	return 0;
}

enum folder_field {
	FIELD_UIDVALIDITY = 1 << 0,
	FIELD_CURSOR = 1 << 1,
	FIELD_DONE = 1 << 2,
	FIELD_MODSEQ = 1 << 3,
	FIELD_UIDNEXT = 1 << 4,
	FIELD_INDEX = 1 << 5,
	FIELDS_REQUIRED = FIELD_UIDVALIDITY | FIELD_CURSOR | FIELD_MODSEQ |
			  FIELD_UIDNEXT | FIELD_INDEX,
};

/* One line inside a folder block; 1 at its "end". */
static int parse_folder_line(struct parser *ps, struct trib_state_folder *f,
			     unsigned int *seen, uint32_t next_index_id)
{
	static const struct {
		const char *word;
		enum folder_field field;
	} once[] = {
		{ "uidvalidity", FIELD_UIDVALIDITY },
		{ "cursor", FIELD_CURSOR },
		{ "done", FIELD_DONE },
		{ "highestmodseq", FIELD_MODSEQ },
		{ "uidnext", FIELD_UIDNEXT },
		{ "index", FIELD_INDEX },
	};
	bool ok;

	for (unsigned int i = 0; i < TRIB_N_ELEMENTS(once); i++) {
		if (!tok_is(ps, 0, once[i].word))
			continue;
		if ((*seen & once[i].field) != 0)
			return parse_error(ps, "%s given twice", once[i].word);
		*seen |= once[i].field;
	}
	if (tok_is(ps, 0, "end")) {
		if (ps->tok_count != 1 ||
		    (*seen & FIELDS_REQUIRED) != FIELDS_REQUIRED)
			return parse_error(ps, "incomplete folder");
		return 1;
	} else if (tok_is(ps, 0, "uidvalidity")) {
		ok = ps->tok_count == 2 && tok_u32(ps, 1, &f->uidvalidity);
	} else if (tok_is(ps, 0, "cursor")) {
		ok = ps->tok_count == 2 && (*seen & FIELD_DONE) == 0 &&
		     tok_u32(ps, 1, &f->cursor);
	} else if (tok_is(ps, 0, "done")) {
		return (*seen & FIELD_CURSOR) == 0
			       ? parse_error(ps, "done before cursor")
			       : parse_done(ps, f);
	} else if (tok_is(ps, 0, "highestmodseq")) {
		ok = ps->tok_count == 2 &&
		     tok_number(ps, 1, UINT64_MAX, &f->highestmodseq);
	} else if (tok_is(ps, 0, "uidnext")) {
		ok = ps->tok_count == 2 && tok_u32(ps, 1, &f->uidnext);
	} else if (tok_is(ps, 0, "index")) {
		return parse_index(ps, f, next_index_id);
	} else if (tok_is(ps, 0, "gen")) {
		return (*seen & FIELD_INDEX) == 0
			       ? parse_error(ps, "gen before index")
			       : parse_gen(ps, f);
	} else if (tok_is(ps, 0, "rejected")) {
		return parse_rejected(ps, f);
	} else {
		return parse_error(
			ps, "unknown record '%.*s'",
			(int)(ps->tok_len[0] > 32 ? 32 : ps->tok_len[0]),
			ps->tok[0]);
	}
	return ok ? 0
		  : parse_error(ps, "bad %.*s", (int)ps->tok_len[0],
				ps->tok[0]);
}

static int parse_folder(struct parser *ps, uint32_t next_index_id)
{
	struct trib_state_folder *f;
	unsigned int seen = 0;
	char *account, *name;
	int ret;

	if (ps->tok_count != 3 || (account = tok_string(ps, 1)) == NULL)
		return parse_error(ps, "bad folder record");
	name = tok_string(ps, 2);
	if (name == NULL || !trib_settings_valid_account_name(account) ||
	    strlen(name) > TRIB_STATE_FOLDER_NAME_MAX ||
	    trib_state_folder_find(ps->state, account, name) != NULL) {
		free(account);
		free(name);
		return parse_error(ps, "bad or repeated folder");
	}
	f = trib_state_folder_new(ps->state, account, name);
	free(account);
	free(name);
	while ((ret = next_line(ps)) > 0) {
		ret = parse_folder_line(ps, f, &seen, next_index_id);
		if (ret != 0)
			return ret < 0 ? -1 : 0;
	}
	return parse_error(ps, "folder without end");
}

/* The body without its checksum line, or NULL when that line is missing
 * or does not match. */
static int check_checksum(struct trib_state *state, const char *data,
			  size_t size, size_t *body_size_r)
{
	size_t line_len = strlen(CHECKSUM_PREFIX) + CHECKSUM_HEX + 1;
	char hex[CHECKSUM_HEX + 1];
	const char *line;

	if (size < line_len || data[size - 1] != '\n' ||
	    (size > line_len && data[size - line_len - 1] != '\n') ||
	    memcmp(data + size - line_len, CHECKSUM_PREFIX,
		   strlen(CHECKSUM_PREFIX)) != 0) {
		trib_state_set_error(state,
				     "torn or truncated file (no checksum "
				     "line at its end)");
		return -1;
	}
	line = data + size - line_len;
	sha256_hex(data, (size_t)(line - data), hex);
	if (memcmp(line + strlen(CHECKSUM_PREFIX), hex, CHECKSUM_HEX) != 0) {
		trib_state_set_error(state,
				     "checksum mismatch (torn or corrupted "
				     "file)");
		return -1;
	}
	*body_size_r = (size_t)(line - data);
	return 0;
}

int trib_state_file_parse(struct trib_state *state, const char *data,
			  size_t size)
{
	struct parser ps = { .state = state };
	uint64_t version;
	uint32_t next_index_id;
	size_t body_size;

	if (memchr(data, '\0', size) != NULL) {
		trib_state_set_error(state, "NUL byte in the file (corrupted)");
		return -1;
	}
	if (check_checksum(state, data, size, &body_size) < 0)
		return -1;
	ps.p = data;
	ps.end = data + body_size;
	if (next_line(&ps) <= 0 || !tok_is(&ps, 0, STATE_MAGIC) ||
	    ps.tok_count != 2)
		return parse_error(&ps, "not a Tributary state file");
	if (!tok_number(&ps, 1, UINT32_MAX, &version) ||
	    version != STATE_VERSION) {
		return parse_error(
			&ps,
			"unsupported version %.*s (this Tributary "
			"reads version %d)",
			(int)(ps.tok_len[1] > 16 ? 16 : ps.tok_len[1]),
			ps.tok[1], STATE_VERSION);
	}
	if (next_line(&ps) <= 0 || !tok_is(&ps, 0, "next-index") ||
	    ps.tok_count != 2 || !tok_u32(&ps, 1, &next_index_id) ||
	    next_index_id == 0)
		return parse_error(&ps, "bad next-index");
	state->next_index_id = next_index_id;
	while (next_line(&ps) > 0) {
		if (!tok_is(&ps, 0, "folder"))
			return parse_error(&ps, "expected a folder");
		if (parse_folder(&ps, next_index_id) < 0)
			return -1;
	}
	return 0;
}
