/* SPDX-License-Identifier: GPL-2.0-only */
/*
 * Page allocator: a binary buddy allocator over the arena's committed chunks
 * (orders 0..9; an order-9 block is a whole chunk), in front of it per-thread
 * page lists for the orders page_frag uses (0 and 3, like the kernel's pcp
 * lists), and beside it the emergency reserve.
 *
 * - pf__pages_alloc hands out a block holding one reference. Order 0 and 3
 *   come from the page lists the caller hands in (its thread's), refilled from the buddy lists a
 *   batch at a time, so the global lock is taken once per batch.
 * - PF_GFP_NORETRY fails fast: no new chunk is committed and the reserve is
 *   not touched (page_frag's order-3 attempt).
 * - Without it, an empty buddy commits a chunk, and an order-0 request that
 *   still fails takes a reserve page (flagged PF_PF_RESERVE, the kernel's
 *   pfmemalloc).
 * - pf__pages_free puts a block on the list handed in (the freeing thread's); beyond
 *   PYFRAG_PCP_HIGH blocks a batch goes back to the buddy lists, where it
 *   merges with its buddies. A chunk wholly free again is released to the OS
 *   when more than PYFRAG_RETAIN are empty. Reserve pages go back to the
 *   reserve.
 * - Chunk runs (pf__chunks_alloc) are whole contiguous chunks straight from
 *   the arena for the malloc front's large allocations: one reference, the
 *   head page flagged PF_PF_CHUNKS with the run length in next, each further
 *   chunk's first page a tail leading to the head. They go back to the OS
 *   when freed, never through the buddy lists.
 */
#include "memory/memory.h"

#include <errno.h>
#include <string.h>

pthread_mutex_t pf__page_lock = PTHREAD_MUTEX_INITIALIZER;

/* The private arena's buddy zone (buddy.c), all under pf__page_lock. */
static struct pf_zone zone;

/* A block from the buddy lists, committing a new chunk if allowed and needed. */
static uint32_t buddy_take(unsigned order, bool may_commit)
{
	uint32_t index = pf__zone_take(&zone, order);
	if (index != PF_NIL || !may_commit)
		return index;
	index = pf__arena_commit_chunk();
	if (index == PF_NIL)
		return PF_NIL;
	pf__zone_list_add(&zone, PF_MAX_ORDER, index);
	return pf__zone_take(&zone, order);
}

static void release_empty_chunks_locked(size_t *released)
{
	long long retain = PF_OPT(retain);
	while (zone.free_count[PF_MAX_ORDER] > (uint64_t)(retain < 0 ? 0 : retain)) {
		uint32_t index = zone.free_head[PF_MAX_ORDER];
		pf__zone_list_del(&zone, PF_MAX_ORDER, index);
		if (pf__arena_release_chunk(index) != 0) {
			pf__zone_list_add(&zone, PF_MAX_ORDER, index); /* the OS kept it: keep it usable, try later */
			break;
		}
		if (released)
			++*released;
	}
}

/* ---- per-thread page lists ------------------------------------------------------ */

static int pcp_slot(unsigned order)
{
	return order == 0 ? 0 : order == PF_FRAG_ORDER ? 1 : -1;
}

static unsigned pcp_order(int slot)
{
	return slot == 0 ? 0 : PF_FRAG_ORDER;
}

static uint32_t pcp_batch(void)
{
	long long high = PF_OPT(pcp_high);
	return high <= 0 ? 0 : (uint32_t)((high + 3) / 4);
}

static uint32_t pcp_count(const struct pf_pcp *pcp, int slot)
{
	return atomic_load_explicit(&pcp->count[slot], memory_order_relaxed);
}

static void pcp_push(struct pf_pcp *pcp, int slot, uint32_t index)
{
	struct pf_page *page = pf__page_at(index);
	pf__set_state(page, PF_PS_CACHED);
	page->next = pcp->head[slot];
	pcp->head[slot] = index;
	atomic_store_explicit(&pcp->count[slot], pcp_count(pcp, slot) + 1, memory_order_relaxed);
}

static uint32_t pcp_pop(struct pf_pcp *pcp, int slot)
{
	uint32_t index = pcp->head[slot];
	if (index != PF_NIL) {
		pcp->head[slot] = pf__page_at(index)->next;
		atomic_store_explicit(&pcp->count[slot], pcp_count(pcp, slot) - 1, memory_order_relaxed);
	}
	return index;
}

/* Give up to n blocks from one list back to the buddy lists. */
static void pcp_drain_locked(struct pf_pcp *pcp, int slot, uint32_t n)
{
	while (n--) {
		uint32_t index = pcp_pop(pcp, slot);
		if (index == PF_NIL)
			break;
		pf__zone_put(&zone, index, pcp_order(slot));
	}
}

uint64_t pf__pcp_pages(const struct pf_pcp *pcp)
{
	uint64_t pages = 0;
	for (int slot = 0; slot < PF_PCP_ORDERS; slot++)
		pages += (uint64_t)pcp_count(pcp, slot) << pcp_order(slot);
	return pages;
}

void pf__pcp_flush(struct pf_pcp *pcp)
{
	pthread_mutex_lock(&pf__page_lock);
	for (int slot = 0; slot < PF_PCP_ORDERS; slot++)
		pcp_drain_locked(pcp, slot, UINT32_MAX);
	release_empty_chunks_locked(NULL);
	pthread_mutex_unlock(&pf__page_lock);
}

/* ---- entry points ------------------------------------------------------------------ */

static struct pf_page *alloc_from_pcp(struct pf_pcp *pcp, int slot, unsigned order, unsigned gfp)
{
	uint32_t index = pcp_pop(pcp, slot);
	if (index == PF_NIL) {
		uint32_t batch = pcp_batch();
		pthread_mutex_lock(&pf__page_lock);
		index = buddy_take(order, !(gfp & PF_GFP_NORETRY));
		/* the rest of the batch only from blocks already committed */
		for (uint32_t i = 1; index != PF_NIL && i < batch; i++) {
			uint32_t extra = buddy_take(order, false);
			if (extra == PF_NIL)
				break;
			pf__zone_mark(&zone, extra, order, PF_PS_CACHED);
			pcp_push(pcp, slot, extra);
		}
		pthread_mutex_unlock(&pf__page_lock);
		if (index == PF_NIL)
			return NULL;
	}
	return pf__zone_mark(&zone, index, order, PF_PS_IN_USE);
}

struct pf_page *pf__pages_alloc(struct pf_pcp *pcp, unsigned order, unsigned gfp)
{
	int slot = pcp_slot(order);
	struct pf_page *page = NULL;
	bool may_use_reserve = order == 0 && !(gfp & (PF_GFP_NORETRY | PF_GFP_NORESERVE));
	if (slot >= 0 && pcp && pcp_batch() > 0) {
		page = alloc_from_pcp(pcp, slot, order, gfp);
		if (!page && may_use_reserve) {
			pthread_mutex_lock(&pf__page_lock);
			page = pf__zone_reserve_take(&zone);
			pthread_mutex_unlock(&pf__page_lock);
		}
	} else {
		pthread_mutex_lock(&pf__page_lock);
		uint32_t index = buddy_take(order, !(gfp & PF_GFP_NORETRY));
		if (index != PF_NIL)
			page = pf__zone_mark(&zone, index, order, PF_PS_IN_USE);
		else if (may_use_reserve)
			page = pf__zone_reserve_take(&zone);
		pthread_mutex_unlock(&pf__page_lock);
	}
	if (!page)
		errno = ENOMEM;
	return page;
}

/* Give pages [index, index + n) back as the largest aligned buddy blocks (caller holds pf__page_lock). */
static void put_range_locked(uint32_t index, uint32_t n)
{
	while (n) {
		unsigned order = (unsigned)__builtin_ctz(index | (1u << PF_MAX_ORDER));
		while ((1u << order) > n)
			order--;
		pf__zone_put(&zone, index, order);
		index += 1u << order;
		n -= 1u << order;
	}
}

struct pf_page *pf__pages_alloc_exact(uint32_t n, unsigned align_order)
{
	unsigned order = n <= 1 ? 0 : (unsigned)(32 - __builtin_clz(n - 1));
	if (order < align_order)
		order = align_order;
	if (n == 0 || order > PF_MAX_ORDER) {
		errno = ENOMEM;
		return NULL;
	}
	pthread_mutex_lock(&pf__page_lock);
	uint32_t index = buddy_take(order, true);
	struct pf_page *head = NULL;
	if (index != PF_NIL) {
		head = pf__zone_mark(&zone, index, order, PF_PS_IN_USE);
		if (n < (1u << order))
			put_range_locked(index + n, (1u << order) - n);
		head->flags = PF_PF_EXACT;
		head->next = n;
	}
	pthread_mutex_unlock(&pf__page_lock);
	if (!head)
		errno = ENOMEM;
	return head;
}

static void chunks_free(struct pf_page *head);

void pf__pages_free(struct pf_pcp *pcp, struct pf_page *head)
{
	if (PF_UNLIKELY(head->flags & PF_PF_CHUNKS)) {
		chunks_free(head);
		return;
	}
	if (head->flags & PF_PF_EXACT) {
		uint32_t n = pf__exact_run_pages(head);
		pthread_mutex_lock(&pf__page_lock);
		head->flags = 0;
		put_range_locked(pf__page_number(head), n);
		release_empty_chunks_locked(NULL);
		pthread_mutex_unlock(&pf__page_lock);
		return;
	}
	if (head->flags & PF_PF_RESERVE) {
		pthread_mutex_lock(&pf__page_lock);
		pf__zone_reserve_put(&zone, head);
		pthread_mutex_unlock(&pf__page_lock);
		pf__count(PF_CTR_RESERVE_RETURNS, 1);
		return;
	}
	unsigned order = head->order;
	int slot = pcp_slot(order);
	long long high = PF_OPT(pcp_high);
	if (slot >= 0 && pcp && high > 0) {
		pcp_push(pcp, slot, pf__page_number(head));
		if (pcp_count(pcp, slot) <= (uint64_t)high)
			return;
		pthread_mutex_lock(&pf__page_lock);
		pcp_drain_locked(pcp, slot, pcp_batch());
	} else {
		pthread_mutex_lock(&pf__page_lock);
		pf__zone_put(&zone, pf__page_number(head), order);
	}
	release_empty_chunks_locked(NULL);
	pthread_mutex_unlock(&pf__page_lock);
}

/* ---- chunk runs ------------------------------------------------------------------ */

/* Mark chunks [from, n) of the run at first as tails (chunk 0 is the head). */
static void mark_run_tails(uint32_t first, uint32_t from, uint32_t n)
{
	for (uint32_t i = from ? from : 1; i < n; i++) {
		struct pf_page *page = pf__page_at(first + i * PF_CHUNK_PAGES);
		page->head_delta = i * PF_CHUNK_PAGES;
		pf__set_state(page, PF_PS_TAIL);
	}
}

static void unmark_run(uint32_t first, uint32_t from, uint32_t n)
{
	for (uint32_t i = from; i < n; i++)
		pf__set_state(pf__page_at(first + i * PF_CHUNK_PAGES), PF_PS_UNCOMMITTED);
}

struct pf_page *pf__chunks_alloc(uint32_t n, size_t align, bool *fresh)
{
	pthread_mutex_lock(&pf__page_lock);
	uint32_t first = pf__arena_commit_run(n, align);
	struct pf_page *head = NULL;
	if (first != PF_NIL) {
		head = pf__page_at(first);
		*head = (struct pf_page){ .next = n, .prev = PF_NIL, .order = PF_MAX_ORDER,
					  .flags = PF_PF_CHUNKS };
		atomic_store_explicit(&head->refcount, 1, memory_order_relaxed);
		mark_run_tails(first, 1, n);
		pf__set_state(head, PF_PS_IN_USE);
		zone.pages_out += (uint64_t)n * PF_CHUNK_PAGES;
	}
	pthread_mutex_unlock(&pf__page_lock);
	if (!head)
		errno = ENOMEM;
	*fresh = true; /* a new mapping reads as zero */
	return head;
}

/*
 * Chunks of a run go back to the OS. Chunks the OS would not take back stay
 * committed: they join the buddy lists as free chunks, usable at once and
 * released later like any empty chunk (caller holds pf__page_lock).
 */
static void release_run_locked(uint32_t first, uint32_t n)
{
	if (pf__arena_release_run(first, n) == 0)
		return;
	for (uint32_t i = 0; i < n; i++)
		pf__zone_list_add(&zone, PF_MAX_ORDER, first + i * PF_CHUNK_PAGES);
}

static void chunks_free(struct pf_page *head)
{
	uint32_t first = pf__page_number(head), n = pf__chunk_run_length(head);
	pthread_mutex_lock(&pf__page_lock);
	unmark_run(first, 0, n);
	release_run_locked(first, n);
	zone.pages_out -= (uint64_t)n * PF_CHUNK_PAGES;
	pthread_mutex_unlock(&pf__page_lock);
}

int pf__chunks_resize(struct pf_page *head, uint32_t n)
{
	uint32_t first = pf__page_number(head), old = pf__chunk_run_length(head);
	int ret = 0;
	pthread_mutex_lock(&pf__page_lock);
	if (n < old) {
		unmark_run(first, n, old);
		release_run_locked(first + n * PF_CHUNK_PAGES, old - n);
	} else if (n > old) {
		ret = pf__arena_extend_run(first, old, n - old);
		if (ret == 0)
			mark_run_tails(first, old, n);
	}
	if (ret == 0) {
		zone.pages_out = zone.pages_out - (uint64_t)old * PF_CHUNK_PAGES + (uint64_t)n * PF_CHUNK_PAGES;
		head->next = n;
	}
	pthread_mutex_unlock(&pf__page_lock);
	return ret;
}

size_t pf__release_empty_chunks(void)
{
	size_t released = 0;
	pthread_mutex_lock(&pf__page_lock);
	release_empty_chunks_locked(&released);
	pthread_mutex_unlock(&pf__page_lock);
	return released;
}

void pf__page_counts_get(struct pf_page_counts *out)
{
	pthread_mutex_lock(&pf__page_lock);
	out->pages_out = zone.pages_out;
	out->empty_chunks = zone.free_count[PF_MAX_ORDER];
	out->reserve_free = zone.reserve_free;
	pthread_mutex_unlock(&pf__page_lock);
}

int pf__page_alloc_init(void)
{
	pf__zone_init(&zone, pf__arena.pages, PF_MAX_ORDER);
	long long bytes = PF_OPT(reserve);
	uint32_t pages = bytes > 0 ? (uint32_t)((bytes + PF_PAGE_SIZE - 1) / PF_PAGE_SIZE) : 0;
	uint32_t first = pf__arena_commit_reserve(pages);
	if (first == PF_NIL)
		return 0; /* no reserve: refills simply fail sooner */
	if (pages > PF_CHUNK_PAGES)
		pages = PF_CHUNK_PAGES;
	for (uint32_t i = pages; i-- > 0;) {
		struct pf_page *page = pf__page_at(first + i);
		*page = (struct pf_page){ .flags = PF_PF_RESERVE, .prev = PF_NIL };
		zone.pages_out++; /* reserve_put counts it back */
		pf__zone_reserve_put(&zone, page);
	}
	return 0;
}

/* ---- queries -------------------------------------------------------------------- */

void pf__page_info(const struct pf_page *page, uintptr_t head, pf_page_info_t *out)
{
	memset(out, 0, sizeof(*out));
	out->head = head;
	out->order = page->order;
	out->size = PF_PAGE_SIZE << page->order;
	if (pf__state(page) == PF_PS_IN_USE && (page->flags & PF_PF_EXACT))
		out->size = pf__exact_run_pages(page) << PF_PAGE_SHIFT;
	if (pf__state(page) == PF_PS_IN_USE) {
		out->flags |= PF_PAGE_IN_USE;
		out->refcount = atomic_load_explicit(&page->refcount, memory_order_acquire);
	}
	if (page->flags & PF_PF_RESERVE)
		out->flags |= PF_PAGE_RESERVE;
}
