/* test-loop.c: the event loop frees everything libevent still holds when
 * it is destroyed. libevent's allocations are counted through
 * event_set_mem_functions(), so a leak fails the test in every build, not
 * only under valgrind or ASan. */

#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>

#include <cmocka.h>

#include "loop.h"

#include <event2/bufferevent.h>
#include <event2/event.h>
#include <stdlib.h>
#include <sys/socket.h>
#include <unistd.h>

/* Each block carries its size in front so realloc and free can count. */
static long live_blocks;

static void *count_malloc(size_t size)
{
	size_t *p = malloc(sizeof(max_align_t) + size);

	if (p == NULL)
		return NULL;
	live_blocks++;
	return (char *)p + sizeof(max_align_t);
}

static void *count_realloc(void *ptr, size_t size)
{
	char *p;

	if (ptr == NULL)
		return count_malloc(size);
	p = realloc((char *)ptr - sizeof(max_align_t),
		    sizeof(max_align_t) + size);
	return p == NULL ? NULL : p + sizeof(max_align_t);
}

static void count_free(void *ptr)
{
	if (ptr == NULL)
		return;
	live_blocks--;
	free((char *)ptr - sizeof(max_align_t));
}

static unsigned int read_calls;

static void read_cb(struct bufferevent *bev, void *context)
{
	(void)bev;
	(void)context;
	read_calls++;
}

/* A bufferevent with deferred callbacks, freed while its read callback is
 * queued (what happens when a session is torn down in the same loop turn
 * as the peer's reset arrives): libevent keeps a reference for the queued
 * callback, and event_base_free() alone drops the queue without running
 * it. trib_loop_destroy() must run it so the bufferevent is freed. */
static void test_bufferevent_freed_with_callback_queued(void **state)
{
	struct trib_loop *loop;
	struct bufferevent *bev;
	const char *error;
	long before = live_blocks;
	int fds[2];

	(void)state;
	assert_int_equal(socketpair(AF_UNIX, SOCK_STREAM, 0, fds), 0);
	loop = trib_loop_create(&error);
	assert_non_null(loop);
	bev = bufferevent_socket_new(trib_loop_base(loop), fds[0],
				     BEV_OPT_CLOSE_ON_FREE |
					     BEV_OPT_DEFER_CALLBACKS);
	assert_non_null(bev);
	bufferevent_setcb(bev, read_cb, NULL, NULL, NULL);
	bufferevent_trigger(bev, EV_READ, 0);
	bufferevent_free(bev);
	trib_loop_destroy(&loop);
	assert_null(loop);
	assert_int_equal(read_calls, 0); /* callbacks were cleared by free */
	assert_int_equal(live_blocks, before);
	close(fds[1]);
}

/* The plain case: create and destroy leave nothing behind. */
static void test_create_destroy(void **state)
{
	struct trib_loop *loop;
	const char *error;
	long before = live_blocks;

	(void)state;
	loop = trib_loop_create(&error);
	assert_non_null(loop);
	trib_loop_destroy(&loop);
	assert_int_equal(live_blocks, before);
}

/* Destroy hooks run once each, newest first, while the loop still works;
 * a removed one never runs, and a hook may remove another. */
static char hook_order[8];
static unsigned int hook_runs;
static struct trib_loop *hook_loop;
static struct trib_loop_hook *hook_victim;

static void hook_note(void *context)
{
	hook_order[hook_runs++] = *(const char *)context;
	/* the loop still works: events can be made and freed */
	event_free(evtimer_new(trib_loop_base(hook_loop), NULL, NULL));
}

static void hook_remover(void *context)
{
	hook_note(context);
	trib_loop_remove_destroy_hook(hook_loop, &hook_victim);
	assert_null(hook_victim);
}

static void test_destroy_hooks(void **state)
{
	struct trib_loop_hook *gone;
	const char *error;
	long before = live_blocks;

	(void)state;
	hook_loop = trib_loop_create(&error);
	assert_non_null(hook_loop);
	trib_loop_add_destroy_hook(hook_loop, hook_note, "a");
	gone = trib_loop_add_destroy_hook(hook_loop, hook_note, "x");
	hook_victim = trib_loop_add_destroy_hook(hook_loop, hook_note, "y");
	trib_loop_add_destroy_hook(hook_loop, hook_remover, "b");
	trib_loop_add_destroy_hook(hook_loop, hook_note, "c");
	trib_loop_remove_destroy_hook(hook_loop, &gone);
	assert_null(gone);
	trib_loop_remove_destroy_hook(hook_loop, &gone);
	trib_loop_destroy(&hook_loop);
	assert_int_equal(hook_runs, 3);
	assert_memory_equal(hook_order, "cba", 3);
	assert_int_equal(live_blocks, before);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_create_destroy),
		cmocka_unit_test(test_bufferevent_freed_with_callback_queued),
		cmocka_unit_test(test_destroy_hooks),
	};

	event_set_mem_functions(count_malloc, count_realloc, count_free);
	return cmocka_run_group_tests(tests, NULL, NULL);
}
