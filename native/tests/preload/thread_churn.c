// SPDX-License-Identifier: GPL-2.0-only
/*
 * 10,000 short-lived threads, each allocating small blocks, a page run and a
 * chunk run and freeing most of them (a few are freed by the main thread
 * after the thread is gone). Thread exit must give the thread's cache and
 * page lists back: RSS after the last round stays within a bound of RSS
 * after the first rounds. Prints "rss ok" and exits 0, or says how much it
 * grew and exits 1.
 */
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

enum { THREADS = 10000, BATCH = 8, KEEP = 4 };

static void *kept[THREADS][KEEP];

static long rss_kib(void)
{
	long pages = 0, resident = 0;
	FILE *f = fopen("/proc/self/statm", "r");
	if (!f || fscanf(f, "%ld %ld", &pages, &resident) != 2)
		resident = -1;
	if (f)
		fclose(f);
	return resident * (sysconf(_SC_PAGESIZE) / 1024);
}

static void *short_life(void *arg)
{
	size_t me = (size_t)arg;
	void *p[64];
	for (int i = 0; i < 64; i++) {
		p[i] = malloc((size_t)(16 + i * 37));
		memset(p[i], i, 16);
	}
	void *run = malloc(20000);
	memset(run, 1, 20000);
	void *big = (me % 100 == 0) ? malloc(3u << 20) : NULL;
	for (int i = 0; i < 64; i++) {
		if (i < KEEP)
			kept[me][i] = p[i]; /* freed by main after this thread is gone */
		else
			free(p[i]);
	}
	free(run);
	free(big);
	return NULL;
}

int main(void)
{
	long baseline = 0;
	for (size_t t = 0; t < THREADS; t += BATCH) {
		pthread_t th[BATCH];
		for (size_t i = 0; i < BATCH; i++)
			if (pthread_create(&th[i], NULL, short_life, (void *)(t + i)) != 0) {
				perror("pthread_create");
				return 1;
			}
		for (size_t i = 0; i < BATCH; i++)
			pthread_join(th[i], NULL);
		for (size_t i = 0; i < BATCH; i++)
			for (int k = 0; k < KEEP; k++)
				free(kept[t + i][k]);
		if (t == 80 * BATCH)
			baseline = rss_kib();
	}
	long end = rss_kib();
	printf("threads %d, rss after 640 threads %ld KiB, after all %ld KiB\n", THREADS, baseline, end);
	if (end > baseline + 16 * 1024) {
		printf("rss grew by %ld KiB\n", end - baseline);
		return 1;
	}
	puts("rss ok");
	return 0;
}
