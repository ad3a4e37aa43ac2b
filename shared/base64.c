/* base64.c: RFC 4648 base64 (standard alphabet, padded, no line breaks)
 * on top of OpenSSL's EVP_EncodeBlock()/EVP_DecodeBlock().
 *
 * OpenSSL's block functions take an int length and are lenient on input
 * (they skip leading and trailing whitespace and count padding as zero
 * bytes), so the decoder validates the whole string itself first and
 * works out the true length from the padding. Both directions run in
 * chunks, so sizes beyond INT_MAX are fine. */

#include "sasl.h"

#include "alloc.h"

#include <openssl/evp.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

/* Multiples of 3 raw bytes / 4 base64 characters: no padding inside. */
#define BASE64_CHUNK_GROUPS 4096
#define BASE64_RAW_CHUNK (3 * BASE64_CHUNK_GROUPS)
#define BASE64_TEXT_CHUNK (4 * BASE64_CHUNK_GROUPS)

char *trib_base64_encode(const void *data, size_t size)
{
	const unsigned char *in = data;
	unsigned char *out;
	size_t groups, pos = 0, out_pos = 0;

	groups = size / 3 + (size % 3 != 0 ? 1 : 0);
	if (groups > (SIZE_MAX - 1) / 4)
		abort();
	out = trib_malloc(groups * 4 + 1);
	while (pos < size) {
		size_t chunk = size - pos;
		int written;

		if (chunk > BASE64_RAW_CHUNK)
			chunk = BASE64_RAW_CHUNK;
		written = EVP_EncodeBlock(out + out_pos, in + pos, (int)chunk);
		if (written < 0)
			abort();
		pos += chunk;
		out_pos += (size_t)written;
	}
	out[out_pos] = '\0';
	return (char *)out;
}

/* The 6-bit value of a base64 alphabet character, or -1. */
static int base64_value(char c)
{
	if (c >= 'A' && c <= 'Z')
		return c - 'A';
	if (c >= 'a' && c <= 'z')
		return c - 'a' + 26;
	if (c >= '0' && c <= '9')
		return c - '0' + 52;
	if (c == '+')
		return 62;
	if (c == '/')
		return 63;
	return -1;
}

/* Check that b64 is canonical base64: a multiple of 4 characters from
 * the alphabet, at most two '=' and only at the very end, and the unused
 * bits before the padding zero. Returns the number of '=' or -1. */
static int base64_validate(const char *b64, size_t len)
{
	size_t i, data_len;
	int pad = 0;

	if (len % 4 != 0)
		return -1;
	if (len > 0 && b64[len - 1] == '=')
		pad++;
	if (len > 1 && b64[len - 2] == '=')
		pad++;
	data_len = len - (size_t)pad;
	for (i = 0; i < data_len; i++) {
		if (base64_value(b64[i]) < 0)
			return -1;
	}
	if (pad == 2 && (base64_value(b64[len - 3]) & 0x0f) != 0)
		return -1;
	if (pad == 1 && (base64_value(b64[len - 2]) & 0x03) != 0)
		return -1;
	return pad;
}

int trib_base64_decode(const char *b64, void **data_r, size_t *size_r)
{
	size_t len = strlen(b64), pos = 0, out_pos = 0;
	unsigned char *out;
	int pad;

	*data_r = NULL;
	*size_r = 0;
	pad = base64_validate(b64, len);
	if (pad < 0)
		return -1;

	out = trib_malloc(len / 4 * 3 + 1);
	while (pos < len) {
		size_t chunk = len - pos;
		int written;

		if (chunk > BASE64_TEXT_CHUNK)
			chunk = BASE64_TEXT_CHUNK;
		written = EVP_DecodeBlock(out + out_pos,
					  (const unsigned char *)b64 + pos,
					  (int)chunk);
		if (written < 0 || (size_t)written != chunk / 4 * 3) {
			/* Cannot happen after validation; fail safe. */
			free(out);
			return -1;
		}
		pos += chunk;
		out_pos += (size_t)written;
	}
	/* EVP_DecodeBlock() counts each '=' as a decoded zero byte. */
	out_pos -= (size_t)pad;
	out[out_pos] = '\0';
	*data_r = out;
	*size_r = out_pos;
	return 0;
}
