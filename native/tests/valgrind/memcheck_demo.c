// SPDX-License-Identifier: GPL-2.0-only
/*
 * A user's program with the bugs memcheck should find in pyfrag fragments,
 * one per argument: tests/test_valgrind.py runs it under valgrind against a
 * `scons valgrind=1` library and reads the report.
 *
 *   clean    allocations freed every way pyfrag allows (owner cache with and
 *            without the size, interior pointers, another thread): no error
 *   leak     one 100-byte fragment whose pointer is dropped: "definitely lost"
 *   uaf      a read of a fragment after pf_free: "Invalid read"
 *   overrun  a write one byte past a fragment, into its page's unused tail:
 *            "Invalid write"
 *   uninit   a branch on a fragment's bytes never written: "uninitialised"
 */
#include "pyfrag.h"

#include <pthread.h>
#include <stdio.h>
#include <string.h>

static void *free_elsewhere(void *p)
{
	return pf_free((char *)p + 10) == 0 ? NULL : p;
}

static int clean(void)
{
	pf_cache_t *c = pf_cache_create();
	char *a = pf_cache_alloc(c, 100);
	char *b = pf_cache_alloc_align(c, 200, 64);
	char *d = pf_cache_alloc(c, 300);
	char *e = pf_alloc(50);
	memset(a, 1, 100);
	memset(b, 2, 200);
	memset(d, 3, 300);
	memset(e, 4, 50);
	pthread_t t;
	void *ret;
	pthread_create(&t, NULL, free_elsewhere, d);
	pthread_join(t, &ret);
	int bad = ret != NULL;
	bad |= pf_cache_free(c, b, 200) != 0;
	bad |= pf_free(a + 99) != 0;
	bad |= pf_free(e) != 0;
	for (int i = 0; i < 1000; i++) { /* reused bytes: blocks come and go at the same address */
		char *p = pf_cache_alloc(c, 32);
		p[31] = (char)i;
		bad |= pf_cache_free(c, p, 32) != 0;
	}
	pf_cache_destroy(c);
	pf_thread_flush();
	return bad;
}

static int leak(void)
{
	pf_cache_t *c = pf_cache_create();
	char *kept[9];
	int n = 0;
	for (int i = 0; i < 10; i++) {
		char *p = pf_cache_alloc(c, 100);
		memset(p, i, 100);
		if (i != 5)
			kept[n++] = p;
		/* fragment 5's only pointer dies here */
	}
	for (int i = 0; i < n; i++)
		pf_free(kept[i]);
	pf_cache_destroy(c);
	pf_thread_flush();
	return 0;
}

static int uaf(void)
{
	pf_cache_t *c = pf_cache_create();
	char *keep = pf_cache_alloc(c, 64); /* keeps the page in use: the bytes stay mapped */
	volatile char *p = pf_cache_alloc(c, 64);
	p[0] = 1;
	pf_free((void *)p);
	int x = p[0];
	pf_free(keep);
	pf_cache_destroy(c);
	return x == 12345;
}

static int overrun(void)
{
	pf_cache_t *c = pf_cache_create();
	volatile char *p = pf_cache_alloc(c, 100);
	p[100] = 1;
	pf_free((void *)p);
	pf_cache_destroy(c);
	return 0;
}

static int uninit(void)
{
	pf_cache_t *c = pf_cache_create();
	char *p = pf_cache_alloc(c, 64);
	int r = 0;
	if (p[10] == 42) /* never written */
		r = 1;
	printf("%d\n", r);
	pf_free(p);
	pf_cache_destroy(c);
	return 0;
}

int main(int argc, char **argv)
{
	const char *what = argc > 1 ? argv[1] : "clean";
	if (!strcmp(what, "clean"))
		return clean();
	if (!strcmp(what, "leak"))
		return leak();
	if (!strcmp(what, "uaf"))
		return uaf();
	if (!strcmp(what, "overrun"))
		return overrun();
	if (!strcmp(what, "uninit"))
		return uninit();
	fprintf(stderr, "usage: %s clean|leak|uaf|overrun|uninit\n", argv[0]);
	return 2;
}
