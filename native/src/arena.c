/* SPDX-License-Identifier: GPL-2.0-only */
/*
 * Arena: one reservation of address space, made once, that holds every byte
 * pyfrag hands out, so "is this pointer mine" is one range compare and its
 * page metadata is one shift away.
 *
 * The range is cut into 2 MiB chunk slots. A slot is committed (backed by
 * memory) when the page allocator runs dry and released when its chunk is
 * wholly free again; the last slot holds the emergency reserve instead.
 * Runs of contiguous slots (the malloc front's large allocations) are
 * committed with one mapping and released likewise. Slots below
 * next_fresh_slot that are free again are bits in the released bitmap; the
 * lowest fitting ones are taken first, and the fresh mark moves back down
 * when the top slots are released, so the used part of the range stays
 * compact. The
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

static int arena_try(size_t size)
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
	size_t map_bytes = (slots + 63) / 64 * sizeof(uint64_t);
	size_t meta_bytes = page_bytes + map_bytes + slots;

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
	pf__arena.released = (uint64_t *)(meta + page_bytes);
	pf__arena.chunk_backing = (uint8_t *)(meta + page_bytes + map_bytes);
	return 0;
}

/*
 * The size asked for, else halves of it down to 1 GiB: a cap on address
 * space gives a smaller arena rather than none (ulimit -v says ENOMEM;
 * valgrind, which caps mappings, says EINVAL).
 */
int pf__arena_init(size_t size)
{
	const size_t floor = (size_t)1 << 30;
	if (size / PF_CHUNK_SIZE > UINT32_MAX / PF_CHUNK_PAGES) {
		errno = EINVAL; /* page numbers are 32-bit: at most 16 TiB */
		return -1;
	}
	while (arena_try(size) != 0) {
		if (size / 2 < floor)
			return -1;
		size /= 2;
	}
	return 0;
}

/* ---- slots ------------------------------------------------------------------ */

static uint32_t usable_slots(void)
{
	return pf__arena.chunk_slots - 1; /* the last one holds the reserve */
}

static bool slot_released(uint32_t slot)
{
	return (pf__arena.released[slot / 64] >> (slot % 64)) & 1u;
}

static bool slot_free(uint32_t slot)
{
	return slot >= pf__arena.next_fresh_slot || slot_released(slot);
}

/* Mark [slot, slot + n) as taken. */
static void claim_slots(uint32_t slot, uint32_t n)
{
	struct pf_arena *a = &pf__arena;
	for (uint32_t s = slot; s < slot + n; s++) {
		if (s >= a->next_fresh_slot) {
			a->next_fresh_slot = slot + n;
			break;
		}
		a->released[s / 64] &= ~(1ull << (s % 64));
		a->released_count--;
	}
}

/* Give a slot back; the fresh mark moves down over released slots at the top. */
static void unclaim_slot(uint32_t slot)
{
	struct pf_arena *a = &pf__arena;
	a->released[slot / 64] |= 1ull << (slot % 64);
	a->released_count++;
	while (a->next_fresh_slot > 0 && slot_released(a->next_fresh_slot - 1)) {
		uint32_t top = --a->next_fresh_slot;
		a->released[top / 64] &= ~(1ull << (top % 64));
		a->released_count--;
	}
}

/* Lowest n free contiguous slots whose address is aligned; PF_NIL if none. */
static uint32_t find_slots(uint32_t n, size_t align)
{
	struct pf_arena *a = &pf__arena;
	uint32_t step = (uint32_t)(align / PF_CHUNK_SIZE);
	uint32_t mis = (uint32_t)(((align - (a->base & (align - 1))) & (align - 1)) / PF_CHUNK_SIZE);
	if (n == 1 && step == 1 && a->released_count) {
		for (uint32_t w = 0; w * 64 < a->next_fresh_slot; w++)
			if (a->released[w])
				return w * 64 + (uint32_t)__builtin_ctzll(a->released[w]);
	}
	uint32_t start = mis;
	if (a->released_count < n) /* only the fresh part can hold it */
		while (start < a->next_fresh_slot)
			start += step;
	while (start + n <= usable_slots()) {
		uint32_t i = 0;
		while (i < n && slot_free(start + i))
			i++;
		if (i == n)
			return start;
		/* slot start + i is taken: the next candidate lies past it */
		uint32_t past = start + i + 1 - mis;
		start = mis + (past + step - 1) / step * step;
	}
	return PF_NIL;
}

/* ---- commit and release -------------------------------------------------------- */

static int commit_with(uint32_t slot, uint32_t n, enum pf_backing backing)
{
	return pf__os.commit((void *)(pf__arena.base + (uintptr_t)slot * PF_CHUNK_SIZE),
			     (size_t)n * PF_CHUNK_SIZE, backing);
}

/* Try the backings the mode allows, best first. */
static enum pf_backing commit_slots(uint32_t slot, uint32_t n)
{
	switch ((enum pf_hugepages_mode)PF_OPT(hugepages)) {
	case PF_HP_HUGETLB:
		return commit_with(slot, n, PF_BACKING_HUGETLB) == 0 ? PF_BACKING_HUGETLB : PF_BACKING_NONE;
	case PF_HP_THP:
		return commit_with(slot, n, PF_BACKING_THP) == 0 ? PF_BACKING_THP : PF_BACKING_NONE;
	case PF_HP_OFF:
		return commit_with(slot, n, PF_BACKING_4K) == 0 ? PF_BACKING_4K : PF_BACKING_NONE;
	case PF_HP_AUTO:
		break;
	}
	if (commit_with(slot, n, PF_BACKING_HUGETLB) == 0)
		return PF_BACKING_HUGETLB;
	if (commit_with(slot, n, PF_BACKING_THP) == 0)
		return PF_BACKING_THP;
	return commit_with(slot, n, PF_BACKING_4K) == 0 ? PF_BACKING_4K : PF_BACKING_NONE;
}

static bool over_limit(uint32_t n)
{
	long long limit = PF_OPT(limit);
	return limit > 0 &&
	       pf__arena_counts.committed_bytes + (uint64_t)n * PF_CHUNK_SIZE > (uint64_t)limit;
}

static uint32_t commit_failed(void)
{
	pf__count(PF_CTR_COMMIT_FAILURES, 1);
	errno = ENOMEM;
	return PF_NIL;
}

/* Commit [slot, slot + n) (already claimed); false and the slots unclaimed on failure. */
static bool commit_claimed(uint32_t slot, uint32_t n)
{
	enum pf_backing backing = commit_slots(slot, n);
	if (backing == PF_BACKING_NONE) {
		for (uint32_t i = n; i-- > 0;)
			unclaim_slot(slot + i);
		return false;
	}
	for (uint32_t i = 0; i < n; i++)
		pf__arena.chunk_backing[slot + i] = (uint8_t)backing;
	pf__arena_counts.by_backing[backing] += n;
	pf__arena_counts.committed_bytes += (uint64_t)n * PF_CHUNK_SIZE;
	if (pf__arena_counts.committed_bytes > pf__arena_counts.peak_committed_bytes)
		pf__arena_counts.peak_committed_bytes = pf__arena_counts.committed_bytes;
	pf__count(PF_CTR_CHUNK_COMMITS, n);
	return true;
}

uint32_t pf__arena_commit_run(uint32_t n, size_t align)
{
	if (n == 0 || n > usable_slots() || align > pf__arena.size || over_limit(n))
		return commit_failed();
	if (align < PF_CHUNK_SIZE)
		align = PF_CHUNK_SIZE;
	uint32_t slot = find_slots(n, align);
	if (slot == PF_NIL)
		return commit_failed();
	claim_slots(slot, n);
	if (!commit_claimed(slot, n))
		return commit_failed();
	return slot * PF_CHUNK_PAGES;
}

int pf__arena_extend_run(uint32_t first_page, uint32_t n, uint32_t more)
{
	uint32_t slot = first_page / PF_CHUNK_PAGES + n;
	if (more == 0)
		return 0;
	if (slot + more > usable_slots() || over_limit(more))
		return -1;
	for (uint32_t i = 0; i < more; i++)
		if (!slot_free(slot + i))
			return -1;
	claim_slots(slot, more);
	if (!commit_claimed(slot, more)) {
		pf__count(PF_CTR_COMMIT_FAILURES, 1);
		return -1;
	}
	return 0;
}

uint32_t pf__arena_commit_chunk(void)
{
	uint32_t first = pf__arena_commit_run(1, PF_CHUNK_SIZE);
	if (first == PF_NIL)
		return PF_NIL;
	struct pf_page *pages = pf__page_at(first);
	for (uint32_t i = 0; i < PF_CHUNK_PAGES; i++)
		pages[i] = (struct pf_page){ .next = PF_NIL, .prev = PF_NIL, .state = PF_PS_FREE_TAIL };
	return first;
}

static int release_slots(uint32_t slot, uint32_t n)
{
	if (pf__os.decommit((void *)(pf__arena.base + (uintptr_t)slot * PF_CHUNK_SIZE),
			    (size_t)n * PF_CHUNK_SIZE) != 0)
		return -1; /* keep it committed rather than lose track of it */
	for (uint32_t i = 0; i < n; i++) {
		enum pf_backing backing = (enum pf_backing)pf__arena.chunk_backing[slot + i];
		pf__arena.chunk_backing[slot + i] = PF_BACKING_NONE;
		pf__arena_counts.by_backing[backing]--;
		unclaim_slot(slot + i);
	}
	pf__arena_counts.committed_bytes -= (uint64_t)n * PF_CHUNK_SIZE;
	pf__count(PF_CTR_CHUNK_RELEASES, n);
	return 0;
}

int pf__arena_release_run(uint32_t first_page, uint32_t n)
{
	return release_slots(first_page / PF_CHUNK_PAGES, n);
}

int pf__arena_release_chunk(uint32_t first_page)
{
	if (release_slots(first_page / PF_CHUNK_PAGES, 1) != 0)
		return -1;
	struct pf_page *pages = pf__page_at(first_page);
	for (uint32_t i = 0; i < PF_CHUNK_PAGES; i++)
		pf__set_state(&pages[i], PF_PS_UNCOMMITTED);
	return 0;
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

bool pf__arena_has_hugetlb(void)
{
	return pf__arena_counts.by_backing[PF_BACKING_HUGETLB] > 0;
}

void pf__arena_unshare_hugetlb(void)
{
	for (uint32_t slot = 0; slot < pf__arena.next_fresh_slot; slot++) {
		if (pf__arena.chunk_backing[slot] != PF_BACKING_HUGETLB)
			continue;
		void *addr = (void *)(pf__arena.base + (uintptr_t)slot * PF_CHUNK_SIZE);
		if (pf__os_unshare_hugetlb(addr, PF_CHUNK_SIZE) != 0)
			continue; /* out of memory: keep the hugetlb chunk, as without this step */
		pf__arena.chunk_backing[slot] = PF_BACKING_THP;
		pf__arena_counts.by_backing[PF_BACKING_HUGETLB]--;
		pf__arena_counts.by_backing[PF_BACKING_THP]++;
	}
}
