#ifndef TRIB_LOOP_H
#define TRIB_LOOP_H

/* loop.h: the one event loop (libevent 2.1) that every connection,
 * timer and (later) OAuth transfer of a process runs on, with its evdns
 * resolver so name lookups never block the other accounts.
 *
 * Owns: the event_base and the evdns_base. Everything created on the loop
 * must be destroyed before the loop. */

struct event_base;
struct evdns_base;
struct trib_loop;

/* Returns NULL with *error_r set if libevent cannot start. A resolver
 * that cannot read /etc/resolv.conf still resolves IP literals and
 * /etc/hosts names. */
struct trib_loop *trib_loop_create(const char **error_r);
void trib_loop_destroy(struct trib_loop **loop);

struct event_base *trib_loop_base(struct trib_loop *loop);
struct evdns_base *trib_loop_dns(struct trib_loop *loop);

/* Destroy hooks: objects that keep work on the loop (the HTTP client's
 * transfers) register one so that destroying the loop under them cancels
 * that work cleanly: each hook runs once, newest first, at the start of
 * trib_loop_destroy(), while the loop still works (events can be freed,
 * callbacks fire). A hook is freed when it has run; remove it before
 * that when its object goes away first. */
struct trib_loop_hook;
struct trib_loop_hook *trib_loop_add_destroy_hook(struct trib_loop *loop,
						  void (*callback)(void *),
						  void *context);
/* NULL is fine; sets *hook to NULL. */
void trib_loop_remove_destroy_hook(struct trib_loop *loop,
				   struct trib_loop_hook **hook);

/* Run until trib_loop_break() or no more pending events. */
void trib_loop_run(struct trib_loop *loop);
void trib_loop_break(struct trib_loop *loop);

#endif
