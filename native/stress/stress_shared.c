/* SPDX-License-Identifier: GPL-2.0-only */
/*
 * Shared-arena stress loops (pyfrag_stress.h, "Shared-arena loops"): the
 * processes behind `pyfrag stress --shared`.
 *
 * Contract:
 * - Uses only the public API (pyfrag.h, pyfrag_shared.h). Everything the
 *   processes share (the control block, the rings) is a fragment of the
 *   arena; fragments travel through the rings as offsets. Nothing comes
 *   from malloc.
 * - Rings are single producer, single consumer; head and tail only grow. A
 *   producer pushes round-robin to the first ring with room; nobody waits
 *   on one ring: with a consumer dead, its rings fill and the others go on.
 *   Every wait spins briefly, then yields, then sleeps (20 us, then 200 us),
 *   so four processes on two cores never wedge.
 * - A consumer takes one fragment at a time (pop, verify, free, count), so
 *   at any moment it holds at most one fragment not counted as freed.
 * - Counters live in the arena (each process writes only its own, one
 *   cache line apart from the others), so the parent can read those of a
 *   process that died.
 * - Death: a consumer holds its robust mutex while it runs. A producer that
 *   finds the mutex EOWNERDEAD marks the consumer dead (state DEAD) and
 *   takes over its ring from that producer: verify, free, "drained".
 */
#include "pyfrag_stress.h"
#include "stress_common.h"

#include <pthread.h>
#include <sched.h>
#include <stdatomic.h>
#include <unistd.h>

#define CONTROL_MAGIC 0x70667374726d6731ull /* "pfstrmg1" */
#define CACHE_LINE 64u
#define PROGRESS_BATCH 256u
#define CONSUME_BATCH 32u
#define TIME_CHECK_EVERY 16u
#define SPIN_LIMIT 32u
#define YIELD_LIMIT 64u
#define SHORT_SLEEP_LIMIT 256u
#define SHORT_SLEEP_NS 20000ull
#define LONG_SLEEP_NS 200000ull
#define DEAD_CHECK_EVERY 64u

/* ---- data types (all inside the arena) ------------------------------------------------ */

struct slot {
	uint64_t offset; /* of the fragment, from the arena's base */
	uint64_t tag;
	uint32_t size;
	uint32_t unused;
};

struct ring {
	_Alignas(CACHE_LINE) _Atomic uint64_t head; /* written by the producer */
	_Alignas(CACHE_LINE) _Atomic uint64_t tail; /* written by the consumer (or a drainer) */
	_Alignas(CACHE_LINE) _Atomic uint32_t producer_done;
	uint32_t mask;
	struct slot slots[];
};

/* One process's counters; single writer each, so a load and a store, no RMW. */
struct peer {
	_Alignas(CACHE_LINE) pthread_mutex_t lock; /* consumers: held while running (robust) */
	_Atomic uint32_t state;
	_Atomic uint32_t pid;
	_Atomic uint64_t started_ns, elapsed_ns;
	_Atomic uint64_t allocs, frees, drained, self_freed, corrupt, alloc_failures, free_failures;
	_Atomic uint64_t dead_seen;
};

struct control {
	uint64_t magic;
	uint32_t producers, consumers, ring_slots, unused;
	uint64_t ring[PF_STRESS_SHARED_MAX * PF_STRESS_SHARED_MAX]; /* [p * consumers + c] */
	struct peer peer[2 * PF_STRESS_SHARED_MAX];                 /* producers, then consumers */
};

_Static_assert(sizeof(struct control) <= PF_FRAG_PAGE_SIZE, "the control block is one fragment");
_Static_assert(sizeof(struct ring) + PF_STRESS_SHARED_SLOTS_MAX * sizeof(struct slot) <=
		       PF_FRAG_PAGE_SIZE,
	       "a ring is one fragment");

/* One running process's view. */
struct ctx {
	pf_shared_t *arena;
	const pf_stress_shared_params_t *p;
	struct control *ctl;
	struct peer *me;
	char *base; /* the arena's base address: offset 0 */
	uint64_t rng, seq, unreported;
};

/* ---- small helpers ------------------------------------------------------------------ */

static void bump(_Atomic uint64_t *counter)
{
	uint64_t v = atomic_load_explicit(counter, memory_order_relaxed);
	atomic_store_explicit(counter, v + 1, memory_order_release);
}

static void backoff(uint32_t *spins)
{
	uint32_t n = (*spins)++;
	if (n < SPIN_LIMIT) {
#if defined(__x86_64__) || defined(__i386__)
		__builtin_ia32_pause();
#endif
	} else if (n < YIELD_LIMIT) {
		sched_yield();
	} else {
		stress_sleep_ns(n < SHORT_SLEEP_LIMIT ? SHORT_SLEEP_NS : LONG_SLEEP_NS);
	}
}

static void report_progress(struct ctx *x)
{
	if (x->p->progress && x->unreported)
		__atomic_fetch_add(x->p->progress, x->unreported, __ATOMIC_RELAXED);
	x->unreported = 0;
}

static void progressed(struct ctx *x)
{
	if (++x->unreported >= PROGRESS_BATCH)
		report_progress(x);
}

static struct ring *ring_at(const struct ctx *x, uint32_t producer, uint32_t consumer)
{
	return (struct ring *)(x->base + x->ctl->ring[producer * x->ctl->consumers + consumer]);
}

static uint64_t ring_count(struct ring *r)
{
	return atomic_load_explicit(&r->head, memory_order_acquire) -
	       atomic_load_explicit(&r->tail, memory_order_acquire);
}

STRESS_SPSC_RING(struct ring, struct slot, uint64_t)

/* ---- fragments ---------------------------------------------------------------------- */

static uint32_t pick_size(struct ctx *x)
{
	const pf_stress_shared_params_t *p = x->p;
	x->rng += 0x9e3779b97f4a7c15ull; /* splitmix64 */
	uint64_t r = stress_mix64(x->rng);
	if (p->nsizes)
		return p->sizes[r % p->nsizes];
	return p->size_min + (uint32_t)(r % ((uint64_t)p->size_max - p->size_min + 1));
}

/* Allocate from this thread's cache of the arena and write the pattern; false if refused. */
static bool take(struct ctx *x, struct slot *s)
{
	uint32_t size = pick_size(x);
	unsigned char *frag = pf_shared_alloc(x->arena, size);
	if (!frag) {
		bump(&x->me->alloc_failures);
		return false;
	}
	s->offset = (uint64_t)((char *)frag - x->base);
	s->size = size;
	s->tag = stress_mix64(x->p->seed ^ ((uint64_t)x->p->index << 48) ^ x->seq++) ^
		 (uintptr_t)frag;
	stress_fill(frag, size, s->tag);
	bump(&x->me->allocs);
	progressed(x);
	return true;
}

/* Verify and free, through pf_free or pf_shared_free of an inner byte; count it in counter. */
static void give_back(struct ctx *x, const struct slot *s, _Atomic uint64_t *counter)
{
	unsigned char *frag = (unsigned char *)x->base + s->offset;
	if (!stress_intact(frag, s->size, s->tag))
		bump(&x->me->corrupt);
	unsigned char *inner = frag + s->tag % s->size;
	int rc = (s->tag >> 9) & 1 ? pf_free(inner) : pf_shared_free(x->arena, inner);
	if (rc != 0)
		bump(&x->me->free_failures);
	else
		bump(counter);
}

/* ---- death of a consumer ------------------------------------------------------------ */

/* Whether this consumer died while running (a robust mutex says so; we record it once). */
static bool consumer_dead(struct peer *c)
{
	uint32_t state = atomic_load_explicit(&c->state, memory_order_acquire);
	if (state != PF_STRESS_RUNNING)
		return state == PF_STRESS_DEAD;
	int rc = pthread_mutex_trylock(&c->lock);
	if (rc == EBUSY)
		return false; /* alive and running */
	if (rc == EOWNERDEAD) {
		atomic_store_explicit(&c->state, PF_STRESS_DEAD, memory_order_release);
		pthread_mutex_consistent(&c->lock);
		pthread_mutex_unlock(&c->lock);
		return true;
	}
	if (rc == 0) { /* it finished (or another producer marked it dead) meanwhile */
		state = atomic_load_explicit(&c->state, memory_order_acquire);
		pthread_mutex_unlock(&c->lock);
	}
	return state == PF_STRESS_DEAD;
}

static bool all_consumers_dead(struct ctx *x)
{
	for (uint32_t c = 0; c < x->ctl->consumers; c++)
		if (!consumer_dead(&x->ctl->peer[x->ctl->producers + c]))
			return false;
	return true;
}

/* ---- producer ----------------------------------------------------------------------- */

/* Push one fragment to the first ring with room, from *next on; free it here if none will come. */
static void push_one(struct ctx *x, const struct slot *s, uint32_t *next, uint64_t stop_at)
{
	uint32_t consumers = x->ctl->consumers, spins = 0;
	for (;;) {
		for (uint32_t k = 0; k < consumers; k++) {
			uint32_t c = (*next + k) % consumers;
			if (ring_push(ring_at(x, x->p->index, c), s)) {
				*next = c + 1;
				return;
			}
		}
		bool late = spins % DEAD_CHECK_EVERY == DEAD_CHECK_EVERY - 1 &&
			    (stress_now_ns() >= stop_at || all_consumers_dead(x));
		if (late) { /* time is up with every ring full, or nobody is left to take it */
			give_back(x, s, &x->me->self_freed);
			return;
		}
		backoff(&spins);
	}
}

/* After the end: wait until the consumer emptied our ring, or drain it if that consumer died. */
static void settle(struct ctx *x, uint32_t consumer)
{
	struct ring *r = ring_at(x, x->p->index, consumer);
	struct peer *c = &x->ctl->peer[x->ctl->producers + consumer];
	uint32_t spins = 0;
	while (ring_count(r)) {
		if (consumer_dead(c)) {
			struct slot s;
			bump(&x->me->dead_seen);
			while (ring_pop(r, &s))
				give_back(x, &s, &x->me->drained);
			return;
		}
		backoff(&spins);
	}
}

static void producer(struct ctx *x, uint64_t start)
{
	const pf_stress_shared_params_t *p = x->p;
	uint64_t quota = p->ops ? p->ops : UINT64_MAX;
	uint64_t stop_at = p->ops ? UINT64_MAX : start + p->duration_ns;
	uint32_t next = p->index % x->ctl->consumers, spins = 0;
	for (uint64_t n = 0; quota; n++) {
		if (n % TIME_CHECK_EVERY == 0 && stress_now_ns() >= stop_at)
			break;
		struct slot s;
		quota--;
		if (!take(x, &s)) {
			backoff(&spins);
			continue;
		}
		spins = 0;
		push_one(x, &s, &next, stop_at);
	}
	for (uint32_t c = 0; c < x->ctl->consumers; c++)
		atomic_store_explicit(&ring_at(x, p->index, c)->producer_done, 1, memory_order_release);
	report_progress(x);
	for (uint32_t c = 0; c < x->ctl->consumers; c++)
		settle(x, c);
}

/* ---- consumer ----------------------------------------------------------------------- */

static uint32_t consume_some(struct ctx *x)
{
	uint32_t got = 0;
	for (uint32_t prod = 0; prod < x->ctl->producers; prod++) {
		struct ring *r = ring_at(x, prod, x->p->index);
		struct slot s;
		for (uint32_t n = 0; n < CONSUME_BATCH && ring_pop(r, &s); n++, got++) {
			give_back(x, &s, &x->me->frees);
			progressed(x);
		}
	}
	return got;
}

static bool producers_done(struct ctx *x)
{
	for (uint32_t prod = 0; prod < x->ctl->producers; prod++) {
		struct ring *r = ring_at(x, prod, x->p->index);
		if (!atomic_load_explicit(&r->producer_done, memory_order_acquire) || ring_count(r))
			return false;
	}
	return true;
}

static void consumer(struct ctx *x)
{
	uint32_t spins = 0;
	for (;;) {
		if (consume_some(x)) {
			spins = 0;
			continue;
		}
		if (producers_done(x))
			break;
		backoff(&spins);
	}
	report_progress(x);
}

/* ---- checking arguments ------------------------------------------------------------- */

static struct control *control_at(pf_shared_t *arena, uint64_t control)
{
	struct control *ctl = pf_shared_address(arena, control);
	if (!ctl || ctl->magic != CONTROL_MAGIC) {
		pf__stress_fail(EINVAL, "control is not the offset of a control block made by "
					"pf_stress_shared_setup in this arena");
		return NULL;
	}
	return ctl;
}

static const char *check_sizes(const pf_stress_shared_params_t *p)
{
	return stress_check_sizes(p->sizes, p->nsizes, p->size_min, p->size_max);
}

static const char *check_run(const pf_stress_shared_params_t *p, const struct control *ctl)
{
	if (p->size != sizeof(*p))
		return "params->size is not this library's sizeof(pf_stress_shared_params_t): "
		       "rebuild the caller against this pyfrag_stress.h";
	if (p->role > PF_STRESS_CONSUMER)
		return "role must be PF_STRESS_PRODUCER or PF_STRESS_CONSUMER";
	if (p->index >= (p->role == PF_STRESS_PRODUCER ? ctl->producers : ctl->consumers))
		return "index is past the producers or consumers of this layout";
	if (p->role == PF_STRESS_PRODUCER && !p->ops && !p->duration_ns)
		return "a producer needs ops or duration_ns";
	return check_sizes(p);
}

static struct peer *peer_of(struct control *ctl, uint32_t role, uint32_t index)
{
	return &ctl->peer[(role == PF_STRESS_CONSUMER ? ctl->producers : 0) + index];
}

/* ---- entry points -------------------------------------------------------------------- */

static void *alloc_zeroed(pf_shared_t *arena, size_t size)
{
	void *p = pf_shared_alloc_align(arena, size, CACHE_LINE);
	if (p)
		memset(p, 0, size);
	return p;
}

static int init_consumer_lock(struct peer *c)
{
	pthread_mutexattr_t attr;
	pthread_mutexattr_init(&attr);
	pthread_mutexattr_setpshared(&attr, PTHREAD_PROCESS_SHARED);
	pthread_mutexattr_setrobust(&attr, PTHREAD_MUTEX_ROBUST);
	int rc = pthread_mutex_init(&c->lock, &attr);
	pthread_mutexattr_destroy(&attr);
	return rc;
}

/* Free the first `rings` rings and the control block. */
static void free_layout(pf_shared_t *arena, struct control *ctl, char *base, uint32_t rings)
{
	for (uint32_t i = 0; i < rings; i++)
		pf_shared_free(arena, base + ctl->ring[i]);
	ctl->magic = 0;
	pf_shared_free(arena, ctl);
}

uint64_t pf_stress_shared_setup(pf_shared_t *arena, uint32_t producers, uint32_t consumers,
				uint32_t ring_slots)
{
	if (!arena || producers < 1 || producers > PF_STRESS_SHARED_MAX || consumers < 1 ||
	    consumers > PF_STRESS_SHARED_MAX) {
		pf__stress_fail(EINVAL, "producers and consumers must be between 1 and 16");
		return UINT64_MAX;
	}
	if (ring_slots < 2 || ring_slots > PF_STRESS_SHARED_SLOTS_MAX || (ring_slots & (ring_slots - 1))) {
		pf__stress_fail(EINVAL, "ring_slots must be a power of two between 2 and 1024");
		return UINT64_MAX;
	}
	struct control *ctl = alloc_zeroed(arena, sizeof(*ctl));
	if (!ctl) {
		pf__stress_fail(ENOMEM, "no room in the arena for the control block");
		return UINT64_MAX;
	}
	uint64_t control = pf_shared_offset(arena, ctl);
	char *base = (char *)ctl - control;
	ctl->producers = producers;
	ctl->consumers = consumers;
	ctl->ring_slots = ring_slots;
	size_t ring_bytes = sizeof(struct ring) + ring_slots * sizeof(struct slot);
	for (uint32_t i = 0; i < producers * consumers; i++) {
		struct ring *r = alloc_zeroed(arena, ring_bytes);
		if (!r) {
			free_layout(arena, ctl, base, i);
			pf__stress_fail(ENOMEM, "no room in the arena for the rings");
			return UINT64_MAX;
		}
		r->mask = ring_slots - 1;
		ctl->ring[i] = (uint64_t)((char *)r - base);
	}
	for (uint32_t c = 0; c < consumers; c++)
		init_consumer_lock(&ctl->peer[producers + c]);
	ctl->magic = CONTROL_MAGIC;
	return control;
}

int pf_stress_shared_run(pf_shared_t *arena, const pf_stress_shared_params_t *params,
			 pf_stress_shared_peer_t *out)
{
	if (!arena || !params || !out)
		return pf__stress_fail(EINVAL, "arena, params and out must not be NULL");
	struct control *ctl = control_at(arena, params->control);
	if (!ctl)
		return -1;
	const char *why = check_run(params, ctl);
	if (why)
		return pf__stress_fail(EINVAL, why);
	struct ctx x = { .arena = arena, .p = params, .ctl = ctl,
			 .me = peer_of(ctl, params->role, params->index),
			 .base = (char *)ctl - params->control,
			 .rng = stress_mix64(params->seed + params->index) };
	bool is_consumer = params->role == PF_STRESS_CONSUMER;
	if (is_consumer && pthread_mutex_lock(&x.me->lock) == EOWNERDEAD)
		pthread_mutex_consistent(&x.me->lock); /* a previous run's consumer died */
	uint64_t start = stress_now_ns();
	atomic_store_explicit(&x.me->pid, (uint32_t)getpid(), memory_order_relaxed);
	atomic_store_explicit(&x.me->started_ns, start, memory_order_relaxed);
	atomic_store_explicit(&x.me->state, PF_STRESS_RUNNING, memory_order_release);
	if (is_consumer)
		consumer(&x);
	else
		producer(&x, start);
	atomic_store_explicit(&x.me->elapsed_ns, stress_now_ns() - start, memory_order_relaxed);
	atomic_store_explicit(&x.me->state, PF_STRESS_FINISHED, memory_order_release);
	if (is_consumer)
		pthread_mutex_unlock(&x.me->lock);
	return pf_stress_shared_peer(arena, params->control, params->role, params->index, out);
}

int pf_stress_shared_peer(pf_shared_t *arena, uint64_t control, uint32_t role, uint32_t index,
			  pf_stress_shared_peer_t *out)
{
	if (!arena || !out)
		return pf__stress_fail(EINVAL, "arena and out must not be NULL");
	struct control *ctl = control_at(arena, control);
	if (!ctl)
		return -1;
	if (role > PF_STRESS_CONSUMER ||
	    index >= (role == PF_STRESS_PRODUCER ? ctl->producers : ctl->consumers))
		return pf__stress_fail(EINVAL, "no such producer or consumer in this layout");
	struct peer *me = peer_of(ctl, role, index);
	memset(out, 0, sizeof(*out));
	out->size = sizeof(*out);
	out->state = atomic_load_explicit(&me->state, memory_order_acquire);
	out->pid = atomic_load_explicit(&me->pid, memory_order_relaxed);
	out->started_ns = atomic_load_explicit(&me->started_ns, memory_order_relaxed);
	out->elapsed_ns = atomic_load_explicit(&me->elapsed_ns, memory_order_relaxed);
	out->allocs = atomic_load_explicit(&me->allocs, memory_order_acquire);
	out->frees = atomic_load_explicit(&me->frees, memory_order_acquire);
	out->drained = atomic_load_explicit(&me->drained, memory_order_acquire);
	out->self_freed = atomic_load_explicit(&me->self_freed, memory_order_acquire);
	out->corrupt = atomic_load_explicit(&me->corrupt, memory_order_acquire);
	out->alloc_failures = atomic_load_explicit(&me->alloc_failures, memory_order_acquire);
	out->free_failures = atomic_load_explicit(&me->free_failures, memory_order_acquire);
	out->dead_seen = atomic_load_explicit(&me->dead_seen, memory_order_acquire);
	return 0;
}

uint64_t pf_stress_shared_in_rings(pf_shared_t *arena, uint64_t control)
{
	struct control *ctl = arena ? control_at(arena, control) : NULL;
	if (!ctl)
		return UINT64_MAX;
	char *base = (char *)ctl - control;
	uint64_t n = 0;
	for (uint32_t i = 0; i < ctl->producers * ctl->consumers; i++)
		n += ring_count((struct ring *)(base + ctl->ring[i]));
	return n;
}

int pf_stress_shared_teardown(pf_shared_t *arena, uint64_t control)
{
	struct control *ctl = arena ? control_at(arena, control) : NULL;
	if (!ctl)
		return -1;
	/* The consumers' robust mutexes need no destroy: a dead owner's one may still be
	 * marked, and the memory goes back to the arena either way. */
	free_layout(arena, ctl, (char *)ctl - control, ctl->producers * ctl->consumers);
	return 0;
}
