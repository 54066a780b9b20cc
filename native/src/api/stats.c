/* SPDX-License-Identifier: GPL-2.0-only */
/*
 * Statistics: the snapshot behind pf_stats_get. The field list is the
 * PF_STATS_FIELDS X-macro in pyfrag.h; bindings read names and docs from
 * here and check the struct's size and version before trusting it.
 * Hot counters are summed from the live caches and threads plus what the
 * dead ones left; the rest are global (sys.h's pf__counters).
 */
#include "api/api.h"

#include <errno.h>
#include <string.h>
#include <unistd.h>

static const char *const field_names[] = {
#define PF_STATS_NAME_(name, doc) #name,
	PF_STATS_FIELDS(PF_STATS_NAME_)
#undef PF_STATS_NAME_
};
static const char *const field_docs[] = {
#define PF_STATS_DOC_(name, doc) doc,
	PF_STATS_FIELDS(PF_STATS_DOC_)
#undef PF_STATS_DOC_
};
#define FIELD_COUNT (sizeof(field_names) / sizeof(field_names[0]))
_Static_assert(sizeof(pf_stats_t) == 8 + 8 * FIELD_COUNT, "stats struct has no padding");

static uint64_t counter(enum pf_counter c)
{
	return atomic_load_explicit(&pf__counters[c], memory_order_relaxed);
}

static uint64_t relaxed(const pf_local_counter *c)
{
	return atomic_load_explicit(c, memory_order_relaxed);
}

static void sum_live(pf_stats_t *s, uint64_t *pcp_pages)
{
	pthread_mutex_lock(&pf__meta_lock);
	for (struct pf_cache *c = pf__live_caches; c; c = c->next_live) {
		s->allocs += relaxed(&c->allocs);
		s->bias_frees += relaxed(&c->bias_frees);
	}
	for (struct pf_thread *t = pf__live_threads; t; t = t->next_live) {
		s->frees += relaxed(&t->frees);
		s->malloc_small += relaxed(&t->malloc_small);
		s->malloc_medium += relaxed(&t->malloc_medium);
		uint64_t allocs, live;
		pf__slab_heap_sums(&t->slab, &allocs, &live);
		s->malloc_compact += allocs;
		s->compact_live_bytes += live;
		*pcp_pages += pf__pcp_pages(&t->pcp);
	}
	s->caches = pf__live_cache_count;
	s->threads = pf__live_thread_count;
	pthread_mutex_unlock(&pf__meta_lock);
}

static void snapshot(pf_stats_t *s)
{
	memset(s, 0, sizeof(*s));
	s->size = sizeof(*s);
	s->version = PF_STATS_VERSION;
	if (atomic_load(&pf__ready) != 1)
		return; /* nothing has happened yet */
	uint64_t pcp_pages = 0;
	sum_live(s, &pcp_pages);
	s->allocs += counter(PF_CTR_RETIRED_ALLOCS);
	s->frees += counter(PF_CTR_RETIRED_FREES);
	s->bias_frees += counter(PF_CTR_RETIRED_BIAS_FREES);
	s->frees += s->bias_frees; /* a bias free is counted once, by its cache */
	s->refills = counter(PF_CTR_REFILLS);
	s->recycles = counter(PF_CTR_RECYCLES);
	s->abandons = counter(PF_CTR_ABANDONS);
	s->order0_fallbacks = counter(PF_CTR_ORDER0_FALLBACKS);
	s->reserve_pages = counter(PF_CTR_RESERVE_PAGES);
	s->reserve_returns = counter(PF_CTR_RESERVE_RETURNS);
	s->drains = counter(PF_CTR_DRAINS);
	s->invalid_frees = counter(PF_CTR_INVALID_FREES);
	s->alloc_failures = counter(PF_CTR_ALLOC_FAILURES);
	s->chunk_commits = counter(PF_CTR_CHUNK_COMMITS);
	s->chunk_releases = counter(PF_CTR_CHUNK_RELEASES);
	s->commit_failures = counter(PF_CTR_COMMIT_FAILURES);
	s->malloc_small += counter(PF_CTR_RETIRED_MALLOC_SMALL);
	s->malloc_medium += counter(PF_CTR_RETIRED_MALLOC_MEDIUM);
	s->malloc_large = counter(PF_CTR_MALLOC_LARGE);
	s->foreign_frees = counter(PF_CTR_FOREIGN_FREES);
	s->libc_allocs = counter(PF_CTR_LIBC_ALLOCS);
	s->libc_frees = counter(PF_CTR_LIBC_FREES);
	struct pf_slab_counts slab;
	pf__slab_counts_get(&slab);
	s->malloc_compact += slab.retired_allocs;
	s->compact_live_bytes += slab.retired_allocs_bytes - slab.retired_frees_bytes;
	s->compact_pages = slab.pages;
	s->compact_page_bytes = slab.page_bytes;
	s->compact_abandoned_pages = slab.abandoned;
	int64_t pinned = atomic_load_explicit(&pf__frag_pinned_bytes, memory_order_relaxed);
	s->frag_pinned_bytes = pinned > 0 ? (uint64_t)pinned : 0;
	s->site_moves_to_compact = counter(PF_CTR_SITES_TO_COMPACT);
	s->site_moves_to_frag = counter(PF_CTR_SITES_TO_FRAG);
	s->sites_compact = s->site_moves_to_compact - s->site_moves_to_frag;
	s->pinned_pages_seen = counter(PF_CTR_PINNED_SEEN);
	s->pin_cap_engaged = counter(PF_CTR_PIN_CAP_ENGAGED);

	struct pf_page_counts pages;
	pthread_mutex_lock(&pf__page_lock);
	s->chunks_hugetlb = pf__arena_counts.by_backing[PF_BACKING_HUGETLB];
	s->chunks_thp = pf__arena_counts.by_backing[PF_BACKING_THP];
	s->chunks_4k = pf__arena_counts.by_backing[PF_BACKING_4K];
	s->committed_bytes = pf__arena_counts.committed_bytes;
	s->peak_committed_bytes = pf__arena_counts.peak_committed_bytes;
	s->arena_regions = atomic_load_explicit(&pf__arena.nregions, memory_order_relaxed);
	s->arena_reserved_bytes = pf__arena.reserved;
	s->arena_cap_bytes = pf__arena.cap;
	pthread_mutex_unlock(&pf__page_lock);
	pf__page_counts_get(&pages);
	s->chunks_empty = pages.empty_chunks;
	s->reserve_free_pages = pages.reserve_free;
	s->pages_cached = pcp_pages;
	s->pages_in_use = pages.pages_out > pcp_pages ? pages.pages_out - pcp_pages : 0;
}

int pf_stats_get(pf_stats_t *out, size_t out_size)
{
	if (!out || out_size < offsetof(pf_stats_t, version) + sizeof(out->version)) {
		pf__fail(EINVAL, "stats buffer missing or smaller than its size and version fields");
		return -1;
	}
	pf_stats_t s;
	snapshot(&s);
	memcpy(out, &s, out_size < sizeof(s) ? out_size : sizeof(s));
	return 0;
}

size_t pf_stats_field_count(void)
{
	return FIELD_COUNT;
}

const char *pf_stats_field_name(size_t index)
{
	return index < FIELD_COUNT ? field_names[index] : NULL;
}

const char *pf_stats_field_doc(size_t index)
{
	return index < FIELD_COUNT ? field_docs[index] : NULL;
}

/* The summary: pieces and the digits they point to, written with one call. */
struct summary {
	const char *pieces[112];
	char digits[40][24];
	int npieces, ndigits;
};

static void add(struct summary *l, const char *text)
{
	if (l->npieces < 111)
		l->pieces[l->npieces++] = text;
}

static void add_number(struct summary *l, const char *name, uint64_t value)
{
	if (l->ndigits == 40)
		return;
	char *buf = l->digits[l->ndigits++];
	add(l, name);
	add(l, pf__format_u64(buf + 23, value, 10));
}

extern char *program_invocation_short_name;

void pf__stats_print(int fd)
{
	pf_stats_t s;
	snapshot(&s);
	struct summary l = { .npieces = 0 };
	add(&l, "pyfrag stats (");
	add(&l, program_invocation_short_name ? program_invocation_short_name : "?");
	add_number(&l, ", pid ", (uint64_t)getpid());
	add(&l, "):\n  allocations  ");
	add_number(&l, "small (page_frag) ", s.malloc_small);
	add_number(&l, ", compact (slab) ", s.malloc_compact);
	add_number(&l, ", medium (page runs) ", s.malloc_medium);
	add_number(&l, ", large (chunk runs) ", s.malloc_large);
	add_number(&l, ", failed ", s.alloc_failures);
	add_number(&l, ", from libc (degraded) ", s.libc_allocs);
	add(&l, "\n  frees        ");
	add_number(&l, "total ", s.frees);
	add_number(&l, ", on the owner's bias ", s.bias_frees);
	add_number(&l, ", foreign (ignored) ", s.foreign_frees);
	add_number(&l, ", invalid ", s.invalid_frees);
	add(&l, "\n  routes       ");
	add_number(&l, "compact live bytes ", s.compact_live_bytes);
	add_number(&l, ", slab pages ", s.compact_pages);
	add_number(&l, ", slab page bytes ", s.compact_page_bytes);
	add_number(&l, ", abandoned slab pages ", s.compact_abandoned_pages);
	add_number(&l, "; frag pinned bytes ", s.frag_pinned_bytes);
	add_number(&l, "; sites on compact ", s.sites_compact);
	add_number(&l, ", site moves to compact ", s.site_moves_to_compact);
	add_number(&l, ", site moves back ", s.site_moves_to_frag);
	add_number(&l, ", pin cap engaged ", s.pin_cap_engaged);
	add(&l, "\n  frag pages   ");
	add_number(&l, "refills ", s.refills);
	add_number(&l, ", in-place recycles ", s.recycles);
	add_number(&l, ", abandons ", s.abandons);
	add_number(&l, ", order-0 fallbacks ", s.order0_fallbacks);
	add_number(&l, ", reserve pages ", s.reserve_pages);
	add(&l, "\n  chunks now   ");
	add_number(&l, "hugetlb ", s.chunks_hugetlb);
	add_number(&l, ", thp ", s.chunks_thp);
	add_number(&l, ", 4k ", s.chunks_4k);
	add_number(&l, "; commits ", s.chunk_commits);
	add_number(&l, ", releases ", s.chunk_releases);
	add_number(&l, ", commit failures ", s.commit_failures);
	add(&l, "\n  memory       ");
	add_number(&l, "peak committed bytes ", s.peak_committed_bytes);
	add_number(&l, ", committed now ", s.committed_bytes);
	add_number(&l, "; regions ", s.arena_regions);
	add_number(&l, ", reserved ", s.arena_reserved_bytes);
	add_number(&l, ", threads ", s.threads);
	add(&l, "\n");
	l.pieces[l.npieces] = NULL;
	pf__write_all(fd, l.pieces);
}
