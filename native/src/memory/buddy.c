/* SPDX-License-Identifier: GPL-2.0-only */
/*
 * Buddy zone: the binary buddy allocator over one array of page metadata
 * (the kernel's struct zone free_area), used by the private arena's page
 * allocator (page_alloc.c, orders 0..9) and by each shared arena
 * (shared_pages.c, orders 0..3, inside the shared mapping).
 *
 * Blocks of 2^order pages are named by their first page's index; a free
 * block's head is PF_PS_FREE on the list of its order, its other pages
 * PF_PS_FREE_TAIL. Freeing merges a block with its buddy (index ^ 2^order)
 * while the buddy is free and of the same order. The reserve is a plain
 * list of order-0 pages flagged PF_PF_RESERVE. Callers hold the zone's lock.
 *
 * The page states are the truth: pf__zone_rebuild() remakes every list
 * from them, which is how a shared zone recovers when a process died
 * holding its lock.
 */
#include "memory/memory.h"

void pf__zone_init(struct pf_zone *zone, struct pf_page *pages, uint32_t max_order)
{
	zone->pages = pages;
	zone->max_order = max_order;
	for (unsigned order = 0; order <= PF_MAX_ORDER; order++) {
		zone->free_head[order] = PF_NIL;
		zone->free_count[order] = 0;
	}
	zone->reserve_head = PF_NIL;
	zone->reserve_free = 0;
	zone->pages_out = 0;
}

void pf__zone_list_add(struct pf_zone *zone, unsigned order, uint32_t index)
{
	struct pf_page *page = &zone->pages[index];
	pf__set_state(page, PF_PS_FREE);
	page->order = (uint8_t)order;
	page->prev = PF_NIL;
	page->next = zone->free_head[order];
	if (zone->free_head[order] != PF_NIL)
		zone->pages[zone->free_head[order]].prev = index;
	zone->free_head[order] = index;
	zone->free_count[order]++;
}

void pf__zone_list_del(struct pf_zone *zone, unsigned order, uint32_t index)
{
	struct pf_page *page = &zone->pages[index];
	if (page->prev != PF_NIL)
		zone->pages[page->prev].next = page->next;
	else
		zone->free_head[order] = page->next;
	if (page->next != PF_NIL)
		zone->pages[page->next].prev = page->prev;
	pf__set_state(page, PF_PS_FREE_TAIL);
	zone->free_count[order]--;
}

struct pf_page *pf__zone_mark(struct pf_zone *zone, uint32_t index, unsigned order,
			      enum pf_page_state state)
{
	struct pf_page *head = &zone->pages[index];
	for (uint32_t i = 1; i < (1u << order); i++) {
		pf__set_state(&head[i], PF_PS_TAIL);
		head[i].head_delta = i;
	}
	head->order = (uint8_t)order;
	head->flags = 0;
	head->next = PF_NIL;
	atomic_store_explicit(&head->refcount, 1, memory_order_relaxed);
	/* last: a head marked in use is what a rebuild keeps */
	pf__set_state(head, state);
	return head;
}

uint32_t pf__zone_take(struct pf_zone *zone, unsigned order)
{
	unsigned found = order;
	while (found <= zone->max_order && zone->free_head[found] == PF_NIL)
		found++;
	if (found > zone->max_order)
		return PF_NIL;
	uint32_t index = zone->free_head[found];
	pf__zone_list_del(zone, found, index);
	while (found > order) { /* keep the lower half, free the upper */
		found--;
		pf__zone_list_add(zone, found, index + (1u << found));
	}
	zone->pages_out += 1u << order;
	return index;
}

void pf__zone_put(struct pf_zone *zone, uint32_t index, unsigned order)
{
	struct pf_page *head = &zone->pages[index];
	for (uint32_t i = 1; i < (1u << order); i++)
		pf__set_state(&head[i], PF_PS_FREE_TAIL);
	zone->pages_out -= 1u << order;
	while (order < zone->max_order) {
		uint32_t buddy = index ^ (1u << order);
		struct pf_page *bp = &zone->pages[buddy];
		if (pf__state(bp) != PF_PS_FREE || bp->order != order)
			break;
		pf__zone_list_del(zone, order, buddy);
		pf__set_state(&zone->pages[index], PF_PS_FREE_TAIL);
		index &= buddy;
		order++;
	}
	pf__zone_list_add(zone, order, index);
}

struct pf_page *pf__zone_reserve_take(struct pf_zone *zone)
{
	if (zone->reserve_head == PF_NIL)
		return NULL;
	uint32_t index = zone->reserve_head;
	struct pf_page *page = &zone->pages[index];
	zone->reserve_head = page->next;
	zone->reserve_free--;
	zone->pages_out++;
	pf__zone_mark(zone, index, 0, PF_PS_IN_USE);
	page->flags = PF_PF_RESERVE;
	return page;
}

void pf__zone_reserve_put(struct pf_zone *zone, struct pf_page *page)
{
	pf__set_state(page, PF_PS_RESERVE_FREE);
	page->flags = PF_PF_RESERVE;
	page->next = zone->reserve_head;
	zone->reserve_head = (uint32_t)(page - zone->pages);
	zone->reserve_free++;
	zone->pages_out--;
}

uint64_t pf__zone_rebuild(struct pf_zone *zone, uint32_t npages)
{
	struct pf_page *pages = zone->pages;
	pf__zone_init(zone, pages, zone->max_order);
	/* pass 1: everything outside an in-use block is free; forget the old list states */
	uint64_t in_use = 0;
	for (uint32_t i = 0; i < npages;) {
		struct pf_page *page = &pages[i];
		if (pf__state(page) == PF_PS_IN_USE) {
			uint32_t n = 1u << page->order;
			in_use += n;
			i += n;
			continue;
		}
		pf__set_state(page, PF_PS_FREE_TAIL);
		i++;
	}
	/* pass 2: put each free page back; a page merges with the free ones before it */
	zone->pages_out = npages; /* each page put back takes itself off */
	for (uint32_t i = 0; i < npages;) {
		struct pf_page *page = &pages[i];
		if (pf__state(page) == PF_PS_IN_USE) {
			i += 1u << page->order;
			continue;
		}
		if (page->flags & PF_PF_RESERVE)
			pf__zone_reserve_put(zone, page);
		else
			pf__zone_put(zone, i, 0);
		i++;
	}
	return in_use;
}
