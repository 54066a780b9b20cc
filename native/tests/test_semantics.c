// SPDX-License-Identifier: GPL-2.0-only
/*
 * page_frag semantics on default options: bias and refcount accounting,
 * recycling in place, abandoning, alignment, the refusals with errno, the
 * owner-thread free fast path, invalid frees, and chunks going back to the
 * OS after a burst.
 */
#include "check.h"
#include "probe.h"
#include "pyfrag.h"

#include <errno.h>
#include <stdint.h>
#include <string.h>

static void test_bias_and_refcount(void)
{
	pf_cache_t *c = pf_cache_create();
	char *frags[10];
	for (int i = 0; i < 10; i++)
		frags[i] = pf_cache_alloc(c, 100);
	pf_cache_info_t ci = cache_info(c);
	pf_page_info_t pi = page_info(frags[0]);
	/* refcount == bias + outstanding, and the alloc path never touched the refcount */
	CHECK_EQ(ci.bias, 32769 - 10);
	CHECK_EQ(pi.refcount, (int)ci.bias + 10);
	CHECK_EQ(pi.head, ci.page);
	CHECK_EQ(ci.offset, 1000);
	/* fragments are consecutive in the page, counting up */
	for (int i = 0; i < 10; i++)
		CHECK_EQ((uintptr_t)frags[i], ci.page + 100u * (unsigned)i);
	/* a free from a thread that is not holding the page in a cache: one atomic decrement */
	CHECK_EQ(pf_free(frags[3] + 50), 0); /* any byte of the fragment */
	CHECK_EQ(page_info(frags[0]).refcount, (int)ci.bias + 9);
	for (int i = 0; i < 10; i++)
		if (i != 3)
			pf_free(frags[i]);
	CHECK_EQ(page_info(frags[0]).refcount, (int)ci.bias);
	pf_cache_destroy(c);
	CHECK_EQ(page_info(frags[0]).flags & PF_PAGE_IN_USE, 0); /* drained: the page went back */
}

static void test_recycle_in_place(void)
{
	pf_cache_t *c = pf_cache_create();
	pf_stats_t before = stats();
	char *first = pf_cache_alloc(c, 4096);
	pf_cache_info_t ci = cache_info(c);
	uintptr_t page = ci.page;
	unsigned per_page = ci.page_size / 4096;
	pf_cache_free(c, first, 0); /* size unknown: no offset rollback */
	for (unsigned i = 1; i < per_page; i++)
		pf_free(pf_cache_alloc(c, 4096));
	/* the page is full and every fragment is back: the next alloc reuses it in place */
	char *again = pf_cache_alloc(c, 4096);
	pf_stats_t after = stats();
	CHECK_EQ((uintptr_t)again, page);
	CHECK_EQ(after.recycles - before.recycles, 1);
	CHECK_EQ(cache_info(c).bias, 32768);
	CHECK_EQ(page_info(again).refcount, 32769);
	pf_free(again);
	pf_cache_destroy(c);
}

static void test_abandon_with_outstanding(void)
{
	pf_cache_t *c = pf_cache_create();
	char *held = pf_cache_alloc(c, 4096);
	pf_cache_info_t ci = cache_info(c);
	for (unsigned i = 1; i < ci.page_size / 4096; i++)
		pf_free(pf_cache_alloc(c, 4096));
	pf_stats_t before = stats();
	char *next = pf_cache_alloc(c, 4096);
	pf_stats_t after = stats();
	CHECK(next != NULL);
	CHECK((uintptr_t)next - ci.page >= ci.page_size); /* a different page */
	CHECK_EQ(after.abandons - before.abandons, 1);
	CHECK_EQ(after.refills - before.refills, 1);
	/* the abandoned page is held by exactly the one outstanding fragment */
	pf_page_info_t pi = page_info(held);
	CHECK_EQ(pi.refcount, 1);
	CHECK(pi.flags & PF_PAGE_IN_USE);
	pf_free(held); /* last reference: the page goes back */
	CHECK_EQ(page_info(held).flags & PF_PAGE_IN_USE, 0);
	pf_free(next);
	pf_cache_destroy(c);
}

static void test_alignment(void)
{
	pf_cache_t *c = pf_cache_create();
	size_t aligns[] = { 1, 2, 4, 8, 16, 32, 64, 128, 256, 1024, 4096, 8192, 32768 };
	for (int round = 0; round < 200; round++) {
		for (size_t i = 0; i < sizeof(aligns) / sizeof(aligns[0]); i++) {
			size_t size = 1 + (size_t)(round * 37 + (int)i * 11) % 3000;
			char *p = pf_cache_alloc_align(c, size, aligns[i]);
			CHECK(p != NULL);
			CHECK_EQ((uintptr_t)p % aligns[i], 0);
			pf_free(p);
		}
	}
	pf_cache_destroy(c);
}

static void expect_refusal(void *p, int err)
{
	CHECK(p == NULL);
	CHECK_EQ(errno, err);
	CHECK_EQ(pf_last_error(), err);
	CHECK(strcmp(pf_last_error_message(), "no error") != 0);
}

static void test_refusals(void)
{
	pf_cache_t *c = pf_cache_create();
	pf_stats_t before = stats();
	expect_refusal(pf_cache_alloc(c, 0), EINVAL);
	expect_refusal(pf_cache_alloc(c, 32769), E2BIG);
	expect_refusal(pf_cache_alloc(c, SIZE_MAX), E2BIG);
	expect_refusal(pf_cache_alloc_align(c, 64, 3), EINVAL);
	expect_refusal(pf_cache_alloc_align(c, 64, 0), EINVAL);
	expect_refusal(pf_cache_alloc_align(c, 64, 65536), EINVAL);
	expect_refusal(pf_cache_alloc_align(c, 64, (size_t)1 << 40), EINVAL);
	expect_refusal(pf_cache_alloc(NULL, 64), EINVAL);
	expect_refusal(pf_alloc(0), EINVAL);
	/* refusals took nothing */
	pf_stats_t after = stats();
	CHECK_EQ(after.allocs, before.allocs);
	CHECK_EQ(after.refills, before.refills);
	/* the largest fragment is never refused because the current page is used up */
	char *small = pf_cache_alloc(c, 10);
	char *big = pf_cache_alloc(c, 32768);
	CHECK(big != NULL);
	char *big2 = pf_cache_alloc(c, 32768);
	CHECK(big2 != NULL);
	pf_free(small);
	pf_free(big);
	pf_free(big2);
	pf_cache_destroy(c);
}

static void test_owner_free_fast_path(void)
{
	pf_cache_t *c = pf_cache_create();
	char *a = pf_cache_alloc(c, 64);
	char *b = pf_cache_alloc(c, 128);
	pf_cache_info_t ci = cache_info(c);
	pf_stats_t before = stats();
	/* newest fragment: the bias takes the reference back and the offset rolls back */
	CHECK_EQ(pf_cache_free(c, b, 128), 0);
	CHECK_EQ(cache_info(c).offset, ci.offset - 128);
	CHECK_EQ(cache_info(c).bias, ci.bias + 1);
	CHECK_EQ(page_info(a).refcount, (int)cache_info(c).bias + 1);
	char *b2 = pf_cache_alloc(c, 128);
	CHECK(b2 == b); /* the same bytes again */
	/* not the newest: bias only */
	CHECK_EQ(pf_cache_free(c, a, 64), 0);
	CHECK_EQ(cache_info(c).offset, ci.offset);
	pf_stats_t after = stats();
	CHECK_EQ(after.bias_frees - before.bias_frees, 2);
	CHECK_EQ(after.frees - before.frees, 2);
	pf_cache_free(c, b2, 128);
	CHECK_EQ(page_info(a).refcount, (int)cache_info(c).bias);
	pf_cache_destroy(c);
}

static void test_default_cache(void)
{
	char *p = pf_alloc(200);
	CHECK(p != NULL);
	pf_cache_info_t ci = cache_info(pf_thread_cache());
	CHECK(ci.page != 0 && (uintptr_t)p >= ci.page && (uintptr_t)p < ci.page + ci.page_size);
	unsigned bias = ci.bias;
	CHECK_EQ(pf_free(p), 0); /* same thread, same page: back to the bias */
	CHECK_EQ(cache_info(pf_thread_cache()).bias, bias + 1);
	char *q = pf_alloc_align(100, 256);
	CHECK_EQ((uintptr_t)q % 256, 0);
	pf_free(q);
	pf_thread_flush();
	CHECK_EQ(cache_info(pf_thread_cache()).page, 0);
}

static void test_invalid_frees(void)
{
	int local;
	pf_stats_t before = stats();
	errno = 0;
	CHECK_EQ(pf_free(&local), -1);
	CHECK_EQ(errno, EINVAL);
	CHECK_EQ(pf_free(NULL), 0);
	/* an address in a page that is not handed out */
	pf_cache_t *c = pf_cache_create();
	char *p = pf_cache_alloc(c, 64);
	pf_free(p);
	pf_cache_destroy(c); /* page freed */
	CHECK_EQ(pf_free(p), -1);
	CHECK_EQ(errno, EINVAL);
	/* the last fragment of a page freed twice: the second finds the page free */
	pf_cache_t *c2 = pf_cache_create();
	char *q = pf_cache_alloc(c2, 64);
	pf_cache_destroy(c2); /* only q holds the page now: refcount 1 */
	CHECK_EQ(page_info(q).refcount, 1);
	CHECK_EQ(pf_free(q), 0);
	CHECK_EQ(pf_free(q), -1);
	CHECK_EQ(errno, EINVAL);
	pf_stats_t after = stats();
	CHECK_EQ(after.invalid_frees - before.invalid_frees, 3);
	CHECK_EQ(after.frees - before.frees, 2);
}

static void test_chunks_return_after_burst(void)
{
	enum { N = 4096 };
	static char *held[N];
	pf_cache_t *c = pf_cache_create();
	pf_stats_t before = stats();
	for (int i = 0; i < N; i++) { /* 4096 x 4 KiB = 16 MiB live */
		held[i] = pf_cache_alloc(c, 4096);
		CHECK(held[i] != NULL);
		memset(held[i], 0xa5, 4096);
	}
	pf_stats_t peak = stats();
	CHECK(peak.committed_bytes >= 16u * 1024 * 1024);
	CHECK(peak.pages_in_use >= 4096);
	for (int i = 0; i < N; i++)
		pf_free(held[i]);
	pf_cache_destroy(c);
	/* the thread's page lists still hold blocks: trim flushes them and says what it released */
	pf_stats_t before_trim = stats();
	size_t released = pf_trim();
	pf_stats_t after = stats();
	CHECK_EQ(released, after.chunk_releases - before_trim.chunk_releases);
	CHECK_EQ(after.pages_in_use, 0);
	CHECK_EQ(after.pages_cached, 0);
	CHECK_EQ(after.committed_bytes, (uint64_t)pf_option_get("PYFRAG_RETAIN") * PF_CHUNK_SIZE);
	CHECK(after.chunk_releases - before.chunk_releases >= 7);
	CHECK_EQ(after.allocs - after.frees, 0);
}

int main(void)
{
	RUN(test_bias_and_refcount);
	RUN(test_recycle_in_place);
	RUN(test_abandon_with_outstanding);
	RUN(test_alignment);
	RUN(test_refusals);
	RUN(test_owner_free_fast_path);
	RUN(test_default_cache);
	RUN(test_invalid_frees);
	RUN(test_chunks_return_after_burst);
	return check_summary();
}
