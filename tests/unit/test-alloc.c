/* test-alloc.c: the arena pool and the allocation helpers. */

#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>

#include <cmocka.h>

#include "alloc.h"

#include <stdlib.h>
#include <string.h>

static void test_pool_alignment_and_zero(void **state)
{
	struct trib_pool *pool = trib_pool_create(64);

	(void)state;
	for (size_t size = 1; size < 200; size += 7) {
		unsigned char *p = trib_pool_alloc(pool, size);

		assert_int_equal((uintptr_t)p % 16, 0);
		for (size_t i = 0; i < size; i++)
			assert_int_equal(p[i], 0);
		memset(p, 0xaa, size);
	}
	trib_pool_destroy(&pool);
	assert_null(pool);
}

static void test_pool_large_blocks_and_clear(void **state)
{
	struct trib_pool *pool = trib_pool_create(128);
	char *small1, *big, *small2;

	(void)state;
	small1 = trib_pool_strdup(pool, "abc");
	big = trib_pool_alloc(pool, 10000);
	small2 = trib_pool_strdup(pool, "def");
	memset(big, 'x', 10000);
	assert_string_equal(small1, "abc");
	assert_string_equal(small2, "def");
	assert_true(trib_pool_used(pool) >= 10000 + 32);
	trib_pool_clear(pool);
	assert_int_equal(trib_pool_used(pool), 0);
	small1 = trib_pool_printf(pool, "%d-%s", 42, "x");
	assert_string_equal(small1, "42-x");
	trib_pool_clear(pool);
	trib_pool_clear(pool);
	trib_pool_destroy(&pool);
	trib_pool_destroy(&pool); /* NULL is fine */
}

static void test_strings(void **state)
{
	char *s = trib_strdup_printf("%s=%u", "n", 7u);
	char *n = trib_strndup("abcdef", 3);
	char *secret = trib_strdup("hunter2");

	(void)state;
	assert_string_equal(s, "n=7");
	assert_string_equal(n, "abc");
	trib_secret_free(&secret);
	assert_null(secret);
	trib_secret_free(&secret);
	free(s);
	free(n);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_pool_alignment_and_zero),
		cmocka_unit_test(test_pool_large_blocks_and_clear),
		cmocka_unit_test(test_strings),
	};

	return cmocka_run_group_tests(tests, NULL, NULL);
}
