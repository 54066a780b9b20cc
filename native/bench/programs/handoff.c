// SPDX-License-Identifier: GPL-2.0-only
/*
 * handoff: threads that hand their blocks to another thread and exit, a
 * program of `pyfrag bench --workload programs`.
 *
 * WAVES times, PRODUCERS short-lived threads each allocate BLOCKS blocks of
 * 16..1040 bytes, fill each with a pattern of its number, hand them through a
 * mutex-protected queue (at most 4096 waiting) to one long-lived consumer thread, and exit. The
 * consumer verifies every block, keeps one in eight alive to the end (state
 * that outlives the thread that made it) and frees the others at once.
 * Prints "handoff blocks <total> kept <kept> bad <wrong blocks>".
 * Usage: handoff [WAVES] [PRODUCERS] [BLOCKS]; exit 1 when out of memory.
 */
#include <pthread.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

struct block {
	struct block *next;
	uint32_t number;
	uint32_t size;
	unsigned char bytes[];
};

static pthread_mutex_t lock = PTHREAD_MUTEX_INITIALIZER;
static pthread_cond_t ready = PTHREAD_COND_INITIALIZER;
static pthread_cond_t room = PTHREAD_COND_INITIALIZER;
static struct block *queue_head;
static long queue_length;
#define QUEUE_LIMIT 4096 /* producers wait beyond it: the consumer keeps up */
static long producers_left;
static long blocks_per_producer;

static void fail(const char *what)
{
	perror(what);
	exit(1);
}

static void *produce(void *arg)
{
	uint64_t seed = (uintptr_t)arg * 0x9e3779b97f4a7c15ull + 1;

	for (long i = 0; i < blocks_per_producer; i++) {
		seed ^= seed << 13;
		seed ^= seed >> 7;
		seed ^= seed << 17;
		uint32_t size = 16 + (uint32_t)(seed % 1025);
		struct block *b = malloc(sizeof(*b) + size);

		if (!b)
			fail("handoff: malloc");
		b->number = (uint32_t)((uintptr_t)arg * blocks_per_producer + i);
		b->size = size;
		memset(b->bytes, (int)(b->number & 0xff), size);
		pthread_mutex_lock(&lock);
		while (queue_length >= QUEUE_LIMIT)
			pthread_cond_wait(&room, &lock);
		b->next = queue_head;
		queue_head = b;
		queue_length++;
		pthread_cond_signal(&ready);
		pthread_mutex_unlock(&lock);
	}
	pthread_mutex_lock(&lock);
	producers_left--;
	pthread_cond_signal(&ready);
	pthread_mutex_unlock(&lock);
	return NULL;
}

static int block_is_wrong(const struct block *b)
{
	for (uint32_t i = 0; i < b->size; i++)
		if (b->bytes[i] != (unsigned char)(b->number & 0xff))
			return 1;
	return 0;
}

struct tally {
	long total, kept, bad;
	struct block *keep;
};

static void *consume(void *arg)
{
	struct tally *t = arg;

	pthread_mutex_lock(&lock);
	for (;;) {
		while (!queue_head && producers_left > 0)
			pthread_cond_wait(&ready, &lock);
		struct block *batch = queue_head;

		queue_head = NULL;
		queue_length = 0;
		pthread_cond_broadcast(&room);
		int done = !batch && producers_left == 0;

		pthread_mutex_unlock(&lock);
		if (done)
			return NULL;
		while (batch) {
			struct block *b = batch;

			batch = b->next;
			t->total++;
			t->bad += block_is_wrong(b);
			if (b->number % 8 == 0) {
				b->next = t->keep;
				t->keep = b;
				t->kept++;
			} else {
				free(b);
			}
		}
		pthread_mutex_lock(&lock);
	}
}

int main(int argc, char **argv)
{
	long waves = argc > 1 ? atol(argv[1]) : 40;
	long producers = argc > 2 ? atol(argv[2]) : 4;

	blocks_per_producer = argc > 3 ? atol(argv[3]) : 5000;
	if (waves < 1 || producers < 1 || blocks_per_producer < 1) {
		fprintf(stderr, "usage: handoff [WAVES] [PRODUCERS] [BLOCKS] (each >= 1)\n");
		return 2;
	}
	struct tally t = {0};
	pthread_t consumer, *threads = calloc((size_t)producers, sizeof(*threads));

	if (!threads)
		fail("handoff: calloc");
	producers_left = waves * producers;
	if (pthread_create(&consumer, NULL, consume, &t))
		fail("handoff: pthread_create");
	for (long w = 0; w < waves; w++) {
		for (long p = 0; p < producers; p++)
			if (pthread_create(&threads[p], NULL, produce, (void *)(uintptr_t)(w * producers + p)))
				fail("handoff: pthread_create");
		for (long p = 0; p < producers; p++)
			pthread_join(threads[p], NULL);
	}
	pthread_join(consumer, NULL);
	while (t.keep) {
		struct block *b = t.keep;

		t.keep = b->next;
		t.bad += block_is_wrong(b);
		free(b);
	}
	free(threads);
	printf("handoff blocks %ld kept %ld bad %ld\n", t.total, t.kept, t.bad);
	return 0;
}
