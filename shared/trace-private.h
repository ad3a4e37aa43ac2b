/* trace-private.h: what trace.c (building, the trace id) and
 * trace-parse.c (parsing, verifying, finding) share. Private to those
 * two files; not installed. */

#ifndef TRIB_TRACE_PRIVATE_H
#define TRIB_TRACE_PRIVATE_H

#include "trace.h"

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#define HEX64_LEN (2 * TRIB_TRACE_DIGEST_SIZE)
#define MAC_B64_LEN 43
#define CONST_LEN(str) (sizeof(str) - 1)

/* Output into a buffer of known size; overflow aborts. */
struct out {
	char *buf;
	size_t len;
	size_t size;
};

bool trib_trace_char_unreserved(unsigned char c);
bool trib_trace_name_valid(const char *name, size_t len);
void trib_trace_sha256(const void *data, size_t size,
		       unsigned char digest_r[TRIB_TRACE_DIGEST_SIZE]);

void trib_trace_out_mem(struct out *out, const void *data, size_t len);
void trib_trace_out_str(struct out *out, const char *str);
void trib_trace_out_char(struct out *out, char c);
void trib_trace_out_hex(struct out *out, const unsigned char *data,
			size_t size);

/* The MAC of text (the value before "; m="), as base64url into mac_r
 * (MAC_B64_LEN + 1 bytes). False: no key with that id. */
bool trib_trace_mac_text(const struct trib_trace_keys *keys, const char *key_id,
			 const char *text, size_t len, char *mac_r);

void trib_trace_id_compute(const char *account, bool have_gm_msgid,
			   uint64_t gm_msgid, const unsigned char *digest,
			   uint32_t uidvalidity, uint32_t uid,
			   char id_r[TRIB_TRACE_ID_LEN + 1]);

#endif
