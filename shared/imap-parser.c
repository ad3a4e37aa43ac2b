/* imap-parser.c: incremental IMAP server-response parser (imap-parser.h).
 *
 * An explicit state machine: one enum of states and one small handler per
 * state. feed() hands the current handler the unread input, capped so the
 * response cannot grow past max_line; the handler consumes what it can and
 * sets the next state. Handlers scan runs of bytes in tight loops and copy
 * a token once, so a large buffer costs no function call per byte.
 *
 * Memory: strings and finished lists live in a per-response arena, cleared
 * when the next response starts. Lists still open live in one growable
 * array per nesting level, kept from response to response. */

#include "imap-parser.h"
#include "alloc.h"

#include <inttypes.h>
#include <stdarg.h>
#include <stdlib.h>
#include <string.h>

#define POOL_BLOCK_SIZE 8192
/* Buffers one odd response grew past these are freed, not kept. */
#define TOK_KEEP_MAX (64 * 1024)
#define LEVEL_KEEP_MAX 1024

enum parser_state {
	S_START,	 /* first byte of a response */
	S_TAG,		 /* the tag of a tagged response */
	S_UNTAGGED_SP,	 /* after "*" */
	S_CONT_SP,	 /* after "+" */
	S_FIRST_WORD,	 /* untagged: number, status word or data name */
	S_NAME,		 /* untagged: data name after a number */
	S_TAGGED_STATUS, /* tagged: OK, NO or BAD */
	S_STATUS_SP,	 /* after "OK ": a "[" or the text */
	S_CODE_NAME,	 /* "[CODE" */
	S_CODE_END,	 /* after the code's "]" */
	S_TEXT,		 /* status or continuation text, up to CR */
	S_ARGS,		 /* between args */
	S_ATOM,		 /* an atom (or NIL) */
	S_SECTION,	 /* inside an atom's "[...]" */
	S_QUOTED,	 /* a quoted string */
	S_QUOTED_ESC,	 /* after a backslash in a quoted string */
	S_LIT_SIZE,	 /* "{" and digits */
	S_LIT_PLUS,	 /* "{N+", expecting "}" */
	S_LIT_CR,	 /* after "}" */
	S_LIT_LF,	 /* after "}" CR */
	S_LIT_INLINE,	 /* the bytes of an inline literal */
	S_STREAM,	 /* a streamed literal: the owner takes its bytes */
	S_LF,		 /* after the final CR */
	S_DONE,		 /* a response is complete */
	S_ERROR,	 /* sticky */
	S_COUNT,	 /* number of states */
};

struct level {
	struct trib_imap_arg *args;
	unsigned int count, cap;
};

struct trib_imap_parser {
	struct trib_imap_limits limits;
	struct trib_pool *pool;
	enum parser_state state;
	struct trib_imap_response resp;
	/* Bytes of this response consumed so far, streamed literal bodies
	 * excluded; never above limits.max_line. */
	size_t line_bytes;

	/* levels[0] holds the top-level args (of the response or of its
	 * code), levels[depth] those of the innermost open list. */
	struct level *levels;
	unsigned int levels_count; /* allocated */
	unsigned int levels_used;  /* touched since the last reset */
	unsigned int depth;
	unsigned int items;
	bool in_code;

	/* The token being read, while it spans feeds. */
	char *tok;
	size_t tok_len, tok_cap;
	unsigned int section_depth;

	uint64_t lit_size;
	bool lit_has_digits;
	bool lit_stream;
	bool lit_announced;
	char *lit_buf; /* inline literal, in the pool */
	size_t lit_have;
	struct trib_imap_literal lit;

	char *error;
};

typedef size_t state_handler(struct trib_imap_parser *p,
			     const unsigned char *data, size_t size);

/* ---- errors ---- */

static void set_error(struct trib_imap_parser *p, const char *fmt, ...)
	TRIB_ATTR_PRINTF(2, 3);

static void set_error(struct trib_imap_parser *p, const char *fmt, ...)
{
	va_list args;

	if (p->state == S_ERROR)
		return;
	va_start(args, fmt);
	p->error = trib_strdup_vprintf(fmt, args);
	va_end(args);
	p->state = S_ERROR;
}

/* c was not expected in (or where we expected) `what`. */
static void error_bad_char(struct trib_imap_parser *p, unsigned char c,
			   const char *what)
{
	if (c == '\0')
		set_error(p, "NUL byte in line");
	else if (c == '\n')
		set_error(p, "line not terminated by CRLF (bare LF)");
	else if (c < 0x20 || c >= 0x7f)
		set_error(p, "unexpected byte 0x%02x in %s", c, what);
	else
		set_error(p, "unexpected '%c' in %s", c, what);
}

/* ---- characters ---- */

/* Atom characters, leaving out "[" and "]", whose meaning depends on
 * where the atom is. 8-bit bytes are accepted (UTF-8 servers). */
static inline bool atom_char(unsigned char c)
{
	if (c <= ' ' || c == 0x7f)
		return false;
	switch (c) {
	case '(':
	case ')':
	case '{':
	case '"':
	case '[':
	case ']':
		return false;
	default:
		return true;
	}
}

/* RFC 3501 tag: ASTRING-CHAR except "+". */
static bool tag_char(unsigned char c)
{
	if (c <= ' ' || c >= 0x7f)
		return false;
	switch (c) {
	case '(':
	case ')':
	case '{':
	case '%':
	case '*':
	case '"':
	case '\\':
	case '+':
		return false;
	default:
		return true;
	}
}

static void str_upper(char *str)
{
	for (; *str != '\0'; str++) {
		if (*str >= 'a' && *str <= 'z')
			*str = (char)(*str - 'a' + 'A');
	}
}

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

/* ---- the token buffer ---- */

static void tok_append(struct trib_imap_parser *p, const void *data,
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
static char *tok_finish(struct trib_imap_parser *p, const unsigned char *data,
			size_t size, size_t *len_r)
{
	char *str;

	if (p->tok_len == 0) {
		*len_r = size;
		return trib_pool_strndup(p->pool, (const char *)data, size);
	}
	tok_append(p, data, size);
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
		set_error(p, "more than %u args in one response",
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
static const struct trib_imap_arg *level_take(struct trib_imap_parser *p,
					      unsigned int *count_r)
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
		set_error(p, "parenthesis nesting deeper than %u levels",
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
		set_error(p, "unbalanced ')'");
		return;
	}
	parent = &p->levels[p->depth - 1];
	list = &parent->args[parent->count - 1];
	list->u.list.args = level_take(p, &list->u.list.count);
	p->depth--;
}

/* ---- response framing: tag, status word, name, code, text ---- */

static size_t h_start(struct trib_imap_parser *p, const unsigned char *data,
		      size_t size)
{
	(void)size;
	switch (data[0]) {
	case '*':
		p->resp.kind = TRIB_IMAP_RESP_UNTAGGED;
		p->state = S_UNTAGGED_SP;
		return 1;
	case '+':
		p->resp.kind = TRIB_IMAP_RESP_CONTINUE;
		p->state = S_CONT_SP;
		return 1;
	case ' ':
		set_error(p, "missing tag: line starts with a space");
		return 0;
	case '\r':
	case '\n':
		set_error(p, "missing tag: empty line");
		return 0;
	default:
		p->resp.kind = TRIB_IMAP_RESP_TAGGED;
		p->state = S_TAG;
		return 0;
	}
}

static size_t h_tag(struct trib_imap_parser *p, const unsigned char *data,
		    size_t size)
{
	bool empty;
	size_t i = 0, len;

	while (i < size && tag_char(data[i]))
		i++;
	if (i == size) {
		tok_append(p, data, size);
		return size;
	}
	empty = i == 0 && p->tok_len == 0;
	if (data[i] == ' ' && !empty) {
		p->resp.tag = tok_finish(p, data, i, &len);
		p->state = S_TAGGED_STATUS;
		return i + 1;
	}
	if (data[i] == '\r' && !empty)
		set_error(p, "tagged response without status");
	else
		error_bad_char(p, data[i], "tag");
	return i;
}

static size_t h_untagged_sp(struct trib_imap_parser *p,
			    const unsigned char *data, size_t size)
{
	(void)size;
	if (data[0] == '\0' || data[0] == '\n') {
		error_bad_char(p, data[0], "untagged response");
		return 0;
	}
	if (data[0] != ' ') {
		set_error(p, "expected a space after '*'");
		return 0;
	}
	p->state = S_FIRST_WORD;
	return 1;
}

static size_t h_cont_sp(struct trib_imap_parser *p, const unsigned char *data,
			size_t size)
{
	(void)size;
	switch (data[0]) {
	case ' ':
		p->state = S_TEXT;
		return 1;
	case '\r':
		p->resp.text = "";
		p->state = S_LF;
		return 1;
	case '\0':
	case '\n':
		error_bad_char(p, data[0], "continuation");
		return 0;
	default:
		set_error(p, "expected a space after '+'");
		return 0;
	}
}

/* Scan word characters: the index of the first other byte, or size after
 * saving the run for the next feed. */
static size_t word_scan(struct trib_imap_parser *p, const unsigned char *data,
			size_t size)
{
	size_t i = 0;

	while (i < size && atom_char(data[i]))
		i++;
	if (i == size)
		tok_append(p, data, size);
	return i;
}

/* The word that data[end] ended, uppercased; NULL and an error if empty. */
static char *word_finish(struct trib_imap_parser *p, const unsigned char *data,
			 size_t end, const char *what)
{
	size_t len;
	char *word;

	if (end == 0 && p->tok_len == 0) {
		if (data[0] == ' ' || data[0] == '\r')
			set_error(p, "missing %s", what);
		else
			error_bad_char(p, data[0], what);
		return NULL;
	}
	word = tok_finish(p, data, end, &len);
	str_upper(word);
	return word;
}

static enum trib_imap_status status_parse(const char *word)
{
	static const struct {
		const char *word;
		enum trib_imap_status status;
	} words[] = {
		{ "OK", TRIB_IMAP_STATUS_OK },
		{ "NO", TRIB_IMAP_STATUS_NO },
		{ "BAD", TRIB_IMAP_STATUS_BAD },
		{ "PREAUTH", TRIB_IMAP_STATUS_PREAUTH },
		{ "BYE", TRIB_IMAP_STATUS_BYE },
	};
	size_t i;

	for (i = 0; i < TRIB_N_ELEMENTS(words); i++) {
		if (strcmp(word, words[i].word) == 0)
			return words[i].status;
	}
	return TRIB_IMAP_STATUS_NONE;
}

/* After a status word: " " then code or text, or the end of the line. */
static void status_word_end(struct trib_imap_parser *p, unsigned char c)
{
	if (c == ' ') {
		p->state = S_STATUS_SP;
	} else if (c == '\r') {
		p->resp.text = "";
		p->state = S_LF;
	} else {
		error_bad_char(p, c, "status word");
	}
}

/* After an untagged data name: " " then args, or the end of the line. */
static void name_end(struct trib_imap_parser *p, unsigned char c)
{
	if (c == ' ')
		p->state = S_ARGS;
	else if (c == '\r')
		p->state = S_LF;
	else
		error_bad_char(p, c, "response name");
}

static void number_end(struct trib_imap_parser *p, const char *word,
		       unsigned char c)
{
	struct trib_imap_arg num = { .type = TRIB_IMAP_ARG_ATOM };

	num.u.s.str = word;
	num.u.s.len = strlen(word);
	if (!trib_imap_arg_get_u32(&num, &p->resp.number)) {
		set_error(p, "bad message number in untagged response");
		return;
	}
	p->resp.has_number = true;
	if (c == ' ')
		p->state = S_NAME;
	else if (c == '\r')
		set_error(p, "missing response name after message number");
	else
		error_bad_char(p, c, "message number");
}

static size_t h_first_word(struct trib_imap_parser *p,
			   const unsigned char *data, size_t size)
{
	size_t i = word_scan(p, data, size);
	char *word;

	if (i == size)
		return size;
	word = word_finish(p, data, i, "response name");
	if (word == NULL)
		return i;
	if (word[0] >= '0' && word[0] <= '9') {
		number_end(p, word, data[i]);
		return i + 1;
	}
	p->resp.name = word;
	p->resp.status = status_parse(word);
	if (p->resp.status != TRIB_IMAP_STATUS_NONE)
		status_word_end(p, data[i]);
	else
		name_end(p, data[i]);
	return i + 1;
}

static size_t h_name(struct trib_imap_parser *p, const unsigned char *data,
		     size_t size)
{
	size_t i = word_scan(p, data, size);

	if (i == size)
		return size;
	p->resp.name = word_finish(p, data, i, "response name");
	if (p->resp.name == NULL)
		return i;
	name_end(p, data[i]);
	return i + 1;
}

/* A data name is letters, digits and "-._", starting with a letter. */
static bool word_is_name(const char *word)
{
	if (word[0] < 'A' || word[0] > 'Z')
		return false;
	for (; *word != '\0'; word++) {
		if (!(*word >= 'A' && *word <= 'Z') &&
		    !(*word >= '0' && *word <= '9') &&
		    strchr("-._", *word) == NULL)
			return false;
	}
	return true;
}

static void tagged_status_error(struct trib_imap_parser *p, const char *word)
{
	if (status_parse(word) != TRIB_IMAP_STATUS_NONE)
		set_error(p,
			  "tagged response with status %s "
			  "(expected OK, NO or BAD)",
			  word);
	else if (word_is_name(word))
		set_error(p,
			  "tagged response with data name %.40s "
			  "(expected OK, NO or BAD)",
			  word);
	else
		set_error(p, "invalid status word in tagged response");
}

static size_t h_tagged_status(struct trib_imap_parser *p,
			      const unsigned char *data, size_t size)
{
	size_t i = word_scan(p, data, size);
	enum trib_imap_status status;
	char *word;

	if (i == size)
		return size;
	word = word_finish(p, data, i, "status word of tagged response");
	if (word == NULL)
		return i;
	status = status_parse(word);
	if (status != TRIB_IMAP_STATUS_OK && status != TRIB_IMAP_STATUS_NO &&
	    status != TRIB_IMAP_STATUS_BAD) {
		tagged_status_error(p, word);
		return i;
	}
	p->resp.name = word;
	p->resp.status = status;
	status_word_end(p, data[i]);
	return i + 1;
}

static size_t h_status_sp(struct trib_imap_parser *p, const unsigned char *data,
			  size_t size)
{
	(void)size;
	if (data[0] == '[') {
		p->in_code = true;
		p->state = S_CODE_NAME;
		return 1;
	}
	p->state = S_TEXT;
	return 0;
}

static size_t h_code_name(struct trib_imap_parser *p, const unsigned char *data,
			  size_t size)
{
	size_t i = word_scan(p, data, size);
	unsigned char c;

	if (i == size)
		return size;
	c = data[i];
	if (c == '\r') {
		set_error(p, "unterminated response code");
		return i;
	}
	if (c == ']' && i == 0 && p->tok_len == 0) {
		set_error(p, "empty response code");
		return i;
	}
	p->resp.code = word_finish(p, data, i, "response code");
	if (p->resp.code == NULL)
		return i;
	if (c == ' ') {
		p->state = S_ARGS;
	} else if (c == ']') {
		p->in_code = false;
		p->state = S_CODE_END;
	} else {
		error_bad_char(p, c, "response code");
		return i;
	}
	return i + 1;
}

/* "]" closed the code (args in levels[0]). */
static void code_end(struct trib_imap_parser *p)
{
	if (p->depth > 0) {
		set_error(p, "unbalanced '(' in response code");
		return;
	}
	p->resp.code_args = level_take(p, &p->resp.code_arg_count);
	p->in_code = false;
	p->state = S_CODE_END;
}

static size_t h_code_end(struct trib_imap_parser *p, const unsigned char *data,
			 size_t size)
{
	(void)size;
	p->state = S_TEXT;
	return data[0] == ' ' ? 1 : 0;
}

static size_t h_text(struct trib_imap_parser *p, const unsigned char *data,
		     size_t size)
{
	size_t i, len;

	for (i = 0; i < size; i++) {
		if (data[i] == '\r' || data[i] == '\n' || data[i] == '\0')
			break;
	}
	if (i == size) {
		tok_append(p, data, size);
		return size;
	}
	if (data[i] != '\r') {
		error_bad_char(p, data[i], "text");
		return i;
	}
	p->resp.text = tok_finish(p, data, i, &len);
	p->state = S_LF;
	return i + 1;
}

static size_t h_lf(struct trib_imap_parser *p, const unsigned char *data,
		   size_t size)
{
	(void)size;
	if (data[0] != '\n') {
		set_error(p, "line not terminated by CRLF (CR without LF)");
		return 0;
	}
	p->state = S_DONE;
	if (p->resp.kind == TRIB_IMAP_RESP_UNTAGGED &&
	    p->resp.status == TRIB_IMAP_STATUS_NONE)
		p->resp.args = level_take(p, &p->resp.arg_count);
	return 1;
}

/* ---- args: atoms, strings, lists ---- */

/* CR among the args: the line (or a code left open) ends. */
static void args_end(struct trib_imap_parser *p)
{
	if (p->in_code) {
		set_error(p, "unterminated response code");
	} else if (p->depth > 0) {
		set_error(p,
			  "unbalanced '(': %u list%s not closed at end of line",
			  p->depth, p->depth == 1 ? "" : "s");
	} else {
		p->state = S_LF;
	}
}

static void literal_start(struct trib_imap_parser *p)
{
	p->lit_size = 0;
	p->lit_has_digits = false;
	p->state = S_LIT_SIZE;
}

static size_t h_args(struct trib_imap_parser *p, const unsigned char *data,
		     size_t size)
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
		error_bad_char(p, data[0], "args");
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

	atom.u.s.str = tok_finish(p, data, size, &atom.u.s.len);
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
		set_error(p, "unexpected '{' after atom");
		return end;
	}
	p->tok_len = 0;
	literal_start(p);
	return end + 1;
}

static size_t h_atom(struct trib_imap_parser *p, const unsigned char *data,
		     size_t size)
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
		tok_append(p, data, i + 1);
		p->section_depth = 1;
		p->state = S_SECTION;
		return i + 1;
	}
	if (i == size) {
		tok_append(p, data, size);
		return size;
	}
	if (data[i] == '{')
		return atom_brace(p, data, i);
	atom_finish(p, data, i);
	return i;
}

/* Inside "BODY[...]": anything up to the matching "]" but line ends. */
static size_t h_section(struct trib_imap_parser *p, const unsigned char *data,
			size_t size)
{
	size_t i;

	for (i = 0; i < size; i++) {
		unsigned char c = data[i];

		if (c == '[') {
			p->section_depth++;
		} else if (c == ']') {
			if (--p->section_depth == 0) {
				tok_append(p, data, i + 1);
				p->state = S_ATOM;
				return i + 1;
			}
		} else if (c == '\r') {
			set_error(p, "unterminated '[' in atom");
			return i;
		} else if (c == '\n' || c == '\0') {
			error_bad_char(p, c, "atom");
			return i;
		}
	}
	tok_append(p, data, size);
	return size;
}

static size_t h_quoted(struct trib_imap_parser *p, const unsigned char *data,
		       size_t size)
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
		tok_append(p, data, size);
		return size;
	}
	switch (data[i]) {
	case '"':
		str = tok_finish(p, data, i, &len);
		p->state = S_ARGS;
		arg_add_str(p, TRIB_IMAP_ARG_STRING, str, len);
		return i + 1;
	case '\\':
		tok_append(p, data, i);
		p->state = S_QUOTED_ESC;
		return i + 1;
	case '\0':
		set_error(p, "NUL byte in line");
		return i;
	default:
		set_error(p, "unterminated quoted string at end of line");
		return i;
	}
}

/* Any character after a backslash stands for itself. */
static size_t h_quoted_esc(struct trib_imap_parser *p,
			   const unsigned char *data, size_t size)
{
	(void)size;
	if (data[0] == '\0') {
		set_error(p, "NUL byte in line");
		return 0;
	}
	if (data[0] == '\r' || data[0] == '\n') {
		set_error(p, "unterminated quoted string at end of line");
		return 0;
	}
	tok_append(p, data, 1);
	p->state = S_QUOTED;
	return 1;
}

/* ---- literals ---- */

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
			set_error(p,
				  "literal size %" PRIu64 " over the limit "
				  "of %" PRIu64 " bytes",
				  size, p->limits.max_literal);
	} else if (size > p->limits.max_inline_literal) {
		set_error(p,
			  "inline literal size %" PRIu64 " over the limit "
			  "of %zu bytes",
			  size, p->limits.max_inline_literal);
	} else if (used > p->limits.max_line ||
		   size > p->limits.max_line - used) {
		set_error(p,
			  "inline literal of %" PRIu64 " bytes makes the "
			  "response longer than %zu bytes",
			  size, p->limits.max_line);
	}
}

static size_t h_lit_size(struct trib_imap_parser *p, const unsigned char *data,
			 size_t size)
{
	size_t i;

	for (i = 0; i < size; i++) {
		unsigned char c = data[i];
		unsigned int digit;

		if (c < '0' || c > '9')
			break;
		digit = c - '0';
		if (p->lit_size > (UINT64_MAX - digit) / 10) {
			set_error(p, "literal size overflows 64 bits");
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
	set_error(p, "bad literal size");
	return i;
}

static size_t h_lit_plus(struct trib_imap_parser *p, const unsigned char *data,
			 size_t size)
{
	(void)size;
	if (data[0] != '}') {
		set_error(p, "bad literal size");
		return 0;
	}
	literal_check(p, 1);
	return 1;
}

static void error_lit_crlf(struct trib_imap_parser *p)
{
	set_error(p, "literal {%" PRIu64 "} not followed by CRLF", p->lit_size);
}

static size_t h_lit_cr(struct trib_imap_parser *p, const unsigned char *data,
		       size_t size)
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

static size_t h_lit_lf(struct trib_imap_parser *p, const unsigned char *data,
		       size_t size)
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

static size_t h_lit_inline(struct trib_imap_parser *p,
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

/* false: stop and return TRIB_IMAP_PARSE_LITERAL; true: parse on. */
static bool stream_step(struct trib_imap_parser *p)
{
	if (!p->lit_announced) {
		p->lit_announced = true;
		return false;
	}
	if (p->lit.remaining > 0)
		return false;
	p->state = S_ARGS;
	return true;
}

/* ---- the driver ---- */

static state_handler *const handlers[S_COUNT] = {
	[S_START] = h_start,
	[S_TAG] = h_tag,
	[S_UNTAGGED_SP] = h_untagged_sp,
	[S_CONT_SP] = h_cont_sp,
	[S_FIRST_WORD] = h_first_word,
	[S_NAME] = h_name,
	[S_TAGGED_STATUS] = h_tagged_status,
	[S_STATUS_SP] = h_status_sp,
	[S_CODE_NAME] = h_code_name,
	[S_CODE_END] = h_code_end,
	[S_TEXT] = h_text,
	[S_ARGS] = h_args,
	[S_ATOM] = h_atom,
	[S_SECTION] = h_section,
	[S_QUOTED] = h_quoted,
	[S_QUOTED_ESC] = h_quoted_esc,
	[S_LIT_SIZE] = h_lit_size,
	[S_LIT_PLUS] = h_lit_plus,
	[S_LIT_CR] = h_lit_cr,
	[S_LIT_LF] = h_lit_lf,
	[S_LIT_INLINE] = h_lit_inline,
	[S_LF] = h_lf,
	/* S_STREAM, S_DONE and S_ERROR consume nothing: see feed(). */
};

static void response_reset(struct trib_imap_parser *p)
{
	unsigned int i;

	trib_pool_clear(p->pool);
	memset(&p->resp, 0, sizeof(p->resp));
	memset(&p->lit, 0, sizeof(p->lit));
	for (i = 0; i < p->levels_used; i++) {
		struct level *lvl = &p->levels[i];

		lvl->count = 0;
		if (lvl->cap > LEVEL_KEEP_MAX) {
			free(lvl->args);
			lvl->args = NULL;
			lvl->cap = 0;
		}
	}
	if (p->tok_cap > TOK_KEEP_MAX) {
		free(p->tok);
		p->tok = NULL;
		p->tok_cap = 0;
	}
	p->levels_used = 1;
	p->tok_len = 0;
	p->depth = 0;
	p->items = 0;
	p->in_code = false;
	p->line_bytes = 0;
	p->state = S_START;
}

/* Run the current state's handler on input capped at the line budget. */
static size_t feed_step(struct trib_imap_parser *p, const unsigned char *data,
			size_t size)
{
	size_t budget = p->limits.max_line - p->line_bytes;
	size_t n;

	if (budget == 0) {
		set_error(p, "response longer than %zu bytes",
			  p->limits.max_line);
		return 0;
	}
	n = handlers[p->state](p, data, size < budget ? size : budget);
	p->line_bytes += n;
	return n;
}

enum trib_imap_parse_result
trib_imap_parser_feed(struct trib_imap_parser *parser,
		      const unsigned char *data, size_t size,
		      size_t *consumed_r)
{
	size_t pos = 0;

	if (parser->state == S_DONE)
		response_reset(parser);
	for (;;) {
		if (parser->state == S_STREAM && !stream_step(parser)) {
			*consumed_r = pos;
			return TRIB_IMAP_PARSE_LITERAL;
		}
		if (parser->state == S_DONE || parser->state == S_ERROR ||
		    pos == size)
			break;
		pos += feed_step(parser, data + pos, size - pos);
	}
	*consumed_r = pos;
	if (parser->state == S_DONE)
		return TRIB_IMAP_PARSE_RESPONSE;
	if (parser->state == S_ERROR)
		return TRIB_IMAP_PARSE_ERROR;
	return TRIB_IMAP_PARSE_NEED_MORE;
}

/* ---- public API ---- */

struct trib_imap_parser *
trib_imap_parser_create(const struct trib_imap_limits *limits)
{
	struct trib_imap_parser *p = trib_calloc(1, sizeof(*p));

	if (limits != NULL)
		p->limits = *limits;
	else
		trib_imap_limits_default(&p->limits);
	p->pool = trib_pool_create(POOL_BLOCK_SIZE);
	p->levels_count = 4;
	p->levels = trib_calloc(p->levels_count, sizeof(*p->levels));
	p->levels_used = 1;
	p->state = S_START;
	return p;
}

void trib_imap_parser_destroy(struct trib_imap_parser **parser)
{
	struct trib_imap_parser *p = *parser;
	unsigned int i;

	if (p == NULL)
		return;
	for (i = 0; i < p->levels_count; i++)
		free(p->levels[i].args);
	free(p->levels);
	free(p->tok);
	free(p->error);
	trib_pool_destroy(&p->pool);
	free(p);
	*parser = NULL;
}

const struct trib_imap_response *
trib_imap_parser_response(const struct trib_imap_parser *parser)
{
	return parser->state == S_DONE ? &parser->resp : NULL;
}

const struct trib_imap_literal *
trib_imap_parser_literal(const struct trib_imap_parser *parser)
{
	return parser->state == S_STREAM ? &parser->lit : NULL;
}

void trib_imap_parser_literal_skip(struct trib_imap_parser *parser,
				   uint64_t size)
{
	if (parser->state != S_STREAM || size > parser->lit.remaining) {
		set_error(parser,
			  "literal_skip(%" PRIu64 ") past the streamed literal",
			  size);
		return;
	}
	parser->lit.remaining -= size;
}

const char *trib_imap_parser_error(const struct trib_imap_parser *parser)
{
	return parser->error;
}
