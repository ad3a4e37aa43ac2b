/* test-trace.c: the trace header and its keys: golden vectors (computed
 * independently from the grammar in trace.h), round trips of hostile
 * values, every single-byte tampering refused, the length cap, finding
 * the topmost header, and the key file's checks. */

#include <stdarg.h>
#include <stddef.h>
#include <setjmp.h>
#include <stdint.h>
#include <cmocka.h>

#include "alloc.h"
#include "trace.h"

#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#define KEY_A_HEX                                                              \
	"000102030405060708090a0b0c0d0e0f101112131415161718191a1b1c1d1e1f"
#define KEY_B_HEX                                                              \
	"e0e1e2e3e4e5e6e7e8e9eaebecedeeeff0f1f2f3f4f5f6f7f8f9fafbfcfdfeff"
#define KEY_C_HEX                                                              \
	"5555555555555555555555555555555555555555555555555555555555555555"
#define KEY_A_ID "006d4632"
#define KEY_B_ID "46cd1183"
#define PREFIX "X-Tributary-Trace: "

/* The golden vectors: tests/unit's reference, HMAC-SHA256 under key A. */
#define GOLDEN_GMAIL                                                           \
	"X-Tributary-Trace: v=1; k=006d4632; r=alice@example.com; a=work; "    \
	"p=gmail; f=[Gmail]/All%20Mail; uv=1; u=42; gm=1278455344230334865; "  \
	"l=\\Inbox,Work%2C%202024,Gr%C3%BC%C3%9Fe; fl=\\Seen,$Forwarded; "     \
	"m=642gcXNoHDaIldodTGhCgP-6xSoxRCKjp03UEcnaLtU\r\n"
#define GOLDEN_GMAIL_ID "a7e4812dfbf1320e87529cfb1fc92b48"
#define GOLDEN_IMAP                                                            \
	"X-Tributary-Trace: v=1; k=006d4632; r=bob; a=home; p=imap; "          \
	"f=Sent%3B%20a%3Db%20%0D%0A; uv=3857529045; u=7; "                     \
	"m=txdd7GJ4nPoZNE5-ZkxNNfmdwh5EWKTXj_5_SpkNurU\r\n"
#define GOLDEN_IMAP_ID "c4c46dac4e19b895d8f83ff936e8ec65"

static const char *const gmail_labels[] = { "\\Inbox", "Work, 2024",
					    "Gr\xc3\xbc\xc3\x9f\x65" };
static const char *const gmail_flags[] = { "\\Seen", "$Forwarded" };

static const struct trib_trace_fields gmail_fields = {
	.recipient = "alice@example.com",
	.account = "work",
	.provider = "gmail",
	.folder = "[Gmail]/All Mail",
	.uidvalidity = 1,
	.uid = 42,
	.have_gm_msgid = true,
	.gm_msgid = 1278455344230334865ULL,
	.have_labels = true,
	.labels = gmail_labels,
	.label_count = 3,
	.have_flags = true,
	.flags = gmail_flags,
	.flag_count = 2,
};

static const struct trib_trace_fields imap_fields = {
	.recipient = "bob",
	.account = "home",
	.provider = "imap",
	.folder = "Sent; a=b \r\n",
	.uidvalidity = 3857529045U,
	.uid = 7,
};

/* ---- helpers ---- */

static struct trib_trace_keys *keys_from(const char *text)
{
	struct trib_trace_keys *keys;
	const char *error = NULL;

	assert_int_equal(trib_trace_keys_parse(text, strlen(text), "test",
					       &keys, &error),
			 0);
	assert_null(error);
	assert_non_null(keys);
	return keys;
}

/* Build, and check the line's shape: within the cap, 7-bit printable, one
 * CRLF at the end. */
static char *build(const struct trib_trace_keys *keys,
		   const struct trib_trace_fields *fields)
{
	const char *error = NULL;
	size_t len, i;
	char *line;

	line = trib_trace_header_build(keys, fields, &len, &error);
	assert_non_null(line);
	assert_null(error);
	assert_int_equal(strlen(line), len);
	assert_true(len <= TRIB_TRACE_LINE_MAX);
	assert_true(strncmp(line, PREFIX, strlen(PREFIX)) == 0);
	assert_string_equal(line + len - 2, "\r\n");
	for (i = 0; i < len - 2; i++) {
		assert_true(line[i] >= 0x20 && line[i] < 0x7f);
		assert_true(line[i] != '"' && line[i] != '(' && line[i] != '<');
	}
	return line;
}

/* The value part of a built line (after the name, before CRLF). */
static const char *value_of(const char *line, size_t *len_r)
{
	*len_r = strlen(line) - strlen(PREFIX) - 2;
	return line + strlen(PREFIX);
}

static int verify_line(const struct trib_trace_keys *keys, const char *line,
		       const char *recipient, struct trib_trace **trace_r,
		       const char **error_r)
{
	size_t len;
	const char *value = value_of(line, &len);

	*error_r = NULL;
	return trib_trace_parse_verify(value, len, keys, recipient, trace_r,
				       error_r);
}

/* Verify a value that must be refused; returns the (static) error. */
static const char *refused(const struct trib_trace_keys *keys,
			   const char *value, size_t len, const char *recipient)
{
	struct trib_trace *trace = (void *)1;
	const char *error = NULL;

	assert_int_equal(trib_trace_parse_verify(value, len, keys, recipient,
						 &trace, &error),
			 -1);
	assert_null(trace);
	assert_non_null(error);
	assert_null(strchr(error, '\n'));
	return error;
}

static void assert_list_equal(bool have, const char *const *items,
			      unsigned int count, bool want_have,
			      const char *const *want, unsigned int want_count)
{
	unsigned int i, j = 0;

	assert_int_equal(have, want_have);
	if (!have)
		return;
	/* Empty strings are skipped by the builder. */
	for (i = 0; i < want_count; i++) {
		if (want[i][0] == '\0')
			continue;
		assert_true(j < count);
		assert_string_equal(items[j], want[i]);
		j++;
	}
	assert_int_equal(count, j);
	assert_null(items[count]);
}

/* Parsed fields equal the fields built from (nothing dropped). */
static void assert_fields_equal(const struct trib_trace *trace,
				const struct trib_trace_fields *want)
{
	const struct trib_trace_fields *got = &trace->fields;
	char id[TRIB_TRACE_ID_LEN + 1];

	assert_string_equal(got->recipient, want->recipient);
	assert_string_equal(got->account, want->account);
	assert_string_equal(got->provider, want->provider);
	assert_false(trace->folder_hashed);
	assert_string_equal(got->folder, want->folder);
	assert_int_equal(got->uidvalidity, want->uidvalidity);
	assert_int_equal(got->uid, want->uid);
	assert_int_equal(got->have_gm_msgid, want->have_gm_msgid);
	if (want->have_gm_msgid)
		assert_true(got->gm_msgid == want->gm_msgid);
	assert_list_equal(got->have_labels, got->labels, got->label_count,
			  want->have_labels, want->labels, want->label_count);
	assert_list_equal(got->have_flags, got->flags, got->flag_count,
			  want->have_flags, want->flags, want->flag_count);
	assert_int_equal(trace->labels_dropped, 0);
	assert_int_equal(trace->flags_dropped, 0);
	trib_trace_id(want, id);
	assert_string_equal(trace->id, id);
}

/* Build, verify for the recipient, compare every field. */
static void round_trip(const struct trib_trace_keys *keys,
		       const struct trib_trace_fields *fields)
{
	struct trib_trace *trace;
	const char *error;
	char *line = build(keys, fields);

	assert_int_equal(
		verify_line(keys, line, fields->recipient, &trace, &error), 0);
	assert_null(error);
	assert_fields_equal(trace, fields);
	assert_string_equal(trace->key_id, trib_trace_keys_id(keys, 0));
	trib_trace_free(&trace);
	assert_null(trace);
	free(line);
}

/* ---- golden vectors ---- */

static void test_golden(void **state)
{
	struct trib_trace_keys *keys = keys_from(KEY_A_HEX "\n");
	char id[TRIB_TRACE_ID_LEN + 1];
	char *line;

	assert_string_equal(trib_trace_keys_id(keys, 0), KEY_A_ID);
	assert_null(trib_trace_keys_id(keys, 1));
	line = build(keys, &gmail_fields);
	assert_string_equal(line, GOLDEN_GMAIL);
	free(line);
	line = build(keys, &imap_fields);
	assert_string_equal(line, GOLDEN_IMAP);
	free(line);
	trib_trace_id(&gmail_fields, id);
	assert_string_equal(id, GOLDEN_GMAIL_ID);
	trib_trace_id(&imap_fields, id);
	assert_string_equal(id, GOLDEN_IMAP_ID);
	trib_trace_keys_destroy(&keys);
	assert_null(keys);
}

static void test_golden_parse(void **state)
{
	struct trib_trace_keys *keys = keys_from(KEY_A_HEX "\n");
	struct trib_trace *trace;
	const char *error;

	assert_int_equal(verify_line(keys, GOLDEN_GMAIL, "alice@example.com",
				     &trace, &error),
			 0);
	assert_fields_equal(trace, &gmail_fields);
	assert_string_equal(trace->id, GOLDEN_GMAIL_ID);
	assert_string_equal(trace->key_id, KEY_A_ID);
	assert_false(trace->recipient_hashed);
	trib_trace_free(&trace);
	assert_int_equal(verify_line(keys, GOLDEN_IMAP, "bob", &trace, &error),
			 0);
	assert_fields_equal(trace, &imap_fields);
	assert_string_equal(trace->id, GOLDEN_IMAP_ID);
	trib_trace_free(&trace);
	trib_trace_free(&trace);
	trib_trace_keys_destroy(&keys);
}

/* ---- round trips ---- */

static void test_round_trip_hostile(void **state)
{
	static const char *const folders[] = {
		"INBOX",
		"a b",
		"a;b",
		"a=b",
		"a,b",
		"100%",
		"%41",
		"Gr\xc3\xbc\xc3\x9f\x65/\xc3\x84rger",
		"&AOQ-rger",
		"line\r\nbreak",
		"cr\ronly",
		"lf\nonly",
		"tab\there",
		"\x01\x1f\x7f\x80\xfe\xff",
		"\"quoted\" (comment) <angle> #hash ?q `tick`",
		"; m=AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA",
		" ",
		"=?utf-8?q?encoded?=",
	};
	static const char *const labels[] = { "a,b", ",",	    "c d",
					      "",    "\\Important", "x;y=z" };
	static const char *const flags[] = { "\\Seen", "\\Answered",
					     "\\Flagged", "$Label1", "%" };
	struct trib_trace_keys *keys = keys_from(KEY_A_HEX "\n" KEY_B_HEX);
	struct trib_trace_fields f = {
		.recipient = "alice+x@example.com",
		.account = "a-b_c9",
		.provider = "outlook",
		.uidvalidity = UINT32_MAX,
		.uid = UINT32_MAX,
		.have_gm_msgid = true,
		.gm_msgid = UINT64_MAX,
		.have_labels = true,
		.labels = labels,
		.label_count = TRIB_N_ELEMENTS(labels),
		.have_flags = true,
		.flags = flags,
		.flag_count = TRIB_N_ELEMENTS(flags),
	};
	unsigned int i;

	for (i = 0; i < TRIB_N_ELEMENTS(folders); i++) {
		f.folder = folders[i];
		round_trip(keys, &f);
	}
	/* Hostile recipients too (the folder stays put). */
	f.recipient = "o'brien; a=b\r\n\xc3\xa9";
	round_trip(keys, &f);
	trib_trace_keys_destroy(&keys);
}

static void test_optional_fields(void **state)
{
	static const char *const empty[] = { "", "" };
	struct trib_trace_keys *keys = keys_from(KEY_A_HEX);
	struct trib_trace_fields f = imap_fields;
	struct trib_trace *trace;
	const char *error;
	char *line;

	/* Absent: no gm=, l=, fl=. */
	line = build(keys, &f);
	assert_null(strstr(line, "; gm="));
	assert_null(strstr(line, "; l="));
	assert_null(strstr(line, "; fl="));
	free(line);
	round_trip(keys, &f);

	/* Known but empty (an empty string is no label). */
	f.have_labels = true;
	f.have_flags = true;
	line = build(keys, &f);
	assert_non_null(strstr(line, "; u=7; l=; fl=; m="));
	assert_int_equal(verify_line(keys, line, "bob", &trace, &error), 0);
	assert_true(trace->fields.have_labels);
	assert_int_equal(trace->fields.label_count, 0);
	assert_null(trace->fields.labels[0]);
	assert_true(trace->fields.have_flags);
	assert_int_equal(trace->fields.flag_count, 0);
	trib_trace_free(&trace);
	free(line);
	f.labels = empty;
	f.label_count = 2;
	line = build(keys, &f);
	assert_non_null(strstr(line, "; u=7; l=; fl=; m="));
	free(line);
	round_trip(keys, &f);

	/* Only some. */
	f.have_labels = false;
	f.have_gm_msgid = true;
	f.gm_msgid = 1;
	round_trip(keys, &f);
	trib_trace_keys_destroy(&keys);
}

static void test_build_errors(void **state)
{
	static const char *const null_item[] = { "a", NULL };
	struct trib_trace_keys *keys = keys_from(KEY_A_HEX);
	struct trib_trace_fields f;
	const char *error;

#define BUILD_FAILS(field, value, msg)                                         \
	do {                                                                   \
		f = imap_fields;                                               \
		f.field = value;                                               \
		error = NULL;                                                  \
		assert_null(trib_trace_header_build(keys, &f, NULL, &error));  \
		assert_string_equal(error, msg);                               \
	} while (0)
	BUILD_FAILS(recipient, NULL, "trace: no recipient");
	BUILD_FAILS(recipient, "", "trace: no recipient");
	BUILD_FAILS(account, "Work", "trace: invalid account name");
	BUILD_FAILS(account, "a23456789012345678901234567890123",
		    "trace: invalid account name");
	BUILD_FAILS(provider, "my provider", "trace: invalid provider name");
	BUILD_FAILS(folder, "", "trace: no folder");
	BUILD_FAILS(uid, 0, "trace: UIDVALIDITY and UID must be nonzero");
	BUILD_FAILS(uidvalidity, 0,
		    "trace: UIDVALIDITY and UID must be nonzero");
	f = imap_fields;
	f.have_gm_msgid = true;
	assert_null(trib_trace_header_build(keys, &f, NULL, &error));
	assert_string_equal(error, "trace: X-GM-MSGID must be nonzero");
	f = imap_fields;
	f.have_flags = true;
	f.flags = null_item;
	f.flag_count = 2;
	assert_null(trib_trace_header_build(keys, &f, NULL, &error));
	assert_string_equal(error, "trace: NULL label or flag");
	assert_null(trib_trace_header_build(NULL, &imap_fields, NULL, &error));
#undef BUILD_FAILS
	trib_trace_keys_destroy(&keys);
}

/* Blanks around ';' and at the ends (refolding) do not matter. */
static void test_blanks_tolerated(void **state)
{
	struct trib_trace_keys *keys = keys_from(KEY_A_HEX);
	struct trib_trace *trace;
	const char *error = NULL, *value;
	char buf[1024];
	size_t len, i, n = 0;

	value = value_of(GOLDEN_GMAIL, &len);
	buf[n++] = ' ';
	buf[n++] = '\t';
	for (i = 0; i < len; i++) {
		if (value[i] == ';') {
			buf[n++] = ' ';
			buf[n++] = ';';
			buf[n++] = '\t';
		} else if (value[i] == ' ' && i > 0 && value[i - 1] == ';') {
			/* drop it: "a;b" is fine too */
		} else {
			buf[n++] = value[i];
		}
	}
	buf[n++] = ' ';
	assert_int_equal(trib_trace_parse_verify(buf, n, keys,
						 "alice@example.com", &trace,
						 &error),
			 0);
	assert_fields_equal(trace, &gmail_fields);
	trib_trace_free(&trace);
	trib_trace_keys_destroy(&keys);
}

/* ---- tampering ---- */

/* Every single-byte substitution (but one blank for another) is
 * refused. */
static void test_tamper_every_byte(void **state)
{
	static const char subst[] = { 'A', 'a', '0', '9', 'z', '_',  '-',
				      '%', ';', '=', ',', ' ', '\r', '\x80' };
	struct trib_trace_keys *keys = keys_from(KEY_A_HEX "\n" KEY_B_HEX);
	const char *golden[] = { GOLDEN_GMAIL, GOLDEN_IMAP };
	const char *rcpt[] = { "alice@example.com", "bob" };
	char buf[1024];
	unsigned int g, s, count = 0;
	size_t len, i;

	for (g = 0; g < 2; g++) {
		const char *value = value_of(golden[g], &len);

		for (i = 0; i < len; i++) {
			for (s = 0; s < sizeof(subst); s++) {
				if (subst[s] == value[i] ||
				    (value[i] == ' ' && subst[s] == ' '))
					continue;
				memcpy(buf, value, len);
				buf[i] = subst[s];
				refused(keys, buf, len, rcpt[g]);
				count++;
			}
		}
	}
	assert_true(count > 3000);
	trib_trace_keys_destroy(&keys);
}

/* Replace the first "from" in the golden value with "to"; the error. */
static const char *tamper(const struct trib_trace_keys *keys, const char *from,
			  const char *to)
{
	static char error[128];
	char buf[1024];
	size_t len;
	const char *value = value_of(GOLDEN_GMAIL, &len);
	const char *at = strstr(value, from);
	size_t pre, n;

	assert_non_null(at);
	assert_true(at < value + len);
	pre = (size_t)(at - value);
	n = (size_t)snprintf(buf, sizeof(buf), "%.*s%s%.*s", (int)pre, value,
			     to, (int)(len - pre - strlen(from)),
			     at + strlen(from));
	snprintf(error, sizeof(error), "%s",
		 refused(keys, buf, n, "alice@example.com"));
	return error;
}

static void test_tamper_fields(void **state)
{
	struct trib_trace_keys *keys = keys_from(KEY_A_HEX "\n" KEY_B_HEX);
	const char *mismatch = "trace header MAC does not match";

	assert_string_equal(tamper(keys, "v=1", "v=2"),
			    "unsupported trace header version");
	assert_string_equal(tamper(keys, "v=1", "v=0"),
			    "unsupported trace header version");
	/* Another key's id (known: MAC fails; unknown: refused). */
	assert_string_equal(tamper(keys, "k=" KEY_A_ID, "k=" KEY_B_ID),
			    mismatch);
	assert_string_equal(tamper(keys, "k=" KEY_A_ID, "k=006d4633"),
			    "trace header signed with an unknown key");
	assert_string_equal(tamper(keys, "k=" KEY_A_ID, "k=006D4632"),
			    "malformed trace header: bad key id");
	assert_string_equal(tamper(keys, "r=alice@", "r=alicf@"), mismatch);
	assert_string_equal(tamper(keys, "a=work", "a=home"), mismatch);
	assert_string_equal(tamper(keys, "p=gmail", "p=imap"), mismatch);
	assert_string_equal(tamper(keys, "All%20Mail", "All%20Maim"), mismatch);
	assert_string_equal(tamper(keys, "All%20Mail", "All%3BMail"), mismatch);
	assert_string_equal(tamper(keys, "All%20Mail", "All%2fMail"),
			    "malformed trace header: bad folder");
	assert_string_equal(tamper(keys, "All%20Mail", "All%4DMail"),
			    "malformed trace header: bad folder");
	assert_string_equal(tamper(keys, "uv=1;", "uv=2;"), mismatch);
	assert_string_equal(tamper(keys, "uv=1;", "uv=01;"),
			    "malformed trace header: bad UIDVALIDITY");
	assert_string_equal(tamper(keys, "u=42", "u=43"), mismatch);
	assert_string_equal(tamper(keys, "u=42", "u=4294967296"),
			    "malformed trace header: bad UID");
	assert_string_equal(tamper(keys, "gm=1278455344230334865",
				   "gm=1278455344230334866"),
			    mismatch);
	assert_string_equal(tamper(keys, "gm=1278455344230334865",
				   "gm=18446744073709551616"),
			    "malformed trace header: bad X-GM-MSGID");
	assert_string_equal(tamper(keys, "\\Inbox,", ""), mismatch);
	assert_string_equal(tamper(keys, "\\Inbox,", "\\Inbox,,"),
			    "malformed trace header: bad labels");
	assert_string_equal(tamper(keys, "fl=\\Seen,", "fl="), mismatch);
	assert_string_equal(tamper(keys, "m=642g", "m=642h"), mismatch);
	assert_string_equal(tamper(keys, "m=642g", "m=642"),
			    "malformed trace header: bad MAC");
	/* Fields left out, added, repeated, reordered. */
	assert_string_equal(tamper(keys, "; gm=1278455344230334865", ""),
			    mismatch);
	assert_string_equal(tamper(keys, "; fl=\\Seen,$Forwarded", ""),
			    mismatch);
	assert_string_equal(tamper(keys, "; l=", "; ld=1; l="),
			    "malformed trace header: unknown or misplaced "
			    "field");
	assert_string_equal(tamper(keys, "; fl=", "; ld=1; fl="), mismatch);
	assert_string_equal(tamper(keys, "; u=42", "; u=42; u=42"),
			    "malformed trace header: unknown or misplaced "
			    "field");
	assert_string_equal(tamper(keys, "a=work; p=gmail", "p=gmail; a=work"),
			    "malformed trace header: bad account");
	assert_string_equal(tamper(keys, "; m=", "; x=1; m="),
			    "malformed trace header: unknown or misplaced "
			    "field");
	assert_string_equal(tamper(keys, "EcnaLtU", "EcnaLtU; x=1"),
			    "malformed trace header: field after the MAC");
	assert_string_equal(tamper(keys, "EcnaLtU", "EcnaLtU;"),
			    "malformed trace header: a field is not "
			    "tag=value");
	assert_string_equal(tamper(keys, "v=1; ", ""),
			    "malformed trace header: no version first");
	assert_string_equal(tamper(keys, "r=alice@example.com",
				   "rh=0000000000000000000000000000000000000"
				   "000000000000000000000000000"),
			    mismatch);
	trib_trace_keys_destroy(&keys);
}

static void test_other_recipient(void **state)
{
	struct trib_trace_keys *keys = keys_from(KEY_A_HEX);
	struct trib_trace_fields f = gmail_fields;
	struct trib_trace *trace;
	const char *error;
	char *line;

	f.recipient = "bob";
	line = build(keys, &f);
	assert_int_equal(verify_line(keys, line, "alice", &trace, &error), -1);
	assert_string_equal(error,
			    "trace header addressed to another recipient");
	assert_null(trace);
	assert_int_equal(verify_line(keys, line, "bob2", &trace, &error), -1);
	assert_int_equal(verify_line(keys, line, "Bob", &trace, &error), -1);
	assert_int_equal(verify_line(keys, line, "bob", &trace, &error), 0);
	trib_trace_free(&trace);
	free(line);
	refused(keys, "", 0, "bob");
	refused(keys, "v=1", 3, "bob");
	trib_trace_keys_destroy(&keys);
}

/* ---- key rotation ---- */

static void test_older_key(void **state)
{
	struct trib_trace_keys *old = keys_from("# old\n" KEY_B_HEX "\n");
	struct trib_trace_keys *both = keys_from(KEY_A_HEX "\n" KEY_B_HEX);
	struct trib_trace_keys *only_a = keys_from(KEY_A_HEX);
	struct trib_trace_keys *other = keys_from(KEY_C_HEX "\n" KEY_A_HEX);
	struct trib_trace *trace;
	const char *error;
	char *line;

	assert_int_equal(trib_trace_keys_count(both), 2);
	assert_string_equal(trib_trace_keys_id(both, 1), KEY_B_ID);
	/* Signed with B: accepted while B is an older key. */
	line = build(old, &gmail_fields);
	assert_non_null(strstr(line, "k=" KEY_B_ID ";"));
	assert_int_equal(
		verify_line(both, line, "alice@example.com", &trace, &error),
		0);
	assert_string_equal(trace->key_id, KEY_B_ID);
	trib_trace_free(&trace);
	/* ...and refused once B is gone. */
	assert_int_equal(
		verify_line(only_a, line, "alice@example.com", &trace, &error),
		-1);
	assert_string_equal(error, "trace header signed with an unknown key");
	free(line);
	/* The current (first) key signs. */
	line = build(both, &gmail_fields);
	assert_string_equal(line, GOLDEN_GMAIL);
	assert_int_equal(
		verify_line(other, line, "alice@example.com", &trace, &error),
		0);
	trib_trace_free(&trace);
	free(line);
	trib_trace_keys_destroy(&old);
	trib_trace_keys_destroy(&both);
	trib_trace_keys_destroy(&only_a);
	trib_trace_keys_destroy(&other);
}

/* ---- the length cap ---- */

static char *repeat(const char *unit, size_t times)
{
	size_t len = strlen(unit), i;
	char *str = trib_malloc(len * times + 1);

	for (i = 0; i < times; i++)
		memcpy(str + i * len, unit, len);
	str[len * times] = '\0';
	return str;
}

/* prefix0, prefix1, ... */
static char **make_list(unsigned int count, const char *prefix)
{
	char **list = trib_calloc(count + 1, sizeof(*list));
	unsigned int i;

	for (i = 0; i < count; i++)
		list[i] = trib_strdup_printf("%s%u", prefix, i);
	return list;
}

static void free_list(char **list)
{
	unsigned int i;

	for (i = 0; list[i] != NULL; i++)
		free(list[i]);
	free(list);
}

/* The kept items are a subsequence of the given ones; kept + dropped is
 * all of them. */
static void assert_kept(const char *const *got, unsigned int got_count,
			unsigned int dropped, char **want,
			unsigned int want_count)
{
	unsigned int i, j = 0;

	assert_int_equal(got_count + dropped, want_count);
	for (i = 0; i < got_count; i++) {
		while (j < want_count && strcmp(want[j], got[i]) != 0)
			j++;
		assert_true(j < want_count);
		j++;
	}
}

static struct trib_trace *verify_ok(const struct trib_trace_keys *keys,
				    const char *line, const char *recipient)
{
	struct trib_trace *trace;
	const char *error = NULL;

	if (verify_line(keys, line, recipient, &trace, &error) != 0)
		fail_msg("verify failed: %s", error);
	return trace;
}

static void test_cap_labels_first(void **state)
{
	struct trib_trace_keys *keys = keys_from(KEY_A_HEX);
	char **labels = make_list(300, "Project label number ");
	char **flags = make_list(8, "$Keyword");
	struct trib_trace_fields f = gmail_fields;
	struct trib_trace *trace;
	char *line;

	f.labels = (const char *const *)labels;
	f.label_count = 300;
	f.flags = (const char *const *)flags;
	f.flag_count = 8;
	line = build(keys, &f);
	trace = verify_ok(keys, line, f.recipient);
	/* Labels were cut, nothing else. */
	assert_false(trace->folder_hashed);
	assert_false(trace->recipient_hashed);
	assert_string_equal(trace->fields.folder, f.folder);
	assert_int_equal(trace->flags_dropped, 0);
	assert_int_equal(trace->fields.flag_count, 8);
	assert_true(trace->labels_dropped > 250);
	assert_true(trace->fields.label_count > 10);
	assert_kept(trace->fields.labels, trace->fields.label_count,
		    trace->labels_dropped, labels, 300);
	/* Greedy: the line is nearly full. */
	assert_true(strlen(line) > TRIB_TRACE_LINE_MAX - 30);
	{
		char id[TRIB_TRACE_ID_LEN + 1];

		trib_trace_id(&f, id);
		assert_string_equal(trace->id, id);
	}
	trib_trace_free(&trace);
	free(line);

	/* 10,000 one-letter labels: a prefix survives, the count is exact. */
	free_list(labels);
	labels = make_list(10000, "");
	f.labels = (const char *const *)labels;
	f.label_count = 10000;
	line = build(keys, &f);
	trace = verify_ok(keys, line, f.recipient);
	assert_kept(trace->fields.labels, trace->fields.label_count,
		    trace->labels_dropped, labels, 10000);
	assert_non_null(strstr(line, "; ld="));
	trib_trace_free(&trace);
	free(line);
	free_list(labels);
	free_list(flags);
	trib_trace_keys_destroy(&keys);
}

static void test_cap_folder_hashed(void **state)
{
	struct trib_trace_keys *keys = keys_from(KEY_A_HEX);
	char **labels = make_list(5, "label");
	char **flags = make_list(3, "$k");
	struct trib_trace_fields f = gmail_fields;
	unsigned char digest[TRIB_TRACE_DIGEST_SIZE];
	char id[TRIB_TRACE_ID_LEN + 1];
	struct trib_trace *trace;
	char *folder = repeat("\xc3\xa9 ", 400), *line;

	f.folder = folder;
	f.labels = (const char *const *)labels;
	f.label_count = 5;
	f.flags = (const char *const *)flags;
	f.flag_count = 3;
	f.have_gm_msgid = false;
	line = build(keys, &f);
	assert_non_null(strstr(line, "; fh="));
	trace = verify_ok(keys, line, f.recipient);
	assert_true(trace->folder_hashed);
	assert_null(trace->fields.folder);
	trib_trace_folder_digest(folder, digest);
	assert_memory_equal(trace->folder_digest, digest, sizeof(digest));
	/* With the folder hashed there is room for the rest again. */
	assert_int_equal(trace->fields.label_count, 5);
	assert_int_equal(trace->fields.flag_count, 3);
	/* The id does not change: it hashes the folder anyway. */
	trib_trace_id(&f, id);
	assert_string_equal(trace->id, id);
	trib_trace_free(&trace);
	free(line);
	free(folder);
	free_list(labels);
	free_list(flags);
	trib_trace_keys_destroy(&keys);
}

static void test_cap_recipient_hashed(void **state)
{
	struct trib_trace_keys *keys = keys_from(KEY_A_HEX);
	struct trib_trace_fields f = imap_fields;
	struct trib_trace *trace;
	const char *error;
	char *rcpt = repeat("\xc3\xa9", 400), *line;

	f.recipient = rcpt;
	line = build(keys, &f);
	assert_non_null(strstr(line, "; rh="));
	trace = verify_ok(keys, line, rcpt);
	assert_true(trace->recipient_hashed);
	assert_string_equal(trace->fields.recipient, rcpt);
	/* The folder was short: not hashed. */
	assert_false(trace->folder_hashed);
	assert_string_equal(trace->fields.folder, f.folder);
	trib_trace_free(&trace);
	assert_int_equal(verify_line(keys, line, "bob", &trace, &error), -1);
	assert_string_equal(error,
			    "trace header addressed to another recipient");
	free(line);
	free(rcpt);
	trib_trace_keys_destroy(&keys);
}

/* Every folder length, with lists: always within the cap, always
 * verifies, and the folder is hashed only when it could not fit even
 * with no label and no flag. */
static void test_cap_sweep(void **state)
{
	struct trib_trace_keys *keys = keys_from(KEY_A_HEX);
	char **labels = make_list(40, "lbl ");
	char **flags = make_list(40, "\\Flag");
	struct trib_trace_fields f = gmail_fields;
	struct trib_trace *trace;
	char *folder, *line;
	size_t n;
	bool hashed_seen = false;

	f.labels = (const char *const *)labels;
	f.label_count = 40;
	f.flags = (const char *const *)flags;
	f.flag_count = 40;
	for (n = 1; n < 1200; n += 3) {
		folder = repeat(";", n);
		f.folder = folder;
		line = build(keys, &f);
		trace = verify_ok(keys, line, f.recipient);
		/* The rest of the line takes 184 bytes with both lists
		 * empty ("; l=; ld=40; fl=; fd=40"), the folder 3n. */
		assert_int_equal(trace->folder_hashed,
				 3 * n + 184 > TRIB_TRACE_LINE_MAX);
		if (trace->folder_hashed) {
			hashed_seen = true;
		} else {
			assert_string_equal(trace->fields.folder, folder);
		}
		assert_kept(trace->fields.labels, trace->fields.label_count,
			    trace->labels_dropped, labels, 40);
		assert_kept(trace->fields.flags, trace->fields.flag_count,
			    trace->flags_dropped, flags, 40);
		trib_trace_free(&trace);
		free(line);
		free(folder);
	}
	assert_true(hashed_seen);
	free_list(labels);
	free_list(flags);
	trib_trace_keys_destroy(&keys);
}

/* ---- finding the header ---- */

static char *built_value(const struct trib_trace_keys *keys,
			 const struct trib_trace_fields *fields)
{
	char *line = build(keys, fields), *value;
	const char *start;
	size_t len;

	start = value_of(line, &len);
	value = trib_strndup(start, len);
	free(line);
	return value;
}

static int find(const char *block, char **value_r)
{
	size_t len;
	int ret = trib_trace_header_find(block, strlen(block), value_r, &len);

	if (ret == 1)
		assert_int_equal(strlen(*value_r), len);
	else
		assert_null(*value_r);
	return ret;
}

/* Find + verify for alice; returns 1/0/-1 and frees the trace. */
static int verify_block(const struct trib_trace_keys *keys, const char *block,
			const char **error_r)
{
	struct trib_trace *trace = NULL;
	int ret;

	*error_r = NULL;
	ret = trib_trace_header_verify(block, strlen(block), keys,
				       "alice@example.com", &trace, error_r);
	if (ret == 1) {
		assert_non_null(trace);
		assert_fields_equal(trace, &gmail_fields);
		trib_trace_free(&trace);
	} else {
		assert_null(trace);
		assert_true((ret == 0) == (*error_r == NULL));
	}
	return ret;
}

#define LMTP_LINES                                                             \
	"Return-Path: <>\r\n"                                                  \
	"Delivered-To: alice@example.com\r\n"                                  \
	"Received: from tributary\r\n"                                         \
	"\tby mail.example.com with LMTP id abc\r\n"                           \
	"\tfor <alice@example.com>; Mon, 1 Jan 2024 00:00:00 +0000\r\n"

static void test_find_topmost(void **state)
{
	struct trib_trace_keys *keys = keys_from(KEY_A_HEX);
	struct trib_trace_fields forged_fields = gmail_fields;
	char *value = built_value(keys, &gmail_fields), *forged, *block, *got;
	const char *error;

	forged_fields.folder = "INBOX";
	forged = built_value(keys, &forged_fields);
	/* Break its MAC (still well-formed). */
	forged[strlen(forged) - 1] =
		forged[strlen(forged) - 1] == 'A' ? 'B' : 'A';

	/* Ours on top (below LMTP's lines), a forged one further down. */
	block = trib_strdup_printf(LMTP_LINES "X-Tributary-Trace: %s\r\n"
					      "Subject: hi\r\n"
					      "X-Tributary-Trace: %s\r\n"
					      "\r\n"
					      "X-Tributary-Trace: body\r\n",
				   value, forged);
	assert_int_equal(find(block, &got), 1);
	assert_string_equal(got, value);
	free(got);
	assert_int_equal(verify_block(keys, block, &error), 1);
	free(block);

	/* A forged one on top wins the position and fails: untraced. */
	block = trib_strdup_printf(LMTP_LINES "X-Tributary-Trace: %s\r\n"
					      "X-Tributary-Trace: %s\r\n\r\n",
				   forged, value);
	assert_int_equal(verify_block(keys, block, &error), -1);
	assert_string_equal(error, "trace header MAC does not match");
	free(block);

	/* Only in the body: not a header. */
	block = trib_strdup_printf(LMTP_LINES "Subject: x\r\n\r\n"
					      "X-Tributary-Trace: %s\r\n",
				   value);
	assert_int_equal(find(block, &got), 0);
	assert_int_equal(verify_block(keys, block, &error), 0);
	free(block);

	/* None at all; an empty block; a block of just the empty line. */
	assert_int_equal(find(LMTP_LINES "Subject: x\r\n\r\nbody", &got), 0);
	assert_int_equal(find("", &got), 0);
	assert_int_equal(find("\r\n", &got), 0);
	assert_int_equal(find("\n", &got), 0);
	assert_int_equal(
		verify_block(keys, LMTP_LINES "Subject: x\r\n\r\n", &error), 0);

	/* Names that are not ours; a continuation line that looks like
	 * ours belongs to the field above. */
	block = trib_strdup_printf("X-Tributary-Trace-Old: a\r\n"
				   "X-Tributary-Traces: b\r\n"
				   "Subject: x\r\n"
				   " X-Tributary-Trace: c\r\n"
				   "X-Tributary-Trace %s\r\n"
				   "x-tributary-trace \t: %s\r\n",
				   forged, value);
	assert_int_equal(find(block, &got), 1);
	assert_string_equal(got, value);
	free(got);
	assert_int_equal(verify_block(keys, block, &error), 1);
	free(block);
	free(value);
	free(forged);
	trib_trace_keys_destroy(&keys);
}

/* Replace every "; " of value with sep. */
static char *fold(const char *value, const char *sep)
{
	char *out = trib_malloc(strlen(value) * 4 + 1);
	size_t n = 0;

	for (; *value != '\0'; value++) {
		if (value[0] == ';' && value[1] == ' ') {
			memcpy(out + n, sep, strlen(sep));
			n += strlen(sep);
			value++;
		} else {
			out[n++] = *value;
		}
	}
	out[n] = '\0';
	return out;
}

static void test_find_folded(void **state)
{
	static const char *const seps[] = { ";\r\n ", ";\r\n\t", " ;\r\n  ",
					    ";\n\t", "\r\n ;\r\n " };
	struct trib_trace_keys *keys = keys_from(KEY_A_HEX);
	char *value = built_value(keys, &gmail_fields), *folded, *block, *got;
	const char *error;
	unsigned int i;

	for (i = 0; i < TRIB_N_ELEMENTS(seps); i++) {
		folded = fold(value, seps[i]);
		block = trib_strdup_printf(LMTP_LINES "X-Tributary-Trace:"
						      "\r\n %s \r\n"
						      "Subject: x\r\n\r\n",
					   folded);
		assert_int_equal(find(block, &got), 1);
		assert_null(strchr(got, '\n'));
		assert_null(strchr(got, '\r'));
		free(got);
		assert_int_equal(verify_block(keys, block, &error), 1);
		free(block);
		free(folded);
	}
	/* Folded inside a field: that is a blank inside it, refused. */
	block = trib_strdup_printf("X-Tributary-Trace: %.20s\r\n %s\r\n\r\n",
				   value, value + 20);
	assert_int_equal(verify_block(keys, block, &error), -1);
	free(block);
	free(value);
	trib_trace_keys_destroy(&keys);
}

static void test_find_bare_lf(void **state)
{
	struct trib_trace_keys *keys = keys_from(KEY_A_HEX);
	char *value = built_value(keys, &gmail_fields), *block, *got;
	const char *error;

	block = trib_strdup_printf("Return-Path: <>\n"
				   "Received: from x\n\tby y\n"
				   "X-Tributary-Trace: %s\n"
				   "Subject: x\n\nbody\n",
				   value);
	assert_int_equal(find(block, &got), 1);
	assert_string_equal(got, value);
	free(got);
	assert_int_equal(verify_block(keys, block, &error), 1);
	free(block);
	/* The header block without its end, or with no line end at all. */
	block = trib_strdup_printf("X-Tributary-Trace: %s", value);
	assert_int_equal(verify_block(keys, block, &error), 1);
	free(block);
	/* A lone CR inside the value is data, and refused. */
	block = trib_strdup_printf("X-Tributary-Trace: %.10s\r%s\n\n", value,
				   value + 10);
	assert_int_equal(verify_block(keys, block, &error), -1);
	free(block);
	/* NUL bytes in the block. */
	{
		char buf[1200];
		size_t len = (size_t)snprintf(buf, sizeof(buf),
					      "A: x\r\nX-Tributary-Trace: %s",
					      value);
		size_t got_len;

		buf[3] = '\0';
		assert_int_equal(
			trib_trace_header_find(buf, len, &got, &got_len), 1);
		assert_string_equal(got, value);
		free(got);
		buf[len - 3] = '\0';
		assert_int_equal(
			trib_trace_header_find(buf, len, &got, &got_len), 1);
		assert_int_equal(got_len, strlen(value));
		assert_int_equal(got[got_len - 3], '\0');
		refused(keys, got, got_len, "alice@example.com");
		free(got);
	}
	free(value);
	trib_trace_keys_destroy(&keys);
}

/* ---- key files ---- */

static char *tmp_dir(void)
{
	char *dir = trib_strdup("/tmp/test-trace-XXXXXX");

	assert_non_null(mkdtemp(dir));
	return dir;
}

static void rm_dir(char *dir)
{
	DIR *d = opendir(dir);
	struct dirent *ent;
	char *path;

	assert_non_null(d);
	while ((ent = readdir(d)) != NULL) {
		if (strcmp(ent->d_name, ".") == 0 ||
		    strcmp(ent->d_name, "..") == 0)
			continue;
		path = trib_strdup_printf("%s/%s", dir, ent->d_name);
		if (unlink(path) < 0)
			assert_int_equal(rmdir(path), 0);
		free(path);
	}
	closedir(d);
	assert_int_equal(rmdir(dir), 0);
	free(dir);
}

static char *write_key_file(const char *dir, const char *name, const char *text,
			    mode_t mode)
{
	char *path = trib_strdup_printf("%s/%s", dir, name);
	int fd = open(path, O_WRONLY | O_CREAT | O_TRUNC, 0600);

	assert_true(fd >= 0);
	assert_int_equal(write(fd, text, strlen(text)), (ssize_t)strlen(text));
	assert_int_equal(fchmod(fd, mode), 0);
	assert_int_equal(close(fd), 0);
	return path;
}

/* Load must fail with exactly "trace key <path>: <msg>". */
static void assert_load_fails(const char *path, const char *msg)
{
	struct trib_trace_keys *keys = (void *)1;
	const char *error = NULL;
	char *want = trib_strdup_printf("trace key %s: %s", path, msg);

	assert_int_equal(trib_trace_keys_load(path, &keys, &error), -1);
	assert_null(keys);
	assert_string_equal(error, want);
	free(want);
}

static void assert_file_fails(const char *dir, const char *text, mode_t mode,
			      const char *msg)
{
	char *path = write_key_file(dir, "bad.key", text, mode);

	assert_load_fails(path, msg);
	assert_int_equal(unlink(path), 0);
	free(path);
}

static void test_key_file_checks(void **state)
{
	char *dir = tmp_dir(), *path;
	struct trib_trace_keys *keys;
	const char *error;

	assert_file_fails(dir, KEY_A_HEX "\n", 0644,
			  "mode 0644 is readable by everyone");
	assert_file_fails(dir, KEY_A_HEX "\n", 0604,
			  "mode 0604 is readable by everyone");
	assert_file_fails(dir, KEY_A_HEX "\n", 0642,
			  "mode 0642 is writable by everyone");
	assert_file_fails(dir, KEY_A_HEX "\n", 0641,
			  "mode 0641 gives everyone access");
	assert_file_fails(dir, KEY_A_HEX "\n", 04640 | 0001,
			  "mode 4641 gives everyone access");

	/* Missing; a directory; a FIFO (must not hang). */
	path = trib_strdup_printf("%s/none.key", dir);
	assert_load_fails(path, "missing (`tributary init` creates it)");
	assert_int_equal(mkdir(path, 0750), 0);
	assert_load_fails(path, "not a regular file");
	assert_int_equal(rmdir(path), 0);
	assert_int_equal(mkfifo(path, 0640), 0);
	assert_load_fails(path, "not a regular file");
	assert_int_equal(unlink(path), 0);
	free(path);

	/* Truncated, long, garbage, empty. */
	assert_file_fails(dir, "000102030405060708090a0b0c0d0e0f1011121314",
			  0640,
			  "line 1: wrong key length: 42 hex digits, "
			  "expected 64");
	assert_file_fails(dir, "# c\n\n" KEY_A_HEX "00\n", 0640,
			  "line 3: wrong key length: 66 hex digits, "
			  "expected 64");
	assert_file_fails(dir, "-----BEGIN PRIVATE KEY-----\n", 0600,
			  "line 1: bad syntax (a key is 64 hex digits)");
	assert_file_fails(dir, KEY_A_HEX "\n" KEY_B_HEX " # old\n", 0640,
			  "line 2: bad syntax (a key is 64 hex digits)");
	assert_file_fails(dir, "key=" KEY_A_HEX "\n", 0640,
			  "line 1: bad syntax (a key is 64 hex digits)");
	assert_file_fails(dir, "", 0640, "no key in the file");
	assert_file_fails(dir, "# nothing\n\n   \n", 0640,
			  "no key in the file");
	assert_file_fails(dir, KEY_A_HEX "\n" KEY_B_HEX "\n" KEY_A_HEX "\n",
			  0640,
			  "line 3: key id " KEY_A_ID " repeats an earlier key");

	/* Comments, blanks, CRLF, upper case, no final newline: fine, and
	 * a symlink to a good file is followed. */
	path = write_key_file(
		dir, "good.key",
		"# Tributary\r\n\r\n  " KEY_A_HEX " \r\n"
		"\t" KEY_B_HEX "\n"
		"# the end\n"
		"5555555555555555555555555555555555555555555555555"
		"555555555555555",
		0640);
	assert_int_equal(trib_trace_keys_load(path, &keys, &error), 0);
	assert_int_equal(trib_trace_keys_count(keys), 3);
	assert_string_equal(trib_trace_keys_id(keys, 0), KEY_A_ID);
	assert_string_equal(trib_trace_keys_id(keys, 1), KEY_B_ID);
	trib_trace_keys_destroy(&keys);
	{
		char *link_path = trib_strdup_printf("%s/link.key", dir);

		assert_int_equal(symlink(path, link_path), 0);
		assert_int_equal(trib_trace_keys_load(link_path, &keys, &error),
				 0);
		trib_trace_keys_destroy(&keys);
		free(link_path);
	}
	free(path);
	path = write_key_file(dir, "upper.key",
			      "000102030405060708090A0B0C0D0E0F"
			      "101112131415161718191A1B1C1D1E1F",
			      0600);
	assert_int_equal(trib_trace_keys_load(path, &keys, &error), 0);
	assert_string_equal(trib_trace_keys_id(keys, 0), KEY_A_ID);
	trib_trace_keys_destroy(&keys);
	free(path);
	rm_dir(dir);
}

static void test_key_file_limits(void **state)
{
	struct trib_trace_keys *keys;
	const char *error;
	char text[TRIB_TRACE_KEYS_MAX * 66 + 100];
	unsigned int i;
	size_t n = 0;

	/* 16 distinct keys are fine, 17 are not. */
	for (i = 0; i <= TRIB_TRACE_KEYS_MAX; i++) {
		n += (size_t)snprintf(text + n, sizeof(text) - n, "%064x\n",
				      i + 1);
	}
	assert_int_equal(
		trib_trace_keys_parse(text, n - 65, "t", &keys, &error), 0);
	assert_int_equal(trib_trace_keys_count(keys), TRIB_TRACE_KEYS_MAX);
	trib_trace_keys_destroy(&keys);
	assert_int_equal(trib_trace_keys_parse(text, n, "t", &keys, &error),
			 -1);
	assert_string_equal(error, "trace key t: line 17: more than 16 keys");
	/* A NUL is not hex; a control character in the name is masked. */
	assert_int_equal(trib_trace_keys_parse("\0", 1, "a\nb", &keys, &error),
			 -1);
	assert_string_equal(error, "trace key a?b: line 1: bad syntax (a key "
				   "is 64 hex digits)");
}

static void test_key_generate(void **state)
{
	char *dir = tmp_dir(), *path, *bad;
	struct trib_trace_keys *keys, *rotated;
	struct trib_trace *trace;
	const char *error;
	char first_id[TRIB_TRACE_KEY_ID_LEN + 1], *line;
	struct stat st;
	unsigned int i;

	path = trib_strdup_printf("%s/trace.key", dir);
	assert_int_equal(trib_trace_key_generate(path, NULL, getgid(), &error),
			 0);
	assert_int_equal(lstat(path, &st), 0);
	assert_true(S_ISREG(st.st_mode));
	assert_int_equal(st.st_mode & 07777, 0640);
	assert_int_equal(st.st_gid, getgid());
	assert_int_equal(trib_trace_keys_load(path, &keys, &error), 0);
	assert_int_equal(trib_trace_keys_count(keys), 1);
	memcpy(first_id, trib_trace_keys_id(keys, 0), sizeof(first_id));

	/* Never overwritten without keep. */
	assert_int_equal(trib_trace_key_generate(path, NULL, (gid_t)-1, &error),
			 -1);
	bad = trib_strdup_printf("trace key %s: already exists (not "
				 "overwritten)",
				 path);
	assert_string_equal(error, bad);
	free(bad);

	/* A header signed now still verifies after a rotation. */
	line = build(keys, &gmail_fields);
	assert_int_equal(trib_trace_key_generate(path, keys, (gid_t)-1, &error),
			 0);
	assert_int_equal(trib_trace_keys_load(path, &rotated, &error), 0);
	assert_int_equal(trib_trace_keys_count(rotated), 2);
	assert_string_equal(trib_trace_keys_id(rotated, 1), first_id);
	assert_string_not_equal(trib_trace_keys_id(rotated, 0), first_id);
	trace = verify_ok(rotated, line, "alice@example.com");
	assert_string_equal(trace->key_id, first_id);
	trib_trace_free(&trace);
	free(line);
	line = build(rotated, &gmail_fields);
	assert_int_equal(
		verify_line(keys, line, "alice@example.com", &trace, &error),
		-1);
	free(line);
	trib_trace_keys_destroy(&keys);

	/* Rotating many times keeps the newest TRIB_TRACE_KEYS_MAX. */
	for (i = 0; i < 20; i++) {
		assert_int_equal(
			trib_trace_key_generate(path, rotated, 0, &error), 0);
		trib_trace_keys_destroy(&rotated);
		assert_int_equal(trib_trace_keys_load(path, &rotated, &error),
				 0);
	}
	assert_int_equal(trib_trace_keys_count(rotated), TRIB_TRACE_KEYS_MAX);
	assert_int_equal(stat(path, &st), 0);
	assert_int_equal(st.st_mode & 07777, 0640);
	trib_trace_keys_destroy(&rotated);
	free(path);

	/* No directory to write into. */
	path = trib_strdup_printf("%s/no/such/trace.key", dir);
	assert_int_equal(trib_trace_key_generate(path, NULL, (gid_t)-1, &error),
			 -1);
	assert_non_null(strstr(error, "cannot create a file beside it"));
	free(path);
	rm_dir(dir);
}

/* ---- trace ids ---- */

static void test_trace_id(void **state)
{
	struct trib_trace_fields a = imap_fields, b;
	char id_a[TRIB_TRACE_ID_LEN + 1], id_b[TRIB_TRACE_ID_LEN + 1];
	size_t i;

	trib_trace_id(&a, id_a);
	assert_int_equal(strlen(id_a), TRIB_TRACE_ID_LEN);
	for (i = 0; i < TRIB_TRACE_ID_LEN; i++)
		assert_non_null(strchr("0123456789abcdef", id_a[i]));
	/* Flags, labels, provider and recipient do not enter it. */
	b = a;
	b.recipient = "carol";
	b.provider = "yahoo";
	b.have_flags = true;
	trib_trace_id(&b, id_b);
	assert_string_equal(id_a, id_b);
	/* Account, folder, UIDVALIDITY, UID do. */
#define ID_DIFFERS(field, value)                                               \
	do {                                                                   \
		b = a;                                                         \
		b.field = value;                                               \
		trib_trace_id(&b, id_b);                                       \
		assert_string_not_equal(id_a, id_b);                           \
	} while (0)
	ID_DIFFERS(account, "home2");
	ID_DIFFERS(folder, "Sent");
	ID_DIFFERS(uidvalidity, 1);
	ID_DIFFERS(uid, 8);
	/* With X-GM-MSGID only account and msgid count. */
	a = gmail_fields;
	trib_trace_id(&a, id_a);
	b = a;
	b.folder = "INBOX";
	b.uidvalidity = 99;
	b.uid = 1234;
	trib_trace_id(&b, id_b);
	assert_string_equal(id_a, id_b);
	ID_DIFFERS(gm_msgid, 1278455344230334866ULL);
	ID_DIFFERS(account, "work2");
	ID_DIFFERS(have_gm_msgid, false);
#undef ID_DIFFERS
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_golden),
		cmocka_unit_test(test_golden_parse),
		cmocka_unit_test(test_round_trip_hostile),
		cmocka_unit_test(test_optional_fields),
		cmocka_unit_test(test_build_errors),
		cmocka_unit_test(test_blanks_tolerated),
		cmocka_unit_test(test_tamper_every_byte),
		cmocka_unit_test(test_tamper_fields),
		cmocka_unit_test(test_other_recipient),
		cmocka_unit_test(test_older_key),
		cmocka_unit_test(test_cap_labels_first),
		cmocka_unit_test(test_cap_folder_hashed),
		cmocka_unit_test(test_cap_recipient_hashed),
		cmocka_unit_test(test_cap_sweep),
		cmocka_unit_test(test_find_topmost),
		cmocka_unit_test(test_find_folded),
		cmocka_unit_test(test_find_bare_lf),
		cmocka_unit_test(test_key_file_checks),
		cmocka_unit_test(test_key_file_limits),
		cmocka_unit_test(test_key_generate),
		cmocka_unit_test(test_trace_id),
	};

	return cmocka_run_group_tests(tests, NULL, NULL);
}
