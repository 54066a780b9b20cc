/* SPDX-License-Identifier: GPL-2.0-only */
/*
 * Pools for pyfrag's own small objects (caches, thread states).
 *
 * They never come from malloc: under LD_PRELOAD malloc is pyfrag itself, and
 * a thread's state is made on that thread's first allocation. Objects are
 * carved from 64 KiB mmap'd blocks and recycled through a free list; blocks
 * are kept for the life of the process (a few per thousand threads).
 * Callers hold pf__meta_lock.
 */
#include "memory/memory.h"

#include <errno.h>
#include <string.h>

#define PF_META_BLOCK (64u * 1024u)

pthread_mutex_t pf__meta_lock = PTHREAD_MUTEX_INITIALIZER;

static char *bump;      /* next free byte of the newest block */
static size_t bump_left;

/*
 * No object starts a 4 KiB page. Frag pages are 4 KiB-aligned and the first
 * fragment of a page (the one an alloc+free pair reuses over and over) is
 * written as soon as it is handed out; a cache whose hot fields shared those
 * low 12 address bits would have its loads wait behind those stores (4K
 * aliasing: 0.4-0.5 ns of a 3.8 ns pair through the inline API here).
 */
static void skip_page_start(void)
{
	if (((uintptr_t)bump & (PF_PAGE_SIZE - 1)) == 0 && bump_left >= 64) {
		bump += 64;
		bump_left -= 64;
	}
}

static void *carve(size_t size)
{
	size = (size + 63) & ~(size_t)63; /* own cache line: caches are hot */
	skip_page_start();
	if (bump_left < size) {
		char *block = pf__os_map_meta(PF_META_BLOCK);
		if (!block) {
			errno = ENOMEM;
			return NULL;
		}
		bump = block;
		bump_left = PF_META_BLOCK;
		skip_page_start();
	}
	void *object = bump;
	bump += size;
	bump_left -= size;
	return object;
}

void *pf__pool_get(struct pf_pool *pool)
{
	void *object = pool->free_list;
	if (object)
		pool->free_list = *(void **)object;
	else
		object = carve(pool->object_size);
	if (object) {
		memset(object, 0, pool->object_size);
		pool->live++;
	}
	return object;
}

void pf__pool_put(struct pf_pool *pool, void *object)
{
	*(void **)object = pool->free_list;
	pool->free_list = object;
	pool->live--;
}
