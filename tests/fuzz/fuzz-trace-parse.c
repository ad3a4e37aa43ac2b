/* fuzz-trace-parse.c: libFuzzer target for the trace header: finding the
 * topmost one in a header block, parsing and verifying it, building it
 * from hostile fields, and the key file syntax.
 *
 * The first input byte picks the mode (byte % 3), the rest is its input:
 *   0: a header block. Find + verify for alice under a fixed key set
 *      (current key A, older key B). A header that verifies must verify
 *      for no one else, and rebuilding it from its fields must give the
 *      same header, blanks aside.
 *   1: fields. The rest is split at NUL bytes: UIDVALIDITY/UID/X-GM-MSGID
 *      come from the first part's bytes, then recipient, folder, and
 *      parts starting with 'L' (a label), 'F' (a flag) or 'A' (the
 *      account). The built line must keep its promises (cap, 7-bit, one
 *      CRLF), be found and verified in a block, and give back the fields.
 *   2: a key file. Loaded keys are 1..16, with distinct ids.
 * The seeds in corpus-trace/ are a few of each (made with the test keys
 * of tests/unit/test-trace.c). Any broken promise aborts. */

#include "alloc.h"
#include "trace.h"

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

#define KEY_A_HEX                                                              \
	"000102030405060708090a0b0c0d0e0f101112131415161718191a1b1c1d1e1f"
#define KEY_B_HEX                                                              \
	"e0e1e2e3e4e5e6e7e8e9eaebecedeeeff0f1f2f3f4f5f6f7f8f9fafbfcfdfeff"
#define RCPT "alice@example.com"
#define MAX_PARTS 64

static struct trib_trace_keys *fuzz_keys(void)
{
	static struct trib_trace_keys *keys = NULL;
	const char *text = KEY_A_HEX "\n" KEY_B_HEX "\n", *error;

	if (keys == NULL)
		CHECK(trib_trace_keys_parse(text, strlen(text), "fuzz", &keys,
					    &error) == 0);
	return keys;
}

static bool is_wsp(char c)
{
	return c == ' ' || c == '\t';
}

/* The value with blanks around ';' and at the ends removed and every ';'
 * followed by one space: the builder's spelling. */
static char *normalize(const char *value, size_t len)
{
	char *out = trib_malloc(2 * len + 1);
	size_t i, n = 0;

	for (i = 0; i < len; i++) {
		if (is_wsp(value[i]))
			continue;
		if (value[i] == ';') {
			out[n++] = ';';
			out[n++] = ' ';
		} else {
			out[n++] = value[i];
		}
	}
	out[n] = '\0';
	return out;
}

static void check_error(const char *error)
{
	CHECK(error != NULL && error[0] != '\0' && strchr(error, '\n') == NULL);
}

/* Mode 0. */
static void fuzz_block(const char *block, size_t size)
{
	struct trib_trace_keys *keys = fuzz_keys();
	struct trib_trace *trace, *again;
	const char *error = NULL;
	char *value, *line, *norm;
	size_t len, line_len;
	int found, ret;

	found = trib_trace_header_find(block, size, &value, &len);
	CHECK(found == 0 || found == 1);
	ret = trib_trace_header_verify(block, size, keys, RCPT, &trace, &error);
	if (found == 0) {
		CHECK(value == NULL && ret == 0 && trace == NULL);
		return;
	}
	CHECK(value != NULL && value[len] == '\0' && len <= size);
	if (ret != 1) {
		CHECK(ret == -1 && trace == NULL);
		check_error(error);
		free(value);
		return;
	}
	CHECK(trace != NULL && strcmp(trace->fields.recipient, RCPT) == 0);
	/* Not for anyone else. */
	CHECK(trib_trace_parse_verify(value, len, keys, "bob", &again,
				      &error) == -1 &&
	      again == NULL);
	/* Rebuild: same header, when it was signed with the current key and
	 * nothing in it was hashed or left out. */
	if (strcmp(trace->key_id, trib_trace_keys_id(keys, 0)) == 0 &&
	    !trace->folder_hashed && !trace->recipient_hashed &&
	    trace->labels_dropped == 0 && trace->flags_dropped == 0) {
		line = trib_trace_header_build(keys, &trace->fields, &line_len,
					       &error);
		CHECK(line != NULL);
		norm = normalize(value, len);
		CHECK(line_len ==
		      strlen(TRIB_TRACE_HEADER_NAME ": ") + strlen(norm) + 2);
		CHECK(memcmp(line + line_len - strlen(norm) - 2, norm,
			     strlen(norm)) == 0);
		free(norm);
		free(line);
	}
	trib_trace_free(&trace);
	CHECK(trace == NULL);
	free(value);
}

static uint32_t take_u32(const uint8_t *p, size_t len, size_t off)
{
	uint32_t v = 0;
	size_t i;

	for (i = off; i < off + 4 && i < len; i++)
		v = v << 8 | p[i];
	return v;
}

/* The kept items are a subsequence of the non-empty given ones. */
static void check_kept(const char *const *got, unsigned int got_count,
		       unsigned int dropped, const char *const *want,
		       unsigned int want_count)
{
	unsigned int i, j = 0, nonempty = 0;

	for (i = 0; i < want_count; i++)
		nonempty += want[i][0] != '\0' ? 1 : 0;
	CHECK(got_count + dropped == nonempty);
	CHECK(got[got_count] == NULL);
	for (i = 0; i < got_count; i++) {
		while (j < want_count && strcmp(want[j], got[i]) != 0)
			j++;
		CHECK(j < want_count);
		j++;
	}
}

static void check_built(const struct trib_trace_fields *f, const char *line,
			size_t line_len)
{
	struct trib_trace_keys *keys = fuzz_keys();
	unsigned char digest[TRIB_TRACE_DIGEST_SIZE];
	char id[TRIB_TRACE_ID_LEN + 1], *block;
	struct trib_trace *trace;
	const char *error = NULL;
	size_t i;

	CHECK(line_len <= TRIB_TRACE_LINE_MAX && strlen(line) == line_len);
	for (i = 0; i + 2 < line_len; i++)
		CHECK(line[i] >= 0x20 && line[i] < 0x7f);
	CHECK(strcmp(line + line_len - 2, "\r\n") == 0);
	block = trib_strdup_printf("Return-Path: <>\r\nReceived: x\r\n y\r\n"
				   "%sSubject: y\r\n\r\n",
				   line);
	if (trib_trace_header_verify(block, strlen(block), keys, f->recipient,
				     &trace, &error) != 1)
		abort();
	free(block);
	CHECK(strcmp(trace->fields.recipient, f->recipient) == 0);
	CHECK(strcmp(trace->fields.account, f->account) == 0);
	CHECK(strcmp(trace->fields.provider, f->provider) == 0);
	trib_trace_folder_digest(f->folder, digest);
	CHECK(memcmp(digest, trace->folder_digest, sizeof(digest)) == 0);
	CHECK(trace->folder_hashed ||
	      strcmp(trace->fields.folder, f->folder) == 0);
	CHECK(trace->fields.uidvalidity == f->uidvalidity &&
	      trace->fields.uid == f->uid &&
	      trace->fields.have_gm_msgid == f->have_gm_msgid &&
	      trace->fields.gm_msgid == f->gm_msgid);
	CHECK(trace->fields.have_labels == f->have_labels &&
	      trace->fields.have_flags == f->have_flags);
	if (f->have_labels)
		check_kept(trace->fields.labels, trace->fields.label_count,
			   trace->labels_dropped, f->labels, f->label_count);
	if (f->have_flags)
		check_kept(trace->fields.flags, trace->fields.flag_count,
			   trace->flags_dropped, f->flags, f->flag_count);
	trib_trace_id(f, id);
	CHECK(strcmp(id, trace->id) == 0);
	trib_trace_free(&trace);
}

/* Mode 1. */
static void fuzz_fields(const uint8_t *data, size_t size)
{
	const char *labels[MAX_PARTS], *flags[MAX_PARTS], *error = NULL;
	struct trib_trace_fields f;
	char *copy = trib_strndup((const char *)data, size), *parts[MAX_PARTS];
	unsigned int nparts = 0, i;
	size_t pos = 0, line_len;
	char *line;

	while (pos <= size && nparts < MAX_PARTS) {
		parts[nparts++] = copy + pos;
		pos += strlen(copy + pos) + 1;
	}
	memset(&f, 0, sizeof(f));
	f.uidvalidity = take_u32(data, strlen(parts[0]), 0);
	f.uid = take_u32(data, strlen(parts[0]), 4);
	f.gm_msgid = (uint64_t)take_u32(data, strlen(parts[0]), 8) << 32 |
		     take_u32(data, strlen(parts[0]), 12);
	f.have_gm_msgid = f.gm_msgid != 0;
	f.recipient = nparts > 1 ? parts[1] : "";
	f.folder = nparts > 2 ? parts[2] : "INBOX";
	f.account = "work";
	f.provider = "gmail";
	f.labels = labels;
	f.flags = flags;
	for (i = 3; i < nparts; i++) {
		if (parts[i][0] == 'L') {
			labels[f.label_count++] = parts[i] + 1;
			f.have_labels = true;
		} else if (parts[i][0] == 'F') {
			flags[f.flag_count++] = parts[i] + 1;
			f.have_flags = true;
		} else if (parts[i][0] == 'A') {
			f.account = parts[i] + 1;
		}
	}
	line = trib_trace_header_build(fuzz_keys(), &f, &line_len, &error);
	if (line == NULL) {
		check_error(error);
		CHECK(f.uidvalidity == 0 || f.uid == 0 ||
		      f.recipient[0] == '\0' || f.folder[0] == '\0' ||
		      strcmp(f.account, "work") != 0);
	} else {
		check_built(&f, line, line_len);
		free(line);
	}
	free(copy);
}

/* Mode 2. */
static void fuzz_key_file(const char *text, size_t size)
{
	struct trib_trace_keys *keys;
	unsigned char mac[TRIB_TRACE_MAC_SIZE];
	const char *error = NULL;
	unsigned int i, j, count;

	if (trib_trace_keys_parse(text, size, "fuzz", &keys, &error) < 0) {
		CHECK(keys == NULL);
		check_error(error);
		return;
	}
	count = trib_trace_keys_count(keys);
	CHECK(count >= 1 && count <= TRIB_TRACE_KEYS_MAX);
	CHECK(trib_trace_keys_id(keys, count) == NULL);
	for (i = 0; i < count; i++) {
		const char *id = trib_trace_keys_id(keys, i);

		CHECK(strlen(id) == TRIB_TRACE_KEY_ID_LEN);
		CHECK(trib_trace_keys_mac(keys, id, "x", 1, mac));
		for (j = 0; j < i; j++)
			CHECK(strcmp(id, trib_trace_keys_id(keys, j)) != 0);
	}
	trib_trace_keys_destroy(&keys);
	CHECK(keys == NULL);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	if (size == 0)
		return 0;
	switch (data[0] % 3) {
	case 0:
		fuzz_block((const char *)data + 1, size - 1);
		break;
	case 1:
		fuzz_fields(data + 1, size - 1);
		break;
	default:
		fuzz_key_file((const char *)data + 1, size - 1);
		break;
	}
	return 0;
}
