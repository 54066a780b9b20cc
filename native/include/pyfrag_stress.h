/* SPDX-License-Identifier: GPL-2.0-only */
/*
 * pyfrag stress loops: multi-threaded workloads over the public API
 * (pyfrag.h), run by `pyfrag stress` in each worker process and usable from
 * C as they are.
 *
 * pf_stress_run() starts 2 * pairs threads, runs one workload on them until
 * a time or an operation count is reached, joins them and adds up what they
 * did. One operation is one fragment: allocated, every byte written with a
 * pattern, the pattern verified, freed (or leaked, when asked to). Nothing
 * of the run's own bookkeeping comes from malloc or from pyfrag, so the
 * library's counters see the workload's fragments and nothing else.
 *
 * Workloads:
 *   RING   producer threads allocate and push through SPSC rings to consumer
 *          threads that verify and free (the kernel's page_frag_test).
 *   BURST  every thread allocates a burst of `burst` fragments from its
 *          default cache, then verifies and frees them (LIFO and FIFO in
 *          turn), run to completion.
 *   CHURN  every thread keeps `churn_slots` live fragments and replaces a
 *          random one each step: random lifetimes, random alignments.
 *   MIXED  ring pairs whose threads also run burst and churn steps between
 *          ring steps, on the same caches.
 */
#ifndef PYFRAG_STRESS_H
#define PYFRAG_STRESS_H

#include "pyfrag.h"

#ifdef __cplusplus
extern "C" {
#endif

enum pf_stress_workload {
	PF_STRESS_RING,
	PF_STRESS_BURST,
	PF_STRESS_CHURN,
	PF_STRESS_MIXED,
	PF_STRESS_WORKLOADS /* count */
};

#define PF_STRESS_BURST_MAX 256u

typedef struct pf_stress_params {
	uint32_t size;          /* sizeof(pf_stress_params_t): set by pf_stress_params_init */
	uint32_t workload;      /* enum pf_stress_workload */
	uint32_t pairs;         /* thread pairs: the run has 2 * pairs threads */
	uint32_t burst;         /* fragments per burst, 1..PF_STRESS_BURST_MAX (32) */
	uint32_t ring_slots;    /* SPSC ring capacity, a power of two (1024) */
	uint32_t churn_slots;   /* live fragments per churn thread (1024) */
	uint64_t duration_ns;   /* how long to run, used when ops == 0 (1 s) */
	uint64_t ops;           /* fragments to allocate in all; 0 runs for duration_ns (0) */
	const uint32_t *sizes;  /* fragment sizes picked uniformly from this table, or NULL */
	uint32_t nsizes;        /* entries in sizes; 0: uniform in [size_min, size_max] */
	uint32_t size_min;      /* 1..PF_FRAG_PAGE_SIZE (64) */
	uint32_t size_max;      /* size_min..PF_FRAG_PAGE_SIZE (1500) */
	uint32_t unused;
	uint64_t leak_every;    /* fault: do not free every Nth fragment; 0 never (0) */
	uint64_t leak_max;      /* fault: leak at most this many fragments in all (1024) */
	uint64_t crash_after_ns;/* fault: this far into the run, make a wild write
	                           (SIGSEGV); 0 never (0) */
	uint64_t seed;          /* random sizes, slots, alignments and patterns (1) */
	uint64_t *progress;     /* if not NULL: fragments allocated so far, added to
	                           with relaxed atomics while the run goes on */
} pf_stress_params_t;

typedef struct pf_stress_result {
	uint32_t size;           /* sizeof(pf_stress_result_t) in the library */
	uint32_t threads;        /* threads that ran */
	uint64_t ops;            /* fragments allocated (== allocs) */
	uint64_t allocs;         /* successful allocations */
	uint64_t frees;          /* successful frees */
	uint64_t leaked;         /* fragments left allocated on purpose (leak_every) */
	uint64_t corrupt;        /* fragments whose pattern was wrong when verified */
	uint64_t alloc_failures; /* allocations that returned NULL */
	uint64_t free_failures;  /* frees that returned -1 */
	uint64_t elapsed_ns;     /* wall time from the first thread's start to the last join */
} pf_stress_result_t;

/* Fill params with the defaults shown in parentheses above. */
PF_API void pf_stress_params_init(pf_stress_params_t *params);

/*
 * Run the workload; fill out. 0, or -1 with errno (and
 * pf_stress_error_message()): EINVAL for bad params (a wrong params->size
 * means the caller was built against another header), ENOMEM when the run's
 * own memory cannot be mapped, EAGAIN when threads cannot be started.
 * Allocation failures inside the run are counted, not returned.
 */
PF_API int pf_stress_run(const pf_stress_params_t *params, pf_stress_result_t *out);

/* The sentence for the calling thread's last failed pf_stress_run. */
PF_API const char *pf_stress_error_message(void);

/* "ring", "burst", "churn", "mixed"; NULL past the last. */
PF_API const char *pf_stress_workload_name(unsigned workload);

#ifdef __cplusplus
}
#endif
#endif /* PYFRAG_STRESS_H */
