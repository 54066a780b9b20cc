// SPDX-License-Identifier: GPL-2.0-only
/*
 * The malloc front's routes under LD_PRELOAD (tests/test_routes.py reads
 * what this prints and pyfrag's PYFRAG_STATS summary). One case per run:
 *
 *   longlived  200,000 small blocks kept (one call site) among ten times as
 *              many temporaries (another site), then every other one freed:
 *              the blocks page_frag would pin. Prints the peak RSS (VmHWM) in KiB.
 *   ring       producer -> 512-slot ring -> consumer, 1,000,000 blocks of
 *              imix sizes (64/576/1500 at 7:4:1): freed after their page was
 *              let go, yet nothing stays pinned. Prints the checksum.
 *   medium     what medium requests cost: malloc_usable_size of sizes from
 *              4,100 bytes to 2 MiB, at most 1/8 (slab classes) or 4 KiB
 *              (page runs) more than asked. Prints "ok" or the first miss.
 *   handoff    8 threads each allocate 20,000 blocks, hand them to main and
 *              exit; main frees them afterwards (abandoned slab pages).
 *   misuse-double, misuse-interior, misuse-uncarved
 *              a compact-route block freed twice, a pointer into a block's
 *              middle, a block-aligned pointer past what a slab page handed
 *              out: each must abort with pyfrag's message.
 */
#include <malloc.h>
#include <pthread.h>
#include <stdatomic.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

/* VmHWM: this program's peak RSS (ru_maxrss would carry the parent's over fork and exec). */
static long peak_rss_kib(void)
{
	FILE *f = fopen("/proc/self/status", "r");
	char line[256];
	long kib = -1;
	while (f && fgets(line, sizeof(line), f))
		if (sscanf(line, "VmHWM: %ld kB", &kib) == 1)
			break;
	if (f)
		fclose(f);
	return kib;
}

/* Two call sites, kept apart: noinline so each has its own return address. */
static __attribute__((noinline)) void *keep_alloc(size_t n)
{
	void *p = malloc(n);
	__asm__ volatile("" ::"r"(p) : "memory");
	return p;
}

static __attribute__((noinline)) void *temp_alloc(size_t n)
{
	void *p = malloc(n);
	__asm__ volatile("" ::"r"(p) : "memory");
	return p;
}

static int longlived(void)
{
	enum { KEEP = 200000, TEMPS = 10 };
	void **kept = calloc(KEEP, sizeof(void *));
	void *temps[TEMPS];
	for (int i = 0; i < KEEP; i++) {
		for (int j = 0; j < TEMPS; j++) {
			temps[j] = temp_alloc(48 + (size_t)(j * 8));
			memset(temps[j], j, 48);
		}
		kept[i] = keep_alloc(64);
		memset(kept[i], (int)(i & 0xff), 64);
		for (int j = 0; j < TEMPS; j++)
			free(temps[j]);
	}
	for (int i = 0; i < KEEP; i += 2)
		free(kept[i]);
	for (int i = 1; i < KEEP; i += 2)
		if (((unsigned char *)kept[i])[63] != (unsigned char)(i & 0xff))
			return printf("corrupted block %d\n", i), 1;
	printf("peak_rss_kib %ld\n", peak_rss_kib());
	for (int i = 1; i < KEEP; i += 2)
		free(kept[i]);
	free(kept);
	return 0;
}

/* ---- ring ---------------------------------------------------------------------- */

enum { SLOTS = 512, PACKETS = 1000000 };
static struct {
	_Atomic size_t head;
	char pad1[56];
	_Atomic size_t tail;
	char pad2[56];
	unsigned char *slot[SLOTS];
} ring;

static size_t imix(size_t i)
{
	static const size_t sizes[12] = { 64, 64, 64, 64, 64, 64, 64, 576, 576, 576, 576, 1500 };
	return sizes[i % 12];
}

static void *producer(void *arg)
{
	(void)arg;
	for (size_t i = 0; i < PACKETS; i++) {
		unsigned char *p = malloc(imix(i));
		p[0] = (unsigned char)i;
		size_t head = atomic_load_explicit(&ring.head, memory_order_relaxed);
		while (head - atomic_load_explicit(&ring.tail, memory_order_acquire) == SLOTS)
			sched_yield();
		ring.slot[head % SLOTS] = p;
		atomic_store_explicit(&ring.head, head + 1, memory_order_release);
	}
	return NULL;
}

static int ring_case(void)
{
	pthread_t prod;
	pthread_create(&prod, NULL, producer, NULL);
	uint64_t sum = 0;
	for (size_t i = 0; i < PACKETS; i++) {
		size_t tail = atomic_load_explicit(&ring.tail, memory_order_relaxed);
		while (atomic_load_explicit(&ring.head, memory_order_acquire) == tail)
			sched_yield();
		unsigned char *p = ring.slot[tail % SLOTS];
		atomic_store_explicit(&ring.tail, tail + 1, memory_order_release);
		sum += p[0];
		free(p);
	}
	pthread_join(prod, NULL);
	printf("checksum %llu\n", (unsigned long long)sum);
	return 0;
}

/* ---- medium ---------------------------------------------------------------------- */

static int medium(void)
{
	static const size_t sizes[] = { 4100, 5000, 8200, 20000, 32768, 32769, 40000, 100000,
					500000, 1000000, 2097152 };
	for (size_t i = 0; i < sizeof(sizes) / sizeof(sizes[0]); i++) {
		size_t n = sizes[i];
		char *p = malloc(n);
		if (!p)
			return printf("malloc(%zu) failed\n", n), 1;
		memset(p, 0x5a, n);
		size_t usable = malloc_usable_size(p);
		size_t most = n <= 32768 ? n + n / 8 : n + 4096;
		if (usable < n || usable > most)
			return printf("malloc(%zu): usable %zu, at most %zu wanted\n", n, usable, most), 1;
		char *q = realloc(p, n + 10);
		if (!q || q[n - 1] != 0x5a)
			return printf("realloc(%zu) lost the bytes\n", n), 1;
		free(q);
	}
	puts("ok");
	return 0;
}

/* ---- handoff ---------------------------------------------------------------------- */

enum { HANDOFF_THREADS = 8, HANDOFF_BLOCKS = 20000 };
static void *handed[HANDOFF_THREADS][HANDOFF_BLOCKS];

static void *allocate_and_exit(void *arg)
{
	void **mine = arg;
	for (int i = 0; i < HANDOFF_BLOCKS; i++) {
		mine[i] = malloc(32 + (size_t)(i % 5) * 16);
		memset(mine[i], 7, 32);
	}
	return NULL;
}

static int handoff(void)
{
	pthread_t t[HANDOFF_THREADS];
	for (int i = 0; i < HANDOFF_THREADS; i++)
		pthread_create(&t[i], NULL, allocate_and_exit, handed[i]);
	for (int i = 0; i < HANDOFF_THREADS; i++)
		pthread_join(t[i], NULL);
	for (int i = 0; i < HANDOFF_THREADS; i++)
		for (int j = 0; j < HANDOFF_BLOCKS; j++) {
			if (((unsigned char *)handed[i][j])[31] != 7)
				return printf("corrupted handed block\n"), 1;
			free(handed[i][j]);
		}
	puts("ok");
	return 0;
}

/* ---- misuse ---------------------------------------------------------------------- */

/* Through volatiles: the compiler must not see (and warn about) the misuse. */
static void free_as_given(char *p, size_t offset)
{
	char *volatile given = p;
	volatile size_t by = offset;
	char *target = given + by;
	void *volatile hidden = target;
	free(hidden);
}

static int misuse(const char *kind)
{
	char *p = malloc(100); /* a 112-byte class block on the compact route */
	char *q = malloc(100);
	if (strcmp(kind, "double") == 0) {
		free_as_given(p, 0);
		free_as_given(p, 0);
	} else if (strcmp(kind, "interior") == 0) {
		free_as_given(p, 16);
	} else if (strcmp(kind, "uncarved") == 0) {
		free_as_given(q, 112 * 8); /* a block start nobody was handed */
	}
	puts("survived");
	return 0;
}

int main(int argc, char **argv)
{
	const char *c = argc > 1 ? argv[1] : "";
	if (strcmp(c, "longlived") == 0)
		return longlived();
	if (strcmp(c, "ring") == 0)
		return ring_case();
	if (strcmp(c, "medium") == 0)
		return medium();
	if (strcmp(c, "handoff") == 0)
		return handoff();
	if (strncmp(c, "misuse-", 7) == 0)
		return misuse(c + 7);
	fprintf(stderr, "usage: routes longlived|ring|medium|handoff|misuse-double|misuse-interior|misuse-uncarved\n");
	return 2;
}
