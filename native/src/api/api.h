/* SPDX-License-Identifier: GPL-2.0-only */
/*
 * Layer 7, the public API (pyfrag.h, and pyfrag_shared.h's entry points that
 * may be a process's first call): the one initializer, options, stats and
 * pf_page_query; in valgrind=1 builds, memcheck's view of fragments.
 * Includes only shared/shared.h.
 */
#ifndef PF_API_H
#define PF_API_H

#include "shared/shared.h"

/* ---- initialisation (api.c) --------------------------------------------------- */

/* Initialise once (options, arena, page allocator). 0 or -1 with errno. */
PF_INTERNAL int pf__ensure_init(void);
PF_INTERNAL extern _Atomic int pf__ready;
PF_INTERNAL extern pthread_mutex_t pf__init_lock; /* held while initialising */
static inline bool pf__init_ok(void)
{
	return PF_LIKELY(atomic_load_explicit(&pf__ready, memory_order_acquire) == 1) ||
	       pf__ensure_init() == 0;
}

/* The calling thread's state, initialising the library and the state on first use; NULL/errno. */
static inline struct pf_thread *pf__api_thread(void)
{
	struct pf_thread *t = pf__self;
	if (PF_LIKELY(t != NULL))
		return t;
	return pf__init_ok() ? pf__thread_setup() : NULL;
}

/* ---- stats (stats.c) ------------------------------------------------------------ */

/* The PYFRAG_STATS=1 summary, written to fd. */
PF_INTERNAL void pf__stats_print(int fd);

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

#endif /* PF_API_H */
