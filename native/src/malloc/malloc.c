/* SPDX-License-Identifier: GPL-2.0-only */
/*
 * malloc front: the malloc family's semantics on top of page_frag and the
 * page allocator. preload.c exports these under libc's names.
 *
 * Routes, chosen by size (and alignment), and for small requests by
 * PYFRAG_ROUTE:
 * - small (up to PYFRAG_FRAG_MAX, 4080 by default), frag route: a fragment
 *   of the calling thread's page_frag cache, led by a 16-byte header (struct
 *   pf_mhdr) that holds the fragment's size. User pointers are 16-byte aligned; a larger
 *   alignment puts padding before the header. Freeing on the owner thread
 *   while its cache still holds the page hands the reference back to the bias
 *   with no atomic operation, and the newest fragment gives its bytes back
 *   too, so a burst that allocates and frees on one thread reuses the same
 *   bytes. Any other free is one atomic decrement of the page's refcount.
 * - small, compact route, and every request up to 32 KiB above the frag
 *   route's: a block of the thread's slab heap (slab/slab.h), no header.
 *   PYFRAG_ROUTE=adaptive (route.c) sends a call site here once its blocks
 *   are seen pinning frag pages, and every small request while too much is
 *   pinned. Aligned requests (above 16) and check mode stay on page_frag.
 * - medium (up to 2 MiB): an exact page run (a buddy block cut to the pages
 *   asked for, flagged PF_PF_RUN and PF_PF_EXACT); no header.
 * - large: a chunk run (whole contiguous chunks, a fresh mapping), no header.
 * The route of a pointer is read from its head page's flags; the arena range
 * check tells pyfrag's pointers from anything else.
 *
 * Degraded mode: a request pyfrag cannot serve (no address space left for
 * another region: ulimit -v; or the OS refused memory) goes to libc's own
 * allocator (__libc_malloc and friends, or a sanitizer runtime's), so the
 * program gets what glibc would have given it; only PYFRAG_LIMIT, a cap the
 * user asked for, and sizes no allocator can serve stay ENOMEM. The first
 * time, one line on stderr says so; libc_allocs counts them. From then on a
 * pointer outside the arena is libc's: free, realloc and
 * malloc_usable_size hand it to libc (which aborts on one it never made,
 * as glibc alone would), where before a degradation it is ignored.
 *
 * Errors follow glibc: ENOMEM for every failure (overflow included), EINVAL
 * for bad alignments, errno left alone on success and by free. Misuse that
 * glibc aborts on (double free, invalid pointer, corrupted header, refcount
 * underflow) is reported on stderr and aborts here too. PYFRAG_CHECK=1 adds
 * header canaries, tail canaries after the requested size, and poisons freed
 * small blocks.
 */
#include "malloc/malloc.h"

#include <dlfcn.h>
#include <errno.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#define PF_SMALL_MAX (PF_FRAG_PAGE_SIZE - PF_HDR) /* frag_max is clamped to this */
#define PF_CANARY_KEY 0x9e3779b9u
#define PF_TAIL_BYTE 0xa5u
#define PF_POISON_BYTE 0xdfu
#define PF_MIN_ALIGN 16u

_Static_assert(PF_SMALL_MAX <= UINT16_MAX, "slack and lead fit 16 bits");

/* ---- reports that end the program -------------------------------------------- */

static __attribute__((noreturn, cold)) void die(const char *call, const char *why, const void *ptr)
{
	char hex[24];
	char *end = hex + sizeof(hex);
	const char *digits = pf__format_u64(end - 1, (uintptr_t)ptr, 16);
	end[-1] = 0;
	const char *pieces[] = { "pyfrag: ", call, "(): ", why, ": 0x", digits,
				 " (aborting, as glibc does)\n", NULL };
	pf__write_all(2, pieces);
	abort();
}

/* ---- small: the header ---------------------------------------------------------- */

static inline uint32_t canary_of(const struct pf_mhdr *h)
{
	return (uint32_t)((uintptr_t)h >> 4) ^ PF_CANARY_KEY;
}

static inline struct pf_mhdr *header_of(void *ptr)
{
	return (struct pf_mhdr *)ptr - 1;
}

static inline bool check_mode(void)
{
	return PF_UNLIKELY(PF_OPT(check) != 0);
}

/*
 * The largest request the page_frag route takes: PYFRAG_FRAG_MAX, clamped to
 * what a frag page holds with the header. Check mode's canary byte rounds a
 * block up by 16 more, so there the clamp is 16 lower (a request between the
 * two takes a page run instead of failing).
 */
static inline size_t small_max(void)
{
	long long fm = PF_OPT(frag_max);
	size_t clamp = check_mode() ? PF_SMALL_MAX - PF_MIN_ALIGN : PF_SMALL_MAX;
	return fm < 0 ? 0 : (size_t)fm < clamp ? (size_t)fm : clamp;
}

/*
 * Requests below fast_below may take pf__malloc's page_frag fast path:
 * PYFRAG_FRAG_MAX (clamped) plus one on the frag and adaptive routes, 0 on
 * the compact route and in check mode; frag_below is page_frag's bound
 * whatever the route. One load instead of options and a clamp per call; an
 * option-change hook (sys/options.c) keeps them current. Check mode is the
 * frag route: only headers carry canaries.
 */
static _Atomic size_t fast_below, frag_below;
static _Atomic unsigned route;

static void options_changed(void *unused)
{
	(void)unused;
	unsigned r = check_mode() ? PF_ROUTE_FRAG : (unsigned)PF_OPT(route);
	atomic_store_explicit(&route, r, memory_order_relaxed);
	atomic_store_explicit(&frag_below, small_max() + 1, memory_order_relaxed);
	size_t below = check_mode() || r == PF_ROUTE_COMPACT ? 0 : small_max() + 1;
	atomic_store_explicit(&fast_below, below, memory_order_relaxed);
}

static inline size_t round16(size_t n)
{
	return (n + 15) & ~(size_t)15;
}

/*
 * Blocks made in check mode carry their own live magic, so the free fast
 * path (which compares against PF_MAGIC_LIVE) sends them to the full checks
 * without reading the option.
 */
static inline uint32_t live_magic(void)
{
	return check_mode() ? PF_MAGIC_LIVE_CHECKED : PF_MAGIC_LIVE;
}

static inline void write_header(struct pf_mhdr *h, uint32_t size, uint32_t lead, uint32_t slack,
				uint32_t slot)
{
	h->size = size;
	h->lead = (uint16_t)lead;
	h->slack = (uint16_t)slack;
	h->canary = check_mode() ? canary_of(h) : slot;
	h->magic = live_magic();
}

static inline size_t small_usable(const struct pf_mhdr *h)
{
	return h->size - h->lead;
}

/* Bytes the caller may use: in check mode only what was asked (the rest is canary). */
static inline size_t small_visible(const struct pf_mhdr *h)
{
	return small_usable(h) - (check_mode() ? h->slack : 0);
}

static void write_tail(void *ptr, const struct pf_mhdr *h)
{
	memset((char *)ptr + small_usable(h) - h->slack, PF_TAIL_BYTE, h->slack);
}

static void verify_checked(const char *call, void *ptr, const struct pf_mhdr *h)
{
	if (h->canary != canary_of(h))
		die(call, "header canary overwritten (a buffer before it overflowed?)", ptr);
	if (h->slack == 0 || h->slack > small_usable(h))
		die(call, "header corrupted", ptr);
	const unsigned char *tail = (const unsigned char *)ptr + small_usable(h) - h->slack;
	for (uint32_t i = 0; i < h->slack; i++)
		if (tail[i] != PF_TAIL_BYTE)
			die(call, "tail canary overwritten (the block was written past its end)", ptr);
}

/*
 * The header of a small block whose magic says live: aborts on a pointer
 * that is not a live block's start (a double free among them). page is the
 * head of the frag page holding ptr. Its size and lead are not looked at.
 */
static inline struct pf_mhdr *live_header(const char *call, void *ptr, struct pf_page *page)
{
	uintptr_t offset = (uintptr_t)ptr - (uintptr_t)pf__page_address(page);
	if (PF_UNLIKELY(((uintptr_t)ptr & (PF_MIN_ALIGN - 1)) || offset < PF_HDR))
		die(call, "invalid pointer", ptr);
	struct pf_mhdr *h = header_of(ptr);
	if (PF_UNLIKELY(h->magic != live_magic())) {
		if (h->magic == PF_MAGIC_FREED)
			die(call, "double free detected", ptr);
		die(call, "invalid pointer or corrupted header (a buffer before it overflowed?)", ptr);
	}
	return h;
}

/* Size and lead make sense (and in check mode the canaries hold): aborts if not. */
static inline void check_header(const char *call, void *ptr, struct pf_page *page,
				const struct pf_mhdr *h)
{
	uintptr_t offset = (uintptr_t)ptr - (uintptr_t)pf__page_address(page);
	if (PF_UNLIKELY(h->lead < PF_HDR || h->lead > offset || h->size <= h->lead ||
			h->size > PF_FRAG_PAGE_SIZE))
		die(call, "corrupted header", ptr);
	if (check_mode())
		verify_checked(call, ptr, h);
}

/* The header of a small block, fully validated (the block's size is about to be used). */
static inline struct pf_mhdr *small_header(const char *call, void *ptr, struct pf_page *page)
{
	struct pf_mhdr *h = live_header(call, ptr, page);
	check_header(call, ptr, page, h);
	return h;
}

/* ---- small: alloc and free ------------------------------------------------------ */

static inline void count_small(struct pf_thread *t)
{
	pf__local_inc(&t->malloc_small);
}

/*
 * The fast path: a fragment of the current page whose user pointer, lead
 * bytes in, is aligned to lead (16, or memalign's alignment below 4 KiB:
 * the page is at least 4 KiB aligned, so aligning the offset aligns the
 * address); the same layout as small_alloc's. NULL if it does not fit.
 */
static inline void *small_fast(struct pf_thread *t, size_t size, uint32_t lead, uint32_t slot)
{
	struct pf_cache *c = &t->cache;
	/* at least one byte: a zero-size block must not end where the next page starts */
	uint32_t used = (uint32_t)round16(size ? size : 1);
	uint32_t total = lead + used;
	uint32_t offset = (c->offset + lead - 1) & ~(lead - 1);
	if (PF_UNLIKELY(offset + total > c->size))
		return NULL;
	c->offset = offset + total;
	c->handed++;
	pf__local_inc(&c->allocs);
	count_small(t);
	struct pf_mhdr *h = (struct pf_mhdr *)(c->va + offset + lead) - 1;
	/* no canary (only check mode reads it, and check mode never comes here): the site's slot */
	h->size = total;
	h->lead = (uint16_t)lead;
	h->slack = (uint16_t)(used - size);
	h->canary = slot;
	h->magic = PF_MAGIC_LIVE;
	return h + 1;
}

/* ---- small: two frag pages per thread ---------------------------------------- */

/*
 * page_frag abandons a used-up page whose fragments are still out, and the
 * typical malloc burst frees them right after. So the malloc front keeps the
 * used-up page one more round as the thread's spare: fragments freed on this
 * thread hand their reference back to its bias like the current page's, and
 * when the current page is used up in turn and every fragment of the spare
 * is back, the spare is reused in place (no refill, no atomic frees). Only
 * the page fields move between the two caches; the counters stay with
 * t->cache.
 */
static void move_page(struct pf_cache *to, struct pf_cache *from)
{
	to->page = from->page;
	to->va = from->va;
	to->offset = from->offset;
	to->size = from->size;
	to->handed = from->handed;
	to->returned = from->returned;
	to->pfmemalloc = from->pfmemalloc;
	pf__frag_forget_page(from);
}

static bool fits(const struct pf_cache *c, uint32_t fragsz, uint32_t align)
{
	uint32_t offset = (c->offset + align - 1) & ~(align - 1);
	return c->page && (uint64_t)offset + fragsz <= c->size;
}

/* The current page cannot hold fragsz: reuse the spare in place, or make the current page the spare. */
static void rotate(struct pf_thread *t, uint32_t fragsz, uint32_t align)
{
	struct pf_cache *cur = &t->cache, *spare = &t->spare;
	if (!cur->page || fits(cur, fragsz, align))
		return;
	if (spare->page && !spare->pfmemalloc && fragsz <= spare->size &&
	    atomic_load_explicit(&spare->page->refcount, memory_order_acquire) == (int32_t)pf__bias(spare)) {
		struct pf_cache used_up;
		/* every fragment is back (refcount == bias): nobody else holds a reference */
		atomic_store_explicit(&spare->page->refcount, PF_BIAS_FULL, memory_order_relaxed);
		pf__bias_set_full(spare);
		spare->offset = 0;
		pf__count(PF_CTR_RECYCLES, 1);
		move_page(&used_up, cur);
		move_page(cur, spare);
		move_page(spare, &used_up);
		return;
	}
	bool adaptive = atomic_load_explicit(&route, memory_order_relaxed) == PF_ROUTE_ADAPTIVE;
	struct pf_page *let_go = spare->page;
	uint32_t fill = spare->offset;
	pf__frag_drain(spare); /* its fragments keep it alive, or it goes back */
	if (adaptive) {
		if (let_go)
			pf__route_watch(t, let_go, fill);
		pf__route_tick(t);
	}
	move_page(spare, cur);
}

/*
 * On this thread, while one of its caches holds the page: the reference goes
 * back to the bias. The newest fragment gives its bytes back; the last one
 * out gives the whole page back (a full bias means no fragment is out and
 * none was freed elsewhere), so a burst freed in any order reuses the same,
 * cache-hot bytes next time.
 */
static inline bool free_local(struct pf_thread *t, struct pf_cache *c, uintptr_t frag, uint32_t size)
{
	if (++c->returned == c->handed)
		c->offset = 0;
	else if (frag + size == c->va + c->offset)
		c->offset = (uint32_t)(frag - c->va);
	pf__local_inc(&t->cache.bias_frees); /* stats count it in frees too */
	return true;
}

/* Any small request: refills, alignment padding, check mode. NULL/ENOMEM. */
static void *small_alloc(struct pf_thread *t, size_t size, size_t align, uint32_t slot)
{
	size_t lead = align > PF_HDR ? align : PF_HDR;
	size_t used = round16(size + (check_mode() ? 1 : 0));
	if (used == 0)
		used = PF_MIN_ALIGN;
	size_t frag_align = lead > PF_HDR ? lead : PF_MIN_ALIGN;
	rotate(t, (uint32_t)(lead + used), (uint32_t)frag_align);
	char *frag = pf__frag_alloc(&t->cache, lead + used, frag_align);
	if (!frag)
		return NULL;
	count_small(t);
	void *ptr = frag + lead;
	struct pf_mhdr *h = header_of(ptr);
	write_header(h, (uint32_t)(lead + used), (uint32_t)lead, (uint32_t)(used - size), slot);
	if (check_mode())
		write_tail(ptr, h);
	return ptr;
}

static inline void count_free(struct pf_thread *t)
{
	if (PF_LIKELY(t != NULL))
		pf__local_inc(&t->frees);
	else
		pf__count(PF_CTR_RETIRED_FREES, 1);
}

/*
 * A free of a block the fast path did not take: one of this thread's pages
 * in check mode or with a header it doubted, or another thread's page. The
 * latter only drops a page reference and never uses the header's size or
 * lead, so (outside check mode) only its magic is checked: a double free or
 * a pointer that is not a block's start still aborts; a header whose magic
 * survived but whose size did not is caught where the size is used.
 */
static inline void small_free(const char *call, void *ptr, struct pf_page *page,
			      struct pf_thread *t)
{
	struct pf_mhdr *h = live_header(call, ptr, page);
	bool own = t && (t->cache.page == page || t->spare.page == page);
	if (own || check_mode())
		check_header(call, ptr, page, h);
	if (check_mode())
		memset(ptr, PF_POISON_BYTE, small_usable(h));
	h->magic = PF_MAGIC_FREED;
	if (own) {
		free_local(t, t->cache.page == page ? &t->cache : &t->spare, (uintptr_t)ptr - h->lead,
			   h->size);
		return;
	}
	if (!t) { /* a consumer thread that never allocated: state for its batch, if it can have one */
		int saved = errno;
		t = pf__thread();
		errno = saved;
	}
	if (PF_UNLIKELY((t ? pf__frag_put_batched(&t->put, page) : pf__frag_put(page)) != 0))
		die(call, "page reference count underflow (double free?)", ptr);
	count_free(t);
}

/* On the owner thread, the newest fragment of its cache can shrink or grow in place. */
static bool small_resize_newest(struct pf_mhdr *h, void *ptr, struct pf_page *page, size_t size)
{
	struct pf_thread *t = pf__self;
	if (!t || t->cache.page != page)
		return false;
	struct pf_cache *c = &t->cache;
	uintptr_t frag = (uintptr_t)ptr - h->lead;
	if (frag + h->size != c->va + c->offset)
		return false;
	size_t used = round16(size + (check_mode() ? 1 : 0));
	if (frag - c->va + h->lead + used > c->size)
		return false;
	h->size = (uint32_t)(h->lead + used);
	h->slack = (uint16_t)(used - size);
	c->offset = (uint32_t)(frag - c->va) + h->size;
	return true;
}

/* ---- compact: slab blocks ---------------------------------------------------------- */

/* A block of the thread's slab heap for 1..PF_SLAB_MAX bytes. NULL/ENOMEM. */
static inline void *compact_alloc(struct pf_thread *t, size_t size)
{
	unsigned cls = pf__slab_class(size);
	void *ptr = pf__slab_alloc_fast(&t->slab, cls);
	if (PF_LIKELY(ptr != NULL))
		return ptr;
	if (atomic_load_explicit(&route, memory_order_relaxed) == PF_ROUTE_ADAPTIVE)
		pf__route_check_cap(); /* a page's worth of blocks: pinning may have fallen */
	return pf__slab_alloc_slow(&t->slab, cls);
}

static inline bool is_slab(const struct pf_page *head)
{
	return (head->flags & PF_PF_SLAB) != 0;
}

static void compact_free(const char *call, void *ptr, struct pf_page *head, struct pf_thread *t)
{
	if (!t) { /* a thread that never allocated: a heap for it, if it can have one */
		int saved = errno;
		t = pf__thread();
		errno = saved;
	}
	switch (pf__slab_free(t ? &t->slab : NULL, head, ptr)) {
	case PF_SLAB_FREED:
		return;
	case PF_SLAB_DOUBLE_FREE:
		die(call, "double free detected", ptr);
	case PF_SLAB_NOT_A_BLOCK:
		break;
	}
	die(call, "invalid pointer (not the start of a block)", ptr);
}

/* The block ptr must start (aborts if it does not), and its bytes. */
static size_t compact_usable(const char *call, void *ptr, const struct pf_page *head)
{
	if (PF_UNLIKELY(!pf__slab_is_block(head, ptr)))
		die(call, "invalid pointer (not the start of a block)", ptr);
	return pf__slab_block_size(head);
}

/* ---- medium and large: page runs and chunk runs ------------------------------- */

static unsigned order_for(size_t bytes)
{
	size_t pages = (bytes + PF_PAGE_SIZE - 1) >> PF_PAGE_SHIFT;
	return pages <= 1 ? 0 : (unsigned)(64 - __builtin_clzll((unsigned long long)pages - 1));
}

/* Exactly the pages asked for (aligned as asked): at most 4 KiB more than the request. */
static void *medium_alloc(size_t size, size_t align)
{
	uint32_t pages = (uint32_t)((size + PF_PAGE_SIZE - 1) >> PF_PAGE_SHIFT);
	struct pf_thread *t = pf__self;
	struct pf_page *page = pf__pages_alloc_exact(pages ? pages : 1, order_for(align));
	if (!page)
		return NULL;
	page->flags |= PF_PF_RUN;
	if (t)
		pf__local_inc(&t->malloc_medium);
	else
		pf__count(PF_CTR_RETIRED_MALLOC_MEDIUM, 1);
	return pf__page_address(page);
}

static uint32_t chunks_for(size_t size)
{
	return (uint32_t)((size + PF_CHUNK_SIZE - 1) / PF_CHUNK_SIZE);
}

static void *large_alloc(size_t size, size_t align, bool *fresh)
{
	size_t n = size ? (size + PF_CHUNK_SIZE - 1) / PF_CHUNK_SIZE : 1;
	if (n > UINT32_MAX)
		return NULL;
	struct pf_page *head = pf__chunks_alloc((uint32_t)n, align, fresh);
	if (!head)
		return NULL;
	pf__count(PF_CTR_MALLOC_LARGE, 1);
	return pf__page_address(head);
}

static size_t run_bytes(const struct pf_page *head)
{
	if (head->flags & PF_PF_CHUNKS)
		return (size_t)pf__chunk_run_length(head) * PF_CHUNK_SIZE;
	if (head->flags & PF_PF_EXACT)
		return (size_t)pf__exact_run_pages(head) << PF_PAGE_SHIFT;
	return (size_t)PF_PAGE_SIZE << head->order;
}

static void run_free(const char *call, void *ptr, struct pf_page *head)
{
	if (PF_UNLIKELY(ptr != pf__page_address(head)))
		die(call, "invalid pointer (inside a block, not its start)", ptr);
	int saved = errno;
	if (PF_UNLIKELY(pf__frag_put(head) != 0))
		die(call, "page reference count underflow (double free?)", ptr);
	count_free(pf__self);
	errno = saved;
}

/* ---- lookup ----------------------------------------------------------------------- */

/* Head page of the in-use block holding an arena pointer; aborts if there is none. */
static inline struct pf_page *block_of(const char *call, void *ptr)
{
	struct pf_page *page = pf__page_at(pf__page_index(ptr));
	if (pf__state(page) == PF_PS_TAIL)
		page -= page->head_delta;
	if (PF_UNLIKELY(pf__state(page) != PF_PS_IN_USE))
		die(call, "invalid pointer or double free (its page is not in use)", ptr);
	return page;
}

static inline bool is_run(const struct pf_page *head)
{
	return (head->flags & (PF_PF_RUN | PF_PF_CHUNKS)) != 0;
}

/* ---- pointers from elsewhere -------------------------------------------------------- */

#ifdef PF_SANITIZED
/*
 * A sanitizer build preloaded beside its runtime meets the runtime's own
 * blocks: its interceptors (strdup and such) allocate with its allocator,
 * and so does everything before this library's constructor (see
 * preload.c). The runtime can say which blocks are its own, and how big.
 */
extern int __sanitizer_get_ownership(const volatile void *p) __attribute__((weak));
extern size_t __sanitizer_get_allocated_size(const volatile void *p) __attribute__((weak));

static bool runtime_owns(const void *ptr)
{
	return __sanitizer_get_ownership && __sanitizer_get_ownership(ptr);
}
#endif

/* Bytes of a block another allocator handed out, if that can be known; else SIZE_MAX. */
static size_t foreign_size(const void *ptr)
{
#ifdef PF_SANITIZED
	if (runtime_owns(ptr))
		return __sanitizer_get_allocated_size(ptr);
#endif
	(void)ptr;
	return SIZE_MAX;
}

static void foreign_free(void)
{
	pf__count(PF_CTR_FOREIGN_FREES, 1);
}

/* ---- degraded: libc's allocator for what pyfrag cannot serve ------------------------- */

static _Atomic bool degraded;
static _Atomic uint32_t init_skips;

size_t pf__other_usable_size(void *ptr)
{
#ifdef PF_SANITIZED
	extern size_t __interceptor_malloc_usable_size(void *ptr);
	return ptr ? __interceptor_malloc_usable_size(ptr) : 0;
#else
	/* glibc has no other name for it: found once, off pyfrag's own path */
	static size_t (*_Atomic libc_usable)(void *);
	size_t (*fn)(void *) = atomic_load_explicit(&libc_usable, memory_order_acquire);
	if (!fn) {
		fn = (size_t (*)(void *))dlsym(RTLD_NEXT, "malloc_usable_size");
		atomic_store_explicit(&libc_usable, fn, memory_order_release);
	}
	return fn && ptr ? fn(ptr) : 0;
#endif
}

/* A pointer outside the arena that libc made: any, once degraded (sanitizer builds: the runtime's). */
static bool libc_block(const void *ptr)
{
	if (PF_LIKELY(!atomic_load_explicit(&degraded, memory_order_relaxed)))
		return false;
#ifdef PF_SANITIZED
	return runtime_owns(ptr);
#else
	return ptr != NULL;
#endif
}

static __attribute__((cold)) void say_degraded(void)
{
	if (atomic_exchange(&degraded, true))
		return;
	const char *pieces[] = { "pyfrag: warning: out of address space or memory (ulimit -v?); "
				 "requests pyfrag cannot serve now go to libc's malloc\n", NULL };
	pf__write_all(2, pieces);
}

static void *out_of_memory(void);

/*
 * pyfrag could not serve a request glibc may still serve: hand it to libc,
 * unless PYFRAG_LIMIT asked for the failure. zero (calloc) asks for zeroed
 * memory and says whether it is.
 */
static __attribute__((noinline, cold)) void *degrade(size_t size, size_t align, bool *zero)
{
	if (PF_OPT(limit) > 0)
		return out_of_memory();
	int saved = errno;
	say_degraded();
	void *ptr;
	if (zero && align <= PF_MIN_ALIGN)
		ptr = PF_OTHER(calloc)(1, size);
	else
		ptr = align <= PF_MIN_ALIGN ? PF_OTHER(malloc)(size) : PF_OTHER(memalign)(align, size);
	if (!ptr)
		return out_of_memory();
	pf__count(PF_CTR_LIBC_ALLOCS, 1);
	if (zero)
		*zero = align <= PF_MIN_ALIGN;
	errno = saved;
	return ptr;
}

/* Initialised, or not: once degraded, a failed init is retried every 256th call, not each. */
static bool init_ready(void)
{
	if (PF_LIKELY(atomic_load_explicit(&pf__ready, memory_order_acquire) == 1))
		return true;
	if (atomic_load_explicit(&degraded, memory_order_relaxed) &&
	    atomic_fetch_add_explicit(&init_skips, 1, memory_order_relaxed) % 256 != 0)
		return false;
	if (pf__options_on_change(options_changed) != 0 || pf__thread_on_give_back(pf__route_thread_gone) != 0)
		return false;
	return pf__ensure_init() == 0;
}

/* ---- entry points ------------------------------------------------------------------ */

static void *out_of_memory(void)
{
	pf__count(PF_CTR_ALLOC_FAILURES, 1);
	errno = ENOMEM;
	return NULL;
}

/* The route of a small request (align 16) from site: page_frag, or compact. */
static inline bool wants_compact(unsigned r, size_t size, uintptr_t site, uint32_t *slot)
{
	if (r == PF_ROUTE_FRAG)
		return false;
	if (r == PF_ROUTE_COMPACT)
		return true;
	*slot = pf__site_slot(site, pf__slab_class(size));
	return atomic_load_explicit(&pf__pin_over, memory_order_relaxed) ||
	       atomic_load_explicit(&pf__site_compact[*slot], memory_order_relaxed);
}

/* Every allocation but the fast path. fresh (optional) says the memory reads as zero. */
static void *alloc_slow(size_t size, size_t align, bool *fresh, uintptr_t site)
{
	int saved = errno;
	if (size > PTRDIFF_MAX || align > PTRDIFF_MAX)
		return out_of_memory();
	if (!init_ready()) {
		errno = saved; /* the failed init's ENOMEM is not the caller's: libc may still serve it */
		return degrade(size, align, fresh);
	}
	void *ptr = NULL;
	bool zero = false;
	size_t max = small_max();
	bool small = align <= PF_MIN_ALIGN ? size <= max : align < PF_PAGE_SIZE && size + align <= max;
	bool slab = align <= PF_MIN_ALIGN && size <= PF_SLAB_MAX;
	struct pf_thread *t = small || slab ? pf__thread() : NULL;
	uint32_t slot = 0;
	unsigned r = atomic_load_explicit(&route, memory_order_relaxed);
	if (t && slab && (!small || (align <= PF_MIN_ALIGN && wants_compact(r, size, site, &slot))))
		ptr = compact_alloc(t, size);
	else if (t && small)
		ptr = small_alloc(t, size, align, slot);
	else if (size <= PF_CHUNK_SIZE && align <= PF_CHUNK_SIZE)
		ptr = medium_alloc(size ? size : 1, align);
	else
		ptr = large_alloc(size, align > PF_CHUNK_SIZE ? align : PF_CHUNK_SIZE, &zero);
	if (!ptr) {
		errno = saved;
		return degrade(size, align, fresh);
	}
	if (fresh)
		*fresh = zero;
	errno = saved;
	return ptr;
}

/* malloc on the compact route's fast path (kept apart: the page_frag fast path saves no registers). */
static __attribute__((noinline)) void *compact_malloc(struct pf_thread *t, size_t size, uintptr_t site)
{
	void *ptr = compact_alloc(t, size);
	return PF_LIKELY(ptr != NULL) ? ptr : alloc_slow(size, PF_MIN_ALIGN, NULL, site);
}

/*
 * Whatever pf__malloc's page_frag fast path does not take: compact blocks
 * (the compact route's small requests, every route's up to 32 KiB above
 * page_frag's bound; check mode is the frag route here), refills, the rest.
 */
static __attribute__((noinline)) void *malloc_rest(struct pf_thread *t, size_t size, uintptr_t site)
{
	if (PF_LIKELY(t != NULL) && size <= PF_SLAB_MAX &&
	    (atomic_load_explicit(&route, memory_order_relaxed) == PF_ROUTE_COMPACT ||
	     size >= atomic_load_explicit(&frag_below, memory_order_relaxed))) {
		void *ptr = compact_alloc(t, size);
		if (PF_LIKELY(ptr != NULL))
			return ptr;
	}
	return alloc_slow(size, PF_MIN_ALIGN, NULL, site);
}

void *pf__malloc(size_t size, uintptr_t site)
{
	struct pf_thread *t = pf__self;
	if (PF_LIKELY(t != NULL) &&
	    PF_LIKELY(size < atomic_load_explicit(&fast_below, memory_order_relaxed))) {
		uint32_t slot = 0;
		if (atomic_load_explicit(&route, memory_order_relaxed) == PF_ROUTE_ADAPTIVE &&
		    wants_compact(PF_ROUTE_ADAPTIVE, size, site, &slot))
			return compact_malloc(t, size, site);
		void *ptr = small_fast(t, size, PF_HDR, slot);
		if (PF_LIKELY(ptr != NULL))
			return ptr;
		return alloc_slow(size, PF_MIN_ALIGN, NULL, site);
	}
	return malloc_rest(t, size, site);
}

/*
 * A block inside one of the calling thread's frag pages: no page metadata to
 * look up (the cache already holds the page), no atomic operation. True if
 * it was such a block and is now free.
 */
static inline bool free_in_page(struct pf_thread *t, struct pf_cache *c, void *ptr)
{
	uintptr_t offset = (uintptr_t)ptr - c->va;
	if (offset >= c->size || offset < PF_HDR)
		return false;
	struct pf_mhdr *h = header_of(ptr);
	/* check mode's blocks fail the magic test too: they get the full checks */
	if (PF_UNLIKELY(h->magic != PF_MAGIC_LIVE || h->lead > offset || ((uintptr_t)ptr & 15)))
		return false; /* the full checks say what is wrong */
	h->magic = PF_MAGIC_FREED;
	return free_local(t, c, (uintptr_t)ptr - h->lead, h->size);
}

/* Every free but one into the calling thread's own frag pages (kept apart: no register saves there). */
static __attribute__((noinline)) void free_slow(struct pf_thread *t, void *ptr)
{
	/*
	 * Inside the page this thread batches frees for (a consumer freeing a
	 * producer's blocks): a frag page known to be in use (the batch holds
	 * references to it) and no cache's, so no page metadata to look up.
	 */
	struct pf_page *batched = t ? t->put.page : NULL;
	if (batched && (uintptr_t)ptr - (uintptr_t)pf__page_address(batched) <
			       (PF_PAGE_SIZE << batched->order) && !check_mode()) {
		live_header("free", ptr, batched)->magic = PF_MAGIC_FREED;
		if (PF_UNLIKELY(pf__frag_put_batched(&t->put, batched) != 0))
			die("free", "page reference count underflow (double free?)", ptr);
		pf__local_inc(&t->frees);
		return;
	}
	if (PF_UNLIKELY(!pf__in_arena(ptr))) {
		if (libc_block(ptr)) {
			pf__count(PF_CTR_LIBC_FREES, 1);
			PF_OTHER(free)(ptr);
		} else if (ptr) {
			foreign_free();
		}
		return;
	}
	struct pf_page *page = block_of("free", ptr);
	if (is_slab(page))
		compact_free("free", ptr, page, t);
	else if (PF_UNLIKELY(is_run(page)))
		run_free("free", ptr, page);
	else
		small_free("free", ptr, page, t);
}

/* A compact block of this thread's own slab page, in the first region: the inline case. */
static inline bool free_compact_own(struct pf_thread *t, void *ptr)
{
	if ((uintptr_t)ptr - pf__arena.base >= pf__first_region_size())
		return false;
	struct pf_page *page = pf__page_at(pf__page_index(ptr));
	if (pf__state(page) == PF_PS_TAIL)
		page -= page->head_delta;
	return pf__state(page) == PF_PS_IN_USE && is_slab(page) &&
	       pf__slab_free_own(&t->slab, page, ptr);
}

void pf__free(void *ptr)
{
	struct pf_thread *t = pf__self;
	if (PF_LIKELY(t != NULL) && (free_in_page(t, &t->cache, ptr) || free_in_page(t, &t->spare, ptr) ||
				     free_compact_own(t, ptr)))
		return;
	free_slow(t, ptr);
}

void *pf__calloc(size_t n, size_t size, uintptr_t site)
{
	size_t total;
	if (__builtin_mul_overflow(n, size, &total))
		return out_of_memory();
	bool fresh = false;
	void *ptr = alloc_slow(total, PF_MIN_ALIGN, &fresh, site);
	if (ptr && !fresh)
		memset(ptr, 0, total);
	return ptr;
}

static size_t usable_size(void *ptr, struct pf_page *page)
{
	if (is_slab(page))
		return compact_usable("malloc_usable_size", ptr, page);
	if (is_run(page))
		return run_bytes(page);
	return small_visible(small_header("malloc_usable_size", ptr, page));
}

size_t pf__malloc_usable_size(void *ptr)
{
	if (!ptr)
		return 0;
	if (!pf__in_arena(ptr)) {
		if (libc_block(ptr))
			return pf__other_usable_size(ptr);
		size_t size = foreign_size(ptr);
		return size == SIZE_MAX ? 0 : size;
	}
	struct pf_page *page = block_of("malloc_usable_size", ptr);
	if (is_run(page) && ptr != pf__page_address(page))
		die("malloc_usable_size", "invalid pointer (inside a block, not its start)", ptr);
	return usable_size(ptr, page);
}

/* Move to a new block: copy, free the old one. NULL/ENOMEM leaves the old one alone. */
static void *realloc_move(void *ptr, size_t old_size, size_t size, bool free_old, uintptr_t site)
{
	void *fresh = pf__malloc(size, site);
	if (!fresh)
		return NULL;
	memcpy(fresh, ptr, old_size < size ? old_size : size);
	if (free_old)
		pf__free(ptr);
	return fresh;
}

static void *realloc_foreign(void *ptr, size_t size, uintptr_t site)
{
	if (libc_block(ptr)) /* it stays libc's */
		return PF_OTHER(realloc)(ptr, size);
	size_t old = foreign_size(ptr);
	if (old == SIZE_MAX) { /* nobody can say how many bytes are there */
		foreign_free();
		return out_of_memory();
	}
	return realloc_move(ptr, old, size, false, site); /* the old block is not ours to free */
}

static void *realloc_small(void *ptr, struct pf_page *page, size_t size, uintptr_t site)
{
	struct pf_mhdr *h = small_header("realloc", ptr, page);
	size_t usable = small_usable(h);
	if (size <= small_max() && small_resize_newest(h, ptr, page, size)) {
		if (check_mode())
			write_tail(ptr, h);
		return ptr;
	}
	if (size + (check_mode() ? 1 : 0) <= usable) { /* shrink in place */
		h->slack = (uint16_t)(usable - size);
		if (check_mode())
			write_tail(ptr, h);
		return ptr;
	}
	return realloc_move(ptr, small_visible(h), size, true, site);
}

/* A slab block keeps its place while the request stays in its class. */
static void *realloc_compact(void *ptr, struct pf_page *head, size_t size, uintptr_t site)
{
	size_t bytes = compact_usable("realloc", ptr, head);
	if (size <= bytes && pf__slab_class(size) == pf__slab_class(bytes))
		return ptr;
	return realloc_move(ptr, bytes, size, true, site);
}

static void *realloc_run(void *ptr, struct pf_page *head, size_t size, uintptr_t site)
{
	if (PF_UNLIKELY(ptr != pf__page_address(head)))
		die("realloc", "invalid pointer (inside a block, not its start)", ptr);
	size_t bytes = run_bytes(head);
	if (head->flags & PF_PF_CHUNKS) {
		if (size > PF_CHUNK_SIZE / 2 && size <= PTRDIFF_MAX) {
			int saved = errno;
			if (pf__chunks_resize(head, chunks_for(size)) == 0) {
				errno = saved;
				return ptr;
			}
			errno = saved;
		}
	} else if (size <= bytes && size > bytes / 2 && size > PF_SLAB_MAX) {
		return ptr; /* shrunk by less than half, and still too big for a slab class */
	}
	return realloc_move(ptr, bytes, size, true, site);
}

void *pf__realloc(void *ptr, size_t size, uintptr_t site)
{
	if (!ptr)
		return pf__malloc(size, site);
	if (size == 0) { /* glibc frees and returns NULL */
		pf__free(ptr);
		return NULL;
	}
	if (!pf__in_arena(ptr))
		return realloc_foreign(ptr, size, site);
	if (size > PTRDIFF_MAX)
		return out_of_memory();
	struct pf_page *page = block_of("realloc", ptr);
	if (is_slab(page))
		return realloc_compact(ptr, page, size, site);
	if (is_run(page))
		return realloc_run(ptr, page, size, site);
	return realloc_small(ptr, page, size, site);
}

void *pf__reallocarray(void *ptr, size_t n, size_t size, uintptr_t site)
{
	size_t total;
	if (__builtin_mul_overflow(n, size, &total))
		return out_of_memory();
	return pf__realloc(ptr, total, site);
}

static bool power_of_two(size_t x)
{
	return x != 0 && (x & (x - 1)) == 0;
}

/* An alignment above 16 (a power of two): the fast path when it fits the current page. */
static void *aligned_small_first(size_t size, size_t align, uintptr_t site)
{
	struct pf_thread *t = pf__self;
	size_t below = atomic_load_explicit(&fast_below, memory_order_relaxed);
	if (PF_LIKELY(t != NULL) && align < PF_PAGE_SIZE && size < below && size + align < below) {
		void *ptr = small_fast(t, size, (uint32_t)align, 0);
		if (PF_LIKELY(ptr != NULL))
			return ptr;
	}
	return alloc_slow(size, align, NULL, site);
}

/* glibc's memalign: small alignments are malloc's, others round up to a power of two. */
void *pf__memalign(size_t align, size_t size, uintptr_t site)
{
	if (align <= PF_MIN_ALIGN)
		return pf__malloc(size, site);
	if (align > SIZE_MAX / 2 + 1) {
		errno = EINVAL;
		return NULL;
	}
	if (!power_of_two(align))
		align = (size_t)1 << (64 - __builtin_clzll((unsigned long long)align));
	return aligned_small_first(size, align, site);
}

void *pf__aligned_alloc(size_t align, size_t size, uintptr_t site)
{
	return pf__memalign(align, size, site);
}

int pf__posix_memalign(void **out, size_t align, size_t size, uintptr_t site)
{
	if (align % sizeof(void *) != 0 || !power_of_two(align))
		return EINVAL;
	int saved = errno;
	void *ptr = align <= PF_MIN_ALIGN ? pf__malloc(size, site) : aligned_small_first(size, align, site);
	errno = saved;
	if (!ptr)
		return ENOMEM;
	*out = ptr;
	return 0;
}

void *pf__valloc(size_t size)
{
	return alloc_slow(size, PF_PAGE_SIZE, NULL, 0);
}

void *pf__pvalloc(size_t size)
{
	if (size > SIZE_MAX - 2 * PF_PAGE_SIZE)
		return out_of_memory();
	size_t rounded = (size + PF_PAGE_SIZE - 1) & ~(size_t)(PF_PAGE_SIZE - 1);
	return alloc_slow(rounded ? rounded : PF_PAGE_SIZE, PF_PAGE_SIZE, NULL, 0);
}
