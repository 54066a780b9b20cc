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
#include "pyfrag_shared.h"

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

/*
 * Shared-arena loops (`pyfrag stress --shared`, stress_shared.c): producer
 * processes allocate fragments from a shared arena (pyfrag_shared.h), write
 * the pattern and push their offsets through SPSC rings to consumer
 * processes, which verify and free them. One ring per (producer, consumer)
 * pair; every ring, and the control block holding each process's counters,
 * is itself a fragment of the arena, so every process sees it at the same
 * address.
 *
 * The parent lays the run out with pf_stress_shared_setup(), each worker
 * process runs pf_stress_shared_run() with its role and index, the parent
 * reads every process's counters with pf_stress_shared_peer() (also those of
 * a process that died: they live in the arena) and frees the layout with
 * pf_stress_shared_teardown().
 *
 * A consumer holds a robust process-shared mutex while it runs. When a
 * producer has finished, it waits for each of its rings to be emptied; if
 * that ring's consumer died (the mutex reports EOWNERDEAD), the producer
 * marks it dead and drains the ring itself (verify and free: "drained").
 * A consumer takes one fragment at a time, so a dead consumer loses at most
 * the one it held: allocs - frees - drained - self_freed over all processes.
 */
#define PF_STRESS_SHARED_MAX 16u        /* producers, and consumers, at most */
#define PF_STRESS_SHARED_SLOTS_MAX 1024u /* a ring fits one 32 KiB fragment */

enum pf_stress_shared_role { PF_STRESS_PRODUCER, PF_STRESS_CONSUMER };
enum pf_stress_shared_state {
	PF_STRESS_IDLE,     /* not started */
	PF_STRESS_RUNNING,
	PF_STRESS_FINISHED, /* ran to its end */
	PF_STRESS_DEAD      /* a consumer that died while running (seen by a producer) */
};

typedef struct pf_stress_shared_params {
	uint32_t size;          /* sizeof(pf_stress_shared_params_t) */
	uint32_t role;          /* enum pf_stress_shared_role */
	uint32_t index;         /* which producer, or which consumer, from 0 */
	uint32_t nsizes;        /* entries in sizes; 0: uniform in [size_min, size_max] */
	const uint32_t *sizes;  /* fragment sizes picked uniformly from this table, or NULL */
	uint32_t size_min;      /* 1..PF_FRAG_PAGE_SIZE */
	uint32_t size_max;      /* size_min..PF_FRAG_PAGE_SIZE */
	uint64_t control;       /* the offset pf_stress_shared_setup returned */
	uint64_t duration_ns;   /* producers: how long to produce, used when ops == 0 */
	uint64_t ops;           /* producers: fragments to produce; 0 runs for duration_ns */
	uint64_t seed;
	uint64_t *progress;     /* if not NULL: fragments allocated (producer) or freed
	                           (consumer) so far, relaxed atomic adds */
} pf_stress_shared_params_t;

/* One process's counters, as kept in the arena while it runs. */
typedef struct pf_stress_shared_peer {
	uint32_t size;           /* sizeof(pf_stress_shared_peer_t) in the library */
	uint32_t state;          /* enum pf_stress_shared_state */
	uint32_t pid;            /* the process, once started */
	uint32_t unused;
	uint64_t started_ns;     /* CLOCK_MONOTONIC at its start */
	uint64_t allocs;         /* producer: fragments allocated */
	uint64_t frees;          /* consumer: fragments taken from its rings, verified and freed */
	uint64_t drained;        /* producer: fragments it took back from a dead consumer's ring */
	uint64_t self_freed;     /* producer: fragments it freed because every ring stayed full */
	uint64_t corrupt;        /* fragments whose pattern was wrong when verified */
	uint64_t alloc_failures; /* allocations that returned NULL */
	uint64_t free_failures;  /* frees that returned -1 */
	uint64_t dead_seen;      /* producer: consumers it found dead */
	uint64_t elapsed_ns;     /* wall time of its run */
} pf_stress_shared_peer_t;

/*
 * Allocate and initialise the control block and producers x consumers rings
 * of ring_slots slots (a power of two, 2..PF_STRESS_SHARED_SLOTS_MAX) from
 * the calling thread's cache of arena. The control block's offset, or
 * UINT64_MAX with errno (EINVAL, ENOMEM) and pf_stress_error_message().
 */
PF_API uint64_t pf_stress_shared_setup(pf_shared_t *arena, uint32_t producers, uint32_t consumers,
				       uint32_t ring_slots);
/* Run one producer or consumer until its end (see above); fill out (its peer counters). */
PF_API int pf_stress_shared_run(pf_shared_t *arena, const pf_stress_shared_params_t *params,
				pf_stress_shared_peer_t *out);
/* A snapshot of one process's counters. -1/EINVAL for a bad control, role or index. */
PF_API int pf_stress_shared_peer(pf_shared_t *arena, uint64_t control, uint32_t role,
				 uint32_t index, pf_stress_shared_peer_t *out);
/* Fragments still sitting in the rings; UINT64_MAX/EINVAL for a bad control. */
PF_API uint64_t pf_stress_shared_in_rings(pf_shared_t *arena, uint64_t control);
/* Free the rings and the control block (their fragments, not what the rings still hold). */
PF_API int pf_stress_shared_teardown(pf_shared_t *arena, uint64_t control);

#ifdef __cplusplus
}
#endif
#endif /* PYFRAG_STRESS_H */
