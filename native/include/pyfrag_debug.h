/* SPDX-License-Identifier: GPL-2.0-only */
/*
 * pyfrag fault injection, for tests: make the OS layer (native/src/sys/os.c)
 * fail on demand, as if the kernel had refused. Only in the debug, asan and
 * tsan builds (scons mode=debug|asan|tsan): the release library has none of
 * these functions and ignores PYFRAG_FAULT_*. It costs nothing until a site
 * is first armed (then one atomic load per OS call, and OS calls are the
 * slow path). Not part of the stable API (PF_ABI_VERSION does not cover it).
 *
 * A site counts its calls from the moment it is armed. With `every` = N,
 * calls N, 2N, 3N, ... fail until `times` failures have been injected (a
 * negative `times`: no cap); `every` = 0 disarms. So (N, 1) fails the Nth
 * call only, (1, -1) every call, (3, -1) every third call.
 *
 * What the library promises under injected faults: every failed allocation
 * is NULL with errno ENOMEM (and pf_last_error() == ENOMEM); nothing
 * crashes; no fragment handed out before is touched; every counter stays
 * true; and allocation works again once the site is disarmed.
 *
 * The same settings can come from the environment, read when the library
 * is loaded: PYFRAG_FAULT_RESERVE, PYFRAG_FAULT_COMMIT, PYFRAG_FAULT_DECOMMIT,
 * PYFRAG_FAULT_MADVISE, PYFRAG_FAULT_META,
 * PYFRAG_FAULT_SHARED, each "N" (every Nth call) or
 * "N:T" (every Nth, at most T times). Under LD_PRELOAD the program may
 * allocate before the library's constructor runs, so a reserve fault set
 * there may come too late.
 */
#ifndef PYFRAG_DEBUG_H
#define PYFRAG_DEBUG_H

#include "pyfrag.h"

#ifdef __cplusplus
extern "C" {
#endif

enum pf_fault_site {
	PF_FAULT_RESERVE,  /* the arena's address-space reservation (once, at init) */
	PF_FAULT_COMMIT,   /* backing a chunk (or the reserve) with memory; one call per backing tried */
	PF_FAULT_DECOMMIT, /* giving an empty chunk back to the OS */
	PF_FAULT_MADVISE,  /* madvise of a committed chunk (failing MADV_HUGEPAGE fails a THP commit) */
	PF_FAULT_META,     /* pyfrag's own metadata maps: page array at init, cache and thread pools */
	PF_FAULT_SHARED,   /* a shared arena's file mappings: create, attach, the header's read */
	PF_FAULT_SITES     /* count */
};

/* Arm (or, with every == 0, disarm) a site; resets its counts. 0, or -1/EINVAL for a bad site. */
PF_API int pf_debug_fault_set(int site, uint64_t every, int64_t times);
/* pf_debug_fault_set(PF_FAULT_COMMIT, every, -1): fail every Nth commit. */
PF_API int pf_debug_fail_commit(uint64_t every);
/* Calls seen and failures injected at a site since it was last set. 0, or -1/EINVAL. */
PF_API int pf_debug_fault_get(int site, uint64_t *calls, uint64_t *failures);
/* "reserve", "commit", "decommit", "madvise", "meta"; NULL past the last. */
PF_API const char *pf_debug_fault_name(int site);

/*
 * Take a shared arena's allocator lock and keep it, so a test process can
 * die holding it (the recovery in pyfrag_shared.h). 0, or -1/EINVAL.
 */
struct pf_shared;
PF_API int pf_debug_shared_hold_lock(struct pf_shared *arena);

#ifdef __cplusplus
}
#endif
#endif /* PYFRAG_DEBUG_H */
