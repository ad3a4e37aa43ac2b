#ifndef TRIB_IMAP_PARSER_PRIVATE_H
#define TRIB_IMAP_PARSER_PRIVATE_H

/* imap-parser-private.h: the parser's state, shared by its two halves and
 * by nothing else.
 *
 * imap-parser.c holds the driver, the public API and the response framing
 * (tag, status word, name, code, text); imap-parser-tokens.c holds the
 * token-level states (args, lists, atoms, sections, quoted strings,
 * literals) and the token and arg buffers both halves use. */

#include "imap-parser.h"
#include "alloc.h"

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

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

/* ---- imap-parser.c ---- */

/* Set the sticky error; the first one wins. */
void trib_imap_parser_set_error(struct trib_imap_parser *p, const char *fmt,
				...) TRIB_ATTR_PRINTF(2, 3);
/* c was not expected in (or where we expected) `what`. */
void trib_imap_parser_error_bad_char(struct trib_imap_parser *p,
				     unsigned char c, const char *what);

/* ---- imap-parser-tokens.c ---- */

/* Save data for a token that goes on in the next feed. */
void trib_imap_parser_tok_append(struct trib_imap_parser *p, const void *data,
				 size_t size);
/* The token (what earlier feeds saved, then data[0..size)) copied into
 * the pool; the token buffer is empty again. */
char *trib_imap_parser_tok_finish(struct trib_imap_parser *p,
				  const unsigned char *data, size_t size,
				  size_t *len_r);
/* Move the args of the current level into the pool. */
const struct trib_imap_arg *
trib_imap_parser_level_take(struct trib_imap_parser *p, unsigned int *count_r);

/* The token-level state handlers, for the driver's table. */
state_handler trib_imap_parser_h_args;
state_handler trib_imap_parser_h_atom;
state_handler trib_imap_parser_h_section;
state_handler trib_imap_parser_h_quoted;
state_handler trib_imap_parser_h_quoted_esc;
state_handler trib_imap_parser_h_lit_size;
state_handler trib_imap_parser_h_lit_plus;
state_handler trib_imap_parser_h_lit_cr;
state_handler trib_imap_parser_h_lit_lf;
state_handler trib_imap_parser_h_lit_inline;

#endif
