/* SPDX-License-Identifier: GPL-2.0-only */
/*
 * Arena: one reservation of address space, made once, that holds every byte
 * pyfrag hands out, so "is this pointer mine" is one range compare and its
 * page metadata is one shift away.
 *
 * The range is cut into 2 MiB chunk slots. A slot is committed (backed by
 * memory) when the page allocator runs dry and released when its chunk is
 * wholly free again; the last slot holds the emergency reserve instead. The
 * page-metadata array has one struct pf_page per 4 KiB page of the whole
 * range; it is mapped lazily, so only the slots ever used cost memory.
 *
 * Callers hold pf__page_lock for commit and release.
 */
#include "internal.h"

#include <errno.h>
#include <string.h>

struct pf_arena pf__arena;
struct pf_arena_counts pf__arena_counts;

int pf__arena_init(size_t size)
{
	size = (size + PF_CHUNK_SIZE - 1) & ~(size_t)(PF_CHUNK_SIZE - 1);
	if (size < 2 * (size_t)PF_CHUNK_SIZE)
		size = 2 * (size_t)PF_CHUNK_SIZE;
	if (size / PF_CHUNK_SIZE > UINT32_MAX / PF_CHUNK_PAGES) {
		errno = EINVAL; /* page numbers are 32-bit: at most 16 TiB */
		return -1;
	}
	uint32_t slots = (uint32_t)(size / PF_CHUNK_SIZE);
	size_t page_bytes = (size_t)slots * PF_CHUNK_PAGES * sizeof(struct pf_page);
	size_t meta_bytes = page_bytes + slots * sizeof(uint32_t) + slots;

	char *meta = pf__os_map_meta(meta_bytes);
	if (!meta)
		return -1;
	void *base = pf__os.reserve(size, PF_CHUNK_SIZE);
	if (!base) {
		int err = errno;
		pf__os_unmap(meta, meta_bytes);
		errno = err;
		return -1;
	}
	pf__arena.base = (uintptr_t)base;
	pf__arena.size = size;
	pf__arena.chunk_slots = slots;
	pf__arena.pages = (struct pf_page *)meta;
	pf__arena.free_slots = (uint32_t *)(meta + page_bytes);
	pf__arena.chunk_backing = (uint8_t *)(meta + page_bytes + slots * sizeof(uint32_t));
	return 0;
}

static uint32_t take_slot(void)
{
	struct pf_arena *a = &pf__arena;
	if (a->free_slot_count)
		return a->free_slots[--a->free_slot_count];
	if (a->next_fresh_slot < a->chunk_slots - 1)
		return a->next_fresh_slot++;
	return PF_NIL;
}

static int commit_with(uintptr_t addr, enum pf_backing backing)
{
	return pf__os.commit((void *)addr, PF_CHUNK_SIZE, backing);
}

/* Try the backings the mode allows, best first. */
static enum pf_backing commit_slot(uint32_t slot)
{
	uintptr_t addr = pf__arena.base + (uintptr_t)slot * PF_CHUNK_SIZE;
	switch ((enum pf_hugepages_mode)PF_OPT(hugepages)) {
	case PF_HP_HUGETLB:
		return commit_with(addr, PF_BACKING_HUGETLB) == 0 ? PF_BACKING_HUGETLB : PF_BACKING_NONE;
	case PF_HP_THP:
		return commit_with(addr, PF_BACKING_THP) == 0 ? PF_BACKING_THP : PF_BACKING_NONE;
	case PF_HP_OFF:
		return commit_with(addr, PF_BACKING_4K) == 0 ? PF_BACKING_4K : PF_BACKING_NONE;
	case PF_HP_AUTO:
		break;
	}
	if (commit_with(addr, PF_BACKING_HUGETLB) == 0)
		return PF_BACKING_HUGETLB;
	if (commit_with(addr, PF_BACKING_THP) == 0)
		return PF_BACKING_THP;
	return commit_with(addr, PF_BACKING_4K) == 0 ? PF_BACKING_4K : PF_BACKING_NONE;
}

uint32_t pf__arena_commit_chunk(void)
{
	long long limit = PF_OPT(limit);
	if (limit > 0 && pf__arena_counts.committed_bytes + PF_CHUNK_SIZE > (uint64_t)limit) {
		pf__count(PF_CTR_COMMIT_FAILURES, 1);
		errno = ENOMEM;
		return PF_NIL;
	}
	uint32_t slot = take_slot();
	if (slot == PF_NIL) {
		pf__count(PF_CTR_COMMIT_FAILURES, 1);
		errno = ENOMEM;
		return PF_NIL;
	}
	enum pf_backing backing = commit_slot(slot);
	if (backing == PF_BACKING_NONE) {
		pf__arena.free_slots[pf__arena.free_slot_count++] = slot;
		pf__count(PF_CTR_COMMIT_FAILURES, 1);
		errno = ENOMEM;
		return PF_NIL;
	}
	pf__arena.chunk_backing[slot] = (uint8_t)backing;
	pf__arena_counts.by_backing[backing]++;
	pf__arena_counts.committed_bytes += PF_CHUNK_SIZE;
	if (pf__arena_counts.committed_bytes > pf__arena_counts.peak_committed_bytes)
		pf__arena_counts.peak_committed_bytes = pf__arena_counts.committed_bytes;
	pf__count(PF_CTR_CHUNK_COMMITS, 1);

	uint32_t first = slot * PF_CHUNK_PAGES;
	struct pf_page *pages = pf__page_at(first);
	for (uint32_t i = 0; i < PF_CHUNK_PAGES; i++)
		pages[i] = (struct pf_page){ .next = PF_NIL, .prev = PF_NIL, .state = PF_PS_FREE_TAIL };
	return first;
}

void pf__arena_release_chunk(uint32_t first_page)
{
	uint32_t slot = first_page / PF_CHUNK_PAGES;
	enum pf_backing backing = (enum pf_backing)pf__arena.chunk_backing[slot];
	if (pf__os.decommit((void *)(pf__arena.base + (uintptr_t)slot * PF_CHUNK_SIZE),
			    PF_CHUNK_SIZE) != 0)
		return; /* keep it committed rather than lose track of it */
	struct pf_page *pages = pf__page_at(first_page);
	for (uint32_t i = 0; i < PF_CHUNK_PAGES; i++)
		pf__set_state(&pages[i], PF_PS_UNCOMMITTED);
	pf__arena.chunk_backing[slot] = PF_BACKING_NONE;
	pf__arena.free_slots[pf__arena.free_slot_count++] = slot;
	pf__arena_counts.by_backing[backing]--;
	pf__arena_counts.committed_bytes -= PF_CHUNK_SIZE;
	pf__count(PF_CTR_CHUNK_RELEASES, 1);
}

uint32_t pf__arena_commit_reserve(uint32_t pages)
{
	if (pages == 0)
		return PF_NIL;
	if (pages > PF_CHUNK_PAGES)
		pages = PF_CHUNK_PAGES;
	uint32_t slot = pf__arena.chunk_slots - 1;
	uintptr_t addr = pf__arena.base + (uintptr_t)slot * PF_CHUNK_SIZE;
	if (pf__os.commit((void *)addr, (size_t)pages << PF_PAGE_SHIFT, PF_BACKING_4K) != 0)
		return PF_NIL;
	pf__arena.chunk_backing[slot] = PF_BACKING_4K;
	return slot * PF_CHUNK_PAGES;
}
