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
 * array per nesting level, kept from response to response.
 *
 * This file: the driver, the public API and the response framing (tag,
 * status word, name, code, text). The args between them, token by token,
 * are imap-parser-tokens.c's; the state both share is in
 * imap-parser-private.h. */

#include "imap-parser-private.h"

#include <inttypes.h>
#include <stdarg.h>
#include <stdlib.h>
#include <string.h>

#define POOL_BLOCK_SIZE 8192
/* Buffers one odd response grew past these are freed, not kept. */
#define TOK_KEEP_MAX (64 * 1024)
#define LEVEL_KEEP_MAX 1024

/* ---- errors ---- */

void trib_imap_parser_set_error(struct trib_imap_parser *p, const char *fmt,
				...)
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
void trib_imap_parser_error_bad_char(struct trib_imap_parser *p,
				     unsigned char c, const char *what)
{
	if (c == '\0')
		trib_imap_parser_set_error(p, "NUL byte in line");
	else if (c == '\n')
		trib_imap_parser_set_error(
			p, "line not terminated by CRLF (bare LF)");
	else if (c < 0x20 || c >= 0x7f)
		trib_imap_parser_set_error(p, "unexpected byte 0x%02x in %s", c,
					   what);
	else
		trib_imap_parser_set_error(p, "unexpected '%c' in %s", c, what);
}

/* ---- characters ---- */

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
		trib_imap_parser_set_error(
			p, "missing tag: line starts with a space");
		return 0;
	case '\r':
	case '\n':
		trib_imap_parser_set_error(p, "missing tag: empty line");
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
		trib_imap_parser_tok_append(p, data, size);
		return size;
	}
	empty = i == 0 && p->tok_len == 0;
	if (data[i] == ' ' && !empty) {
		p->resp.tag = trib_imap_parser_tok_finish(p, data, i, &len);
		p->state = S_TAGGED_STATUS;
		return i + 1;
	}
	if (data[i] == '\r' && !empty)
		trib_imap_parser_set_error(p, "tagged response without status");
	else
		trib_imap_parser_error_bad_char(p, data[i], "tag");
	return i;
}

static size_t h_untagged_sp(struct trib_imap_parser *p,
			    const unsigned char *data, size_t size)
{
	(void)size;
	if (data[0] == '\0' || data[0] == '\n') {
		trib_imap_parser_error_bad_char(p, data[0],
						"untagged response");
		return 0;
	}
	if (data[0] != ' ') {
		trib_imap_parser_set_error(p, "expected a space after '*'");
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
		trib_imap_parser_error_bad_char(p, data[0], "continuation");
		return 0;
	default:
		trib_imap_parser_set_error(p, "expected a space after '+'");
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
		trib_imap_parser_tok_append(p, data, size);
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
			trib_imap_parser_set_error(p, "missing %s", what);
		else
			trib_imap_parser_error_bad_char(p, data[0], what);
		return NULL;
	}
	word = trib_imap_parser_tok_finish(p, data, end, &len);
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
		trib_imap_parser_error_bad_char(p, c, "status word");
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
		trib_imap_parser_error_bad_char(p, c, "response name");
}

static void number_end(struct trib_imap_parser *p, const char *word,
		       unsigned char c)
{
	struct trib_imap_arg num = { .type = TRIB_IMAP_ARG_ATOM };

	num.u.s.str = word;
	num.u.s.len = strlen(word);
	if (!trib_imap_arg_get_u32(&num, &p->resp.number)) {
		trib_imap_parser_set_error(
			p, "bad message number in untagged response");
		return;
	}
	p->resp.has_number = true;
	if (c == ' ')
		p->state = S_NAME;
	else if (c == '\r')
		trib_imap_parser_set_error(
			p, "missing response name after message number");
	else
		trib_imap_parser_error_bad_char(p, c, "message number");
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
		trib_imap_parser_set_error(p,
					   "tagged response with status %s "
					   "(expected OK, NO or BAD)",
					   word);
	else if (word_is_name(word))
		trib_imap_parser_set_error(
			p,
			"tagged response with data name %.40s "
			"(expected OK, NO or BAD)",
			word);
	else
		trib_imap_parser_set_error(
			p, "invalid status word in tagged response");
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
		trib_imap_parser_set_error(p, "unterminated response code");
		return i;
	}
	if (c == ']' && i == 0 && p->tok_len == 0) {
		trib_imap_parser_set_error(p, "empty response code");
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
		trib_imap_parser_error_bad_char(p, c, "response code");
		return i;
	}
	return i + 1;
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
		trib_imap_parser_tok_append(p, data, size);
		return size;
	}
	if (data[i] != '\r') {
		trib_imap_parser_error_bad_char(p, data[i], "text");
		return i;
	}
	p->resp.text = trib_imap_parser_tok_finish(p, data, i, &len);
	p->state = S_LF;
	return i + 1;
}

static size_t h_lf(struct trib_imap_parser *p, const unsigned char *data,
		   size_t size)
{
	(void)size;
	if (data[0] != '\n') {
		trib_imap_parser_set_error(
			p, "line not terminated by CRLF (CR without LF)");
		return 0;
	}
	p->state = S_DONE;
	if (p->resp.kind == TRIB_IMAP_RESP_UNTAGGED &&
	    p->resp.status == TRIB_IMAP_STATUS_NONE)
		p->resp.args =
			trib_imap_parser_level_take(p, &p->resp.arg_count);
	return 1;
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
	[S_ARGS] = trib_imap_parser_h_args,
	[S_ATOM] = trib_imap_parser_h_atom,
	[S_SECTION] = trib_imap_parser_h_section,
	[S_QUOTED] = trib_imap_parser_h_quoted,
	[S_QUOTED_ESC] = trib_imap_parser_h_quoted_esc,
	[S_LIT_SIZE] = trib_imap_parser_h_lit_size,
	[S_LIT_PLUS] = trib_imap_parser_h_lit_plus,
	[S_LIT_CR] = trib_imap_parser_h_lit_cr,
	[S_LIT_LF] = trib_imap_parser_h_lit_lf,
	[S_LIT_INLINE] = trib_imap_parser_h_lit_inline,
	[S_LF] = h_lf,
	/* S_STREAM, S_DONE and S_ERROR consume nothing: see feed(). */
};

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
		trib_imap_parser_set_error(p, "response longer than %zu bytes",
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
		trib_imap_parser_set_error(parser,
					   "literal_skip(%" PRIu64
					   ") past the streamed literal",
					   size);
		return;
	}
	parser->lit.remaining -= size;
}

const char *trib_imap_parser_error(const struct trib_imap_parser *parser)
{
	return parser->error;
}
