/* SPDX-License-Identifier: GPL-2.0-only */
/*
 * Stress loops (pyfrag_stress.h): the threads behind `pyfrag stress`.
 *
 * Contract:
 * - Uses only the public API (pyfrag.h), like any program would: a bug this
 *   finds is a bug a user would meet.
 * - Every byte of every fragment is written with a pattern when allocated
 *   and checked before it is freed: an 8-byte tag (a per-thread sequence
 *   number mixed with the seed and the address) then a fill byte taken from
 *   the tag. Two live fragments that overlap, or a fragment handed out
 *   twice, break one of the patterns; each such fragment counts as corrupt.
 * - The run's own memory (thread records, rings, churn tables) is one mmap,
 *   unmapped before returning: never malloc (which is pyfrag itself under
 *   LD_PRELOAD), never pyfrag, so the library's counters and the process's
 *   RSS after the run show the workload alone.
 * - Every fragment allocated is freed before pf_stress_run returns, except
 *   the ones leaked on purpose (leak_every); allocation failures are counted
 *   and the run goes on.
 * - Progress goes to params->progress with relaxed atomic adds every
 *   PROGRESS_BATCH fragments, so another process can read it from shared
 *   memory while the run goes on.
 */
#include "pyfrag_stress.h"
#include "stress_common.h"

#include <errno.h>
#include <pthread.h>
#include <sched.h>
#include <signal.h>
#include <stdatomic.h>
#include <stdbool.h>
#include <string.h>
#include <sys/mman.h>
#include <time.h>

#define PROGRESS_BATCH 256u
#define SUPERVISE_TICK_NS 10000000ull /* 10 ms */
#define MAX_PAIRS 1024u
#define MAX_SLOTS (1u << 20)
#define CONSUME_BATCH 64u
#define MIXED_CONSUME_BATCH 8u
#define CACHE_LINE 64u

/* ---- data types ----------------------------------------------------------------- */

struct frag {
	unsigned char *p;
	uint32_t size;
	uint64_t tag;
};

/* Single producer, single consumer; head and tail only ever grow (mod 2^32). */
struct ring {
	_Alignas(CACHE_LINE) _Atomic uint32_t head; /* written by the producer */
	_Alignas(CACHE_LINE) _Atomic uint32_t tail; /* written by the consumer */
	_Alignas(CACHE_LINE) _Atomic int producer_done;
	uint32_t mask;
	struct frag *slots;
};

struct counts {
	uint64_t allocs, frees, leaked, corrupt, alloc_failures, free_failures;
};

enum role { ROLE_SOLO, ROLE_PRODUCER, ROLE_CONSUMER };

struct run;

struct worker {
	_Alignas(CACHE_LINE) struct run *run;
	struct ring *ring;   /* the pair's ring (RING, MIXED) */
	enum role role;
	uint32_t index;
	pf_cache_t *cache;   /* explicit cache: ring pushes, churn */
	pf_cache_t *own;     /* the thread's default cache: bursts */
	struct frag *churn;  /* churn_slots entries (CHURN, MIXED) */
	uint64_t rng;
	uint64_t seq;
	uint64_t quota;      /* fragments left to allocate (UINT64_MAX: until stop) */
	uint64_t unreported; /* fragments not yet added to *progress */
	uint64_t frees_due;  /* fragments given back so far, for leak_every */
	uint64_t bursts;
	struct counts n;
	pthread_t thread;
	bool started;
};

struct run {
	const pf_stress_params_t *p;
	_Atomic int stop;
	_Atomic uint32_t running;
	_Atomic uint64_t leaks_left;
	uint32_t nthreads;
	struct worker *workers;
	struct ring *rings;
	size_t map_size;
};

static _Thread_local const char *error_message;

static const char *const workload_names[PF_STRESS_WORKLOADS] = { "ring", "burst", "churn", "mixed" };

/* ---- small helpers ------------------------------------------------------------------ */

int pf__stress_fail(int err, const char *message)
{
	error_message = message;
	errno = err;
	return -1;
}

static int fail(int err, const char *message)
{
	return pf__stress_fail(err, message);
}

static uint64_t next_rand(struct worker *w)
{
	w->rng += 0x9e3779b97f4a7c15ull; /* splitmix64 */
	return stress_mix64(w->rng);
}

static size_t align_up(size_t n)
{
	return (n + CACHE_LINE - 1) & ~(size_t)(CACHE_LINE - 1);
}

static bool uses_ring(uint32_t workload)
{
	return workload == PF_STRESS_RING || workload == PF_STRESS_MIXED;
}

static bool uses_churn(uint32_t workload)
{
	return workload == PF_STRESS_CHURN || workload == PF_STRESS_MIXED;
}

/* ---- the pattern (stress_common.h) ---------------------------------------------------- */

static void fill(const struct frag *f)
{
	stress_fill(f->p, f->size, f->tag);
}

static bool intact(const struct frag *f)
{
	return stress_intact(f->p, f->size, f->tag);
}

/* ---- taking and giving back one fragment ---------------------------------------------- */

static void report_progress(struct worker *w)
{
	uint64_t *progress = w->run->p->progress;
	if (progress && w->unreported)
		__atomic_fetch_add(progress, w->unreported, __ATOMIC_RELAXED);
	w->unreported = 0;
}

static uint32_t pick_size(struct worker *w)
{
	const pf_stress_params_t *p = w->run->p;
	uint64_t r = next_rand(w);
	if (p->nsizes)
		return p->sizes[r % p->nsizes];
	return p->size_min + (uint32_t)(r % ((uint64_t)p->size_max - p->size_min + 1));
}

/* Allocate (from cache, or the thread's default cache if NULL) and write the pattern. */
static bool take(struct worker *w, pf_cache_t *cache, size_t align, struct frag *f)
{
	uint32_t size = pick_size(w);
	void *p = cache ? pf_cache_alloc_align(cache, size, align) : pf_alloc_align(size, align);
	w->quota--;
	if (!p) {
		w->n.alloc_failures++;
		return false;
	}
	f->p = p;
	f->size = size;
	f->tag = stress_mix64(w->run->p->seed ^ ((uint64_t)w->index << 48) ^ w->seq++) ^ (uintptr_t)p;
	fill(f);
	w->n.allocs++;
	if (++w->unreported >= PROGRESS_BATCH)
		report_progress(w);
	return true;
}

/* Whether this fragment is the one in leak_every to leak (while leak_max lasts). */
static bool leak_now(struct worker *w)
{
	struct run *run = w->run;
	uint64_t every = run->p->leak_every;
	if (!every || ++w->frees_due % every)
		return false;
	uint64_t left = atomic_load_explicit(&run->leaks_left, memory_order_relaxed);
	while (left && !atomic_compare_exchange_weak_explicit(&run->leaks_left, &left, left - 1,
							      memory_order_relaxed,
							      memory_order_relaxed))
		;
	return left != 0;
}

/* Verify and free: through cache with its size if given, else pf_free of an inner byte. */
static void give_back(struct worker *w, pf_cache_t *cache, const struct frag *f)
{
	if (!intact(f))
		w->n.corrupt++;
	if (leak_now(w)) {
		w->n.leaked++;
		return;
	}
	int rc = cache ? pf_cache_free(cache, f->p, f->size)
		       : pf_free(f->p + f->tag % f->size); /* any byte of it will do */
	if (rc == 0)
		w->n.frees++;
	else
		w->n.free_failures++;
}

/* ---- ring ------------------------------------------------------------------------- */

STRESS_SPSC_RING(struct ring, struct frag, uint32_t)

/* Producer: one fragment into the ring; when full, wait (RING) or free it here (MIXED). */
static void produce(struct worker *w, bool wait)
{
	struct frag f;
	if (!take(w, w->cache, 1, &f))
		return;
	while (!ring_push(w->ring, &f)) {
		if (!wait) {
			give_back(w, w->cache, &f);
			return;
		}
		sched_yield();
	}
}

/* Consumer: verify and free up to max fragments from the ring; how many. */
static uint32_t consume(struct worker *w, uint32_t max)
{
	struct frag f;
	uint32_t n = 0;
	while (n < max && ring_pop(w->ring, &f)) {
		give_back(w, NULL, &f); /* a cross-thread free */
		n++;
	}
	return n;
}

/* Consumer, at the end: empty the ring until the producer is done and it stays empty. */
static void drain_ring(struct worker *w)
{
	for (;;) {
		bool done = atomic_load_explicit(&w->ring->producer_done, memory_order_acquire);
		if (consume(w, CONSUME_BATCH))
			continue;
		if (done)
			return;
		sched_yield();
	}
}

/* ---- burst and churn ---------------------------------------------------------------- */

/* Run to completion: allocate a burst from the default cache, then free it, LIFO or FIFO. */
static void burst(struct worker *w)
{
	struct frag frags[PF_STRESS_BURST_MAX];
	uint64_t n = w->run->p->burst, got = 0;
	if (n > w->quota)
		n = w->quota;
	for (uint64_t i = 0; i < n; i++)
		got += take(w, NULL, 1, &frags[got]);
	bool lifo = w->bursts++ & 1; /* LIFO hands the newest bytes back each time */
	for (uint64_t i = 0; i < got; i++)
		give_back(w, w->own, &frags[lifo ? got - 1 - i : i]);
}

static size_t churn_align(struct worker *w)
{
	static const size_t aligns[4] = { 1, 1, 8, 64 };
	return aligns[next_rand(w) & 3];
}

/* Replace the fragment in a random slot: lifetimes are random, frees out of order. */
static void churn(struct worker *w)
{
	struct frag *slot = &w->churn[next_rand(w) % w->run->p->churn_slots];
	if (slot->p)
		give_back(w, w->cache, slot);
	if (!take(w, w->cache, churn_align(w), slot))
		slot->p = NULL;
}

static void churn_release_all(struct worker *w)
{
	for (uint32_t i = 0; i < w->run->p->churn_slots; i++)
		if (w->churn[i].p)
			give_back(w, w->cache, &w->churn[i]);
}

/* ---- one thread --------------------------------------------------------------------- */

static void mixed_step(struct worker *w)
{
	switch (next_rand(w) & 3) {
	case 0:
		if (w->role == ROLE_PRODUCER)
			produce(w, false);
		else
			consume(w, MIXED_CONSUME_BATCH);
		break;
	case 1:
		burst(w);
		break;
	default:
		churn(w);
		break;
	}
}

static void step(struct worker *w)
{
	switch (w->run->p->workload) {
	case PF_STRESS_RING:
		produce(w, true);
		break;
	case PF_STRESS_BURST:
		burst(w);
		break;
	case PF_STRESS_CHURN:
		churn(w);
		break;
	default:
		mixed_step(w);
		break;
	}
}

static bool keep_going(struct worker *w)
{
	return w->quota > 0 && !atomic_load_explicit(&w->run->stop, memory_order_relaxed);
}

/* Give back whatever this thread still holds; tell the consumer when the producer is done. */
static void finish(struct worker *w)
{
	if (w->churn)
		churn_release_all(w);
	if (w->role == ROLE_PRODUCER)
		atomic_store_explicit(&w->ring->producer_done, 1, memory_order_release);
	if (w->role == ROLE_CONSUMER)
		drain_ring(w);
}

static void *thread_main(void *arg)
{
	struct worker *w = arg;
	w->own = pf_thread_cache();
	w->cache = pf_cache_create();
	bool ready = w->own && w->cache;
	if (!ready)
		w->n.alloc_failures++;
	bool pure_consumer = w->role == ROLE_CONSUMER && w->run->p->workload == PF_STRESS_RING;
	while (ready && !pure_consumer && keep_going(w))
		step(w);
	finish(w);
	pf_cache_destroy(w->cache);
	report_progress(w);
	atomic_fetch_sub_explicit(&w->run->running, 1, memory_order_release);
	return NULL; /* the thread's default cache and page lists go back at exit */
}

/* ---- setting up -------------------------------------------------------------------- */

static const char *check_sizes(const pf_stress_params_t *p)
{
	return stress_check_sizes(p->sizes, p->nsizes, p->size_min, p->size_max);
}

static const char *check_params(const pf_stress_params_t *p, const pf_stress_result_t *out)
{
	if (!p || !out)
		return "params and out must not be NULL";
	if (p->size != sizeof(*p))
		return "params->size is not this library's sizeof(pf_stress_params_t): rebuild the "
		       "caller against this pyfrag_stress.h, and start from pf_stress_params_init()";
	if (p->workload >= PF_STRESS_WORKLOADS)
		return "unknown workload";
	if (p->pairs < 1 || p->pairs > MAX_PAIRS)
		return "pairs must be between 1 and 1024";
	if (p->burst < 1 || p->burst > PF_STRESS_BURST_MAX)
		return "burst must be between 1 and 256";
	if (p->ring_slots < 2 || p->ring_slots > MAX_SLOTS || (p->ring_slots & (p->ring_slots - 1)))
		return "ring_slots must be a power of two between 2 and 1048576";
	if (p->churn_slots < 1 || p->churn_slots > MAX_SLOTS)
		return "churn_slots must be between 1 and 1048576";
	if (!p->ops && !p->duration_ns)
		return "either ops or duration_ns must be set";
	return check_sizes(p);
}

struct layout {
	size_t run, workers, rings, ring_slots, churn, total;
};

static struct layout plan(const pf_stress_params_t *p)
{
	size_t threads = 2 * (size_t)p->pairs;
	struct layout l = { .run = align_up(sizeof(struct run)) };
	l.workers = align_up(threads * sizeof(struct worker));
	l.rings = uses_ring(p->workload) ? align_up(p->pairs * sizeof(struct ring)) : 0;
	l.ring_slots = uses_ring(p->workload) ? align_up((size_t)p->pairs * p->ring_slots *
							   sizeof(struct frag)) : 0;
	l.churn = uses_churn(p->workload) ? align_up(threads * p->churn_slots * sizeof(struct frag)) : 0;
	l.total = l.run + l.workers + l.rings + l.ring_slots + l.churn;
	return l;
}

static void setup_worker(struct run *run, struct worker *w, uint32_t index, struct frag *table)
{
	const pf_stress_params_t *p = run->p;
	uint32_t pair = index / 2;
	w->run = run;
	w->index = index;
	w->role = !uses_ring(p->workload) ? ROLE_SOLO : index % 2 ? ROLE_CONSUMER : ROLE_PRODUCER;
	w->ring = uses_ring(p->workload) ? &run->rings[pair] : NULL;
	w->churn = table;
	w->rng = stress_mix64(p->seed + index);
	bool allocates = !(p->workload == PF_STRESS_RING && w->role == ROLE_CONSUMER);
	uint32_t allocators = p->workload == PF_STRESS_RING ? p->pairs : run->nthreads;
	uint32_t rank = p->workload == PF_STRESS_RING ? pair : index;
	w->quota = !p->ops ? UINT64_MAX
		   : !allocates ? 0
				: p->ops / allocators + (rank < p->ops % allocators);
}

/* Carve the mapping into the run, its threads, rings and churn tables (all zero). */
static struct run *setup(const pf_stress_params_t *p, char *map, struct layout l)
{
	struct run *run = (struct run *)map;
	run->p = p;
	run->map_size = l.total;
	run->nthreads = 2 * p->pairs;
	atomic_init(&run->leaks_left, p->leak_max);
	run->workers = (struct worker *)(map + l.run);
	run->rings = l.rings ? (struct ring *)(map + l.run + l.workers) : NULL;
	struct frag *slots = (struct frag *)(map + l.run + l.workers + l.rings);
	struct frag *tables = (struct frag *)(map + l.run + l.workers + l.rings + l.ring_slots);
	for (uint32_t i = 0; run->rings && i < p->pairs; i++) {
		run->rings[i].mask = p->ring_slots - 1;
		run->rings[i].slots = slots + (size_t)i * p->ring_slots;
	}
	for (uint32_t i = 0; i < run->nthreads; i++)
		setup_worker(run, &run->workers[i], i,
			     l.churn ? tables + (size_t)i * p->churn_slots : NULL);
	return run;
}

/* ---- running ----------------------------------------------------------------------- */

static int start_one(struct run *run, struct worker *w)
{
	atomic_fetch_add_explicit(&run->running, 1, memory_order_relaxed);
	if (pthread_create(&w->thread, NULL, thread_main, w) != 0) {
		atomic_fetch_sub_explicit(&run->running, 1, memory_order_relaxed);
		return -1;
	}
	w->started = true;
	return 0;
}

/* Consumers first, so a producer never waits on a consumer that could not start. */
static int start_threads(struct run *run)
{
	for (uint32_t pair = 0; pair < run->p->pairs; pair++) {
		struct worker *producer = &run->workers[2 * pair];
		if (start_one(run, &run->workers[2 * pair + 1]) != 0)
			return -1;
		if (start_one(run, producer) != 0) {
			if (producer->ring) /* its consumer would wait for it forever */
				atomic_store_explicit(&producer->ring->producer_done, 1,
						      memory_order_release);
			return -1;
		}
	}
	return 0;
}

/* Fault injection: a write into the arena's tail, reserved and never committed. */
static void wild_write(void)
{
	uintptr_t base;
	size_t size;
	if (pf_arena_range(&base, &size) == 0)
		*(volatile char *)(base + size - 1) = 1;
	raise(SIGSEGV); /* only reached if a handler swallowed the first one */
}

/* Wait for the end (time up, or every thread done), making the wild write when asked. */
static void supervise(struct run *run, uint64_t start)
{
	const pf_stress_params_t *p = run->p;
	uint64_t stop_at = p->ops ? UINT64_MAX : start + p->duration_ns;
	uint64_t crash_at = p->crash_after_ns ? start + p->crash_after_ns : UINT64_MAX;
	for (;;) {
		uint64_t now = stress_now_ns();
		if (now >= crash_at)
			wild_write();
		if (now >= stop_at || !atomic_load_explicit(&run->running, memory_order_acquire))
			break;
		uint64_t next = stop_at < crash_at ? stop_at : crash_at;
		stress_sleep_ns(next - now < SUPERVISE_TICK_NS ? next - now : SUPERVISE_TICK_NS);
	}
	atomic_store_explicit(&run->stop, 1, memory_order_relaxed);
}

static void add_counts(struct counts *sum, const struct counts *n)
{
	sum->allocs += n->allocs;
	sum->frees += n->frees;
	sum->leaked += n->leaked;
	sum->corrupt += n->corrupt;
	sum->alloc_failures += n->alloc_failures;
	sum->free_failures += n->free_failures;
}

static uint32_t join_threads(struct run *run, struct counts *sum)
{
	uint32_t joined = 0;
	for (uint32_t i = 0; i < run->nthreads; i++) {
		struct worker *w = &run->workers[i];
		if (!w->started)
			continue;
		pthread_join(w->thread, NULL);
		add_counts(sum, &w->n);
		joined++;
	}
	return joined;
}

static void fill_result(pf_stress_result_t *out, const struct counts *sum, uint32_t threads,
			uint64_t elapsed_ns)
{
	memset(out, 0, sizeof(*out));
	out->size = sizeof(*out);
	out->threads = threads;
	out->ops = sum->allocs;
	out->allocs = sum->allocs;
	out->frees = sum->frees;
	out->leaked = sum->leaked;
	out->corrupt = sum->corrupt;
	out->alloc_failures = sum->alloc_failures;
	out->free_failures = sum->free_failures;
	out->elapsed_ns = elapsed_ns;
}

/* ---- entry points -------------------------------------------------------------------- */

void pf_stress_params_init(pf_stress_params_t *params)
{
	memset(params, 0, sizeof(*params));
	params->size = sizeof(*params);
	params->workload = PF_STRESS_MIXED;
	params->pairs = 1;
	params->burst = 32;
	params->ring_slots = 1024;
	params->churn_slots = 1024;
	params->duration_ns = 1000000000ull;
	params->size_min = 64;
	params->size_max = 1500;
	params->leak_max = 1024;
	params->seed = 1;
}

int pf_stress_run(const pf_stress_params_t *params, pf_stress_result_t *out)
{
	const char *why = check_params(params, out);
	if (why)
		return fail(EINVAL, why);
	struct layout l = plan(params);
	char *map = mmap(NULL, l.total, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
	if (map == MAP_FAILED)
		return fail(ENOMEM, "could not map memory for the run's threads and rings");
	struct run *run = setup(params, map, l);
	uint64_t start = stress_now_ns();
	int started = start_threads(run);
	if (started != 0)
		atomic_store_explicit(&run->stop, 1, memory_order_relaxed);
	else
		supervise(run, start);
	struct counts sum = { 0 };
	uint32_t threads = join_threads(run, &sum);
	fill_result(out, &sum, threads, stress_now_ns() - start);
	munmap(map, l.total);
	return started == 0 ? 0 : fail(EAGAIN, "could not start the run's threads");
}

const char *pf_stress_error_message(void)
{
	return error_message ? error_message : "no error";
}

const char *pf_stress_workload_name(unsigned workload)
{
	return workload < PF_STRESS_WORKLOADS ? workload_names[workload] : NULL;
}
