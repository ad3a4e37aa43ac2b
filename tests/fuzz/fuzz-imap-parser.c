/* fuzz-imap-parser.c: libFuzzer target for the IMAP response parser.
 *
 * The first input byte picks the limits and how the rest is cut into
 * reads, so split points are fuzzed too (the seeds in corpus/ are server
 * output behind one such byte). The input is parsed twice: in one read,
 * and in reads of pseudo-random sizes. Every response is walked with the
 * accessors and folded into a digest; both runs must agree, and the API's
 * promises (consumed bytes, sticky errors, NUL-terminated strings) must
 * hold. Any breach aborts. */

#include "imap-parser.h"

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

#define CHECK(cond)                                                            \
	do {                                                                   \
		if (!(cond))                                                   \
			abort();                                               \
	} while (0)

/* FNV-1a */
static void mix(uint64_t *hash, const void *data, size_t size)
{
	const unsigned char *p = data;
	size_t i;

	for (i = 0; i < size; i++) {
		*hash ^= p[i];
		*hash *= 0x100000001b3ULL;
	}
}

static void mix_u64(uint64_t *hash, uint64_t value)
{
	mix(hash, &value, sizeof(value));
}

static void mix_str(uint64_t *hash, const char *str)
{
	if (str == NULL) {
		mix_u64(hash, 0xdeadULL);
		return;
	}
	mix(hash, str, strlen(str) + 1);
}

static void walk_args(uint64_t *hash, const struct trib_imap_arg *args,
		      unsigned int count, unsigned int depth,
		      unsigned int max_depth);

static void walk_strings(uint64_t *hash, const struct trib_imap_arg *arg)
{
	const char *str;
	bool is_str = arg->type == TRIB_IMAP_ARG_ATOM ||
		      arg->type == TRIB_IMAP_ARG_STRING ||
		      arg->type == TRIB_IMAP_ARG_LITERAL;

	CHECK(trib_imap_arg_get_astring(arg, &str) == is_str);
	if (is_str) {
		CHECK(str == arg->u.s.str && str[arg->u.s.len] == '\0');
		if (arg->type != TRIB_IMAP_ARG_LITERAL)
			CHECK(strlen(str) == arg->u.s.len);
		mix(hash, str, arg->u.s.len);
	}
	if (trib_imap_arg_get_nstring(arg, &str))
		CHECK(is_str ||
		      (arg->type == TRIB_IMAP_ARG_NIL && str == NULL));
	else
		CHECK(!is_str && arg->type != TRIB_IMAP_ARG_NIL);
}

static void walk_arg(uint64_t *hash, const struct trib_imap_arg *arg,
		     unsigned int depth, unsigned int max_depth)
{
	const struct trib_imap_arg *list;
	unsigned int count;
	uint32_t u32;
	uint64_t u64;

	mix_u64(hash, arg->type);
	if (trib_imap_arg_get_u32(arg, &u32))
		mix_u64(hash, u32);
	if (trib_imap_arg_get_u64(arg, &u64)) {
		CHECK(arg->type == TRIB_IMAP_ARG_ATOM);
		mix_u64(hash, u64);
	}
	mix_u64(hash, trib_imap_arg_atom_equals(arg, "BODY[]"));
	CHECK(!trib_imap_arg_atom_equals(arg, "NIL"));
	walk_strings(hash, arg);
	if (arg->type == TRIB_IMAP_ARG_LITERAL_STREAM)
		mix_u64(hash, arg->u.literal_size);
	if (trib_imap_arg_get_list(arg, &list, &count)) {
		CHECK(depth < max_depth);
		walk_args(hash, list, count, depth + 1, max_depth);
	} else {
		CHECK(arg->type != TRIB_IMAP_ARG_LIST);
	}
}

static void walk_args(uint64_t *hash, const struct trib_imap_arg *args,
		      unsigned int count, unsigned int depth,
		      unsigned int max_depth)
{
	unsigned int i;

	mix_u64(hash, count);
	CHECK(count == 0 || args != NULL);
	for (i = 0; i < count; i++)
		walk_arg(hash, &args[i], depth, max_depth);
}

static void walk_response(uint64_t *hash, const struct trib_imap_response *r,
			  const struct trib_imap_limits *limits)
{
	CHECK(r != NULL);
	mix_u64(hash, r->kind);
	mix_u64(hash, r->status);
	mix_str(hash, r->tag);
	CHECK((r->kind == TRIB_IMAP_RESP_TAGGED) == (r->tag != NULL));
	mix_u64(hash, r->has_number ? r->number : 0xffffffffffULL);
	mix_str(hash, r->name);
	mix_str(hash, r->code);
	mix_str(hash, r->text);
	CHECK((r->kind == TRIB_IMAP_RESP_CONTINUE) == (r->name == NULL));
	CHECK((r->status != TRIB_IMAP_STATUS_NONE ||
	       r->kind == TRIB_IMAP_RESP_CONTINUE) == (r->text != NULL));
	walk_args(hash, r->args, r->arg_count, 0, limits->max_depth);
	walk_args(hash, r->code_args, r->code_arg_count, 0, limits->max_depth);
}

static void walk_literal(uint64_t *hash, const struct trib_imap_literal *lit,
			 const struct trib_imap_limits *limits)
{
	CHECK(lit != NULL && lit->remaining == lit->size);
	CHECK(lit->size <= limits->max_literal);
	CHECK(lit->prev_count > 0 &&
	      lit->prev_args[lit->prev_count - 1].u.s.str == lit->item);
	mix_u64(hash, lit->seq);
	mix_str(hash, lit->item);
	mix_u64(hash, lit->size);
	walk_args(hash, lit->prev_args, lit->prev_count, 1, limits->max_depth);
}

/* Read sizes from a small xorshift generator. */
struct reads {
	uint32_t state;
	size_t max;
};

static size_t reads_next(struct reads *reads)
{
	uint32_t x = reads->state;

	if (reads->max == 0)
		return SIZE_MAX;
	x ^= x << 13;
	x ^= x >> 17;
	x ^= x << 5;
	reads->state = x;
	return 1 + x % reads->max;
}

static void literal_step(struct trib_imap_parser *parser, uint64_t *hash,
			 const struct trib_imap_limits *limits, size_t avail,
			 size_t *pos, bool *in_literal)
{
	const struct trib_imap_literal *lit = trib_imap_parser_literal(parser);
	size_t n;

	CHECK(lit != NULL);
	if (!*in_literal)
		walk_literal(hash, lit, limits);
	*in_literal = true;
	n = lit->remaining < avail ? (size_t)lit->remaining : avail;
	*pos += n;
	trib_imap_parser_literal_skip(parser, n);
	if (lit->remaining == 0)
		*in_literal = false;
}

/* Parse all of data, cut into reads; the digest of what came out. */
static uint64_t run(const uint8_t *data, size_t size,
		    const struct trib_imap_limits *limits, struct reads *reads)
{
	struct trib_imap_parser *parser = trib_imap_parser_create(limits);
	uint64_t hash = 0xcbf29ce484222325ULL;
	size_t have = 0, pos = 0, consumed, step;
	bool in_literal = false;
	enum trib_imap_parse_result res;

	for (;;) {
		res = trib_imap_parser_feed(parser, data + pos, have - pos,
					    &consumed);
		CHECK(consumed <= have - pos);
		pos += consumed;
		if (res == TRIB_IMAP_PARSE_RESPONSE) {
			CHECK(trib_imap_parser_literal(parser) == NULL);
			walk_response(&hash, trib_imap_parser_response(parser),
				      limits);
			continue;
		}
		CHECK(trib_imap_parser_response(parser) == NULL);
		if (res == TRIB_IMAP_PARSE_ERROR)
			break;
		if (res == TRIB_IMAP_PARSE_LITERAL) {
			literal_step(parser, &hash, limits, have - pos, &pos,
				     &in_literal);
			if (!in_literal)
				continue;
		} else {
			CHECK(res == TRIB_IMAP_PARSE_NEED_MORE && pos == have);
		}
		if (have == size)
			break;
		step = reads_next(reads);
		have = size - have < step ? size : have + step;
	}
	if (res == TRIB_IMAP_PARSE_ERROR) {
		const char *error = trib_imap_parser_error(parser);

		CHECK(error != NULL && strchr(error, '\n') == NULL);
		mix_str(&hash, error);
		res = trib_imap_parser_feed(parser, data + pos, size - pos,
					    &consumed);
		CHECK(res == TRIB_IMAP_PARSE_ERROR && consumed == 0);
	}
	trib_imap_parser_destroy(&parser);
	CHECK(parser == NULL);
	return hash;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	struct trib_imap_limits limits;
	struct reads whole = { 0, 0 }, cut;
	uint8_t control;

	if (size == 0)
		return 0;
	control = data[0];
	data++;
	size--;

	trib_imap_limits_default(&limits);
	if ((control & 0x80) == 0) {
		limits.max_line = 256;
		limits.max_inline_literal = 32;
		limits.max_literal = 2048;
		limits.max_depth = 6;
		limits.max_items = 48;
	}
	/* Bits 0-3: reads of up to 1..16 bytes (1 = one byte at a time);
	 * bits 4-6 seed the generator. */
	cut.max = (size_t)(control & 0x0f) + 1;
	cut.state = 0x9e3779b9u ^ ((uint32_t)(control >> 4) * 0x85ebca6bu);
	CHECK(run(data, size, &limits, &whole) ==
	      run(data, size, &limits, &cut));
	return 0;
}
