/* imap-parser-tokens.c: the IMAP parser's token-level states (see
 * imap-parser.c for the driver and the response framing): the args of a
 * response or response code, that is lists, atoms (with their "[...]"
 * sections), quoted strings and literals, inline or streamed; and the
 * token and arg buffers they fill. */

#include "imap-parser-private.h"

#include <inttypes.h>
#include <string.h>

/* ---- the token buffer ---- */

void trib_imap_parser_tok_append(struct trib_imap_parser *p, const void *data,
				 size_t size)
{
	if (size == 0)
		return;
	if (p->tok_cap - p->tok_len < size) {
		size_t cap = p->tok_cap == 0 ? 256 : p->tok_cap;

		while (cap - p->tok_len < size)
			cap *= 2;
		p->tok = trib_realloc(p->tok, cap);
		p->tok_cap = cap;
	}
	memcpy(p->tok + p->tok_len, data, size);
	p->tok_len += size;
}

/* The token (what earlier feeds saved, then data[0..size)) copied into
 * the pool; the token buffer is empty again. */
char *trib_imap_parser_tok_finish(struct trib_imap_parser *p,
				  const unsigned char *data, size_t size,
				  size_t *len_r)
{
	char *str;

	if (p->tok_len == 0) {
		*len_r = size;
		return trib_pool_strndup(p->pool, (const char *)data, size);
	}
	trib_imap_parser_tok_append(p, data, size);
	str = trib_pool_strndup(p->pool, p->tok, p->tok_len);
	*len_r = p->tok_len;
	p->tok_len = 0;
	return str;
}

/* ---- args and lists ---- */

static struct trib_imap_arg *arg_add(struct trib_imap_parser *p,
				     enum trib_imap_arg_type type)
{
	struct level *lvl = &p->levels[p->depth];
	struct trib_imap_arg *arg;

	if (p->items >= p->limits.max_items) {
		trib_imap_parser_set_error(p,
					   "more than %u args in one response",
					   p->limits.max_items);
		return NULL;
	}
	p->items++;
	if (lvl->count == lvl->cap) {
		lvl->cap = lvl->cap == 0 ? 16 : lvl->cap * 2;
		lvl->args =
			trib_realloc(lvl->args, lvl->cap * sizeof(*lvl->args));
	}
	arg = &lvl->args[lvl->count++];
	memset(arg, 0, sizeof(*arg));
	arg->type = type;
	return arg;
}

static void arg_add_str(struct trib_imap_parser *p,
			enum trib_imap_arg_type type, const char *str,
			size_t len)
{
	struct trib_imap_arg *arg = arg_add(p, type);

	if (arg != NULL) {
		arg->u.s.str = str;
		arg->u.s.len = len;
	}
}

/* Move the args of the current level into the pool. */
const struct trib_imap_arg *
trib_imap_parser_level_take(struct trib_imap_parser *p, unsigned int *count_r)
{
	struct level *lvl = &p->levels[p->depth];
	struct trib_imap_arg *args = NULL;

	if (lvl->count > 0) {
		args = trib_pool_alloc(p->pool, lvl->count * sizeof(*args));
		memcpy(args, lvl->args, lvl->count * sizeof(*args));
	}
	*count_r = lvl->count;
	lvl->count = 0;
	return args;
}

static void list_open(struct trib_imap_parser *p)
{
	if (p->depth >= p->limits.max_depth) {
		trib_imap_parser_set_error(
			p, "parenthesis nesting deeper than %u levels",
			p->limits.max_depth);
		return;
	}
	if (arg_add(p, TRIB_IMAP_ARG_LIST) == NULL)
		return;
	p->depth++;
	if (p->depth == p->levels_count) {
		unsigned int old = p->levels_count;

		p->levels_count *= 2;
		p->levels = trib_realloc(p->levels,
					 p->levels_count * sizeof(*p->levels));
		memset(p->levels + old, 0,
		       (p->levels_count - old) * sizeof(*p->levels));
	}
	if (p->depth >= p->levels_used)
		p->levels_used = p->depth + 1;
	p->levels[p->depth].count = 0;
}

static void list_close(struct trib_imap_parser *p)
{
	struct level *parent;
	struct trib_imap_arg *list;

	if (p->depth == 0) {
		trib_imap_parser_set_error(p, "unbalanced ')'");
		return;
	}
	parent = &p->levels[p->depth - 1];
	list = &parent->args[parent->count - 1];
	list->u.list.args = trib_imap_parser_level_take(p, &list->u.list.count);
	p->depth--;
}

/* ---- args: atoms, strings, lists ---- */

/* CR among the args: the line (or a code left open) ends. */
static void args_end(struct trib_imap_parser *p)
{
	if (p->in_code) {
		trib_imap_parser_set_error(p, "unterminated response code");
	} else if (p->depth > 0) {
		trib_imap_parser_set_error(
			p,
			"unbalanced '(': %u list%s not closed at end of line",
			p->depth, p->depth == 1 ? "" : "s");
	} else {
		p->state = S_LF;
	}
}

/* "]" closed the code (args in levels[0]). */
static void code_end(struct trib_imap_parser *p)
{
	if (p->depth > 0) {
		trib_imap_parser_set_error(p,
					   "unbalanced '(' in response code");
		return;
	}
	p->resp.code_args =
		trib_imap_parser_level_take(p, &p->resp.code_arg_count);
	p->in_code = false;
	p->state = S_CODE_END;
}

static void literal_start(struct trib_imap_parser *p)
{
	p->lit_size = 0;
	p->lit_has_digits = false;
	p->state = S_LIT_SIZE;
}

size_t trib_imap_parser_h_args(struct trib_imap_parser *p,
			       const unsigned char *data, size_t size)
{
	size_t i = 0;

	switch (data[0]) {
	case ' ':
		while (i < size && data[i] == ' ')
			i++;
		return i;
	case '\r':
		args_end(p);
		return 1;
	case '(':
		list_open(p);
		return 1;
	case ')':
		list_close(p);
		return 1;
	case '"':
		p->state = S_QUOTED;
		return 1;
	case '{':
		literal_start(p);
		return 1;
	case ']':
		if (!p->in_code)
			break;
		code_end(p);
		return 1;
	default:
		break;
	}
	if (data[0] < ' ' || data[0] == 0x7f) {
		trib_imap_parser_error_bad_char(p, data[0], "args");
		return 0;
	}
	p->section_depth = 0;
	p->state = S_ATOM;
	return 0;
}

static void atom_finish(struct trib_imap_parser *p, const unsigned char *data,
			size_t size)
{
	struct trib_imap_arg atom = { .type = TRIB_IMAP_ARG_ATOM };

	atom.u.s.str =
		trib_imap_parser_tok_finish(p, data, size, &atom.u.s.len);
	p->state = S_ARGS;
	if (trib_imap_arg_atom_equals(&atom, "NIL"))
		(void)arg_add(p, TRIB_IMAP_ARG_NIL);
	else
		arg_add_str(p, TRIB_IMAP_ARG_ATOM, atom.u.s.str, atom.u.s.len);
}

/* "{" ended an atom: fine only for "~{", a literal8. */
static size_t atom_brace(struct trib_imap_parser *p, const unsigned char *data,
			 size_t end)
{
	bool tilde = (p->tok_len == 0 && end == 1 && data[0] == '~') ||
		     (p->tok_len == 1 && end == 0 && p->tok[0] == '~');

	if (!tilde) {
		trib_imap_parser_set_error(p, "unexpected '{' after atom");
		return end;
	}
	p->tok_len = 0;
	literal_start(p);
	return end + 1;
}

size_t trib_imap_parser_h_atom(struct trib_imap_parser *p,
			       const unsigned char *data, size_t size)
{
	size_t i;

	for (i = 0; i < size; i++) {
		unsigned char c = data[i];

		if (atom_char(c) || (c == ']' && !p->in_code))
			continue;
		if (c != '[')
			break;
		if (p->in_code)
			continue;
		trib_imap_parser_tok_append(p, data, i + 1);
		p->section_depth = 1;
		p->state = S_SECTION;
		return i + 1;
	}
	if (i == size) {
		trib_imap_parser_tok_append(p, data, size);
		return size;
	}
	if (data[i] == '{')
		return atom_brace(p, data, i);
	atom_finish(p, data, i);
	return i;
}

/* Inside "BODY[...]": anything up to the matching "]" but line ends. */
size_t trib_imap_parser_h_section(struct trib_imap_parser *p,
				  const unsigned char *data, size_t size)
{
	size_t i;

	for (i = 0; i < size; i++) {
		unsigned char c = data[i];

		if (c == '[') {
			p->section_depth++;
		} else if (c == ']') {
			if (--p->section_depth == 0) {
				trib_imap_parser_tok_append(p, data, i + 1);
				p->state = S_ATOM;
				return i + 1;
			}
		} else if (c == '\r') {
			trib_imap_parser_set_error(p,
						   "unterminated '[' in atom");
			return i;
		} else if (c == '\n' || c == '\0') {
			trib_imap_parser_error_bad_char(p, c, "atom");
			return i;
		}
	}
	trib_imap_parser_tok_append(p, data, size);
	return size;
}

size_t trib_imap_parser_h_quoted(struct trib_imap_parser *p,
				 const unsigned char *data, size_t size)
{
	size_t i, len;
	const char *str;

	for (i = 0; i < size; i++) {
		unsigned char c = data[i];

		if (c == '"' || c == '\\' || c == '\r' || c == '\n' ||
		    c == '\0')
			break;
	}
	if (i == size) {
		trib_imap_parser_tok_append(p, data, size);
		return size;
	}
	switch (data[i]) {
	case '"':
		str = trib_imap_parser_tok_finish(p, data, i, &len);
		p->state = S_ARGS;
		arg_add_str(p, TRIB_IMAP_ARG_STRING, str, len);
		return i + 1;
	case '\\':
		trib_imap_parser_tok_append(p, data, i);
		p->state = S_QUOTED_ESC;
		return i + 1;
	case '\0':
		trib_imap_parser_set_error(p, "NUL byte in line");
		return i;
	default:
		trib_imap_parser_set_error(
			p, "unterminated quoted string at end of line");
		return i;
	}
}

/* Any character after a backslash stands for itself. */
size_t trib_imap_parser_h_quoted_esc(struct trib_imap_parser *p,
				     const unsigned char *data, size_t size)
{
	(void)size;
	if (data[0] == '\0') {
		trib_imap_parser_set_error(p, "NUL byte in line");
		return 0;
	}
	if (data[0] == '\r' || data[0] == '\n') {
		trib_imap_parser_set_error(
			p, "unterminated quoted string at end of line");
		return 0;
	}
	trib_imap_parser_tok_append(p, data, 1);
	p->state = S_QUOTED;
	return 1;
}

/* ---- literals ---- */

static bool has_prefix_ci(const char *str, size_t len, const char *prefix)
{
	size_t i;

	for (i = 0; prefix[i] != '\0'; i++) {
		char c;

		if (i == len)
			return false;
		c = str[i];
		if (c >= 'a' && c <= 'z')
			c = (char)(c - 'a' + 'A');
		if (c != prefix[i])
			return false;
	}
	return true;
}

/* Is the literal just announced the body of a FETCH item? */
static bool literal_streams(const struct trib_imap_parser *p)
{
	const struct level *lvl = &p->levels[1];
	const struct trib_imap_arg *prev;

	if (p->resp.kind != TRIB_IMAP_RESP_UNTAGGED || !p->resp.has_number ||
	    p->in_code || p->depth != 1 || p->resp.name == NULL ||
	    strcmp(p->resp.name, "FETCH") != 0 || lvl->count == 0)
		return false;
	prev = &lvl->args[lvl->count - 1];
	if (prev->type != TRIB_IMAP_ARG_ATOM)
		return false;
	return has_prefix_ci(prev->u.s.str, prev->u.s.len, "BODY[") ||
	       has_prefix_ci(prev->u.s.str, prev->u.s.len, "BINARY[") ||
	       has_prefix_ci(prev->u.s.str, prev->u.s.len, "RFC822");
}

/* "}" seen, `consumed` bytes into this handler's input: check the size
 * against its cap before a byte of the literal is read. */
static void literal_check(struct trib_imap_parser *p, size_t consumed)
{
	uint64_t size = p->lit_size;
	size_t used = p->line_bytes + consumed + 2; /* + CRLF */

	p->state = S_LIT_CR;
	p->lit_stream = literal_streams(p);
	if (p->lit_stream) {
		if (size > p->limits.max_literal)
			trib_imap_parser_set_error(p,
						   "literal size %" PRIu64
						   " over the limit "
						   "of %" PRIu64 " bytes",
						   size, p->limits.max_literal);
	} else if (size > p->limits.max_inline_literal) {
		trib_imap_parser_set_error(p,
					   "inline literal size %" PRIu64
					   " over the limit "
					   "of %zu bytes",
					   size, p->limits.max_inline_literal);
	} else if (used > p->limits.max_line ||
		   size > p->limits.max_line - used) {
		trib_imap_parser_set_error(p,
					   "inline literal of %" PRIu64
					   " bytes makes the "
					   "response longer than %zu bytes",
					   size, p->limits.max_line);
	}
}

size_t trib_imap_parser_h_lit_size(struct trib_imap_parser *p,
				   const unsigned char *data, size_t size)
{
	size_t i;

	for (i = 0; i < size; i++) {
		unsigned char c = data[i];
		unsigned int digit;

		if (c < '0' || c > '9')
			break;
		digit = c - '0';
		if (p->lit_size > (UINT64_MAX - digit) / 10) {
			trib_imap_parser_set_error(
				p, "literal size overflows 64 bits");
			return i;
		}
		p->lit_size = p->lit_size * 10 + digit;
		p->lit_has_digits = true;
	}
	if (i == size)
		return size;
	if (p->lit_has_digits && data[i] == '+') {
		p->state = S_LIT_PLUS;
		return i + 1;
	}
	if (p->lit_has_digits && data[i] == '}') {
		literal_check(p, i + 1);
		return i + 1;
	}
	trib_imap_parser_set_error(p, "bad literal size");
	return i;
}

size_t trib_imap_parser_h_lit_plus(struct trib_imap_parser *p,
				   const unsigned char *data, size_t size)
{
	(void)size;
	if (data[0] != '}') {
		trib_imap_parser_set_error(p, "bad literal size");
		return 0;
	}
	literal_check(p, 1);
	return 1;
}

static void error_lit_crlf(struct trib_imap_parser *p)
{
	trib_imap_parser_set_error(
		p, "literal {%" PRIu64 "} not followed by CRLF", p->lit_size);
}

size_t trib_imap_parser_h_lit_cr(struct trib_imap_parser *p,
				 const unsigned char *data, size_t size)
{
	(void)size;
	if (data[0] != '\r') {
		error_lit_crlf(p);
		return 0;
	}
	p->state = S_LIT_LF;
	return 1;
}

static void inline_finish(struct trib_imap_parser *p)
{
	p->state = S_ARGS;
	arg_add_str(p, TRIB_IMAP_ARG_LITERAL, p->lit_buf, p->lit_have);
}

static void stream_start(struct trib_imap_parser *p)
{
	struct level *lvl = &p->levels[1];
	struct trib_imap_arg *arg;

	p->state = S_STREAM;
	p->lit.seq = p->resp.number;
	p->lit.item = lvl->args[lvl->count - 1].u.s.str;
	p->lit.size = p->lit_size;
	p->lit.remaining = p->lit_size;
	p->lit_announced = false;
	arg = arg_add(p, TRIB_IMAP_ARG_LITERAL_STREAM);
	if (arg == NULL)
		return;
	arg->u.literal_size = p->lit_size;
	/* After arg_add(): it may have moved the array. */
	p->lit.prev_args = lvl->args;
	p->lit.prev_count = lvl->count - 1;
}

size_t trib_imap_parser_h_lit_lf(struct trib_imap_parser *p,
				 const unsigned char *data, size_t size)
{
	(void)size;
	if (data[0] != '\n') {
		error_lit_crlf(p);
		return 0;
	}
	if (p->lit_stream) {
		stream_start(p);
		return 1;
	}
	/* literal_check() bounded the size by max_line. */
	p->lit_buf = trib_pool_alloc(p->pool, (size_t)p->lit_size + 1);
	p->lit_have = 0;
	p->state = S_LIT_INLINE;
	if (p->lit_size == 0)
		inline_finish(p);
	return 1;
}

size_t trib_imap_parser_h_lit_inline(struct trib_imap_parser *p,
				     const unsigned char *data, size_t size)
{
	size_t want = (size_t)p->lit_size - p->lit_have;
	size_t n = size < want ? size : want;

	memcpy(p->lit_buf + p->lit_have, data, n);
	p->lit_have += n;
	if (p->lit_have == p->lit_size)
		inline_finish(p);
	return n;
}
