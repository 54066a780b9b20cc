// SPDX-License-Identifier: GPL-2.0-only
/*
 * Producer/consumer ring, the kernel's page_frag_test pattern: a producer
 * thread allocates buffers, writes them and pushes them through a
 * single-producer single-consumer ring of 512 slots to a consumer thread on
 * the other core, which reads and frees them. Every block is freed by a
 * thread that did not allocate it. The threads are pinned to CPUs 0 and 1 and
 * wait for each other by spinning (then sched_yield after 2048 spins): a
 * yield at every full or empty ring makes the run a syscall benchmark.
 *
 * Cases (all by default, or a comma-separated list):
 *   12, 75, 2048, imix        malloc (pf_cache_alloc_inline) of that size
 *   12-a64 ... imix-a64       aligned to 64 bytes (aligned_alloc / pf_cache_alloc_align_inline)
 *   floor                     the same ring with no allocation (a fixed pool
 *                             of 1024 IMIX buffers): the cost of the ring itself
 * Prints "result ring <case> ns_per_op X worst_ns_per_op Y" (one op = one buffer
 * through the ring; best and worst of 3 rounds, each with its own two threads).
 * Usage: bench_ring [items] [cases]
 */
#include "bench.h"

#include <pthread.h>
#include <sched.h>
#include <stdatomic.h>
#include <unistd.h>

enum { RING = 512, POOL = 1024 };

static struct {
	_Atomic size_t head;
	char pad1[56];
	_Atomic size_t tail;
	char pad2[56];
	unsigned char *slot[RING];
} ring;

static struct {
	long items;
	size_t size; /* 0: imix */
	size_t align; /* 0: malloc */
	int floor;
} run;

static unsigned char pool[POOL][1536] __attribute__((aligned(64)));

/* Wait for the other side: spin briefly (it runs on the other core), then let others run. */
static inline void relax(unsigned *spins)
{
	if (++*spins < 2048) {
#if defined(__x86_64__) || defined(__i386__)
		__builtin_ia32_pause();
#endif
		return;
	}
	*spins = 0;
	sched_yield();
}

static void pin(int cpu)
{
	long n = sysconf(_SC_NPROCESSORS_ONLN);
	if (n < 2)
		return;
	cpu_set_t set;
	CPU_ZERO(&set);
	CPU_SET(cpu % n, &set);
	pthread_setaffinity_np(pthread_self(), sizeof(set), &set);
}

static inline size_t size_of(long i)
{
	return run.size ? run.size : imix[i % 12];
}

static void *producer(void *unused)
{
	(void)unused;
	pin(0);
	for (long i = 0; i < run.items; i++) {
		size_t n = size_of(i);
		unsigned char *p;
		if (run.floor)
			p = pool[i % POOL];
		else
			p = b_check(run.align ? b_alloc_align(n, run.align) : b_alloc(n));
		memset(p, (int)i, n < 32 ? n : 32);
		p[n - 1] = 1;
		size_t head = atomic_load_explicit(&ring.head, memory_order_relaxed);
		unsigned spins = 0;
		while (head - atomic_load_explicit(&ring.tail, memory_order_acquire) == RING)
			relax(&spins);
		ring.slot[head % RING] = p;
		atomic_store_explicit(&ring.head, head + 1, memory_order_release);
	}
	return NULL;
}

static void *consumer(void *arg)
{
	unsigned long *sum = arg;
	pin(1);
	for (long i = 0; i < run.items; i++) {
		size_t tail = atomic_load_explicit(&ring.tail, memory_order_relaxed);
		unsigned spins = 0;
		while (atomic_load_explicit(&ring.head, memory_order_acquire) == tail)
			relax(&spins);
		unsigned char *p = ring.slot[tail % RING];
		atomic_store_explicit(&ring.tail, tail + 1, memory_order_release);
		*sum += p[0] + p[size_of(i) - 1];
		if (!run.floor)
			b_free(p);
	}
	return NULL;
}

static double timed(long items)
{
	atomic_store(&ring.head, 0);
	atomic_store(&ring.tail, 0);
	run.items = items;
	unsigned long sum = 0;
	double start = now();
	pthread_t prod, cons;
	pthread_create(&cons, NULL, consumer, &sum);
	pthread_create(&prod, NULL, producer, NULL);
	pthread_join(prod, NULL);
	pthread_join(cons, NULL);
	return (now() - start) * 1e9 / (double)items;
}

/*
 * Best of REPS rounds of items/REPS: on a shared or virtual machine the cost
 * of the cross-core transfers jumps for whole stretches (here 30 <-> 120 ns
 * per buffer for the floor); the best round is the ring's own cost.
 */
enum { REPS = 3 };

static void one(const char *name, long items, size_t size, size_t align, int floor)
{
	run.size = size;
	run.align = align;
	run.floor = floor;
	long per = items / REPS > 0 ? items / REPS : 1;
	double best = 0, worst = 0;
	for (int r = 0; r < REPS; r++) {
		double ns = timed(per);
		best = r == 0 || ns < best ? ns : best;
		worst = ns > worst ? ns : worst;
	}
	printf("result ring %s ns_per_op %.2f worst_ns_per_op %.2f front %s\n", name, best, worst,
	       BENCH_FRONT);
	fflush(stdout);
}

int main(int argc, char **argv)
{
	static const struct { const char *name; size_t size, align; int floor; } cases[] = {
		{ "floor", 0, 0, 1 },     { "12", 12, 0, 0 },         { "75", 75, 0, 0 },
		{ "2048", 2048, 0, 0 },   { "imix", 0, 0, 0 },        { "12-a64", 12, 64, 0 },
		{ "75-a64", 75, 64, 0 },  { "2048-a64", 2048, 64, 0 }, { "imix-a64", 0, 64, 0 },
	};
	long items = argc > 1 ? atol(argv[1]) : 2000000;
	const char *want = argc > 2 ? argv[2] : NULL;
	if (items <= 0) {
		fprintf(stderr, "usage: bench_ring [items > 0] [cases]\n");
		return 2;
	}
	for (size_t c = 0; c < sizeof(cases) / sizeof(cases[0]); c++)
		if (wanted(want, cases[c].name))
			one(cases[c].name, items, cases[c].size, cases[c].align, cases[c].floor);
	return 0;
}
