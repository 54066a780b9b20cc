// SPDX-License-Identifier: GPL-2.0-only
/*
 * One thread, run to completion. Cases (all by default, or a list):
 *   burst  32 IMIX buffers (64/576/1500 bytes at 7:4:1) allocated, touched
 *          (every cache line written), then freed in the order they were
 *          allocated; repeated. One op = one malloc + one free.
 *   pair   one IMIX buffer allocated, its first and last byte written, freed
 *          at once: the cost of one malloc + free pair on a warm allocator.
 * and the same loops with no allocator, to show what bounds the ratios:
 *   burst-floor, pair-floor  a fixed buffer stands in for malloc, free does
 *          nothing: the loop's own cost, which every allocator pays on top;
 *   pair-bump  the least a bump allocator that reuses a freed newest
 *          fragment can do: an offset in memory, bumped and rolled back, no
 *          checks, no counters, no page references.
 * The stand-ins are the same in both builds (they do not call the allocator).
 * Prints "result burst <case> ns_per_op X".
 * Usage: bench_burst [bursts] [cases]
 */
#include "bench.h"

#include <stdint.h>

/* The calls a loop makes: the allocator under test or a stand-in (inlined: no indirect call). */
struct front {
	void *(*alloc)(size_t n);
	void (*free_local)(void *p, size_t n);
};

#define LOOP_ static inline __attribute__((always_inline))

LOOP_ unsigned long burst_loop(long bursts, struct front f)
{
	unsigned char *buf[32];
	unsigned long sum = 0;
	for (long b = 0; b < bursts; b++) {
		for (int i = 0; i < 32; i++) {
			size_t n = imix[(b + i) % 12];
			unsigned char *p = b_check(f.alloc(n));
			for (size_t k = 0; k < n; k += 64)
				p[k] = (unsigned char)(b + k);
			p[n - 1] = (unsigned char)i;
			buf[i] = p;
		}
		for (int i = 0; i < 32; i++) {
			size_t n = imix[(b + i) % 12];
			sum += buf[i][0] + buf[i][n - 1];
			f.free_local(buf[i], n);
		}
	}
	return sum;
}

LOOP_ unsigned long pair_loop(long pairs, struct front f)
{
	unsigned long sum = 0;
	for (long i = 0; i < pairs; i++) {
		size_t n = imix[i % 12];
		unsigned char *p = b_check(f.alloc(n));
		p[0] = (unsigned char)i;
		p[n - 1] = 1;
		__asm__ volatile("" : : "r"(p) : "memory"); /* keep the pair: no elision */
		sum += p[0] + p[n - 1];
		f.free_local(p, n);
	}
	return sum;
}

/* floor: 32 fixed slots handed out in turn (a burst holds 32 at once), free does nothing */
static unsigned char floor_slots[32][1536] __attribute__((aligned(64)));
static unsigned floor_next;

static inline void *floor_alloc(size_t n)
{
	(void)n;
	unsigned char *p = floor_slots[floor_next++ & 31];
	__asm__ volatile("" : "+r"(p)); /* an address the compiler cannot see through */
	return p;
}

static inline void floor_free(void *p, size_t n)
{
	(void)p;
	(void)n;
}

/* bump: one 32 KiB page, an offset in memory; freeing the newest fragment rolls it back */
static unsigned char bump_page[32768] __attribute__((aligned(4096)));
static struct {
	uintptr_t va;
	uint32_t offset, size;
} bump_state __attribute__((aligned(64)));

static inline void *bump_alloc(size_t n)
{
	uint32_t offset = bump_state.offset;
	if (n > bump_state.size - offset)
		offset = 0; /* the pair frees everything: start the page again */
	bump_state.offset = offset + (uint32_t)n;
	return (void *)(bump_state.va + offset);
}

static inline void bump_free(void *p, size_t n)
{
	uintptr_t at = (uintptr_t)p - bump_state.va;
	if (at + n == bump_state.offset)
		bump_state.offset = (uint32_t)at;
}

static unsigned long burst(long bursts)
{
	return burst_loop(bursts, (struct front){ b_alloc, b_free_local });
}

static unsigned long burst_floor(long bursts)
{
	return burst_loop(bursts, (struct front){ floor_alloc, floor_free });
}

static unsigned long pair(long pairs)
{
	return pair_loop(pairs, (struct front){ b_alloc, b_free_local });
}

static unsigned long pair_floor(long pairs)
{
	return pair_loop(pairs, (struct front){ floor_alloc, floor_free });
}

static unsigned long pair_bump(long pairs)
{
	return pair_loop(pairs, (struct front){ bump_alloc, bump_free });
}

/* Warm up, then time one case and print its line. */
static void run_case(const char *name, unsigned long (*loop)(long), long count, long ops)
{
	unsigned long sum = loop(count / 10 + 1);
	double start = now();
	sum += loop(count);
	double elapsed = now() - start;
	printf("result burst %s ns_per_op %.2f checksum %lu front %s\n", name,
	       elapsed * 1e9 / (double)ops, sum, BENCH_FRONT);
}

int main(int argc, char **argv)
{
	long bursts = argc > 1 ? atol(argv[1]) : 300000;
	const char *want = argc > 2 ? argv[2] : NULL;
	if (bursts <= 0) {
		fprintf(stderr, "usage: bench_burst [bursts > 0] [cases]\n");
		return 2;
	}
	bump_state.va = (uintptr_t)bump_page;
	bump_state.size = sizeof(bump_page);
	long pairs = bursts * 32;
	if (wanted(want, "burst"))
		run_case("burst", burst, bursts, bursts * 32);
	if (wanted(want, "pair"))
		run_case("pair", pair, pairs, pairs);
	if (wanted(want, "burst-floor"))
		run_case("burst-floor", burst_floor, bursts, bursts * 32);
	if (wanted(want, "pair-floor"))
		run_case("pair-floor", pair_floor, pairs, pairs);
	if (wanted(want, "pair-bump"))
		run_case("pair-bump", pair_bump, pairs, pairs);
	return 0;
}
