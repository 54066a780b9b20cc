// SPDX-License-Identifier: GPL-2.0-only
/*
 * Hostile input to the C API, one test per kind: NULL caches and NULL
 * out-pointers, zero and huge sizes (including ones that would wrap to a
 * small size if truncated to 32 bits), bad and oversize alignments
 * (including ones that would truncate to a valid one), alignments larger
 * than a 4 KiB page, interior-pointer frees, foreign-pointer frees, double
 * frees, destroys of caches pf_cache_create did not make (or twice), bad
 * option values, short stats buffers. Every refusal must be -1 or
 * NULL with the documented errno and a last-error sentence, and must change
 * nothing: the same pages in use, the same counters (but invalid_frees).
 *
 * What cannot be refused (the kernel cannot either): a second free of a
 * fragment, or a free of an address that was never handed out, while the
 * page is alive and the freeing thread's cache does not hold it. Those take
 * a reference another fragment owns; see native/README.md.
 */
#include "check.h"
#include "probe.h"
#include "pyfrag.h"
#include "pyfrag_debug.h"

#include <errno.h>
#include <pthread.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

static int global_int;

/* The calling thread's last failure: this errno, with a sentence. */
static void refused(int err)
{
	CHECK_EQ(errno, err);
	CHECK_EQ(pf_last_error(), err);
	CHECK(strcmp(pf_last_error_message(), "no error") != 0);
}

static void refused_ptr(const void *p, int err)
{
	CHECK(p == NULL);
	refused(err);
}

static void refused_int(int ret, int err)
{
	CHECK_EQ(ret, -1);
	refused(err);
}

/* Counters a refusal must not move. */
static void same_counters(pf_stats_t a, pf_stats_t b)
{
	CHECK_EQ(a.allocs, b.allocs);
	CHECK_EQ(a.frees, b.frees);
	CHECK_EQ(a.bias_frees, b.bias_frees);
	CHECK_EQ(a.refills, b.refills);
	CHECK_EQ(a.pages_in_use, b.pages_in_use);
	CHECK_EQ(a.alloc_failures, b.alloc_failures);
	CHECK_EQ(a.committed_bytes, b.committed_bytes);
}

static void same_cache(pf_cache_info_t a, pf_cache_info_t b)
{
	CHECK_EQ(a.page, b.page);
	CHECK_EQ(a.offset, b.offset);
	CHECK_EQ(a.bias, b.bias);
}

/* ---- NULL everywhere ------------------------------------------------------------- */

static void test_null_arguments(void)
{
	pf_cache_t *c = pf_cache_create();
	char *p = pf_cache_alloc(c, 64);
	CHECK(p != NULL);
	pf_page_info_t pi_before = page_info(p);
	pf_stats_t before = stats();

	refused_ptr(pf_cache_alloc(NULL, 64), EINVAL);
	refused_ptr(pf_cache_alloc_align(NULL, 64, 8), EINVAL);
	refused_int(pf_cache_free(NULL, p, 64), EINVAL); /* refused, not freed */
	CHECK_EQ(page_info(p).refcount, pi_before.refcount);
	pf_cache_drain(NULL);
	pf_cache_destroy(NULL);
	pf_cache_info_t ci;
	pf_page_info_t pi;
	refused_int(pf_cache_query(NULL, &ci), EINVAL);
	refused_int(pf_cache_query(c, NULL), EINVAL);
	refused_int(pf_page_query(p, NULL), EINVAL);
	refused_int(pf_page_query(NULL, &pi), EINVAL);
	refused_int(pf_stats_get(NULL, sizeof(pf_stats_t)), EINVAL);
	uintptr_t base;
	size_t size;
	refused_int(pf_arena_range(NULL, &size), EINVAL);
	refused_int(pf_arena_range(&base, NULL), EINVAL);
	refused_int(pf_option_set(NULL, "1"), EINVAL);
	refused_int(pf_option_set("PYFRAG_LIMIT", NULL), EINVAL);
	CHECK_EQ(pf_option_get(NULL), -1);
	refused(EINVAL);
	CHECK(pf_option_name((size_t)-1) == NULL);
	CHECK(pf_option_default((size_t)-1) == NULL);
	CHECK(pf_option_doc((size_t)-1) == NULL);
	CHECK(pf_stats_field_name((size_t)-1) == NULL);
	CHECK(pf_stats_field_doc((size_t)-1) == NULL);
	CHECK_EQ(pf_free(NULL), 0); /* like free(NULL) */
	CHECK_EQ(pf_cache_free(c, NULL, 64), 0);

	same_counters(before, stats());
	CHECK_EQ(stats().invalid_frees, before.invalid_frees);
	pf_free(p);
	pf_cache_destroy(c);
}

/* ---- sizes ------------------------------------------------------------------------ */

static void test_zero_and_huge_sizes(void)
{
	static const struct {
		size_t size;
		int err;
	} bad[] = {
		{ 0, EINVAL },
		{ 32769, E2BIG },
		{ 65536, E2BIG },
		{ (size_t)UINT32_MAX, E2BIG },
		{ (size_t)1 << 32, E2BIG },        /* truncated to 32 bits: 0 */
		{ ((size_t)1 << 32) + 1, E2BIG },  /* truncated: 1 */
		{ ((size_t)1 << 32) + 64, E2BIG }, /* truncated: 64 */
		{ SIZE_MAX / 2, E2BIG },
		{ SIZE_MAX - 1, E2BIG },
		{ SIZE_MAX, E2BIG },
	};
	pf_cache_t *c = pf_cache_create();
	char *keep = pf_cache_alloc(c, 100); /* a page in the cache, so a refusal could disturb it */
	pf_cache_info_t ci = cache_info(c);
	pf_stats_t before = stats();
	for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
		errno = 0;
		refused_ptr(pf_cache_alloc(c, bad[i].size), bad[i].err);
		refused_ptr(pf_cache_alloc_align(c, bad[i].size, 64), bad[i].err);
		refused_ptr(pf_alloc(bad[i].size), bad[i].err);
		refused_ptr(pf_alloc_align(bad[i].size, 8), bad[i].err);
	}
	same_cache(ci, cache_info(c));
	same_counters(before, stats());
	/* the edges that are fine */
	char *one = pf_cache_alloc(c, 1);
	char *max = pf_cache_alloc(c, 32768);
	CHECK(one != NULL && max != NULL);
	if (max)
		memset(max, 0xee, 32768);
	CHECK_EQ(page_info(max).size, 32768);
	pf_free(one);
	pf_free(max);
	pf_free(keep);
	pf_cache_destroy(c);
}

/* ---- alignments ------------------------------------------------------------------- */

static void test_bad_alignments(void)
{
	static const size_t bad[] = {
		0, 3, 6, 12, 24, 4097, 4095, 32767, 65536, (size_t)1 << 20,
		(size_t)1 << 32,        /* truncated to 32 bits: 0 */
		((size_t)1 << 32) | 8,  /* truncated: 8, a valid alignment */
		((size_t)1 << 32) + 1,  /* truncated: 1 */
		(size_t)1 << 63, SIZE_MAX, SIZE_MAX - 1,
	};
	pf_cache_t *c = pf_cache_create();
	char *keep = pf_cache_alloc(c, 100);
	pf_cache_info_t ci = cache_info(c);
	pf_stats_t before = stats();
	for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
		errno = 0;
		refused_ptr(pf_cache_alloc_align(c, 64, bad[i]), EINVAL);
		refused_ptr(pf_alloc_align(64, bad[i]), EINVAL);
	}
	same_cache(ci, cache_info(c));
	same_counters(before, stats());
	/* the largest valid alignment, with the smallest and the largest fragment */
	for (int i = 0; i < 4; i++) {
		char *a = pf_cache_alloc_align(c, i % 2 ? 32768 : 1, 32768);
		CHECK(a != NULL);
		CHECK_EQ((uintptr_t)a % 32768, 0);
		pf_free(a);
	}
	pf_free(keep);
	pf_cache_destroy(c);
}

/*
 * An alignment larger than a 4 KiB page when the cache holds one (a reserve
 * page here; an order-0 fallback page is the same): the address must be
 * aligned, not just the offset, and a 4 KiB page cannot give that.
 */
static void test_alignment_beyond_a_4k_page(void)
{
	pf_cache_t *c = pf_cache_create();
	pf_debug_fail_commit(1); /* no new chunk: order-0 refills take reserve pages */
	pf_thread_flush();
	pf_option_set("PYFRAG_RETAIN", "0");
	pf_trim();
	CHECK_EQ(stats().committed_bytes, 0);
	char *p = NULL, *kept[8];
	int nkept = 0;
	while (nkept < 8) { /* until the reserve hands out a page that is not 8 KiB aligned */
		p = pf_cache_alloc(c, 64);
		if (!p || cache_info(c).page % 8192)
			break;
		kept[nkept++] = p; /* keeps that page out of the reserve */
		pf_cache_drain(c);
		p = NULL;
	}
	CHECK(p != NULL);
	if (!p)
		return;
	pf_cache_info_t ci = cache_info(c);
	CHECK_EQ(ci.page_size, 4096);
	CHECK(ci.page % 8192 != 0);
	CHECK_EQ(pf_cache_free(c, p, 64), 0); /* offset back to 0 on a page that is 4 KiB aligned only */
	CHECK_EQ(cache_info(c).offset, 0);
	for (size_t align = 8192; align <= 32768; align *= 2) {
		errno = 0;
		char *q = pf_cache_alloc_align(c, 1, align);
		/* no 32 KiB block can be had while commits fail: refused, never misaligned */
		if (q) {
			CHECK_EQ((uintptr_t)q % align, 0);
			pf_free(q);
		} else {
			refused(ENOMEM);
		}
	}
	pf_debug_fail_commit(0);
	for (size_t align = 8192; align <= 32768; align *= 2) {
		char *q = pf_cache_alloc_align(c, 100, align);
		CHECK(q != NULL);
		CHECK_EQ((uintptr_t)q % align, 0);
		pf_free(q);
	}
	for (int i = 0; i < nkept; i++)
		pf_free(kept[i]);
	pf_cache_destroy(c);
	pf_option_set("PYFRAG_RETAIN", "1");
	pf_thread_flush();
	CHECK_EQ(stats().pages_in_use, 0);
	CHECK_EQ(stats().reserve_free_pages, 16);
}

/* ---- interior pointers ------------------------------------------------------------ */

static void *free_in_thread(void *addr)
{
	return pf_free(addr) == 0 ? NULL : (void *)1;
}

static void test_interior_pointer_frees(void)
{
	pf_cache_t *c = pf_cache_create();
	char *a = pf_cache_alloc(c, 100);
	char *b = pf_cache_alloc(c, 100);
	char *d = pf_cache_alloc(c, 100);
	char *e = pf_cache_alloc(c, 100);
	int32_t ref = page_info(a).refcount;
	pf_stats_t before = stats();
	/* any byte of a fragment frees that fragment: last byte, from another thread */
	pthread_t t;
	void *ret = (void *)2;
	pthread_create(&t, NULL, free_in_thread, a + 99);
	pthread_join(t, &ret);
	CHECK(ret == NULL);
	CHECK_EQ(page_info(b).refcount, ref - 1);
	/* a middle byte, through pf_free on the owner thread (not its default cache: atomic) */
	CHECK_EQ(pf_free(b + 50), 0);
	CHECK_EQ(page_info(d).refcount, ref - 2);
	/* through the owner's cache: back to the bias; with no size, no rollback */
	pf_cache_info_t ci = cache_info(c);
	CHECK_EQ(pf_cache_free(c, d + 1, 0), 0);
	CHECK_EQ(cache_info(c).bias, ci.bias + 1);
	CHECK_EQ(cache_info(c).offset, ci.offset);
	/* the newest fragment by an interior pointer and its remaining size: the offset goes back there */
	CHECK_EQ(pf_cache_free(c, e + 40, 60), 0);
	CHECK_EQ(cache_info(c).offset, ci.offset - 60);
	char *f = pf_cache_alloc(c, 60);
	CHECK(f == e + 40); /* no live byte is handed out twice */
	pf_stats_t after = stats();
	CHECK_EQ(after.frees - before.frees, 4);
	CHECK_EQ(after.invalid_frees, before.invalid_frees);
	pf_free(f);
	pf_cache_destroy(c);
	pf_thread_flush();
	CHECK_EQ(stats().pages_in_use, 0);
}

/* ---- foreign pointers --------------------------------------------------------------- */

static void foreign(void *addr, pf_cache_t *c)
{
	pf_stats_t before = stats();
	errno = 0;
	refused_int(pf_free(addr), EINVAL);
	refused_int(pf_cache_free(c, addr, 64), EINVAL);
	pf_stats_t after = stats();
	CHECK_EQ(after.invalid_frees - before.invalid_frees, 2);
	CHECK_EQ(after.frees, before.frees);
	CHECK_EQ(after.pages_in_use, before.pages_in_use);
}

static void test_foreign_pointer_frees(void)
{
	int local = 0;
	char *heap = malloc(64);
	pf_cache_t *c = pf_cache_create();
	char *live = pf_cache_alloc(c, 64); /* a page in use the refusals must not touch */
	pf_cache_info_t ci = cache_info(c);
	int32_t ref = page_info(live).refcount;
	uintptr_t base;
	size_t size;
	CHECK_EQ(pf_arena_range(&base, &size), 0);

	foreign(&local, c);
	foreign(heap, c);
	foreign(&global_int, c);
	foreign((void *)"a string literal", c);
	foreign((void *)(uintptr_t)1, c);
	foreign((void *)UINTPTR_MAX, c);
	foreign((void *)(base - 1), c);               /* just before the arena */
	foreign((void *)(base + size), c);            /* just past it */
	foreign((void *)(base + size / 2), c);        /* a chunk never committed */
	foreign((void *)(base + size - 1), c);        /* the reserve's slot, past its pages */
	foreign((void *)(base + size - PF_CHUNK_SIZE), c); /* a reserve page not handed out */
	/* a free page of a committed chunk: the next 32 KiB block after the cache's page is free */
	pf_page_info_t pi;
	if (pf_page_query((void *)(ci.page + ci.page_size), &pi) == 0 && !(pi.flags & PF_PAGE_IN_USE))
		foreign((void *)(ci.page + ci.page_size + 100), c);
	/* a freed fragment's page, gone back */
	pf_cache_t *c2 = pf_cache_create();
	char *gone = pf_cache_alloc(c2, 64);
	pf_cache_destroy(c2);
	CHECK_EQ(pf_free(gone), 0);
	foreign(gone, c);

	same_cache(ci, cache_info(c));
	CHECK_EQ(page_info(live).refcount, ref);
	pf_free(live);
	pf_cache_destroy(c);
	free(heap);
}

/* ---- double frees ------------------------------------------------------------------- */

static void test_double_frees(void)
{
	pf_cache_t *c = pf_cache_create();
	pf_stats_t before = stats();
	/* on the owner's current page: the second free of the newest fragment is past the offset */
	char *a = pf_cache_alloc(c, 64);
	pf_cache_info_t ci = cache_info(c);
	CHECK_EQ(pf_cache_free(c, a, 64), 0);
	refused_int(pf_cache_free(c, a, 64), EINVAL);
	refused_int(pf_cache_free(c, a, 0), EINVAL);
	CHECK_EQ(cache_info(c).bias, ci.bias + 1);
	/* every fragment back already: one more free would push the bias past full */
	char *x = pf_cache_alloc(c, 64);
	char *y = pf_cache_alloc(c, 64);
	CHECK_EQ(pf_cache_free(c, y, 0), 0);
	CHECK_EQ(pf_cache_free(c, x, 0), 0);
	CHECK_EQ(cache_info(c).bias, 32769);
	refused_int(pf_cache_free(c, x, 0), EINVAL);
	CHECK_EQ(cache_info(c).bias, 32769);
	CHECK_EQ(page_info(x).refcount, 32769);
	/* the same through pf_free on a thread's default cache */
	char *d = pf_alloc(64);
	CHECK_EQ(pf_free(d), 0);
	refused_int(pf_free(d), EINVAL);
	/* after the page went back (the cache drained, its last fragment freed) */
	char *g = pf_cache_alloc(c, 64);
	pf_cache_drain(c);
	CHECK_EQ(page_info(g).refcount, 1);
	CHECK_EQ(pf_free(g), 0);
	refused_int(pf_free(g), EINVAL);
	refused_int(pf_cache_free(c, g, 64), EINVAL);
	pf_stats_t after = stats();
	CHECK_EQ(after.invalid_frees - before.invalid_frees, 6);
	CHECK_EQ(after.frees - before.frees, 5);
	pf_cache_destroy(c);
	pf_thread_flush();
	CHECK_EQ(stats().pages_in_use, 0);
}

/* Destroying what pf_cache_create did not make, or twice: refused, the pool untouched. */
static void test_bad_cache_destroys(void)
{
	pf_cache_t *mine = pf_thread_cache();
	char *kept = pf_alloc(64); /* the default cache holds a page */
	pf_cache_info_t held = cache_info(mine);
	errno = 0;
	pf_cache_destroy(mine);
	refused(EINVAL);
	same_cache(cache_info(mine), held);
	pf_cache_t *c = pf_cache_create();
	pf_cache_destroy(c);
	errno = 0;
	pf_cache_destroy(c);
	refused(EINVAL);
	/* the pool holds each freed cache once: two new caches are two caches, neither a thread's */
	pf_cache_t *a = pf_cache_create(), *b = pf_cache_create();
	CHECK(a != NULL && b != NULL && a != b);
	CHECK(a != mine && b != mine);
	char *fa = pf_cache_alloc(a, 100), *fb = pf_cache_alloc(b, 100);
	CHECK(fa != NULL && fb != NULL && page_info(fa).head != page_info(fb).head);
	CHECK_EQ(pf_cache_free(a, fa, 100), 0);
	CHECK_EQ(pf_cache_free(b, fb, 100), 0);
	pf_cache_destroy(a);
	pf_cache_destroy(b);
	CHECK_EQ(pf_free(kept), 0);
	pf_thread_flush();
	CHECK_EQ(stats().pages_in_use, 0);
}

/* An address of the current page that was never handed out, freed on the owner thread. */
static void test_never_handed_out(void)
{
	pf_cache_t *c = pf_cache_create();
	char *a = pf_cache_alloc(c, 64);
	pf_cache_info_t ci = cache_info(c);
	refused_int(pf_cache_free(c, a + 64, 0), EINVAL);
	refused_int(pf_cache_free(c, (char *)ci.page + ci.page_size - 1, 1), EINVAL);
	char *d = pf_alloc(64);
	refused_int(pf_free(d + 64), EINVAL);
	same_cache(ci, cache_info(c));
	CHECK_EQ(page_info(a).refcount, (int)ci.bias + 1);
	pf_free(d);
	pf_free(a);
	pf_cache_destroy(c);
	pf_thread_flush();
}

/* ---- options and stats -------------------------------------------------------------- */

static void test_bad_option_values(void)
{
	static const char *const bad_sizes[] = {
		"", "-1", "1X", "12Q", "0x10", " 1", "1 ", "1KK", "K", "1.5M",
		"99999999999999999999", "9223372036854775808", "9999999999T", "8388608T",
	};
	long long limit = pf_option_get("PYFRAG_LIMIT");
	for (size_t i = 0; i < sizeof(bad_sizes) / sizeof(bad_sizes[0]); i++) {
		errno = 0;
		refused_int(pf_option_set("PYFRAG_LIMIT", bad_sizes[i]), EINVAL);
	}
	CHECK_EQ(pf_option_get("PYFRAG_LIMIT"), limit);
	refused_int(pf_option_set("PYFRAG_HUGEPAGES", "maybe"), EINVAL);
	refused_int(pf_option_set("PYFRAG_RETAIN", "-1"), EINVAL);
	refused_int(pf_option_set("PYFRAG_STATS", "2"), EINVAL);
	refused_int(pf_option_set("pyfrag_limit", "1M"), EINVAL); /* names are exact */
	refused_int(pf_option_set("PYFRAG_LIMIT=1M", "1M"), EINVAL);
	refused_int(pf_option_set("PYFRAG_ARENA", "1G"), EBUSY); /* fixed once the arena exists */
	CHECK_EQ(pf_option_get("PYFRAG_NOPE"), -1);
	refused(EINVAL);
}

static void test_short_stats_buffers(void)
{
	unsigned char buf[sizeof(pf_stats_t) + 64];
	refused_int(pf_stats_get((pf_stats_t *)buf, 0), EINVAL);
	refused_int(pf_stats_get((pf_stats_t *)buf, 7), EINVAL);
	/* size and version only: nothing written past them */
	memset(buf, 0xab, sizeof(buf));
	CHECK_EQ(pf_stats_get((pf_stats_t *)buf, 8), 0);
	pf_stats_t head;
	memcpy(&head, buf, 8);
	CHECK_EQ(head.size, sizeof(pf_stats_t));
	CHECK_EQ(head.version, PF_STATS_VERSION);
	CHECK_EQ(buf[8], 0xab);
	/* a bigger buffer than the struct: nothing written past the struct */
	memset(buf, 0xab, sizeof(buf));
	CHECK_EQ(pf_stats_get((pf_stats_t *)buf, sizeof(buf)), 0);
	CHECK_EQ(buf[sizeof(pf_stats_t)], 0xab);
	CHECK_EQ(buf[sizeof(buf) - 1], 0xab);
}

int main(void)
{
	RUN(test_null_arguments);
	RUN(test_zero_and_huge_sizes);
	RUN(test_bad_alignments);
	RUN(test_alignment_beyond_a_4k_page);
	RUN(test_interior_pointer_frees);
	RUN(test_foreign_pointer_frees);
	RUN(test_double_frees);
	RUN(test_bad_cache_destroys);
	RUN(test_never_handed_out);
	RUN(test_bad_option_values);
	RUN(test_short_stats_buffers);
	return check_summary();
}
