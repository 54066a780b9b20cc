/* SPDX-License-Identifier: GPL-2.0-only */
/*
 * Layer 5, threads: per-thread state (the default cache, the page lists, the
 * reference batch, counters) found through one initial-exec TLS pointer,
 * torn down at thread exit with hooks for the layers above, the registry of
 * live caches and threads, and the private page source page_frag refills
 * from (through the calling thread's page lists). Includes only
 * slab/slab.h.
 */
#ifndef PF_THREAD_H
#define PF_THREAD_H

#include "slab/slab.h"

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
	struct pf_slab_heap slab; /* malloc front: the compact route's pages */
	/* malloc front, adaptive route: abandoned frag pages to look at again later (a ring) */
	struct pf_pin_watch pin_watch[PF_PIN_WATCH];
	uint32_t pin_watch_first, pin_watch_count;
	pf_local_counter frees; /* frees that dropped a page reference (bias frees: the cache counts) */
	pf_local_counter malloc_small;  /* malloc front, page_frag route */
	pf_local_counter malloc_medium; /* malloc front, page runs */
	struct pf_thread *next_live; /* registry, under pf__meta_lock */
	struct pf_thread *prev_live;
};

PF_INTERNAL extern PF_TLS struct pf_thread *pf__self;
/*
 * Make the calling thread's state: NULL with errno if there is no memory for
 * it or the thread has exited already (ESRCH). Only after pf__thread_init:
 * the layers above initialise first (api.h's pf__api_thread).
 */
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
/* Once, at library init (after the memory layer): the exit key and the private page source. */
PF_INTERNAL int pf__thread_init(void);
/*
 * Call hook(thread), a struct pf_thread *, whenever a thread state gives its
 * memory back (thread exit, pf_thread_flush), after its private caches are
 * drained: the layers above keep per-thread things of their own there (a
 * shared arena's caches). Append-only; 0, or -1/ENOSPC.
 */
PF_INTERNAL int pf__thread_on_give_back(void (*hook)(void *thread));

/* Live caches and threads, for stats; walk under pf__meta_lock. */
PF_INTERNAL extern struct pf_cache *pf__live_caches;
PF_INTERNAL extern struct pf_thread *pf__live_threads;
PF_INTERNAL extern uint64_t pf__live_cache_count, pf__live_thread_count;
PF_INTERNAL void pf__cache_register(struct pf_cache *cache);   /* caller holds pf__meta_lock */
PF_INTERNAL void pf__cache_unregister(struct pf_cache *cache); /* caller holds pf__meta_lock */

/* Thread states of threads that do not exist after fork(): drained and forgotten (in the child). */
PF_INTERNAL void pf__thread_forget_others(void);

#endif /* PF_THREAD_H */
