/* SPDX-License-Identifier: GPL-2.0-only */
/*
 * Named single-producer single-consumer rings of fragments inside a shared
 * arena (pyfrag_shared.h). The control block is a 64-byte aligned fragment
 * of the arena; its offset and name sit in the header's ring table, written
 * under the header lock. head (next slot the producer writes) and tail (next
 * slot the consumer reads) count up forever on their own cache lines; a slot
 * holds (offset from the arena's base << 16) | (length - 1). The producer
 * publishes a slot with a release store of head, the consumer frees it with
 * a release store of tail. The roles belong to processes (their slot in the
 * process table, + 1; 0 none), taken with a compare-and-swap from nobody or
 * from a process whose liveness lock is gone. A side that must wait says so
 * in its *_waits flag and sleeps on a futex (shared: the mapping is a file),
 * put_seq for a consumer, get_seq for a producer; the other side, after
 * publishing, bumps the word and wakes it only when the flag is set (both
 * sides fence between their store and their load: a wakeup is never lost).
 * Sleeps last at most a millisecond, so the peer's liveness is checked as
 * often. Before its first sleep a waiter polls the ring for up to
 * SPIN_NS: a peer that is running publishes sooner than a futex wakeup
 * takes (a few microseconds each way), and a put that finds no sleeper
 * makes no system call. Every SPIN_CHECK_CLOCK polls it yields the CPU, so
 * that with more processes than CPUs (a pipeline's) the one it waits for
 * can run: polling without yielding cost the ring pipeline example a fifth
 * of its throughput on 2 CPUs, yielding gained it 6% over not polling.
 * With one CPU online the peer cannot be running, so nobody polls.
 */
#include "shared/shared.h"

#include <errno.h>
#include <limits.h>
#include <sched.h>
#include <linux/futex.h>
#include <string.h>
#include <sys/syscall.h>
#include <time.h>
#include <unistd.h>

#define RING_MAGIC 0x474e495246595001ull
#define LEN_BITS 16
#define LIVENESS_EVERY_NS 1000000 /* longest futex sleep */
#define SPIN_NS 20000              /* polling before the first sleep */
#define SPIN_CHECK_CLOCK 64        /* polls between two reads of the clock */

struct pf_shared_ring {
	uint64_t magic;
	uint32_t capacity; /* a power of two */
	uint32_t mask;
	_Atomic uint32_t producer; /* process slot + 1, 0: none */
	_Atomic uint32_t consumer;
	_Atomic uint32_t put_seq;        /* futex: bumped by a put that saw consumer_waits */
	_Atomic uint32_t get_seq;        /* futex: bumped by a get that saw producer_waits */
	_Atomic uint32_t consumer_waits; /* a consumer sleeps (or is about to) on put_seq */
	_Atomic uint32_t producer_waits;
	uint8_t pad0_[24];
	_Alignas(64) _Atomic uint64_t head;
	uint8_t pad1_[56];
	_Alignas(64) _Atomic uint64_t tail;
	uint8_t pad2_[56];
	_Alignas(64) uint64_t slots[];
};

_Static_assert(sizeof(struct pf_shared_ring) == 192, "three cache lines, then the slots");
_Static_assert(sizeof(struct pf_shared_ring) + 8 * PF_SHARED_RING_MAX_SLOTS <= PF_FRAG_PAGE_SIZE,
	       "the largest ring is one fragment");

static struct pf_shared_ring *ring_of(struct pf_shared *local, pf_shared_ring_t *ring)
{
	uintptr_t base = (uintptr_t)local->header, at = (uintptr_t)ring;
	if (!ring || at < pf__shared_data(local->header) || at % 64 != 0 ||
	    at - base + sizeof(*ring) > local->map_bytes || ring->magic != RING_MAGIC) {
		pf__fail(EINVAL, "not a ring of this shared arena");
		return NULL;
	}
	return ring;
}

/* The arena's local entry and the checked ring, or NULL with errno. */
static struct pf_shared_ring *checked_ring(pf_shared_t *arena, pf_shared_ring_t *ring,
					   struct pf_shared **local_out)
{
	struct pf_shared *local = pf__shared_checked(arena);
	if (!local)
		return NULL;
	*local_out = local;
	return ring_of(local, ring);
}

static bool valid_name(const char *name)
{
	size_t len = name ? strnlen(name, PF_SHARED_NAME_MAX + 1) : 0;
	return len >= 1 && len <= PF_SHARED_NAME_MAX;
}

static struct pf_shared_ring_name *find_name(struct pf_shared_header *h, const char *name)
{
	for (unsigned i = 0; i < PF_SHARED_RINGS_MAX; i++)
		if (h->rings[i].offset && strcmp(h->rings[i].name, name) == 0)
			return &h->rings[i];
	return NULL;
}

static struct pf_shared_ring_name *free_name(struct pf_shared_header *h)
{
	for (unsigned i = 0; i < PF_SHARED_RINGS_MAX; i++)
		if (!h->rings[i].offset)
			return &h->rings[i];
	return NULL;
}

pf_shared_ring_t *pf_shared_ring_create(pf_shared_t *arena, const char *name, uint32_t capacity)
{
	struct pf_shared *local = pf__shared_checked(arena);
	if (!local)
		return NULL;
	if (!valid_name(name) || capacity < 2 || capacity > PF_SHARED_RING_MAX_SLOTS ||
	    (capacity & (capacity - 1)))
		return pf__fail(EINVAL, "a ring needs a name of 1..48 bytes and a capacity that is a "
					"power of two in 2..2048");
	size_t bytes = sizeof(struct pf_shared_ring) + (size_t)capacity * sizeof(uint64_t);
	struct pf_shared_ring *ring = pf_shared_alloc_align(arena, bytes, 64);
	if (!ring)
		return NULL;
	memset(ring, 0, bytes);
	ring->capacity = capacity;
	ring->mask = capacity - 1;
	ring->magic = RING_MAGIC;
	struct pf_shared_header *h = local->header;
	pf__shared_lock_header(h);
	struct pf_shared_ring_name *entry = find_name(h, name) ? NULL : free_name(h);
	int err = find_name(h, name) ? EEXIST : entry ? 0 : ENOSPC;
	if (entry) {
		memcpy(entry->name, name, strlen(name) + 1);
		atomic_thread_fence(memory_order_release); /* the block before its name */
		entry->offset = (uintptr_t)ring - (uintptr_t)h;
	}
	pf__shared_unlock_header(h);
	if (err) {
		ring->magic = 0;
		pf_shared_free(arena, ring);
		return pf__fail(err, err == EEXIST ? "a ring of that name exists in this arena"
						   : "this arena has 8 rings already");
	}
	return ring;
}

pf_shared_ring_t *pf_shared_ring_attach(pf_shared_t *arena, const char *name)
{
	struct pf_shared *local = pf__shared_checked(arena);
	if (!local)
		return NULL;
	if (!valid_name(name))
		return pf__fail(EINVAL, "a ring's name is 1..48 bytes");
	struct pf_shared_header *h = local->header;
	pf__shared_lock_header(h);
	struct pf_shared_ring_name *entry = find_name(h, name);
	uint64_t offset = entry ? entry->offset : 0;
	pf__shared_unlock_header(h);
	if (!offset)
		return pf__fail(ENOENT, "no ring of that name in this arena");
	return ring_of(local, (pf_shared_ring_t *)((uintptr_t)h + offset));
}

int pf_shared_ring_capacity(pf_shared_t *arena, pf_shared_ring_t *ring)
{
	struct pf_shared *local;
	struct pf_shared_ring *r = checked_ring(arena, ring, &local);
	return r ? (int)r->capacity : -1;
}

int pf_shared_ring_count(pf_shared_t *arena, pf_shared_ring_t *ring)
{
	struct pf_shared *local;
	struct pf_shared_ring *r = checked_ring(arena, ring, &local);
	if (!r)
		return -1;
	uint64_t tail = atomic_load_explicit(&r->tail, memory_order_acquire);
	uint64_t head = atomic_load_explicit(&r->head, memory_order_acquire);
	return (int)(head - tail > r->capacity ? r->capacity : head - tail);
}

/* Take the role for this process: 0, or -1/EBUSY while another live process holds it. */
static int claim(struct pf_shared *local, _Atomic uint32_t *role)
{
	uint32_t me = local->proc + 1;
	uint32_t holder = atomic_load_explicit(role, memory_order_acquire);
	while (holder != me) {
		if (holder && pf__shared_proc_alive(local, holder - 1)) {
			pf__fail(EBUSY, "another live process uses this end of the ring");
			return -1;
		}
		if (atomic_compare_exchange_weak_explicit(role, &holder, me, memory_order_acq_rel,
							  memory_order_acquire))
			break;
	}
	return 0;
}

static void wake(_Atomic uint32_t *waits, _Atomic uint32_t *seq)
{
	atomic_thread_fence(memory_order_seq_cst); /* the publish before the flag's load */
	if (!atomic_load_explicit(waits, memory_order_relaxed))
		return;
	atomic_store_explicit(waits, 0, memory_order_relaxed);
	atomic_fetch_add_explicit(seq, 1, memory_order_release);
	syscall(SYS_futex, seq, FUTEX_WAKE, INT_MAX, NULL, NULL, 0);
}

int pf_shared_ring_put(pf_shared_t *arena, pf_shared_ring_t *ring, void *const *frags,
		       const uint32_t *lens, unsigned n)
{
	struct pf_shared *local;
	struct pf_shared_ring *r = checked_ring(arena, ring, &local);
	if (!r || claim(local, &r->producer) != 0)
		return -1;
	if (n && (!frags || !lens)) {
		pf__fail(EINVAL, "frags and lens must not be NULL");
		return -1;
	}
	uintptr_t base = (uintptr_t)local->header, data = pf__shared_data(local->header);
	for (unsigned i = 0; i < n; i++) {
		uintptr_t at = (uintptr_t)frags[i];
		if (at < data || at - base >= local->map_bytes || lens[i] - 1 >= PF_FRAG_PAGE_SIZE ||
		    at - base + lens[i] > local->map_bytes) {
			pf__fail(EINVAL, "not a fragment of this arena, or a length not in 1..32768");
			return -1;
		}
	}
	uint64_t head = atomic_load_explicit(&r->head, memory_order_relaxed);
	uint64_t tail = atomic_load_explicit(&r->tail, memory_order_acquire);
	unsigned room = (unsigned)(r->capacity - (head - tail));
	unsigned put = n < room ? n : room;
	for (unsigned i = 0; i < put; i++)
		r->slots[(head + i) & r->mask] = ((uint64_t)((uintptr_t)frags[i] - base) << LEN_BITS) |
						  (lens[i] - 1);
	atomic_store_explicit(&r->head, head + put, memory_order_release);
	if (put)
		wake(&r->consumer_waits, &r->put_seq);
	return (int)put;
}

int pf_shared_ring_get(pf_shared_t *arena, pf_shared_ring_t *ring, void **frags, uint32_t *lens,
		       unsigned n)
{
	struct pf_shared *local;
	struct pf_shared_ring *r = checked_ring(arena, ring, &local);
	if (!r || claim(local, &r->consumer) != 0)
		return -1;
	if (n && (!frags || !lens)) {
		pf__fail(EINVAL, "frags and lens must not be NULL");
		return -1;
	}
	uintptr_t base = (uintptr_t)local->header;
	uint64_t tail = atomic_load_explicit(&r->tail, memory_order_relaxed);
	uint64_t head = atomic_load_explicit(&r->head, memory_order_acquire);
	unsigned have = (unsigned)(head - tail);
	unsigned got = n < have ? n : have;
	for (unsigned i = 0; i < got; i++) {
		uint64_t slot = r->slots[(tail + i) & r->mask];
		frags[i] = (void *)(base + (slot >> LEN_BITS));
		lens[i] = (uint32_t)(slot & ((1u << LEN_BITS) - 1)) + 1;
	}
	atomic_store_explicit(&r->tail, tail + got, memory_order_release);
	if (got)
		wake(&r->producer_waits, &r->get_seq);
	return (int)got;
}

static int64_t now_ns(void)
{
	struct timespec ts;
	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (int64_t)ts.tv_sec * 1000000000 + ts.tv_nsec;
}

static bool ready(struct pf_shared_ring *r, int for_put)
{
	uint64_t head = atomic_load_explicit(&r->head, memory_order_acquire);
	uint64_t tail = atomic_load_explicit(&r->tail, memory_order_acquire);
	return for_put ? head - tail < r->capacity : head != tail;
}

/* The other side's process died (a role once taken, its liveness lock gone). */
static bool peer_dead(struct pf_shared *local, struct pf_shared_ring *r, int for_put)
{
	uint32_t peer = atomic_load_explicit(for_put ? &r->consumer : &r->producer,
					     memory_order_acquire);
	return peer && !pf__shared_proc_alive(local, peer - 1);
}

static inline void cpu_relax(void)
{
#if defined(__x86_64__) || defined(__i386__)
	__builtin_ia32_pause();
#elif defined(__aarch64__)
	__asm__ __volatile__("yield");
#endif
}

/* SPIN_NS, or 0 with one CPU online (read once: a race only reads it twice). */
static int64_t spin_budget_ns(void)
{
	static _Atomic int64_t budget = -1;
	int64_t ns = atomic_load_explicit(&budget, memory_order_relaxed);
	if (ns < 0) {
		ns = sysconf(_SC_NPROCESSORS_ONLN) > 1 ? SPIN_NS : 0;
		atomic_store_explicit(&budget, ns, memory_order_relaxed);
	}
	return ns;
}

/* Poll until the ring is ready or spin_ns pass: whether it is ready. (A dead peer is
 * the sleeping loop's to find: its check is a system call.) */
static bool spin_until_ready(struct pf_shared_ring *r, int for_put, int64_t start,
			     int64_t spin_ns)
{
	for (;;) {
		for (unsigned i = 0; i < SPIN_CHECK_CLOCK; i++) {
			if (ready(r, for_put))
				return true;
			cpu_relax();
		}
		if (now_ns() - start >= spin_ns)
			return false;
		sched_yield(); /* a peer waiting for this CPU gets it */
	}
}

int pf_shared_ring_wait(pf_shared_t *arena, pf_shared_ring_t *ring, int for_put,
			int64_t timeout_ns)
{
	struct pf_shared *local;
	struct pf_shared_ring *r = checked_ring(arena, ring, &local);
	if (!r)
		return -1;
	_Atomic uint32_t *waits = for_put ? &r->producer_waits : &r->consumer_waits;
	_Atomic uint32_t *seq = for_put ? &r->get_seq : &r->put_seq;
	int64_t start = now_ns();
	int64_t spin_ns = spin_budget_ns();
	if (timeout_ns >= 0 && timeout_ns < spin_ns)
		spin_ns = timeout_ns;
	if (spin_ns && spin_until_ready(r, for_put, start, spin_ns))
		return 0;
	for (;;) {
		uint32_t seen = atomic_load_explicit(seq, memory_order_acquire);
		atomic_store_explicit(waits, 1, memory_order_relaxed);
		atomic_thread_fence(memory_order_seq_cst); /* the flag before the ring's load */
		if (ready(r, for_put))
			return 0;
		if (peer_dead(local, r, for_put)) {
			pf__fail(EPIPE, "the process on the other side of the ring died");
			return -1;
		}
		int64_t left = LIVENESS_EVERY_NS;
		if (timeout_ns >= 0) {
			int64_t spent = now_ns() - start;
			if (spent >= timeout_ns) {
				pf__fail(ETIMEDOUT, "timed out waiting on the ring");
				return -1;
			}
			if (timeout_ns - spent < left)
				left = timeout_ns - spent;
		}
		struct timespec nap = { 0, (long)left };
		syscall(SYS_futex, seq, FUTEX_WAIT, seen, &nap, NULL, 0);
	}
}
