// SPDX-License-Identifier: GPL-2.0-only
/*
 * Frees that reach malloc after a thread's pthread key destructors have run.
 * glibc frees some thread-local buffers only then (__libc_thread_freeres):
 * strerror() of an unknown errno keeps its message in one. 1000 threads each
 * make such a buffer (argument "late"; "control" skips it) and hand one block
 * to the main thread, which frees them all after the joins.
 *
 * Under LD_PRELOAD=libpyfrag.so it prints pyfrag's own counts afterwards
 * (found with dlsym, so the program is never linked against pyfrag):
 * "threads T caches C pages_in_use P". Both arguments must print the same:
 * a late free needs no thread state and must not leave one behind.
 */
#include <dlfcn.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "../../include/pyfrag.h"

enum { THREADS = 1000 };

static void *handed[THREADS];
static int late;

static void *short_life(void *arg)
{
	size_t me = (size_t)arg;
	handed[me] = malloc(64 + me % 512);
	if (handed[me])
		memset(handed[me], (int)me, 64);
	if (late) /* glibc mallocs the message buffer, and frees it after our key destructor */
		(void)strerror(100000 + (int)me);
	return NULL;
}

int main(int argc, char **argv)
{
	late = argc > 1 && strcmp(argv[1], "late") == 0;
	for (size_t i = 0; i < THREADS; i++) {
		pthread_t th;
		if (pthread_create(&th, NULL, short_life, (void *)i) != 0 || pthread_join(th, NULL) != 0) {
			perror("pthread");
			return 1;
		}
	}
	for (size_t i = 0; i < THREADS; i++)
		free(handed[i]);
	int (*stats_get)(pf_stats_t *, size_t) =
		(int (*)(pf_stats_t *, size_t))dlsym(RTLD_DEFAULT, "pf_stats_get");
	void (*flush)(void) = (void (*)(void))dlsym(RTLD_DEFAULT, "pf_thread_flush");
	if (!stats_get || !flush) {
		puts("not under pyfrag");
		return 0;
	}
	flush(); /* the main thread's own batch, so only what others left is counted */
	pf_stats_t s;
	if (stats_get(&s, sizeof s) != 0) {
		perror("pf_stats_get");
		return 1;
	}
	printf("threads %llu caches %llu pages_in_use %llu\n", (unsigned long long)s.threads,
	       (unsigned long long)s.caches, (unsigned long long)s.pages_in_use);
	return 0;
}
