// SPDX-License-Identifier: GPL-2.0-only
/*
 * Threads that free each other's allocations: each of 4 workers allocates
 * blocks of mixed sizes (small, page runs, now and then a chunk run), writes
 * a pattern, and hands them round a ring of queues; the next worker checks
 * the pattern, reallocs some, and frees them. Prints checksums that do not
 * depend on the allocator or on timing, so the output under LD_PRELOAD must
 * equal the output on glibc byte for byte.
 */
#include <pthread.h>
#include <stdatomic.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

enum { WORKERS = 4, ITEMS = 200000, QUEUE = 1024 };

struct queue {
	_Atomic size_t head;
	char pad1[56];
	_Atomic size_t tail;
	char pad2[56];
	unsigned char *slot[QUEUE];
	size_t size[QUEUE];
};

static struct queue queues[WORKERS];
static uint64_t sums[WORKERS];

static size_t size_for(size_t i)
{
	static const size_t mix[] = { 16, 64, 64, 200, 576, 1500, 3000, 4096, 9000, 70000 };
	if (i % 5000 == 4999)
		return 3u << 20; /* a chunk run now and then */
	return mix[i % 10] + i % 7;
}

static void push(struct queue *q, unsigned char *p, size_t n)
{
	size_t head = atomic_load_explicit(&q->head, memory_order_relaxed);
	while (head - atomic_load_explicit(&q->tail, memory_order_acquire) == QUEUE)
		sched_yield();
	q->slot[head % QUEUE] = p;
	q->size[head % QUEUE] = n;
	atomic_store_explicit(&q->head, head + 1, memory_order_release);
}

static unsigned char *pop(struct queue *q, size_t *n)
{
	size_t tail = atomic_load_explicit(&q->tail, memory_order_relaxed);
	while (atomic_load_explicit(&q->head, memory_order_acquire) == tail)
		sched_yield();
	unsigned char *p = q->slot[tail % QUEUE];
	*n = q->size[tail % QUEUE];
	atomic_store_explicit(&q->tail, tail + 1, memory_order_release);
	return p;
}

static void *worker(void *arg)
{
	size_t me = (size_t)(uintptr_t)arg;
	struct queue *out = &queues[(me + 1) % WORKERS], *in = &queues[me];
	uint64_t sum = 0;
	for (size_t i = 0; i < ITEMS; i++) {
		size_t n = size_for(i);
		unsigned char *p = malloc(n);
		if (!p) {
			fprintf(stderr, "malloc(%zu) failed\n", n);
			exit(1);
		}
		for (size_t k = 0; k < n; k += 61)
			p[k] = (unsigned char)(me * 31 + i + k);
		push(out, p, n);
		/* take one from the previous worker: check, maybe realloc, free */
		size_t m;
		unsigned char *q = pop(in, &m);
		size_t from = (me + WORKERS - 1) % WORKERS;
		for (size_t k = 0; k < m; k += 61) {
			sum += q[k];
			if (q[k] != (unsigned char)(from * 31 + i + k)) {
				fprintf(stderr, "corrupted block from worker %zu\n", from);
				exit(1);
			}
		}
		if (i % 3 == 0) {
			q = realloc(q, m / 2 + 1);
			sum += q[0];
		}
		free(q);
	}
	sums[me] = sum;
	return NULL;
}

int main(void)
{
	pthread_t t[WORKERS];
	for (size_t i = 0; i < WORKERS; i++)
		pthread_create(&t[i], NULL, worker, (void *)(uintptr_t)i);
	for (size_t i = 0; i < WORKERS; i++)
		pthread_join(t[i], NULL);
	for (size_t i = 0; i < WORKERS; i++)
		printf("worker %zu checksum %llu\n", i, (unsigned long long)sums[i]);
	return 0;
}
