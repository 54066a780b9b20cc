// SPDX-License-Identifier: GPL-2.0-only
/*
 * page_frag under a memory cap (PYFRAG_LIMIT=2M: one chunk) with a 64 KiB
 * reserve: order-0 fallback once no order-3 block is left, reserve pages
 * handed out when nothing else is, never recycled in place and given back to
 * the reserve, ENOMEM at the end, and allocation working again once memory
 * comes back.
 */
#include "check.h"
#include "probe.h"
#include "pyfrag.h"

#include <errno.h>
#include <string.h>

enum { MAX_HELD = 2048 };
static char *held[MAX_HELD];
static int nheld;

static void test_fallback_reserve_exhaustion(void)
{
	pf_cache_t *c = pf_cache_create();
	CHECK(c != NULL);
	int saw_late_fallback = 0, saw_reserve = 0;
	for (;;) {
		pf_stats_t before = stats();
		char *p = pf_cache_alloc(c, 4096);
		if (!p) {
			CHECK_EQ(errno, ENOMEM);
			break;
		}
		CHECK(nheld < MAX_HELD);
		held[nheld++] = p;
		pf_stats_t after = stats();
		pf_cache_info_t ci = cache_info(c);
		if (after.order0_fallbacks > before.order0_fallbacks && before.refills > 0 &&
		    !ci.pfmemalloc) {
			/* no order-3 block left in the one chunk the limit allows: a 4 KiB page, no new chunk */
			saw_late_fallback = 1;
			CHECK_EQ(ci.page_size, 4096);
			CHECK_EQ(after.committed_bytes, 2u * 1024 * 1024);
			CHECK_EQ(after.chunk_commits, before.chunk_commits);
		}
		if (after.reserve_pages > before.reserve_pages) {
			saw_reserve = 1;
			CHECK(ci.pfmemalloc);
			pf_page_info_t pi;
			CHECK_EQ(pf_page_query(p, &pi), 0);
			CHECK(pi.flags & PF_PAGE_RESERVE);
			CHECK_EQ(pi.size, 4096);
		}
	}
	CHECK(saw_late_fallback);
	CHECK(saw_reserve);
	pf_stats_t s = stats();
	CHECK_EQ(s.reserve_pages, 16);
	CHECK_EQ(s.reserve_free_pages, 0);
	CHECK(s.alloc_failures >= 1);
	CHECK(s.commit_failures >= 1);
	CHECK_EQ(s.committed_bytes, 2u * 1024 * 1024);
	/* 512 pages in the chunk, 16 in the reserve, one 4096-byte fragment per 4 KiB */
	CHECK_EQ(nheld, 512 + 16);

	/* memory comes back: allocation works again */
	for (int i = 0; i < nheld; i++)
		CHECK_EQ(pf_free(held[i]), 0);
	nheld = 0;
	s = stats();
	CHECK_EQ(s.reserve_free_pages, 16);
	CHECK_EQ(s.reserve_returns, 16);
	char *p = pf_cache_alloc(c, 4096);
	CHECK(p != NULL);
	pf_free(p);
	pf_cache_destroy(c);
	pf_thread_flush();
	CHECK_EQ(stats().pages_in_use, 0);
}

static void test_reserve_page_never_recycled(void)
{
	pf_cache_t *c = pf_cache_create();
	/* use up the chunk with fragments held, until the cache is on a reserve page */
	for (;;) {
		char *p = pf_cache_alloc(c, 4096);
		CHECK(p != NULL);
		if (!p)
			return;
		if (cache_info(c).pfmemalloc) {
			CHECK_EQ(pf_free(p), 0); /* every fragment of the reserve page is back */
			break;
		}
		held[nheld++] = p;
	}
	pf_stats_t before = stats();
	char *next = pf_cache_alloc(c, 4096);
	pf_stats_t after = stats();
	CHECK(next != NULL);
	CHECK_EQ(after.recycles, before.recycles); /* not reused in place */
	CHECK_EQ(after.reserve_returns - before.reserve_returns, 1);
	CHECK_EQ(after.refills - before.refills, 1);
	CHECK(cache_info(c).pfmemalloc); /* the only memory left is the reserve */
	pf_free(next);
	for (int i = 0; i < nheld; i++)
		pf_free(held[i]);
	nheld = 0;
	pf_cache_destroy(c);
	pf_thread_flush();
	pf_stats_t end = stats();
	CHECK_EQ(end.pages_in_use, 0);
	CHECK_EQ(end.reserve_free_pages, 16);
}

static void test_limit_can_change(void)
{
	CHECK_EQ(pf_option_set("PYFRAG_LIMIT", "4M"), 0);
	CHECK_EQ(pf_option_get("PYFRAG_LIMIT"), 4 << 20);
	pf_cache_t *c = pf_cache_create();
	for (;;) {
		char *p = pf_cache_alloc(c, 32768);
		if (!p)
			break;
		held[nheld++] = p;
	}
	CHECK_EQ(stats().committed_bytes, 4u << 20);
	CHECK_EQ(nheld, 2 * 512 / 8);
	for (int i = 0; i < nheld; i++)
		pf_free(held[i]);
	nheld = 0;
	pf_cache_destroy(c);
	/* fixed options refuse changes once the arena exists */
	errno = 0;
	CHECK_EQ(pf_option_set("PYFRAG_RESERVE", "1M"), -1);
	CHECK_EQ(errno, EBUSY);
	CHECK_EQ(pf_option_set("PYFRAG_NOPE", "1"), -1);
	CHECK_EQ(errno, EINVAL);
	CHECK_EQ(pf_option_set("PYFRAG_LIMIT", "12Q"), -1);
	CHECK_EQ(errno, EINVAL);
	CHECK_EQ(pf_option_get("PYFRAG_LIMIT"), 4 << 20); /* unchanged by the bad value */
}

int main(void)
{
	/* before the arena exists, so they apply from the start */
	if (pf_option_set("PYFRAG_LIMIT", "2M") || pf_option_set("PYFRAG_RESERVE", "64K") ||
	    pf_option_set("PYFRAG_RETAIN", "1")) {
		fprintf(stderr, "setting options failed: %s\n", pf_last_error_message());
		return 2;
	}
	RUN(test_fallback_reserve_exhaustion);
	RUN(test_reserve_page_never_recycled);
	RUN(test_limit_can_change);
	return check_summary();
}
