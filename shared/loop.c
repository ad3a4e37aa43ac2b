/* loop.c: libevent base + evdns. */

#include "loop.h"

#include "alloc.h"

#include <event2/dns.h>
#include <event2/event.h>
#include <stdlib.h>

struct trib_loop_hook {
	struct trib_loop_hook *prev, *next;
	void (*callback)(void *context);
	void *context;
};

struct trib_loop {
	struct event_base *base;
	struct evdns_base *dns;
	/* Destroy hooks, newest first. */
	struct trib_loop_hook *hooks;
};

struct trib_loop *trib_loop_create(const char **error_r)
{
	struct trib_loop *loop;
	struct event_base *base;

	base = event_base_new();
	if (base == NULL) {
		*error_r = "cannot create the event loop (libevent)";
		return NULL;
	}
	loop = trib_calloc(1, sizeof(*loop));
	loop->base = base;
	/* Nameservers from /etc/resolv.conf and names from /etc/hosts; with
	 * no resolv.conf evdns falls back to 127.0.0.1, which is harmless. */
	loop->dns =
		evdns_base_new(base, EVDNS_BASE_INITIALIZE_NAMESERVERS |
					     EVDNS_BASE_DISABLE_WHEN_INACTIVE);
	if (loop->dns == NULL)
		loop->dns = evdns_base_new(base, 0);
	if (loop->dns == NULL) {
		event_base_free(base);
		free(loop);
		*error_r = "cannot create the DNS resolver (libevent evdns)";
		return NULL;
	}
	return loop;
}

/* Run what is already active (no waiting): a bufferevent freed while one
 * of its deferred callbacks was queued keeps a reference until that
 * callback has run, and event_base_free() drops queued callbacks without
 * running them, so without this the bufferevent would never be freed. */
static void loop_drain(struct event_base *base)
{
	for (int i = 0; i < 16; i++) {
		if (event_base_get_num_events(base, EVENT_BASE_COUNT_ACTIVE) ==
		    0)
			break;
		event_base_loop(base, EVLOOP_NONBLOCK);
	}
}

struct trib_loop_hook *trib_loop_add_destroy_hook(struct trib_loop *loop,
						  void (*callback)(void *),
						  void *context)
{
	struct trib_loop_hook *hook = trib_calloc(1, sizeof(*hook));

	hook->callback = callback;
	hook->context = context;
	hook->next = loop->hooks;
	if (loop->hooks != NULL)
		loop->hooks->prev = hook;
	loop->hooks = hook;
	return hook;
}

void trib_loop_remove_destroy_hook(struct trib_loop *loop,
				   struct trib_loop_hook **_hook)
{
	struct trib_loop_hook *hook = *_hook;

	if (hook == NULL)
		return;
	if (hook->prev != NULL)
		hook->prev->next = hook->next;
	else
		loop->hooks = hook->next;
	if (hook->next != NULL)
		hook->next->prev = hook->prev;
	free(hook);
	*_hook = NULL;
}

/* Each hook is unlinked and freed before it runs, so it may remove (or
 * add) others. */
static void loop_run_hooks(struct trib_loop *loop)
{
	while (loop->hooks != NULL) {
		struct trib_loop_hook *hook = loop->hooks;
		void (*callback)(void *) = hook->callback;
		void *context = hook->context;

		loop->hooks = hook->next;
		if (loop->hooks != NULL)
			loop->hooks->prev = NULL;
		free(hook);
		callback(context);
	}
}

void trib_loop_destroy(struct trib_loop **loop)
{
	if (*loop == NULL)
		return;
	loop_run_hooks(*loop);
	loop_drain((*loop)->base);
	evdns_base_free((*loop)->dns, 0);
	loop_drain((*loop)->base);
	event_base_free((*loop)->base);
	free(*loop);
	*loop = NULL;
}

struct event_base *trib_loop_base(struct trib_loop *loop)
{
	return loop->base;
}

struct evdns_base *trib_loop_dns(struct trib_loop *loop)
{
	return loop->dns;
}

void trib_loop_run(struct trib_loop *loop)
{
	event_base_dispatch(loop->base);
}

void trib_loop_break(struct trib_loop *loop)
{
	event_base_loopbreak(loop->base);
}
