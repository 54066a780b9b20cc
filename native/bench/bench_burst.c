// SPDX-License-Identifier: GPL-2.0-only
/*
 * Burst loop: 32 buffers of 64, 576 and 1500 bytes (round robin) allocated,
 * touched (every cache line written), then freed in the order they were
 * allocated; repeated. Plain malloc/free: run it under LD_PRELOAD to measure
 * an allocator. Prints "burst ns_per_op X" (one op = one malloc + one free).
 * Usage: bench_burst [bursts]
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

static double now(void)
{
	struct timespec ts;
	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (double)ts.tv_sec + (double)ts.tv_nsec * 1e-9;
}

int main(int argc, char **argv)
{
	static const size_t sizes[3] = { 64, 576, 1500 };
	long bursts = argc > 1 ? atol(argv[1]) : 300000;
	unsigned char *buf[32];
	unsigned long sum = 0;
	for (int warm = 0; warm < 2; warm++) {
		double start = now();
		for (long b = 0; b < bursts; b++) {
			for (int i = 0; i < 32; i++) {
				size_t n = sizes[i % 3];
				unsigned char *p = malloc(n);
				for (size_t k = 0; k < n; k += 64)
					p[k] = (unsigned char)(b + k);
				p[n - 1] = (unsigned char)i;
				buf[i] = p;
			}
			for (int i = 0; i < 32; i++) {
				sum += buf[i][0] + buf[i][sizes[i % 3] - 1];
				free(buf[i]);
			}
		}
		double elapsed = now() - start;
		if (warm)
			printf("burst ns_per_op %.2f (checksum %lu)\n", elapsed * 1e9 / ((double)bursts * 32), sum);
	}
	return 0;
}
