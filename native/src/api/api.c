/* SPDX-License-Identifier: GPL-2.0-only */
/*
 * The public C API (pyfrag.h): argument checks, the one lazy initialisation
 * of the layers below (a failed one is retried by the next call), caches,
 * frees, pf_trim and the page and cache queries. The hot entry points (alloc,
 * free) stay a check and a call into the inline fast paths of page_frag.
 * Failures are reported through sys (pf__fail).
 */
#include "api/api.h"

#include <errno.h>
#include <string.h>

_Atomic int pf__ready; /* 0 not yet, 1 up, -1 failed */
pthread_mutex_t pf__init_lock = PTHREAD_MUTEX_INITIALIZER;
static int init_errno;


static struct pf_pool cache_pool = { .object_size = sizeof(struct pf_cache) };

/* The layout pyfrag.h's inline fast paths rely on (PF_ABI_VERSION). */
#define PF_SAME_FIELD_(f)                                                                  \
	_Static_assert(offsetof(struct pf_cache, f) == offsetof(pf_cache_fast_t, f) &&      \
			       sizeof(((struct pf_cache *)0)->f) == sizeof(((pf_cache_fast_t *)0)->f), \
		       "pf_cache_fast_t." #f " matches struct pf_cache")
PF_SAME_FIELD_(va);
PF_SAME_FIELD_(offset);
PF_SAME_FIELD_(size);
PF_SAME_FIELD_(handed);
PF_SAME_FIELD_(returned);
PF_SAME_FIELD_(owner);
PF_SAME_FIELD_(allocs);
PF_SAME_FIELD_(bias_frees);
_Static_assert(offsetof(struct pf_cache, pfmemalloc) >= offsetof(pf_cache_fast_t, reserved_) &&
		       offsetof(struct pf_cache, pfmemalloc) < offsetof(pf_cache_fast_t, owner),
	       "pfmemalloc lives in pf_cache_fast_t.reserved_");
_Static_assert(offsetof(struct pf_cache, destroyable) >= offsetof(pf_cache_fast_t, reserved_) &&
		       offsetof(struct pf_cache, destroyable) < offsetof(pf_cache_fast_t, owner),
	       "destroyable lives in pf_cache_fast_t.reserved_");
_Static_assert(offsetof(struct pf_cache, source) >= offsetof(pf_cache_fast_t, reserved_) &&
		       offsetof(struct pf_cache, source) < offsetof(pf_cache_fast_t, owner),
	       "source lives in pf_cache_fast_t.reserved_");
_Static_assert(PF_BIAS_FULL_ == PF_BIAS_FULL, "full bias");

/* ---- initialisation ------------------------------------------------------- */

/* A failed init is tried again by the next call (memory may have come back): never twice what worked. */
static int init_layers(void)
{
	static bool arena_up, pages_up;
	pf__options_load();
	if (!arena_up && pf__arena_init((size_t)PF_OPT(arena)) != 0)
		return -1;
	arena_up = true;
	if (!pages_up && pf__page_alloc_init() != 0)
		return -1;
	pages_up = true;
	return pf__thread_init();
}

int pf__ensure_init(void)
{
	pthread_mutex_lock(&pf__init_lock);
	if (atomic_load(&pf__ready) != 1) {
		int ok = init_layers() == 0;
		init_errno = ok ? 0 : errno;
		atomic_store_explicit(&pf__ready, ok ? 1 : -1, memory_order_release);
	}
	pthread_mutex_unlock(&pf__init_lock);
	if (atomic_load(&pf__ready) == 1)
		return 0;
	pf__fail(init_errno ? init_errno : ENOMEM,
		 "could not reserve the arena's address space (see PYFRAG_ARENA)");
	return -1;
}

int pf_init(void)
{
	return pf__init_ok() ? 0 : -1;
}

const char *pf_version(void)
{
	return PF_VERSION_STRING;
}

int pf_abi_version(void)
{
	return PF_ABI_VERSION;
}

int pf_arena_range(uintptr_t *base, size_t *size)
{
	if (!base || !size) {
		pf__fail(EINVAL, "base and size must not be NULL");
		return -1;
	}
	if (!pf__init_ok())
		return -1;
	*base = pf__arena.base;
	*size = pf__first_region_size();
	return 0;
}

/* ---- caches ------------------------------------------------------------------ */

pf_cache_t *pf_cache_create(void)
{
	if (!pf__init_ok())
		return NULL;
	pthread_mutex_lock(&pf__meta_lock);
	struct pf_cache *cache = pf__pool_get(&cache_pool);
	if (cache) {
		pf__frag_cache_init(cache, PF_SOURCE_PRIVATE, NULL);
		cache->destroyable = true;
		pf__cache_register(cache);
	}
	pthread_mutex_unlock(&pf__meta_lock);
	return cache ? cache : pf__fail(ENOMEM, "no memory for a cache");
}

/*
 * Only a cache pf_cache_create made, once: a thread's default cache, a shared
 * arena's cache or a second destroy would put memory that is not a free
 * cache into the pool, and the next pf_cache_create would hand it out.
 */
void pf_cache_destroy(pf_cache_t *cache)
{
	if (!cache)
		return;
	pthread_mutex_lock(&pf__meta_lock);
	bool mine = cache->destroyable;
	cache->destroyable = false;
	pthread_mutex_unlock(&pf__meta_lock);
	if (!mine) {
		pf__fail(EINVAL, "not a cache from pf_cache_create, or destroyed already "
				 "(a thread's default cache goes at thread exit)");
		return;
	}
	pf__frag_drain(cache);
	pthread_mutex_lock(&pf__meta_lock);
	pf__cache_unregister(cache);
	pf__pool_put(&cache_pool, cache);
	pthread_mutex_unlock(&pf__meta_lock);
}

void *pf_cache_alloc(pf_cache_t *cache, size_t fragsz)
{
	if (PF_UNLIKELY(!cache))
		return pf__fail(EINVAL, "cache is NULL");
	return pf__vg_alloc(cache, pf__frag_alloc(cache, fragsz, 1), fragsz, true);
}

void *pf_cache_alloc_align(pf_cache_t *cache, size_t fragsz, size_t align)
{
	if (PF_UNLIKELY(!cache))
		return pf__fail(EINVAL, "cache is NULL");
	return pf__vg_alloc(cache, pf__frag_alloc(cache, fragsz, align), fragsz, true);
}

void pf_cache_drain(pf_cache_t *cache)
{
	if (cache)
		pf__frag_drain(cache);
}

/* ---- default cache ------------------------------------------------------------- */

void *pf_alloc(size_t fragsz)
{
	struct pf_thread *t = pf__api_thread();
	return PF_LIKELY(t != NULL) ? pf__vg_alloc(&t->cache, pf__frag_alloc(&t->cache, fragsz, 1),
						   fragsz, false)
				    : NULL;
}

void *pf_alloc_align(size_t fragsz, size_t align)
{
	struct pf_thread *t = pf__api_thread();
	return PF_LIKELY(t != NULL) ? pf__vg_alloc(&t->cache, pf__frag_alloc(&t->cache, fragsz, align),
						   fragsz, false)
				    : NULL;
}

pf_cache_t *pf_thread_cache(void)
{
	struct pf_thread *t = pf__api_thread();
	return t ? &t->cache : NULL;
}

void pf_thread_flush(void)
{
	struct pf_thread *t = pf__self;
	if (t)
		pf__thread_give_back(t);
}

/* ---- freeing --------------------------------------------------------------------- */

static int invalid_free(void)
{
	pf__count(PF_CTR_INVALID_FREES, 1);
	pf__fail(EINVAL, "address is not inside a fragment pyfrag handed out");
	return -1;
}

/* Not in the private arena: a shared arena's fragment, or nothing pyfrag handed out. */
static int foreign_free(void *addr)
{
	if (atomic_load_explicit(&pf__shared_attached, memory_order_relaxed) != 0 &&
	    !pf__in_arena(addr))
		return pf__shared_free_address(addr);
	return invalid_free();
}

/* Count a free on the calling thread (or globally if it has no state). */
static void count_free(struct pf_thread *t)
{
	if (PF_LIKELY(t != NULL))
		pf__local_inc(&t->frees);
	else
		pf__count(PF_CTR_RETIRED_FREES, 1);
}

/*
 * On a cache's current page, on its owner thread, two misuses are cheap to
 * see: an address at or past the bytes handed out since the page was
 * (re)filled, and a free when every fragment is back already (the bias would
 * pass full). Either would take a reference that another fragment owns.
 */
static bool bogus_local_free(const struct pf_cache *cache, const void *addr)
{
	return (uintptr_t)addr >= cache->va + cache->offset || pf__bias_full(cache);
}

static int refuse_local_free(void)
{
	pf__count(PF_CTR_INVALID_FREES, 1);
	pf__fail(EINVAL, "fragment already freed, or never handed out (its cache's page says so)");
	return -1;
}

/* A malloc-front block (slab page, page or chunk run) is no fragment: dropping a page reference would free blocks still in use. */
static bool malloc_block(const struct pf_page *head)
{
	return (head->flags & (PF_PF_SLAB | PF_PF_RUN | PF_PF_CHUNKS | PF_PF_EXACT)) != 0;
}

static int refuse_malloc_block(void)
{
	pf__count(PF_CTR_INVALID_FREES, 1);
	pf__fail(EINVAL, "not a fragment: a block from the malloc front (free it with free())");
	return -1;
}

static int free_page_ref(struct pf_thread *t, struct pf_page *head)
{
	if ((t ? pf__frag_put_batched(&t->put, head) : pf__frag_put(head)) != 0)
		return -1;
	count_free(t);
	return 0;
}

static int free_any(void *addr)
{
	/* inside the page this thread batches frees for: in use (the batch holds it), no cache's */
	struct pf_thread *self = pf__self;
	struct pf_page *batched = self ? self->put.page : NULL;
	if (batched && (uintptr_t)addr - (uintptr_t)pf__page_address(batched) <
			       (PF_PAGE_SIZE << batched->order))
		return free_page_ref(self, batched);
	if (!addr)
		return 0;
	struct pf_page *head = pf__head_page(addr);
	if (PF_UNLIKELY(!head))
		return foreign_free(addr);
	if (PF_UNLIKELY(malloc_block(head)))
		return refuse_malloc_block();
	/* state for the page lists the freed page may land on */
	struct pf_thread *t = pf__api_thread();
	if (t && t->cache.page == head && PF_UNLIKELY(bogus_local_free(&t->cache, addr)))
		return refuse_local_free();
	if (t && pf__frag_free_local(&t->cache, head, addr, 0))
		return 0;
	return free_page_ref(t, head);
}

int pf_free(void *addr)
{
	uintptr_t vg = pf__vg_free_begin(addr); /* valgrind=1 builds: memcheck's view */
	int ret = free_any(addr);
	pf__vg_free_end(vg, ret);
	return ret;
}

/* Everything but the owner freeing into the cache's current page. */
static __attribute__((noinline)) int cache_free_slow(pf_cache_t *cache, void *frag, size_t fragsz)
{
	if (!cache) {
		pf__fail(EINVAL, "cache is NULL");
		return -1;
	}
	if (!frag)
		return 0;
	struct pf_page *head = pf__head_page(frag);
	if (PF_UNLIKELY(!head))
		return foreign_free(frag);
	if (PF_UNLIKELY(malloc_block(head)))
		return refuse_malloc_block();
	struct pf_thread *t = pf__api_thread();
	if (cache->owner == pf_thread_id()) {
		if (cache->page == head && PF_UNLIKELY(bogus_local_free(cache, frag)))
			return refuse_local_free();
		if (pf__frag_free_local(cache, head, frag, fragsz))
			return 0;
	}
	return free_page_ref(t, head);
}

/*
 * The common case first (pyfrag.h's pf_cache_free_inline does the same): the
 * owner freeing a fragment of the cache's current page, no metadata, no
 * atomic operation. A NULL or empty cache fails the range check and the slow
 * path says why. The owner test comes first: the page fields are the owner's
 * to write, so another thread must not read them.
 */
static inline int cache_free(pf_cache_t *cache, void *frag, size_t fragsz)
{
	if (PF_LIKELY(cache != NULL) && PF_LIKELY(cache->owner == pf_thread_id()) &&
	    (uintptr_t)frag - cache->va < cache->size && PF_LIKELY(!bogus_local_free(cache, frag))) {
		pf__frag_free_local(cache, cache->page, frag, fragsz);
		return 0;
	}
	return cache_free_slow(cache, frag, fragsz);
}

int pf_cache_free(pf_cache_t *cache, void *frag, size_t fragsz)
{
	uintptr_t vg = pf__vg_free_begin(frag);
	int ret = cache_free(cache, frag, fragsz);
	pf__vg_free_end(vg, ret);
	return ret;
}

size_t pf_trim(void)
{
	if (atomic_load(&pf__ready) != 1)
		return 0;
	/* the flush may already release chunks: count them all by the counter */
	uint64_t before = atomic_load_explicit(&pf__counters[PF_CTR_CHUNK_RELEASES], memory_order_relaxed);
	struct pf_thread *t = pf__self;
	if (t) {
		pf__frag_put_flush(&t->put);
		pf__pcp_flush(&t->pcp);
	}
	pf__release_empty_chunks();
	return (size_t)(atomic_load_explicit(&pf__counters[PF_CTR_CHUNK_RELEASES], memory_order_relaxed) -
			before);
}

/* ---- debug queries ------------------------------------------------------------------ */

int pf_page_query(const void *addr, pf_page_info_t *out)
{
	if (out && !pf__in_arena(addr) && atomic_load(&pf__shared_attached) != 0)
		return pf__shared_page_query(addr, out);
	if (!out || atomic_load(&pf__ready) != 1 || !pf__in_arena(addr)) {
		pf__fail(EINVAL, "address is not inside pyfrag's arena");
		return -1;
	}
	uint32_t index = pf__page_index(addr);
	if (pf__arena.chunk_backing[index / PF_CHUNK_PAGES] == PF_BACKING_NONE) {
		pf__fail(EINVAL, "address is in a chunk that is not committed");
		return -1;
	}
	struct pf_page *page = pf__page_at(index);
	if (pf__state(page) == PF_PS_TAIL)
		page -= page->head_delta;
	pf__page_info(page, (uintptr_t)pf__page_address(page), out);
	return 0;
}

int pf_cache_query(const pf_cache_t *cache, pf_cache_info_t *out)
{
	if (!cache || !out) {
		pf__fail(EINVAL, "cache and out must not be NULL");
		return -1;
	}
	out->page = cache->va;
	out->page_size = cache->size;
	out->offset = cache->offset;
	out->bias = pf__bias(cache);
	out->pfmemalloc = cache->pfmemalloc;
	return 0;
}
