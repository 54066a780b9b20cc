// SPDX-License-Identifier: GPL-2.0-only
/*
 * Churn: a window of live buffers with random lifetimes. Each step replaces
 * the buffer in a random slot of the window (free the old one, allocate a new
 * one: 3 in 4 IMIX sizes, 1 in 4 uniform in 1..4000 bytes), so lifetimes are
 * geometric and the allocator's pages fill with holes. One op = one free + one
 * malloc. Sampled 200 times along the run:
 *   live     bytes requested and not yet freed (peak_live)
 *   rss      VmRSS + HugetlbPages, minus the same before the first step (peak_rss)
 *   pinned   32 KiB-aligned blocks holding at least one live buffer, x 32 KiB
 *            (peak_pinned): what page_frag's model says its frag pages pin;
 *            the same with 4 KiB blocks (peak_pinned4k, for PYFRAG_FRAG_ORDER=0)
 * Prints "result churn churn ns_per_op X peak_rss B peak_live B peak_pinned B
 * peak_pinned4k B rss_per_live R rss_per_pinned R rss_per_pinned4k R".
 * Usage: bench_churn [steps] [window]
 */
#include "bench.h"

#include <stdint.h>

static uint64_t rng = 0x9e3779b97f4a7c15ull;

static inline uint64_t next(void)
{
	rng ^= rng << 13;
	rng ^= rng >> 7;
	rng ^= rng << 17;
	return rng;
}

static int cmp(const void *a, const void *b)
{
	uintptr_t x = *(const uintptr_t *)a, y = *(const uintptr_t *)b;
	return x < y ? -1 : x > y;
}

/* Distinct (1 << shift)-byte blocks holding a live buffer, in bytes. */
static long long pinned(unsigned char **slot, uintptr_t *scratch, long window, unsigned shift)
{
	long n = 0;
	for (long i = 0; i < window; i++)
		if (slot[i])
			scratch[n++] = (uintptr_t)slot[i] >> shift;
	qsort(scratch, (size_t)n, sizeof(*scratch), cmp);
	long long blocks = 0;
	for (long i = 0; i < n; i++)
		blocks += i == 0 || scratch[i] != scratch[i - 1];
	return blocks << shift;
}

int main(int argc, char **argv)
{
	long steps = argc > 1 ? atol(argv[1]) : 4000000;
	long window = argc > 2 ? atol(argv[2]) : 32768;
	if (steps <= 0 || window <= 0) {
		fprintf(stderr, "usage: bench_churn [steps > 0] [window > 0]\n");
		return 2;
	}
	/* the bookkeeping is allocated and touched before the baseline: it is the program's, not the allocator's */
	unsigned char **slot = calloc((size_t)window, sizeof(*slot));
	size_t *len = calloc((size_t)window, sizeof(*len));
	uintptr_t *scratch = calloc((size_t)window, sizeof(*scratch));
	if (!slot || !len || !scratch)
		return 1;
	memset(slot, 0, (size_t)window * sizeof(*slot));
	memset(len, 0, (size_t)window * sizeof(*len));
	memset(scratch, 0, (size_t)window * sizeof(*scratch));
	long long base = rss_bytes();
	long long live = 0, peak_live = 0, peak_rss = 0, peak_pinned = 0, peak_pinned4k = 0;
	long every = steps / 200 > 0 ? steps / 200 : 1;
	double busy = 0, start = now();
	for (long s = 0; s < steps; s++) {
		long i = (long)(next() % (uint64_t)window);
		if (slot[i]) {
			b_free(slot[i]);
			live -= (long long)len[i];
		}
		uint64_t r = next();
		size_t n = (r & 3) ? imix[(r >> 2) % 12] : 1 + (size_t)((r >> 8) % 4000);
		unsigned char *p = b_check(b_alloc(n));
		p[0] = (unsigned char)s;
		p[n - 1] = 1;
		slot[i] = p;
		len[i] = n;
		live += (long long)n;
		if (live > peak_live)
			peak_live = live;
		if ((s + 1) % every == 0) {
			busy += now() - start;
			long long rss = rss_bytes() - base;
			long long pin = pinned(slot, scratch, window, 15);
			long long pin4k = pinned(slot, scratch, window, 12);
			if (rss > peak_rss)
				peak_rss = rss;
			if (pin > peak_pinned)
				peak_pinned = pin;
			if (pin4k > peak_pinned4k)
				peak_pinned4k = pin4k;
			start = now();
		}
	}
	busy += now() - start;
	printf("result churn churn ns_per_op %.2f peak_rss %lld peak_live %lld peak_pinned %lld "
	       "peak_pinned4k %lld rss_per_live %.3f rss_per_pinned %.3f rss_per_pinned4k %.3f front %s\n",
	       busy * 1e9 / (double)steps, peak_rss, peak_live, peak_pinned, peak_pinned4k,
	       (double)peak_rss / (double)peak_live, (double)peak_rss / (double)peak_pinned,
	       (double)peak_rss / (double)peak_pinned4k, BENCH_FRONT);
	for (long i = 0; i < window; i++)
		if (slot[i])
			b_free(slot[i]);
	free(slot);
	free(len);
	free(scratch);
	return 0;
}
