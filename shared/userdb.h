#ifndef TRIB_USERDB_H
#define TRIB_USERDB_H

/* userdb.h: a client of Dovecot's auth userdb protocol (the auth-master
 * protocol spoken on auth-userdb and on the tributary-userdb listener the
 * drop-in adds), on the event loop, over a UNIX socket.
 *
 * The fetcher runs as the `tributary` user and asks Dovecot's auth service
 * for one user and its userdb fields (USER), or for every user name (LIST).
 *
 * Lookups share one connection, opened on the first request and opened
 * again on the next request after it failed; several may be in flight.
 * Each LIST gets a connection of its own, closed when it is done: the auth
 * service stops reading a connection while it iterates and refuses a
 * second LIST on it.
 *
 * Every callback fires exactly once, never inside the call that started
 * the request: with the answer, with an error (timeout, connection lost,
 * protocol error), or with "canceled" from trib_userdb_client_destroy().
 *
 * Errors are one line naming the socket and the cause, e.g.
 * "userdb socket /run/dovecot/tributary-userdb: Permission denied (...)".
 *
 * The host must ignore SIGPIPE (a write to a socket the server closed
 * would otherwise kill the process).
 *
 * Owns: its connections, the requests and their results. Borrows: the
 * loop and the logger, which must outlive the client. */

#include "log.h"

#include <stddef.h>

struct trib_loop;
struct trib_userdb_client;

/* One userdb field, tab-unescaped. A field Dovecot sends without "=" (a
 * flag such as "nologin") has the value "". Keys are as Dovecot sends
 * them: without the "userdb_" prefix that passdb extra fields and
 * passwd-file entries use to set them. */
struct trib_userdb_field {
	const char *key;
	const char *value;
};

struct trib_userdb_user {
	/* The name Dovecot answered with, which may differ from the one
	 * asked for: auth_username_format (default %Lu) lowercases it, and
	 * a userdb may rename the user. */
	const char *name;
	const struct trib_userdb_field *fields;
	unsigned int count;
};

/* Ceilings on what the server may send; 0 in a field means its default. */
struct trib_userdb_limits {
	/* Bytes in one reply line, LF included (default 1 MiB). */
	size_t max_line;
	/* Users in one LIST answer, duplicates included (default
	 * 1,000,000). */
	unsigned int max_users;
	/* Fields in one USER answer (default 10,000). */
	unsigned int max_fields;
};

/* result: 1 found, 0 not found (NOTFOUND), -1 error. user is non-NULL
 * only with 1; error only with -1. Both are valid during the callback
 * only. */
typedef void trib_userdb_lookup_callback_t(int result,
					   const struct trib_userdb_user *user,
					   const char *error, void *context);

/* result: 1 listed (count may be 0), -1 error. users holds count names,
 * sorted (strcmp) and without duplicates (Dovecot lists a user once per
 * userdb that can iterate), then a NULL. Valid during the callback only. */
typedef void trib_userdb_list_callback_t(int result, const char *const *users,
					 unsigned int count, const char *error,
					 void *context);

/* Nothing is connected until the first request. socket_path is copied.
 * timeout_secs bounds each request from the call to its answer (0 = 30);
 * a LIST's clock starts again at every user name it receives. A lookup
 * that times out while the connection still brings other answers is
 * failed alone (its late answer is dropped); when nothing at all came
 * back, the connection is closed and all its requests fail. */
struct trib_userdb_client *
trib_userdb_client_create(struct trib_loop *loop, const char *socket_path,
			  unsigned int timeout_secs,
			  const struct trib_logger *logger);
/* Every callback not called yet fires with -1 and "...: canceled" before
 * this returns, even for an answer that has arrived; connections are
 * closed. Safe inside a callback. A request those callbacks start on the
 * dying client is canceled the same way. Sets *client to NULL; NULL is
 * fine. */
void trib_userdb_client_destroy(struct trib_userdb_client **client);

/* Takes effect for every line read from now on; NULL = the defaults. */
void trib_userdb_client_set_limits(struct trib_userdb_client *client,
				   const struct trib_userdb_limits *limits);

/* USER: the user and its userdb fields, asked for with service=tributary.
 * A name that is empty, holds TAB, CR or LF, or is longer than 989 bytes
 * (a request line over the 1024 bytes the auth service reads makes it
 * drop the connection) is refused here (-1), without asking. Dovecot
 * itself answers NOTFOUND (0) for a name with a character outside
 * auth_username_chars. user is copied. */
void trib_userdb_lookup(struct trib_userdb_client *client, const char *user,
			trib_userdb_lookup_callback_t *callback, void *context);

/* LIST: every user name that the userdbs able to iterate know. Fails (-1)
 * when none can (static, or a listener whose peer may not list). */
void trib_userdb_list(struct trib_userdb_client *client,
		      trib_userdb_list_callback_t *callback, void *context);

/* The value of the first field named key (case-sensitive, as Dovecot
 * compares), or NULL. */
const char *trib_userdb_field_get(const struct trib_userdb_user *user,
				  const char *key);

#endif
