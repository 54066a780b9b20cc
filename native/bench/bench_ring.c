// SPDX-License-Identifier: GPL-2.0-only
/*
 * Producer/consumer ring: one thread mallocs buffers (64/576/1500 bytes,
 * IMIX-like mix), writes a header and pushes them through a single-producer
 * single-consumer ring of 512 slots; another thread pops, reads and frees
 * them. Every block is freed by a thread that did not allocate it. Prints
 * "ring ns_per_op X" (one op = one block through the ring).
 * Usage: bench_ring [items]
 */
#include <pthread.h>
#include <sched.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

enum { RING = 512 };
static const size_t imix[12] = { 64, 64, 64, 64, 64, 64, 64, 576, 576, 576, 576, 1500 };
static long items;

static struct {
	_Atomic size_t head;
	char pad1[56];
	_Atomic size_t tail;
	char pad2[56];
	unsigned char *slot[RING];
} ring;

static double now(void)
{
	struct timespec ts;
	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (double)ts.tv_sec + (double)ts.tv_nsec * 1e-9;
}

static void *producer(void *unused)
{
	(void)unused;
	for (long i = 0; i < items; i++) {
		size_t n = imix[i % 12];
		unsigned char *p = malloc(n);
		memset(p, (int)i, 32);
		p[n - 1] = 1;
		size_t head = atomic_load_explicit(&ring.head, memory_order_relaxed);
		while (head - atomic_load_explicit(&ring.tail, memory_order_acquire) == RING)
			sched_yield();
		ring.slot[head % RING] = p;
		atomic_store_explicit(&ring.head, head + 1, memory_order_release);
	}
	return NULL;
}

static void *consumer(void *arg)
{
	unsigned long *sum = arg;
	for (long i = 0; i < items; i++) {
		size_t tail = atomic_load_explicit(&ring.tail, memory_order_relaxed);
		while (atomic_load_explicit(&ring.head, memory_order_acquire) == tail)
			sched_yield();
		unsigned char *p = ring.slot[tail % RING];
		atomic_store_explicit(&ring.tail, tail + 1, memory_order_release);
		*sum += p[0] + p[imix[i % 12] - 1];
		free(p);
	}
	return NULL;
}

int main(int argc, char **argv)
{
	items = argc > 1 ? atol(argv[1]) : 3000000;
	unsigned long sum = 0;
	double start = now();
	pthread_t prod, cons;
	pthread_create(&cons, NULL, consumer, &sum);
	pthread_create(&prod, NULL, producer, NULL);
	pthread_join(prod, NULL);
	pthread_join(cons, NULL);
	double elapsed = now() - start;
	printf("ring ns_per_op %.2f (checksum %lu)\n", elapsed * 1e9 / (double)items, sum);
	return 0;
}
