#ifndef TRIB_ALLOC_H
#define TRIB_ALLOC_H

/* alloc.h: allocation that never returns NULL, and an arena pool.
 *
 * Allocation failure aborts the process (after one line on stderr): there
 * are no out-of-memory branches anywhere else in Tributary.
 *
 * A trib_pool is an arena: many small allocations, freed together by
 * trib_pool_clear() or trib_pool_destroy(). It owns every block it hands
 * out; callers never free them one by one. */

#include <stdarg.h>
#include <stddef.h>

#define TRIB_ATTR_PRINTF(fmt, args) __attribute__((format(printf, fmt, args)))
#define TRIB_ATTR_NORETURN __attribute__((noreturn))
#define TRIB_N_ELEMENTS(arr) (sizeof(arr) / sizeof((arr)[0]))

void *trib_malloc(size_t size);
void *trib_calloc(size_t nmemb, size_t size);
void *trib_realloc(void *ptr, size_t size);
char *trib_strdup(const char *str);
/* The len bytes at str (all of them are read: unlike strndup(), a NUL
 * does not end the copy; cap a C string with strnlen() first), plus a
 * NUL. */
char *trib_strndup(const char *str, size_t len);
char *trib_strdup_printf(const char *fmt, ...) TRIB_ATTR_PRINTF(1, 2);
char *trib_strdup_vprintf(const char *fmt, va_list args) TRIB_ATTR_PRINTF(1, 0);

/* Wipe a NUL-terminated secret with OPENSSL_cleanse(), free it and set
 * *secret to NULL. NULL is fine. */
void trib_secret_free(char **secret);

struct trib_pool;

/* block_size: the size of each chunk the arena grabs (0 = 4 KiB). */
struct trib_pool *trib_pool_create(size_t block_size);
void trib_pool_destroy(struct trib_pool **pool);
/* Free everything allocated so far; keeps one block for reuse. */
void trib_pool_clear(struct trib_pool *pool);
/* Zero-filled, aligned for any type. */
void *trib_pool_alloc(struct trib_pool *pool, size_t size);
char *trib_pool_strndup(struct trib_pool *pool, const char *str, size_t len);
char *trib_pool_strdup(struct trib_pool *pool, const char *str);
char *trib_pool_printf(struct trib_pool *pool, const char *fmt, ...)
	TRIB_ATTR_PRINTF(2, 3);
/* Bytes handed out since the last clear (for tests and benchmarks). */
size_t trib_pool_used(const struct trib_pool *pool);

#endif
