/* SPDX-License-Identifier: GPL-2.0-only */
/*
 * Rings of a shared arena (pyfrag_shared.h): every refusal, full and empty,
 * partial puts, timeouts, and a producer thread feeding a consumer thread
 * (in order, nothing lost; the TSan build checks the memory ordering).
 *
 * Run with arguments, the program is a C producer for another process:
 *   test_ring produce ARENA RING COUNT   attach both by name, put COUNT
 *                                        fragments of 64 bytes, fragment i
 *                                        holding i as a uint32_t, then exit.
 */
#include "check.h"
#include "pyfrag_shared.h"

#include <errno.h>
#include <pthread.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#define ARENA_BYTES (4u << 20)
#define THREAD_ITEMS 20000u

static char name[64];

static pf_shared_t *new_arena(const char *what)
{
	snprintf(name, sizeof(name), "cring-%s-%d", what, (int)getpid());
	pf_shared_t *a = pf_shared_create(name, ARENA_BYTES, 0600, PF_SHARED_BACKING_4K, NULL);
	CHECK(a != NULL);
	return a;
}

static void done_arena(pf_shared_t *a)
{
	CHECK_EQ(pf_shared_detach(a), 0);
	CHECK_EQ(pf_shared_unlink(name, NULL), 0);
}

static void test_refusals(void)
{
	pf_shared_t *a = new_arena("refuse");
	errno = 0;
	CHECK(pf_shared_ring_create(a, "r", 3) == NULL && errno == EINVAL);
	CHECK(pf_shared_ring_create(a, "r", 4096) == NULL && errno == EINVAL);
	CHECK(pf_shared_ring_create(a, "", 4) == NULL && errno == EINVAL);
	CHECK(pf_shared_ring_create(NULL, "r", 4) == NULL && errno == EINVAL);
	CHECK(pf_shared_ring_attach(a, "nothing") == NULL && errno == ENOENT);
	pf_shared_ring_t *r = pf_shared_ring_create(a, "r", 4);
	CHECK(r != NULL);
	CHECK(pf_shared_ring_create(a, "r", 4) == NULL && errno == EEXIST);
	CHECK(pf_shared_ring_attach(a, "r") == r);
	CHECK_EQ(pf_shared_ring_capacity(a, r), 4);
	for (unsigned i = 1; i < PF_SHARED_RINGS_MAX; i++) {
		char other[16];
		snprintf(other, sizeof(other), "r%u", i % 100u);
		CHECK(pf_shared_ring_create(a, other, 2) != NULL);
	}
	CHECK(pf_shared_ring_create(a, "one-too-many", 2) == NULL && errno == ENOSPC);
	/* not a ring, not a fragment of this arena, bad lengths */
	int local_byte = 0;
	CHECK(pf_shared_ring_count(a, (pf_shared_ring_t *)&local_byte) == -1 && errno == EINVAL);
	void *frag = pf_shared_alloc(a, 64);
	void *outside = &local_byte;
	uint32_t len = 64, zero = 0, huge = 40000;
	CHECK(pf_shared_ring_put(a, r, &outside, &len, 1) == -1 && errno == EINVAL);
	CHECK(pf_shared_ring_put(a, r, &frag, &zero, 1) == -1 && errno == EINVAL);
	CHECK(pf_shared_ring_put(a, r, &frag, &huge, 1) == -1 && errno == EINVAL);
	CHECK_EQ(pf_shared_ring_count(a, r), 0);
	CHECK_EQ(pf_shared_free(a, frag), 0);
	done_arena(a);
}

static void test_full_empty_and_timeouts(void)
{
	pf_shared_t *a = new_arena("full");
	pf_shared_ring_t *r = pf_shared_ring_create(a, "r", 4);
	void *frags[6], *got[8];
	uint32_t lens[6], got_lens[8];
	for (int i = 0; i < 6; i++) {
		frags[i] = pf_shared_alloc(a, 100 + (size_t)i);
		lens[i] = 100 + (uint32_t)i;
	}
	CHECK_EQ(pf_shared_ring_get(a, r, got, got_lens, 8), 0); /* empty */
	CHECK(pf_shared_ring_wait(a, r, 0, 2000000) == -1 && errno == ETIMEDOUT);
	CHECK(pf_shared_ring_wait(a, r, 0, 5000) == -1 && errno == ETIMEDOUT); /* within the spin */
	CHECK(pf_shared_ring_wait(a, r, 0, 0) == -1 && errno == ETIMEDOUT);
	CHECK_EQ(pf_shared_ring_wait(a, r, 1, 0), 0); /* room */
	CHECK_EQ(pf_shared_ring_put(a, r, frags, lens, 6), 4); /* as many as fit */
	CHECK_EQ(pf_shared_ring_count(a, r), 4);
	CHECK_EQ(pf_shared_ring_put(a, r, frags + 4, lens + 4, 2), 0); /* full */
	CHECK(pf_shared_ring_wait(a, r, 1, 2000000) == -1 && errno == ETIMEDOUT);
	CHECK_EQ(pf_shared_ring_get(a, r, got, got_lens, 3), 3);
	CHECK_EQ(pf_shared_ring_put(a, r, frags + 4, lens + 4, 2), 2); /* wraps around */
	CHECK_EQ(pf_shared_ring_get(a, r, got + 3, got_lens + 3, 8), 3);
	for (int i = 0; i < 6; i++) {
		CHECK(got[i] == frags[i]);
		CHECK_EQ(got_lens[i], lens[i]);
		CHECK_EQ(pf_shared_free(a, got[i]), 0);
	}
	pf_shared_stats_t s;
	CHECK_EQ(pf_shared_stats(a, &s, sizeof(s)), 0);
	CHECK_EQ(s.allocs - s.frees, 1); /* the ring's own block */
	done_arena(a);
}

struct pair {
	pf_shared_t *arena;
	pf_shared_ring_t *ring;
};

static void *producer(void *arg)
{
	struct pair *p = arg;
	for (uint32_t i = 0; i < THREAD_ITEMS;) {
		uint32_t *frag = pf_shared_alloc(p->arena, 32);
		if (!frag)
			abort();
		*frag = i;
		uint32_t len = 32;
		void *out = frag;
		while (pf_shared_ring_put(p->arena, p->ring, &out, &len, 1) == 0)
			if (pf_shared_ring_wait(p->arena, p->ring, 1, -1) != 0)
				abort();
		i++;
	}
	return NULL;
}

static void test_threads_in_order(void)
{
	pf_shared_t *a = new_arena("threads");
	struct pair p = { a, pf_shared_ring_create(a, "r", 64) };
	pthread_t thread;
	CHECK_EQ(pthread_create(&thread, NULL, producer, &p), 0);
	uint32_t next = 0, bad = 0;
	while (next < THREAD_ITEMS) {
		void *got[16];
		uint32_t lens[16];
		int n = pf_shared_ring_get(a, p.ring, got, lens, 16);
		if (n == 0) {
			CHECK_EQ(pf_shared_ring_wait(a, p.ring, 0, -1), 0);
			continue;
		}
		for (int i = 0; i < n; i++) {
			bad += *(uint32_t *)got[i] != next++ || lens[i] != 32;
			pf_shared_free(a, got[i]);
		}
	}
	CHECK_EQ(pthread_join(thread, NULL), 0);
	CHECK_EQ(bad, 0);
	CHECK_EQ(pf_shared_ring_count(a, p.ring), 0);
	pf_shared_thread_flush(a);
	done_arena(a);
}

static int produce(const char *arena_name, const char *ring_name, long count)
{
	pf_shared_t *a = pf_shared_attach(arena_name, NULL);
	pf_shared_ring_t *r = a ? pf_shared_ring_attach(a, ring_name) : NULL;
	if (!r) {
		fprintf(stderr, "produce: %s\n", pf_last_error_message());
		return 1;
	}
	for (long i = 0; i < count; i++) {
		uint32_t *frag = pf_shared_alloc(a, 64);
		if (!frag)
			return 1;
		memset(frag, 0, 64);
		*frag = (uint32_t)i;
		void *out = frag;
		uint32_t len = 64;
		while (pf_shared_ring_put(a, r, &out, &len, 1) == 0)
			if (pf_shared_ring_wait(a, r, 1, 10 * 1000000000ll) != 0) {
				fprintf(stderr, "produce: %s\n", pf_last_error_message());
				return 1;
			}
	}
	printf("produced %ld\n", count);
	return pf_shared_detach(a) == 0 ? 0 : 1;
}

int main(int argc, char **argv)
{
	if (argc == 5 && strcmp(argv[1], "produce") == 0)
		return produce(argv[2], argv[3], atol(argv[4]));
	RUN(test_refusals);
	RUN(test_full_empty_and_timeouts);
	RUN(test_threads_in_order);
	return check_summary();
}
