#ifndef TRIB_IMAP_PARSER_H
#define TRIB_IMAP_PARSER_H

/* imap-parser.h: IMAP server-response parser (RFC 3501, RFC 9051).
 *
 * The parser does no I/O. Its owner feeds it bytes and it answers: need
 * more, a complete response, a streamed literal to hand on, or an error.
 * It resumes anywhere: mid-token, mid-quoted-string, mid-literal, so input
 * may arrive one byte at a time.
 *
 * Literals:
 *  - A literal that is the value of a message body item in an untagged
 *    FETCH response (the item before it, at the top level of the FETCH
 *    list, is an atom starting with "BODY[", "BINARY[" or "RFC822",
 *    case-insensitive) is STREAMED: the parser never holds its bytes. It
 *    returns TRIB_IMAP_PARSE_LITERAL; the owner takes up to
 *    trib_imap_parser_literal()->remaining bytes from its own input buffer
 *    straight to a consumer, then calls trib_imap_parser_literal_skip().
 *    The response's arg list later shows it as TRIB_IMAP_ARG_LITERAL_STREAM
 *    with its size. Streamed literals are capped by limits.max_literal.
 *  - Every other literal is kept INLINE, capped by max_inline_literal.
 *  - `~{N}` (literal8, RFC 3516) is treated like `{N}`.
 *  - A `{N}` size is checked against its cap before a byte is read.
 *
 * Strict and lenient: every line must end in CRLF. A bare LF, or a CR
 * without LF, is an error ("line not terminated by CRLF"): the servers we
 * talk to send CRLF, and a lone LF means broken framing. A NUL byte outside
 * a literal is an error. Elsewhere the parser is liberal: atoms may hold
 * 8-bit bytes, "%", "*", "\" and "]" (not inside a response code), quoted
 * strings 8-bit bytes and any backslash-escaped character.
 *
 * Ownership: the parser owns one arena; the response, its args and strings
 * stay valid until the next call of trib_imap_parser_feed() after a
 * TRIB_IMAP_PARSE_RESPONSE. Error strings stay valid until destroy. */

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

struct trib_imap_limits {
	/* Bytes of one response, not counting streamed literal bodies
	 * (inline literals count). */
	size_t max_line;
	/* Largest literal held in memory. */
	size_t max_inline_literal;
	/* Largest streamed literal (a message body). */
	uint64_t max_literal;
	/* Deepest parenthesis nesting ("(" opens level 1). */
	unsigned int max_depth;
	/* Most args in one response, counting every arg at every level. */
	unsigned int max_items;
};

/* Defaults: max_line 1 MiB, max_inline_literal 64 KiB, max_literal 1 GiB,
 * max_depth 16, max_items 100000. */
void trib_imap_limits_default(struct trib_imap_limits *limits_r);

enum trib_imap_arg_type {
	TRIB_IMAP_ARG_ATOM,
	TRIB_IMAP_ARG_STRING,  /* quoted string, unescaped */
	TRIB_IMAP_ARG_LITERAL, /* inline literal */
	TRIB_IMAP_ARG_LITERAL_STREAM,
	TRIB_IMAP_ARG_NIL,
	TRIB_IMAP_ARG_LIST,
};

struct trib_imap_arg {
	enum trib_imap_arg_type type;
	union {
		/* ATOM, STRING, LITERAL: NUL-terminated; len excludes the
		 * terminator (a literal may contain NULs). */
		struct {
			const char *str;
			size_t len;
		} s;
		/* LIST */
		struct {
			const struct trib_imap_arg *args;
			unsigned int count;
		} list;
		/* LITERAL_STREAM */
		uint64_t literal_size;
	} u;
};

enum trib_imap_resp_kind {
	TRIB_IMAP_RESP_TAGGED,
	TRIB_IMAP_RESP_UNTAGGED,
	TRIB_IMAP_RESP_CONTINUE,
};

enum trib_imap_status {
	TRIB_IMAP_STATUS_NONE, /* untagged data, e.g. "* 3 EXISTS" */
	TRIB_IMAP_STATUS_OK,
	TRIB_IMAP_STATUS_NO,
	TRIB_IMAP_STATUS_BAD,
	TRIB_IMAP_STATUS_PREAUTH,
	TRIB_IMAP_STATUS_BYE,
};

struct trib_imap_response {
	enum trib_imap_resp_kind kind;
	/* TAGGED only, else NULL. */
	const char *tag;
	/* TAGGED and untagged status responses (OK/NO/BAD/PREAUTH/BYE);
	 * NONE for untagged data and continuations. A tagged response with
	 * anything but OK/NO/BAD is a parse error. */
	enum trib_imap_status status;
	/* Untagged data that starts with a number: "* 3 EXISTS". */
	bool has_number;
	uint32_t number;
	/* Untagged data: the name, uppercased ("EXISTS", "FETCH",
	 * "CAPABILITY", "LIST", "STATUS", "SEARCH", "FLAGS", ...).
	 * Status responses: "OK", "NO", "BAD", "PREAUTH", "BYE". */
	const char *name;
	/* Untagged data: the args after the name, up to the end of line.
	 * "* CAPABILITY A B" gives two atoms; "* 3 FETCH (...)" one list. */
	const struct trib_imap_arg *args;
	unsigned int arg_count;
	/* Status responses: the response code, uppercased ("UIDVALIDITY",
	 * "ALERT", "CAPABILITY", "THROTTLED", ...) or NULL, and its args:
	 * "[UIDVALIDITY 3]" gives one atom "3"; "[PERMANENTFLAGS (\Seen)]"
	 * one list. Atoms inside a code stop at ']'. */
	const char *code;
	const struct trib_imap_arg *code_args;
	unsigned int code_arg_count;
	/* Status responses: the human-readable text after the code ("" if
	 * none). Continuations: everything after "+ " ("" for a bare "+"). */
	const char *text;
};

/* Returned with TRIB_IMAP_PARSE_LITERAL. */
struct trib_imap_literal {
	/* The FETCH response's message sequence number. */
	uint32_t seq;
	/* The item the literal belongs to, as sent: "BODY[]", "BODY[TEXT]<0>",
	 * "RFC822". */
	const char *item;
	uint64_t size;
	/* Bytes of the literal still to come (size at the start). */
	uint64_t remaining;
	/* The FETCH list items parsed before this literal (a UID the server
	 * sent first shows up here); the last one is the item atom. */
	const struct trib_imap_arg *prev_args;
	unsigned int prev_count;
};

enum trib_imap_parse_result {
	/* Everything fed was consumed; the response is not complete yet. */
	TRIB_IMAP_PARSE_NEED_MORE,
	/* A complete response: trib_imap_parser_response(). */
	TRIB_IMAP_PARSE_RESPONSE,
	/* A streamed literal's body is next in the input (see above). While
	 * remaining > 0, feed() consumes nothing and returns this again.
	 * Returned once with remaining == 0 for an empty literal. */
	TRIB_IMAP_PARSE_LITERAL,
	/* Malformed input or a cap exceeded: trib_imap_parser_error(). The
	 * parser stays in error; the connection must be dropped. */
	TRIB_IMAP_PARSE_ERROR,
};

struct trib_imap_parser;

/* limits may be NULL for the defaults; they are copied. */
struct trib_imap_parser *
trib_imap_parser_create(const struct trib_imap_limits *limits);
void trib_imap_parser_destroy(struct trib_imap_parser **parser);

/* Parse from data[0..size). *consumed_r is set to the bytes used, which
 * may be fewer than size when a response or literal is returned: feed
 * the rest again. */
enum trib_imap_parse_result
trib_imap_parser_feed(struct trib_imap_parser *parser,
		      const unsigned char *data, size_t size,
		      size_t *consumed_r);

/* After feed() returned RESPONSE (LITERAL for the second); else NULL. */
const struct trib_imap_response *
trib_imap_parser_response(const struct trib_imap_parser *parser);
const struct trib_imap_literal *
trib_imap_parser_literal(const struct trib_imap_parser *parser);
/* The owner handed `size` bytes (<= remaining) of the streamed literal on. */
void trib_imap_parser_literal_skip(struct trib_imap_parser *parser,
				   uint64_t size);
/* One line naming the cause, e.g. "literal size 5000000000 over the limit
 * of 1073741824 bytes". */
const char *trib_imap_parser_error(const struct trib_imap_parser *parser);

/* Accessors. All return false on a type mismatch or bad number. */
/* Case-insensitive comparison of an ATOM. */
bool trib_imap_arg_atom_equals(const struct trib_imap_arg *arg,
			       const char *atom);
/* ATOM holding a number: nz or zero, no sign, no overflow. */
bool trib_imap_arg_get_u32(const struct trib_imap_arg *arg, uint32_t *num_r);
bool trib_imap_arg_get_u64(const struct trib_imap_arg *arg, uint64_t *num_r);
/* ATOM, STRING or LITERAL. */
bool trib_imap_arg_get_astring(const struct trib_imap_arg *arg,
			       const char **str_r);
/* Like astring, NIL gives *str_r = NULL. */
bool trib_imap_arg_get_nstring(const struct trib_imap_arg *arg,
			       const char **str_r);
bool trib_imap_arg_get_list(const struct trib_imap_arg *arg,
			    const struct trib_imap_arg **args_r,
			    unsigned int *count_r);

#endif
