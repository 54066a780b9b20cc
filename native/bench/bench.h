/* SPDX-License-Identifier: GPL-2.0-only */
/*
 * What every benchmark program here shares: the clock, the IMIX sizes, the
 * result line, and the allocation calls.
 *
 * Built twice by native/SConscript:
 * - bench_X: plain malloc/free, linked against nothing but libc, so any
 *   allocator can be put under it with LD_PRELOAD (glibc, pyfrag, jemalloc...);
 * - bench_X_api: PF_BENCH_API defined and linked against libpyfrag.so: the
 *   same loop through pyfrag's direct C API on the thread's default cache,
 *   with pyfrag.h's inline fast paths (pf_cache_alloc_inline /
 *   pf_cache_alloc_align_inline, pf_cache_free_inline with the size on the
 *   owner thread), and pf_free on other threads.
 *
 * Result lines (parsed by pyfrag/tools/bench.py):
 *   result <workload> <case> ns_per_op <X> [<key> <value>]...
 */
#ifndef PF_BENCH_H
#define PF_BENCH_H

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#ifdef PF_BENCH_API
#include "pyfrag.h"
#define BENCH_FRONT "api"
static __thread pf_cache_t *b_cache_;
static inline pf_cache_t *b_cache(void)
{
	if (__builtin_expect(!b_cache_, 0))
		b_cache_ = pf_thread_cache();
	return b_cache_;
}
static inline void *b_alloc(size_t n)
{
	return pf_cache_alloc_inline(b_cache(), n);
}
static inline void *b_alloc_align(size_t n, size_t align)
{
	return pf_cache_alloc_align_inline(b_cache(), n, align);
}
/* Freed by the thread that allocated it: the cache takes the reference back. */
static inline void b_free_local(void *p, size_t n)
{
	pf_cache_free_inline(b_cache(), p, n);
}
static inline void b_free(void *p)
{
	pf_free(p);
}
#else
#define BENCH_FRONT "malloc"
static inline void *b_alloc(size_t n)
{
	return malloc(n);
}
static inline void *b_alloc_align(size_t n, size_t align)
{
	/* aligned_alloc wants a multiple of align on some libcs */
	return aligned_alloc(align, (n + align - 1) & ~(align - 1));
}
static inline void b_free_local(void *p, size_t n)
{
	(void)n;
	free(p);
}
static inline void b_free(void *p)
{
	free(p);
}
#endif

static inline void *b_check(void *p)
{
	if (!p) {
		fprintf(stderr, "allocation failed\n");
		exit(1);
	}
	return p;
}

/* IMIX: 64, 576 and 1500 bytes at 7:4:1 (the kernel's page_frag_test and pyfrag stress). */
static const size_t imix[12] = { 64, 64, 64, 64, 64, 64, 64, 576, 576, 576, 576, 1500 };

static inline double now(void)
{
	struct timespec ts;
	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (double)ts.tv_sec + (double)ts.tv_nsec * 1e-9;
}

/* Does the comma-separated list `cases` (NULL: all) name `name`? */
static inline int wanted(const char *cases, const char *name)
{
	if (!cases)
		return 1;
	size_t len = strlen(name);
	for (const char *p = cases; *p;) {
		size_t n = strcspn(p, ",");
		if (n == len && strncmp(p, name, n) == 0)
			return 1;
		p += n + (p[n] == ',');
	}
	return 0;
}

/* Resident bytes of this process: VmRSS plus hugetlb pages (which VmRSS leaves out). */
static inline long long rss_bytes(void)
{
	FILE *f = fopen("/proc/self/status", "r");
	if (!f)
		return -1;
	char line[256];
	long long kb = 0, v;
	while (fgets(line, sizeof(line), f))
		if (sscanf(line, "VmRSS: %lld", &v) == 1 || sscanf(line, "HugetlbPages: %lld", &v) == 1)
			kb += v;
	fclose(f);
	return kb * 1024;
}

#endif
