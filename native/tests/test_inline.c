// SPDX-License-Identifier: GPL-2.0-only
/*
 * pyfrag.h's inline fast paths (pf_cache_alloc_inline, pf_cache_alloc_align_inline,
 * pf_cache_free_inline) against the library's exported functions: the same
 * script of allocs and frees run on two caches, one each way, must give the
 * same addresses (relative to each cache's page), offsets, biases, page
 * refcounts and statistics; what the inline paths do not handle (refusals,
 * other threads, refills) must come out as the library says.
 */
#include "check.h"
#include "probe.h"
#include "pyfrag.h"

#include <errno.h>
#include <pthread.h>
#include <stdint.h>
#include <string.h>

enum { OPS = 20000, LIVE = 64 };

struct script {
	uint64_t seed;
	int inline_calls;
};

static uint64_t next(uint64_t *s)
{
	*s ^= *s << 13;
	*s ^= *s >> 7;
	*s ^= *s << 17;
	return *s;
}

static void *do_alloc(const struct script *sc, pf_cache_t *c, size_t n, size_t align)
{
	if (sc->inline_calls)
		return align ? pf_cache_alloc_align_inline(c, n, align) : pf_cache_alloc_inline(c, n);
	return align ? pf_cache_alloc_align(c, n, align) : pf_cache_alloc(c, n);
}

static int do_free(const struct script *sc, pf_cache_t *c, void *p, size_t n)
{
	return sc->inline_calls ? pf_cache_free_inline(c, p, n) : pf_cache_free(c, p, n);
}

/* One step's outcome, compared between the two runs. */
struct trace {
	long long rel;     /* address - page, or -1 for NULL */
	uint32_t offset, bias, page_size;
	int32_t refcount;
};

/* The script: allocs of many sizes and alignments, frees newest-first, out of order, without size. */
static void run(struct script *sc, pf_cache_t *c, struct trace *out)
{
	char *live[LIVE];
	size_t size[LIVE];
	int n = 0;
	for (int i = 0; i < OPS; i++) {
		uint64_t r = next(&sc->seed);
		void *got = NULL;
		if (n < LIVE && (r & 3) != 0) {
			size_t len = 1 + (size_t)(r >> 8) % ((r & 0x30) ? 600 : 9000);
			size_t align = (r & 0x40) ? (size_t)1 << ((r >> 32) % 8) : 0;
			got = do_alloc(sc, c, len, align);
			CHECK(got != NULL);
			if (got) {
				memset(got, 0x5a, len);
				live[n] = got;
				size[n++] = len;
			}
		} else if (n > 0) {
			int k = (r & 4) ? n - 1 : (int)((r >> 16) % (unsigned)n); /* newest, or any */
			size_t given = (r & 8) ? 0 : size[k];
			CHECK_EQ(do_free(sc, c, live[k], given), 0);
			live[k] = live[--n];
			size[k] = size[n];
		}
		pf_cache_info_t ci = cache_info(c);
		out[i].rel = got ? (long long)((uintptr_t)got - ci.page) : -1;
		out[i].offset = ci.offset;
		out[i].bias = ci.bias;
		out[i].page_size = ci.page_size;
		out[i].refcount = ci.page ? page_info((void *)ci.page).refcount : 0;
	}
	for (; n > 0; n--)
		CHECK_EQ(do_free(sc, c, live[n - 1], size[n - 1]), 0);
}

static struct trace by_inline[OPS], by_call[OPS];

static void test_same_as_library(void)
{
	pf_cache_t *warm = pf_cache_create(); /* the process's first refill is an order-0 fallback */
	pf_cache_free(warm, pf_cache_alloc(warm, 64), 64);
	pf_cache_destroy(warm);

	pf_cache_t *a = pf_cache_create(), *b = pf_cache_create();
	struct script sa = { 0x9e3779b97f4a7c15ull, 1 }, sb = { 0x9e3779b97f4a7c15ull, 0 };
	pf_stats_t s0 = stats();
	run(&sa, a, by_inline);
	pf_stats_t s1 = stats();
	run(&sb, b, by_call);
	pf_stats_t s2 = stats();
	int first_diff = -1;
	for (int i = 0; i < OPS && first_diff < 0; i++)
		if (memcmp(&by_inline[i], &by_call[i], sizeof(struct trace)) != 0)
			first_diff = i;
	CHECK_EQ(first_diff, -1);
	if (first_diff >= 0) {
		const struct trace *x = &by_inline[first_diff], *y = &by_call[first_diff];
		fprintf(stderr, "step %d: inline rel %lld offset %u bias %u size %u ref %d; "
			"library rel %lld offset %u bias %u size %u ref %d\n", first_diff, x->rel,
			x->offset, x->bias, x->page_size, x->refcount, y->rel, y->offset, y->bias,
			y->page_size, y->refcount);
	}
	CHECK_EQ(s1.allocs - s0.allocs, s2.allocs - s1.allocs);
	CHECK_EQ(s1.frees - s0.frees, s2.frees - s1.frees);
	CHECK_EQ(s1.bias_frees - s0.bias_frees, s2.bias_frees - s1.bias_frees);
	CHECK_EQ(s1.refills - s0.refills, s2.refills - s1.refills);
	CHECK_EQ(s1.recycles - s0.recycles, s2.recycles - s1.recycles);
	CHECK_EQ(s1.allocs - s0.allocs, s1.frees - s0.frees);
	CHECK_EQ(s1.abandons - s0.abandons, s2.abandons - s1.abandons);
	CHECK(s1.refills - s0.refills > 10); /* the script went through pages */
	pf_cache_destroy(a);
	pf_cache_destroy(b);
}

static void test_refusals(void)
{
	pf_cache_t *c = pf_cache_create();
	errno = 0;
	CHECK(pf_cache_alloc_inline(c, 0) == NULL && errno == EINVAL);
	errno = 0;
	CHECK(pf_cache_alloc_inline(c, PF_FRAG_PAGE_SIZE + 1) == NULL && errno == E2BIG);
	errno = 0;
	CHECK(pf_cache_alloc_align_inline(c, 8, 3) == NULL && errno == EINVAL);
	errno = 0;
	CHECK(pf_cache_alloc_align_inline(c, 8, 0) == NULL && errno == EINVAL);
	errno = 0;
	CHECK(pf_cache_alloc_inline(NULL, 8) == NULL && errno == EINVAL);
	char *p = pf_cache_alloc_inline(c, 100);
	CHECK(p != NULL);
	CHECK_EQ(pf_cache_free_inline(c, p, 100), 0);
	errno = 0;
	CHECK_EQ(pf_cache_free_inline(c, p, 100), -1); /* bias full: nothing out to free */
	CHECK_EQ(errno, EINVAL);
	char *q = pf_cache_alloc_inline(c, 100);
	errno = 0;
	CHECK_EQ(pf_cache_free_inline(c, q + 100, 1), -1); /* past what was handed out */
	CHECK_EQ(errno, EINVAL);
	CHECK_EQ(pf_cache_free_inline(c, q, 100), 0);
	errno = 0;
	CHECK_EQ(pf_cache_free_inline(NULL, q, 100), -1);
	CHECK_EQ(errno, EINVAL);
	pf_cache_destroy(c);
}

struct handoff {
	pf_cache_t *cache;
	void *frag;
	int ret;
};

static void *free_elsewhere(void *arg)
{
	struct handoff *h = arg;
	h->ret = pf_cache_free_inline(h->cache, h->frag, 64);
	pf_thread_flush();
	return NULL;
}

/* Not the owner: the inline path must not touch the cache; the library drops a page reference. */
static void test_other_thread(void)
{
	pf_cache_t *c = pf_cache_create();
	char *keep = pf_cache_alloc_inline(c, 64);
	char *p = pf_cache_alloc_inline(c, 64);
	pf_cache_info_t before = cache_info(c);
	int32_t ref = page_info(p).refcount;
	struct handoff h = { c, p, -2 };
	pthread_t t;
	pthread_create(&t, NULL, free_elsewhere, &h);
	pthread_join(t, NULL);
	CHECK_EQ(h.ret, 0);
	pf_cache_info_t after = cache_info(c);
	CHECK_EQ(after.bias, before.bias);
	CHECK_EQ(after.offset, before.offset);
	CHECK_EQ(page_info(p).refcount, ref - 1);
	CHECK_EQ(pf_cache_free_inline(c, keep, 64), 0);
	CHECK_EQ(cache_info(c).bias, before.bias + 1);
	pf_cache_destroy(c);
}

/* The default cache through the inline paths: what pf_alloc does, counted alike. */
static void test_default_cache(void)
{
	pf_cache_t *c = pf_thread_cache();
	pf_stats_t s0 = stats();
	char *p = pf_cache_alloc_inline(c, 200);
	char *q = pf_alloc(200);
	CHECK_EQ((uintptr_t)q, (uintptr_t)p + 200);
	CHECK_EQ(pf_cache_free_inline(c, q, 200), 0);
	CHECK_EQ(pf_cache_free_inline(c, p, 200), 0);
	pf_stats_t s1 = stats();
	CHECK_EQ(s1.allocs - s0.allocs, 2);
	CHECK_EQ(s1.frees - s0.frees, 2);
	CHECK_EQ(s1.bias_frees - s0.bias_frees, 2);
	CHECK_EQ(pf_alloc(200), p); /* both were given back: the same bytes again */
}

int main(void)
{
	CHECK_EQ(pf_abi_version(), PF_ABI_VERSION);
	RUN(test_same_as_library);
	RUN(test_refusals);
	RUN(test_other_thread);
	RUN(test_default_cache);
	return check_summary();
}
