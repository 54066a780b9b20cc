/* SPDX-License-Identifier: GPL-2.0-only */
/*
 * Layer 4, slab: the compact small-object route beside page_frag (the
 * kernel's answer to page_frag pinning: small objects from slab). Blocks of
 * one size class per slab page (a buddy block of order 0..6 from the page
 * allocator, head flagged PF_PF_SLAB), a free list per page so a freed block
 * is reused at once, no per-block header: the size comes from the page.
 *
 * Each thread owns a heap (one current page and a list of further pages per
 * class). The owner allocates and frees with no atomic operation; another
 * thread's free goes onto the page's own atomic list, which the owner takes
 * over when its free list runs dry (the design mimalloc uses). When the
 * owner exits, its pages are abandoned: live blocks keep them, a thread that
 * needs a page of their class adopts one with room, and the last free of a
 * page gives it back. Includes only page_frag/page_frag.h.
 */
#ifndef PF_SLAB_H
#define PF_SLAB_H

#include "page_frag/page_frag.h"

#define PF_SLAB_CLASSES 60
#define PF_SLAB_MAX 32768u /* the largest class */

struct pf_slab_heap;

/* One slab page's descriptor (from a pool; found through the head page's next/prev). */
struct pf_slab {
	void *free;          /* the owner's free list, linked through each block's first word */
	uint32_t used;       /* blocks out, as the owner knows it (remote frees not yet taken count) */
	/* blocks handed out at least once; the rest is untouched (read by other threads' frees) */
	_Atomic uint32_t carved;
	uint32_t capacity;
	uint32_t block_size;
	uintptr_t base;
	struct pf_page *page;
	_Atomic(struct pf_slab_heap *) heap; /* owner; NULL once abandoned */
	/* frees by other threads (tag bit 0: abandoned; the page is then pf__slab_abandoned_lock's) */
	_Atomic uintptr_t remote;
	bool listed; /* abandoned, with room, on its class's abandoned list */
	struct pf_slab *next, *prev; /* the owner's list of this class's other pages */
	uint8_t cls;
};

struct pf_slab_heap {
	struct pf_slab *current[PF_SLAB_CLASSES]; /* never NULL: an empty sentinel until the first page */
	struct pf_slab *pages[PF_SLAB_CLASSES];   /* other pages; those with free blocks first */
	/* classes whose pages got a first remote free since the owner last looked (a hint) */
	_Atomic uint64_t remote_classes;
	struct pf_pcp *pcp; /* the owner thread's page lists */
	pf_local_counter allocs[PF_SLAB_CLASSES];
	pf_local_counter frees[PF_SLAB_CLASSES]; /* frees taken back by the owner, remote ones included */
};

/* Size classes: 16-byte steps to 128, four per doubling to 1 KiB, eight per doubling to 32 KiB. */
PF_INTERNAL extern const uint8_t pf__slab_class_small[65]; /* (size + 15) / 16 -> class, up to 1024 */
PF_INTERNAL extern uint32_t pf__slab_class_size[PF_SLAB_CLASSES];

/* The class of a request of 1..PF_SLAB_MAX bytes (0 is taken as 1). */
static inline unsigned pf__slab_class(size_t size)
{
	if (PF_LIKELY(size <= 1024))
		return pf__slab_class_small[(size + 15) >> 4];
	size_t s = size - 1;
	unsigned bit = 63u - (unsigned)__builtin_clzll((unsigned long long)s);
	return 20u + (bit - 10u) * 8u + (unsigned)((s >> (bit - 3u)) & 7u);
}

/* A heap for the calling thread (zeroed memory in): sentinels, the page lists to take pages from. */
PF_INTERNAL void pf__slab_heap_init(struct pf_slab_heap *heap, struct pf_pcp *pcp);
/* Held across fork (preload.c): abandoned pages, their lists and frees. */
PF_INTERNAL extern pthread_mutex_t pf__slab_abandoned_lock;
/* The thread is going: every page is abandoned to its live blocks (or freed if none). */
PF_INTERNAL void pf__slab_heap_abandon(struct pf_slab_heap *heap);
/* Once, at library init. */
PF_INTERNAL void pf__slab_init(void);

/* Everything but a pop from the current page's free list. NULL/ENOMEM. */
PF_INTERNAL void *pf__slab_alloc_slow(struct pf_slab_heap *heap, unsigned cls);

/* The fast path: a pop from the current page's free list, or NULL (then the slow path). */
static inline void *pf__slab_alloc_fast(struct pf_slab_heap *heap, unsigned cls)
{
	struct pf_slab *s = heap->current[cls];
	void **block = s->free;
	if (PF_UNLIKELY(block == NULL))
		return NULL;
	s->free = block[0];
	block[1] = NULL; /* the freed mark (see pf__slab_free) */
	s->used++;
	pf__local_inc(&heap->allocs[cls]);
	return block;
}

static inline void *pf__slab_alloc(struct pf_slab_heap *heap, unsigned cls)
{
	void *block = pf__slab_alloc_fast(heap, cls);
	return PF_LIKELY(block != NULL) ? block : pf__slab_alloc_slow(heap, cls);
}

static inline struct pf_slab *pf__slab_of(const struct pf_page *head)
{
	return (struct pf_slab *)(((uintptr_t)head->prev << 32) | head->next);
}

enum pf_slab_free_result { PF_SLAB_FREED, PF_SLAB_NOT_A_BLOCK, PF_SLAB_DOUBLE_FREE };

PF_INTERNAL extern uintptr_t pf__slab_free_key;
PF_INTERNAL extern uint64_t pf__slab_class_recip[PF_SLAB_CLASSES];
#define PF_SLAB_RECIP_SHIFT 40

/* The block ptr starts, or UINT32_MAX if ptr starts none of this page's (a multiply, not a division). */
static inline uint32_t pf__slab_block_index(const struct pf_slab *s, const void *ptr)
{
	uint64_t offset = (uint64_t)((uintptr_t)ptr - s->base);
	uint64_t index = (offset * pf__slab_class_recip[s->cls]) >> PF_SLAB_RECIP_SHIFT;
	return index * s->block_size == offset && index < s->capacity ? (uint32_t)index : UINT32_MAX;
}

/* A free block's second word: the per-process key mixed with its address. */
static inline uintptr_t pf__slab_freed_mark(const void *block)
{
	return pf__slab_free_key ^ (uintptr_t)block;
}

/*
 * Free ptr, inside the slab page at head, from any thread: self is the
 * calling thread's heap, or NULL for a thread without one. A pointer that is
 * not the start of a block handed out, or a block already free, is refused
 * and nothing changes.
 */
PF_INTERNAL enum pf_slab_free_result pf__slab_free(struct pf_slab_heap *self, struct pf_page *head,
						   void *ptr);

/*
 * The owner's common case, inline: its current page, or another of its
 * pages that keeps other blocks and had room before (nothing to move or give
 * back); no atomic operation, no call.
 * False if ptr is anything else (pf__slab_free then says what it is).
 */
static inline bool pf__slab_free_own(struct pf_slab_heap *self, struct pf_page *head, void *ptr)
{
	struct pf_slab *s = pf__slab_of(head);
	void **block = ptr;
	if (PF_LIKELY(atomic_load_explicit(&s->heap, memory_order_relaxed) == self) &&
	    PF_LIKELY(s == self->current[s->cls] || (s->free != NULL && s->used > 1)) &&
	    /* UINT32_MAX (no block start) is never below carved */
	    PF_LIKELY(pf__slab_block_index(s, ptr) < atomic_load_explicit(&s->carved, memory_order_relaxed)) &&
	    PF_LIKELY((uintptr_t)block[1] != pf__slab_freed_mark(block))) {
		block[1] = (void *)pf__slab_freed_mark(block);
		block[0] = s->free;
		s->free = block;
		s->used--;
		pf__local_inc(&self->frees[s->cls]);
		return true;
	}
	return false;
}

/* Bytes of the block ptr is in (the class size). */
static inline size_t pf__slab_block_size(const struct pf_page *head)
{
	return pf__slab_of(head)->block_size;
}
/* Is ptr the start of a block of this slab page that was handed out? */
PF_INTERNAL bool pf__slab_is_block(const struct pf_page *head, const void *ptr);

/* Process-wide figures, for stats. */
struct pf_slab_counts {
	uint64_t pages;      /* slab pages held (each a buddy block) */
	uint64_t page_bytes; /* their bytes */
	uint64_t abandoned;  /* of those, pages of exited threads kept by live blocks */
	uint64_t retired_allocs, retired_frees_bytes, retired_allocs_bytes, retired_frees;
};
PF_INTERNAL void pf__slab_counts_get(struct pf_slab_counts *out);
/* Allocations and live bytes of one heap (a snapshot, read from any thread). */
PF_INTERNAL void pf__slab_heap_sums(const struct pf_slab_heap *heap, uint64_t *allocs,
				    uint64_t *live_bytes);

#endif /* PF_SLAB_H */
