/* imap-arg.c: typed accessors for parsed IMAP args, and the default
 * parser limits. The parser itself is in imap-parser.c. */

#include "imap-parser.h"

#include <stddef.h>

void trib_imap_limits_default(struct trib_imap_limits *limits_r)
{
	limits_r->max_line = 1024 * 1024;
	limits_r->max_inline_literal = 64 * 1024;
	limits_r->max_literal = 1024ULL * 1024 * 1024;
	limits_r->max_depth = 16;
	limits_r->max_items = 100000;
}

/* ASCII only: IMAP keywords are case-insensitive ASCII, whatever the
 * locale says. */
static unsigned char ascii_upper(unsigned char c)
{
	return c >= 'a' && c <= 'z' ? (unsigned char)(c - 'a' + 'A') : c;
}

bool trib_imap_arg_atom_equals(const struct trib_imap_arg *arg,
			       const char *atom)
{
	const unsigned char *str, *want = (const unsigned char *)atom;
	size_t i;

	if (arg == NULL || arg->type != TRIB_IMAP_ARG_ATOM)
		return false;
	str = (const unsigned char *)arg->u.s.str;
	for (i = 0; i < arg->u.s.len; i++) {
		if (want[i] == '\0' ||
		    ascii_upper(str[i]) != ascii_upper(want[i]))
			return false;
	}
	return want[i] == '\0';
}

/* An ATOM of 1*DIGIT whose value is at most max. */
static bool arg_get_number(const struct trib_imap_arg *arg, uint64_t max,
			   uint64_t *num_r)
{
	uint64_t num = 0;
	size_t i;

	if (arg == NULL || arg->type != TRIB_IMAP_ARG_ATOM || arg->u.s.len == 0)
		return false;
	for (i = 0; i < arg->u.s.len; i++) {
		unsigned char c = (unsigned char)arg->u.s.str[i];
		unsigned int digit;

		if (c < '0' || c > '9')
			return false;
		digit = c - '0';
		if (num > (max - digit) / 10)
			return false;
		num = num * 10 + digit;
	}
	*num_r = num;
	return true;
}

bool trib_imap_arg_get_u32(const struct trib_imap_arg *arg, uint32_t *num_r)
{
	uint64_t num;

	if (!arg_get_number(arg, UINT32_MAX, &num))
		return false;
	*num_r = (uint32_t)num;
	return true;
}

bool trib_imap_arg_get_u64(const struct trib_imap_arg *arg, uint64_t *num_r)
{
	return arg_get_number(arg, UINT64_MAX, num_r);
}

bool trib_imap_arg_get_astring(const struct trib_imap_arg *arg,
			       const char **str_r)
{
	if (arg == NULL)
		return false;
	switch (arg->type) {
	case TRIB_IMAP_ARG_ATOM:
	case TRIB_IMAP_ARG_STRING:
	case TRIB_IMAP_ARG_LITERAL:
		*str_r = arg->u.s.str;
		return true;
	case TRIB_IMAP_ARG_LITERAL_STREAM:
	case TRIB_IMAP_ARG_NIL:
	case TRIB_IMAP_ARG_LIST:
		break;
	}
	return false;
}

bool trib_imap_arg_get_nstring(const struct trib_imap_arg *arg,
			       const char **str_r)
{
	if (arg != NULL && arg->type == TRIB_IMAP_ARG_NIL) {
		*str_r = NULL;
		return true;
	}
	return trib_imap_arg_get_astring(arg, str_r);
}

bool trib_imap_arg_get_list(const struct trib_imap_arg *arg,
			    const struct trib_imap_arg **args_r,
			    unsigned int *count_r)
{
	if (arg == NULL || arg->type != TRIB_IMAP_ARG_LIST)
		return false;
	*args_r = arg->u.list.args;
	*count_r = arg->u.list.count;
	return true;
}
