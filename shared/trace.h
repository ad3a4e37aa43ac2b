#ifndef TRIB_TRACE_H
#define TRIB_TRACE_H

/* trace.h: the signed trace header every fetched message carries, and
 * the trace key set that signs it.
 *
 * The fetcher builds one X-Tributary-Trace line per message and sends it
 * before the message's first byte. On the Dovecot side the LMTP plugin
 * finds the topmost X-Tributary-Trace header of the delivered message,
 * verifies its HMAC and its recipient, and keys the exactly-once record
 * on the trace id; the Sieve extension reads the fields. Any other
 * X-Tributary-Trace header (further down, unsigned, forged, or copied from
 * another user's mail) is ignored, never removed: delivery stays byte for
 * byte what the remote server sent.
 *
 * Depends on alloc.c, libc and libcrypto only (it is linked into the
 * Dovecot plugins). Pure apart from trib_trace_keys_load() and
 * trib_trace_key_generate(); it never prints.
 *
 * Owns: a parsed struct trib_trace owns everything it points to (one
 * pool); the builder borrows the fields and the keys, and hands back a
 * malloc()ed line. The key set owns the key bytes (see below).
 *
 * The header (docs/trace-header.md has the full story):
 *
 *   line     = "X-Tributary-Trace: " value CRLF    ; at most 998 bytes
 *   value    = "v=1" "; k=" key-id
 *              ( "; r=" pstring / "; rh=" hex64 )  ; recipient
 *              "; a=" name "; p=" name           ; account, provider
 *              ( "; f=" pstring / "; fh=" hex64 )  ; remote folder
 *              "; uv=" num32 "; u=" num32          ; UIDVALIDITY, UID
 *              [ "; gm=" num64 ]                   ; X-GM-MSGID
 *              [ "; l=" list [ "; ld=" num32 ] ]   ; labels, how many left out
 *              [ "; fl=" list [ "; fd=" num32 ] ]  ; remote flags, left out
 *              "; m=" mac
 *   key-id   = 8 lowercase hex digits
 *   name     = 1*32 ( %x61-7A / DIGIT / "_" / "-" )   ; [a-z0-9_-]
 *   pstring  = 1*( unreserved / "%" UHEX UHEX )
 *   unreserved = ALPHA / DIGIT / "-" / "." / "_" / "~" / "!" / "$" /
 *              "&" / "'" / "*" / "+" / "/" / ":" / "@" / "[" / "]" /
 *              "\" / "^" / "{" / "|" / "}"
 *   list     = [ pstring *( "," pstring ) ]        ; empty: known, none
 *   num32    = %x31-39 *DIGIT                      ; 1..4294967295
 *   num64    = %x31-39 *DIGIT                      ; 1..2^64-1
 *   hex64    = 64 lowercase hex digits             ; SHA-256 of the raw
 *                                                  ; string
 *   mac      = 43 base64url characters, no padding ; HMAC-SHA256
 *
 * pstring is percent-encoding, canonical: a byte is written as itself
 * exactly when it is unreserved, otherwise as "%" and two uppercase hex
 * digits; %00 never appears. So every value has exactly one spelling.
 * The fields appear in this order only. The MAC is HMAC-SHA256 under the
 * key named by k= over "tributary-trace-mac" LF followed by the value up
 * to (not including) "; m=", exactly as written above (single "; "
 * separators). Readers accept extra spaces and tabs around the ";"
 * separators and at either end (what refolding leaves behind): the MAC
 * is checked over the canonical text rebuilt from the fields.
 *
 * Absent vs empty: no l= means "labels unknown" (not Gmail); "l=" with
 * nothing after it means "known: no labels". The same for fl=.
 *
 * The length cap: when a line would exceed TRIB_TRACE_LINE_MAX, the
 * builder, in this order, (1) hashes the folder (fh=) if even with every
 * label and flag left out the line is too long, (2) hashes the recipient
 * (rh=) if it still is, then (3) keeps the flags that fit, in order, and
 * (4) the labels that fit, in order; "ld=N" / "fd=N" count what was left
 * out. So labels go first, then flags, then the folder name, and the line
 * always fits: building never fails on remote data. */

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <sys/types.h>

#define TRIB_TRACE_HEADER_NAME "X-Tributary-Trace"
/* The whole line: name, ": ", value and CRLF. */
#define TRIB_TRACE_LINE_MAX 998
/* Longest value the parser looks at (a refolded value may carry extra
 * whitespace; a valid one is far shorter). */
#define TRIB_TRACE_VALUE_MAX 4096
#define TRIB_TRACE_VERSION 1

#define TRIB_TRACE_KEY_SIZE 32
#define TRIB_TRACE_KEY_ID_LEN 8
/* A key file holds at most this many keys. */
#define TRIB_TRACE_KEYS_MAX 16
#define TRIB_TRACE_MAC_SIZE 32
#define TRIB_TRACE_DIGEST_SIZE 32
#define TRIB_TRACE_ID_LEN 32

/* ---- keys (trace-key.c) ----
 *
 * The key file is text: one key per line, 64 hex digits (32 bytes), the
 * current key first, older keys after it (still accepted when verifying,
 * never used to sign). Blank lines and lines starting with '#' are
 * ignored; spaces, tabs and a CR around a key are allowed. A key's id is
 * derived from it: the first 4 bytes of HMAC-SHA256(key,
 * "tributary-trace-key-id") in lowercase hex, so ids need no bookkeeping
 * and two keys in one file can never share one.
 *
 * Owns: the key bytes, wiped with OPENSSL_cleanse() on destroy; they
 * never leave trace-key.c (MACs are made through trib_trace_keys_mac()).
 *
 * Errors from the functions in this section are one line naming the file,
 * e.g. "trace key /etc/tributary/trace.key: mode 0644 is readable by
 * everyone". They live in a static buffer, valid until the next call of
 * one of these functions (Dovecot processes and the fetcher are single
 * threaded). */

struct trib_trace_keys;

/* Parse the text of a key file (no I/O). name is used in errors. */
int trib_trace_keys_parse(const char *text, size_t size, const char *name,
			  struct trib_trace_keys **keys_r,
			  const char **error_r);
/* Load the key file at path. It must be a regular file (symlinks to one
 * are followed) that others may not access: mode & 007 == 0. It is meant
 * to be root:tributary-trace 0640, read by the fetcher and, through
 * mail_access_groups, by the LMTP and Sieve processes. */
int trib_trace_keys_load(const char *path, struct trib_trace_keys **keys_r,
			 const char **error_r);
void trib_trace_keys_destroy(struct trib_trace_keys **keys);

unsigned int trib_trace_keys_count(const struct trib_trace_keys *keys);
/* The id of key idx (0 = current), or NULL past the end. */
const char *trib_trace_keys_id(const struct trib_trace_keys *keys,
			       unsigned int idx);
/* HMAC-SHA256 of data under the key with this id (NULL: the current key).
 * Returns false when no loaded key has that id. */
bool trib_trace_keys_mac(const struct trib_trace_keys *keys, const char *key_id,
			 const void *data, size_t size,
			 unsigned char mac_r[TRIB_TRACE_MAC_SIZE]);

/* Write a key file with a fresh random key at path, atomically: a
 * temporary file beside it, mode 0640 (and group gid unless it is
 * (gid_t)-1), written, fsync()ed, then moved into place and the directory
 * fsync()ed. keep == NULL creates a new file and fails if path exists
 * (nothing is overwritten). keep != NULL rotates: the new key goes first
 * and keep's keys follow as older keys (the oldest are left out beyond
 * TRIB_TRACE_KEYS_MAX), replacing path. Returns 0 or -1 with *error_r. */
int trib_trace_key_generate(const char *path,
			    const struct trib_trace_keys *keep, gid_t gid,
			    const char **error_r);

/* ---- the header (trace.c) ---- */

/* What the trace header says. Strings are NUL-terminated bytes (any
 * bytes but NUL; folder names as the remote server spells them). */
struct trib_trace_fields {
	/* The local user the message is delivered to: Dovecot's user name,
	 * as the fetcher gives it in RCPT TO without a +detail, and as the
	 * LMTP plugin compares it (byte for byte). */
	const char *recipient;
	/* Account and provider names: [a-z0-9_-]{1,32}. */
	const char *account;
	const char *provider;
	/* The remote folder. NULL only in a parsed trace whose header
	 * carried just the folder's hash (see struct trib_trace). */
	const char *folder;
	uint32_t uidvalidity; /* nonzero */
	uint32_t uid;	      /* nonzero */
	bool have_gm_msgid;
	uint64_t gm_msgid; /* nonzero when have_gm_msgid */
	/* Gmail labels, when known (have_labels); empty strings are
	 * skipped. In a parsed trace the array is NULL-terminated. */
	bool have_labels;
	const char *const *labels;
	unsigned int label_count;
	/* Remote flags and keywords ("\Seen", "$Forwarded"), when known.
	 * List system flags first: they are kept first under the cap. */
	bool have_flags;
	const char *const *flags;
	unsigned int flag_count;
};

/* A verified trace header. Owns everything it points to. */
struct trib_trace {
	/* fields.recipient is always the verified recipient (also when
	 * the header carried only its hash). fields.folder is NULL when
	 * folder_hashed. */
	struct trib_trace_fields fields;
	char key_id[TRIB_TRACE_KEY_ID_LEN + 1];
	bool recipient_hashed;
	bool folder_hashed;
	/* SHA-256 of the folder name, always set. */
	unsigned char folder_digest[TRIB_TRACE_DIGEST_SIZE];
	/* Labels and flags the builder had to leave out (ld=, fd=). */
	unsigned int labels_dropped;
	unsigned int flags_dropped;
	/* trib_trace_id() of the fields. */
	char id[TRIB_TRACE_ID_LEN + 1];
	/* private: holds all of the above */
	struct trib_pool *pool;
};

/* The whole header line, "X-Tributary-Trace: ...\r\n", signed with the
 * current key, at most TRIB_TRACE_LINE_MAX bytes, 7-bit, with no CR or LF
 * but the final CRLF. malloc()ed; *len_r (may be NULL) is its length.
 * Fails (NULL, static *error_r) only on fields the caller must not pass:
 * a NULL or empty recipient or folder, an invalid account or provider
 * name, a zero UIDVALIDITY, UID or X-GM-MSGID, a NULL list item. Never on
 * their length or content. */
char *trib_trace_header_build(const struct trib_trace_keys *keys,
			      const struct trib_trace_fields *fields,
			      size_t *len_r, const char **error_r);

/* Parse a header value (the part after "X-Tributary-Trace:", unfolded)
 * and verify it: well-formed, version 1, a known key id, a matching MAC
 * (compared in constant time), and addressed to recipient (required:
 * the user being delivered to, compared byte for byte). Returns 0 and
 * the trace (free with trib_trace_free()), or -1 with a static *error_r:
 * the header must then be treated as if it were not there. */
int trib_trace_parse_verify(const char *value, size_t size,
			    const struct trib_trace_keys *keys,
			    const char *recipient, struct trib_trace **trace_r,
			    const char **error_r);
void trib_trace_free(struct trib_trace **trace);

/* Find the topmost X-Tributary-Trace header in a message's header block
 * (the bytes up to the empty line; CRLF or bare LF line ends; it may also
 * be the whole message or stop short of the empty line). "Topmost" is the
 * first header field of that name (case-insensitive), wherever it is:
 * LMTP puts Return-Path, Delivered-To and Received before it. Folded
 * continuation lines are joined (the line breaks removed, the whitespace
 * kept) and the value is trimmed. Returns 1 with a malloc()ed,
 * NUL-terminated value (*len_r: its length; it may hold NUL bytes) or 0
 * when there is none. Headers further down are never looked at. */
int trib_trace_header_find(const char *block, size_t size, char **value_r,
			   size_t *len_r);

/* find + parse_verify: 1 with *trace_r when the topmost header verifies
 * for recipient; 0 when there is no trace header; -1 with a static
 * *error_r when the topmost one does not verify (the message is then
 * treated as untraced: the header stays where it is). */
int trib_trace_header_verify(const char *block, size_t size,
			     const struct trib_trace_keys *keys,
			     const char *recipient, struct trib_trace **trace_r,
			     const char **error_r);

/* The trace id that keys the exactly-once record: 32 lowercase hex
 * digits, the first 16 bytes of a SHA-256 over
 *   with an X-GM-MSGID:  "tributary-trace-id" NUL "gm" NUL account NUL
 *                        msgid (8 bytes, big-endian)
 *   otherwise:           "tributary-trace-id" NUL "uid" NUL account NUL
 *                        SHA-256(folder) uidvalidity uid (4 bytes each,
 *                        big-endian)
 * Gmail shows one message in many folders (INBOX, every label, \All),
 * with a different UID in each, and a label's UIDVALIDITY changes when it
 * is renamed: X-GM-MSGID is the one name the message keeps everywhere, so
 * fetching it through INBOX and again through \All is one delivery. (The
 * fetcher therefore always fetches X-GM-MSGID where the server has
 * X-GM-EXT-1.) Elsewhere a message is (folder, UIDVALIDITY, UID) by RFC
 * 3501 2.3.1.1. The account is in the id because two accounts may share
 * folder names and UIDs; the recipient is not, since the record is per
 * user. The folder enters as its hash, so a header that carries only fh=
 * gives the same id. fields->folder must be set unless have_gm_msgid (a
 * parsed trace has its id in trace->id). */
void trib_trace_id(const struct trib_trace_fields *fields,
		   char id_r[TRIB_TRACE_ID_LEN + 1]);

/* SHA-256 of a folder name (what fh= carries, in hex), e.g. for a Sieve
 * :folder test against a header with a hashed folder. */
void trib_trace_folder_digest(const char *folder,
			      unsigned char digest_r[TRIB_TRACE_DIGEST_SIZE]);

#endif
