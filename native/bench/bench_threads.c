// SPDX-License-Identifier: GPL-2.0-only
/*
 * Scaling: N threads, each running the burst loop of bench_burst (32 IMIX
 * buffers allocated, touched, freed) on its own, nothing shared. Cases t1, t2,
 * t4 (all by default, or a list). Every thread does the same number of ops;
 * ns_per_op is wall time over one thread's ops, so perfect scaling keeps it
 * flat up to the number of cores and a shared lock makes it grow.
 * Prints "result threads t<N> ns_per_op X threads N".
 * Usage: bench_threads [bursts per thread] [cases]
 */
#include "bench.h"

#include <pthread.h>

static long bursts;

static void *worker(void *arg)
{
	unsigned long *sum = arg;
	unsigned char *buf[32];
	for (long b = 0; b < bursts; b++) {
		for (int i = 0; i < 32; i++) {
			size_t n = imix[(b + i) % 12];
			unsigned char *p = b_check(b_alloc(n));
			for (size_t k = 0; k < n; k += 64)
				p[k] = (unsigned char)(b + k);
			buf[i] = p;
		}
		for (int i = 0; i < 32; i++) {
			*sum += buf[i][0];
			b_free_local(buf[i], imix[(b + i) % 12]);
		}
	}
	return NULL;
}

int main(int argc, char **argv)
{
	bursts = argc > 1 ? atol(argv[1]) : 100000;
	const char *want = argc > 2 ? argv[2] : NULL;
	if (bursts <= 0) {
		fprintf(stderr, "usage: bench_threads [bursts > 0] [cases]\n");
		return 2;
	}
	static const int counts[] = { 1, 2, 4 };
	for (size_t c = 0; c < sizeof(counts) / sizeof(counts[0]); c++) {
		int n = counts[c];
		char name[8];
		snprintf(name, sizeof(name), "t%d", n);
		if (!wanted(want, name))
			continue;
		pthread_t tid[4];
		unsigned long sum[4][8] = { { 0 } }; /* a cache line each */
		double start = now();
		for (int i = 0; i < n; i++)
			pthread_create(&tid[i], NULL, worker, sum[i]);
		for (int i = 0; i < n; i++)
			pthread_join(tid[i], NULL);
		double elapsed = now() - start;
		unsigned long total = 0;
		for (int i = 0; i < n; i++)
			total += sum[i][0];
		printf("result threads %s ns_per_op %.2f threads %d checksum %lu front %s\n", name,
		       elapsed * 1e9 / ((double)bursts * 32), n, total, BENCH_FRONT);
		fflush(stdout);
	}
	return 0;
}
