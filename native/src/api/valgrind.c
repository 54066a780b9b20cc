/* SPDX-License-Identifier: GPL-2.0-only */
/*
 * Valgrind (memcheck) support, compiled in by `scons valgrind=1` (PF_VALGRIND)
 * and active only when the process runs under valgrind: the public API tells
 * memcheck that fragments are heap blocks, so a user's program linked against
 * pyfrag gets leak reports, use-after-free and overrun errors for its
 * fragments as it would for malloc's blocks.
 *
 * Contract:
 * - Every fragment the C API hands out is a VALGRIND_MALLOCLIKE_BLOCK; every
 *   successful free a VALGRIND_FREELIKE_BLOCK of the fragment's start, found
 *   from any interior address in a side table (pf_free takes any byte of a
 *   fragment; memcheck wants the start).
 * - The first fragment an explicit cache cuts from a page (a fresh or
 *   recycled page, offset 0) marks the whole page NOACCESS first: the bytes
 *   between and after fragments are not the program's to touch. The default
 *   cache (pf_alloc) is left alone there, as the malloc front shares it.
 * - The side table lives in pyfrag's own mmap'd memory (never malloc) and
 *   keeps its keys inverted, so memcheck's leak scan finds no pointer to a
 *   fragment in it: a fragment nobody points to is reported lost.
 * - Not covered: the malloc front (under valgrind, memcheck's own malloc is
 *   the one in use). A cache's current page address points at its first
 *   fragment: drain or destroy caches before exit for exact leak reports.
 */
#include "api/api.h"

#ifdef PF_VALGRIND

#include <valgrind/memcheck.h>

struct vg_entry {
	uintptr_t key;  /* ~start; 0 empty, VG_TOMB deleted */
	uint64_t size;
};
#define VG_TOMB ((uintptr_t)1)
#define VG_FIRST_CAPACITY ((size_t)1 << 16)

static pthread_mutex_t vg_lock = PTHREAD_MUTEX_INITIALIZER;
static struct vg_entry *table;
static size_t capacity, filled; /* filled counts live entries and tombstones */

static size_t home(uintptr_t key)
{
	uint64_t h = (uint64_t)key * 0x9e3779b97f4a7c15ull;
	return (size_t)(h ^ (h >> 29)) & (capacity - 1);
}

static struct vg_entry *lookup(uintptr_t start)
{
	if (!table)
		return NULL;
	uintptr_t key = ~start;
	for (size_t i = home(key);; i = (i + 1) & (capacity - 1)) {
		if (table[i].key == key)
			return &table[i];
		if (table[i].key == 0)
			return NULL;
	}
}

static void put(uintptr_t key, uint64_t size)
{
	size_t i = home(key);
	while (table[i].key != 0 && table[i].key != VG_TOMB)
		i = (i + 1) & (capacity - 1);
	if (table[i].key == 0)
		filled++;
	table[i] = (struct vg_entry){ key, size };
}

/* Room for one more entry: a table twice the size when half full. False if no memory. */
static bool make_room(void)
{
	if (table && (filled + 1) * 2 <= capacity)
		return true;
	size_t old_capacity = capacity;
	struct vg_entry *old = table;
	size_t new_capacity = old ? old_capacity * 2 : VG_FIRST_CAPACITY;
	struct vg_entry *fresh = pf__os_map_meta(new_capacity * sizeof(*fresh));
	if (!fresh)
		return false;
	table = fresh;
	capacity = new_capacity;
	filled = 0;
	for (size_t i = 0; old && i < old_capacity; i++)
		if (old[i].key != 0 && old[i].key != VG_TOMB)
			put(old[i].key, old[i].size);
	if (old)
		pf__os_unmap(old, old_capacity * sizeof(*old));
	return true;
}

/* The live fragment holding addr, searching back to its page's first byte; NULL if none. */
static struct vg_entry *containing(const void *addr)
{
	struct pf_page *head = pf__head_page(addr);
	if (!head)
		return NULL;
	uintptr_t first = (uintptr_t)pf__page_address(head);
	for (uintptr_t a = (uintptr_t)addr;; a--) {
		struct vg_entry *e = lookup(a);
		if (e)
			return (uintptr_t)addr - a < e->size ? e : NULL;
		if (a == first)
			return NULL;
	}
}

void *pf__vg_alloc(const struct pf_cache *cache, void *p, size_t size, bool owns_page)
{
	if (!p || !RUNNING_ON_VALGRIND)
		return p;
	pthread_mutex_lock(&vg_lock);
	if (owns_page && (uintptr_t)p == cache->va)
		(void)VALGRIND_MAKE_MEM_NOACCESS((void *)cache->va, cache->size);
	if (make_room())
		put(~(uintptr_t)p, size);
	VALGRIND_MALLOCLIKE_BLOCK(p, size, 0, 0);
	pthread_mutex_unlock(&vg_lock);
	return p;
}

uintptr_t pf__vg_free_begin(const void *addr)
{
	if (!addr || !RUNNING_ON_VALGRIND)
		return 0;
	pthread_mutex_lock(&vg_lock); /* held across the free: no one reuses the bytes meanwhile */
	struct vg_entry *e = containing(addr);
	return e ? ~e->key : 1; /* 1: locked, nothing to tell memcheck */
}

void pf__vg_free_end(uintptr_t start, int freed)
{
	if (start == 0)
		return;
	if (start != 1 && freed == 0) {
		struct vg_entry *e = lookup(start);
		if (e)
			e->key = VG_TOMB;
		VALGRIND_FREELIKE_BLOCK((void *)start, 0);
	}
	pthread_mutex_unlock(&vg_lock);
}

#else

typedef int pf_no_valgrind; /* ISO C wants something in a translation unit */

#endif /* PF_VALGRIND */
