/* SPDX-License-Identifier: GPL-2.0-only */
/*
 * Statistics: the snapshot behind pf_stats_get. The field list is the
 * PF_STATS_FIELDS X-macro in pyfrag.h; bindings read names and docs from
 * here and check the struct's size and version before trusting it.
 * Hot counters are summed from the live caches and threads plus what the
 * dead ones left; the rest are global (see internal.h).
 */
#include "internal.h"

#include <errno.h>
#include <string.h>

_Atomic uint64_t pf__counters[PF_CTR_COUNT];

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

	struct pf_page_counts pages;
	pthread_mutex_lock(&pf__page_lock);
	s->chunks_hugetlb = pf__arena_counts.by_backing[PF_BACKING_HUGETLB];
	s->chunks_thp = pf__arena_counts.by_backing[PF_BACKING_THP];
	s->chunks_4k = pf__arena_counts.by_backing[PF_BACKING_4K];
	s->committed_bytes = pf__arena_counts.committed_bytes;
	s->peak_committed_bytes = pf__arena_counts.peak_committed_bytes;
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
