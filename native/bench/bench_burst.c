// SPDX-License-Identifier: GPL-2.0-only
/*
 * One thread, run to completion. Cases (all by default, or a list):
 *   burst  32 IMIX buffers (64/576/1500 bytes at 7:4:1) allocated, touched
 *          (every cache line written), then freed in the order they were
 *          allocated; repeated. One op = one malloc + one free.
 *   pair   one IMIX buffer allocated, its first and last byte written, freed
 *          at once: the cost of one malloc + free pair on a warm allocator.
 * Prints "result burst <case> ns_per_op X".
 * Usage: bench_burst [bursts] [cases]
 */
#include "bench.h"

static unsigned long burst(long bursts)
{
	unsigned char *buf[32];
	unsigned long sum = 0;
	for (long b = 0; b < bursts; b++) {
		for (int i = 0; i < 32; i++) {
			size_t n = imix[(b + i) % 12];
			unsigned char *p = b_check(b_alloc(n));
			for (size_t k = 0; k < n; k += 64)
				p[k] = (unsigned char)(b + k);
			p[n - 1] = (unsigned char)i;
			buf[i] = p;
		}
		for (int i = 0; i < 32; i++) {
			size_t n = imix[(b + i) % 12];
			sum += buf[i][0] + buf[i][n - 1];
			b_free_local(buf[i], n);
		}
	}
	return sum;
}

static unsigned long pair(long pairs)
{
	unsigned long sum = 0;
	for (long i = 0; i < pairs; i++) {
		size_t n = imix[i % 12];
		unsigned char *p = b_check(b_alloc(n));
		p[0] = (unsigned char)i;
		p[n - 1] = 1;
		__asm__ volatile("" : : "r"(p) : "memory"); /* keep the pair: no elision */
		sum += p[0] + p[n - 1];
		b_free_local(p, n);
	}
	return sum;
}

int main(int argc, char **argv)
{
	long bursts = argc > 1 ? atol(argv[1]) : 300000;
	const char *want = argc > 2 ? argv[2] : NULL;
	if (bursts <= 0) {
		fprintf(stderr, "usage: bench_burst [bursts > 0] [cases]\n");
		return 2;
	}
	if (wanted(want, "burst")) {
		unsigned long sum = burst(bursts / 10 + 1); /* warm up */
		double start = now();
		sum += burst(bursts);
		double elapsed = now() - start;
		printf("result burst burst ns_per_op %.2f checksum %lu front %s\n",
		       elapsed * 1e9 / ((double)bursts * 32), sum, BENCH_FRONT);
	}
	if (wanted(want, "pair")) {
		long pairs = bursts * 32;
		unsigned long sum = pair(pairs / 10 + 1);
		double start = now();
		sum += pair(pairs);
		double elapsed = now() - start;
		printf("result burst pair ns_per_op %.2f checksum %lu front %s\n",
		       elapsed * 1e9 / (double)pairs, sum, BENCH_FRONT);
	}
	return 0;
}
