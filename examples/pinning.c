// SPDX-License-Identifier: GPL-2.0-only
/*
 * pinning: what long-lived small allocations cost on page_frag, next to malloc.
 *
 * A frag page (32 KiB) goes back only when its last fragment is freed, and a
 * 2 MiB chunk only when all its pages are back. So a few long-lived fragments
 * keep whole frag pages, and whole hugepages, resident. This program shows it
 * with numbers:
 *
 *   1. fill   allocate --total MiB as fragments of --size bytes, write them all;
 *   2. pin    free all but one of every --keep-every, then trim;
 *   3. again  allocate and write the same amount once more: how much new memory
 *             does it take, with the freed space between the survivors?
 *   4. empty  free everything, trim.
 *
 * After each step it prints the process's resident memory (Rss plus hugetlb
 * pages, which the kernel counts apart, from /proc/self/smaps_rollup) as growth
 * over the start, and with --alloc pyfrag the library's committed bytes and the
 * bytes of the pages it has handed out. "Trim" is pf_cache_drain + pf_trim for
 * pyfrag, malloc_trim(0) for malloc.
 *
 * Contract: the pointer tables are mmap'd, so only the allocator under test
 * moves the numbers; output is one "step NAME name value ..." line per step
 * (bytes) and a "summary" line (MiB, and resident / live); exit 0, 1 if an
 * allocation failed, 2 for usage errors.
 *
 * Usage: pinning [--alloc pyfrag|malloc] [--size BYTES] [--total MIB] [--keep-every N]
 */
#include <pyfrag.h>

#include <getopt.h>
#include <malloc.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>

#define MiB (1024.0 * 1024.0)

struct config {
	bool use_pyfrag;
	size_t size, total, keep_every;
};

struct state {
	struct config cfg;
	pf_cache_t *cache;
	size_t n;             /* allocations per round */
	void **round1, **round2;
	long long base;       /* resident bytes at the start */
};

/* ---- measuring -------------------------------------------------------------------- */

/* Rss + Private_Hugetlb + Shared_Hugetlb of the whole process, in bytes. */
static long long resident_bytes(void)
{
	FILE *f = fopen("/proc/self/smaps_rollup", "r");
	char line[256];
	long long total = 0, kib;
	if (!f)
		return -1;
	while (fgets(line, sizeof(line), f))
		if (sscanf(line, "Rss: %lld kB", &kib) == 1
		    || sscanf(line, "Private_Hugetlb: %lld kB", &kib) == 1
		    || sscanf(line, "Shared_Hugetlb: %lld kB", &kib) == 1)
			total += kib * 1024;
	fclose(f);
	return total;
}

static void report(const struct state *s, const char *step, size_t live)
{
	printf("step %-6s live_bytes %10zu  resident_growth %10lld", step, live * s->cfg.size,
	       resident_bytes() - s->base);
	if (s->cfg.use_pyfrag) {
		pf_stats_t st;
		pf_stats_get(&st, sizeof(st));
		printf("  committed %10llu  pages_in_use_bytes %10llu",
		       (unsigned long long)st.committed_bytes,
		       (unsigned long long)st.pages_in_use * PF_PAGE_SIZE);
	}
	printf("\n");
}

/* ---- the allocator under test ----------------------------------------------------------- */

static void *alloc_one(struct state *s)
{
	return s->cfg.use_pyfrag ? pf_cache_alloc(s->cache, s->cfg.size) : malloc(s->cfg.size);
}

static void free_one(struct state *s, void *p)
{
	if (s->cfg.use_pyfrag)
		pf_cache_free(s->cache, p, s->cfg.size);
	else
		free(p);
}

static void trim(struct state *s)
{
	if (s->cfg.use_pyfrag) {
		pf_cache_drain(s->cache);
		pf_trim();
	} else {
		malloc_trim(0);
	}
}

/* ---- the steps ------------------------------------------------------------------------ */

static bool fill(struct state *s, void **table)
{
	for (size_t i = 0; i < s->n; i++) {
		table[i] = alloc_one(s);
		if (!table[i]) {
			fprintf(stderr, "pinning: allocation %zu of %zu failed\n", i, s->n);
			return false;
		}
		memset(table[i], 0x5a, s->cfg.size);
	}
	return true;
}

/* Free all but every keep_every-th; returns how many stay. */
static size_t pin(struct state *s)
{
	size_t kept = 0;
	for (size_t i = 0; i < s->n; i++) {
		if (i % s->cfg.keep_every == 0) {
			s->round1[kept++] = s->round1[i];
			continue;
		}
		free_one(s, s->round1[i]);
	}
	trim(s);
	return kept;
}

static void free_all(struct state *s, void **table, size_t n)
{
	for (size_t i = 0; i < n; i++)
		free_one(s, table[i]);
}

static void **map_table(size_t n)
{
	void *p = mmap(NULL, n * sizeof(void *), PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS,
		       -1, 0);
	if (p == MAP_FAILED)
		return NULL;
	memset(p, 0, n * sizeof(void *)); /* resident before the start is measured */
	return p;
}

static void summary(const struct state *s, size_t kept, long long pinned, long long again)
{
	double live = (double)(kept * s->cfg.size), live_again = live + (double)(s->n * s->cfg.size);
	printf("summary alloc %s size %zu keep 1/%zu: pin: %.2f MiB live, %.1f MiB resident (%.1fx); "
	       "again: %.1f MiB live, %.1f MiB resident (%.2fx)\n",
	       s->cfg.use_pyfrag ? "pyfrag" : "malloc", s->cfg.size, s->cfg.keep_every, live / MiB,
	       (double)pinned / MiB, (double)pinned / live, live_again / MiB, (double)again / MiB,
	       (double)again / live_again);
}

static int run(struct state *s)
{
	s->n = s->cfg.total / s->cfg.size;
	s->round1 = map_table(s->n);
	s->round2 = map_table(s->n);
	s->cache = s->cfg.use_pyfrag ? pf_cache_create() : NULL;
	if (!s->round1 || !s->round2 || (s->cfg.use_pyfrag && !s->cache))
		return 1;
	s->base = resident_bytes();
	if (!fill(s, s->round1))
		return 1;
	report(s, "fill", s->n);
	size_t kept = pin(s);
	report(s, "pin", kept);
	long long pinned = resident_bytes() - s->base;
	if (!fill(s, s->round2))
		return 1;
	report(s, "again", kept + s->n);
	long long again = resident_bytes() - s->base;
	free_all(s, s->round1, kept);
	free_all(s, s->round2, s->n);
	trim(s);
	report(s, "empty", 0);
	summary(s, kept, pinned, again);
	if (s->cache)
		pf_cache_destroy(s->cache);
	return 0;
}

/* ---- command line ------------------------------------------------------------------------ */

static const char usage_text[] =
	"usage: pinning [--alloc pyfrag|malloc] [--size BYTES] [--total MIB] [--keep-every N]\n"
	"  --alloc       allocator under test (default pyfrag)\n"
	"  --size        bytes per allocation, 1..32768 (default 256)\n"
	"  --total       MiB allocated in each round, 1..1024 (default 32)\n"
	"  --keep-every  keep one allocation of every N, 1..1000000 (default 64)\n";

static int usage_error(const char *what, const char *value)
{
	fprintf(stderr, "pinning: error: %s%s%s\n%s", what, value ? ": " : "", value ? value : "",
		usage_text);
	return 2;
}

static bool parse_size(const char *text, size_t lo, size_t hi, size_t *out)
{
	char *end;
	unsigned long long v = strtoull(text, &end, 10);
	if (end == text || *end || *text == '-' || v < lo || v > hi)
		return false;
	*out = (size_t)v;
	return true;
}

static int parse_option(struct config *cfg, int opt, const char *arg)
{
	switch (opt) {
	case 'a':
		if (strcmp(arg, "pyfrag") && strcmp(arg, "malloc"))
			return usage_error("--alloc takes pyfrag or malloc", arg);
		cfg->use_pyfrag = !strcmp(arg, "pyfrag");
		return 0;
	case 's':
		return parse_size(arg, 1, PF_FRAG_PAGE_SIZE, &cfg->size) ? 0 : usage_error("bad --size", arg);
	case 't':
		if (!parse_size(arg, 1, 1024, &cfg->total))
			return usage_error("bad --total", arg);
		cfg->total <<= 20;
		return 0;
	case 'k':
		return parse_size(arg, 1, 1000000, &cfg->keep_every) ? 0
								       : usage_error("bad --keep-every", arg);
	}
	return usage_error("unknown option", NULL);
}

/* 0 to run, 2 after a usage error, -1 after --help. */
static int parse_args(int argc, char **argv, struct config *cfg)
{
	static const struct option longopts[] = {
		{ "alloc", required_argument, NULL, 'a' }, { "size", required_argument, NULL, 's' },
		{ "total", required_argument, NULL, 't' }, { "keep-every", required_argument, NULL, 'k' },
		{ "help", no_argument, NULL, 'h' },        { NULL, 0, NULL, 0 },
	};
	*cfg = (struct config){ true, 256, 32u << 20, 64 };
	opterr = 0;
	int opt;
	while ((opt = getopt_long(argc, argv, "", longopts, NULL)) != -1) {
		if (opt == 'h') {
			fputs(usage_text, stdout);
			return -1;
		}
		if (opt == '?')
			return usage_error("unknown option or missing value", argv[optind - 1]);
		if (parse_option(cfg, opt, optarg))
			return 2;
	}
	if (optind < argc)
		return usage_error("unexpected argument", argv[optind]);
	if (cfg->total < cfg->size)
		return usage_error("--total is smaller than one allocation", NULL);
	return 0;
}

int main(int argc, char **argv)
{
	struct state s;
	memset(&s, 0, sizeof(s));
	int rc = parse_args(argc, argv, &s.cfg);
	if (rc)
		return rc < 0 ? 0 : rc;
	return run(&s);
}
