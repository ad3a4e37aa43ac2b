/* alloc.c: allocation that aborts on failure, and the arena pool. */

#include "alloc.h"

#include <openssl/crypto.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static TRIB_ATTR_NORETURN void out_of_memory(size_t size)
{
	fprintf(stderr, "tributary: out of memory (allocating %zu bytes)\n",
		size);
	abort();
}

void *trib_malloc(size_t size)
{
	void *ptr = malloc(size == 0 ? 1 : size);

	if (ptr == NULL)
		out_of_memory(size);
	return ptr;
}

void *trib_calloc(size_t nmemb, size_t size)
{
	void *ptr = calloc(nmemb == 0 ? 1 : nmemb, size == 0 ? 1 : size);

	if (ptr == NULL)
		out_of_memory(nmemb * size);
	return ptr;
}

void *trib_realloc(void *ptr, size_t size)
{
	void *new_ptr = realloc(ptr, size == 0 ? 1 : size);

	if (new_ptr == NULL)
		out_of_memory(size);
	return new_ptr;
}

char *trib_strndup(const char *str, size_t len)
{
	char *copy = trib_malloc(len + 1);

	memcpy(copy, str, len);
	copy[len] = '\0';
	return copy;
}

char *trib_strdup(const char *str)
{
	return trib_strndup(str, strlen(str));
}

char *trib_strdup_vprintf(const char *fmt, va_list args)
{
	va_list copy;
	int len;
	char *str;

	va_copy(copy, args);
	len = vsnprintf(NULL, 0, fmt, copy);
	va_end(copy);
	if (len < 0)
		abort();
	str = trib_malloc((size_t)len + 1);
	vsnprintf(str, (size_t)len + 1, fmt, args);
	return str;
}

char *trib_strdup_printf(const char *fmt, ...)
{
	va_list args;
	char *str;

	va_start(args, fmt);
	str = trib_strdup_vprintf(fmt, args);
	va_end(args);
	return str;
}

void trib_secret_free(char **secret)
{
	if (*secret == NULL)
		return;
	OPENSSL_cleanse(*secret, strlen(*secret));
	free(*secret);
	*secret = NULL;
}

/* ---- arena ---- */

#define POOL_ALIGN 16
#define POOL_DEFAULT_BLOCK 4096

struct pool_block {
	struct pool_block *next;
	size_t size; /* usable bytes in data[] */
	size_t used;
	_Alignas(POOL_ALIGN) unsigned char data[];
};

struct trib_pool {
	size_t block_size;
	struct pool_block *blocks; /* newest first */
	size_t used_total;
};

static struct pool_block *pool_block_new(size_t size)
{
	struct pool_block *block = trib_malloc(sizeof(*block) + size);

	block->next = NULL;
	block->size = size;
	block->used = 0;
	return block;
}

struct trib_pool *trib_pool_create(size_t block_size)
{
	struct trib_pool *pool = trib_calloc(1, sizeof(*pool));

	pool->block_size = block_size == 0 ? POOL_DEFAULT_BLOCK : block_size;
	return pool;
}

static void pool_free_blocks(struct pool_block *block)
{
	while (block != NULL) {
		struct pool_block *next = block->next;

		free(block);
		block = next;
	}
}

void trib_pool_destroy(struct trib_pool **pool)
{
	if (*pool == NULL)
		return;
	pool_free_blocks((*pool)->blocks);
	free(*pool);
	*pool = NULL;
}

void trib_pool_clear(struct trib_pool *pool)
{
	struct pool_block *keep = pool->blocks;

	if (keep == NULL)
		return;
	/* Keep the newest block only if it is a normal-sized one: a huge
	 * one-off block should not stay pinned. */
	pool_free_blocks(keep->next);
	keep->next = NULL;
	if (keep->size > pool->block_size) {
		free(keep);
		pool->blocks = NULL;
	} else {
		keep->used = 0;
	}
	pool->used_total = 0;
}

void *trib_pool_alloc(struct trib_pool *pool, size_t size)
{
	struct pool_block *block = pool->blocks;
	size_t aligned;
	void *ptr;

	if (size > SIZE_MAX - POOL_ALIGN)
		out_of_memory(size);
	aligned = (size + POOL_ALIGN - 1) & ~(size_t)(POOL_ALIGN - 1);
	if (aligned == 0)
		aligned = POOL_ALIGN;
	if (block == NULL || block->size - block->used < aligned) {
		size_t new_size =
			aligned > pool->block_size ? aligned : pool->block_size;

		block = pool_block_new(new_size);
		if (aligned > pool->block_size && pool->blocks != NULL) {
			/* Oversized: put it behind the current block so the
			 * current one keeps serving small allocations. */
			block->next = pool->blocks->next;
			pool->blocks->next = block;
		} else {
			block->next = pool->blocks;
			pool->blocks = block;
		}
	}
	ptr = block->data + block->used;
	block->used += aligned;
	pool->used_total += aligned;
	memset(ptr, 0, size);
	return ptr;
}

char *trib_pool_strndup(struct trib_pool *pool, const char *str, size_t len)
{
	char *copy = trib_pool_alloc(pool, len + 1);

	memcpy(copy, str, len);
	copy[len] = '\0';
	return copy;
}

char *trib_pool_strdup(struct trib_pool *pool, const char *str)
{
	return trib_pool_strndup(pool, str, strlen(str));
}

char *trib_pool_printf(struct trib_pool *pool, const char *fmt, ...)
{
	va_list args, copy;
	int len;
	char *str;

	va_start(args, fmt);
	va_copy(copy, args);
	len = vsnprintf(NULL, 0, fmt, copy);
	va_end(copy);
	if (len < 0)
		abort();
	str = trib_pool_alloc(pool, (size_t)len + 1);
	vsnprintf(str, (size_t)len + 1, fmt, args);
	va_end(args);
	return str;
}

size_t trib_pool_used(const struct trib_pool *pool)
{
	return pool->used_total;
}
