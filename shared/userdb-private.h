#ifndef TRIB_USERDB_PRIVATE_H
#define TRIB_USERDB_PRIVATE_H

/* userdb-private.h: what userdb.c (the client, its requests and their
 * delivery) and userdb-conn.c (the sockets: handshake, replies, timers)
 * share. See userdb.c for the protocol. */

#include "userdb.h"

#include <event2/bufferevent.h>
#include <event2/event.h>
#include <stdbool.h>
#include <stdint.h>

#define USERDB_PROTOCOL_MAJOR 1
#define USERDB_HANDSHAKE "VERSION\t1\t0\n"
#define USERDB_SERVICE "tributary"
/* The auth service reads a request into a 1024-byte buffer and drops the
 * connection when a line does not fit (MAX_INBUF_SIZE there). */
#define USERDB_MAX_REQUEST 1024u
/* The longest (escaped) name that fits with a 10-digit id. */
#define USERDB_MAX_NAME                                                        \
	(USERDB_MAX_REQUEST -                                                  \
	 sizeof("USER\t4294967295\t\tservice=" USERDB_SERVICE "\n") + 1)
#define USERDB_DEFAULT_TIMEOUT_SECS 30
#define USERDB_DEFAULT_MAX_LINE (1024 * 1024)
#define USERDB_DEFAULT_MAX_USERS 1000000
#define USERDB_DEFAULT_MAX_FIELDS 10000
/* Timed-out lookups whose late answers one connection still expects. */
#define USERDB_MAX_ABANDONED 64

enum userdb_kind {
	USERDB_LOOKUP,
	USERDB_LIST,
};

struct userdb_request {
	/* In its connection's list while waiting, then in the client's
	 * delivery queue. */
	struct userdb_request *prev, *next;
	struct trib_userdb_client *client;
	struct userdb_conn *conn;
	enum userdb_kind kind;
	unsigned int id;
	char *user;	 /* lookup: the name asked for, sanitized, in pool */
	char *wire_name; /* and as sent */
	trib_userdb_lookup_callback_t *lookup_cb;
	trib_userdb_list_callback_t *list_cb;
	void *context;
	struct event *timer;
	uint64_t input_mark; /* conn->reads when sent */

	/* the answer */
	int result;
	char *error;
	struct trib_pool *pool;
	struct trib_userdb_user user_answer;
	const char **names;
	unsigned int name_count, name_alloc;
};

struct userdb_conn {
	struct userdb_conn *prev, *next;
	struct trib_userdb_client *client;
	struct bufferevent *bev;
	bool for_list;
	bool version_seen, handshake_done;
	struct userdb_request *requests, *requests_tail; /* oldest first */
	unsigned int abandoned[USERDB_MAX_ABANDONED];
	unsigned int abandoned_count;
	uint64_t reads;
};

struct trib_userdb_client {
	struct trib_loop *loop;
	char *prefix; /* "userdb socket PATH" */
	char *socket_path;
	unsigned int timeout_secs;
	struct trib_userdb_limits limits;
	const struct trib_logger *logger;

	struct userdb_conn *conns;
	struct userdb_conn *lookup_conn;
	unsigned int last_id;

	struct userdb_request *done_head, *done_tail;
	struct event *deliver_event;
	bool delivering, destroyed;
};

/* userdb.c */
/* Queue req's answer for delivery (result as the callbacks get it). */
void trib_userdb_request_finish(struct userdb_request *req, int result,
				const char *error);
void trib_userdb_request_fail(struct userdb_request *req, const char *fmt, ...)
	TRIB_ATTR_PRINTF(2, 3);

/* userdb-conn.c */
/* Close conn, failing its requests; logged at idle_level when it had
 * none waiting. */
void trib_userdb_conn_fail(struct userdb_conn *conn,
			   enum trib_log_level idle_level, const char *fmt, ...)
	TRIB_ATTR_PRINTF(3, 4);
/* Send req on a connection (opened when needed) and start its timer. */
void trib_userdb_request_send(struct userdb_request *req);

#endif
