#ifndef TRIB_USERDB_PARSE_H
#define TRIB_USERDB_PARSE_H

/* userdb-parse.h: the reply lines of Dovecot's auth userdb protocol (the
 * auth-master protocol, see userdb.c), parsed without I/O.
 *
 * The connection (userdb.c) cuts its input at LF and hands each line,
 * without the LF, to trib_userdb_reply_parse(): that splits it at TAB,
 * names the command and checks the request id. The decoders below then
 * unescape and check what a USER, FAIL, LIST or DONE answer carries.
 * What a line means for the session (handshake state, which request an id
 * belongs to) is the connection's business, not the parser's.
 *
 * Tab-escaping: \001 followed by '1', 't', 'r', 'n' or '0' stands for
 * \001, TAB, CR, LF and NUL. A NUL (escaped or not), an unknown escape and
 * a \001 at the very end are errors.
 *
 * Ownership: every string and array these functions hand out is allocated
 * from the pool the caller passes and lives as long as it does; nothing
 * points into the line given to trib_userdb_reply_parse(), which is only
 * read. Error strings are static or from the pool too, are one line, and
 * hold no control bytes. Nothing here keeps state between calls. */

#include "userdb.h"

#include <stdbool.h>
#include <stddef.h>

struct trib_pool;

enum trib_userdb_reply_type {
	/* A command this client does not know, or one of USER .. DONE
	 * without a valid request id. */
	TRIB_USERDB_REPLY_OTHER,
	/* The handshake: VERSION\t<major>\t<minor>, SPID\t<pid> */
	TRIB_USERDB_REPLY_VERSION,
	TRIB_USERDB_REPLY_SPID,
	/* MECH, CUID or COOKIE: the greeting of an authentication client
	 * socket, not of a userdb listener. */
	TRIB_USERDB_REPLY_AUTH_CLIENT,
	/* Answers to a lookup: USER\t<id>\t<name>\t<key>=<value>...,
	 * NOTFOUND\t<id>, FAIL\t<id>[\treason=<text>] */
	TRIB_USERDB_REPLY_USER,
	TRIB_USERDB_REPLY_NOTFOUND,
	TRIB_USERDB_REPLY_FAIL,
	/* Answers to a LIST: LIST\t<id>\t<name> per user, then
	 * DONE\t<id>\t[fail] */
	TRIB_USERDB_REPLY_LIST,
	TRIB_USERDB_REPLY_DONE,
};

struct trib_userdb_reply {
	enum trib_userdb_reply_type type;
	/* USER .. DONE: the request id, 1 .. 4294967295 (up to 10 digits,
	 * leading zeros allowed). 0 for the other types. */
	unsigned int id;
	/* VERSION: the major version is 1, this client's, and a minor
	 * version follows it. */
	bool version_supported;
	/* The fields after the command and, for USER .. DONE, the id; still
	 * escaped, none holds a TAB. args[count] is NULL. */
	const char *const *args;
	unsigned int count;
};

/* Parse one line (len bytes, without its LF; it need not be
 * NUL-terminated). 0 with *reply_r filled in, or -1 with *error_r for a
 * line that holds a NUL byte. Any other line parses: one the protocol does
 * not allow comes out as TRIB_USERDB_REPLY_OTHER. */
int trib_userdb_reply_parse(struct trib_pool *pool, const char *line,
			    size_t len, struct trib_userdb_reply *reply_r,
			    const char **error_r);

/* USER: the user name and its fields (see struct trib_userdb_field), all
 * unescaped; empty fields are skipped (an answer without fields ends in a
 * TAB). 0, or -1 with *error_r: "got an answer without a user name", "got
 * a user name that holds <what>", "got more than <max_fields> fields", "got
 * a field without a name", "got field <key> that holds <what>". The checks
 * run in that order, fields first to last. */
int trib_userdb_reply_parse_user(struct trib_pool *pool,
				 const struct trib_userdb_reply *reply,
				 unsigned int max_fields,
				 struct trib_userdb_user *user_r,
				 const char **error_r);

/* FAIL: the unescaped text of the first reason= field that unescapes, or
 * NULL when there is none or it is empty. */
const char *
trib_userdb_reply_fail_reason(struct trib_pool *pool,
			      const struct trib_userdb_reply *reply);

/* LIST: the unescaped user name, the (listed + 1)th of this LIST. 0, or
 * -1 with *error_r: "a LIST line without a user name", "more than
 * <max_users> users" (when listed >= max_users), "a user name holds
 * <what>", checked in that order. */
int trib_userdb_reply_parse_list_name(struct trib_pool *pool,
				      const struct trib_userdb_reply *reply,
				      unsigned int listed,
				      unsigned int max_users,
				      const char **name_r,
				      const char **error_r);

/* DONE: true when the LIST failed (DONE\t<id>\tfail). */
bool trib_userdb_reply_done_failed(const struct trib_userdb_reply *reply);

/* Undo the tab-escaping of len bytes of src. NULL with *error_r ("a NUL
 * byte", "an unknown escape", "an escape is cut short") when they do not
 * unescape. */
char *trib_userdb_unescape(struct trib_pool *pool, const char *src, size_t len,
			   const char **error_r);

/* A copy of str fit for a one-line message: control bytes (below 0x20,
 * and 0x7f) become '?', and it is cut after max bytes, "..." marking the
 * cut. */
char *trib_userdb_sanitize(struct trib_pool *pool, const char *str, size_t max);

#endif
