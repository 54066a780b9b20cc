/* SPDX-License-Identifier: GPL-2.0-only */
/*
 * A shared arena's page allocator: one buddy zone (buddy.c, orders 0..3)
 * over the arena's data pages, in the mapping, behind a robust
 * process-shared mutex, plus the reserve of PF_SHARED_RESERVE_PAGES order-0
 * pages flagged like the private arena's (never recycled by page_frag).
 * page_frag takes one block per refill and gives one back when its last
 * fragment is freed, so the lock is taken once per frag page, not per
 * fragment.
 *
 * A process that dies holding the lock leaves the zone's lists in an unknown
 * state; the next locker gets EOWNERDEAD and rebuilds them from the page
 * states (pf__zone_rebuild) before carrying on.
 *
 * Also the lookups from an address or a page to the local entry of the
 * arena holding it (a scan of at most PF_SHARED_LOCAL_MAX entries).
 */
#include "shared/shared.h"

#include <errno.h>

void pf__shared_lock_header(struct pf_shared_header *h)
{
	int rc = pthread_mutex_lock(&h->lock);
	if (PF_UNLIKELY(rc == EOWNERDEAD)) {
		pf__zone_rebuild(&h->zone, h->data_pages);
		pf__shared_count(h, PF_SCTR_LOCK_RECOVERIES, 1);
		pthread_mutex_consistent(&h->lock);
	}
}

void pf__shared_unlock_header(struct pf_shared_header *h)
{
	pthread_mutex_unlock(&h->lock);
}

/* Called once, by the creator, before the arena is published. */
void pf__shared_zone_init(struct pf_shared_header *h)
{
	struct pf_page *pages = pf__shared_meta(h);
	pf__zone_init(&h->zone, pages, PF_FRAG_ORDER);
	uint32_t buddy_pages = h->data_pages - h->reserve_pages;
	for (uint32_t i = buddy_pages; i > 0;) {
		i -= 1u << PF_FRAG_ORDER;
		pf__zone_list_add(&h->zone, PF_FRAG_ORDER, i);
	}
	for (uint32_t i = h->data_pages; i-- > buddy_pages;) {
		pages[i] = (struct pf_page){ .flags = PF_PF_RESERVE, .prev = PF_NIL };
		h->zone.pages_out++; /* reserve_put counts it back */
		pf__zone_reserve_put(&h->zone, &pages[i]);
	}
}

static struct pf_page *pages_alloc(void *arg, unsigned order, unsigned gfp)
{
	struct pf_shared_header *h = arg;
	pf__shared_lock_header(h);
	uint32_t index = pf__zone_take(&h->zone, order);
	struct pf_page *page = NULL;
	if (index != PF_NIL)
		page = pf__zone_mark(&h->zone, index, order, PF_PS_IN_USE);
	else if (order == 0 && !(gfp & (PF_GFP_NORETRY | PF_GFP_NORESERVE)))
		page = pf__zone_reserve_take(&h->zone);
	pf__shared_unlock_header(h);
	if (!page)
		errno = ENOMEM;
	return page;
}

static uintptr_t shared_page_address(const struct pf_shared_header *h, const struct pf_page *page)
{
	return pf__shared_data(h) + ((uintptr_t)(page - pf__shared_meta(h)) << PF_PAGE_SHIFT);
}

struct pf_shared *pf__shared_of_page(const struct pf_page *page)
{
	for (unsigned i = 0; i < PF_SHARED_LOCAL_MAX; i++) {
		struct pf_shared_header *h = pf__shared_table[i].header;
		if (h && (uintptr_t)page - (uintptr_t)pf__shared_meta(h) <
				 (uintptr_t)h->data_pages * sizeof(struct pf_page))
			return &pf__shared_table[i];
	}
	return NULL;
}

struct pf_shared *pf__shared_of_address(const void *addr)
{
	for (unsigned i = 0; i < PF_SHARED_LOCAL_MAX; i++) {
		struct pf_shared_header *h = pf__shared_table[i].header;
		if (h && (uintptr_t)addr - pf__shared_data(h) < (uintptr_t)h->data_pages << PF_PAGE_SHIFT)
			return &pf__shared_table[i];
	}
	return NULL;
}

struct pf_shared_header *pf__shared_header_of_page(const struct pf_page *page)
{
	struct pf_shared *local = pf__shared_of_page(page);
	return local ? local->header : NULL;
}

static void pages_free(struct pf_page *head)
{
	struct pf_shared_header *h = pf__shared_header_of_page(head);
	if (PF_UNLIKELY(!h))
		return; /* not possible for a page a fragment came from while attached */
	pf__shared_lock_header(h);
	if (head->flags & PF_PF_RESERVE) {
		pf__zone_reserve_put(&h->zone, head);
		pf__shared_count(h, PF_CTR_RESERVE_RETURNS, 1);
	} else {
		pf__zone_put(&h->zone, (uint32_t)(head - pf__shared_meta(h)), head->order);
	}
	pf__shared_unlock_header(h);
}

void pf__shared_frag_count(struct pf_shared_header *h, enum pf_counter c)
{
	if (h && (unsigned)c < PF_SCTR_COUNT)
		pf__shared_count(h, (unsigned)c, 1);
}

static uintptr_t page_address(void *arg, const struct pf_page *page)
{
	return shared_page_address(arg, page);
}

static void frag_count(void *arg, const struct pf_page *page, enum pf_counter c)
{
	pf__shared_frag_count(arg ? arg : pf__shared_header_of_page(page), c);
}

/* The owner is inside page_frag's slow path: a reaper must not drain the cache then. */
static void cache_busy(struct pf_cache *cache, bool busy)
{
	struct pf_shared_slot *slot = (struct pf_shared_slot *)cache; /* the cache is its first member */
	atomic_store_explicit(&slot->busy, busy, memory_order_release);
}

const struct pf_page_source pf__shared_source = {
	.alloc = pages_alloc,
	.address = page_address,
	.release = pages_free,
	.count = frag_count,
	.busy = cache_busy,
};

/* The first page of the block holding addr (addr inside h's frag pages). */
static struct pf_page *block_of(const struct pf_shared_header *h, const void *addr)
{
	struct pf_page *page =
		&pf__shared_meta(h)[((uintptr_t)addr - pf__shared_data(h)) >> PF_PAGE_SHIFT];
	if (pf__state(page) == PF_PS_TAIL)
		page -= page->head_delta;
	return page;
}

struct pf_page *pf__shared_head_page(const struct pf_shared_header *h, const void *addr)
{
	struct pf_page *page = block_of(h, addr);
	return pf__state(page) == PF_PS_IN_USE ? page : NULL;
}

int pf__shared_page_query(const void *addr, pf_page_info_t *out)
{
	struct pf_shared *local = pf__shared_of_address(addr);
	if (!local) {
		pf__fail(EINVAL, "address is not inside pyfrag's arena or an attached shared arena");
		return -1;
	}
	struct pf_shared_header *h = local->header;
	struct pf_page *page = block_of(h, addr);
	pf__page_info(page, shared_page_address(h, page), out);
	return 0;
}
