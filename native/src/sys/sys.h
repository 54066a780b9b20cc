/* SPDX-License-Identifier: GPL-2.0-only */
/*
 * Layer 1, system primitives: what every layer above builds on and nothing
 * in pyfrag is below. The OS table (every mmap, munmap and madvise pyfrag
 * makes, including the shared arenas' file mappings), failure reporting
 * (errno plus the thread's last-error sentence) and the global event
 * counters, the option table read from the environment, hook lists through
 * which lower layers call the ones above, and text written without stdio.
 * Includes only the public header and libc.
 *
 * Prefixes: pf__ for internals shared between files, pf_ public (pyfrag.h).
 */
#ifndef PF_SYS_H
#define PF_SYS_H

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

/* ---- options and the environment (options.c) ------------------------------ */

enum pf_hugepages_mode { PF_HP_AUTO, PF_HP_HUGETLB, PF_HP_THP, PF_HP_OFF };
enum pf_route_mode { PF_ROUTE_ADAPTIVE, PF_ROUTE_FRAG, PF_ROUTE_COMPACT };

/* X(field, env name, default text, kind, fixed at init, meaning) */
#define PF_OPTIONS(X)                                                                          \
	X(hugepages, "PYFRAG_HUGEPAGES", "auto", PF_OPT_HUGEPAGES, false,                          \
	  "chunk backing: auto (hugetlb, else THP, else 4 KiB), hugetlb, thp or off (4 KiB)")      \
	X(hugepages_after, "PYFRAG_HUGEPAGES_AFTER", "4M", PF_OPT_SIZE, false,                    \
	  "auto and thp: chunks committed while the total stays within this get 4 KiB pages "    \
	  "(a small process pays no hugepage); past it hugepages, and the early chunks advised "  \
	  "for THP; 0: hugepages from the first chunk")                                           \
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
	X(route, "PYFRAG_ROUTE", "adaptive", PF_OPT_ROUTE, false,                                  \
	  "malloc front, small requests: adaptive (page_frag, except call sites whose blocks pin "  \
	  "frag pages, and everything while too much is pinned), frag (all page_frag) or compact " \
	  "(all size-class slab pages)")                                                          \
	X(pin_max, "PYFRAG_PIN_MAX", "4M", PF_OPT_SIZE, false,                                     \
	  "adaptive route: bytes of used-up frag pages still held by live blocks beyond which new " \
	  "small requests take the compact route until it falls below three quarters of it")     \
	X(pin_age, "PYFRAG_PIN_AGE", "48", PF_OPT_COUNT, false,                                    \
	  "adaptive route: refills after which a used-up frag page still held by live blocks "     \
	  "counts against the call sites of those blocks")                                        \
	X(check, "PYFRAG_CHECK", "0", PF_OPT_BOOL, true,                                           \
	  "malloc front: stronger checks (header canaries, tail canaries, freed-memory poison)")  \
	X(stats, "PYFRAG_STATS", "0", PF_OPT_BOOL, false,                                          \
	  "print a statistics summary on stderr at exit (when preloaded)")

enum pf_option_kind { PF_OPT_COUNT, PF_OPT_SIZE, PF_OPT_HUGEPAGES, PF_OPT_BOOL, PF_OPT_ROUTE };

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

/* The table, in PF_OPTIONS order. */
struct pf_option_row {
	const char *env;
	const char *def;
	enum pf_option_kind kind;
	bool fixed; /* frozen once the arena exists */
	const char *doc;
	_Atomic long long *value;
};
#define PF_OPTION_FIELD_COUNT_(field, env, def, kind, fixed, doc) +1
enum { PF_OPTION_COUNT = 0 PF_OPTIONS(PF_OPTION_FIELD_COUNT_) };
#undef PF_OPTION_FIELD_COUNT_
PF_INTERNAL extern const struct pf_option_row pf__option_rows[];

/* Read every option from environ, without allocating; once, however often called. */
PF_INTERNAL void pf__options_load(void);
/* Parse text as row's kind: true and *out, or false (nothing stored). */
PF_INTERNAL bool pf__option_parse(const struct pf_option_row *row, const char *text, long long *out);
/* Store a parsed value (PYFRAG_ARENA clamped to what the arena can use) and run the hooks. */
PF_INTERNAL void pf__option_store(const struct pf_option_row *row, long long value);
/*
 * Call hook (arg NULL) after the options are loaded and after every store (a
 * layer that caches values derived from them); also once now. 0, or -1/ENOSPC.
 */
PF_INTERNAL int pf__options_on_change(void (*hook)(void *arg));
/* The value of an environment variable, read from environ without allocating; NULL if unset. */
PF_INTERNAL const char *pf__env_value(const char *name);

/* ---- reporting: failures and event counters (report.c) --------------------- */

/* Set errno and the thread's last-error sentence; returns NULL for tail calls. */
PF_INTERNAL void *pf__fail(int err, const char *message);

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
	PF_CTR_SITES_TO_COMPACT, /* the adaptive route's learning (malloc/route.c) */
	PF_CTR_SITES_TO_FRAG,
	PF_CTR_PINNED_SEEN,
	PF_CTR_PIN_CAP_ENGAGED,
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
static inline void pf__local_add(pf_local_counter *c, uint64_t n)
{
	atomic_store_explicit(c, atomic_load_explicit(c, memory_order_relaxed) + n,
			      memory_order_relaxed);
}

/* ---- hook lists (hooks.c) ------------------------------------------------------ */

/*
 * A short append-only list of functions a lower layer calls for the layers
 * above (option changes, thread give-back). Adding is locked and idempotent;
 * running takes no lock and sees every hook whose addition completed.
 */
#define PF_HOOKS_MAX 4
struct pf_hooks {
	void (*fn[PF_HOOKS_MAX])(void *arg);
	_Atomic unsigned count;
	pthread_mutex_t lock;
};
#define PF_HOOKS_INIT { .count = 0, .lock = PTHREAD_MUTEX_INITIALIZER }
/* 0 (added, or there already), or -1/ENOSPC when the list is full. */
PF_INTERNAL int pf__hooks_add(struct pf_hooks *hooks, void (*fn)(void *arg));
PF_INTERNAL void pf__hooks_run(struct pf_hooks *hooks, void *arg);

/* ---- the OS table (os.c) ------------------------------------------------------ */

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
/* fork with hugetlb chunks: one chunk's worth of the arena's fork handlers (see os.c). */
PF_INTERNAL int pf__os_fork_detach(void *addr, size_t size, void **copy);
PF_INTERNAL void pf__os_fork_reattach(void *addr, size_t size, void *copy);
PF_INTERNAL int pf__os_fork_place(void *addr, size_t size, void *copy);
PF_INTERNAL int pf__os_unshare_hugetlb(void *addr, size_t size);

/* ---- text without stdio or malloc (text.c) ----------------------------------- */

/* Digits of v in base 10 or 16, written backwards ending at end; returns the first. */
PF_INTERNAL char *pf__format_u64(char *end, uint64_t v, unsigned base);
/* Write the pieces (NULL-terminated list) to fd with write(2), retrying short writes. */
PF_INTERNAL void pf__write_all(int fd, const char *const *pieces);

#endif /* PF_SYS_H */
