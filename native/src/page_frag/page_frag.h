/* SPDX-License-Identifier: GPL-2.0-only */
/*
 * Layer 3, page_frag: the kernel's page fragment cache and nothing else,
 * over a page-source interface (it does not know whether its pages come
 * from the private page allocator or a shared arena), plus the batched
 * reference drops a consumer thread makes. The fast paths are inline here.
 * Includes only memory/memory.h.
 */
#ifndef PF_PAGE_FRAG_H
#define PF_PAGE_FRAG_H

#include "memory/memory.h"

#define PF_BIAS_FULL (PF_FRAG_PAGE_SIZE + 1) /* references a refill gives the cache */

/*
 * Where frag pages come from and go back to. page_frag does not know whose
 * pages it cuts: the layer that owns them registers a source (the private
 * page allocator through the thread's page lists, a shared arena's zone),
 * and each cache names its source by id. A page whose last reference goes
 * while no cache holds it is sent home by where its metadata lies: in the
 * private arena's page array, the private source; anywhere else, the shared.
 */
enum pf_page_source_id { PF_SOURCE_PRIVATE, PF_SOURCE_SHARED, PF_SOURCE_COUNT };

struct pf_page_source {
	/* a block of 2^order pages holding one reference (PF_GFP_* in gfp), or NULL */
	struct pf_page *(*alloc)(void *arg, unsigned order, unsigned gfp);
	/* the address of a block's first byte */
	uintptr_t (*address)(void *arg, const struct pf_page *page);
	/* a block whose last reference is gone */
	void (*release)(struct pf_page *head);
	/* one event (PF_CTR_*) of a cache with this arg, or (arg NULL) of the page's owner */
	void (*count)(void *arg, const struct pf_page *page, enum pf_counter c);
	/* optional: the owner enters (true) or leaves page_frag's slow path */
	void (*busy)(struct pf_cache *cache, bool busy);
};

/*
 * The pinning clock (private pages only). A cache that gives its bias back
 * while fragments are still out abandons the page to them: the page is
 * pinned until its last fragment is freed. pf__frag_pinned_bytes counts the
 * pages pinned now; pf__frag_clock counts refills, and a pinned page's head
 * remembers the clock when it was abandoned (in next, otherwise unused by
 * frag pages), so the layers above can tell pages that stay pinned long (a
 * straggler holds them) from pages about to drain (a ring in flight).
 */
PF_INTERNAL extern _Atomic uint32_t pf__frag_clock;
PF_INTERNAL extern _Atomic int64_t pf__frag_pinned_bytes;
#define PF_FRAG_STAMP_BIT 0x80000000u /* set in every abandonment stamp: never 0 */
/* The page's abandonment stamp, 0 if it never was: read with a reference held (pf__frag_get). */
static inline uint32_t pf__frag_abandoned_at(const struct pf_page *head)
{
	return __atomic_load_n(&head->next, __ATOMIC_RELAXED);
}
/* Take a reference to a page that still has one (the kernel's get_page_unless_zero). */
PF_INTERNAL bool pf__frag_get(struct pf_page *head);
/* An abandoned page a thread watches: is it still pinned when the clock has moved on? */
struct pf_pin_watch {
	struct pf_page *page;
	uint32_t stamp; /* its abandonment stamp */
	uint32_t fill;  /* bytes of it handed out */
};
#define PF_PIN_WATCH 8

/* Register the source for an id; before any cache of that id exists. */
PF_INTERNAL void pf__frag_set_source(enum pf_page_source_id id, const struct pf_page_source *source);

struct pf_cache {
	/* hot, and up to bias_frees the public pf_cache_fast_t (pyfrag.h, checked in api.c) */
	uintptr_t va;      /* frag page address, 0 if none */
	uint32_t offset;   /* bytes used, counting up */
	uint32_t size;     /* frag page size; 0 if none, so every request misses */
	/*
	 * The kernel's pagecnt_bias, in two halves (pf__bias()): fragments handed
	 * out since the page was (re)filled, and those given back to the bias.
	 * Alloc writes only handed and a bias free only returned, so an alloc+free
	 * pair is two independent chains through memory, not one that goes
	 * through the same field twice.
	 */
	uint32_t handed;
	uint32_t returned;
	bool pfmemalloc;   /* page came from the reserve: never recycled */
	bool destroyable;  /* made by pf_cache_create and not destroyed yet */
	uint8_t source;    /* enum pf_page_source_id: where its pages come from */
	uintptr_t owner;   /* pf_thread_id() of the owner thread */
	pf_local_counter allocs;
	pf_local_counter bias_frees;
	struct pf_page *page;
	/*
	 * The source's argument (a shared arena's header, the same address in
	 * every process that maps it). An id and an argument rather than a
	 * pointer to the source: a shared arena's caches live in its mapping and
	 * are drained by other processes, where pyfrag's code is elsewhere.
	 */
	void *source_arg;
	/* bookkeeping */
	struct pf_cache *next_live; /* registry of live caches, under pf__meta_lock */
	struct pf_cache *prev_live;
};

#ifndef PF_HAVE_THREAD_ID
static inline uintptr_t pf_thread_id(void)
{
	return (uintptr_t)pthread_self();
}
#endif

/* An empty cache owned by the calling thread, taking its pages from source (with arg). */
PF_INTERNAL void pf__frag_cache_init(struct pf_cache *cache, enum pf_page_source_id source,
				     void *arg);
/* The cache holds no page any more (its references were given back or moved). */
static inline void pf__frag_forget_page(struct pf_cache *cache)
{
	cache->page = NULL;
	cache->va = 0;
	cache->size = 0;
	cache->offset = 0;
	cache->handed = 0;
	cache->returned = 0;
	cache->pfmemalloc = false;
}

/* Page references the cache still owns (0 without a page). Wraps safely: handed - returned is small. */
static inline uint32_t pf__bias(const struct pf_cache *cache)
{
	return cache->page ? PF_BIAS_FULL - (cache->handed - cache->returned) : 0;
}
/* The cache owns all MAX + 1 references again (a refill, a reuse in place). */
static inline void pf__bias_set_full(struct pf_cache *cache)
{
	cache->handed = 0;
	cache->returned = 0;
}
/* No fragment of the current page out (the bias is full). */
static inline bool pf__bias_full(const struct pf_cache *cache)
{
	return cache->handed == cache->returned;
}
/* The part of alloc that runs when the current page cannot hold the request. */
PF_INTERNAL void *pf__frag_alloc_slow(struct pf_cache *cache, uint32_t fragsz, uint32_t align);
PF_INTERNAL void pf__frag_drain(struct pf_cache *cache);
/* Drop one fragment's reference to its page, from any thread. 0, or -1/EINVAL on underflow. */
PF_INTERNAL int pf__frag_put(struct pf_page *head);

/*
 * A thread's frees of one page's fragments not yet taken off its refcount
 * (pf__frag_put_batched). Only for a page no cache holds any more (a batch
 * on a held page would stop its cache from reusing it in place), and never
 * the last reference the thread can see: that free applies the batch and
 * itself at once. Another thread's batch on the same page is invisible here,
 * so a page whose fragments are all freed can stay in use, held by batches:
 * at most one such page per thread, until that thread frees on another page,
 * flushes or exits (test_threads.c: two threads batching one page).
 */
struct pf_put_batch {
	struct pf_page *page;
	int32_t count;
};
PF_INTERNAL int pf__frag_put_batch_slow(struct pf_put_batch *batch, struct pf_page *head);
/* Apply the batch to its page's refcount (and free the page if those were the last references). */
PF_INTERNAL void pf__frag_put_flush(struct pf_put_batch *batch);

/*
 * pf__frag_put, for a thread that frees runs of one page's fragments (a
 * consumer of another thread's buffers): while other references are sure to
 * remain, count the free here instead of an atomic operation on the page.
 */
static inline int pf__frag_put_batched(struct pf_put_batch *batch, struct pf_page *head)
{
	if (PF_LIKELY(head == batch->page) &&
	    batch->count + 1 < atomic_load_explicit(&head->refcount, memory_order_relaxed)) {
		batch->count++;
		return 0;
	}
	return pf__frag_put_batch_slow(batch, head);
}

/*
 * On the cache's owner thread: if the cache still holds the fragment's page,
 * hand the reference back to the bias (no atomic operation) and, when size
 * says it was the newest fragment, give its bytes back too. False otherwise.
 */
static inline bool pf__frag_free_local(struct pf_cache *cache, struct pf_page *head, void *addr,
				       size_t size)
{
	if (cache->page != head)
		return false;
	cache->returned++;
	if (size && (uintptr_t)addr + size == cache->va + cache->offset)
		cache->offset = (uint32_t)((uintptr_t)addr - cache->va);
	pf__local_inc(&cache->bias_frees);
	return true;
}

static inline bool pf__valid_align(size_t align)
{
	return align != 0 && (align & (align - 1)) == 0 && align <= PF_FRAG_PAGE_SIZE;
}

/* The fast path: bump the offset inside the current page. */
static inline void *pf__frag_alloc(struct pf_cache *cache, size_t fragsz, size_t align)
{
	if (PF_UNLIKELY(fragsz - 1 >= PF_FRAG_PAGE_SIZE || !pf__valid_align(align)))
		return pf__frag_alloc_slow(cache, (uint32_t)(fragsz > UINT32_MAX ? UINT32_MAX : fragsz),
					   (uint32_t)(align > UINT32_MAX ? 3 : align));
	/* align the address, not the offset: a 4 KiB fallback page is only 4 KiB aligned */
	uintptr_t start = (cache->va + cache->offset + align - 1) & ~(uintptr_t)(align - 1);
	uint32_t offset = (uint32_t)(start - cache->va);
	if (PF_UNLIKELY(offset + fragsz > cache->size))
		return pf__frag_alloc_slow(cache, (uint32_t)fragsz, (uint32_t)align);
	cache->offset = offset + (uint32_t)fragsz;
	cache->handed++;
	pf__local_inc(&cache->allocs);
	return (void *)(cache->va + offset);
}

#endif /* PF_PAGE_FRAG_H */
