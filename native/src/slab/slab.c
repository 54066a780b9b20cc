/* SPDX-License-Identifier: GPL-2.0-only */
/*
 * slab: size-class pages with a free list each (see slab.h for the shape).
 *
 * Who writes what:
 * - free, used, next/prev: the owner thread only; carved too, but a free
 *   from another thread reads it (relaxed: it only grows while the page lives).
 * - remote: any thread pushes (compare-and-swap); the owner takes the whole
 *   list at once (exchange). Bit 0 set means abandoned: the owner exited.
 * - An abandoned page belongs to abandoned_lock: a free onto it (from any
 *   thread, under the lock) goes onto its free list, the last one gives the
 *   page back, and a page with room waits on its class's abandoned list for
 *   a thread that needs a page of that class to adopt it (its blocks are
 *   reused, not only freed: the way mimalloc reclaims abandoned pages). A
 *   free that saw the tag re-checks it under the lock: the page may have
 *   been adopted meanwhile, and then it is an ordinary remote free.
 * - heap: the owner sets it, and clears it when abandoning. A remote free
 *   reads it before pushing (while its block keeps the page alive) to set its
 *   heap's hint bit; the heap is pool memory that is never unmapped, so a
 *   stale hint lands harmlessly in whatever heap is there now.
 *
 * A free block's second word holds a per-process key mixed with its address
 * (the freed mark): a second free of the same block sees it and is refused.
 * A pointer that is not a block start (checked with a reciprocal multiply,
 * not a division) or lies in the part of the page never handed out is refused too.
 */
#include "slab/slab.h"

#include <errno.h>
#include <string.h>
#include <sys/auxv.h>

#define PF_SLAB_ABANDONED ((uintptr_t)1)

const uint8_t pf__slab_class_small[65] = {
	0,  0,  1,  2,  3,  4,  5,  6,  7,                  /* 0..128 in 16-byte steps */
	8,  8,  9,  9,  10, 10, 11, 11,                     /* 160, 192, 224, 256 */
	12, 12, 12, 12, 13, 13, 13, 13, 14, 14, 14, 14, 15, 15, 15, 15, /* 320..512 */
	16, 16, 16, 16, 16, 16, 16, 16, 17, 17, 17, 17, 17, 17, 17, 17, /* 640, 768 */
	18, 18, 18, 18, 18, 18, 18, 18, 19, 19, 19, 19, 19, 19, 19, 19, /* 896, 1024 */
};
uint32_t pf__slab_class_size[PF_SLAB_CLASSES];
static uint8_t class_order[PF_SLAB_CLASSES];
static uint32_t class_capacity[PF_SLAB_CLASSES];
uint64_t pf__slab_class_recip[PF_SLAB_CLASSES]; /* ceil(2^40 / size) */
uintptr_t pf__slab_free_key;

static struct pf_pool slab_pool = { .object_size = sizeof(struct pf_slab) };
/* The current page of a class with none yet: nothing free, so the fast path goes slow. */
static struct pf_slab no_page = { .free = NULL };

static _Atomic uint64_t slab_pages, slab_page_bytes, abandoned_pages;

pthread_mutex_t pf__slab_abandoned_lock = PTHREAD_MUTEX_INITIALIZER;
/* per class, abandoned pages with room (linked through next/prev); written under the lock */
static _Atomic(struct pf_slab *) abandoned_list[PF_SLAB_CLASSES];

static struct pf_slab *abandoned_front(unsigned cls)
{
	return atomic_load_explicit(&abandoned_list[cls], memory_order_relaxed);
}
static _Atomic uint64_t retired_allocs, retired_frees, retired_alloc_bytes, retired_free_bytes;

/* ---- classes ------------------------------------------------------------------------ */

static uint32_t size_of_class(unsigned cls)
{
	if (cls < 8)
		return 16u * (cls + 1);
	if (cls < 20) { /* 4 per doubling from 128 */
		unsigned k = cls - 8, bit = 7 + k / 4;
		return (1u << bit) + ((k % 4) + 1) * (1u << (bit - 2));
	}
	unsigned k = cls - 20, bit = 10 + k / 8; /* 8 per doubling from 1024 */
	return (1u << bit) + ((k % 8) + 1) * (1u << (bit - 3));
}

/* The smallest page order (0, then 3..6) holding at least four blocks with at most 1/8 unused. */
static unsigned order_of_class(uint32_t size)
{
	static const unsigned orders[] = { 0, 3, 4, 5, 6 };
	for (unsigned i = 0; i < sizeof(orders) / sizeof(orders[0]); i++) {
		uint32_t bytes = PF_PAGE_SIZE << orders[i];
		uint32_t n = bytes / size;
		if (n >= 4 && (bytes - n * size) * 8 <= bytes)
			return orders[i];
	}
	return 6;
}

static uintptr_t read_random_key(void)
{
	uintptr_t key = 0;
	const void *random = (const void *)getauxval(AT_RANDOM); /* 16 random bytes from the kernel */
	if (random)
		memcpy(&key, random, sizeof(key)); /* not aligned: a copy */
	key ^= (uintptr_t)&key; /* and the stack's randomised address */
	return key | 1;
}

void pf__slab_init(void)
{
	for (unsigned cls = 0; cls < PF_SLAB_CLASSES; cls++) {
		uint32_t size = size_of_class(cls);
		pf__slab_class_size[cls] = size;
		class_order[cls] = (uint8_t)order_of_class(size);
		class_capacity[cls] = (PF_PAGE_SIZE << class_order[cls]) / size;
		pf__slab_class_recip[cls] = (((uint64_t)1 << PF_SLAB_RECIP_SHIFT) + size - 1) / size;
	}
	pf__slab_free_key = read_random_key();
}

/* ---- pages ---------------------------------------------------------------------------- */

/*
 * A class's other pages: a circular doubly linked list, pages[cls] its
 * front (pages with room go there), the front's prev its back.
 */
static void list_unlink(struct pf_slab_heap *heap, struct pf_slab *s)
{
	struct pf_slab **front = &heap->pages[s->cls];
	if (s->next == s) {
		*front = NULL;
	} else {
		s->prev->next = s->next;
		s->next->prev = s->prev;
		if (*front == s)
			*front = s->next;
	}
	s->next = s->prev = NULL;
}

/* Before the front: the back of the list. */
static void list_push_back(struct pf_slab_heap *heap, struct pf_slab *s)
{
	struct pf_slab *front = heap->pages[s->cls];
	if (!front) {
		s->next = s->prev = s;
		heap->pages[s->cls] = s;
		return;
	}
	s->next = front;
	s->prev = front->prev;
	front->prev->next = s;
	front->prev = s;
}

static void list_push_front(struct pf_slab_heap *heap, struct pf_slab *s)
{
	list_push_back(heap, s);
	heap->pages[s->cls] = s;
}

static struct pf_slab *page_new(struct pf_slab_heap *heap, unsigned cls)
{
	struct pf_page *page = pf__pages_alloc(heap->pcp, class_order[cls], PF_GFP_NORESERVE);
	if (!page)
		return NULL;
	pthread_mutex_lock(&pf__meta_lock);
	struct pf_slab *s = pf__pool_get(&slab_pool);
	pthread_mutex_unlock(&pf__meta_lock);
	if (!s) {
		pf__pages_free(heap->pcp, page);
		errno = ENOMEM;
		return NULL;
	}
	s->block_size = pf__slab_class_size[cls];
	s->capacity = class_capacity[cls];
	s->base = (uintptr_t)pf__page_address(page);
	s->page = page;
	s->cls = (uint8_t)cls;
	atomic_store_explicit(&s->heap, heap, memory_order_relaxed);
	page->next = (uint32_t)(uintptr_t)s;
	page->prev = (uint32_t)((uintptr_t)s >> 32);
	page->flags |= PF_PF_SLAB;
	atomic_fetch_add_explicit(&slab_pages, 1, memory_order_relaxed);
	atomic_fetch_add_explicit(&slab_page_bytes, (uint64_t)PF_PAGE_SIZE << page->order,
				  memory_order_relaxed);
	return s;
}

/* No block of the page is out: the page goes back to the page allocator (pcp: the caller's lists). */
static void page_release(struct pf_slab *s, struct pf_pcp *pcp)
{
	struct pf_page *page = s->page;
	atomic_fetch_sub_explicit(&slab_pages, 1, memory_order_relaxed);
	atomic_fetch_sub_explicit(&slab_page_bytes, (uint64_t)PF_PAGE_SIZE << page->order,
				  memory_order_relaxed);
	page->flags &= (uint8_t)~PF_PF_SLAB;
	page->next = PF_NIL;
	page->prev = PF_NIL;
	atomic_store_explicit(&page->refcount, 0, memory_order_relaxed);
	pthread_mutex_lock(&pf__meta_lock);
	pf__pool_put(&slab_pool, s);
	pthread_mutex_unlock(&pf__meta_lock);
	pf__pages_free(pcp, page);
}

/* ---- the owner takes back remote frees ------------------------------------------------ */

/* Move the page's remote frees onto its free list; returns how many there were. */
static uint32_t take_remote(struct pf_slab_heap *heap, struct pf_slab *s)
{
	if (atomic_load_explicit(&s->remote, memory_order_relaxed) == 0)
		return 0;
	void **block = (void **)atomic_exchange_explicit(&s->remote, 0, memory_order_acquire);
	uint32_t n = 0;
	while (block) {
		void **next = block[0];
		block[0] = s->free;
		s->free = block;
		block = next;
		n++;
	}
	s->used -= n;
	atomic_store_explicit(&heap->frees[s->cls],
			      atomic_load_explicit(&heap->frees[s->cls], memory_order_relaxed) + n,
			      memory_order_relaxed);
	return n;
}

/* A hint said some page of cls got remote frees: take them all; empty pages go back. */
static void take_remote_class(struct pf_slab_heap *heap, unsigned cls)
{
	struct pf_slab *s = heap->pages[cls];
	if (!s)
		return;
	struct pf_slab *last = s->prev;
	for (;;) {
		struct pf_slab *next = s->next;
		bool at_end = s == last;
		if (take_remote(heap, s)) {
			list_unlink(heap, s);
			if (s->used == 0)
				page_release(s, heap->pcp);
			else
				list_push_front(heap, s);
		}
		if (at_end)
			break;
		s = next;
	}
}

/* ---- allocation ----------------------------------------------------------------------- */

static void *pop(struct pf_slab_heap *heap, struct pf_slab *s)
{
	void **block = s->free;
	s->free = block[0];
	block[1] = NULL;
	s->used++;
	pf__local_inc(&heap->allocs[s->cls]);
	return block;
}

static uint32_t carved(const struct pf_slab *s)
{
	return atomic_load_explicit(&s->carved, memory_order_relaxed);
}

static void *carve(struct pf_slab_heap *heap, struct pf_slab *s)
{
	uint32_t n = carved(s);
	void **block = (void **)(s->base + (uintptr_t)n * s->block_size);
	atomic_store_explicit(&s->carved, n + 1, memory_order_relaxed);
	block[1] = NULL; /* a mark left by the page's earlier life would read as a free block */
	s->used++;
	pf__local_inc(&heap->allocs[s->cls]);
	return block;
}

static bool has_room(const struct pf_slab *s)
{
	return s->free || carved(s) < s->capacity;
}

static struct pf_slab *adopt(struct pf_slab_heap *heap, unsigned cls);

void *pf__slab_alloc_slow(struct pf_slab_heap *heap, unsigned cls)
{
	struct pf_slab *s = heap->current[cls];
	if (s != &no_page) {
		if (carved(s) < s->capacity)
			return carve(heap, s);
		if (take_remote(heap, s))
			return pop(heap, s);
		list_push_back(heap, s); /* full: to the back, behind the pages with room */
		heap->current[cls] = &no_page;
	}
	uint64_t bit = (uint64_t)1 << cls;
	if (atomic_load_explicit(&heap->remote_classes, memory_order_relaxed) & bit) {
		atomic_fetch_and_explicit(&heap->remote_classes, ~bit, memory_order_relaxed);
		take_remote_class(heap, cls);
	}
	s = heap->pages[cls];
	if (s && has_room(s)) {
		list_unlink(heap, s);
	} else if ((s = adopt(heap, cls)) == NULL) {
		s = page_new(heap, cls);
		if (!s)
			return NULL;
	}
	heap->current[cls] = s;
	return s->free ? pop(heap, s) : carve(heap, s);
}

/* ---- free ------------------------------------------------------------------------------ */

bool pf__slab_is_block(const struct pf_page *head, const void *ptr)
{
	return pf__slab_block_index(pf__slab_of(head), ptr) != UINT32_MAX;
}

static void free_local(struct pf_slab_heap *heap, struct pf_slab *s, void **block)
{
	bool was_full = s->free == NULL;
	block[0] = s->free;
	s->free = block;
	s->used--;
	pf__local_inc(&heap->frees[s->cls]);
	if (s == heap->current[s->cls])
		return;
	if (s->used == 0) {
		list_unlink(heap, s);
		page_release(s, heap->pcp);
	} else if (was_full && carved(s) == s->capacity) {
		list_unlink(heap, s); /* it has room again: to the front */
		list_push_front(heap, s);
	}
}

static void count_retired_free(const struct pf_slab *s)
{
	atomic_fetch_add_explicit(&retired_frees, 1, memory_order_relaxed);
	atomic_fetch_add_explicit(&retired_free_bytes, s->block_size, memory_order_relaxed);
}

/* ---- abandoned pages ---------------------------------------------------------------- */

/* Under the lock: put an abandoned page with room on its class's list, once. */
static void abandoned_list_add(struct pf_slab *s)
{
	struct pf_slab *front = abandoned_front(s->cls);
	s->prev = NULL;
	s->next = front;
	if (front)
		front->prev = s;
	atomic_store_explicit(&abandoned_list[s->cls], s, memory_order_relaxed);
	s->listed = true;
}

static void abandoned_list_del(struct pf_slab *s)
{
	if (s->prev)
		s->prev->next = s->next;
	else
		atomic_store_explicit(&abandoned_list[s->cls], s->next, memory_order_relaxed);
	if (s->next)
		s->next->prev = s->prev;
	s->next = s->prev = NULL;
	s->listed = false;
}

/*
 * A free onto a page whose owner has gone (tag seen): false if the page was
 * adopted before the lock was ours (the caller pushes it as a remote free).
 */
static bool free_abandoned(struct pf_slab_heap *self, struct pf_slab *s, void **block)
{
	pthread_mutex_lock(&pf__slab_abandoned_lock);
	if (!(atomic_load_explicit(&s->remote, memory_order_relaxed) & PF_SLAB_ABANDONED)) {
		pthread_mutex_unlock(&pf__slab_abandoned_lock);
		return false;
	}
	block[0] = s->free;
	s->free = block;
	s->used--;
	count_retired_free(s);
	bool empty = s->used == 0;
	if (empty) {
		if (s->listed)
			abandoned_list_del(s);
		atomic_fetch_sub_explicit(&abandoned_pages, 1, memory_order_relaxed);
	} else if (!s->listed) {
		abandoned_list_add(s);
	}
	pthread_mutex_unlock(&pf__slab_abandoned_lock);
	if (empty)
		page_release(s, self ? self->pcp : NULL);
	return true;
}

/* An abandoned page of cls with room, now heap's (its live blocks counted as heap's), or NULL. */
static struct pf_slab *adopt(struct pf_slab_heap *heap, unsigned cls)
{
	if (!abandoned_front(cls))
		return NULL; /* the common case: no lock */
	pthread_mutex_lock(&pf__slab_abandoned_lock);
	struct pf_slab *s = abandoned_front(cls);
	if (s) {
		abandoned_list_del(s);
		atomic_store_explicit(&s->heap, heap, memory_order_relaxed);
		atomic_store_explicit(&s->remote, 0, memory_order_release); /* frees push again */
		atomic_fetch_sub_explicit(&abandoned_pages, 1, memory_order_relaxed);
		atomic_fetch_add_explicit(&retired_frees, s->used, memory_order_relaxed);
		atomic_fetch_add_explicit(&retired_free_bytes, (uint64_t)s->used * s->block_size,
					  memory_order_relaxed);
		pf__local_add(&heap->allocs[cls], s->used);
	}
	pthread_mutex_unlock(&pf__slab_abandoned_lock);
	return s;
}

static void free_remote(struct pf_slab_heap *self, struct pf_slab *s, void **block)
{
	for (;;) {
		/* read before the push: once the block is on the list the page may go at any time */
		struct pf_slab_heap *owner = atomic_load_explicit(&s->heap, memory_order_acquire);
		uintptr_t old = atomic_load_explicit(&s->remote, memory_order_relaxed);
		bool pushed = false;
		while (!(old & PF_SLAB_ABANDONED)) {
			block[0] = (void *)old;
			if (atomic_compare_exchange_weak_explicit(&s->remote, &old, (uintptr_t)block,
								  memory_order_release, memory_order_relaxed)) {
				pushed = true;
				break;
			}
		}
		if (pushed) {
			if (old == 0 && owner)
				atomic_fetch_or_explicit(&owner->remote_classes, (uint64_t)1 << s->cls,
							 memory_order_relaxed);
			return;
		}
		if (free_abandoned(self, s, block))
			return;
		/* adopted between the tag and the lock: push it to the new owner */
	}
}

enum pf_slab_free_result pf__slab_free(struct pf_slab_heap *self, struct pf_page *head, void *ptr)
{
	struct pf_slab *s = pf__slab_of(head);
	uint32_t index = pf__slab_block_index(s, ptr);
	if (PF_UNLIKELY(index == UINT32_MAX))
		return PF_SLAB_NOT_A_BLOCK;
	void **block = ptr;
	struct pf_slab_heap *owner = atomic_load_explicit(&s->heap, memory_order_relaxed);
	/* never handed out: the untouched part of the page */
	if (PF_UNLIKELY(index >= carved(s)))
		return PF_SLAB_NOT_A_BLOCK;
	if (PF_UNLIKELY((uintptr_t)block[1] == pf__slab_freed_mark(block)))
		return PF_SLAB_DOUBLE_FREE;
	block[1] = (void *)pf__slab_freed_mark(block);
	if (owner == self && self)
		free_local(self, s, block);
	else
		free_remote(self, s, block);
	return PF_SLAB_FREED;
}

/* ---- thread exit ------------------------------------------------------------------------ */

/* The owner is going: blocks still out keep the page, and it waits for an adopter. */
static void abandon(struct pf_slab_heap *heap, struct pf_slab *s)
{
	pthread_mutex_lock(&pf__slab_abandoned_lock);
	void **block = (void **)atomic_exchange_explicit(&s->remote, PF_SLAB_ABANDONED,
							 memory_order_acq_rel);
	uint32_t taken = 0;
	while (block) { /* onto its free list: an adopter reuses them */
		void **next = block[0];
		block[0] = s->free;
		s->free = block;
		block = next;
		taken++;
	}
	s->used -= taken;
	atomic_store_explicit(&heap->frees[s->cls],
			      atomic_load_explicit(&heap->frees[s->cls], memory_order_relaxed) + taken,
			      memory_order_relaxed);
	atomic_store_explicit(&s->heap, NULL, memory_order_relaxed);
	bool empty = s->used == 0;
	if (!empty) {
		atomic_fetch_add_explicit(&abandoned_pages, 1, memory_order_relaxed);
		if (has_room(s))
			abandoned_list_add(s);
	}
	pthread_mutex_unlock(&pf__slab_abandoned_lock);
	if (empty)
		page_release(s, heap->pcp);
}

void pf__slab_heap_abandon(struct pf_slab_heap *heap)
{
	for (unsigned cls = 0; cls < PF_SLAB_CLASSES; cls++) {
		struct pf_slab *s = heap->current[cls];
		heap->current[cls] = &no_page;
		if (s != &no_page)
			abandon(heap, s);
		while ((s = heap->pages[cls]) != NULL) {
			list_unlink(heap, s);
			abandon(heap, s);
		}
		uint64_t allocs = atomic_load_explicit(&heap->allocs[cls], memory_order_relaxed);
		uint64_t frees = atomic_load_explicit(&heap->frees[cls], memory_order_relaxed);
		atomic_fetch_add_explicit(&retired_allocs, allocs, memory_order_relaxed);
		atomic_fetch_add_explicit(&retired_frees, frees, memory_order_relaxed);
		atomic_fetch_add_explicit(&retired_alloc_bytes, allocs * pf__slab_class_size[cls],
					  memory_order_relaxed);
		atomic_fetch_add_explicit(&retired_free_bytes, frees * pf__slab_class_size[cls],
					  memory_order_relaxed);
		atomic_store_explicit(&heap->allocs[cls], 0, memory_order_relaxed);
		atomic_store_explicit(&heap->frees[cls], 0, memory_order_relaxed);
	}
}

void pf__slab_heap_init(struct pf_slab_heap *heap, struct pf_pcp *pcp)
{
	for (unsigned cls = 0; cls < PF_SLAB_CLASSES; cls++)
		heap->current[cls] = &no_page;
	heap->pcp = pcp;
}

/* ---- stats -------------------------------------------------------------------------------- */

void pf__slab_counts_get(struct pf_slab_counts *out)
{
	out->pages = atomic_load_explicit(&slab_pages, memory_order_relaxed);
	out->page_bytes = atomic_load_explicit(&slab_page_bytes, memory_order_relaxed);
	out->abandoned = atomic_load_explicit(&abandoned_pages, memory_order_relaxed);
	out->retired_allocs = atomic_load_explicit(&retired_allocs, memory_order_relaxed);
	out->retired_frees = atomic_load_explicit(&retired_frees, memory_order_relaxed);
	out->retired_allocs_bytes = atomic_load_explicit(&retired_alloc_bytes, memory_order_relaxed);
	out->retired_frees_bytes = atomic_load_explicit(&retired_free_bytes, memory_order_relaxed);
}

void pf__slab_heap_sums(const struct pf_slab_heap *heap, uint64_t *allocs, uint64_t *live_bytes)
{
	uint64_t n = 0, bytes = 0;
	for (unsigned cls = 0; cls < PF_SLAB_CLASSES; cls++) {
		uint64_t a = atomic_load_explicit(&heap->allocs[cls], memory_order_relaxed);
		uint64_t f = atomic_load_explicit(&heap->frees[cls], memory_order_relaxed);
		n += a;
		bytes += (a > f ? a - f : 0) * pf__slab_class_size[cls];
	}
	*allocs = n;
	*live_bytes = bytes;
}
