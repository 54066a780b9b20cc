/* SPDX-License-Identifier: GPL-2.0-only */
/*
 * page_frag: the kernel's page fragment cache (mm/page_frag_cache.c).
 *
 * A cache holds one "frag page" (an order-3 block, 32 KiB, or an order-0
 * page when no order-3 block can be had fast; PYFRAG_FRAG_ORDER picks a
 * smaller order, raised for a fragment that needs more), an offset that
 * counts up,
 * and pagecnt_bias: how many of the page's references the cache still owns.
 *
 * Invariant: page refcount == cache bias + fragments outstanding.
 *
 * The bias trick: at refill the page is given MAX + 1 references at once, all
 * owned by the cache. Handing out a fragment then moves one reference from
 * the cache to the fragment by decrementing the bias, a plain store on
 * memory only this thread touches, never the shared refcount. Freeing a
 * fragment (any thread) is one atomic decrement of the refcount. When the
 * page is used up the cache gives back what it still owns
 * (refcount -= bias): reaching zero means every fragment is back, so the page
 * is reused in place without a trip to the page allocator, unless it came
 * from the emergency reserve (pfmemalloc), which goes home instead.
 *
 * Every cache runs the same code whatever its page source (page_frag.h):
 * only where its pages come from and go back to, and where its counters go,
 * differ.
 */
#include "page_frag/page_frag.h"

#include <errno.h>

static _Atomic(const struct pf_page_source *) sources[PF_SOURCE_COUNT];

_Atomic uint32_t pf__frag_clock;
_Atomic int64_t pf__frag_pinned_bytes;

static int64_t page_bytes(const struct pf_page *page)
{
	return (int64_t)PF_PAGE_SIZE << page->order;
}

static void set_stamp(struct pf_page *page, uint32_t stamp)
{
	__atomic_store_n(&page->next, stamp, __ATOMIC_RELAXED);
}

/*
 * Stamp a page about to lose its cache's bias, before the bias goes: once it
 * has gone, a free on another thread may release the page at once and link
 * it into a page list through the same field.
 */
static void stamp_abandon(struct pf_page *page)
{
	if (pf__private_page(page))
		set_stamp(page, atomic_load_explicit(&pf__frag_clock, memory_order_relaxed) | PF_FRAG_STAMP_BIT);
}

/*
 * The bias went back with fragments out: the page is pinned by them from now
 * on. bytes were read before the bias went (pin_bytes): by now another
 * thread may have freed the page and the buddy allocator rewritten its order.
 */
static void pinned(int64_t bytes)
{
	atomic_fetch_add_explicit(&pf__frag_pinned_bytes, bytes, memory_order_relaxed);
}

/* What the page would add to the pinned bytes (a shared arena's pages: nothing); before the bias goes. */
static int64_t pin_bytes(const struct pf_page *page)
{
	return pf__private_page(page) ? page_bytes(page) : 0;
}

/* A fragment free released the page: a frag page (not a run) was pinned until now. */
static void unpinned(struct pf_page *page)
{
	if (pf__private_page(page) && !(page->flags & (PF_PF_RUN | PF_PF_CHUNKS | PF_PF_EXACT | PF_PF_SLAB)))
		atomic_fetch_sub_explicit(&pf__frag_pinned_bytes, page_bytes(page), memory_order_relaxed);
}

bool pf__frag_get(struct pf_page *head)
{
	int32_t old = atomic_load_explicit(&head->refcount, memory_order_relaxed);
	do {
		if (old <= 0)
			return false;
	} while (!atomic_compare_exchange_weak_explicit(&head->refcount, &old, old + 1,
							memory_order_acquire, memory_order_relaxed));
	return true;
}

void pf__frag_set_source(enum pf_page_source_id id, const struct pf_page_source *source)
{
	atomic_store_explicit(&sources[id], source, memory_order_release);
}

static const struct pf_page_source *source(unsigned id)
{
	return atomic_load_explicit(&sources[id], memory_order_acquire);
}

/* The source a block belongs to, from where its metadata lies. */
static const struct pf_page_source *source_of_page(const struct pf_page *head)
{
	return source(pf__private_page(head) ? PF_SOURCE_PRIVATE : PF_SOURCE_SHARED);
}

void pf__frag_cache_init(struct pf_cache *cache, enum pf_page_source_id id, void *arg)
{
	pf__frag_forget_page(cache);
	cache->destroyable = false;
	cache->source = (uint8_t)id;
	cache->source_arg = arg;
	cache->owner = pf_thread_id();
}

static void set_held(struct pf_page *page, bool held)
{
	atomic_store_explicit(&page->held, held, memory_order_relaxed);
}

static void frag_count(const struct pf_cache *cache, enum pf_counter c)
{
	source(cache->source)->count(cache->source_arg, cache->page, c);
}

static struct pf_page *take_block(const struct pf_cache *cache, unsigned order, unsigned gfp)
{
	return source(cache->source)->alloc(cache->source_arg, order, gfp);
}

/* A block whose last reference is gone goes home: to the source its metadata says. */
static void release_block(struct pf_page *head)
{
	source_of_page(head)->release(head);
}

/* Give back every reference the cache owns; true if that was the last one. */
static bool release_bias(struct pf_cache *cache)
{
	int32_t bias = (int32_t)pf__bias(cache);
	stamp_abandon(cache->page);
	set_held(cache->page, false); /* frees may batch from now on */
	return atomic_fetch_sub_explicit(&cache->page->refcount, bias, memory_order_acq_rel) == bias;
}

/* PYFRAG_FRAG_ORDER (3 unless set smaller), raised until a block holds need bytes. */
static unsigned refill_order(uint32_t need)
{
	long long want = PF_OPT(frag_order);
	unsigned order = want >= 0 && want < PF_FRAG_ORDER ? (unsigned)want : PF_FRAG_ORDER;
	while (order < PF_FRAG_ORDER && (PF_PAGE_SIZE << order) < need)
		order++;
	return order;
}

/*
 * need = max(fragsz, align): a block is aligned to its size, so a page of at
 * least need bytes holds the fragment at offset 0, aligned.
 */
static bool refill(struct pf_cache *cache, uint32_t need)
{
	unsigned order = refill_order(need);
	struct pf_page *page = take_block(cache, order, PF_GFP_NORETRY);
	if (!page) {
		if (need > PF_PAGE_SIZE) {
			/* only a block that large can hold (or align) it: try hard rather than refuse */
			page = take_block(cache, order, 0);
		} else {
			page = take_block(cache, 0, 0);
			if (page && order)
				frag_count(cache, PF_CTR_ORDER0_FALLBACKS);
		}
		if (!page)
			return false;
	}
	/* The allocator's reference plus MAX more: an add, as others may hold one. */
	atomic_fetch_add_explicit(&page->refcount, PF_FRAG_PAGE_SIZE, memory_order_relaxed);
	set_held(page, true);
	if (pf__private_page(page)) {
		set_stamp(page, 0);
		atomic_fetch_add_explicit(&pf__frag_clock, 1, memory_order_relaxed);
	}
	cache->page = page;
	cache->va = source(cache->source)->address(cache->source_arg, page);
	cache->size = PF_PAGE_SIZE << page->order;
	cache->offset = 0;
	pf__bias_set_full(cache);
	cache->pfmemalloc = (page->flags & PF_PF_RESERVE) != 0;
	frag_count(cache, PF_CTR_REFILLS);
	if (cache->pfmemalloc)
		frag_count(cache, PF_CTR_RESERVE_PAGES);
	return true;
}

/* The current page cannot hold the request: recycle it in place, or let it go. */
static bool recycle_in_place(struct pf_cache *cache, uint32_t need)
{
	int64_t bytes = pin_bytes(cache->page);
	if (!release_bias(cache)) {
		frag_count(cache, PF_CTR_ABANDONS); /* outstanding fragments keep it alive */
		pinned(bytes);
		pf__frag_forget_page(cache);
		return false;
	}
	if (cache->pfmemalloc || need > cache->size) {
		release_block(cache->page);
		pf__frag_forget_page(cache);
		return false;
	}
	/* Nobody else holds a reference now: a store is safe. */
	atomic_store_explicit(&cache->page->refcount, PF_BIAS_FULL, memory_order_relaxed);
	set_held(cache->page, true);
	if (pf__private_page(cache->page))
		set_stamp(cache->page, 0);
	pf__bias_set_full(cache);
	cache->offset = 0;
	frag_count(cache, PF_CTR_RECYCLES);
	return true;
}

static void *alloc_slow(struct pf_cache *cache, uint32_t fragsz, uint32_t align)
{
	if (fragsz == 0)
		return pf__fail(EINVAL, "fragment size must be at least 1 byte");
	if (!pf__valid_align(align))
		return pf__fail(EINVAL, "alignment must be a power of two no larger than 32768");
	if (fragsz > PF_FRAG_PAGE_SIZE)
		return pf__fail(E2BIG, "fragment larger than a frag page (32768 bytes)");

	uint32_t need = fragsz > align ? fragsz : align;
	if (cache->page)
		(void)recycle_in_place(cache, need); /* on false it has let the page go */
	if (!cache->page && !refill(cache, need)) {
		frag_count(cache, PF_CTR_ALLOC_FAILURES);
		return pf__fail(ENOMEM, "no memory for a frag page (PYFRAG_LIMIT reached or the OS refused)");
	}
	uint32_t offset = (cache->offset + align - 1) & ~(align - 1);
	cache->offset = offset + fragsz;
	cache->handed++;
	pf__local_inc(&cache->allocs);
	return (void *)(cache->va + offset);
}

void *pf__frag_alloc_slow(struct pf_cache *cache, uint32_t fragsz, uint32_t align)
{
	const struct pf_page_source *src = source(cache->source);
	if (PF_LIKELY(src->busy == NULL))
		return alloc_slow(cache, fragsz, align);
	src->busy(cache, true);
	void *frag = alloc_slow(cache, fragsz, align);
	src->busy(cache, false);
	return frag;
}

void pf__frag_drain(struct pf_cache *cache)
{
	if (!cache->page)
		return;
	int64_t bytes = pin_bytes(cache->page);
	if (release_bias(cache))
		release_block(cache->page);
	else
		pinned(bytes);
	pf__frag_forget_page(cache);
	frag_count(cache, PF_CTR_DRAINS);
}

int pf__frag_put(struct pf_page *head)
{
	int32_t old = atomic_fetch_sub_explicit(&head->refcount, 1, memory_order_acq_rel);
	if (PF_LIKELY(old > 1))
		return 0;
	if (old == 1) {
		unpinned(head);
		release_block(head);
		return 0;
	}
	/* More frees than fragments: undo, refuse, and leave the page as it was. */
	atomic_fetch_add_explicit(&head->refcount, 1, memory_order_relaxed);
	source_of_page(head)->count(NULL, head, PF_CTR_INVALID_FREES);
	pf__fail(EINVAL, "page reference count would go below zero (double free?)");
	return -1;
}

/* Apply the batch; true if it held the page's last references (the page is freed then). */
static bool put_flush(struct pf_put_batch *batch)
{
	int32_t n = batch->count;
	struct pf_page *page = batch->page;
	batch->page = NULL;
	batch->count = 0;
	if (!n)
		return false;
	int32_t old = atomic_fetch_sub_explicit(&page->refcount, n, memory_order_acq_rel);
	if (PF_LIKELY(old > n))
		return false;
	if (old == n) {
		unpinned(page);
		release_block(page);
		return true;
	}
	/* more frees than fragments (a double free elsewhere): undo, as pf__frag_put does */
	atomic_fetch_add_explicit(&page->refcount, n, memory_order_relaxed);
	source_of_page(page)->count(NULL, page, PF_CTR_INVALID_FREES);
	return false;
}

void pf__frag_put_flush(struct pf_put_batch *batch)
{
	(void)put_flush(batch);
}

int pf__frag_put_batch_slow(struct pf_put_batch *batch, struct pf_page *head)
{
	if (batch->page != head) {
		put_flush(batch); /* a free on any other page applies the batch: it pins for no longer */
		if (!atomic_load_explicit(&head->held, memory_order_relaxed) &&
		    atomic_load_explicit(&head->refcount, memory_order_relaxed) > 1) {
			batch->page = head;
			batch->count = 1;
			return 0;
		}
	} else if (put_flush(batch)) {
		/* the batch held every reference left: this free has no fragment to free */
		source_of_page(head)->count(NULL, head, PF_CTR_INVALID_FREES);
		pf__fail(EINVAL, "page reference count would go below zero (double free?)");
		return -1;
	}
	return pf__frag_put(head);
}
