/* SPDX-License-Identifier: GPL-2.0-only */
/*
 * Arena: the address space pyfrag hands out, reserved in regions as the
 * program needs it, so that an address-space limit (ulimit -v, RLIMIT_AS)
 * gives a smaller arena that grows, never none and never a fixed ceiling.
 *
 * - One slot space of 2 MiB chunk slots, numbered from 0 and sized at init
 *   from PYFRAG_ARENA (the cap on address space reserved at once; twice
 *   that many slot numbers under RLIMIT_AS, for the holes trims leave). The
 *   page metadata (one struct pf_page per 4 KiB page of the slot space) is
 *   one array mapped once, lazily backed, 1/256 of the cap: a page's number
 *   indexes it whichever region holds the page, so the page allocator and
 *   the buddy zone see one range of page numbers, as before.
 * - Regions (at most PF_REGIONS_MAX) each own a run of slot numbers and one
 *   PROT_NONE reservation of that many chunks. The first is reserved at
 *   init: the whole cap when no address-space limit is set (then it is the
 *   only one, as before regions existed), else half of what the limit
 *   leaves. Another is reserved when no region has room for a request: at
 *   least the request, as much as is reserved already (the total doubles)
 *   but no more than half of what the limit leaves (the rest is the
 *   program's), halving towards the request when the OS refuses. If even
 *   the request cannot be had, the never-used tails of all regions are
 *   given back (trimmed: no memory is behind them) and it is tried once more.
 * - Region 0's bounds are the hot variables: "is this pointer mine" is one
 *   compare for it and a walk of the small table only on a miss.
 * - A slot is committed (backed by memory) when the page allocator runs dry
 *   and released when its chunk is wholly free again; slot 0 (region 0's
 *   first) holds the emergency reserve instead. Runs of contiguous slots
 *   (the malloc front's large allocations) lie inside one region and are
 *   committed with one mapping and released likewise. In each region, slots
 *   below its fresh mark that are free again are bits in the released
 *   bitmap; the lowest fitting ones are taken first, and the fresh mark
 *   moves back down when the top slots are released, so the used part stays
 *   compact and the never-used tail is what a trim can give back.
 *
 * Callers hold pf__page_lock for commit, release and growth; the lookups
 * (pf__in_arena and friends in memory.h) take no lock: a region's fields
 * are written before nregions publishes it, and a trim only lowers slots
 * over chunks no pointer can be in.
 */
#include "memory/memory.h"

#include <errno.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>

#define CHUNK ((size_t)PF_CHUNK_SIZE)

struct pf_arena pf__arena;
struct pf_arena_counts pf__arena_counts;

static size_t chunk_floor(size_t bytes)
{
	return bytes & ~(CHUNK - 1);
}

/* ---- regions ------------------------------------------------------------------ */

static uint32_t region_count(void)
{
	return atomic_load_explicit(&pf__arena.nregions, memory_order_acquire);
}

static uint32_t region_slots(const struct pf_region *r)
{
	return atomic_load_explicit(&r->slots, memory_order_relaxed);
}

static struct pf_region *region_of_addr(uintptr_t addr)
{
	uint32_t n = region_count();
	for (uint32_t i = 0; i < n; i++) {
		struct pf_region *r = &pf__arena.regions[i];
		if (addr - r->base < (size_t)region_slots(r) * CHUNK)
			return r;
	}
	return NULL;
}

/* The region whose slot numbers include slot, or NULL. */
static struct pf_region *region_of_slot(uint32_t slot)
{
	uint32_t n = region_count();
	for (uint32_t i = 0; i < n; i++) {
		struct pf_region *r = &pf__arena.regions[i];
		if (slot - r->first_slot < r->index_slots)
			return r;
	}
	return NULL;
}

bool pf__in_other_region(uintptr_t addr)
{
	return region_of_addr(addr) != NULL;
}

uint32_t pf__page_index_other(uintptr_t addr)
{
	struct pf_region *r = region_of_addr(addr);
	return r ? r->first_slot * PF_CHUNK_PAGES + (uint32_t)((addr - r->base) >> PF_PAGE_SHIFT) : PF_NIL;
}

uintptr_t pf__page_address_other(uint32_t number)
{
	struct pf_region *r = region_of_slot(number / PF_CHUNK_PAGES);
	if (!r)
		return 0;
	return r->base + ((uintptr_t)(number - r->first_slot * PF_CHUNK_PAGES) << PF_PAGE_SHIFT);
}

static uintptr_t slot_address(const struct pf_region *r, uint32_t i)
{
	return r->base + (uintptr_t)i * CHUNK;
}

static uintptr_t slot_address_of(uint32_t slot)
{
	struct pf_region *r = region_of_slot(slot);
	return slot_address(r, slot - r->first_slot);
}

/* Publish a reservation of size bytes at base as the next region. */
static struct pf_region *add_region(void *base, size_t size)
{
	struct pf_arena *a = &pf__arena;
	uint32_t n = atomic_load_explicit(&a->nregions, memory_order_relaxed);
	struct pf_region *r = &a->regions[n];
	uint32_t slots = (uint32_t)(size / CHUNK);
	r->base = (uintptr_t)base;
	r->first_slot = a->next_slot;
	r->index_slots = slots;
	atomic_store_explicit(&r->slots, slots, memory_order_relaxed);
	r->fresh = 0;
	r->released = 0;
	a->next_slot += slots;
	a->reserved += size;
	atomic_store_explicit(&a->nregions, n + 1, memory_order_release);
	return r;
}

/* Give back the never-used tail of every region; returns the bytes given back. */
static size_t trim_tails(void)
{
	struct pf_arena *a = &pf__arena;
	size_t freed = 0;
	uint32_t n = region_count();
	for (uint32_t i = 0; i < n; i++) {
		struct pf_region *r = &a->regions[i];
		uint32_t slots = region_slots(r);
		if (r->fresh >= slots)
			continue;
		atomic_store_explicit(&r->slots, r->fresh, memory_order_relaxed);
		if (i == 0)
			atomic_store_explicit(&a->size, (size_t)r->fresh * CHUNK, memory_order_relaxed);
		pf__os_unmap((void *)slot_address(r, r->fresh), (size_t)(slots - r->fresh) * CHUNK);
		freed += (size_t)(slots - r->fresh) * CHUNK;
	}
	a->reserved -= freed;
	if (freed)
		pf__arena_counts.trims++;
	return freed;
}

/*
 * Reserve up to want bytes (no more than half of what the limit leaves),
 * halving towards floor while the OS refuses; *got is what was reserved.
 * NULL if even floor cannot be had.
 */
static void *reserve_halving(size_t want, size_t floor, size_t align, size_t *got)
{
	size_t left = pf__os_space_left();
	if (left != SIZE_MAX && want > left / 2)
		want = left / 2;
	want = chunk_floor(want);
	if (want < floor)
		want = floor;
	for (;;) {
		void *base = pf__os.reserve(want, align);
		if (base) {
			*got = want;
			return base;
		}
		if (want == floor)
			return NULL;
		want = chunk_floor(want / 2) < floor ? floor : chunk_floor(want / 2);
	}
}

/*
 * A new region holding n slots aligned to align (see the top of the file
 * for its size), or NULL: the table is full, the cap or the slot space is
 * used up, or the OS refuses even the request after a trim.
 */
static struct pf_region *grow(uint32_t n, size_t align)
{
	struct pf_arena *a = &pf__arena;
	if (region_count() >= PF_REGIONS_MAX)
		return NULL;
	size_t need = (size_t)n * CHUNK;
	size_t numbers = (size_t)(a->chunk_slots - a->next_slot) * CHUNK;
	for (int attempt = 0; attempt < 2; attempt++) {
		size_t room = a->cap > a->reserved ? a->cap - a->reserved : 0;
		if (room > numbers)
			room = numbers;
		size_t want = a->reserved > need ? a->reserved : need;
		size_t got;
		void *base = need <= room ? reserve_halving(want < room ? want : room, need, align, &got)
					  : NULL;
		if (base) {
			pf__arena_counts.regions_added++;
			return add_region(base, got);
		}
		if (attempt == 0 && trim_tails() == 0)
			break;
	}
	return NULL;
}

/*
 * The cap (PYFRAG_ARENA, already clamped by options.c; under RLIMIT_AS no
 * more than the limit), the metadata for its slot space, then the first
 * region: the cap, or half of what the limit leaves, else halves of that
 * down to two chunks (valgrind, which caps mappings, says EINVAL). Retried
 * by the next init after a failure, never redoing the metadata.
 */
int pf__arena_init(size_t size)
{
	struct pf_arena *a = &pf__arena;
	size_t limit = pf__os_space_limit();
	size_t cap = chunk_floor(size);
	if (limit != SIZE_MAX && cap > chunk_floor(limit))
		cap = chunk_floor(limit);
	if (cap < PF_ARENA_MIN_BYTES)
		cap = PF_ARENA_MIN_BYTES;
	if (!a->pages) {
		uint64_t slots = cap / CHUNK * (limit != SIZE_MAX ? 2 : 1);
		if (slots > PF_ARENA_MAX_BYTES / CHUNK)
			slots = PF_ARENA_MAX_BYTES / CHUNK;
		size_t page_bytes = (size_t)slots * PF_CHUNK_PAGES * sizeof(struct pf_page);
		size_t map_bytes = (size_t)(slots + 63) / 64 * sizeof(uint64_t);
		char *meta = pf__os_map_meta(page_bytes + map_bytes + (size_t)slots);
		if (!meta)
			return -1;
		a->cap = cap;
		a->chunk_slots = (uint32_t)slots;
		a->pages = (struct pf_page *)meta;
		a->released = (uint64_t *)(meta + page_bytes);
		a->chunk_backing = (uint8_t *)(meta + page_bytes + map_bytes);
	}
	size_t want;
	void *base = reserve_halving(a->cap, PF_ARENA_MIN_BYTES, CHUNK, &want);
	if (!base)
		return -1;
	struct pf_region *r = add_region(base, want);
	r->fresh = 1; /* slot 0: the reserve's */
	a->base = (uintptr_t)base;
	a->first_pages = r->index_slots * PF_CHUNK_PAGES;
	atomic_store_explicit(&a->size, want, memory_order_relaxed);
	return 0;
}

/* ---- slots ------------------------------------------------------------------ */

static bool slot_released(uint32_t slot)
{
	return (pf__arena.released[slot / 64] >> (slot % 64)) & 1u;
}

static void set_released(uint32_t slot, bool released)
{
	if (released)
		pf__arena.released[slot / 64] |= 1ull << (slot % 64);
	else
		pf__arena.released[slot / 64] &= ~(1ull << (slot % 64));
}

/* Slot i of region r is free: never used, or released. */
static bool slot_free(const struct pf_region *r, uint32_t i)
{
	return i >= r->fresh || slot_released(r->first_slot + i);
}

/* Mark slots [i0, i0 + n) of r as taken. */
static void claim_slots(struct pf_region *r, uint32_t i0, uint32_t n)
{
	for (uint32_t i = i0; i < i0 + n; i++) {
		if (i >= r->fresh) {
			r->fresh = i0 + n;
			break;
		}
		set_released(r->first_slot + i, false);
		r->released--;
	}
}

/* Give a slot back; the fresh mark moves down over released slots at the top. */
static void unclaim_slot(struct pf_region *r, uint32_t i)
{
	set_released(r->first_slot + i, true);
	r->released++;
	while (r->fresh > 0 && slot_released(r->first_slot + r->fresh - 1)) {
		uint32_t top = --r->fresh;
		set_released(r->first_slot + top, false);
		r->released--;
	}
}

/* The first released slot number in [from, to), or PF_NIL. */
static uint32_t first_released(uint32_t from, uint32_t to)
{
	for (uint32_t w = from / 64; w * 64 < to; w++) {
		uint64_t bits = pf__arena.released[w];
		if (w == from / 64)
			bits &= ~0ull << (from % 64);
		if (bits) {
			uint32_t slot = w * 64 + (uint32_t)__builtin_ctzll(bits);
			return slot < to ? slot : PF_NIL;
		}
	}
	return PF_NIL;
}

/* Lowest n free contiguous slots of r whose address is aligned; PF_NIL if none. */
static uint32_t find_slots(const struct pf_region *r, uint32_t n, size_t align)
{
	uint32_t usable = region_slots(r);
	uint32_t step = (uint32_t)(align / CHUNK);
	uint32_t mis = (uint32_t)(((align - (r->base & (align - 1))) & (align - 1)) / CHUNK);
	if (n == 1 && step == 1 && r->released) {
		uint32_t slot = first_released(r->first_slot, r->first_slot + r->fresh);
		if (slot != PF_NIL)
			return slot - r->first_slot;
	}
	uint32_t start = mis;
	if (r->released < n) /* only the fresh part can hold it */
		while (start < r->fresh)
			start += step;
	while ((uint64_t)start + n <= usable) {
		uint32_t i = 0;
		while (i < n && slot_free(r, start + i))
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

static int commit_with(uintptr_t addr, uint32_t n, enum pf_backing backing)
{
	return pf__os.commit((void *)addr, (size_t)n * CHUNK, backing);
}

/*
 * A small process does not pay a hugepage before it needs one: in the auto
 * and thp modes, chunks committed while the committed bytes stay within
 * PYFRAG_HUGEPAGES_AFTER get 4 KiB pages (a fork-heavy pipeline of small
 * programs would otherwise commit 2 MiB each). The first commit past it
 * turns hugepages on for good: later chunks get the mode's hugepages, and
 * the early chunks are advised MADV_HUGEPAGE (counted as THP from then on),
 * for khugepaged to collapse as it goes (as mimalloc and jemalloc start
 * small). Caller holds pf__page_lock.
 */
static bool grown; /* past PYFRAG_HUGEPAGES_AFTER once: hugepages from now on */

static bool small_start(uint32_t n)
{
	enum pf_hugepages_mode mode = (enum pf_hugepages_mode)PF_OPT(hugepages);
	if (grown || (mode != PF_HP_AUTO && mode != PF_HP_THP))
		return false;
	long long after = PF_OPT(hugepages_after);
	if (pf__arena_counts.committed_bytes + (uint64_t)n * CHUNK <= (uint64_t)(after < 0 ? 0 : after))
		return true;
	grown = true;
	return false;
}

/* The early 4 KiB chunks of a process that has grown: advised for THP, counted so. */
static void promote_small_start(void)
{
	for (uint32_t slot = 1; slot < pf__arena.next_slot; slot++) {
		if (pf__arena.chunk_backing[slot] != PF_BACKING_4K)
			continue;
		if (pf__os.advise((void *)slot_address_of(slot), CHUNK, MADV_HUGEPAGE) != 0)
			continue; /* THP absent: it stays a 4 KiB chunk */
		pf__arena.chunk_backing[slot] = PF_BACKING_THP;
		pf__arena_counts.by_backing[PF_BACKING_4K]--;
		pf__arena_counts.by_backing[PF_BACKING_THP]++;
	}
}

/* Try the backings the mode allows, best first. */
static enum pf_backing commit_slots(uintptr_t addr, uint32_t n)
{
	bool was_grown = grown;
	if (small_start(n))
		return commit_with(addr, n, PF_BACKING_4K) == 0 ? PF_BACKING_4K : PF_BACKING_NONE;
	if (grown && !was_grown)
		promote_small_start();
	switch ((enum pf_hugepages_mode)PF_OPT(hugepages)) {
	case PF_HP_HUGETLB:
		return commit_with(addr, n, PF_BACKING_HUGETLB) == 0 ? PF_BACKING_HUGETLB : PF_BACKING_NONE;
	case PF_HP_THP:
		return commit_with(addr, n, PF_BACKING_THP) == 0 ? PF_BACKING_THP : PF_BACKING_NONE;
	case PF_HP_OFF:
		return commit_with(addr, n, PF_BACKING_4K) == 0 ? PF_BACKING_4K : PF_BACKING_NONE;
	case PF_HP_AUTO:
		break;
	}
	if (commit_with(addr, n, PF_BACKING_HUGETLB) == 0)
		return PF_BACKING_HUGETLB;
	if (commit_with(addr, n, PF_BACKING_THP) == 0)
		return PF_BACKING_THP;
	return commit_with(addr, n, PF_BACKING_4K) == 0 ? PF_BACKING_4K : PF_BACKING_NONE;
}

static bool over_limit(uint32_t n)
{
	long long limit = PF_OPT(limit);
	return limit > 0 &&
	       pf__arena_counts.committed_bytes + (uint64_t)n * CHUNK > (uint64_t)limit;
}

static uint32_t commit_failed(void)
{
	pf__count(PF_CTR_COMMIT_FAILURES, 1);
	errno = ENOMEM;
	return PF_NIL;
}

/* Commit slots [i, i + n) of r (already claimed); false and the slots unclaimed on failure. */
static bool commit_claimed(struct pf_region *r, uint32_t i, uint32_t n)
{
	enum pf_backing backing = commit_slots(slot_address(r, i), n);
	if (backing == PF_BACKING_NONE) {
		for (uint32_t k = n; k-- > 0;)
			unclaim_slot(r, i + k);
		return false;
	}
	for (uint32_t k = 0; k < n; k++)
		pf__arena.chunk_backing[r->first_slot + i + k] = (uint8_t)backing;
	pf__arena_counts.by_backing[backing] += n;
	pf__arena_counts.committed_bytes += (uint64_t)n * CHUNK;
	if (pf__arena_counts.committed_bytes > pf__arena_counts.peak_committed_bytes)
		pf__arena_counts.peak_committed_bytes = pf__arena_counts.committed_bytes;
	pf__count(PF_CTR_CHUNK_COMMITS, n);
	return true;
}

uint32_t pf__arena_commit_run(uint32_t n, size_t align)
{
	if (n == 0 || n > pf__arena.chunk_slots || align > pf__arena.cap || over_limit(n))
		return commit_failed();
	if (align < CHUNK)
		align = CHUNK;
	struct pf_region *r = NULL;
	uint32_t i = PF_NIL;
	uint32_t regions = region_count();
	for (uint32_t k = 0; k < regions && i == PF_NIL; k++) {
		r = &pf__arena.regions[k];
		i = find_slots(r, n, align);
	}
	if (i == PF_NIL) {
		r = grow(n, align);
		i = r ? find_slots(r, n, align) : PF_NIL;
		if (i == PF_NIL)
			return commit_failed();
	}
	claim_slots(r, i, n);
	if (!commit_claimed(r, i, n))
		return commit_failed();
	return (r->first_slot + i) * PF_CHUNK_PAGES;
}

int pf__arena_extend_run(uint32_t first_page, uint32_t n, uint32_t more)
{
	uint32_t slot = first_page / PF_CHUNK_PAGES;
	struct pf_region *r = region_of_slot(slot);
	if (more == 0)
		return 0;
	if (!r)
		return -1;
	uint32_t i = slot - r->first_slot + n;
	if ((uint64_t)i + more > region_slots(r) || over_limit(more))
		return -1;
	for (uint32_t k = 0; k < more; k++)
		if (!slot_free(r, i + k))
			return -1;
	claim_slots(r, i, more);
	if (!commit_claimed(r, i, more)) {
		pf__count(PF_CTR_COMMIT_FAILURES, 1);
		return -1;
	}
	return 0;
}

uint32_t pf__arena_commit_chunk(void)
{
	uint32_t first = pf__arena_commit_run(1, CHUNK);
	if (first == PF_NIL)
		return PF_NIL;
	struct pf_page *pages = pf__page_at(first);
	for (uint32_t i = 0; i < PF_CHUNK_PAGES; i++)
		pages[i] = (struct pf_page){ .next = PF_NIL, .prev = PF_NIL, .state = PF_PS_FREE_TAIL };
	return first;
}

static int release_slots(uint32_t slot, uint32_t n)
{
	struct pf_region *r = region_of_slot(slot);
	uint32_t i = slot - r->first_slot;
	if (pf__os.decommit((void *)slot_address(r, i), (size_t)n * CHUNK) != 0)
		return -1; /* keep it committed rather than lose track of it */
	for (uint32_t k = 0; k < n; k++) {
		enum pf_backing backing = (enum pf_backing)pf__arena.chunk_backing[slot + k];
		pf__arena.chunk_backing[slot + k] = PF_BACKING_NONE;
		pf__arena_counts.by_backing[backing]--;
		unclaim_slot(r, i + k);
	}
	pf__arena_counts.committed_bytes -= (uint64_t)n * CHUNK;
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
	if (pf__os.commit((void *)pf__arena.base, (size_t)pages << PF_PAGE_SHIFT, PF_BACKING_4K) != 0)
		return PF_NIL;
	pf__arena.chunk_backing[0] = PF_BACKING_4K;
	return 0;
}

bool pf__arena_has_hugetlb(void)
{
	return pf__arena_counts.by_backing[PF_BACKING_HUGETLB] > 0;
}

/*
 * fork and hugetlb chunks. A MAP_PRIVATE hugetlb page written after fork
 * needs a fresh hugepage for the copy; when the pool has none the kernel
 * keeps the page for the parent and unmaps it from the child, whose bytes
 * there are gone (it reads zeroes from the replacement, or gets SIGBUS).
 * Only the forking thread waits in the fork handlers: the parent's other
 * threads keep writing, so the child cannot safely copy the chunks itself
 * after fork. Instead the prepare handler (the forking thread, inside
 * fork(), after the program's own synchronisation) copies every touched
 * hugetlb chunk into anonymous memory and marks the chunk MADV_DONTFORK:
 * the child inherits the copy (ordinary copy-on-write) and never shares the
 * hugetlb page, so the parent's writes cost it nothing. The child moves the
 * copies into place; the parent drops its copies and the DONTFORK mark.
 * A chunk whose copy cannot be made (no memory) is inherited as before and
 * copied by the child (pf__os_unshare_hugetlb), with the old risk.
 */
struct fork_copy {
	uint32_t slot;
	bool detached; /* kept out of the child; copy holds its bytes (NULL: never touched) */
	void *copy;
};
static struct fork_copy *fork_copies;
static size_t fork_copies_count, fork_copies_bytes;

void pf__arena_fork_prepare(void)
{
	uint64_t n = pf__arena_counts.by_backing[PF_BACKING_HUGETLB];
	fork_copies_count = 0;
	if (n == 0)
		return;
	size_t bytes = (size_t)n * sizeof(struct fork_copy);
	fork_copies = pf__os_map_meta(bytes);
	if (!fork_copies)
		return; /* the child copies them itself (pf__arena_fork_child) */
	fork_copies_bytes = bytes;
	uint32_t regions = region_count();
	for (uint32_t k = 0; k < regions; k++) {
		struct pf_region *r = &pf__arena.regions[k];
		for (uint32_t i = 0; i < r->fresh && fork_copies_count < n; i++) {
			uint32_t slot = r->first_slot + i;
			if (pf__arena.chunk_backing[slot] != PF_BACKING_HUGETLB)
				continue;
			struct fork_copy *c = &fork_copies[fork_copies_count++];
			c->slot = slot;
			c->detached = pf__os_fork_detach((void *)slot_address(r, i), CHUNK, &c->copy) == 0;
		}
	}
}

static void forget_fork_copies(void)
{
	if (fork_copies)
		pf__os_unmap(fork_copies, fork_copies_bytes);
	fork_copies = NULL;
	fork_copies_count = fork_copies_bytes = 0;
}

void pf__arena_fork_parent(void)
{
	for (size_t k = 0; k < fork_copies_count; k++)
		if (fork_copies[k].detached)
			pf__os_fork_reattach((void *)slot_address_of(fork_copies[k].slot), CHUNK,
					     fork_copies[k].copy);
	forget_fork_copies();
}

static void now_thp(uint32_t slot)
{
	pf__arena.chunk_backing[slot] = PF_BACKING_THP;
	pf__arena_counts.by_backing[PF_BACKING_HUGETLB]--;
	pf__arena_counts.by_backing[PF_BACKING_THP]++;
}

void pf__arena_fork_child(void)
{
	/* first the chunks kept out of the child: nothing is mapped there until their copy is */
	for (size_t k = 0; k < fork_copies_count; k++) {
		struct fork_copy *c = &fork_copies[k];
		if (!c->detached)
			continue;
		if (pf__os_fork_place((void *)slot_address_of(c->slot), CHUNK, c->copy) != 0) {
			/* a hole where the program's memory was: say so rather than fault later */
			const char *pieces[] = { "pyfrag: fork child: no memory to put a hugetlb chunk's "
						 "copy in place (aborting)\n", NULL };
			pf__write_all(2, pieces);
			abort();
		}
		now_thp(c->slot);
	}
	forget_fork_copies();
	/* then any the parent could not copy: inherited, still hugetlb */
	uint32_t n = region_count();
	for (uint32_t k = 0; k < n; k++) {
		struct pf_region *r = &pf__arena.regions[k];
		for (uint32_t i = 0; i < r->fresh; i++) {
			uint32_t slot = r->first_slot + i;
			if (pf__arena.chunk_backing[slot] != PF_BACKING_HUGETLB)
				continue;
			if (pf__os_unshare_hugetlb((void *)slot_address(r, i), CHUNK) != 0)
				continue; /* out of memory: keep the hugetlb chunk, as without this step */
			now_thp(slot);
		}
	}
}
