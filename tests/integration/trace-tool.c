/* trace-tool.c: what the LMTP plugin's integration test (test_plugin.py)
 * needs from the core, so that Python never re-implements the MAC or
 * the record format:
 *
 *   trace-tool keygen KEYFILE
 *       a new trace key file, mode 0640, group tributary-trace (when the
 *       group exists); fails when KEYFILE exists
 *   trace-tool headers KEYFILE RECIPIENT ACCOUNT FOLDER UIDVALIDITY UID N
 *       N signed trace headers for UIDs UID..UID+N-1, one a line:
 *       "<trace id> TAB <header line without its CRLF>"
 *   trace-tool count RECORD
 *       "<ids> <capacity>" of a delivered record
 *   trace-tool has RECORD ID
 *       exit 0 when the record holds the trace id, 1 when not
 *
 * Errors: one line on stderr, exit 2. */

#include "alloc.h"
#include "delivered.h"
#include "trace.h"

#include <grp.h>
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static TRIB_ATTR_NORETURN void die(const char *what, const char *error)
{
	fprintf(stderr, "trace-tool: %s: %s\n", what, error);
	exit(2);
}

static uint32_t parse_u32(const char *str)
{
	char *end;
	unsigned long long v = strtoull(str, &end, 10);

	if (*str == '\0' || *end != '\0' || v == 0 || v > UINT32_MAX)
		die(str, "not a number from 1 to 4294967295");
	return (uint32_t)v;
}

static int cmd_keygen(const char *path)
{
	struct group *grp = getgrnam("tributary-trace");
	const char *error;

	if (trib_trace_key_generate(path, NULL,
				    grp != NULL ? grp->gr_gid : (gid_t)-1,
				    &error) < 0)
		die("keygen", error);
	return 0;
}

static int cmd_headers(char **argv)
{
	struct trib_trace_fields fields;
	struct trib_trace_keys *keys;
	uint32_t first = parse_u32(argv[5]), count = parse_u32(argv[6]);
	const char *error;

	if (trib_trace_keys_load(argv[0], &keys, &error) < 0)
		die("keys", error);
	memset(&fields, 0, sizeof(fields));
	fields.recipient = argv[1];
	fields.account = argv[2];
	fields.provider = "imap";
	fields.folder = argv[3];
	fields.uidvalidity = parse_u32(argv[4]);
	for (uint32_t i = 0; i < count; i++) {
		char id[TRIB_TRACE_ID_LEN + 1];
		char *line;
		size_t len;

		fields.uid = first + i;
		line = trib_trace_header_build(keys, &fields, &len, &error);
		if (line == NULL)
			die("build", error);
		trib_trace_id(&fields, id);
		/* without the CRLF */
		printf("%s\t%.*s\n", id, (int)(len - 2), line);
		free(line);
	}
	trib_trace_keys_destroy(&keys);
	return 0;
}

static struct trib_delivered *record_open(const char *path)
{
	struct trib_delivered *rec;
	const char *error;

	if (trib_delivered_open(path, TRIB_DELIVERED_FLAG_READONLY, &rec,
				&error) < 0)
		die("open", error);
	return rec;
}

static int cmd_count(const char *path)
{
	struct trib_delivered *rec = record_open(path);
	uint64_t count, capacity;
	const char *error;

	if (trib_delivered_count(rec, &count, &capacity, &error) < 0)
		die("count", error);
	printf("%" PRIu64 " %" PRIu64 "\n", count, capacity);
	trib_delivered_close(&rec);
	return 0;
}

static int cmd_has(const char *path, const char *hex)
{
	unsigned char id[TRIB_DELIVERED_ID_SIZE];
	struct trib_delivered *rec;
	const char *error;
	int ret;

	if (!trib_delivered_id_parse(hex, id))
		die(hex, "not a trace id");
	rec = record_open(path);
	ret = trib_delivered_lookup(rec, id, &error);
	if (ret < 0)
		die("lookup", error);
	trib_delivered_close(&rec);
	return ret > 0 ? 0 : 1;
}

int main(int argc, char **argv)
{
	if (argc == 3 && strcmp(argv[1], "keygen") == 0)
		return cmd_keygen(argv[2]);
	if (argc == 9 && strcmp(argv[1], "headers") == 0)
		return cmd_headers(argv + 2);
	if (argc == 3 && strcmp(argv[1], "count") == 0)
		return cmd_count(argv[2]);
	if (argc == 4 && strcmp(argv[1], "has") == 0)
		return cmd_has(argv[2], argv[3]);
	fprintf(stderr, "usage: trace-tool keygen KEYFILE\n"
			"       trace-tool headers KEYFILE RECIPIENT ACCOUNT "
			"FOLDER UIDVALIDITY UID N\n"
			"       trace-tool count RECORD\n"
			"       trace-tool has RECORD ID\n");
	return 2;
}
