/* SPDX-License-Identifier: GPL-2.0-only */
/*
 * pyfrag public C API.
 *
 * A pf_cache_t is one page_frag cache: fragments of 1..32768 bytes are
 * bump-allocated out of a 32 KiB "frag page" (4 KiB when no 32 KiB block can
 * be had). A cache is used by one thread at a time; any thread may free any
 * fragment. Programs that do not manage caches use pf_alloc()/pf_free(),
 * which go through the calling thread's own default cache.
 *
 * Every failure returns NULL (or -1) and sets errno; pf_last_error_message()
 * gives a sentence saying which rule was broken. Nothing here aborts.
 */
#ifndef PYFRAG_H
#define PYFRAG_H

#include <stddef.h>
#include <stdint.h>

#ifdef __cplusplus
extern "C" {
#endif

#define PF_VERSION_STRING "0.1.0"
#define PF_ABI_VERSION 2 /* 2: pf_cache_fast_t, the inline fast paths */

#define PF_PAGE_SIZE 4096u
#define PF_FRAG_PAGE_SIZE 32768u          /* order-3 frag page: largest fragment */
#define PF_CHUNK_SIZE (2u * 1024u * 1024u) /* one hugepage */

#ifdef __GNUC__
#define PF_API __attribute__((visibility("default")))
#else
#define PF_API
#endif

typedef struct pf_cache pf_cache_t;

/* ---- library ---------------------------------------------------------- */

PF_API const char *pf_version(void);
PF_API int pf_abi_version(void);
/* Optional: reserve the arena now. -1/ENOMEM if the VA reservation fails. */
PF_API int pf_init(void);
/* Address range of the arena (everything pyfrag hands out lies inside).
 * Like every call but the option ones, it reserves the arena on first use,
 * which freezes the options fixed at init. */
PF_API int pf_arena_range(uintptr_t *base, size_t *size);

/* ---- caches ----------------------------------------------------------- */

/* An empty cache owned by the calling thread. NULL/ENOMEM. */
PF_API pf_cache_t *pf_cache_create(void);
/* Drain and forget the cache. Outstanding fragments stay valid. Any thread
 * may call it, once no thread uses the cache any more. A cache that
 * pf_cache_create did not make (pf_thread_cache(), a shared arena's) or one
 * destroyed already is left alone: errno EINVAL and pf_last_error_message(). */
PF_API void pf_cache_destroy(pf_cache_t *cache);

/*
 * A fragment of fragsz bytes aligned to align (a power of two, at most
 * PF_FRAG_PAGE_SIZE). NULL with errno: EINVAL for fragsz == 0, a bad align or
 * a NULL cache; E2BIG for fragsz > PF_FRAG_PAGE_SIZE; ENOMEM when no page can
 * be had (limit reached, OS refused).
 */
PF_API void *pf_cache_alloc(pf_cache_t *cache, size_t fragsz);
PF_API void *pf_cache_alloc_align(pf_cache_t *cache, size_t fragsz, size_t align);

/*
 * Free a fragment that came from this cache, giving its size. On the cache's
 * owner thread, while the cache still holds the fragment's page, this costs
 * no atomic operation, and freeing the newest fragment makes its bytes
 * available again. From any other thread it is pf_free().
 */
PF_API int pf_cache_free(pf_cache_t *cache, void *frag, size_t fragsz);

/* Give the current frag page back (its fragments keep it alive). */
PF_API void pf_cache_drain(pf_cache_t *cache);

/* ---- bursts (one call for many fragments) ------------------------------- */

#define PF_BURST_MAX 256u /* most datagrams one pf_recv_burst or pf_send_burst handles */

/* n fragments of fragsz bytes into out[0..n): all of them, or -1 with errno and none. */
PF_API int pf_cache_alloc_bulk(pf_cache_t *cache, size_t fragsz, size_t n, void **out);

/*
 * Free frags[0..n) (sizes[i] each, or sizes NULL: unknown) as pf_cache_free
 * does, or as pf_free when cache is NULL. Every fragment is tried; -1 with
 * the errno of the first that failed.
 */
PF_API int pf_cache_free_bulk(pf_cache_t *cache, void *const *frags, const uint32_t *sizes,
			      size_t n);

/*
 * Receive up to n (1..PF_BURST_MAX) datagrams from socket fd with one
 * recvmmsg(flags): frags[i] is a fragment of size bytes from cache holding
 * lens[i] bytes (a longer datagram is truncated, as recv does); if names is
 * not NULL it holds n struct sockaddr_storage, filled with each sender's
 * address and namelens[i] its length. Returns how many arrived (>= 1), the
 * other fragments freed; or -1 with the kernel's errno (EAGAIN: nothing
 * waiting on a non-blocking socket or with MSG_DONTWAIT) and no fragment
 * left allocated.
 */
PF_API int pf_recv_burst(pf_cache_t *cache, int fd, size_t size, unsigned n, int flags,
			 void **frags, uint32_t *lens, void *names, uint32_t *namelens);

/*
 * Send frags[i] (lens[i] bytes each, 1..PF_BURST_MAX of them) as datagrams
 * with one sendmmsg(flags), to name (namelen bytes) or, if NULL, to the
 * connected peer. How many were sent, or -1 with the kernel's errno.
 */
PF_API int pf_send_burst(int fd, void *const *frags, const uint32_t *lens, unsigned n,
			 const void *name, uint32_t namelen, int flags);

/* ---- inline fast paths (PF_ABI_VERSION 2) ------------------------------ */

/*
 * The first bytes of every pf_cache_t, so that the common cases of
 * pf_cache_alloc, pf_cache_alloc_align and pf_cache_free can be compiled
 * into the caller (no call, no lookup of the thread's state). This layout is
 * part of the ABI: the library checks it at build time and changes
 * PF_ABI_VERSION if it ever changes; a program built against this header
 * must load a library whose pf_abi_version() equals PF_ABI_VERSION.
 * Read-only for programs: only the inline functions below write it, and
 * only on the cache's owner thread. Everything the inline paths do not
 * handle (no room in the current page, bad arguments, another thread, a
 * fragment of an older page) goes to the exported function, so results,
 * errors, page references and statistics are the same either way. Builds
 * that want every call seen by the library (valgrind=1's memcheck
 * requests) define PF_NO_INLINE, which makes the inline functions plain
 * calls.
 */
typedef struct pf_cache_fast {
	uintptr_t va;        /* current frag page, 0 if none */
	uint32_t offset;     /* bytes handed out from it, counting up */
	uint32_t size;       /* its size; 0 if none */
	/* the page references the cache owns are PF_BIAS_FULL_ - (handed - returned) */
	uint32_t handed;     /* fragments handed out since the page was (re)filled */
	uint32_t returned;   /* of those, how many came back to the cache (owner frees) */
	uint32_t reserved_;  /* the library's */
	uintptr_t owner;     /* pf_thread_id() of the owner thread */
	uint64_t allocs;     /* counters: written by the owner only, read relaxed by stats */
	uint64_t bias_frees;
} pf_cache_fast_t;

#define PF_BIAS_FULL_ (PF_FRAG_PAGE_SIZE + 1u) /* bias after a refill: no fragment out */

#if defined(__GNUC__) && (defined(__x86_64__) || defined(__aarch64__))
#define PF_HAVE_THREAD_ID 1
/* The calling thread's thread pointer: one instruction, unique among live threads. */
static inline uintptr_t pf_thread_id(void)
{
	uintptr_t tp;
#if defined(__x86_64__)
	__asm__("mov %%fs:0, %0" : "=r"(tp));
#else
	__asm__("mrs %0, tpidr_el0" : "=r"(tp));
#endif
	return tp;
}
#endif

#if defined(__GNUC__) && !defined(PF_NO_INLINE)
#define PF_INLINE_ static inline __attribute__((always_inline))
#define PF_EXPECT_(x) __builtin_expect(!!(x), 1)
/* Owner-written counters that other threads read: a relaxed store, no read-modify-write. */
#define PF_BUMP_(counter) \
	__atomic_store_n(&(counter), __atomic_load_n(&(counter), __ATOMIC_RELAXED) + 1, __ATOMIC_RELAXED)

PF_INLINE_ void *pf_cache_alloc_align_inline(pf_cache_t *cache, size_t fragsz, size_t align)
{
	pf_cache_fast_t *c = (pf_cache_fast_t *)cache;
	if (PF_EXPECT_(c != NULL && fragsz - 1 < PF_FRAG_PAGE_SIZE && align - 1 < PF_FRAG_PAGE_SIZE &&
		       (align & (align - 1)) == 0)) {
		/* the address is aligned, not the offset (a 4 KiB page is only 4 KiB aligned) */
		uintptr_t start = (c->va + c->offset + align - 1) & ~(uintptr_t)(align - 1);
		uintptr_t end = start - c->va + fragsz;
		if (PF_EXPECT_(end <= c->size)) {
			c->offset = (uint32_t)end;
			c->handed++;
			PF_BUMP_(c->allocs);
			return (void *)start;
		}
	}
	return pf_cache_alloc_align(cache, fragsz, align);
}

PF_INLINE_ void *pf_cache_alloc_inline(pf_cache_t *cache, size_t fragsz)
{
	pf_cache_fast_t *c = (pf_cache_fast_t *)cache;
	if (PF_EXPECT_(c != NULL)) {
		uint32_t offset = c->offset;
		/* 1 <= fragsz <= room left, in one compare */
		if (PF_EXPECT_(fragsz - 1 < (size_t)(c->size - offset))) {
			c->offset = offset + (uint32_t)fragsz;
			c->handed++;
			PF_BUMP_(c->allocs);
			return (void *)(c->va + offset);
		}
	}
	return pf_cache_alloc(cache, fragsz);
}

/* pf_cache_free; inline when the owner frees a fragment of the cache's current page. */
PF_INLINE_ int pf_cache_free_inline(pf_cache_t *cache, void *frag, size_t fragsz)
{
#ifdef PF_HAVE_THREAD_ID
	pf_cache_fast_t *c = (pf_cache_fast_t *)cache;
	uintptr_t addr = (uintptr_t)frag;
	/* on the owner thread (first: the rest is the owner's to write), inside what was
	 * handed out of the current page, a fragment out */
	if (PF_EXPECT_(c != NULL && c->owner == pf_thread_id() && addr - c->va < c->offset &&
		       c->handed != c->returned)) {
		c->returned++;
		/* the newest fragment gives its bytes back (fragsz 0 never matches: addr < the end) */
		if (addr + fragsz == c->va + c->offset)
			c->offset = (uint32_t)(addr - c->va);
		PF_BUMP_(c->bias_frees);
		return 0;
	}
#endif
	return pf_cache_free(cache, frag, fragsz);
}
#undef PF_BUMP_
#undef PF_EXPECT_
#undef PF_INLINE_
#else
#define pf_cache_alloc_inline pf_cache_alloc
#define pf_cache_alloc_align_inline pf_cache_alloc_align
#define pf_cache_free_inline pf_cache_free
#endif

/* ---- the calling thread's default cache ------------------------------- */

PF_API void *pf_alloc(size_t fragsz);
PF_API void *pf_alloc_align(size_t fragsz, size_t align);
/* The calling thread's default cache (made on first use): for queries, and for the inline
 * fast paths (keep it in a thread-local variable; pf_alloc(n) is
 * pf_cache_alloc_inline(pf_thread_cache(), n)). */
PF_API pf_cache_t *pf_thread_cache(void);
/* Apply the thread's batched frees, drain the default cache and return the thread's page
 * lists. Runs by itself at thread exit. */
PF_API void pf_thread_flush(void);

/* ---- freeing ---------------------------------------------------------- */

/*
 * Free the fragment containing addr (any byte of it), from any thread.
 * -1/EINVAL if addr is not inside a page pyfrag has handed out; nothing is
 * changed then. As in the kernel, a fragment carries no state of its own: a
 * second free while its page is still alive takes another fragment's
 * reference and cannot be detected (it is when the page is already free).
 * The first free on a thread gives that thread its pyfrag state (a default
 * cache and page lists), which the stats count under caches and threads.
 * A thread batches the references it drops on one page while others remain
 * (a consumer freeing a producer's buffers pays one atomic operation per
 * page, not per fragment): a page's refcount (pf_page_query) can include a
 * thread's frees until that thread frees on another page, frees what may be
 * the page's last reference, calls pf_thread_flush() or pf_trim(), or exits.
 * A thread's own batch never keeps a page after its last fragment, but the
 * batches of several threads on one page can: each thread keeps at most one
 * page that way, until it frees elsewhere, flushes or exits.
 */
PF_API int pf_free(void *addr);

/* ---- memory ----------------------------------------------------------- */

/* Apply the caller's batched frees and flush its page lists; return empty chunks beyond
 * PYFRAG_RETAIN to the OS.
 * Returns the chunks released while it ran (by any thread). */
PF_API size_t pf_trim(void);

/* ---- options (see native/src/options.c for the table) ------------------ */

/* Set an option by its environment name ("PYFRAG_LIMIT", "64M"). -1/EINVAL
 * for an unknown name or a bad value; -1/EBUSY for one fixed at init. */
PF_API int pf_option_set(const char *name, const char *value);
/* Current value (hugepage modes: 0 auto, 1 hugetlb, 2 thp, 3 off). -1/EINVAL
 * if unknown; no option can take the value -1. */
PF_API long long pf_option_get(const char *name);
/* The table, for tools: NULL past the last row. */
PF_API const char *pf_option_name(size_t index);
PF_API const char *pf_option_default(size_t index);
PF_API const char *pf_option_doc(size_t index);

/* ---- statistics ------------------------------------------------------- */

#define PF_STATS_VERSION 4

/* X(name, doc): one row per counter; the struct, its names and docs all come from here. */
#define PF_STATS_FIELDS(X)                                                              \
	X(allocs, "fragments handed out")                                               \
	X(frees, "fragments freed, from any thread")                                    \
	X(bias_frees, "frees absorbed by the owning cache's bias (no atomic operation)") \
	X(refills, "frag pages taken from the page allocator")                          \
	X(recycles, "frag pages reused in place because every fragment was back")       \
	X(abandons, "frag pages left to their outstanding fragments")                   \
	X(order0_fallbacks, "refills that fell back to a 4 KiB page")                   \
	X(reserve_pages, "refills served from the emergency reserve")                   \
	X(reserve_returns, "reserve pages given back to the reserve")                   \
	X(drains, "cache drains")                                                       \
	X(invalid_frees, "frees of addresses not in a page pyfrag handed out")          \
	X(alloc_failures, "allocations refused for lack of memory")                     \
	X(chunks_hugetlb, "committed chunks backed by hugetlb 2 MiB pages")             \
	X(chunks_thp, "committed chunks advised for transparent hugepages")             \
	X(chunks_4k, "committed chunks on 4 KiB pages")                                 \
	X(chunks_empty, "committed chunks with no page in use")                         \
	X(chunk_commits, "chunks committed since start")                                \
	X(chunk_releases, "chunks returned to the OS since start")                      \
	X(commit_failures, "chunk commits refused by the limit or the OS")              \
	X(committed_bytes, "bytes committed in chunks now")                             \
	X(peak_committed_bytes, "highest committed_bytes so far")                       \
	X(pages_in_use, "4 KiB pages handed out by the page allocator now")             \
	X(pages_cached, "4 KiB pages held in per-thread page lists now")                \
	X(reserve_free_pages, "emergency reserve pages available now")                  \
	X(caches, "live caches, explicit and per-thread")                               \
	X(threads, "threads with pyfrag state now")                                     \
	X(malloc_small, "malloc-front allocations served by a page_frag cache")         \
	X(malloc_medium, "malloc-front allocations served by a page run")               \
	X(malloc_large, "malloc-front allocations served by a run of whole chunks")     \
	X(malloc_compact, "malloc-front allocations served by the compact route (slab pages)") \
	X(compact_live_bytes, "bytes of compact-route blocks in use now (class sizes)") \
	X(compact_pages, "slab pages the compact route holds now")                       \
	X(compact_page_bytes, "bytes of those pages")                                   \
	X(compact_abandoned_pages, "of those, pages of exited threads kept by live blocks") \
	X(frag_pinned_bytes, "bytes of used-up frag pages their caches let go, still held by live fragments") \
	X(sites_compact, "call sites the adaptive route sends to the compact route now") \
	X(site_moves_to_compact, "moves of a call site to the compact route (its blocks pinned frag pages)") \
	X(site_moves_to_frag, "moves of a call site back to page_frag (its score decayed)") \
	X(pinned_pages_seen, "watched frag pages still pinned when looked at again")    \
	X(pin_cap_engaged, "times PYFRAG_PIN_MAX sent every small request to the compact route") \
	X(foreign_frees, "frees of pointers outside the arena, ignored")                 \
	X(libc_allocs, "malloc-front requests pyfrag could not serve, handed to libc (degraded)") \
	X(libc_frees, "frees of those blocks, handed back to libc")                     \
	X(arena_regions, "address-space regions the arena has reserved")                \
	X(arena_reserved_bytes, "address space reserved in them now")                   \
	X(arena_cap_bytes, "most address space the arena may reserve (PYFRAG_ARENA, RLIMIT_AS)")

typedef struct pf_stats {
	uint32_t size;    /* sizeof(pf_stats_t) in the library */
	uint32_t version; /* PF_STATS_VERSION */
#define PF_STATS_MEMBER_(name, doc) uint64_t name;
	PF_STATS_FIELDS(PF_STATS_MEMBER_)
#undef PF_STATS_MEMBER_
} pf_stats_t;

/* Snapshot into out, writing at most out_size bytes. -1/EINVAL if out is NULL or too small for size+version. */
PF_API int pf_stats_get(pf_stats_t *out, size_t out_size);
PF_API size_t pf_stats_field_count(void);
PF_API const char *pf_stats_field_name(size_t index);
PF_API const char *pf_stats_field_doc(size_t index);

/* ---- debug queries (tests, tools) -------------------------------------- */

#define PF_PAGE_IN_USE 1u  /* handed out by the page allocator */
#define PF_PAGE_RESERVE 2u /* an emergency-reserve page (the kernel's pfmemalloc) */

typedef struct pf_page_info {
	uintptr_t head;   /* first byte of the block holding addr */
	uint32_t size;    /* bytes in that block */
	uint32_t order;   /* log2 of its 4 KiB pages */
	int32_t refcount; /* references held: cache bias + outstanding fragments */
	uint32_t flags;   /* PF_PAGE_* */
} pf_page_info_t;

typedef struct pf_cache_info {
	uintptr_t page;      /* current frag page, 0 if none */
	uint32_t page_size;  /* its size in bytes */
	uint32_t offset;     /* bytes used (the offset counts up) */
	uint32_t bias;       /* page references the cache still owns */
	uint32_t pfmemalloc; /* 1 if the page came from the reserve */
} pf_cache_info_t;

/* -1/EINVAL if addr is outside the arena or its chunk is not committed. */
PF_API int pf_page_query(const void *addr, pf_page_info_t *out);
PF_API int pf_cache_query(const pf_cache_t *cache, pf_cache_info_t *out);

/* ---- errors ----------------------------------------------------------- */

/* errno and a sentence for the calling thread's last failed pyfrag call. */
PF_API int pf_last_error(void);
PF_API const char *pf_last_error_message(void);

#ifdef __cplusplus
}
#endif
#endif /* PYFRAG_H */
