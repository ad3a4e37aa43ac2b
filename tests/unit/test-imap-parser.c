/* test-imap-parser.c: the IMAP response parser, fed whole, one byte at a
 * time, in odd chunks and split at every point, with identical results.
 *
 * Each case is an input and the transcript the parser must produce: one
 * line per response (args written back in a canonical form) or streamed
 * literal, then "ERROR: <message>" if it fails. */

#include <stdarg.h>
#include <stddef.h>
#include <setjmp.h>
#include <stdint.h>
#include <cmocka.h>

#include "alloc.h"
#include "imap-parser.h"

#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

/* ---- a growable byte buffer ---- */

struct sbuf {
	char *data;
	size_t len, cap;
};

static void sb_add(struct sbuf *sb, const void *data, size_t len)
{
	if (sb->cap - sb->len < len + 1) {
		while (sb->cap - sb->len < len + 1)
			sb->cap = sb->cap == 0 ? 256 : sb->cap * 2;
		sb->data = trib_realloc(sb->data, sb->cap);
	}
	memcpy(sb->data + sb->len, data, len);
	sb->len += len;
	sb->data[sb->len] = '\0';
}

static void sb_adds(struct sbuf *sb, const char *str)
{
	sb_add(sb, str, strlen(str));
}

static void sb_printf(struct sbuf *sb, const char *fmt, ...)
	TRIB_ATTR_PRINTF(2, 3);

static void sb_printf(struct sbuf *sb, const char *fmt, ...)
{
	va_list args;
	char *str;

	va_start(args, fmt);
	str = trib_strdup_vprintf(fmt, args);
	va_end(args);
	sb_adds(sb, str);
	free(str);
}

static const char *sb_str(struct sbuf *sb)
{
	if (sb->data == NULL)
		sb_add(sb, "", 0);
	return sb->data;
}

static void sb_free(struct sbuf *sb)
{
	free(sb->data);
	memset(sb, 0, sizeof(*sb));
}

/* ---- the canonical form of a response ---- */

/* Bytes outside 0x20..0x7e as \xHH; with `quoted`, '"' and '\' escaped. */
static void put_escaped(struct sbuf *sb, const char *str, size_t len,
			bool quoted)
{
	size_t i;

	for (i = 0; i < len; i++) {
		unsigned char c = (unsigned char)str[i];

		if (quoted && (c == '"' || c == '\\'))
			sb_printf(sb, "\\%c", c);
		else if (c < 0x20 || c >= 0x7f)
			sb_printf(sb, "\\x%02x", c);
		else
			sb_add(sb, &str[i], 1);
	}
}

static void put_bytes(struct sbuf *sb, const char *str, size_t len)
{
	put_escaped(sb, str, len, true);
}

static void put_quoted(struct sbuf *sb, const char *str, size_t len)
{
	sb_adds(sb, "\"");
	put_bytes(sb, str, len);
	sb_adds(sb, "\"");
}

static void put_args(struct sbuf *sb, const struct trib_imap_arg *args,
		     unsigned int count, const char *sep);

static void put_arg(struct sbuf *sb, const struct trib_imap_arg *arg)
{
	switch (arg->type) {
	case TRIB_IMAP_ARG_ATOM:
		assert_int_equal(strlen(arg->u.s.str), arg->u.s.len);
		put_escaped(sb, arg->u.s.str, arg->u.s.len, false);
		break;
	case TRIB_IMAP_ARG_STRING:
		assert_int_equal(arg->u.s.str[arg->u.s.len], '\0');
		put_quoted(sb, arg->u.s.str, arg->u.s.len);
		break;
	case TRIB_IMAP_ARG_LITERAL:
		assert_int_equal(arg->u.s.str[arg->u.s.len], '\0');
		sb_printf(sb, "{%zu}", arg->u.s.len);
		put_quoted(sb, arg->u.s.str, arg->u.s.len);
		break;
	case TRIB_IMAP_ARG_LITERAL_STREAM:
		sb_printf(sb, "<stream %" PRIu64 ">", arg->u.literal_size);
		break;
	case TRIB_IMAP_ARG_NIL:
		sb_adds(sb, "NIL");
		break;
	case TRIB_IMAP_ARG_LIST:
		sb_adds(sb, "(");
		put_args(sb, arg->u.list.args, arg->u.list.count, "");
		sb_adds(sb, ")");
		break;
	}
}

/* Each arg preceded by sep, but the first when sep is "". */
static void put_args(struct sbuf *sb, const struct trib_imap_arg *args,
		     unsigned int count, const char *sep)
{
	unsigned int i;

	if (count > 0)
		assert_non_null(args);
	for (i = 0; i < count; i++) {
		sb_adds(sb, sep[0] != '\0' || i > 0 ? " " : "");
		put_arg(sb, &args[i]);
	}
}

static const char *const status_names[] = {
	[TRIB_IMAP_STATUS_NONE] = NULL,		[TRIB_IMAP_STATUS_OK] = "OK",
	[TRIB_IMAP_STATUS_NO] = "NO",		[TRIB_IMAP_STATUS_BAD] = "BAD",
	[TRIB_IMAP_STATUS_PREAUTH] = "PREAUTH", [TRIB_IMAP_STATUS_BYE] = "BYE",
};

static void put_status(struct sbuf *sb, const struct trib_imap_response *r)
{
	assert_string_equal(r->name, status_names[r->status]);
	assert_int_equal(r->arg_count, 0);
	sb_adds(sb, r->name);
	if (r->code != NULL) {
		sb_printf(sb, " [%s", r->code);
		put_args(sb, r->code_args, r->code_arg_count, " ");
		sb_adds(sb, "]");
	} else {
		assert_int_equal(r->code_arg_count, 0);
	}
	sb_adds(sb, " ");
	assert_non_null(r->text);
	put_quoted(sb, r->text, strlen(r->text));
}

static void put_response(struct sbuf *sb, const struct trib_imap_response *r)
{
	assert_non_null(r);
	switch (r->kind) {
	case TRIB_IMAP_RESP_TAGGED:
		assert_non_null(r->tag);
		assert_int_not_equal(r->status, TRIB_IMAP_STATUS_NONE);
		sb_printf(sb, "%s ", r->tag);
		break;
	case TRIB_IMAP_RESP_UNTAGGED:
		assert_null(r->tag);
		sb_adds(sb, "* ");
		break;
	case TRIB_IMAP_RESP_CONTINUE:
		assert_null(r->tag);
		assert_null(r->name);
		assert_int_equal(r->status, TRIB_IMAP_STATUS_NONE);
		sb_adds(sb, "+ ");
		put_quoted(sb, r->text, strlen(r->text));
		sb_adds(sb, "\n");
		return;
	}
	if (r->has_number)
		sb_printf(sb, "%" PRIu32 " ", r->number);
	if (r->status != TRIB_IMAP_STATUS_NONE) {
		put_status(sb, r);
	} else {
		assert_null(r->code);
		assert_null(r->text);
		sb_adds(sb, r->name);
		put_args(sb, r->args, r->arg_count, " ");
	}
	sb_adds(sb, "\n");
}

static void put_literal_start(struct sbuf *sb,
			      const struct trib_imap_literal *lit)
{
	sb_printf(sb, "LIT %" PRIu32 " %s %" PRIu64 " (", lit->seq, lit->item,
		  lit->size);
	put_args(sb, lit->prev_args, lit->prev_count, "");
	sb_adds(sb, ") \"");
	assert_true(lit->prev_count > 0);
	assert_ptr_equal(lit->prev_args[lit->prev_count - 1].u.s.str,
			 lit->item);
}

/* ---- the driver ---- */

/* Feed input as a connection would receive it: first `first` bytes, then
 * `chunk` more at a time. Streamed literals go to sink. */
static void drive(const void *input, size_t len, size_t first, size_t chunk,
		  const struct trib_imap_limits *limits, struct sbuf *out,
		  struct sbuf *sink)
{
	struct trib_imap_parser *parser = trib_imap_parser_create(limits);
	const unsigned char *data = input;
	size_t have = first < len ? first : len, pos = 0, consumed;
	bool in_literal = false;

	for (;;) {
		enum trib_imap_parse_result res;
		const struct trib_imap_literal *lit;
		size_t n;

		res = trib_imap_parser_feed(parser, data + pos, have - pos,
					    &consumed);
		assert_true(consumed <= have - pos);
		pos += consumed;
		if (res == TRIB_IMAP_PARSE_RESPONSE) {
			assert_null(trib_imap_parser_literal(parser));
			put_response(out, trib_imap_parser_response(parser));
			continue;
		}
		assert_null(trib_imap_parser_response(parser));
		if (res == TRIB_IMAP_PARSE_ERROR) {
			const char *error = trib_imap_parser_error(parser);

			assert_non_null(error);
			sb_printf(out, "ERROR: %s\n", error);
			/* Sticky. */
			res = trib_imap_parser_feed(parser, data + pos,
						    len - pos, &consumed);
			assert_int_equal(res, TRIB_IMAP_PARSE_ERROR);
			assert_int_equal(consumed, 0);
			assert_ptr_equal(trib_imap_parser_error(parser), error);
			break;
		}
		if (res == TRIB_IMAP_PARSE_LITERAL) {
			lit = trib_imap_parser_literal(parser);
			assert_non_null(lit);
			if (!in_literal)
				put_literal_start(out, lit);
			in_literal = true;
			n = lit->remaining < have - pos ? lit->remaining
							: have - pos;
			sb_add(sink, data + pos, n);
			put_bytes(out, (const char *)data + pos, n);
			pos += n;
			trib_imap_parser_literal_skip(parser, n);
			if (lit->remaining == 0) {
				in_literal = false;
				sb_adds(out, "\"\n");
				continue;
			}
		} else {
			assert_int_equal(res, TRIB_IMAP_PARSE_NEED_MORE);
			assert_int_equal(pos, have);
		}
		if (have == len)
			break;
		have = len - have < chunk ? len : have + chunk;
	}
	if (in_literal)
		sb_adds(out, "\" TRUNCATED\n");
	trib_imap_parser_destroy(&parser);
	assert_null(parser);
}

/* Parse whole, byte by byte and in odd chunks: the same transcript. */
static void check_parse_limits(const void *input, size_t len,
			       const struct trib_imap_limits *limits,
			       const char *expect, const char *expect_sink,
			       size_t expect_sink_len)
{
	static const size_t chunks[] = { 0, 1, 2, 3, 5, 8, 13, 64 };
	size_t i;

	for (i = 0; i < TRIB_N_ELEMENTS(chunks); i++) {
		size_t chunk = chunks[i] == 0 ? len : chunks[i];
		struct sbuf out = { 0 }, sink = { 0 };

		drive(input, len, chunk, chunk, limits, &out, &sink);
		assert_string_equal(sb_str(&out), expect);
		assert_int_equal(sink.len, expect_sink_len);
		assert_memory_equal(sb_str(&sink), expect_sink, sink.len);
		sb_free(&out);
		sb_free(&sink);
	}
}

/* A transcript that ends in an error naming `phrase`; `before` is what
 * must come ahead of it. Same result whole and byte by byte. */
static void check_error_limits(const void *input, size_t len,
			       const struct trib_imap_limits *limits,
			       const char *before, const char *phrase)
{
	struct sbuf whole = { 0 }, bytes = { 0 }, sink = { 0 };
	const char *error;

	drive(input, len, len, len, limits, &whole, &sink);
	drive(input, len, 1, 1, limits, &bytes, &sink);
	assert_string_equal(sb_str(&bytes), sb_str(&whole));
	assert_true(strncmp(whole.data, before, strlen(before)) == 0);
	error = whole.data + strlen(before);
	if (strncmp(error, "ERROR: ", 7) != 0 || strstr(error, phrase) == NULL)
		fail_msg("expected an error with \"%s\", got \"%s\"", phrase,
			 error);
	assert_ptr_equal(strchr(error, '\n'), whole.data + whole.len - 1);
	sb_free(&whole);
	sb_free(&bytes);
	sb_free(&sink);
}

struct parse_case {
	const char *input;
	size_t len;
	const char *expect;
	const char *sink;
	size_t sink_len;
};

#define CASE(in, out)                                                          \
	{                                                                      \
		in, sizeof(in) - 1, out, "", 0                                 \
	}
#define CASE_SINK(in, out, sink)                                               \
	{                                                                      \
		in, sizeof(in) - 1, out, sink, sizeof(sink) - 1                \
	}

static void check_cases(const struct parse_case *cases, size_t count)
{
	size_t i;

	for (i = 0; i < count; i++)
		check_parse_limits(cases[i].input, cases[i].len, NULL,
				   cases[i].expect, cases[i].sink,
				   cases[i].sink_len);
}

#define CHECK_CASES(cases) check_cases(cases, TRIB_N_ELEMENTS(cases))
#define CHECK_OK(in, limits, out)                                              \
	check_parse_limits(in, sizeof(in) - 1, limits, out, "", 0)
#define CHECK_ERR(in, limits, phrase)                                          \
	check_error_limits(in, sizeof(in) - 1, limits, "", phrase)

struct error_case {
	const char *input;
	size_t len;
	const char *before;
	const char *phrase;
};

#define ERR(in, phrase)                                                        \
	{                                                                      \
		in, sizeof(in) - 1, "", phrase                                 \
	}
#define ERR_AFTER(in, before, phrase)                                          \
	{                                                                      \
		in, sizeof(in) - 1, before, phrase                             \
	}

static void check_errors(const struct error_case *cases, size_t count)
{
	size_t i;

	for (i = 0; i < count; i++)
		check_error_limits(cases[i].input, cases[i].len, NULL,
				   cases[i].before, cases[i].phrase);
}

#define CHECK_ERRORS(cases) check_errors(cases, TRIB_N_ELEMENTS(cases))

/* Parse one response whole for the accessor tests. */
struct one {
	struct trib_imap_parser *parser;
	const struct trib_imap_response *resp;
};

static void one_parse(struct one *one, const char *input)
{
	size_t consumed;

	one->parser = trib_imap_parser_create(NULL);
	assert_int_equal(trib_imap_parser_feed(one->parser,
					       (const unsigned char *)input,
					       strlen(input), &consumed),
			 TRIB_IMAP_PARSE_RESPONSE);
	assert_int_equal(consumed, strlen(input));
	one->resp = trib_imap_parser_response(one->parser);
}

static void one_free(struct one *one)
{
	trib_imap_parser_destroy(&one->parser);
}

/* ---- status responses ---- */

static const struct parse_case tagged_cases[] = {
	CASE("A1 OK LOGIN completed\r\n", "A1 OK \"LOGIN completed\"\n"),
	CASE("A2 NO [AUTHENTICATIONFAILED] Invalid credentials (Failure)\r\n",
	     "A2 NO [AUTHENTICATIONFAILED] \"Invalid credentials "
	     "(Failure)\"\n"),
	CASE("A3 BAD Error in IMAP command: Unknown command\r\n",
	     "A3 BAD \"Error in IMAP command: Unknown command\"\n"),
	CASE("A4 BAD [CLIENTBUG] Bad syntax\r\n",
	     "A4 BAD [CLIENTBUG] \"Bad syntax\"\n"),
	CASE("a5 ok done\r\n", "a5 OK \"done\"\n"),
	CASE("A6 OK\r\n", "A6 OK \"\"\n"),
	CASE("A7 OK \r\n", "A7 OK \"\"\n"),
	CASE("A8 OK [READ-WRITE] Select completed (0.001 + 0.000 secs).\r\n",
	     "A8 OK [READ-WRITE] \"Select completed (0.001 + 0.000 secs).\"\n"),
	CASE("A9 NO [TRYCREATE] Mailbox doesn't exist: Foo\r\n",
	     "A9 NO [TRYCREATE] \"Mailbox doesn't exist: Foo\"\n"),
	CASE("A10 OK [APPENDUID 38505 3955] APPEND completed\r\n",
	     "A10 OK [APPENDUID 38505 3955] \"APPEND completed\"\n"),
	CASE("tag.1-x OK [READ-ONLY]\r\n", "tag.1-x OK [READ-ONLY] \"\"\n"),
	CASE("A11 NO [ALERT]Quota exceeded\r\n",
	     "A11 NO [ALERT] \"Quota exceeded\"\n"),
	/* Text keeps 8-bit bytes, brackets, braces and quotes as sent. */
	CASE("A12 OK Fertig \xc3\xbc {5} \"q\" [x]\r\n",
	     "A12 OK \"Fertig \\xc3\\xbc {5} \\\"q\\\" [x]\"\n"),
};

static void test_tagged(void **state)
{
	(void)state;
	CHECK_CASES(tagged_cases);
}

static const struct parse_case untagged_status_cases[] = {
	CASE("* OK IMAP4rev1 Service Ready\r\n",
	     "* OK \"IMAP4rev1 Service Ready\"\n"),
	CASE("* NO Disk is 98% full, please delete unnecessary data\r\n",
	     "* NO \"Disk is 98% full, please delete unnecessary data\"\n"),
	CASE("* BAD Command line too large\r\n",
	     "* BAD \"Command line too large\"\n"),
	CASE("* BYE Autologout; idle for too long\r\n",
	     "* BYE \"Autologout; idle for too long\"\n"),
	CASE("* BYE\r\n", "* BYE \"\"\n"),
	CASE("* PREAUTH IMAP4rev1 server logged in as Smith\r\n",
	     "* PREAUTH \"IMAP4rev1 server logged in as Smith\"\n"),
	CASE("* OK [ALERT] System shutdown in 10 minutes\r\n",
	     "* OK [ALERT] \"System shutdown in 10 minutes\"\n"),
	CASE("* NO [THROTTLED] Too many requests, slow down\r\n",
	     "* NO [THROTTLED] \"Too many requests, slow down\"\n"),
	CASE("* BYE [UNAVAILABLE] Server shutting down\r\n",
	     "* BYE [UNAVAILABLE] \"Server shutting down\"\n"),
	CASE("* ok [alert] lower case\r\n", "* OK [ALERT] \"lower case\"\n"),
	/* Outlook's greeting: brackets in the text are not a code. */
	CASE("* OK The Microsoft Exchange IMAP4 service is ready. "
	     "[TQBOADIA]\r\n",
	     "* OK \"The Microsoft Exchange IMAP4 service is ready. "
	     "[TQBOADIA]\"\n"),
};

static void test_untagged_status(void **state)
{
	(void)state;
	CHECK_CASES(untagged_status_cases);
}

static const struct parse_case code_cases[] = {
	CASE("* OK [UIDVALIDITY 3857529045] UIDs valid\r\n",
	     "* OK [UIDVALIDITY 3857529045] \"UIDs valid\"\n"),
	CASE("* OK [UIDNEXT 4392] Predicted next UID\r\n",
	     "* OK [UIDNEXT 4392] \"Predicted next UID\"\n"),
	CASE("* OK [HIGHESTMODSEQ 715194045007]\r\n",
	     "* OK [HIGHESTMODSEQ 715194045007] \"\"\n"),
	CASE("* OK [PERMANENTFLAGS (\\Deleted \\Seen \\*)] Limited\r\n",
	     "* OK [PERMANENTFLAGS (\\Deleted \\Seen \\*)] \"Limited\"\n"),
	CASE("* OK [PERMANENTFLAGS ()] No permanent flags permitted\r\n",
	     "* OK [PERMANENTFLAGS ()] \"No permanent flags permitted\"\n"),
	CASE("* NO [BADCHARSET (UTF-8 \"US-ASCII\")] charset\r\n",
	     "* NO [BADCHARSET (UTF-8 \"US-ASCII\")] \"charset\"\n"),
	CASE("* OK [UNSEEN 12] Message 12 is first unseen\r\n",
	     "* OK [UNSEEN 12] \"Message 12 is first unseen\"\n"),
	CASE("* OK [WEBALERT https://example.com/x?y=1] Log in\r\n",
	     "* OK [WEBALERT https://example.com/x?y=1] \"Log in\"\n"),
	CASE("* OK [CLOSED] Previous mailbox closed.\r\n",
	     "* OK [CLOSED] \"Previous mailbox closed.\"\n"),
	CASE("* OK [COPYUID 38505 304,319:320 3956:3958] Done\r\n",
	     "* OK [COPYUID 38505 304,319:320 3956:3958] \"Done\"\n"),
	/* In a code, "[" is an atom character and "]" ends the atom. */
	CASE("* NO [X a[b c] t\r\n", "* NO [X a[b c] \"t\"\n"),
};

static void test_response_codes(void **state)
{
	(void)state;
	CHECK_CASES(code_cases);
}

static const struct parse_case capability_cases[] = {
	CASE("* CAPABILITY IMAP4rev1 STARTTLS AUTH=GSSAPI LOGINDISABLED\r\n",
	     "* CAPABILITY IMAP4rev1 STARTTLS AUTH=GSSAPI LOGINDISABLED\n"),
	CASE("* OK [CAPABILITY IMAP4rev1 SASL-IR LOGIN-REFERRALS ID ENABLE "
	     "IDLE LITERAL+ STARTTLS AUTH=PLAIN] Dovecot (Debian) ready.\r\n",
	     "* OK [CAPABILITY IMAP4rev1 SASL-IR LOGIN-REFERRALS ID ENABLE "
	     "IDLE LITERAL+ STARTTLS AUTH=PLAIN] \"Dovecot (Debian) "
	     "ready.\"\n"),
	CASE("A1 OK [CAPABILITY IMAP4rev1 UIDPLUS CONDSTORE QRESYNC "
	     "X-GM-EXT-1] Logged in\r\n",
	     "A1 OK [CAPABILITY IMAP4rev1 UIDPLUS CONDSTORE QRESYNC "
	     "X-GM-EXT-1] \"Logged in\"\n"),
	CASE("* capability imap4rev1\r\n", "* CAPABILITY imap4rev1\n"),
	CASE("* ENABLED CONDSTORE QRESYNC\r\n",
	     "* ENABLED CONDSTORE QRESYNC\n"),
	CASE("* ENABLED\r\n", "* ENABLED\n"),
};

static void test_capability_enabled(void **state)
{
	(void)state;
	CHECK_CASES(capability_cases);
}

static const struct parse_case continuation_cases[] = {
	CASE("+ dXNlcj1hbGljZQFhdXRoPUJlYXJlciB4AQE=\r\n",
	     "+ \"dXNlcj1hbGljZQFhdXRoPUJlYXJlciB4AQE=\"\n"),
	CASE("+\r\n", "+ \"\"\n"),
	CASE("+ \r\n", "+ \"\"\n"),
	CASE("+ Ready for literal data\r\n", "+ \"Ready for literal data\"\n"),
	CASE("+ idling\r\n", "+ \"idling\"\n"),
	CASE("+ [ALERT] not a code {3}\r\n", "+ \"[ALERT] not a code {3}\"\n"),
};

static void test_continuation(void **state)
{
	(void)state;
	CHECK_CASES(continuation_cases);
}

/* ---- untagged data ---- */

static const struct parse_case mailbox_data_cases[] = {
	CASE("* 172 EXISTS\r\n", "* 172 EXISTS\n"),
	CASE("* 0 EXISTS\r\n", "* 0 EXISTS\n"),
	CASE("* 1 RECENT\r\n", "* 1 RECENT\n"),
	CASE("* 44 EXPUNGE\r\n", "* 44 EXPUNGE\n"),
	CASE("* 4294967295 EXISTS\r\n", "* 4294967295 EXISTS\n"),
	CASE("* 3 exists\r\n", "* 3 EXISTS\n"),
	CASE("* FLAGS (\\Answered \\Flagged \\Deleted \\Seen \\Draft "
	     "$Forwarded $MDNSent)\r\n",
	     "* FLAGS (\\Answered \\Flagged \\Deleted \\Seen \\Draft "
	     "$Forwarded $MDNSent)\n"),
	CASE("* FLAGS ()\r\n", "* FLAGS ()\n"),
	CASE("* VANISHED (EARLIER) 41,43:116,118\r\n",
	     "* VANISHED (EARLIER) 41,43:116,118\n"),
	CASE("* ID (\"name\" \"Dovecot\" \"version\" NIL)\r\n",
	     "* ID (\"name\" \"Dovecot\" \"version\" NIL)\n"),
	CASE("* SEARCH 2 84 882\r\n", "* SEARCH 2 84 882\n"),
	CASE("* SEARCH\r\n", "* SEARCH\n"),
	CASE("* SEARCH 1 2 (MODSEQ 917162500)\r\n",
	     "* SEARCH 1 2 (MODSEQ 917162500)\n"),
	CASE("* ESEARCH (TAG \"A282\") MIN 2 COUNT 3\r\n",
	     "* ESEARCH (TAG \"A282\") MIN 2 COUNT 3\n"),
	CASE("* ESEARCH (TAG \"A285\") UID MIN 7 MAX 3800 ALL 7,9:3800\r\n",
	     "* ESEARCH (TAG \"A285\") UID MIN 7 MAX 3800 ALL 7,9:3800\n"),
	CASE("* ESEARCH (TAG \"A284\")\r\n", "* ESEARCH (TAG \"A284\")\n"),
	CASE("* STATUS blurdybloop (MESSAGES 231 UIDNEXT 44292)\r\n",
	     "* STATUS blurdybloop (MESSAGES 231 UIDNEXT 44292)\n"),
	CASE("* STATUS \"Sent Items\" (MESSAGES 2 UIDNEXT 10 UIDVALIDITY 1 "
	     "UNSEEN 0 HIGHESTMODSEQ 99)\r\n",
	     "* STATUS \"Sent Items\" (MESSAGES 2 UIDNEXT 10 UIDVALIDITY 1 "
	     "UNSEEN 0 HIGHESTMODSEQ 99)\n"),
	CASE("* STATUS {5}\r\nA (B)(MESSAGES 1)\r\n",
	     "* STATUS {5}\"A (B)\" (MESSAGES 1)\n"),
};

static void test_mailbox_data(void **state)
{
	(void)state;
	CHECK_CASES(mailbox_data_cases);
}

static const struct parse_case list_cases[] = {
	CASE("* LIST (\\HasNoChildren) \"/\" INBOX\r\n",
	     "* LIST (\\HasNoChildren) \"/\" INBOX\n"),
	CASE("* LIST (\\HasNoChildren \\Sent) \"/\" \"Sent Items\"\r\n",
	     "* LIST (\\HasNoChildren \\Sent) \"/\" \"Sent Items\"\n"),
	CASE("* LIST (\\All \\HasNoChildren) \"/\" \"[Gmail]/All Mail\"\r\n",
	     "* LIST (\\All \\HasNoChildren) \"/\" \"[Gmail]/All Mail\"\n"),
	CASE("* LIST (\\Noselect \\HasChildren) \"/\" \"[Gmail]\"\r\n",
	     "* LIST (\\Noselect \\HasChildren) \"/\" \"[Gmail]\"\n"),
	CASE("* LIST (\\Junk \\Trash \\Drafts \\Archive \\Flagged) \".\" "
	     "Junk\r\n",
	     "* LIST (\\Junk \\Trash \\Drafts \\Archive \\Flagged) \".\" "
	     "Junk\n"),
	/* NIL, quoted-escaped and literal delimiters. */
	CASE("* LIST (\\Noselect) NIL \"\"\r\n",
	     "* LIST (\\Noselect) NIL \"\"\n"),
	CASE("* LIST () \"\\\\\" Foo\\Bar\r\n",
	     "* LIST () \"\\\\\" Foo\\Bar\n"),
	CASE("* LIST () {1}\r\n/ INBOX\r\n", "* LIST () {1}\"/\" INBOX\n"),
	/* Literal mailbox names, one with a quote, NUL and 8-bit bytes. */
	CASE("* LIST () \"/\" {11}\r\nfoo \"bar\" b\r\n",
	     "* LIST () \"/\" {11}\"foo \\\"bar\\\" b\"\n"),
	CASE("* LIST () \"/\" {4}\r\na\0\xff)\r\n",
	     "* LIST () \"/\" {4}\"a\\x00\\xff)\"\n"),
	CASE("* LIST () \"/\" {0}\r\n\r\n", "* LIST () \"/\" {0}\"\"\n"),
	CASE("* LIST () \"/\" {3+}\r\nabc\r\n", "* LIST () \"/\" {3}\"abc\"\n"),
	CASE("* LIST () \"/\" ~{3}\r\nabc\r\n", "* LIST () \"/\" {3}\"abc\"\n"),
	/* Atoms may hold "]" outside codes, and 8-bit bytes. */
	CASE("* LIST () \"/\" foo]bar\r\n", "* LIST () \"/\" foo]bar\n"),
	CASE("* LIST () \"/\" Gel\xc3\xb6scht\r\n",
	     "* LIST () \"/\" Gel\\xc3\\xb6scht\n"),
	CASE("* LSUB (\\Noselect) \"/\" ~foo\r\n",
	     "* LSUB (\\Noselect) \"/\" ~foo\n"),
	CASE("* LIST () \"/\" ]foo\r\n", "* LIST () \"/\" ]foo\n"),
};

static void test_list(void **state)
{
	(void)state;
	CHECK_CASES(list_cases);
}

static const struct parse_case namespace_cases[] = {
	CASE("* NAMESPACE ((\"\" \"/\")) NIL NIL\r\n",
	     "* NAMESPACE ((\"\" \"/\")) NIL NIL\n"),
	CASE("* NAMESPACE NIL NIL NIL\r\n", "* NAMESPACE NIL NIL NIL\n"),
	CASE("* NAMESPACE ((\"\" \"/\")(\"#mh/\" \"/\" \"X-PARAM\" "
	     "(\"FLAG1\" \"FLAG2\"))) ((\"~\" \"/\")) "
	     "((\"#shared/\" \"/\")(\"#public/\" \"/\")(\"#ftp/\" \"/\")"
	     "(\"#news.\" \".\"))\r\n",
	     "* NAMESPACE ((\"\" \"/\") (\"#mh/\" \"/\" \"X-PARAM\" "
	     "(\"FLAG1\" \"FLAG2\"))) ((\"~\" \"/\")) "
	     "((\"#shared/\" \"/\") (\"#public/\" \"/\") (\"#ftp/\" \"/\") "
	     "(\"#news.\" \".\"))\n"),
	CASE("* NAMESPACE ((\"INBOX.\" \".\")) nil ((\"\" NIL))\r\n",
	     "* NAMESPACE ((\"INBOX.\" \".\")) NIL ((\"\" NIL))\n"),
};

static void test_namespace(void **state)
{
	(void)state;
	CHECK_CASES(namespace_cases);
}

static const struct parse_case quoted_cases[] = {
	CASE("* LIST () \"/\" \"a \\\"quoted\\\" name\"\r\n",
	     "* LIST () \"/\" \"a \\\"quoted\\\" name\"\n"),
	CASE("* LIST () \"/\" \"back\\\\slash\\\\\"\r\n",
	     "* LIST () \"/\" \"back\\\\slash\\\\\"\n"),
	CASE("* LIST () \"/\" \"\"\r\n", "* LIST () \"/\" \"\"\n"),
	CASE("* LIST () \"/\" \"Gel\xc3\xb6scht (alt)\"\r\n",
	     "* LIST () \"/\" \"Gel\\xc3\\xb6scht (alt)\"\n"),
	CASE("* LIST () \"/\" \"tab\there\"\r\n",
	     "* LIST () \"/\" \"tab\\x09here\"\n"),
	CASE("* LIST () \"/\" \"[x] {3} (y)\"\r\n",
	     "* LIST () \"/\" \"[x] {3} (y)\"\n"),
	CASE("* X \"a\"\"b\" \"\\q\"\r\n", "* X \"a\" \"b\" \"q\"\n"),
};

static void test_quoted(void **state)
{
	(void)state;
	CHECK_CASES(quoted_cases);
}

/* ---- FETCH ---- */

#define FETCH_BODY                                                             \
	"* 1 FETCH (UID 7 BODY[] {23}\r\nSubject: hi\r\n\r\nHello!\r\n"        \
	" FLAGS (\\Seen))\r\n"
#define FETCH_BODY_OUT                                                         \
	"LIT 1 BODY[] 23 (UID 7 BODY[]) "                                      \
	"\"Subject: hi\\x0d\\x0a\\x0d\\x0aHello!\\x0d\\x0a\"\n"                \
	"* 1 FETCH (UID 7 BODY[] <stream 23> FLAGS (\\Seen))\n"
#define FETCH_BODY_SINK "Subject: hi\r\n\r\nHello!\r\n"

static const struct parse_case fetch_cases[] = {
	CASE("* 12 FETCH (UID 4827313 FLAGS (\\Seen) RFC822.SIZE 44827 "
	     "INTERNALDATE \"17-Jul-1996 02:44:25 -0700\" MODSEQ (65402))\r\n",
	     "* 12 FETCH (UID 4827313 FLAGS (\\Seen) RFC822.SIZE 44827 "
	     "INTERNALDATE \"17-Jul-1996 02:44:25 -0700\" MODSEQ (65402))\n"),
	CASE("* 9 FETCH (X-GM-LABELS (\\Inbox \"\\\\Important\" {4}\r\nWork) "
	     "X-GM-MSGID 1278455344230334865 UID 5)\r\n",
	     "* 9 FETCH (X-GM-LABELS (\\Inbox \"\\\\Important\" {4}\"Work\") "
	     "X-GM-MSGID 1278455344230334865 UID 5)\n"),
	CASE("* 12 FETCH (BODYSTRUCTURE (\"TEXT\" \"PLAIN\" (\"CHARSET\" "
	     "\"US-ASCII\") NIL NIL \"7BIT\" 3028 92))\r\n",
	     "* 12 FETCH (BODYSTRUCTURE (\"TEXT\" \"PLAIN\" (\"CHARSET\" "
	     "\"US-ASCII\") NIL NIL \"7BIT\" 3028 92))\n"),
	CASE_SINK(FETCH_BODY, FETCH_BODY_OUT, FETCH_BODY_SINK),
	/* Spaces and parens inside the section belong to the atom. */
	CASE_SINK("* 2 FETCH (UID 8 BODY[HEADER.FIELDS (FROM TO)] {42}\r\n"
		  "From: a@example.org\r\nTo: b@example.net\r\n\r\n)\r\n",
		  "LIT 2 BODY[HEADER.FIELDS (FROM TO)] 42 (UID 8 "
		  "BODY[HEADER.FIELDS (FROM TO)]) \"From: a@example.org"
		  "\\x0d\\x0aTo: b@example.net\\x0d\\x0a\\x0d\\x0a\"\n"
		  "* 2 FETCH (UID 8 BODY[HEADER.FIELDS (FROM TO)] "
		  "<stream 42>)\n",
		  "From: a@example.org\r\nTo: b@example.net\r\n\r\n"),
	CASE_SINK("* 3 FETCH (BODY[]<0> {10}\r\n0123456789 UID 9)\r\n",
		  "LIT 3 BODY[]<0> 10 (BODY[]<0>) \"0123456789\"\n"
		  "* 3 FETCH (BODY[]<0> <stream 10> UID 9)\n",
		  "0123456789"),
	/* Two streamed literals, the second empty. */
	CASE_SINK("* 4 FETCH (BODY[HEADER] {11}\r\nDate: x\r\n\r\n "
		  "BODY[TEXT] {0}\r\n RFC822.SIZE 11)\r\n",
		  "LIT 4 BODY[HEADER] 11 (BODY[HEADER]) "
		  "\"Date: x\\x0d\\x0a\\x0d\\x0a\"\n"
		  "LIT 4 BODY[TEXT] 0 (BODY[HEADER] <stream 11> BODY[TEXT]) "
		  "\"\"\n"
		  "* 4 FETCH (BODY[HEADER] <stream 11> BODY[TEXT] <stream 0> "
		  "RFC822.SIZE 11)\n",
		  "Date: x\r\n\r\n"),
	CASE_SINK("* 5 FETCH (BINARY[1] ~{6}\r\nbo\0dy\xff)\r\n",
		  "LIT 5 BINARY[1] 6 (BINARY[1]) \"bo\\x00dy\\xff\"\n"
		  "* 5 FETCH (BINARY[1] <stream 6>)\n",
		  "bo\0dy\xff"),
	CASE_SINK("* 6 fetch (uid 1 rfc822 {4}\r\nabcd)\r\n",
		  "LIT 6 rfc822 4 (uid 1 rfc822) \"abcd\"\n"
		  "* 6 FETCH (uid 1 rfc822 <stream 4>)\n",
		  "abcd"),
	CASE_SINK(
		"* 6 FETCH (BODY[1.MIME] {2+}\r\nab RFC822.TEXT {1}\r\nc)\r\n",
		"LIT 6 BODY[1.MIME] 2 (BODY[1.MIME]) \"ab\"\n"
		"LIT 6 RFC822.TEXT 1 (BODY[1.MIME] <stream 2> RFC822.TEXT) "
		"\"c\"\n"
		"* 6 FETCH (BODY[1.MIME] <stream 2> RFC822.TEXT <stream 1>)\n",
		"abc"),
	/* Not streamed: quoted or NIL values, nested, not FETCH. */
	CASE("* 7 FETCH (BODY[] \"hi\" BODY[1] NIL)\r\n",
	     "* 7 FETCH (BODY[] \"hi\" BODY[1] NIL)\n"),
	CASE("* 8 FETCH (ENVELOPE (\"Mon, 7 Feb 1994\" {5}\r\nhello NIL NIL "
	     "NIL NIL NIL NIL NIL \"<id@x>\") UID 3)\r\n",
	     "* 8 FETCH (ENVELOPE (\"Mon, 7 Feb 1994\" {5}\"hello\" NIL NIL "
	     "NIL NIL NIL NIL NIL \"<id@x>\") UID 3)\n"),
	CASE("* 11 FETCH (X (BODY[] {3}\r\nabc))\r\n",
	     "* 11 FETCH (X (BODY[] {3}\"abc\"))\n"),
	CASE("* 10 XFETCH (BODY[] {3}\r\nabc)\r\n",
	     "* 10 XFETCH (BODY[] {3}\"abc\")\n"),
	CASE("* FETCH (BODY[] {3}\r\nabc)\r\n",
	     "* FETCH (BODY[] {3}\"abc\")\n"),
	CASE("* 1 FETCH (BODY {3}\r\nabc)\r\n",
	     "* 1 FETCH (BODY {3}\"abc\")\n"),
	CASE("* 1 FETCH (FLAGS (x) {3}\r\nabc)\r\n",
	     "* 1 FETCH (FLAGS (x) {3}\"abc\")\n"),
	CASE("* 1 FETCH (BODY[]<0.100> \"\" BODY[1]<5> NIL)\r\n",
	     "* 1 FETCH (BODY[]<0.100> \"\" BODY[1]<5> NIL)\n"),
	CASE("* 1 FETCH (BODY[HEADER.FIELDS (X-A [B])] NIL)\r\n",
	     "* 1 FETCH (BODY[HEADER.FIELDS (X-A [B])] NIL)\n"),
};

static void test_fetch(void **state)
{
	(void)state;
	CHECK_CASES(fetch_cases);
}

/* A FETCH response with streamed and inline literals, cut into two reads
 * at every possible point. */
static void test_fetch_every_split(void **state)
{
	static const char input[] =
		"* 1 FETCH (UID 7 BODY[] {23}\r\nSubject: hi\r\n\r\nHello!\r\n"
		" X {3}\r\n(a) ENVELOPE (NIL {2}\r\nhi) BODY[TEXT] {0}\r\n)\r\n"
		"A1 OK done\r\n";
	static const char expect[] =
		"LIT 1 BODY[] 23 (UID 7 BODY[]) "
		"\"Subject: hi\\x0d\\x0a\\x0d\\x0aHello!\\x0d\\x0a\"\n"
		"LIT 1 BODY[TEXT] 0 (UID 7 BODY[] <stream 23> X {3}\"(a)\" "
		"ENVELOPE (NIL {2}\"hi\") BODY[TEXT]) \"\"\n"
		"* 1 FETCH (UID 7 BODY[] <stream 23> X {3}\"(a)\" "
		"ENVELOPE (NIL {2}\"hi\") BODY[TEXT] <stream 0>)\n"
		"A1 OK \"done\"\n";
	size_t len = sizeof(input) - 1, k, chunk;

	(void)state;
	for (k = 0; k <= len; k++) {
		for (chunk = 1; chunk <= len; chunk += len - 1) {
			struct sbuf out = { 0 }, sink = { 0 };

			drive(input, len, k, chunk, NULL, &out, &sink);
			assert_string_equal(sb_str(&out), expect);
			assert_string_equal(sb_str(&sink), FETCH_BODY_SINK);
			sb_free(&out);
			sb_free(&sink);
		}
	}
}

/* The literal API step by step. */
static void test_literal_api(void **state)
{
	static const unsigned char input[] =
		"* 1 FETCH (UID 7 BODY[] {5}\r\nhello)\r\n";
	struct trib_imap_parser *parser = trib_imap_parser_create(NULL);
	const struct trib_imap_literal *lit;
	const struct trib_imap_response *resp;
	const struct trib_imap_arg *args;
	size_t len = sizeof(input) - 1, body, consumed;
	unsigned int count;
	uint32_t uid;

	(void)state;
	assert_null(trib_imap_parser_response(parser));
	assert_null(trib_imap_parser_literal(parser));
	assert_null(trib_imap_parser_error(parser));
	assert_int_equal(trib_imap_parser_feed(parser, input, len, &body),
			 TRIB_IMAP_PARSE_LITERAL);
	assert_memory_equal(input + body, "hello)", 6);
	lit = trib_imap_parser_literal(parser);
	assert_non_null(lit);
	assert_null(trib_imap_parser_response(parser));
	assert_int_equal(lit->seq, 1);
	assert_string_equal(lit->item, "BODY[]");
	assert_int_equal(lit->size, 5);
	assert_int_equal(lit->remaining, 5);
	assert_int_equal(lit->prev_count, 3);
	assert_true(trib_imap_arg_atom_equals(&lit->prev_args[0], "uid"));
	assert_true(trib_imap_arg_get_u32(&lit->prev_args[1], &uid));
	assert_int_equal(uid, 7);

	/* Nothing is consumed while bytes of the literal remain. */
	assert_int_equal(
		trib_imap_parser_feed(parser, input + body, 0, &consumed),
		TRIB_IMAP_PARSE_LITERAL);
	assert_int_equal(consumed, 0);
	assert_int_equal(trib_imap_parser_feed(parser, input + body, len - body,
					       &consumed),
			 TRIB_IMAP_PARSE_LITERAL);
	assert_int_equal(consumed, 0);
	trib_imap_parser_literal_skip(parser, 2);
	assert_int_equal(lit->remaining, 3);
	assert_int_equal(trib_imap_parser_feed(parser, input + body + 2,
					       len - body - 2, &consumed),
			 TRIB_IMAP_PARSE_LITERAL);
	assert_int_equal(consumed, 0);
	trib_imap_parser_literal_skip(parser, 3);
	assert_int_equal(trib_imap_parser_feed(parser, input + body + 5,
					       len - body - 5, &consumed),
			 TRIB_IMAP_PARSE_RESPONSE);
	assert_int_equal(consumed, len - body - 5);
	assert_null(trib_imap_parser_literal(parser));
	resp = trib_imap_parser_response(parser);
	assert_non_null(resp);
	assert_string_equal(resp->name, "FETCH");
	assert_int_equal(resp->arg_count, 1);
	assert_true(trib_imap_arg_get_list(&resp->args[0], &args, &count));
	assert_int_equal(count, 4);
	assert_int_equal(args[3].type, TRIB_IMAP_ARG_LITERAL_STREAM);
	assert_int_equal(args[3].u.literal_size, 5);

	/* The next feed starts a new response. */
	assert_int_equal(trib_imap_parser_feed(parser, input, 0, &consumed),
			 TRIB_IMAP_PARSE_NEED_MORE);
	assert_null(trib_imap_parser_response(parser));

	/* Skipping past the literal is a caller bug: the parser fails. */
	assert_int_equal(trib_imap_parser_feed(parser, input, len, &body),
			 TRIB_IMAP_PARSE_LITERAL);
	trib_imap_parser_literal_skip(parser, 6);
	assert_int_equal(trib_imap_parser_feed(parser, input + body, len - body,
					       &consumed),
			 TRIB_IMAP_PARSE_ERROR);
	assert_non_null(strstr(trib_imap_parser_error(parser), "literal_skip"));
	trib_imap_parser_destroy(&parser);
	assert_null(parser);
	trib_imap_parser_destroy(&parser);
}

/* ---- several responses in one buffer ---- */

static void test_select_back_to_back(void **state)
{
	static const struct parse_case cases[] = {
		CASE("* FLAGS (\\Answered \\Flagged \\Deleted \\Seen "
		     "\\Draft)\r\n"
		     "* OK [PERMANENTFLAGS (\\Answered \\Flagged \\Deleted "
		     "\\Seen \\Draft \\*)] Flags permitted.\r\n"
		     "* 5 EXISTS\r\n"
		     "* 0 RECENT\r\n"
		     "* OK [UIDVALIDITY 1700000000] UIDs valid\r\n"
		     "* OK [UIDNEXT 6] Predicted next UID\r\n"
		     "* OK [HIGHESTMODSEQ 12] Highest\r\n"
		     "A3 OK [READ-WRITE] Select completed (0.001 + 0.000 "
		     "secs).\r\n",
		     "* FLAGS (\\Answered \\Flagged \\Deleted \\Seen \\Draft)\n"
		     "* OK [PERMANENTFLAGS (\\Answered \\Flagged \\Deleted "
		     "\\Seen \\Draft \\*)] \"Flags permitted.\"\n"
		     "* 5 EXISTS\n"
		     "* 0 RECENT\n"
		     "* OK [UIDVALIDITY 1700000000] \"UIDs valid\"\n"
		     "* OK [UIDNEXT 6] \"Predicted next UID\"\n"
		     "* OK [HIGHESTMODSEQ 12] \"Highest\"\n"
		     "A3 OK [READ-WRITE] \"Select completed (0.001 + 0.000 "
		     "secs).\"\n"),
	};

	(void)state;
	CHECK_CASES(cases);
}

static const struct {
	const struct parse_case *cases;
	size_t count;
} all_tables[] = {
#define TABLE(t)                                                               \
	{                                                                      \
		t, TRIB_N_ELEMENTS(t)                                          \
	}
	TABLE(tagged_cases),	   TABLE(untagged_status_cases),
	TABLE(code_cases),	   TABLE(capability_cases),
	TABLE(continuation_cases), TABLE(mailbox_data_cases),
	TABLE(list_cases),	   TABLE(namespace_cases),
	TABLE(quoted_cases),	   TABLE(fetch_cases),
#undef TABLE
};

/* Every case above, back to back in one buffer. */
static void test_all_back_to_back(void **state)
{
	struct sbuf input = { 0 }, expect = { 0 }, sink = { 0 };
	size_t i, j;

	(void)state;
	for (i = 0; i < TRIB_N_ELEMENTS(all_tables); i++) {
		for (j = 0; j < all_tables[i].count; j++) {
			const struct parse_case *c = &all_tables[i].cases[j];

			sb_add(&input, c->input, c->len);
			sb_adds(&expect, c->expect);
			sb_add(&sink, c->sink, c->sink_len);
		}
	}
	check_parse_limits(input.data, input.len, NULL, expect.data,
			   sb_str(&sink), sink.len);
	sb_free(&input);
	sb_free(&expect);
	sb_free(&sink);
}

/* Tens of thousands of FETCH responses: linear, and each one complete. */
static void test_many_fetches(void **state)
{
	struct trib_imap_parser *parser = trib_imap_parser_create(NULL);
	struct sbuf input = { 0 };
	uint32_t i, n = 50000, seen = 0;
	size_t pos = 0, consumed;

	(void)state;
	for (i = 1; i <= n; i++)
		sb_printf(&input,
			  "* %u FETCH (UID %u FLAGS (\\Seen $Junk) "
			  "RFC822.SIZE 1234 INTERNALDATE \"17-Jul-1996 "
			  "02:44:25 -0700\" MODSEQ (%u))\r\n",
			  i, i + 1000, i);
	while (pos < input.len) {
		const struct trib_imap_response *resp;
		uint32_t uid;

		assert_int_equal(
			trib_imap_parser_feed(
				parser, (const unsigned char *)input.data + pos,
				input.len - pos, &consumed),
			TRIB_IMAP_PARSE_RESPONSE);
		pos += consumed;
		resp = trib_imap_parser_response(parser);
		seen++;
		assert_int_equal(resp->number, seen);
		assert_true(trib_imap_arg_get_u32(&resp->args[0].u.list.args[1],
						  &uid));
		assert_int_equal(uid, seen + 1000);
	}
	assert_int_equal(seen, n);
	trib_imap_parser_destroy(&parser);
	sb_free(&input);
}

/* Deep nesting, a long arg list and a long string with the default
 * limits, then small responses again (the buffers shrink back). */
static void test_deep_and_large(void **state)
{
	struct sbuf input = { 0 }, expect = { 0 };
	unsigned int i;

	(void)state;
	sb_adds(&input, "* X ((((((((((((((((a))))))))))))))))\r\n");
	sb_adds(&expect, "* X ((((((((((((((((a))))))))))))))))\n");
	sb_adds(&input, "* SEARCH");
	sb_adds(&expect, "* SEARCH");
	for (i = 1; i <= 3000; i++) {
		sb_printf(&input, " %u", i);
		sb_printf(&expect, " %u", i);
	}
	sb_adds(&input, "\r\n* X (");
	sb_adds(&expect, "\n* X (");
	for (i = 1; i <= 3000; i++) {
		sb_printf(&input, "%s(%u)", i > 1 ? " " : "", i);
		sb_printf(&expect, "%s(%u)", i > 1 ? " " : "", i);
	}
	sb_adds(&input, ")\r\n* X \"");
	sb_adds(&expect, ")\n* X \"");
	for (i = 0; i < 7000; i++) {
		sb_adds(&input, "0123456789");
		sb_adds(&expect, "0123456789");
	}
	sb_adds(&input, "\"\r\n* X ((1) (2))\r\n* 1 EXISTS\r\n");
	sb_adds(&expect, "\"\n* X ((1) (2))\n* 1 EXISTS\n");
	check_parse_limits(input.data, input.len, NULL, expect.data, "", 0);
	sb_free(&input);
	sb_free(&expect);
}

/* ---- malformed input ---- */

static const struct error_case framing_errors[] = {
	ERR(" OK hello\r\n", "missing tag"),
	ERR("\r\n", "missing tag"),
	ERR("A(1 OK x\r\n", "in tag"),
	ERR("A1\r\n", "tagged response without status"),
	ERR("*OK hello\r\n", "expected a space after '*'"),
	ERR("* \r\n", "missing response name"),
	ERR("* (x)\r\n", "unexpected '(' in response name"),
	ERR("+x\r\n", "expected a space after '+'"),
	ERR("* 4294967296 EXISTS\r\n", "bad message number"),
	ERR("* 3x EXISTS\r\n", "bad message number"),
	ERR("* 3\r\n", "missing response name after message number"),
	ERR("* 3(x)\r\n", "unexpected '(' in message number"),
	ERR("* 3  EXISTS\r\n", "missing response name"),
	ERR("*\0 OK\r\n", "NUL byte in line"),
	ERR("*\n", "line not terminated by CRLF"),
	ERR("* SEARCH(1)\r\n", "unexpected '(' in response name"),
	ERR_AFTER("* 1 EXISTS\r\n* FLAGS (\\Seen\r\n", "* 1 EXISTS\n",
		  "unbalanced '('"),
};

static void test_error_framing(void **state)
{
	(void)state;
	CHECK_ERRORS(framing_errors);
}

static const struct error_case status_errors[] = {
	ERR("A1 FETCH (UID 1)\r\n", "tagged response with data name FETCH"),
	ERR("A1 3 EXISTS\r\n", "invalid status word"),
	ERR("A1 BYE bye\r\n", "tagged response with status BYE"),
	ERR("A1 PREAUTH x\r\n", "tagged response with status PREAUTH"),
	ERR("A1 OKAY done\r\n", "tagged response with data name OKAY"),
	ERR("A1 x-gm-ext.1_a x\r\n",
	    "tagged response with data name X-GM-EXT.1_A"),
	ERR("A1 OK-\xff\r\n", "invalid status word"),
	ERR("* OK [A\"b] x\r\n", "unexpected '\"' in response code"),
	ERR("A1 (OK) done\r\n", "unexpected '(' in status word"),
	ERR("A1  OK\r\n", "missing status word"),
	ERR("A1 OK(x)\r\n", "unexpected '(' in status word"),
	ERR("* OK\x01 x\r\n", "unexpected byte 0x01 in status word"),
	ERR("A1 \xff\r\n", "invalid status word"),
	ERR("* OK [ALERT hi\r\n", "unterminated response code"),
	ERR("* OK [ALERT\r\n", "unterminated response code"),
	ERR("* OK []\r\n", "empty response code"),
	ERR("* OK [(x)] y\r\n", "unexpected '(' in response code"),
	ERR("* OK [PERMANENTFLAGS (\\Seen] x\r\n",
	    "unbalanced '(' in response code"),
	ERR("* OK [PERMANENTFLAGS \\Seen)] x\r\n", "unbalanced ')'"),
};

static void test_error_status(void **state)
{
	(void)state;
	CHECK_ERRORS(status_errors);
}

static const struct error_case token_errors[] = {
	ERR("* FLAGS (\\Seen))\r\n", "unbalanced ')'"),
	ERR("* SEARCH )\r\n", "unbalanced ')'"),
	ERR("* FLAGS ((\\Seen)\r\n", "unbalanced '(': 1 list not closed"),
	ERR("* X ((\r\n", "unbalanced '(': 2 lists not closed"),
	ERR("* LIST () \"/\" \"INBOX\r\n", "unterminated quoted string"),
	ERR("* LIST () \"/\" \"INBOX\\\r\n", "unterminated quoted string"),
	ERR("* 1 FETCH (BODY[HEADER\r\n", "unterminated '[' in atom"),
	ERR("* SEARCH foo{5}\r\nhello\r\n", "unexpected '{' after atom"),
	ERR("* SEARCH 1\x01\r\n", "unexpected byte 0x01 in args"),
	ERR("* SEARCH \x7f\r\n", "unexpected byte 0x7f in args"),
};

static void test_error_tokens(void **state)
{
	(void)state;
	CHECK_ERRORS(token_errors);
}

static const struct error_case literal_errors[] = {
	ERR("* LIST () \"/\" {abc}\r\nabc\r\n", "bad literal size"),
	ERR("* LIST () \"/\" {}\r\n\r\n", "bad literal size"),
	ERR("* LIST () \"/\" {5a}\r\n", "bad literal size"),
	ERR("* LIST () \"/\" {+}\r\n", "bad literal size"),
	ERR("* LIST () \"/\" {5++}\r\n", "bad literal size"),
	ERR("* LIST () \"/\" {-1}\r\n", "bad literal size"),
	ERR("* LIST () \"/\" {99999999999999999999}\r\n", "overflows"),
	ERR("* 1 FETCH (BODY[] {18446744073709551616}\r\n", "overflows"),
	ERR("* LIST () \"/\" {5}abcde\r\n", "literal {5} not followed by CRLF"),
	ERR("* LIST () \"/\" {5}\nabcde\r\n", "not followed by CRLF"),
	ERR("* LIST () \"/\" {5}\rabcde\r\n", "not followed by CRLF"),
	ERR("* LIST () \"/\" {5} \r\nabcde\r\n", "not followed by CRLF"),
	ERR("* LIST () \"/\" ~{5\r\n", "bad literal size"),
};

static void test_error_literals(void **state)
{
	(void)state;
	CHECK_ERRORS(literal_errors);
}

static const struct error_case line_errors[] = {
	ERR("* OK hel\0lo\r\n", "NUL byte in line"),
	ERR("* SEARCH 1\0 2\r\n", "NUL byte in line"),
	ERR("* SEARCH 1 \0\r\n", "NUL byte in line"),
	ERR("A\0 OK\r\n", "NUL byte in line"),
	ERR("* LIST () \"/\" \"a\0b\"\r\n", "NUL byte in line"),
	ERR("* LIST () \"/\" \"a\\\0b\"\r\n", "NUL byte in line"),
	ERR("* 1 FETCH (BODY[\0])\r\n", "NUL byte in line"),
	ERR("\0\r\n", "NUL byte in line"),
	ERR("+ a\0\r\n", "NUL byte in line"),
	/* Strict CRLF. */
	ERR("* OK hello\n", "line not terminated by CRLF"),
	ERR("A1 OK\n", "line not terminated by CRLF"),
	ERR("A1\n", "line not terminated by CRLF"),
	ERR("* 1 EXISTS\n", "line not terminated by CRLF"),
	ERR("* SEARCH 1 2\n", "line not terminated by CRLF"),
	ERR("* SEARCH\n", "line not terminated by CRLF"),
	ERR("* SEARCH \n", "line not terminated by CRLF"),
	ERR("+\n", "line not terminated by CRLF"),
	ERR("* OK [ALERT]\n", "line not terminated by CRLF"),
	ERR("* OK hi\rX\n", "line not terminated by CRLF"),
	ERR("* 1 FETCH (BODY[\n])\r\n", "line not terminated by CRLF"),
	ERR("\n", "missing tag"),
	ERR_AFTER("* 1 EXISTS\r\n* 2 EXISTS\n", "* 1 EXISTS\n",
		  "line not terminated by CRLF"),
};

static void test_error_line(void **state)
{
	(void)state;
	CHECK_ERRORS(line_errors);
}

/* ---- limits ---- */

static void small_limits(struct trib_imap_limits *limits)
{
	trib_imap_limits_default(limits);
	limits->max_line = 64;
	limits->max_inline_literal = 16;
	limits->max_literal = 1000;
	limits->max_depth = 3;
	limits->max_items = 8;
}

static void test_limit_line(void **state)
{
	/* 64 bytes exactly, then 65. */
	static const char ok[] = "* CAPABILITY IMAP4rev1 SASL-IR "
				 "LOGIN-REFERRALS ID ENABLE XYZ12\r\n";
	static const char over[] = "* CAPABILITY IMAP4rev1 SASL-IR "
				   "LOGIN-REFERRALS ID ENABLE XYZ123\r\n";
	static const char over_inline[] =
		"* LIST () \"/\" {16}\r\n0123456789abcdef "
		"\"0123456789abcdefghijklmn\"\r\n";
	static const char inline_over[] =
		"* LIST (\\HasNoChildren \\Sent) \"/\" \"0123456789\" {16}\r\n";
	/* A streamed body does not count. */
	static const char body[] = "* 1 FETCH (BODY[] {100}\r\n"
				   "0123456789012345678901234567890123456789"
				   "0123456789012345678901234567890123456789"
				   "01234567890123456789 UID 1234567890)\r\n";
	struct trib_imap_limits limits;
	struct sbuf out = { 0 }, sink = { 0 };

	(void)state;
	small_limits(&limits);
	assert_int_equal(sizeof(ok) - 1, 64);
	CHECK_OK(ok, &limits,
		 "* CAPABILITY IMAP4rev1 SASL-IR LOGIN-REFERRALS ID ENABLE "
		 "XYZ12\n");
	CHECK_ERR(over, &limits, "response longer than 64 bytes");
	CHECK_ERR(over_inline, &limits, "response longer than 64 bytes");
	CHECK_ERR(inline_over, &limits,
		  "inline literal of 16 bytes makes the response "
		  "longer than 64 bytes");
	drive(body, sizeof(body) - 1, sizeof(body) - 1, 1, &limits, &out,
	      &sink);
	assert_int_equal(sink.len, 100);
	assert_non_null(
		strstr(sb_str(&out),
		       "* 1 FETCH (BODY[] <stream 100> UID 1234567890)"));
	sb_free(&out);
	sb_free(&sink);
}

static void test_limit_literals(void **state)
{
	static const unsigned char inline_over[] = "* LIST () \"/\" {17}\r\n";
	static const unsigned char body_over[] = "* 1 FETCH (BODY[] {1001}\r\n";
	static const unsigned char body_max[] = "* 1 FETCH (BODY[] {1000}\r\n";
	static const unsigned char huge[] =
		"* 1 FETCH (BODY[] {5000000000}\r\n";
	struct trib_imap_limits limits;
	struct trib_imap_parser *parser;
	size_t consumed;

	(void)state;
	small_limits(&limits);
	CHECK_OK("* LIST () \"/\" {16}\r\n0123456789abcdef\r\n", &limits,
		 "* LIST () \"/\" {16}\"0123456789abcdef\"\n");

	/* Only the {N}\r\n header is fed: the error comes before any byte
	 * of the literal. */
	parser = trib_imap_parser_create(&limits);
	assert_int_equal(trib_imap_parser_feed(parser, inline_over,
					       sizeof(inline_over) - 1,
					       &consumed),
			 TRIB_IMAP_PARSE_ERROR);
	assert_string_equal(
		trib_imap_parser_error(parser),
		"inline literal size 17 over the limit of 16 bytes");
	trib_imap_parser_destroy(&parser);

	parser = trib_imap_parser_create(&limits);
	assert_int_equal(trib_imap_parser_feed(parser, body_over,
					       sizeof(body_over) - 1,
					       &consumed),
			 TRIB_IMAP_PARSE_ERROR);
	assert_string_equal(trib_imap_parser_error(parser),
			    "literal size 1001 over the limit of 1000 bytes");
	trib_imap_parser_destroy(&parser);

	parser = trib_imap_parser_create(&limits);
	assert_int_equal(trib_imap_parser_feed(parser, body_max,
					       sizeof(body_max) - 1, &consumed),
			 TRIB_IMAP_PARSE_LITERAL);
	assert_int_equal(consumed, sizeof(body_max) - 1);
	trib_imap_parser_destroy(&parser);

	/* The default limit, and the check made at "}" already. */
	parser = trib_imap_parser_create(NULL);
	assert_int_equal(trib_imap_parser_feed(parser, huge, sizeof(huge) - 3,
					       &consumed),
			 TRIB_IMAP_PARSE_ERROR);
	assert_string_equal(trib_imap_parser_error(parser),
			    "literal size 5000000000 over the limit of "
			    "1073741824 bytes");
	trib_imap_parser_destroy(&parser);
}

static void test_limit_depth(void **state)
{
	static const char ok[] = "* X (((a)) (b))\r\n";
	static const char over[] = "* X (((a) ((b))))\r\n";
	static const char code_over[] = "* OK [X ((((a))))] y\r\n";
	struct trib_imap_limits limits;

	(void)state;
	small_limits(&limits);
	CHECK_OK(ok, &limits, "* X (((a)) (b))\n");
	CHECK_ERR(over, &limits, "parenthesis nesting deeper than 3 levels");
	CHECK_ERR(code_over, &limits,
		  "parenthesis nesting deeper than 3 levels");
	limits.max_depth = 0;
	CHECK_OK("* SEARCH 1\r\n", &limits, "* SEARCH 1\n");
	CHECK_ERR("* FLAGS ()\r\n", &limits, "nesting deeper than 0 levels");
}

static void test_limit_items(void **state)
{
	/* Lists count as args, so do the args of a code. */
	static const char ok[] = "* X (1 2) 3 (4 (5))\r\n";
	static const char over[] = "* X (1 2) 3 (4 (5)) 6\r\n";
	static const char code_over[] = "* OK [X 1 2 3 4 5 6 7 8 9] y\r\n";
	static const char body_over[] = "* 1 FETCH (A 1 B 2 C 3 BODY[] {3}\r\n";
	struct trib_imap_limits limits;

	(void)state;
	small_limits(&limits);
	CHECK_OK(ok, &limits, "* X (1 2) 3 (4 (5))\n");
	CHECK_ERR(over, &limits, "more than 8 args in one response");
	CHECK_ERR(code_over, &limits, "more than 8 args in one response");
	CHECK_ERR(body_over, &limits, "more than 8 args in one response");
	/* The count starts again with each response. */
	CHECK_OK("* SEARCH 1 2 3 4 5 6 7 8\r\n* SEARCH 1 2 3 4 5 6 7 8\r\n",
		 &limits,
		 "* SEARCH 1 2 3 4 5 6 7 8\n* SEARCH 1 2 3 4 5 6 7 8\n");
}

/* ---- accessors ---- */

static void test_limits_default(void **state)
{
	struct trib_imap_limits limits;

	(void)state;
	trib_imap_limits_default(&limits);
	assert_int_equal(limits.max_line, 1024 * 1024);
	assert_int_equal(limits.max_inline_literal, 64 * 1024);
	assert_int_equal(limits.max_literal, 1024 * 1024 * 1024);
	assert_int_equal(limits.max_depth, 16);
	assert_int_equal(limits.max_items, 100000);
}

static void test_accessor_numbers(void **state)
{
	static const char input[] =
		"* X 0 4294967295 4294967296 18446744073709551615 "
		"18446744073709551616 +1 -1 12a 007 \"5\" NIL (1)\r\n";
	static const struct trib_imap_arg empty = {
		.type = TRIB_IMAP_ARG_ATOM,
		.u.s = { "", 0 },
	};
	const struct trib_imap_arg *a;
	struct one one;
	uint32_t u32;
	uint64_t u64;
	unsigned int i;

	(void)state;
	one_parse(&one, input);
	a = one.resp->args;
	assert_int_equal(one.resp->arg_count, 12);
	assert_true(trib_imap_arg_get_u32(&a[0], &u32));
	assert_int_equal(u32, 0);
	assert_true(trib_imap_arg_get_u32(&a[1], &u32));
	assert_int_equal(u32, UINT32_MAX);
	assert_false(trib_imap_arg_get_u32(&a[2], &u32));
	assert_true(trib_imap_arg_get_u64(&a[2], &u64));
	assert_int_equal(u64, 4294967296ULL);
	assert_true(trib_imap_arg_get_u64(&a[3], &u64));
	assert_true(u64 == UINT64_MAX);
	assert_false(trib_imap_arg_get_u64(&a[4], &u64));
	for (i = 5; i <= 7; i++) {
		assert_false(trib_imap_arg_get_u32(&a[i], &u32));
		assert_false(trib_imap_arg_get_u64(&a[i], &u64));
	}
	assert_true(trib_imap_arg_get_u32(&a[8], &u32));
	assert_int_equal(u32, 7);
	for (i = 9; i <= 11; i++) {
		assert_false(trib_imap_arg_get_u32(&a[i], &u32));
		assert_false(trib_imap_arg_get_u64(&a[i], &u64));
	}
	assert_false(trib_imap_arg_get_u32(&empty, &u32));
	assert_false(trib_imap_arg_get_u64(&empty, &u64));
	assert_false(trib_imap_arg_get_u32(NULL, &u32));
	one_free(&one);
}

/* Response codes read the way the client reads them. */
static void test_accessor_codes(void **state)
{
	const struct trib_imap_arg *flags;
	unsigned int count;
	struct one one;
	uint32_t u32;
	uint64_t u64;

	(void)state;
	one_parse(&one, "* OK [UIDVALIDITY 3857529045] UIDs valid\r\n");
	assert_int_equal(one.resp->kind, TRIB_IMAP_RESP_UNTAGGED);
	assert_int_equal(one.resp->status, TRIB_IMAP_STATUS_OK);
	assert_string_equal(one.resp->code, "UIDVALIDITY");
	assert_int_equal(one.resp->code_arg_count, 1);
	assert_true(trib_imap_arg_get_u32(&one.resp->code_args[0], &u32));
	assert_int_equal(u32, 3857529045U);
	assert_string_equal(one.resp->text, "UIDs valid");
	one_free(&one);

	one_parse(&one, "* OK [HIGHESTMODSEQ 715194045007]\r\n");
	assert_true(trib_imap_arg_get_u64(&one.resp->code_args[0], &u64));
	assert_true(u64 == 715194045007ULL);
	assert_false(trib_imap_arg_get_u32(&one.resp->code_args[0], &u32));
	assert_string_equal(one.resp->text, "");
	one_free(&one);

	one_parse(&one, "A1 NO [PERMANENTFLAGS (\\Seen \\*)] x\r\n");
	assert_int_equal(one.resp->kind, TRIB_IMAP_RESP_TAGGED);
	assert_string_equal(one.resp->tag, "A1");
	assert_int_equal(one.resp->status, TRIB_IMAP_STATUS_NO);
	assert_true(trib_imap_arg_get_list(&one.resp->code_args[0], &flags,
					   &count));
	assert_int_equal(count, 2);
	assert_true(trib_imap_arg_atom_equals(&flags[0], "\\seen"));
	assert_true(trib_imap_arg_atom_equals(&flags[1], "\\*"));
	one_free(&one);

	one_parse(&one, "* 3 EXPUNGE\r\n");
	assert_true(one.resp->has_number);
	assert_int_equal(one.resp->number, 3);
	assert_string_equal(one.resp->name, "EXPUNGE");
	assert_int_equal(one.resp->status, TRIB_IMAP_STATUS_NONE);
	assert_null(one.resp->args);
	assert_int_equal(one.resp->arg_count, 0);
	one_free(&one);
}

static void test_accessor_strings(void **state)
{
	static const unsigned char input[] =
		"* X Abc \"q s\" NIL (a b) {3}\r\nx\0y ()\r\n* 1 FETCH "
		"(BODY[] {0}\r\n)\r\n";
	struct trib_imap_parser *parser = trib_imap_parser_create(NULL);
	const struct trib_imap_response *resp;
	const struct trib_imap_arg *a, *list;
	const char *str;
	unsigned int count;
	size_t consumed, pos;

	(void)state;
	assert_int_equal(trib_imap_parser_feed(parser, input, sizeof(input) - 1,
					       &consumed),
			 TRIB_IMAP_PARSE_RESPONSE);
	resp = trib_imap_parser_response(parser);
	a = resp->args;
	assert_int_equal(resp->arg_count, 6);
	assert_true(trib_imap_arg_atom_equals(&a[0], "ABC"));
	assert_true(trib_imap_arg_atom_equals(&a[0], "abc"));
	assert_false(trib_imap_arg_atom_equals(&a[0], "ab"));
	assert_false(trib_imap_arg_atom_equals(&a[0], "abcd"));
	assert_false(trib_imap_arg_atom_equals(&a[1], "q s"));
	assert_false(trib_imap_arg_atom_equals(&a[2], "NIL"));
	assert_false(trib_imap_arg_atom_equals(NULL, "NIL"));
	assert_true(trib_imap_arg_get_astring(&a[0], &str));
	assert_string_equal(str, "Abc");
	assert_true(trib_imap_arg_get_astring(&a[1], &str));
	assert_string_equal(str, "q s");
	assert_false(trib_imap_arg_get_astring(&a[2], &str));
	assert_true(trib_imap_arg_get_nstring(&a[2], &str));
	assert_null(str);
	assert_true(trib_imap_arg_get_nstring(&a[1], &str));
	assert_string_equal(str, "q s");
	assert_false(trib_imap_arg_get_astring(&a[3], &str));
	assert_false(trib_imap_arg_get_nstring(&a[3], &str));
	assert_true(trib_imap_arg_get_list(&a[3], &list, &count));
	assert_int_equal(count, 2);
	assert_true(trib_imap_arg_atom_equals(&list[1], "B"));
	assert_false(trib_imap_arg_get_list(&a[2], &list, &count));
	assert_false(trib_imap_arg_get_list(&a[0], &list, &count));
	assert_false(trib_imap_arg_get_list(NULL, &list, &count));
	assert_true(trib_imap_arg_get_astring(&a[4], &str));
	assert_int_equal(a[4].u.s.len, 3);
	assert_memory_equal(str, "x\0y", 4);
	assert_true(trib_imap_arg_get_list(&a[5], &list, &count));
	assert_int_equal(count, 0);
	assert_false(trib_imap_arg_get_astring(NULL, &str));
	assert_false(trib_imap_arg_get_nstring(NULL, &str));

	/* A streamed literal is no string. */
	pos = consumed;
	assert_int_equal(trib_imap_parser_feed(parser, input + pos,
					       sizeof(input) - 1 - pos,
					       &consumed),
			 TRIB_IMAP_PARSE_LITERAL);
	pos += consumed;
	trib_imap_parser_literal_skip(parser, 0);
	assert_int_equal(trib_imap_parser_feed(parser, input + pos,
					       sizeof(input) - 1 - pos,
					       &consumed),
			 TRIB_IMAP_PARSE_RESPONSE);
	assert_int_equal(pos + consumed, sizeof(input) - 1);
	resp = trib_imap_parser_response(parser);
	assert_true(trib_imap_arg_get_list(&resp->args[0], &list, &count));
	assert_int_equal(count, 2);
	assert_int_equal(list[1].type, TRIB_IMAP_ARG_LITERAL_STREAM);
	assert_false(trib_imap_arg_get_astring(&list[1], &str));
	assert_false(trib_imap_arg_get_nstring(&list[1], &str));
	assert_false(trib_imap_arg_get_list(&list[1], &a, &count));
	assert_false(trib_imap_arg_atom_equals(&list[1], "BODY[]"));
	trib_imap_parser_destroy(&parser);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_tagged),
		cmocka_unit_test(test_untagged_status),
		cmocka_unit_test(test_response_codes),
		cmocka_unit_test(test_capability_enabled),
		cmocka_unit_test(test_continuation),
		cmocka_unit_test(test_mailbox_data),
		cmocka_unit_test(test_list),
		cmocka_unit_test(test_namespace),
		cmocka_unit_test(test_quoted),
		cmocka_unit_test(test_fetch),
		cmocka_unit_test(test_fetch_every_split),
		cmocka_unit_test(test_literal_api),
		cmocka_unit_test(test_select_back_to_back),
		cmocka_unit_test(test_all_back_to_back),
		cmocka_unit_test(test_many_fetches),
		cmocka_unit_test(test_deep_and_large),
		cmocka_unit_test(test_error_framing),
		cmocka_unit_test(test_error_status),
		cmocka_unit_test(test_error_tokens),
		cmocka_unit_test(test_error_literals),
		cmocka_unit_test(test_error_line),
		cmocka_unit_test(test_limit_line),
		cmocka_unit_test(test_limit_literals),
		cmocka_unit_test(test_limit_depth),
		cmocka_unit_test(test_limit_items),
		cmocka_unit_test(test_limits_default),
		cmocka_unit_test(test_accessor_numbers),
		cmocka_unit_test(test_accessor_codes),
		cmocka_unit_test(test_accessor_strings),
	};

	return cmocka_run_group_tests(tests, NULL, NULL);
}
