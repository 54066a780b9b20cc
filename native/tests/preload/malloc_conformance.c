// SPDX-License-Identifier: GPL-2.0-only
/*
 * The malloc family's contract, as glibc keeps it: run once on glibc and once
 * under LD_PRELOAD=libpyfrag.so, every check must hold both times. errno and
 * overflow cases, the alignment of every result, content kept by realloc
 * across sizes (small, page runs, chunk runs), calloc zeroing reused memory.
 * With an argument it does one thing that must end the program instead
 * (double-free, double-free-medium, double-free-remote, bad-pointer,
 * tail-overflow) or shows the
 * PYFRAG_LIMIT behaviour (limit).
 * Not linked against pyfrag: pyfrag's own counters are reached through
 * dlsym when it is preloaded.
 */
#include "check.h"

#include <dlfcn.h>
#include <errno.h>
#include <malloc.h>
#include <pthread.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

void *reallocarray(void *ptr, size_t n, size_t size);
void *pvalloc(size_t size);

/* Through these the compiler cannot see a size is absurd or a pointer was freed: the point is to do it. */
static size_t opaque(size_t x)
{
	volatile size_t v = x;
	return v;
}

static void *hide(void *p)
{
	void *volatile v = p;
	return v;
}

#define HUGE_SIZE opaque((size_t)PTRDIFF_MAX + 1)
#define ALL_ONES opaque(SIZE_MAX)

static const size_t sizes[] = { 0,    1,     8,     15,    16,      17,      24,       64,
				100,  576,   1000,  1500,  2048,    4000,    4080,     4081,
				4096, 5000,  8192,  12000, 65536,   100000,  1048575,  1048577,
				2097152, 2097153, 5000000, 16777216 };
#define NSIZES (sizeof(sizes) / sizeof(sizes[0]))

static int aligned(const void *p, size_t align)
{
	return ((uintptr_t)p & (align - 1)) == 0;
}

static void fill(unsigned char *p, size_t n, unsigned seed)
{
	for (size_t i = 0; i < n; i++)
		p[i] = (unsigned char)(seed + i * 7);
}

static int same(const unsigned char *p, size_t n, unsigned seed)
{
	for (size_t i = 0; i < n; i++)
		if (p[i] != (unsigned char)(seed + i * 7))
			return 0;
	return 1;
}

/* Is pyfrag the malloc here? Its C API is then in the global scope. */
static int pyfrag_active(void)
{
	return dlsym(RTLD_DEFAULT, "pf_stats_get") != NULL;
}

static void test_malloc_sizes_and_alignment(void)
{
	void *p[NSIZES];
	for (size_t i = 0; i < NSIZES; i++) {
		errno = 4242;
		p[i] = malloc(sizes[i]);
		CHECK(p[i] != NULL);
		CHECK_EQ(errno, 4242); /* success leaves errno alone */
		CHECK(aligned(p[i], 16));
		CHECK(malloc_usable_size(p[i]) >= sizes[i]);
		if (sizes[i])
			fill(p[i], sizes[i], (unsigned)i);
	}
	for (size_t i = 0; i < NSIZES; i++) {
		if (sizes[i])
			CHECK(same(p[i], sizes[i], (unsigned)i));
		for (size_t j = 0; j < i; j++)
			CHECK(p[i] != p[j]);
		errno = 4243;
		free(p[i]);
		CHECK_EQ(errno, 4243); /* free leaves errno alone */
	}
	free(NULL);
	CHECK_EQ(malloc_usable_size(NULL), 0);
}

static void test_malloc_failures(void)
{
	errno = 0;
	CHECK(malloc(ALL_ONES) == NULL);
	CHECK_EQ(errno, ENOMEM);
	errno = 0;
	CHECK(malloc(HUGE_SIZE) == NULL);
	CHECK_EQ(errno, ENOMEM);
	errno = 0;
	CHECK(malloc(ALL_ONES - 4096) == NULL);
	CHECK_EQ(errno, ENOMEM);
}

static void test_calloc(void)
{
	for (size_t i = 0; i < NSIZES; i++) {
		size_t n = sizes[i];
		unsigned char *dirty = malloc(n);
		memset(dirty, 0xff, n);
		free(dirty); /* the next block of this size likely reuses these bytes */
		unsigned char *p = calloc(1, n);
		CHECK(p != NULL);
		CHECK(aligned(p, 16));
		size_t nonzero = 0;
		for (size_t k = 0; k < n; k++)
			nonzero += p[k] != 0;
		CHECK_EQ(nonzero, 0);
		free(p);
	}
	unsigned char *q = calloc(1000, 3);
	CHECK(q != NULL);
	for (size_t k = 0; k < 3000; k++)
		CHECK(q[k] == 0);
	free(q);
	CHECK((q = calloc(0, 100)) != NULL);
	free(q);
	errno = 0;
	CHECK(calloc(ALL_ONES / 2 + 1, 2) == NULL); /* n * size overflows */
	CHECK_EQ(errno, ENOMEM);
	errno = 0;
	CHECK(calloc(opaque((size_t)1 << 33), (size_t)1 << 33) == NULL);
	CHECK_EQ(errno, ENOMEM);
	errno = 0;
	CHECK(calloc(1, ALL_ONES) == NULL);
	CHECK_EQ(errno, ENOMEM);
}

static void test_realloc_keeps_content(void)
{
	/* grow through every route and back down, checking the bytes each time */
	size_t kept = 0;
	unsigned char *p = realloc(NULL, 10); /* realloc(NULL) is malloc */
	CHECK(p != NULL);
	fill(p, 10, 3);
	kept = 10;
	for (size_t i = 0; i < NSIZES; i++) {
		size_t n = sizes[i] ? sizes[i] : 1;
		unsigned char *q = realloc(p, n);
		CHECK(q != NULL);
		if (!q)
			return;
		CHECK(aligned(q, 16));
		size_t check = kept < n ? kept : n;
		CHECK(same(q, check, 3));
		fill(q, n, 3);
		kept = n;
		p = q;
	}
	for (size_t i = NSIZES; i-- > 0;) {
		size_t n = sizes[i] ? sizes[i] : 1;
		unsigned char *q = realloc(p, n);
		CHECK(q != NULL);
		CHECK(same(q, n < kept ? n : kept, 3));
		kept = n;
		p = q;
	}
	free(p);
}

static void test_realloc_edges(void)
{
	/* shrinking in place keeps the pointer and the bytes */
	unsigned char *p = malloc(1000);
	fill(p, 1000, 9);
	unsigned char *q = realloc(p, 10);
	CHECK(q != NULL);
	CHECK(same(q, 10, 9));
	/* a failed realloc leaves the block alone */
	errno = 0;
	CHECK(realloc(hide(q), ALL_ONES) == NULL);
	CHECK_EQ(errno, ENOMEM);
	errno = 0;
	CHECK(realloc(hide(q), HUGE_SIZE) == NULL);
	CHECK_EQ(errno, ENOMEM);
	CHECK(same(q, 10, 9));
	/* size 0 frees and returns NULL, as glibc does */
	CHECK(realloc(q, 0) == NULL);
	/* many small reallocs growing one byte at a time (the newest block grows in place) */
	char *s = NULL;
	for (int i = 0; i < 10000; i++) {
		s = realloc(s, (size_t)i + 2);
		s[i] = (char)('a' + i % 26);
		s[i + 1] = 0;
	}
	int ok = 1;
	for (int i = 0; i < 10000; i++)
		ok &= s[i] == (char)('a' + i % 26);
	CHECK(ok);
	free(s);
}

static void test_reallocarray(void)
{
	unsigned char *p = reallocarray(NULL, 10, 10);
	CHECK(p != NULL);
	fill(p, 100, 5);
	errno = 0;
	CHECK(reallocarray(hide(p), ALL_ONES / 2, 3) == NULL);
	CHECK_EQ(errno, ENOMEM);
	CHECK(same(p, 100, 5));
	p = reallocarray(p, 1000, 10);
	CHECK(p != NULL);
	CHECK(same(p, 100, 5));
	free(p);
}

static void test_posix_memalign(void)
{
	void *p = (void *)1;
	errno = 4242;
	CHECK_EQ(posix_memalign(&p, 0, 10), EINVAL);
	CHECK_EQ(posix_memalign(&p, 3, 10), EINVAL);
	CHECK_EQ(posix_memalign(&p, 4, 10), EINVAL); /* not a multiple of sizeof(void *) */
	CHECK_EQ(posix_memalign(&p, 24, 10), EINVAL);
	CHECK_EQ(errno, 4242); /* the error is the return value, errno is left alone */
	CHECK_EQ(posix_memalign(&p, 64, ALL_ONES), ENOMEM);
	CHECK_EQ(posix_memalign(&p, 64, HUGE_SIZE), ENOMEM);
	/* glibc 2.36 sets errno on ENOMEM here too; pyfrag leaves it alone as POSIX intends */
	if (pyfrag_active())
		CHECK_EQ(errno, 4242);
	errno = 4242;
	CHECK(p == (void *)1); /* and *out alone on failure */
	for (size_t align = sizeof(void *); align <= ((size_t)1 << 23); align <<= 1) {
		for (size_t i = 0; i < NSIZES; i += 3) {
			void *q = NULL;
			CHECK_EQ(posix_memalign(&q, align, sizes[i]), 0);
			CHECK(q != NULL);
			CHECK(aligned(q, align));
			CHECK(malloc_usable_size(q) >= sizes[i]);
			if (sizes[i])
				memset(q, 0x5a, sizes[i]);
			free(q);
		}
	}
	CHECK_EQ(errno, 4242);
}

static void test_aligned_alloc_memalign(void)
{
	for (size_t align = 1; align <= ((size_t)1 << 22); align <<= 1) {
		void *a = aligned_alloc(align, 3 * align);
		void *m = memalign(align, 100);
		CHECK(a != NULL && m != NULL);
		CHECK(aligned(a, align));
		CHECK(aligned(m, align));
		CHECK(aligned(a, 16) && aligned(m, 16)); /* small alignments are malloc's */
		memset(a, 1, 3 * align);
		memset(m, 2, 100);
		free(a);
		free(m);
	}
	/* memalign rounds an alignment that is not a power of two up (glibc) */
	void *p = memalign(24, 10);
	CHECK(p != NULL && aligned(p, 32));
	free(p);
	p = memalign(3000, 10);
	CHECK(p != NULL && aligned(p, 4096));
	free(p);
	errno = 0;
	CHECK(memalign(ALL_ONES / 2 + 2, 10) == NULL);
	CHECK_EQ(errno, EINVAL);
	errno = 0;
	CHECK(memalign(64, ALL_ONES) == NULL);
	CHECK_EQ(errno, ENOMEM);
	errno = 0;
	CHECK(aligned_alloc(64, HUGE_SIZE) == NULL);
	CHECK_EQ(errno, ENOMEM);
}

static void test_valloc_pvalloc(void)
{
	long page = sysconf(_SC_PAGESIZE);
	for (size_t i = 0; i < NSIZES; i += 2) {
		void *v = valloc(sizes[i]);
		void *pv = pvalloc(sizes[i]);
		CHECK(v != NULL && pv != NULL);
		CHECK(aligned(v, (size_t)page));
		CHECK(aligned(pv, (size_t)page));
		CHECK(malloc_usable_size(pv) >= ((sizes[i] + (size_t)page - 1) & ~((size_t)page - 1)));
		free(v);
		free(pv);
	}
	errno = 0;
	CHECK(valloc(ALL_ONES) == NULL);
	CHECK_EQ(errno, ENOMEM);
	errno = 0;
	CHECK(pvalloc(ALL_ONES) == NULL);
	CHECK_EQ(errno, ENOMEM);
}

static void test_usable_size_is_usable(void)
{
	for (size_t i = 0; i < NSIZES; i++) {
		unsigned char *p = malloc(sizes[i]);
		size_t n = malloc_usable_size(p);
		CHECK(n >= sizes[i]);
		memset(p, 0x77, n); /* every usable byte may be written */
		free(p);
	}
}

/* LIFO and FIFO bursts on one thread: everything comes back the same. */
static void test_bursts(void)
{
	static const size_t mix[3] = { 64, 576, 1500 };
	for (int round = 0; round < 2000; round++) {
		unsigned char *b[32];
		for (int i = 0; i < 32; i++) {
			b[i] = malloc(mix[i % 3]);
			fill(b[i], mix[i % 3], (unsigned)(round + i));
		}
		for (int i = 0; i < 32; i++) {
			int k = round % 2 ? i : 31 - i;
			CHECK(same(b[k], mix[k % 3], (unsigned)(round + k)));
			free(b[k]);
		}
	}
}

/* Under pyfrag, where did the allocations go? (read through dlsym) */
static void test_pyfrag_routes(void)
{
	if (!pyfrag_active())
		return;
	typedef int (*stats_fn)(void *, size_t);
	typedef size_t (*count_fn)(void);
	typedef const char *(*name_fn)(size_t);
	stats_fn get = (stats_fn)dlsym(RTLD_DEFAULT, "pf_stats_get");
	count_fn count = (count_fn)dlsym(RTLD_DEFAULT, "pf_stats_field_count");
	name_fn name = (name_fn)dlsym(RTLD_DEFAULT, "pf_stats_field_name");
	uint64_t s[64];
	size_t n = count();
	CHECK(n + 1 <= 64);
	CHECK_EQ(get(s, sizeof(s)), 0);
	int small = -1, compact = -1, medium = -1, large = -1, foreign = -1;
	for (size_t i = 0; i < n; i++) {
		const char *field = name(i);
		int at = (int)i + 1; /* after the size/version word */
		if (!strcmp(field, "malloc_small"))
			small = at;
		else if (!strcmp(field, "malloc_compact"))
			compact = at;
		else if (!strcmp(field, "malloc_medium"))
			medium = at;
		else if (!strcmp(field, "malloc_large"))
			large = at;
		else if (!strcmp(field, "foreign_frees"))
			foreign = at;
	}
	CHECK(small > 0 && compact > 0 && medium > 0 && large > 0 && foreign > 0);
	if (small < 0 || compact < 0 || medium < 0 || large < 0 || foreign < 0)
		return;
	CHECK(s[small] + s[compact] > 1000); /* the small routes: page_frag and compact (PYFRAG_ROUTE) */
	CHECK(s[medium] > 10);
	CHECK(s[large] > 3);
	/* a pointer that is not pyfrag's is ignored and counted */
	uint64_t before = s[foreign];
	static char not_heap[64];
	free(hide(not_heap + 16));
	CHECK_EQ(get(s, sizeof(s)), 0);
	CHECK_EQ(s[foreign], before + 1);
}

/* ---- things that must end the program ----------------------------------------- */

/* Another thread frees blocks of a page the allocating thread has let go (batched), one twice. */
static void *free_twice_elsewhere(void *arg)
{
	char **blocks = arg;
	free(blocks[0]);
	free(blocks[1]);
	free(hide(blocks[1]));
	return NULL;
}

static int misuse(const char *what)
{
	if (!strcmp(what, "double-free")) {
		char *p = malloc(100), *again = hide(p);
		free(p);
		free(again);
	} else if (!strcmp(what, "double-free-medium")) {
		char *p = malloc(40000), *again = hide(p); /* a page run: above the slab classes */
		free(p);
		free(again);
	} else if (!strcmp(what, "double-free-remote")) {
		static char *blocks[200];
		for (int i = 0; i < 200; i++)
			blocks[i] = malloc(1000); /* a few frag pages: the first is no cache's by the end */
		pthread_t t;
		pthread_create(&t, NULL, free_twice_elsewhere, blocks);
		pthread_join(t, NULL);
	} else if (!strcmp(what, "bad-pointer")) {
		char *p = malloc(100);
		free(hide(p + 32));
	} else if (!strcmp(what, "tail-overflow")) {
		volatile char *p = hide(malloc(10));
		p[opaque(10)] = 'x'; /* one byte past the end: PYFRAG_CHECK=1 notices */
		free((char *)p);
		puts("tail overflow not noticed");
		return 0;
	} else if (!strcmp(what, "limit")) {
		/* PYFRAG_LIMIT: failures are reproducible, then memory comes back */
		void *big = malloc(100u << 20);
		int e = errno;
		printf("big %s errno %s\n", big ? "ok" : "NULL", e == ENOMEM ? "ENOMEM" : "other");
		enum { MAX = 1 << 20 };
		static void *held[MAX];
		int n = 0;
		while (n < MAX && (held[n] = malloc(1500)) != NULL)
			n++;
		printf("small NULL after %s, errno %s\n", n < MAX ? "some" : "none",
		       errno == ENOMEM ? "ENOMEM" : "other");
		for (int i = 0; i < n; i++)
			free(held[i]);
		void *again = malloc(1500);
		printf("after freeing: %s\n", again ? "ok" : "NULL");
		return 0;
	} else {
		fprintf(stderr, "unknown misuse %s\n", what);
		return 2;
	}
	puts("misuse not noticed");
	return 0;
}

int main(int argc, char **argv)
{
	if (argc > 1)
		return misuse(argv[1]);
	RUN(test_malloc_sizes_and_alignment);
	RUN(test_malloc_failures);
	RUN(test_calloc);
	RUN(test_realloc_keeps_content);
	RUN(test_realloc_edges);
	RUN(test_reallocarray);
	RUN(test_posix_memalign);
	RUN(test_aligned_alloc_memalign);
	RUN(test_valloc_pvalloc);
	RUN(test_usable_size_is_usable);
	RUN(test_bursts);
	RUN(test_pyfrag_routes);
	return check_summary();
}
