/* SPDX-License-Identifier: GPL-2.0-only */
/*
 * Layer 2, memory: the private arena (VA regions, 2 MiB chunks committed on
 * demand, one struct pf_page per 4 KiB page), the buddy zone both the
 * private page allocator and every shared arena use, the private page
 * allocator with its per-thread page lists (handed in by the caller: this
 * layer knows no threads) and the emergency reserve, and the fixed-size
 * pools pyfrag's own objects come from. Includes only sys/sys.h.
 */
#ifndef PF_MEMORY_H
#define PF_MEMORY_H

#include "sys/sys.h"

/* ---- the arena (arena.c) ------------------------------------------------------ */

enum pf_page_state {
	PF_PS_UNCOMMITTED = 0, /* chunk not backed */
	PF_PS_FREE,            /* head of a free buddy block */
	PF_PS_FREE_TAIL,       /* inside a free buddy block */
	PF_PS_CACHED,          /* head of a block on a thread's page list */
	PF_PS_IN_USE,          /* head of a block handed out */
	PF_PS_TAIL,            /* inside a block handed out; head_delta leads to the head */
	PF_PS_RESERVE_FREE,    /* a reserve page waiting in the reserve */
};

#define PF_PF_RESERVE 1u /* page belongs to the emergency reserve */
#define PF_PF_RUN 2u     /* malloc front: a page run (the block is one allocation, no header) */
#define PF_PF_CHUNKS 4u  /* head of a chunk run: whole chunks, count in next */
#define PF_PF_SLAB 8u    /* head of a slab page (slab layer; descriptor in next/prev) */
#define PF_PF_EXACT 16u  /* head of an exact page run: a buddy block cut to the pages asked for, count in next */

/* One per 4 KiB page of the arena; 16 bytes. */
struct pf_page {
	_Atomic int32_t refcount; /* head of an in-use block only */
	uint32_t next;            /* free list / page list link (page index); chunk run: chunks */
	union {
		uint32_t prev;       /* free list back link */
		uint32_t head_delta; /* tail: pages back to the head */
	};
	uint8_t order;
	_Atomic uint8_t state; /* enum pf_page_state; pf__state() */
	uint8_t flags; /* PF_PF_* */
	_Atomic uint8_t held; /* a frag page some cache still holds a bias on (page_frag.c) */
};
_Static_assert(sizeof(struct pf_page) == 16, "page metadata stays 16 bytes");

/*
 * A page's state is read without the lock (frees look up the head page; the
 * buddy allocator peeks at a neighbour another thread may be taking off its
 * page list), so it is a relaxed atomic: any value read is a real one.
 */
static inline enum pf_page_state pf__state(const struct pf_page *page)
{
	return (enum pf_page_state)atomic_load_explicit(&page->state, memory_order_relaxed);
}
static inline void pf__set_state(struct pf_page *page, enum pf_page_state state)
{
	atomic_store_explicit(&page->state, (uint8_t)state, memory_order_relaxed);
}

/*
 * A region: one reservation of address space, cut into 2 MiB chunk slots.
 * Its slots are numbered from first_slot in one slot space shared by all
 * regions, so a page's number (slot * 512 + page in chunk) indexes the one
 * page-metadata array whichever region holds it. Written under
 * pf__page_lock; slots is read without it (a trim lowers it).
 */
struct pf_region {
	uintptr_t base;         /* 2 MiB aligned */
	uint32_t first_slot;    /* its first slot's number in the slot space */
	uint32_t index_slots;   /* slot numbers it owns (its size when reserved) */
	_Atomic uint32_t slots; /* slots reserved now (a trim gives back the never-used tail) */
	uint32_t fresh;         /* slots below (counted from first_slot) were used at least once */
	uint32_t released;      /* of those, how many are free again */
};

#define PF_REGIONS_MAX 32

struct pf_arena {
	/* region 0, read by every free: its range check is the common case's only compare */
	uintptr_t base;            /* set once at init */
	_Atomic size_t size;       /* bytes reserved now */
	uint32_t first_pages;      /* page numbers region 0 owns: [0, first_pages) */
	_Atomic uint32_t nregions; /* regions[0 .. nregions) are published (release/acquire) */
	struct pf_page *pages;     /* one per 4 KiB page of the slot space */
	uint32_t chunk_slots;      /* size of the slot space; slot 0 holds the reserve */
	uint32_t next_slot;        /* first slot number no region owns */
	uint8_t *chunk_backing;    /* enum pf_backing per slot */
	uint64_t *released;        /* bitmap: slot used before, now free again */
	size_t cap;                /* PYFRAG_ARENA as clamped: most address space reserved at once */
	size_t reserved;           /* bytes reserved in all regions now */
	struct pf_region regions[PF_REGIONS_MAX];
};

PF_INTERNAL extern struct pf_arena pf__arena;

/*
 * Map the page metadata for a slot space of PYFRAG_ARENA (twice that under
 * an address-space limit, for the holes trims leave) and reserve the first
 * region. 0, or -1 with errno. Once, at init.
 */
PF_INTERNAL int pf__arena_init(size_t size);

/* Slow halves of the lookups below, for pointers outside region 0. */
PF_INTERNAL bool pf__in_other_region(uintptr_t addr);
PF_INTERNAL uint32_t pf__page_index_other(uintptr_t addr);
PF_INTERNAL uintptr_t pf__page_address_other(uint32_t number);

static inline size_t pf__first_region_size(void)
{
	return atomic_load_explicit(&pf__arena.size, memory_order_relaxed);
}

/* Is addr inside one of the arena's regions? One compare for region 0; the table on a miss. */
static inline bool pf__in_arena(const void *addr)
{
	if (PF_LIKELY((uintptr_t)addr - pf__arena.base < pf__first_region_size()))
		return true;
	return PF_UNLIKELY(atomic_load_explicit(&pf__arena.nregions, memory_order_relaxed) > 1) &&
	       pf__in_other_region((uintptr_t)addr);
}
/* The page number of an address inside the arena (pf__in_arena says so). */
static inline uint32_t pf__page_index(const void *addr)
{
	uintptr_t offset = (uintptr_t)addr - pf__arena.base;
	if (PF_LIKELY(offset < pf__first_region_size()))
		return (uint32_t)(offset >> PF_PAGE_SHIFT);
	return pf__page_index_other((uintptr_t)addr);
}
static inline struct pf_page *pf__page_at(uint32_t index)
{
	return &pf__arena.pages[index];
}
static inline uint32_t pf__page_number(const struct pf_page *page)
{
	return (uint32_t)(page - pf__arena.pages);
}
static inline void *pf__page_address(const struct pf_page *page)
{
	uint32_t number = pf__page_number(page);
	if (PF_LIKELY(number < pf__arena.first_pages))
		return (void *)(pf__arena.base + ((uintptr_t)number << PF_PAGE_SHIFT));
	return (void *)pf__page_address_other(number);
}

/*
 * Commit one chunk (caller holds pf__page_lock): backing per PYFRAG_HUGEPAGES,
 * limit checked. Returns its first page number, or PF_NIL.
 */
PF_INTERNAL uint32_t pf__arena_commit_chunk(void);
/*
 * Give a whole free chunk back to the OS (caller holds pf__page_lock): 0, or
 * -1 if the OS refused; the chunk then stays committed, the caller's to keep.
 */
PF_INTERNAL int pf__arena_release_chunk(uint32_t first_page);
/*
 * Commit n contiguous chunks (caller holds pf__page_lock) whose first byte is
 * aligned to align (a power of two, at least 2 MiB), limit checked. Page
 * metadata is left to the caller. Returns the first page number or PF_NIL.
 */
PF_INTERNAL uint32_t pf__arena_commit_run(uint32_t n, size_t align);
/*
 * Release chunks [first_page, +n chunks) of a run (caller holds pf__page_lock):
 * 0, or -1 if the OS refused; the chunks then stay committed, the caller's to keep.
 */
PF_INTERNAL int pf__arena_release_run(uint32_t first_page, uint32_t n);
/* Commit the n chunks right after a run if their slots are free; 0 or -1 (caller holds pf__page_lock). */
PF_INTERNAL int pf__arena_extend_run(uint32_t first_page, uint32_t n, uint32_t more);
/* Commit the reserve pages in slot 0; returns their first page number or PF_NIL. */
PF_INTERNAL uint32_t pf__arena_commit_reserve(uint32_t pages);
/* Any hugetlb chunk committed now? (caller holds pf__page_lock) */
PF_INTERNAL bool pf__arena_has_hugetlb(void);
/*
 * fork with hugetlb chunks (see os.c): in the prepare handler, copy each one
 * into anonymous memory the child inherits and keep the chunk itself out of
 * the child; the parent drops its copies after fork (or its failure), the
 * child puts them in place of the chunks. Caller holds pf__page_lock
 * (prepare, parent); the child has one thread.
 */
PF_INTERNAL void pf__arena_fork_prepare(void);
PF_INTERNAL void pf__arena_fork_parent(void);
PF_INTERNAL void pf__arena_fork_child(void);
struct pf_arena_counts {
	uint64_t by_backing[4]; /* committed chunks per enum pf_backing */
	uint64_t committed_bytes;
	uint64_t peak_committed_bytes;
	uint64_t regions_added; /* regions reserved after the first */
	uint64_t trims;         /* never-used region tails given back to make room */
};
PF_INTERNAL extern struct pf_arena_counts pf__arena_counts; /* under pf__page_lock */

/* ---- one buddy zone over an array of page metadata (buddy.c) ------------------ */

struct pf_zone {
	struct pf_page *pages; /* index 0 is the zone's first page */
	uint32_t max_order;    /* largest block: 2^max_order pages */
	uint32_t reserve_head;
	uint32_t free_head[PF_MAX_ORDER + 1];
	uint64_t free_count[PF_MAX_ORDER + 1];
	uint64_t reserve_free;
	uint64_t pages_out; /* pages outside the free lists and the reserve */
};

/* All of these: caller holds the zone's lock. */
PF_INTERNAL void pf__zone_init(struct pf_zone *zone, struct pf_page *pages, uint32_t max_order);
PF_INTERNAL void pf__zone_list_add(struct pf_zone *zone, unsigned order, uint32_t index);
PF_INTERNAL void pf__zone_list_del(struct pf_zone *zone, unsigned order, uint32_t index);
/* The smallest free block of at least 2^order pages, split down to order; PF_NIL if none. */
PF_INTERNAL uint32_t pf__zone_take(struct pf_zone *zone, unsigned order);
/* Give a block back, merging it with free buddies. */
PF_INTERNAL void pf__zone_put(struct pf_zone *zone, uint32_t index, unsigned order);
/* Mark a taken block: head in state with one reference, tails leading to it. */
PF_INTERNAL struct pf_page *pf__zone_mark(struct pf_zone *zone, uint32_t index, unsigned order,
					  enum pf_page_state state);
PF_INTERNAL struct pf_page *pf__zone_reserve_take(struct pf_zone *zone); /* NULL if empty */
PF_INTERNAL void pf__zone_reserve_put(struct pf_zone *zone, struct pf_page *page);
/* Remake every list from the page states (pages 0..npages); returns the pages in use. */
PF_INTERNAL uint64_t pf__zone_rebuild(struct pf_zone *zone, uint32_t npages);

/* ---- the private page allocator (page_alloc.c) --------------------------------- */

#define PF_GFP_NORETRY 1u   /* fail fast: no new chunk, no reserve */
#define PF_GFP_NORESERVE 2u /* never take an emergency-reserve page */

PF_INTERNAL extern pthread_mutex_t pf__page_lock;

struct pf_pcp;
/*
 * A block of 2^order pages holding one reference, or NULL with errno ENOMEM.
 * pcp: the calling thread's page lists, or NULL for a thread without them
 * (orders 0 and 3 are taken from and refilled into them).
 */
PF_INTERNAL struct pf_page *pf__pages_alloc(struct pf_pcp *pcp, unsigned order, unsigned gfp);
/*
 * Return a block whose refcount reached zero (reserve pages go to the
 * reserve, chunk runs to the OS); pcp: the freeing thread's lists, or NULL.
 */
PF_INTERNAL void pf__pages_free(struct pf_pcp *pcp, struct pf_page *head);

/*
 * A run of exactly n pages (1..512) aligned to 2^align_order pages, holding
 * one reference, flagged PF_PF_EXACT with n in next: the smallest buddy block
 * that holds it, the pages past n given back at once (the kernel's
 * alloc_pages_exact). pf__pages_free gives back the n pages. NULL/ENOMEM.
 */
PF_INTERNAL struct pf_page *pf__pages_alloc_exact(uint32_t n, unsigned align_order);
static inline uint32_t pf__exact_run_pages(const struct pf_page *head)
{
	return head->next;
}

/*
 * A run of n whole chunks (n >= 1) aligned to align, holding one reference,
 * flagged PF_PF_CHUNKS; *fresh says its memory is known to be zero. NULL/ENOMEM.
 * Only the head page (and each chunk's first page, a tail) is marked.
 */
PF_INTERNAL struct pf_page *pf__chunks_alloc(uint32_t n, size_t align, bool *fresh);
static inline uint32_t pf__chunk_run_length(const struct pf_page *head)
{
	return head->next;
}
/* Shrink a chunk run to n chunks (n >= 1), or grow it in place: 0, or -1 if the chunks after it are taken. */
PF_INTERNAL int pf__chunks_resize(struct pf_page *head, uint32_t n);

/* Head page of an in-use block containing addr, or NULL if addr is not in one. */
static inline struct pf_page *pf__head_page(const void *addr)
{
	if (PF_UNLIKELY(!pf__in_arena(addr)))
		return NULL;
	struct pf_page *page = pf__page_at(pf__page_index(addr));
	if (pf__state(page) == PF_PS_TAIL)
		page -= page->head_delta;
	return PF_LIKELY(pf__state(page) == PF_PS_IN_USE) ? page : NULL;
}

/* Per-thread page lists (the kernel's pcp lists) for orders 0 and 3. */
#define PF_PCP_ORDERS 2
struct pf_pcp {
	uint32_t head[PF_PCP_ORDERS];
	_Atomic uint32_t count[PF_PCP_ORDERS]; /* written by the owner, read by stats */
};
/* Give every block on these lists back to the buddy allocator. */
PF_INTERNAL void pf__pcp_flush(struct pf_pcp *pcp);
/* Release empty chunks beyond PYFRAG_RETAIN; returns chunks released. */
PF_INTERNAL size_t pf__release_empty_chunks(void);
PF_INTERNAL int pf__page_alloc_init(void);

struct pf_page_counts {
	uint64_t pages_out;    /* pages outside the buddy lists and the reserve (in use or on page lists) */
	uint64_t empty_chunks; /* free order-9 blocks */
	uint64_t reserve_free;
};
/* A consistent copy, taken under pf__page_lock. */
PF_INTERNAL void pf__page_counts_get(struct pf_page_counts *out);
/* Pages held on a thread's page lists. */
PF_INTERNAL uint64_t pf__pcp_pages(const struct pf_pcp *pcp);

/* Is page in the private arena's metadata? */
static inline bool pf__private_page(const struct pf_page *page)
{
	return (uintptr_t)page - (uintptr_t)pf__arena.pages <
	       (uintptr_t)pf__arena.chunk_slots * PF_CHUNK_PAGES * sizeof(struct pf_page);
}

/* pf_page_query's answer for a head page at address head (private or shared). */
PF_INTERNAL void pf__page_info(const struct pf_page *page, uintptr_t head, pf_page_info_t *out);

/* ---- pools for pyfrag's own objects (pools.c) ------------------------------------ */

/*
 * pyfrag's own objects (caches, thread states) come from fixed-size pools of
 * mmap'd memory, never from malloc: under LD_PRELOAD, malloc is pyfrag.
 */
struct pf_pool {
	size_t object_size;
	void *free_list;
	uint64_t live;
};
PF_INTERNAL extern pthread_mutex_t pf__meta_lock;
PF_INTERNAL void *pf__pool_get(struct pf_pool *pool); /* zeroed; caller holds pf__meta_lock */
PF_INTERNAL void pf__pool_put(struct pf_pool *pool, void *object);

#endif /* PF_MEMORY_H */
