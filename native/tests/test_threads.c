// SPDX-License-Identifier: GPL-2.0-only
/*
 * Fragments freed from other threads: many threads freeing fragments of the
 * same pages at once, the kernel's page_frag_test pattern (a producer thread
 * allocating, an SPSC ring, a consumer thread freeing), thread churn, and
 * calls from a key destructor after pyfrag's own teardown. After each, every
 * page is back. Built with mode=tsan too.
 */
#include "check.h"
#include "probe.h"
#include "pyfrag.h"

#include <errno.h>
#include <pthread.h>
#include <stdatomic.h>
#include <string.h>

static const size_t imix[12] = { 64, 64, 64, 64, 64, 64, 64, 576, 576, 576, 576, 1500 };

/* ---- many threads freeing one cache's fragments at once ---------------------- */

enum { FRAGS = 200000, FREERS = 4 };
static char *frags[FRAGS];

static void *free_every_nth(void *arg)
{
	size_t first = (size_t)(uintptr_t)arg;
	for (size_t i = first; i < FRAGS; i += FREERS)
		if (pf_free(frags[i]) != 0)
			return (void *)1;
	return NULL;
}

static void test_many_threads_free(void)
{
	pf_stats_t before = stats();
	pf_cache_t *c = pf_cache_create();
	for (size_t i = 0; i < FRAGS; i++) {
		frags[i] = pf_cache_alloc(c, imix[i % 12]);
		CHECK(frags[i] != NULL);
		frags[i][0] = (char)i;
	}
	pf_cache_destroy(c); /* the fragments keep their pages */
	pthread_t t[FREERS];
	for (size_t i = 0; i < FREERS; i++)
		pthread_create(&t[i], NULL, free_every_nth, (void *)(uintptr_t)i);
	for (size_t i = 0; i < FREERS; i++) {
		void *failed;
		pthread_join(t[i], &failed);
		CHECK(failed == NULL);
	}
	pf_trim();
	pf_stats_t after = stats();
	CHECK_EQ(after.allocs - before.allocs, FRAGS);
	CHECK_EQ(after.frees - before.frees, FRAGS);
	CHECK_EQ(after.pages_in_use, 0); /* the freeing threads' page lists went back at exit */
	CHECK_EQ(after.threads, before.threads);
}

/* ---- producer / SPSC ring / consumer ------------------------------------------- */

enum { RING = 512, ITEMS = 1000000 };
static struct {
	_Atomic size_t head; /* written by the producer */
	char pad[64];
	_Atomic size_t tail; /* written by the consumer */
	char *slot[RING];
} ring;

/*
 * NULL: the producer's default cache and pf_free. Else the producer allocates
 * from this cache and the consumer, not its owner, frees through
 * pf_cache_free and pf_cache_free_inline by turns (the owner test must come
 * before any read of what the owner writes: ThreadSanitizer checks it).
 */
static pf_cache_t *ring_cache;
static size_t ring_items = ITEMS;

static void *producer(void *unused)
{
	(void)unused;
	for (size_t i = 0; i < ring_items; i++) {
		char *p = ring_cache ? pf_cache_alloc(ring_cache, imix[i % 12]) : pf_alloc(imix[i % 12]);
		if (!p)
			return (void *)1;
		memset(p, (int)i, 8);
		size_t head = atomic_load_explicit(&ring.head, memory_order_relaxed);
		while (head - atomic_load_explicit(&ring.tail, memory_order_acquire) == RING)
			sched_yield();
		ring.slot[head % RING] = p;
		atomic_store_explicit(&ring.head, head + 1, memory_order_release);
	}
	return NULL; /* thread exit drains the default cache */
}

static void *consumer(void *unused)
{
	(void)unused;
	for (size_t i = 0; i < ring_items; i++) {
		size_t tail = atomic_load_explicit(&ring.tail, memory_order_relaxed);
		while (atomic_load_explicit(&ring.head, memory_order_acquire) == tail)
			sched_yield();
		char *p = ring.slot[tail % RING];
		if (p[0] != (char)i)
			return (void *)1;
		int freed = !ring_cache ? pf_free(p)
			    : i % 2	? pf_cache_free(ring_cache, p, imix[i % 12])
					: pf_cache_free_inline(ring_cache, p, imix[i % 12]);
		if (freed != 0)
			return (void *)1;
		atomic_store_explicit(&ring.tail, tail + 1, memory_order_release);
	}
	return NULL;
}

static void run_ring(void)
{
	atomic_store(&ring.head, 0);
	atomic_store(&ring.tail, 0);
	pthread_t prod, cons;
	pthread_create(&cons, NULL, consumer, NULL);
	pthread_create(&prod, NULL, producer, NULL);
	void *prod_failed, *cons_failed;
	pthread_join(prod, &prod_failed);
	pthread_join(cons, &cons_failed);
	CHECK(prod_failed == NULL);
	CHECK(cons_failed == NULL);
}

static void test_producer_consumer_ring(void)
{
	pf_stats_t before = stats();
	run_ring();
	pf_trim();
	pf_stats_t after = stats();
	CHECK_EQ(after.allocs - before.allocs, ITEMS);
	CHECK_EQ(after.frees - before.frees, ITEMS);
	/* freed pages are reused: ~11k frag pages' worth of fragments ran through a couple of chunks */
	CHECK(after.refills - before.refills > 1000);
	CHECK(after.chunk_commits - before.chunk_commits <= 2);
	CHECK_EQ(after.pages_in_use, 0);
}

/* The same ring through one explicit cache: its owner allocates, another thread frees through it. */
static void test_non_owner_cache_frees(void)
{
	pf_stats_t before = stats();
	ring_items = 200000;
	ring_cache = pf_cache_create(); /* owned by this thread, the producer */
	atomic_store(&ring.head, 0);
	atomic_store(&ring.tail, 0);
	pthread_t cons;
	pthread_create(&cons, NULL, consumer, NULL);
	void *cons_failed;
	CHECK(producer(NULL) == NULL);
	pthread_join(cons, &cons_failed);
	CHECK(cons_failed == NULL);
	pf_cache_destroy(ring_cache);
	ring_cache = NULL;
	ring_items = ITEMS;
	pf_thread_flush();
	pf_stats_t after = stats();
	CHECK_EQ(after.allocs - before.allocs, 200000);
	CHECK_EQ(after.frees - before.frees, 200000);
	CHECK_EQ(after.pages_in_use, 0);
}

/* ---- thread churn ------------------------------------------------------------------- */

static void *short_life(void *unused)
{
	(void)unused;
	char *p[64];
	for (int i = 0; i < 64; i++)
		p[i] = pf_alloc(imix[i % 12]);
	for (int i = 0; i < 64; i++)
		pf_free(p[i]);
	return NULL;
}

static void test_thread_churn(void)
{
	pf_stats_t before = stats();
	for (int round = 0; round < 500; round++) {
		pthread_t t[2];
		pthread_create(&t[0], NULL, short_life, NULL);
		pthread_create(&t[1], NULL, short_life, NULL);
		pthread_join(t[0], NULL);
		pthread_join(t[1], NULL);
	}
	pf_trim();
	pf_stats_t after = stats();
	CHECK_EQ(after.threads, before.threads);
	CHECK_EQ(after.caches, before.caches);
	CHECK_EQ(after.pages_in_use, 0);
	CHECK_EQ(after.allocs - before.allocs, 1000 * 64);
	CHECK(after.committed_bytes <= before.committed_bytes + 2u * PF_CHUNK_SIZE);
}

/* ---- two threads batching frees of one page ---------------------------------------- */

/*
 * The bound pyfrag.h states: each thread's batch keeps at most one page whose
 * fragments are all freed, until that thread frees elsewhere, flushes or exits.
 * Two threads each free two of a page's four fragments: neither sees the last
 * reference (the other's batch holds some), so the page stays until both move on.
 */
static pthread_barrier_t batch_step;
static char *batch_frags[4];
static char *elsewhere[2];

static void *frees_two_then_moves_on(void *arg)
{
	size_t me = (size_t)arg;
	pf_free(batch_frags[me]);
	pf_free(batch_frags[me + 2]);
	pthread_barrier_wait(&batch_step); /* main: both batches pending */
	pthread_barrier_wait(&batch_step);
	if (me == 0)
		pf_free(elsewhere[0]); /* a free on another page applies the batch */
	pthread_barrier_wait(&batch_step); /* main: one batch applied */
	pthread_barrier_wait(&batch_step);
	if (me == 1)
		pf_thread_flush();
	pthread_barrier_wait(&batch_step); /* main: the page is free */
	return NULL;
}

static void test_batches_of_two_threads_on_one_page(void)
{
	pf_cache_t *cache = pf_cache_create();
	for (int i = 0; i < 4; i++)
		batch_frags[i] = pf_cache_alloc(cache, 256);
	pf_cache_drain(cache); /* no cache holds the page: its frees may be batched */
	pf_cache_t *other = pf_cache_create();
	elsewhere[0] = pf_cache_alloc(other, 256);
	elsewhere[1] = pf_cache_alloc(other, 256);
	CHECK_EQ(page_info(batch_frags[0]).refcount, 4);
	pthread_barrier_init(&batch_step, NULL, 3);
	pthread_t t[2];
	for (size_t i = 0; i < 2; i++)
		pthread_create(&t[i], NULL, frees_two_then_moves_on, (void *)i);
	pthread_barrier_wait(&batch_step);
	pf_page_info_t both = page_info(batch_frags[0]);
	CHECK(both.flags & PF_PAGE_IN_USE); /* every fragment freed, two batches hold the page */
	CHECK_EQ(both.refcount, 4);
	pthread_barrier_wait(&batch_step);
	pthread_barrier_wait(&batch_step);
	CHECK_EQ(page_info(batch_frags[0]).refcount, 2);
	pthread_barrier_wait(&batch_step);
	pthread_barrier_wait(&batch_step);
	CHECK_EQ(page_info(batch_frags[0]).flags & PF_PAGE_IN_USE, 0);
	for (int i = 0; i < 2; i++)
		pthread_join(t[i], NULL);
	pthread_barrier_destroy(&batch_step);
	pf_free(elsewhere[1]);
	pf_cache_destroy(cache);
	pf_cache_destroy(other);
	pf_thread_flush();
	CHECK_EQ(stats().pages_in_use, 0);
}

/* ---- calls after the thread's pyfrag state is gone -------------------------------- */

static pthread_key_t late_key;
static char *late_handed; /* the main thread's fragment, freed by the exiting thread */
static int late_alloc_errno;
static void *late_alloc;

/*
 * A key destructor of the program's own, made after pyfrag's, so glibc calls it
 * after pyfrag's teardown; it asks for a second round to be sure of that.
 */
static void late_destructor(void *round)
{
	if (round == (void *)1) {
		pthread_setspecific(late_key, (void *)2);
		return;
	}
	CHECK_EQ(pf_free(late_handed), 0);
	errno = 0;
	late_alloc = pf_alloc(64);
	late_alloc_errno = errno;
}

static void *exits_with_late_calls(void *unused)
{
	(void)unused;
	pf_free(pf_alloc(64)); /* this thread has a state, torn down at exit */
	pthread_setspecific(late_key, (void *)1);
	return NULL;
}

static void test_calls_after_thread_teardown(void)
{
	pf_free(pf_alloc(1)); /* the main thread's own state, before the count */
	pf_stats_t before = stats();
	CHECK_EQ(pthread_key_create(&late_key, late_destructor), 0);
	for (int round = 0; round < 100; round++) {
		late_handed = pf_alloc(imix[round % 12]);
		pthread_t t;
		pthread_create(&t, NULL, exits_with_late_calls, NULL);
		pthread_join(t, NULL);
		CHECK(late_alloc == NULL);
		CHECK_EQ(late_alloc_errno, ESRCH);
		if (late_alloc)
			pf_free(late_alloc);
	}
	pthread_key_delete(late_key);
	pf_thread_flush();
	pf_stats_t after = stats();
	CHECK_EQ(after.threads, before.threads); /* no state made for a thread that is gone */
	CHECK_EQ(after.caches, before.caches);
	CHECK_EQ(after.pages_in_use, 0);
	CHECK_EQ(after.frees - before.frees, 200);
}

int main(void)
{
	RUN(test_many_threads_free);
	RUN(test_producer_consumer_ring);
	RUN(test_non_owner_cache_frees);
	RUN(test_thread_churn);
	RUN(test_calls_after_thread_teardown);
	RUN(test_batches_of_two_threads_on_one_page);
	return check_summary();
}
