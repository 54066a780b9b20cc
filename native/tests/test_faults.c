// SPDX-License-Identifier: GPL-2.0-only
/*
 * Fault injection through the OS layer (pyfrag_debug.h): the arena
 * reservation, chunk commits, madvise, decommits, metadata maps and shared
 * arenas' file mappings failing,
 * alone and all at once under threads and PYFRAG_LIMIT. Every failed
 * allocation must be NULL with ENOMEM; no fragment handed out before may
 * change; the counters must stay true; allocation must work again once the
 * fault is gone; and after everything is freed no page may stay in use.
 * Init failures run in forked children (the parent has not initialised yet);
 * a failed init is retried once the fault is gone.
 */
#include "check.h"
#include "probe.h"
#include "pyfrag.h"
#include "pyfrag_debug.h"
#include "pyfrag_shared.h"

#include <errno.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdbool.h>
#include <stdint.h>
#include <string.h>
#include <sys/wait.h>
#include <unistd.h>

#define MiB (1024u * 1024u)

/* ---- helpers --------------------------------------------------------------------- */

struct held {
	unsigned char *p;
	size_t size;
	unsigned char fill;
};

enum { MAX_HELD = 4096 };
static struct held held[MAX_HELD];
static int nheld;

static unsigned char fill_of(const void *p, size_t size)
{
	uintptr_t x = (uintptr_t)p ^ size;
	return (unsigned char)(x ^ (x >> 8) ^ (x >> 16) ^ 0x5a);
}

static void hold(void *p, size_t size)
{
	CHECK(nheld < MAX_HELD);
	if (nheld >= MAX_HELD)
		return;
	held[nheld] = (struct held){ p, size, fill_of(p, size) };
	memset(p, held[nheld].fill, size);
	nheld++;
}

/* Every held fragment still has its bytes, and its page is in use. */
static void check_held(void)
{
	for (int i = 0; i < nheld; i++) {
		struct held *h = &held[i];
		size_t bad = 0;
		for (size_t k = 0; k < h->size; k++)
			bad += h->p[k] != h->fill;
		CHECK_EQ(bad, 0);
		pf_page_info_t pi = page_info(h->p);
		CHECK(pi.flags & PF_PAGE_IN_USE);
		CHECK(pi.refcount >= 1);
	}
}

static void free_held(void)
{
	check_held();
	for (int i = 0; i < nheld; i++)
		CHECK_EQ(pf_free(held[i].p), 0);
	nheld = 0;
}

static void expect_enomem(void *p)
{
	CHECK(p == NULL);
	CHECK_EQ(errno, ENOMEM);
	CHECK_EQ(pf_last_error(), ENOMEM);
}

static uint64_t failures_at(int site)
{
	uint64_t failures = 0;
	CHECK_EQ(pf_debug_fault_get(site, NULL, &failures), 0);
	return failures;
}

static void disarm_all(void)
{
	for (int site = 0; site < PF_FAULT_SITES; site++)
		CHECK_EQ(pf_debug_fault_set(site, 0, 0), 0);
}

/* Nothing in use, nothing cached, every reserve page home, chunks down to PYFRAG_RETAIN. */
static void check_all_back(void)
{
	pf_thread_flush();
	pf_trim();
	pf_stats_t s = stats();
	CHECK_EQ(s.pages_in_use, 0);
	CHECK_EQ(s.pages_cached, 0);
	CHECK_EQ(s.reserve_free_pages, 16);
	CHECK_EQ(s.allocs, s.frees);
	CHECK(s.committed_bytes <= (uint64_t)pf_option_get("PYFRAG_RETAIN") * PF_CHUNK_SIZE);
}

/* Run body() in a child process (before the parent initialises pyfrag); its failures count here. */
static void in_child(void (*body)(void))
{
	fflush(stdout);
	fflush(stderr);
	pid_t pid = fork();
	if (pid == 0) {
		check_failures_in_test = 0;
		body();
		fflush(stderr);
		_exit(check_failures_in_test ? 1 : 0);
	}
	int status = 0;
	CHECK(pid > 0 && waitpid(pid, &status, 0) == pid);
	CHECK(WIFEXITED(status));
	CHECK_EQ(WEXITSTATUS(status), 0);
}

/* ---- init failures (children) ------------------------------------------------------ */

static void everything_refused(void)
{
	int local = 0;
	errno = 0;
	CHECK_EQ(pf_init(), -1);
	CHECK_EQ(errno, ENOMEM);
	CHECK_EQ(pf_last_error(), ENOMEM);
	expect_enomem(pf_cache_create());
	expect_enomem(pf_alloc(64));
	expect_enomem(pf_alloc_align(64, 64));
	CHECK(pf_thread_cache() == NULL);
	CHECK_EQ(pf_free(&local), -1); /* not in an arena that does not exist */
	CHECK_EQ(errno, EINVAL);
	CHECK_EQ(pf_free(NULL), 0);
	CHECK_EQ(pf_trim(), 0);
	pf_thread_flush();
	uintptr_t base;
	size_t size;
	CHECK_EQ(pf_arena_range(&base, &size), -1);
	pf_stats_t s = stats(); /* still answers: nothing happened */
	CHECK_EQ(s.size, sizeof(s));
	CHECK_EQ(s.allocs, 0);
	CHECK_EQ(s.committed_bytes, 0);
	/* still failing: still clean */
	CHECK_EQ(pf_init(), -1);
	expect_enomem(pf_cache_create());
}

/* Once the OS gives memory again, init is retried and everything works. */
static void works_again(void)
{
	for (int site = 0; site < PF_FAULT_SITES; site++)
		pf_debug_fault_set(site, 0, 0);
	CHECK_EQ(pf_init(), 0);
	pf_cache_t *c = pf_cache_create();
	CHECK(c != NULL);
	char *p = pf_cache_alloc(c, 1500);
	CHECK(p != NULL);
	pf_free(p);
	pf_cache_destroy(c);
	CHECK_EQ(stats().reserve_free_pages, 16);
	pf_thread_flush();
	CHECK_EQ(stats().pages_in_use, 0);
}

static void reserve_fails(void)
{
	CHECK_EQ(pf_debug_fault_set(PF_FAULT_RESERVE, 1, -1), 0);
	everything_refused();
	CHECK(failures_at(PF_FAULT_RESERVE) >= 1);
	works_again();
}

static void page_array_fails(void)
{
	CHECK_EQ(pf_debug_fault_set(PF_FAULT_META, 1, -1), 0);
	everything_refused();
	CHECK(failures_at(PF_FAULT_META) >= 1);
	works_again();
}

/* The reserve's commit at init fails: init still succeeds, with no reserve. */
static void reserve_commit_fails(void)
{
	CHECK_EQ(pf_debug_fault_set(PF_FAULT_COMMIT, 1, 1), 0);
	CHECK_EQ(pf_init(), 0);
	CHECK_EQ(stats().reserve_free_pages, 0);
	CHECK_EQ(failures_at(PF_FAULT_COMMIT), 1);
	pf_cache_t *c = pf_cache_create();
	CHECK_EQ(pf_debug_fail_commit(1), 0);
	expect_enomem(pf_cache_alloc(c, 100)); /* no chunk, no reserve to fall back on */
	CHECK_EQ(pf_debug_fail_commit(0), 0);
	void *p = pf_cache_alloc(c, 100);
	CHECK(p != NULL);
	pf_free(p);
	pf_cache_destroy(c);
}

static void test_init_failures(void)
{
	in_child(reserve_fails);
	in_child(page_array_fails);
	in_child(reserve_commit_fails);
}

/* ---- the debug interface itself ---------------------------------------------------- */

static void test_fault_interface(void)
{
	errno = 0;
	CHECK_EQ(pf_debug_fault_set(-1, 1, 1), -1);
	CHECK_EQ(errno, EINVAL);
	CHECK_EQ(pf_debug_fault_set(PF_FAULT_SITES, 1, 1), -1);
	CHECK_EQ(pf_debug_fault_get(PF_FAULT_SITES, NULL, NULL), -1);
	CHECK(pf_debug_fault_name(PF_FAULT_SITES) == NULL);
	CHECK(strcmp(pf_debug_fault_name(PF_FAULT_COMMIT), "commit") == 0);
	CHECK(strcmp(pf_debug_fault_name(PF_FAULT_META), "meta") == 0);
}

/* ---- commits ------------------------------------------------------------------------- */

/* No chunk can be committed: order-0 refills take the 16 reserve pages, then ENOMEM. */
static void test_commit_faults_reserve_then_enomem(void)
{
	CHECK_EQ(pf_init(), 0);
	pf_stats_t before = stats();
	CHECK_EQ(before.committed_bytes, 0);
	CHECK_EQ(pf_debug_fail_commit(1), 0);
	pf_cache_t *c = pf_cache_create();
	for (;;) {
		void *p = pf_cache_alloc(c, 4096);
		if (!p) {
			expect_enomem(p);
			break;
		}
		CHECK(cache_info(c).pfmemalloc);
		hold(p, 4096);
	}
	CHECK_EQ(nheld, 16);
	expect_enomem(pf_cache_alloc(c, 32768)); /* an order-3 refill never takes the reserve */
	expect_enomem(pf_cache_alloc_align(c, 8, 4096));
	expect_enomem(pf_alloc(64));
	pf_stats_t s = stats();
	CHECK_EQ(s.reserve_pages - before.reserve_pages, 16);
	CHECK_EQ(s.reserve_free_pages, 0);
	CHECK_EQ(s.committed_bytes, 0);
	CHECK(s.alloc_failures - before.alloc_failures >= 4);
	CHECK(s.commit_failures - before.commit_failures >= 20);
	uint64_t calls = 0, failures = 0;
	pf_debug_fault_get(PF_FAULT_COMMIT, &calls, &failures);
	CHECK_EQ(calls, failures);
	CHECK(failures >= 3 * 20); /* auto mode tries hugetlb, THP and 4 KiB each time */
	check_held();

	/* memory comes back */
	CHECK_EQ(pf_debug_fail_commit(0), 0);
	void *p = pf_cache_alloc(c, 4096);
	CHECK(p != NULL);
	if (p)
		hold(p, 4096);
	CHECK_EQ(stats().chunk_commits - s.chunk_commits, 1);
	CHECK(!cache_info(c).pfmemalloc);
	free_held();
	pf_cache_destroy(c);
	CHECK_EQ(stats().reserve_returns - before.reserve_returns, 16);
	check_all_back();
}

/* auto mode falls back a backing when one commit fails; a madvise failure fails a THP commit. */
static void test_backing_fallback(void)
{
	pf_cache_t *c = pf_cache_create();
	CHECK_EQ(pf_option_set("PYFRAG_RETAIN", "0"), 0);
	check_all_back();
	CHECK_EQ(stats().committed_bytes, 0);

	/* the first commit (hugetlb in auto mode) fails once: the chunk is not hugetlb */
	pf_stats_t before = stats();
	CHECK_EQ(pf_debug_fault_set(PF_FAULT_COMMIT, 1, 1), 0);
	void *p = pf_cache_alloc(c, 32768);
	CHECK(p != NULL);
	pf_stats_t after = stats();
	CHECK_EQ(after.chunks_hugetlb, before.chunks_hugetlb);
	CHECK_EQ(after.chunks_thp + after.chunks_4k, 1);
	CHECK_EQ(failures_at(PF_FAULT_COMMIT), 1);
	pf_free(p);
	pf_cache_drain(c);
	check_all_back();

	/* THP only: madvise(MADV_HUGEPAGE) fails, so does the commit, so does the order-3 refill */
	CHECK_EQ(pf_option_set("PYFRAG_HUGEPAGES", "thp"), 0);
	CHECK_EQ(pf_debug_fault_set(PF_FAULT_MADVISE, 1, 1), 0);
	expect_enomem(pf_cache_alloc(c, 32768));
	CHECK_EQ(failures_at(PF_FAULT_MADVISE), 1);
	CHECK_EQ(stats().committed_bytes, 0);
	/* the next one is not failed */
	p = pf_cache_alloc(c, 32768);
	if (stats().chunks_thp == 1) /* this kernel does THP: madvise itself worked */
		CHECK(p != NULL);
	pf_free(p);
	pf_cache_drain(c);
	check_all_back();

	/* 4 KiB pages: the MADV_NOHUGEPAGE hint may fail, the commit still holds */
	CHECK_EQ(pf_option_set("PYFRAG_HUGEPAGES", "off"), 0);
	CHECK_EQ(pf_debug_fault_set(PF_FAULT_MADVISE, 1, -1), 0);
	p = pf_cache_alloc(c, 32768);
	CHECK(p != NULL);
	CHECK_EQ(stats().chunks_4k, 1);
	CHECK(failures_at(PF_FAULT_MADVISE) >= 1);
	pf_free(p);
	pf_cache_destroy(c);
	disarm_all();
	CHECK_EQ(pf_option_set("PYFRAG_HUGEPAGES", "auto"), 0);
	CHECK_EQ(pf_option_set("PYFRAG_RETAIN", "1"), 0);
	check_all_back();
}

/* ---- decommits ------------------------------------------------------------------------ */

/* A chunk the OS will not take back stays committed, and stays usable: never lost. */
static void test_decommit_fault_keeps_the_chunk(void)
{
	CHECK_EQ(pf_option_set("PYFRAG_RETAIN", "0"), 0);
	check_all_back();
	pf_cache_t *c = pf_cache_create();
	while (stats().committed_bytes < 3 * PF_CHUNK_SIZE) {
		void *p = pf_cache_alloc(c, 32768);
		CHECK(p != NULL);
		if (!p)
			break;
		hold(p, 32768);
	}
	pf_cache_drain(c);
	CHECK_EQ(pf_debug_fault_set(PF_FAULT_DECOMMIT, 1, -1), 0);
	free_held();
	pf_thread_flush();
	CHECK_EQ(pf_trim(), 0);
	pf_stats_t s = stats();
	CHECK(failures_at(PF_FAULT_DECOMMIT) >= 1);
	CHECK_EQ(s.committed_bytes, 3 * PF_CHUNK_SIZE);
	CHECK_EQ(s.chunks_empty, 3); /* still on the free lists, not leaked */
	CHECK_EQ(s.pages_in_use, 0);

	/* the kept chunks serve the next allocations: no new commit */
	for (int i = 0; i < 3 * 64; i++) {
		void *p = pf_cache_alloc(c, 32768);
		CHECK(p != NULL);
		if (p)
			hold(p, 32768);
	}
	CHECK_EQ(stats().chunk_commits, s.chunk_commits);
	free_held();
	pf_cache_destroy(c);

	/* the OS takes them back once it can */
	CHECK_EQ(pf_debug_fault_set(PF_FAULT_DECOMMIT, 0, 0), 0);
	pf_thread_flush();
	pf_trim();
	s = stats();
	CHECK_EQ(s.committed_bytes, 0);
	CHECK_EQ(s.chunks_empty, 0);
	CHECK_EQ(pf_option_set("PYFRAG_RETAIN", "1"), 0);
	check_all_back();
}

/* ---- metadata ------------------------------------------------------------------------ */

static void *thread_alloc(void *arg)
{
	(void)arg;
	void *p = pf_alloc(64);
	int err = errno;
	if (p) {
		pf_free(p);
		return (void *)1;
	}
	return err == ENOMEM && pf_last_error() == ENOMEM ? NULL : (void *)2;
}

static void *thread_free(void *arg)
{
	return pf_free(arg) == 0 ? NULL : (void *)1;
}

static void test_meta_faults(void)
{
	enum { MAX_CACHES = 4096 };
	static pf_cache_t *caches[MAX_CACHES];
	int n = 0;
	void *frag = pf_alloc(100);
	CHECK(frag != NULL);
	CHECK_EQ(pf_debug_fault_set(PF_FAULT_META, 1, -1), 0);
	for (; n < MAX_CACHES; n++) {
		caches[n] = pf_cache_create();
		if (!caches[n])
			break;
	}
	CHECK(n < MAX_CACHES);
	expect_enomem(n < MAX_CACHES ? caches[n] : NULL);
	/* a new thread cannot get its state: its allocations fail cleanly, its frees work */
	pthread_t t;
	void *ret = (void *)3;
	pthread_create(&t, NULL, thread_alloc, NULL);
	pthread_join(t, &ret);
	CHECK(ret == NULL);
	pthread_create(&t, NULL, thread_free, frag);
	pthread_join(t, &ret);
	CHECK(ret == NULL);
	/* the caches made before still work */
	for (int i = 0; i < n; i += 97) {
		void *p = pf_cache_alloc(caches[i], 64);
		CHECK(p != NULL);
		pf_free(p);
	}
	CHECK_EQ(pf_debug_fault_set(PF_FAULT_META, 0, 0), 0);
	pf_cache_t *late = pf_cache_create();
	CHECK(late != NULL);
	pf_cache_destroy(late);
	pthread_create(&t, NULL, thread_alloc, NULL);
	pthread_join(t, &ret);
	CHECK(ret == (void *)1);
	for (int i = 0; i < n; i++)
		pf_cache_destroy(caches[i]);
	check_all_back();
}

/* ---- shared arenas' file mappings ----------------------------------------------------- */

static void test_shared_map_faults(void)
{
	char arena_name[64];
	snprintf(arena_name, sizeof(arena_name), "cfault-%d", (int)getpid());
	CHECK_EQ(pf_debug_fault_set(PF_FAULT_SHARED, 1, -1), 0);
	expect_enomem(pf_shared_create(arena_name, 8 * MiB, 0, PF_SHARED_BACKING_4K, NULL));
	pf_shared_t *none = pf_shared_attach(arena_name, NULL);
	CHECK(none == NULL);
	CHECK_EQ(errno, ENOENT); /* the failed create left no file behind */
	CHECK_EQ(pf_debug_fault_set(PF_FAULT_SHARED, 0, 0), 0);
	pf_shared_t *a = pf_shared_create(arena_name, 8 * MiB, 0, PF_SHARED_BACKING_4K, NULL);
	CHECK(a != NULL);
	CHECK_EQ(pf_shared_detach(a), 0);
	/* attach maps twice (the header alone, then the whole arena): fail each in turn */
	for (uint64_t nth = 1; nth <= 2; nth++) {
		CHECK_EQ(pf_debug_fault_set(PF_FAULT_SHARED, nth, 1), 0);
		expect_enomem(pf_shared_attach(arena_name, NULL));
		CHECK_EQ(failures_at(PF_FAULT_SHARED), 1);
	}
	CHECK_EQ(pf_debug_fault_set(PF_FAULT_SHARED, 0, 0), 0);
	a = pf_shared_attach(arena_name, NULL);
	CHECK(a != NULL);
	void *p = pf_shared_alloc(a, 1500);
	CHECK(p != NULL);
	CHECK_EQ(pf_free(p), 0);
	CHECK_EQ(pf_shared_detach(a), 0);
	CHECK_EQ(pf_shared_unlink(arena_name, NULL), 0);
}

/* ---- PYFRAG_LIMIT ------------------------------------------------------------------------ */

static void test_limit_enomem_and_recovery(void)
{
	pf_cache_t *c = pf_cache_create();
	void *first = pf_cache_alloc(c, 32768);
	CHECK(first != NULL);
	hold(first, 32768);
	char limit[32];
	snprintf(limit, sizeof(limit), "%llu", (unsigned long long)stats().committed_bytes);
	CHECK_EQ(pf_option_set("PYFRAG_LIMIT", limit), 0);
	pf_stats_t before = stats();
	for (;;) {
		void *p = pf_cache_alloc(c, 32768);
		if (!p) {
			expect_enomem(p);
			break;
		}
		hold(p, 32768);
	}
	expect_enomem(pf_cache_alloc_align(c, 20000, 32768));
	pf_stats_t s = stats();
	CHECK_EQ(s.committed_bytes, before.committed_bytes);
	CHECK(s.commit_failures > before.commit_failures);
	check_held();
	CHECK_EQ(pf_option_set("PYFRAG_LIMIT", "0"), 0);
	void *p = pf_cache_alloc(c, 32768);
	CHECK(p != NULL);
	if (p)
		hold(p, 32768);
	free_held();
	pf_cache_destroy(c);
	check_all_back();
}

/* ---- everything at once, two threads ------------------------------------------------------- */

enum { STORM_LIVE = 256, STORM_STEPS = 40000 };

struct storm {
	pthread_mutex_t lock; /* guards handoff */
	void *handoff[STORM_LIVE];
	int nhandoff;
	_Atomic int failures_not_enomem;
	_Atomic int corrupt;
	_Atomic int misaligned;
	_Atomic long enomem;
};
static struct storm storm = { .lock = PTHREAD_MUTEX_INITIALIZER };

static uint64_t next_rand(uint64_t *s)
{
	*s ^= *s << 13;
	*s ^= *s >> 7;
	*s ^= *s << 17;
	return *s;
}

static bool intact(const struct held *h)
{
	for (size_t k = 0; k < h->size; k++)
		if (h->p[k] != h->fill)
			return false;
	return true;
}

/* Give a fragment to the other thread to free (or free it here if the box is full). */
static void hand_off(void *p)
{
	pthread_mutex_lock(&storm.lock);
	bool kept = storm.nhandoff < STORM_LIVE;
	if (kept)
		storm.handoff[storm.nhandoff++] = p;
	pthread_mutex_unlock(&storm.lock);
	if (!kept)
		pf_free(p);
}

static void drain_handoff(void)
{
	pthread_mutex_lock(&storm.lock);
	int n = storm.nhandoff;
	void *mine[STORM_LIVE];
	memcpy(mine, storm.handoff, sizeof(void *) * (size_t)n);
	storm.nhandoff = 0;
	pthread_mutex_unlock(&storm.lock);
	for (int i = 0; i < n; i++)
		pf_free(mine[i]);
}

static void *storm_thread(void *arg)
{
	uint64_t seed = (uint64_t)(uintptr_t)arg * 0x9e3779b97f4a7c15ull + 1;
	struct held live[STORM_LIVE];
	int nlive = 0;
	pf_cache_t *c = pf_cache_create();
	for (int step = 0; step < STORM_STEPS; step++) {
		uint64_t r = next_rand(&seed);
		if (nlive == STORM_LIVE || (nlive && (r & 3) == 0)) {
			int i = (int)((r >> 8) % (uint64_t)nlive);
			if (!intact(&live[i]))
				storm.corrupt++;
			if ((r >> 40) & 1)
				hand_off(live[i].p);
			else if (c)
				pf_cache_free(c, live[i].p, live[i].size);
			live[i] = live[--nlive];
			continue;
		}
		if ((r & 0xff) == 1)
			drain_handoff();
		if (!c) {
			c = pf_cache_create(); /* the meta fault may have refused it */
			if (!c)
				continue;
		}
		size_t size = (r >> 16) % 4 == 0 ? 1 + (r >> 20) % 32768 : 1 + (r >> 20) % 2048;
		size_t align = (size_t)1 << ((r >> 36) % 16);
		void *p = pf_cache_alloc_align(c, size, align);
		if (!p) {
			if (errno == ENOMEM && pf_last_error() == ENOMEM)
				storm.enomem++;
			else
				storm.failures_not_enomem++;
			continue;
		}
		if ((uintptr_t)p % align)
			storm.misaligned++;
		live[nlive] = (struct held){ p, size, fill_of(p, size) };
		memset(p, live[nlive].fill, size);
		nlive++;
	}
	for (int i = 0; i < nlive; i++) {
		if (!intact(&live[i]))
			storm.corrupt++;
		pf_free(live[i].p);
	}
	pf_cache_destroy(c);
	return NULL;
}

static void test_fault_storm(void)
{
	pf_stats_t before = stats();
	CHECK_EQ(pf_option_set("PYFRAG_RETAIN", "0"), 0);
	CHECK_EQ(pf_option_set("PYFRAG_LIMIT", "8M"), 0);
	CHECK_EQ(pf_option_set("PYFRAG_PCP_HIGH", "4"), 0);
	CHECK_EQ(pf_debug_fault_set(PF_FAULT_COMMIT, 3, -1), 0);
	CHECK_EQ(pf_debug_fault_set(PF_FAULT_MADVISE, 2, -1), 0);
	CHECK_EQ(pf_debug_fault_set(PF_FAULT_DECOMMIT, 2, -1), 0);
	CHECK_EQ(pf_debug_fault_set(PF_FAULT_META, 2, -1), 0);
	pthread_t t[2];
	for (int i = 0; i < 2; i++)
		pthread_create(&t[i], NULL, storm_thread, (void *)(uintptr_t)(i + 1));
	for (int i = 0; i < 2; i++)
		pthread_join(t[i], NULL);
	drain_handoff();
	disarm_all();
	CHECK_EQ(storm.failures_not_enomem, 0);
	CHECK_EQ(storm.corrupt, 0);
	CHECK_EQ(storm.misaligned, 0);
	CHECK(storm.enomem > 0);
	pf_stats_t s = stats();
	CHECK(s.commit_failures > before.commit_failures);
	CHECK_EQ(s.alloc_failures - before.alloc_failures, storm.enomem);
	printf("# storm: %ld ENOMEM, %llu commit failures, %llu reserve pages, %llu allocs\n",
	       (long)storm.enomem, (unsigned long long)(s.commit_failures - before.commit_failures),
	       (unsigned long long)(s.reserve_pages - before.reserve_pages),
	       (unsigned long long)(s.allocs - before.allocs));
	CHECK_EQ(pf_option_set("PYFRAG_LIMIT", "0"), 0);
	CHECK_EQ(pf_option_set("PYFRAG_PCP_HIGH", "16"), 0);
	check_all_back();
	CHECK_EQ(stats().committed_bytes, 0); /* RETAIN=0: every chunk the faults kept went back */
	CHECK_EQ(pf_option_set("PYFRAG_RETAIN", "1"), 0);
	/* and it all works again */
	pf_cache_t *c = pf_cache_create();
	void *p = pf_cache_alloc(c, 1500);
	CHECK(p != NULL);
	pf_free(p);
	pf_cache_destroy(c);
}

int main(void)
{
	/*
	 * These tests fail commits of each backing in turn: hugepages from the
	 * first chunk, not after the small start (test_backing.py tests that).
	 */
	CHECK_EQ(pf_option_set("PYFRAG_HUGEPAGES_AFTER", "0"), 0);
	RUN(test_init_failures); /* before this process initialises pyfrag */
	RUN(test_fault_interface);
	RUN(test_commit_faults_reserve_then_enomem);
	RUN(test_backing_fallback);
	RUN(test_decommit_fault_keeps_the_chunk);
	RUN(test_meta_faults);
	RUN(test_shared_map_faults);
	RUN(test_limit_enomem_and_recovery);
	RUN(test_fault_storm);
	return check_summary();
}
