/* SPDX-License-Identifier: GPL-2.0-only */
/*
 * Declarations shared between pyfrag's native layers; never installed.
 *
 * Layers, bottom to top, each knowing only those below it:
 *   os.c         mmap/munmap/madvise, hugetlb/THP probing
 *   arena.c      VA regions reserved as needed, 2 MiB chunks committed on demand, page metadata
 *   page_alloc.c buddy allocator (orders 0..9) + per-thread page lists + reserve
 *   page_frag.c  the page_frag algorithm
 *   meta.c       fixed-size pools for pyfrag's own objects (never from malloc)
 *   thread.c     per-thread state: default cache, page lists, exit hook
 *   malloc.c     malloc-family semantics: size header, page runs, chunk runs
 *   preload.c    the exported libc names (LD_PRELOAD), init, thread exit, fork
 *   options.c, stats.c, api.c
 *   debug.c      fault injection (pyfrag_debug.h); valgrind.c memcheck requests (valgrind=1)
 *   buddy.c      the buddy zone both the private and the shared page allocators use
 *   shared*.c    shared multi-process arenas (pyfrag_shared.h, shared_layout.h)
 * Prefixes: pf__ for cross-file internals, pf_ public (pyfrag.h).
 */
#ifndef PF_INTERNAL_H
#define PF_INTERNAL_H

#include "pyfrag.h"

#include <pthread.h>
#include <stdatomic.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#define PF_LIKELY(x) __builtin_expect(!!(x), 1)
#define PF_UNLIKELY(x) __builtin_expect(!!(x), 0)
#define PF_INTERNAL __attribute__((visibility("hidden")))
#define PF_TLS __thread __attribute__((tls_model("initial-exec")))

#define PF_PAGE_SHIFT 12
#define PF_CHUNK_SHIFT 21
#define PF_MAX_ORDER 9 /* 2^9 pages = one chunk */
#define PF_FRAG_ORDER 3
#define PF_CHUNK_PAGES (1u << PF_MAX_ORDER)
#define PF_NIL UINT32_MAX
#define PF_SHARED_LOCAL_MAX 16 /* shared arenas one process can have attached at once */

_Static_assert((1u << PF_PAGE_SHIFT) == PF_PAGE_SIZE, "page size");
_Static_assert((1u << PF_CHUNK_SHIFT) == PF_CHUNK_SIZE, "chunk size");
_Static_assert((PF_PAGE_SIZE << PF_FRAG_ORDER) == PF_FRAG_PAGE_SIZE, "frag page is order 3");
_Static_assert((PF_CHUNK_PAGES << PF_PAGE_SHIFT) == PF_CHUNK_SIZE, "chunk is order 9");

/* ---- options.c ---------------------------------------------------------- */

enum pf_hugepages_mode { PF_HP_AUTO, PF_HP_HUGETLB, PF_HP_THP, PF_HP_OFF };

/* X(field, env name, default text, kind, fixed at init, meaning) */
#define PF_OPTIONS(X)                                                                          \
	X(hugepages, "PYFRAG_HUGEPAGES", "auto", PF_OPT_HUGEPAGES, false,                          \
	  "chunk backing: auto (hugetlb, else THP, else 4 KiB), hugetlb, thp or off (4 KiB)")      \
	X(retain, "PYFRAG_RETAIN", "1", PF_OPT_COUNT, false,                                       \
	  "empty 2 MiB chunks kept committed; more go back to the OS")                            \
	X(limit, "PYFRAG_LIMIT", "0", PF_OPT_SIZE, false,                                         \
	  "cap on committed chunk bytes (K/M/G suffixes); 0 means no cap")                        \
	X(reserve, "PYFRAG_RESERVE", "64K", PF_OPT_SIZE, true,                                      \
	  "emergency reserve of 4 KiB pages for order-0 refills when nothing else is left")       \
	X(arena, "PYFRAG_ARENA", "64G", PF_OPT_SIZE, true,                                          \
	  "cap on the address space reserved for pyfrag's memory, in regions as needed (one "      \
	  "region of all of it without ulimit -v); clamped to 4M..16T, and to RLIMIT_AS")          \
	X(pcp_high, "PYFRAG_PCP_HIGH", "16", PF_OPT_COUNT, false,                                  \
	  "blocks per order a thread keeps on its page lists before giving a batch back")          \
	X(frag_max, "PYFRAG_FRAG_MAX", "4080", PF_OPT_SIZE, false,                                 \
	  "malloc front: largest request served from the thread's page_frag cache (16-byte "      \
	  "header added; at most 32752); larger ones get page runs, above 2 MiB chunk runs")       \
	X(frag_order, "PYFRAG_FRAG_ORDER", "3", PF_OPT_COUNT, false,                               \
	  "order of the frag pages caches refill with: 3 (32 KiB, the kernel's) down to 0 (4 KiB); " \
	  "smaller pins less memory per live fragment but refills more often")                     \
	X(check, "PYFRAG_CHECK", "0", PF_OPT_BOOL, true,                                           \
	  "malloc front: stronger checks (header canaries, tail canaries, freed-memory poison)")  \
	X(stats, "PYFRAG_STATS", "0", PF_OPT_BOOL, false,                                          \
	  "print a statistics summary on stderr at exit (when preloaded)")

enum pf_option_kind { PF_OPT_COUNT, PF_OPT_SIZE, PF_OPT_HUGEPAGES, PF_OPT_BOOL };

/* PYFRAG_ARENA's range: two chunks (the reserve's and one), and what 32-bit page numbers reach. */
#define PF_ARENA_MIN_BYTES ((size_t)2 << 21)
#define PF_ARENA_MAX_BYTES ((size_t)(UINT32_MAX >> 9) << 21)

struct pf_options {
#define PF_OPTION_FIELD_(field, env, def, kind, fixed, doc) _Atomic long long field;
	PF_OPTIONS(PF_OPTION_FIELD_)
#undef PF_OPTION_FIELD_
};

PF_INTERNAL extern struct pf_options pf__options;
#define PF_OPT(field) atomic_load_explicit(&pf__options.field, memory_order_relaxed)

/* Read every option from environ, without allocating; once, however often called. */
PF_INTERNAL void pf__options_load(void);
/* The value of an environment variable, read from environ without allocating; NULL if unset. */
PF_INTERNAL const char *pf__env_value(const char *name);

/* ---- errors (api.c) ------------------------------------------------------ */

/* Set errno and the thread's last-error sentence; returns NULL for tail calls. */
PF_INTERNAL void *pf__fail(int err, const char *message);

/* ---- stats.c -------------------------------------------------------------- */

/*
 * Counters of slow, rare events are global relaxed atomics. Hot counters
 * (allocs, frees) live in the cache or thread that makes them and are summed
 * at snapshot time, so the fast paths never write a shared line.
 */
enum pf_counter {
	PF_CTR_REFILLS,
	PF_CTR_RECYCLES,
	PF_CTR_ABANDONS,
	PF_CTR_ORDER0_FALLBACKS,
	PF_CTR_RESERVE_PAGES,
	PF_CTR_RESERVE_RETURNS,
	PF_CTR_DRAINS,
	PF_CTR_INVALID_FREES,
	PF_CTR_ALLOC_FAILURES,
	PF_CTR_CHUNK_COMMITS,
	PF_CTR_CHUNK_RELEASES,
	PF_CTR_COMMIT_FAILURES,
	PF_CTR_RETIRED_ALLOCS, /* allocs of caches already destroyed */
	PF_CTR_RETIRED_FREES,  /* frees of threads already gone */
	PF_CTR_RETIRED_BIAS_FREES,
	PF_CTR_RETIRED_MALLOC_SMALL, /* malloc-front counters of threads already gone */
	PF_CTR_RETIRED_MALLOC_MEDIUM,
	PF_CTR_MALLOC_LARGE,
	PF_CTR_FOREIGN_FREES,
	PF_CTR_LIBC_ALLOCS, /* malloc front degraded: requests handed to libc's allocator */
	PF_CTR_LIBC_FREES,
	PF_CTR_COUNT
};

PF_INTERNAL extern _Atomic uint64_t pf__counters[PF_CTR_COUNT];

static inline void pf__count(enum pf_counter c, uint64_t n)
{
	atomic_fetch_add_explicit(&pf__counters[c], n, memory_order_relaxed);
}

/* A counter only its owner thread writes: no RMW, but readable from others. */
typedef _Atomic uint64_t pf_local_counter;
static inline void pf__local_inc(pf_local_counter *c)
{
	atomic_store_explicit(c, atomic_load_explicit(c, memory_order_relaxed) + 1,
			      memory_order_relaxed);
}

/* ---- os.c ------------------------------------------------------------------ */

enum pf_backing { PF_BACKING_NONE, PF_BACKING_HUGETLB, PF_BACKING_THP, PF_BACKING_4K };

struct pf_os_ops {
	void *(*reserve)(size_t size, size_t align); /* PROT_NONE, no memory */
	int (*commit)(void *addr, size_t size, enum pf_backing backing);
	int (*decommit)(void *addr, size_t size); /* back to reserved, memory freed */
	int (*advise)(void *addr, size_t size, int advice); /* madvise */
	void *(*map_meta)(size_t size); /* metadata: read-write, zero, lazy; NULL on failure */
	/* a shared arena's file, MAP_SHARED: at exactly addr (EEXIST if taken), or anywhere for NULL */
	void *(*map_shared)(void *addr, size_t size, int prot, int fd);
	int (*unmap)(void *addr, size_t size);
};

/* The OS primitives; a table so tests and fault injection can replace them. */
PF_INTERNAL extern struct pf_os_ops pf__os;
/* Map metadata memory (read-write, zero, lazily backed). NULL on failure. */
PF_INTERNAL void *pf__os_map_meta(size_t size);
/* Address space RLIMIT_AS still allows this process (SIZE_MAX: no limit). */
PF_INTERNAL size_t pf__os_space_left(void);
/* The whole limit (SIZE_MAX: none). */
PF_INTERNAL size_t pf__os_space_limit(void);
PF_INTERNAL void pf__os_unmap(void *addr, size_t size);

/* ---- arena.c -------------------------------------------------------------- */

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
/* os.c: one chunk's worth of those (see there). */
PF_INTERNAL int pf__os_fork_detach(void *addr, size_t size, void **copy);
PF_INTERNAL void pf__os_fork_reattach(void *addr, size_t size, void *copy);
PF_INTERNAL int pf__os_fork_place(void *addr, size_t size, void *copy);
PF_INTERNAL int pf__os_unshare_hugetlb(void *addr, size_t size);

struct pf_arena_counts {
	uint64_t by_backing[4]; /* committed chunks per enum pf_backing */
	uint64_t committed_bytes;
	uint64_t peak_committed_bytes;
	uint64_t regions_added; /* regions reserved after the first */
	uint64_t trims;         /* never-used region tails given back to make room */
};
PF_INTERNAL extern struct pf_arena_counts pf__arena_counts; /* under pf__page_lock */

/* ---- buddy.c: one buddy zone over an array of page metadata ------------------ */

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

/* ---- page_alloc.c ------------------------------------------------------------ */

#define PF_GFP_NORETRY 1u   /* fail fast: no new chunk, no reserve */
#define PF_GFP_NORESERVE 2u /* never take an emergency-reserve page */

PF_INTERNAL extern pthread_mutex_t pf__page_lock;

/* A block of 2^order pages holding one reference, or NULL with errno ENOMEM. */
PF_INTERNAL struct pf_page *pf__pages_alloc(unsigned order, unsigned gfp);
/* Return a block whose refcount reached zero (reserve pages go to the reserve, chunk runs to the OS). */
PF_INTERNAL void pf__pages_free(struct pf_page *head);

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

/* ---- page_frag.c ------------------------------------------------------------- */

#define PF_BIAS_FULL (PF_FRAG_PAGE_SIZE + 1) /* references a refill gives the cache */

struct pf_shared_header;

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
	uintptr_t owner;   /* pf_thread_id() of the owner thread */
	pf_local_counter allocs;
	pf_local_counter bias_frees;
	struct pf_page *page;
	struct pf_shared_header *shared; /* a shared arena's cache (in its mapping); NULL: private */
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

PF_INTERNAL void pf__frag_cache_init(struct pf_cache *cache);
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

/* ---- meta.c --------------------------------------------------------------------- */

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

/* ---- thread.c -------------------------------------------------------------------- */

struct pf_thread {
	struct pf_cache cache; /* the default cache */
	/*
	 * malloc front: the frag page before the current one, kept one more
	 * round (not registered; only its page fields are used). Its fragments
	 * freed on this thread go back to its bias; when the current page is
	 * used up and every fragment of this one is back, it is reused in place.
	 */
	struct pf_cache spare;
	struct pf_pcp pcp;
	/* this thread's cache in each attached shared arena, valid while the generation matches */
	struct pf_cache *shared_cache[PF_SHARED_LOCAL_MAX];
	uint32_t shared_gen[PF_SHARED_LOCAL_MAX];
	struct pf_put_batch put; /* frees of other threads' fragments, batched */
	pf_local_counter frees; /* frees that dropped a page reference (bias frees: the cache counts) */
	pf_local_counter malloc_small;  /* malloc front, page_frag route */
	pf_local_counter malloc_medium; /* malloc front, page runs */
	struct pf_thread *next_live; /* registry, under pf__meta_lock */
	struct pf_thread *prev_live;
};

PF_INTERNAL extern PF_TLS struct pf_thread *pf__self;
PF_INTERNAL struct pf_thread *pf__thread_setup(void);
static inline struct pf_thread *pf__thread(void)
{
	struct pf_thread *t = pf__self;
	return PF_LIKELY(t != NULL) ? t : pf__thread_setup();
}
/* Drain the thread's caches and return its page lists; the state stays. */
PF_INTERNAL void pf__thread_give_back(struct pf_thread *t);
/* Drain the default cache, return the page lists, forget the state. */
PF_INTERNAL void pf__thread_teardown(void);
PF_INTERNAL int pf__thread_init(void); /* once, at library init */

/* Live caches and threads, for stats; walk under pf__meta_lock. */
PF_INTERNAL extern struct pf_cache *pf__live_caches;
PF_INTERNAL extern struct pf_thread *pf__live_threads;
PF_INTERNAL extern uint64_t pf__live_cache_count, pf__live_thread_count;
PF_INTERNAL void pf__cache_register(struct pf_cache *cache);   /* caller holds pf__meta_lock */
PF_INTERNAL void pf__cache_unregister(struct pf_cache *cache); /* caller holds pf__meta_lock */

/* Thread states of threads that do not exist after fork(): drained and forgotten (in the child). */
PF_INTERNAL void pf__thread_forget_others(void);

/* ---- malloc.c ------------------------------------------------------------------- */

/* malloc-family semantics (glibc's errno and overflow rules); preload.c exports them. */
PF_INTERNAL void *pf__malloc(size_t size);
PF_INTERNAL void *pf__calloc(size_t n, size_t size);
PF_INTERNAL void *pf__realloc(void *ptr, size_t size);
PF_INTERNAL void *pf__reallocarray(void *ptr, size_t n, size_t size);
PF_INTERNAL void pf__free(void *ptr);
PF_INTERNAL int pf__posix_memalign(void **out, size_t align, size_t size);
PF_INTERNAL void *pf__memalign(size_t align, size_t size);
PF_INTERNAL void *pf__aligned_alloc(size_t align, size_t size);
PF_INTERNAL void *pf__valloc(size_t size);
PF_INTERNAL void *pf__pvalloc(size_t size);
PF_INTERNAL size_t pf__malloc_usable_size(void *ptr);
/* malloc_usable_size of the other allocator (glibc's, or a sanitizer runtime's). */
PF_INTERNAL size_t pf__other_usable_size(void *ptr);

/*
 * The other allocator: glibc's, under its __libc_* names, or in a sanitizer
 * build the runtime's (its exported __interceptor_* entry points). preload.c
 * hands it calls before pyfrag's malloc is decided on; malloc.c what pyfrag
 * cannot serve (degraded mode).
 */
#if defined(__SANITIZE_ADDRESS__) || defined(__SANITIZE_THREAD__)
#define PF_SANITIZED 1
#define PF_OTHER(name) __interceptor_##name
#else
#define PF_OTHER(name) __libc_##name
#endif
extern void *PF_OTHER(malloc)(size_t size);
extern void *PF_OTHER(calloc)(size_t n, size_t size);
extern void *PF_OTHER(realloc)(void *ptr, size_t size);
extern void PF_OTHER(free)(void *ptr);
extern void *PF_OTHER(memalign)(size_t align, size_t size);
extern void *PF_OTHER(valloc)(size_t size);
extern void *PF_OTHER(pvalloc)(size_t size);
/* options.c, after the options were loaded or one was set: malloc's cached limits follow. */
PF_INTERNAL void pf__malloc_options_changed(void);

/* ---- stats.c: text without stdio or malloc ------------------------------------- */

/* Digits of v in base 10 or 16, written backwards ending at end; returns the first. */
PF_INTERNAL char *pf__format_u64(char *end, uint64_t v, unsigned base);
/* Write the pieces (NULL-terminated list) to fd with write(2), retrying short writes. */
PF_INTERNAL void pf__write_all(int fd, const char *const *pieces);
/* The PYFRAG_STATS=1 summary, written to fd. */
PF_INTERNAL void pf__stats_print(int fd);

/* ---- api.c ---------------------------------------------------------------------- */

/* Initialise once (options, arena, page allocator). 0 or -1 with errno. */
PF_INTERNAL int pf__ensure_init(void);
PF_INTERNAL extern _Atomic int pf__ready;
PF_INTERNAL extern pthread_mutex_t pf__init_lock; /* held while initialising */
/* pf_page_query's answer for a head page at address head (private or shared). */
PF_INTERNAL void pf__page_info(const struct pf_page *page, uintptr_t head, pf_page_info_t *out);
static inline bool pf__init_ok(void)
{
	return PF_LIKELY(atomic_load_explicit(&pf__ready, memory_order_acquire) == 1) ||
	       pf__ensure_init() == 0;
}

/* ---- shared arenas: the hooks the layers above call (shared*.c) ------------ */

/* Shared arenas attached in this process now (a relaxed read keeps pf_free's miss path cheap). */
PF_INTERNAL extern _Atomic uint32_t pf__shared_attached;
/* page_frag for a shared cache: a block from its arena, its address, its return. */
PF_INTERNAL struct pf_page *pf__shared_pages_alloc(struct pf_shared_header *h, unsigned order,
						   unsigned gfp);
PF_INTERNAL uintptr_t pf__shared_page_address(const struct pf_shared_header *h,
					      const struct pf_page *page);
PF_INTERNAL void pf__shared_pages_free(struct pf_page *head);
/* The owner is inside page_frag's slow path (a reaper must not drain the cache then). */
PF_INTERNAL void pf__shared_busy(struct pf_cache *cache, bool busy);
PF_INTERNAL void pf__shared_frag_count(struct pf_shared_header *h, enum pf_counter c);
/* A page's header if it belongs to an attached shared arena, else NULL. */
PF_INTERNAL struct pf_shared_header *pf__shared_header_of_page(const struct pf_page *page);
/* pf_free() of an address outside the private arena: 0, or -1/EINVAL. */
PF_INTERNAL int pf__shared_free_address(void *addr);
PF_INTERNAL int pf__shared_page_query(const void *addr, pf_page_info_t *out);
/* Thread exit and pf_thread_flush: give back the thread's shared caches. */
PF_INTERNAL void pf__shared_thread_release(struct pf_thread *t);
/* In a fork child: the parent's process slots and caches are not ours. */
PF_INTERNAL void pf__shared_after_fork(void);

/* Is page in the private arena's metadata? */
static inline bool pf__private_page(const struct pf_page *page)
{
	return (uintptr_t)page - (uintptr_t)pf__arena.pages <
	       (uintptr_t)pf__arena.chunk_slots * PF_CHUNK_PAGES * sizeof(struct pf_page);
}

/* ---- valgrind.c: memcheck client requests (scons valgrind=1) --------------------- */

#ifdef PF_VALGRIND
/* Tell memcheck p (size bytes, from cache) is a heap block; owns_page: an explicit cache. Returns p. */
PF_INTERNAL void *pf__vg_alloc(const struct pf_cache *cache, void *p, size_t size, bool owns_page);
/* Around a free of addr: begin finds its fragment (and locks), end tells memcheck if freed == 0. */
PF_INTERNAL uintptr_t pf__vg_free_begin(const void *addr);
PF_INTERNAL void pf__vg_free_end(uintptr_t start, int freed);
#else
#define pf__vg_alloc(cache, p, size, owns_page) (p)
#define pf__vg_free_begin(addr) ((uintptr_t)0)
#define pf__vg_free_end(start, freed) ((void)(start), (void)(freed))
#endif

#endif /* PF_INTERNAL_H */
