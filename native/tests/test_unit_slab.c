/* SPDX-License-Identifier: GPL-2.0-only */
/*
 * The slab layer on its own, white-box (linked with a static archive of the
 * layers up to slab, not the library: native/SConscript's test_unit_ rule): heaps of several threads, blocks freed
 * by their owner and by other threads, owners that exit with blocks still
 * out (abandoned pages), other threads adopting those pages, misuse refused.
 * Every block carries its owner's pattern, checked before it is freed; at the
 * end every slab page is back. Built in every mode; CI runs it under
 * ThreadSanitizer and AddressSanitizer (tests/test_native.py).
 */
#include "check.h"
#include "slab/slab.h"

#include <pthread.h>
#include <string.h>

enum { THREADS = 4, BLOCKS = 20000, ROUNDS = 3 };

/* A thread with a heap: its own page lists, as the thread layer gives it. */
struct worker {
	struct pf_pcp pcp;
	struct pf_slab_heap heap;
	void *blocks[BLOCKS];
	unsigned sizes[BLOCKS];
	int id;
	void **handed; /* from the previous worker: free them here (remote frees) */
	unsigned *handed_sizes;
};

static void worker_init(struct worker *w, int id)
{
	memset(w, 0, sizeof(*w));
	for (int slot = 0; slot < PF_PCP_ORDERS; slot++)
		w->pcp.head[slot] = PF_NIL;
	pf__slab_heap_init(&w->heap, &w->pcp);
	w->id = id;
}

static struct pf_page *head_of(void *p)
{
	struct pf_page *page = pf__head_page(p);
	return page && (page->flags & PF_PF_SLAB) ? page : NULL;
}

static void fill(void *p, unsigned size, int id)
{
	memset(p, id + 1, size < 64 ? size : 64);
}

static bool intact(const void *p, unsigned size, int id)
{
	const unsigned char *b = p;
	for (unsigned i = 0; i < (size < 64 ? size : 64); i++)
		if (b[i] != (unsigned char)(id + 1))
			return false;
	return true;
}

static void *allocate_all(void *arg)
{
	struct worker *w = arg;
	for (int i = 0; i < BLOCKS; i++) {
		unsigned size = 16u + (unsigned)((i * 37) % 2000);
		unsigned cls = pf__slab_class(size);
		void *p = pf__slab_alloc(&w->heap, cls);
		CHECK(p != NULL);
		CHECK(pf__slab_class_size[cls] >= size);
		w->blocks[i] = p;
		w->sizes[i] = size;
		fill(p, size, w->id);
	}
	/* half of them back at once, on this thread: no atomic operation */
	for (int i = 0; i < BLOCKS; i += 2) {
		CHECK(intact(w->blocks[i], w->sizes[i], w->id));
		CHECK_EQ(pf__slab_free(&w->heap, head_of(w->blocks[i]), w->blocks[i]), PF_SLAB_FREED);
		w->blocks[i] = NULL;
	}
	return NULL;
}

/* Frees the previous worker's odd blocks from this thread while that one may be exiting. */
static void *free_handed(void *arg)
{
	struct worker *w = arg;
	for (int i = 1; i < BLOCKS; i += 2) {
		CHECK(intact(w->handed[i], w->handed_sizes[i], (w->id + THREADS - 1) % THREADS));
		CHECK_EQ(pf__slab_free(&w->heap, head_of(w->handed[i]), w->handed[i]), PF_SLAB_FREED);
	}
	return NULL;
}

static void *abandon_heap(void *arg)
{
	pf__slab_heap_abandon(&((struct worker *)arg)->heap);
	return NULL;
}

static struct worker workers[THREADS];

/* Each round: every worker allocates; then each frees its neighbour's odd blocks while
 * the neighbour abandons its heap (exits) at the same time; pages end up abandoned,
 * freed under the lock, and adopted by the next round's heaps. */
static void test_remote_frees_abandon_and_adopt(void)
{
	struct pf_slab_counts before;
	pf__slab_counts_get(&before);
	for (int round = 0; round < ROUNDS; round++) {
		pthread_t t[THREADS], u[THREADS];
		for (int i = 0; i < THREADS; i++)
			worker_init(&workers[i], i);
		for (int i = 0; i < THREADS; i++)
			pthread_create(&t[i], NULL, allocate_all, &workers[i]);
		for (int i = 0; i < THREADS; i++)
			pthread_join(t[i], NULL);
		/* the handed blocks: copied out, as a queue between threads would */
		static void *handed[THREADS][BLOCKS];
		static unsigned handed_sizes[THREADS][BLOCKS];
		for (int i = 0; i < THREADS; i++) {
			memcpy(handed[i], workers[i].blocks, sizeof(handed[i]));
			memcpy(handed_sizes[i], workers[i].sizes, sizeof(handed_sizes[i]));
		}
		struct worker freers[THREADS];
		for (int i = 0; i < THREADS; i++) {
			worker_init(&freers[i], i);
			freers[i].handed = handed[(i + THREADS - 1) % THREADS];
			freers[i].handed_sizes = handed_sizes[(i + THREADS - 1) % THREADS];
		}
		for (int i = 0; i < THREADS; i++) {
			pthread_create(&t[i], NULL, free_handed, &freers[i]);
			pthread_create(&u[i], NULL, abandon_heap, &workers[i]);
		}
		for (int i = 0; i < THREADS; i++) {
			pthread_join(t[i], NULL);
			pthread_join(u[i], NULL);
		}
		for (int i = 0; i < THREADS; i++)
			pf__slab_heap_abandon(&freers[i].heap); /* they allocated nothing: no page */
	}
	struct pf_slab_counts after;
	pf__slab_counts_get(&after);
	CHECK_EQ(after.pages, before.pages); /* every block back: every page back */
	CHECK_EQ(after.abandoned, before.abandoned);
}

/* A page abandoned with live blocks is adopted by a heap that needs its class. */
static void test_adoption_reuses_an_abandoned_page(void)
{
	static struct worker a, b;
	worker_init(&a, 7);
	unsigned cls = pf__slab_class(100);
	void *keep = pf__slab_alloc(&a.heap, cls);
	void *gone = pf__slab_alloc(&a.heap, cls);
	CHECK(keep && gone);
	struct pf_page *page = head_of(keep);
	pf__slab_heap_abandon(&a.heap);
	struct pf_slab_counts c;
	pf__slab_counts_get(&c);
	CHECK(c.abandoned >= 1);
	worker_init(&b, 8);
	CHECK_EQ(pf__slab_free(&b.heap, head_of(gone), gone), PF_SLAB_FREED); /* under the lock */
	void *reused = pf__slab_alloc(&b.heap, cls);
	CHECK(head_of(reused) == page); /* adopted, not a new page */
	CHECK_EQ(pf__slab_free(&b.heap, head_of(keep), keep), PF_SLAB_FREED);
	CHECK_EQ(pf__slab_free(&b.heap, head_of(reused), reused), PF_SLAB_FREED);
	pf__slab_heap_abandon(&b.heap);
}

static void test_misuse_is_refused(void)
{
	static struct worker w;
	worker_init(&w, 3);
	unsigned cls = pf__slab_class(100);
	char *p = pf__slab_alloc(&w.heap, cls);
	char *q = pf__slab_alloc(&w.heap, cls);
	CHECK_EQ(pf__slab_free(&w.heap, head_of(p), p + 16), PF_SLAB_NOT_A_BLOCK);
	CHECK_EQ(pf__slab_free(&w.heap, head_of(q), q + 10 * pf__slab_class_size[cls]),
		 PF_SLAB_NOT_A_BLOCK); /* never carved */
	CHECK_EQ(pf__slab_free(&w.heap, head_of(p), p), PF_SLAB_FREED);
	CHECK_EQ(pf__slab_free(&w.heap, head_of(p), p), PF_SLAB_DOUBLE_FREE);
	CHECK_EQ(pf__slab_free(&w.heap, head_of(q), q), PF_SLAB_FREED);
	pf__slab_heap_abandon(&w.heap);
}

static void test_classes(void)
{
	for (size_t size = 1; size <= PF_SLAB_MAX; size++) {
		unsigned cls = pf__slab_class(size);
		CHECK(cls < PF_SLAB_CLASSES);
		CHECK(pf__slab_class_size[cls] >= size);
		CHECK(pf__slab_class_size[cls] % 16 == 0);
		/* 16-byte steps to 128, then at most 1/4 more to 1 KiB and 1/8 more above */
		size_t slack = size <= 128 ? 15 : size <= 1024 ? size / 4 : size / 8;
		CHECK(pf__slab_class_size[cls] - size <= slack);
		if (cls > 0)
			CHECK(pf__slab_class_size[cls - 1] < size);
	}
}

int main(void)
{
	pf__options_load();
	CHECK_EQ(pf__arena_init((size_t)1 << 30), 0);
	CHECK_EQ(pf__page_alloc_init(), 0);
	pf__slab_init();
	RUN(test_classes);
	RUN(test_misuse_is_refused);
	RUN(test_adoption_reuses_an_abandoned_page);
	RUN(test_remote_frees_abandon_and_adopt);
	return check_summary();
}
