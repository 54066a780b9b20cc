/* SPDX-License-Identifier: GPL-2.0-only */
/*
 * The shared-arena API (pyfrag_shared.h): the table of arenas this process
 * has attached, each thread's cache per arena, freeing, offsets, stats.
 *
 * A pf_shared_t is an entry of a fixed local table (no malloc: this library
 * may be the process's malloc), so a handle can be checked before use and
 * never dangles into freed memory. An entry's generation changes when it is
 * reused and in a fork child, which is how a thread notices that the cache
 * pointer it keeps for the entry (pf_thread.shared_cache) is stale.
 */
#include "shared/shared.h"

#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <string.h>
#include <unistd.h>

struct pf_shared pf__shared_table[PF_SHARED_LOCAL_MAX];
pthread_mutex_t pf__shared_lock = PTHREAD_MUTEX_INITIALIZER;
_Atomic uint32_t pf__shared_attached;

/* ---- handles ------------------------------------------------------------------- */

static struct pf_shared *checked(const pf_shared_t *arena)
{
	uintptr_t off = (uintptr_t)arena - (uintptr_t)pf__shared_table;
	uintptr_t i = off / sizeof(struct pf_shared);
	if (off % sizeof(struct pf_shared) != 0 || i >= PF_SHARED_LOCAL_MAX ||
	    !pf__shared_table[i].header) {
		pf__fail(EINVAL, "not an attached shared arena (NULL, detached, or not a handle)");
		return NULL;
	}
	return &pf__shared_table[i];
}

struct pf_shared *pf__shared_checked(const pf_shared_t *arena)
{
	return checked(arena);
}

static struct pf_shared *free_entry(void)
{
	for (unsigned i = 0; i < PF_SHARED_LOCAL_MAX; i++)
		if (!pf__shared_table[i].header)
			return &pf__shared_table[i];
	pf__fail(EMFILE, "this process has 16 shared arenas attached already");
	return NULL;
}

/* A mapped entry joins the table: a new generation, a process slot, reaping. 0 or -1. */
static int enter(struct pf_shared *local)
{
	local->index = (uint32_t)(local - pf__shared_table);
	local->gen++;
	local->refs = 1;
	local->proc = PF_NIL;
	if (pf__shared_proc_enter(local) != 0) {
		pf__shared_unmap(local);
		return -1;
	}
	pf__shared_count(local->header, PF_SCTR_ATTACHES, 1);
	(void)pf__shared_reap(local);
	atomic_fetch_add_explicit(&pf__shared_attached, 1, memory_order_relaxed);
	return 0;
}

/* Before the first arena: page_frag learns the shared source, the threads the give-back hook. */
static int register_with_layers_below(void)
{
	pf__frag_set_source(PF_SOURCE_SHARED, &pf__shared_source);
	return pf__thread_on_give_back(pf__shared_thread_release);
}

pf_shared_t *pf__shared_create(const char *name, size_t size, unsigned mode, int backing,
			       const char *directory)
{
	if (register_with_layers_below() != 0)
		return NULL;
	pthread_mutex_lock(&pf__shared_lock);
	struct pf_shared *local = free_entry();
	if (local && (pf__shared_map_create(local, name, size, mode, backing, directory) != 0 ||
		      enter(local) != 0))
		local = NULL;
	pthread_mutex_unlock(&pf__shared_lock);
	return local;
}

pf_shared_t *pf__shared_attach(const char *name, const char *directory)
{
	if (register_with_layers_below() != 0)
		return NULL;
	pthread_mutex_lock(&pf__shared_lock);
	struct pf_shared *local = pf__shared_find_attached(name, directory);
	if (local) {
		local->refs++;
	} else {
		local = free_entry();
		if (local && (pf__shared_map_attach(local, name, directory) != 0 || enter(local) != 0))
			local = NULL;
	}
	pthread_mutex_unlock(&pf__shared_lock);
	return local;
}

int pf_shared_detach(pf_shared_t *arena)
{
	pthread_mutex_lock(&pf__shared_lock);
	struct pf_shared *local = checked(arena);
	if (local && --local->refs == 0) {
		pf__shared_proc_leave(local);
		pf__shared_count(local->header, PF_SCTR_DETACHES, 1);
		pf__shared_unmap(local);
		local->gen++;
		atomic_fetch_sub_explicit(&pf__shared_attached, 1, memory_order_relaxed);
	}
	pthread_mutex_unlock(&pf__shared_lock);
	return local ? 0 : -1;
}

int pf_shared_unlink(const char *name, const char *directory)
{
	return pf__shared_remove(name, directory);
}

const char *pf_shared_path(const pf_shared_t *arena)
{
	struct pf_shared *local = checked(arena);
	return local ? local->path : NULL;
}

/* ---- allocation ------------------------------------------------------------------ */

/* The calling thread's cache for this arena, made on first use. NULL with errno. */
static struct pf_cache *thread_cache(struct pf_shared *local)
{
	struct pf_thread *t = pf__thread();
	if (!t)
		return NULL;
	struct pf_cache *cache = t->shared_cache[local->index];
	if (PF_LIKELY(cache != NULL && t->shared_gen[local->index] == local->gen))
		return cache;
	return pf__shared_cache_claim(local, t);
}

void *pf_shared_alloc_align(pf_shared_t *arena, size_t fragsz, size_t align)
{
	struct pf_shared *local = checked(arena);
	struct pf_cache *cache = local ? thread_cache(local) : NULL;
	if (!cache)
		return NULL;
	void *frag = pf__frag_alloc(cache, fragsz, align);
	if (PF_UNLIKELY(!frag) && errno == ENOMEM && pf__shared_reap(local) > 0)
		frag = pf__frag_alloc(cache, fragsz, align); /* a dead process's pages may be back */
	return frag;
}

void *pf_shared_alloc(pf_shared_t *arena, size_t fragsz)
{
	return pf_shared_alloc_align(arena, fragsz, 1);
}

/* ---- freeing ------------------------------------------------------------------------ */

static int refuse(struct pf_shared_header *h, const char *why)
{
	pf__shared_frag_count(h, PF_CTR_INVALID_FREES);
	pf__fail(EINVAL, why);
	return -1;
}

static int free_in(struct pf_shared *local, void *addr)
{
	struct pf_shared_header *h = local->header;
	struct pf_page *head = pf__shared_head_page(h, addr);
	if (!head)
		return refuse(h, "address is not inside a fragment of this shared arena");
	struct pf_thread *t = pf__self;
	struct pf_cache *mine = t && t->shared_gen[local->index] == local->gen
					? t->shared_cache[local->index]
					: NULL;
	if (mine && mine->page == head) {
		/* as pf_free on a private cache: past the bytes handed out, or every reference back */
		if ((uintptr_t)addr >= mine->va + mine->offset || pf__bias_full(mine))
			return refuse(h, "fragment already freed, or never handed out (its cache's page "
					 "says so)");
		pf__frag_free_local(mine, head, addr, 0);
	} else if (pf__frag_put(head) != 0) {
		return -1;
	}
	pf__shared_count_free(local, t);
	return 0;
}

int pf_shared_free(pf_shared_t *arena, void *addr)
{
	struct pf_shared *local = checked(arena);
	if (!local)
		return -1;
	if (!addr)
		return 0;
	if (pf__shared_of_address(addr) != local)
		return refuse(local->header, "address is not inside this shared arena's frag pages");
	return free_in(local, addr);
}

int pf__shared_free_address(void *addr)
{
	struct pf_shared *local = pf__shared_of_address(addr);
	if (!local) {
		pf__fail(EINVAL, "address is not inside a fragment pyfrag handed out");
		return -1;
	}
	return free_in(local, addr);
}

/* ---- offsets ------------------------------------------------------------------------ */

uint64_t pf_shared_offset(const pf_shared_t *arena, const void *addr)
{
	struct pf_shared *local = checked(arena);
	if (!local)
		return UINT64_MAX;
	struct pf_shared_header *h = local->header;
	uintptr_t data = pf__shared_data(h);
	if ((uintptr_t)addr - data >= (uintptr_t)h->data_pages << PF_PAGE_SHIFT) {
		pf__fail(EINVAL, "address is outside this shared arena's frag pages");
		return UINT64_MAX;
	}
	return (uint64_t)((uintptr_t)addr - (uintptr_t)h);
}

void *pf_shared_address(const pf_shared_t *arena, uint64_t offset)
{
	struct pf_shared *local = checked(arena);
	if (!local)
		return NULL;
	struct pf_shared_header *h = local->header;
	if (offset < h->data_offset || offset >= h->map_bytes)
		return pf__fail(EINVAL, "offset is outside this shared arena's frag pages");
	return (void *)((uintptr_t)h + offset);
}

/* ---- threads, fork, reaping ------------------------------------------------------------ */

size_t pf_shared_reap(pf_shared_t *arena)
{
	struct pf_shared *local = checked(arena);
	return local ? pf__shared_reap(local) : 0;
}

static void release_thread_cache(struct pf_thread *t, unsigned i)
{
	struct pf_shared *local = &pf__shared_table[i];
	struct pf_cache *cache = t->shared_cache[i];
	t->shared_cache[i] = NULL;
	if (cache && local->header && t->shared_gen[i] == local->gen)
		pf__shared_slot_release(local->header, (struct pf_shared_slot *)cache);
}

void pf_shared_thread_flush(pf_shared_t *arena)
{
	struct pf_shared *local = checked(arena);
	struct pf_thread *t = pf__self;
	if (local && t)
		release_thread_cache(t, local->index);
}

void pf__shared_thread_release(void *thread)
{
	struct pf_thread *t = thread;
	if (atomic_load_explicit(&pf__shared_attached, memory_order_relaxed) == 0)
		return;
	pthread_mutex_lock(&pf__shared_lock); /* against a detach unmapping it meanwhile */
	for (unsigned i = 0; i < PF_SHARED_LOCAL_MAX; i++)
		release_thread_cache(t, i);
	pthread_mutex_unlock(&pf__shared_lock);
}

/*
 * The child of a fork is a new process: the parent's process slot and its
 * threads' caches are not its own. It keeps the mappings (MAP_SHARED), takes
 * a process slot of its own on first use, and its threads new caches. Its
 * copy of the file descriptor shares the parent's open file description,
 * and with it the parent's liveness lock, which would keep the parent
 * "alive" after its death for as long as the child lives: the child trades
 * it for a description of its own (through /proc/self/fd, which works for an
 * unlinked file too).
 */
void pf__shared_after_fork(void)
{
	pthread_mutex_init(&pf__shared_lock, NULL);
	for (unsigned i = 0; i < PF_SHARED_LOCAL_MAX; i++) {
		struct pf_shared *local = &pf__shared_table[i];
		if (!local->header)
			continue;
		local->gen++;
		local->proc = PF_NIL;
		char path[40];
		snprintf(path, sizeof(path), "/proc/self/fd/%d", local->fd);
		int own = open(path, O_RDWR | O_CLOEXEC);
		if (own >= 0 && dup3(own, local->fd, O_CLOEXEC) >= 0) {
			close(own);
			continue;
		}
		if (own >= 0)
			close(own);
		close(local->fd); /* no way to take part: attaching in this child fails cleanly */
		local->fd = -1;
	}
}

/* ---- stats ------------------------------------------------------------------------ */

static const char *const field_names[] = {
#define PF_SHARED_NAME_(name, doc) #name,
	PF_SHARED_STATS_FIELDS(PF_SHARED_NAME_)
#undef PF_SHARED_NAME_
};
static const char *const field_docs[] = {
#define PF_SHARED_DOC_(name, doc) doc,
	PF_SHARED_STATS_FIELDS(PF_SHARED_DOC_)
#undef PF_SHARED_DOC_
};
#define FIELD_COUNT (sizeof(field_names) / sizeof(field_names[0]))

size_t pf_shared_stats_field_count(void)
{
	return FIELD_COUNT;
}

const char *pf_shared_stats_field_name(size_t index)
{
	return index < FIELD_COUNT ? field_names[index] : NULL;
}

const char *pf_shared_stats_field_doc(size_t index)
{
	return index < FIELD_COUNT ? field_docs[index] : NULL;
}

static void snapshot(struct pf_shared_header *h, pf_shared_stats_t *s)
{
	uint64_t ctr[PF_SCTR_COUNT];
	for (unsigned c = 0; c < PF_SCTR_COUNT; c++)
		ctr[c] = atomic_load_explicit(&h->counters[c], memory_order_relaxed);
	s->layout_version = h->version;
	s->backing = h->backing;
	s->base = h->base;
	s->map_bytes = h->map_bytes;
	s->data_bytes = (uint64_t)h->data_pages << PF_PAGE_SHIFT;
	s->pages_total = h->data_pages;
	pf__shared_lock_header(h);
	uint64_t free_pages = 0;
	for (unsigned order = 0; order <= h->zone.max_order; order++)
		free_pages += h->zone.free_count[order] << order;
	s->pages_free = free_pages;
	s->pages_in_use = h->zone.pages_out;
	s->reserve_free_pages = h->zone.reserve_free;
	pf__shared_unlock_header(h);
	s->allocs = ctr[PF_SCTR_RETIRED_ALLOCS];
	s->frees = ctr[PF_SCTR_RETIRED_FREES];
	for (uint32_t i = 0; i < PF_SHARED_MAX_PROCS; i++) {
		if (atomic_load_explicit(&h->procs[i].state, memory_order_acquire) == PF_SLOT_LIVE) {
			s->processes++;
			s->frees += atomic_load_explicit(&h->procs[i].frees, memory_order_relaxed);
		}
	}
	struct pf_shared_slot *slots = pf__shared_slots(h);
	for (uint32_t i = 0; i < PF_SHARED_MAX_CACHES; i++) {
		if (atomic_load_explicit(&slots[i].state, memory_order_acquire) != PF_SLOT_LIVE)
			continue;
		s->caches++;
		s->allocs += atomic_load_explicit(&slots[i].cache.allocs, memory_order_relaxed);
		s->frees += atomic_load_explicit(&slots[i].frees, memory_order_relaxed);
	}
	s->refills = ctr[PF_CTR_REFILLS];
	s->recycles = ctr[PF_CTR_RECYCLES];
	s->abandons = ctr[PF_CTR_ABANDONS];
	s->order0_fallbacks = ctr[PF_CTR_ORDER0_FALLBACKS];
	s->reserve_pages = ctr[PF_CTR_RESERVE_PAGES];
	s->reserve_returns = ctr[PF_CTR_RESERVE_RETURNS];
	s->drains = ctr[PF_CTR_DRAINS];
	s->invalid_frees = ctr[PF_CTR_INVALID_FREES];
	s->alloc_failures = ctr[PF_CTR_ALLOC_FAILURES];
	s->attaches = ctr[PF_SCTR_ATTACHES];
	s->detaches = ctr[PF_SCTR_DETACHES];
	s->reaped_processes = ctr[PF_SCTR_REAPED_PROCESSES];
	s->reaped_caches = ctr[PF_SCTR_REAPED_CACHES];
	s->lost_pages = ctr[PF_SCTR_LOST_PAGES];
	s->lock_recoveries = ctr[PF_SCTR_LOCK_RECOVERIES];
}

int pf_shared_stats(const pf_shared_t *arena, pf_shared_stats_t *out, size_t out_size)
{
	struct pf_shared *local = checked(arena);
	if (!local)
		return -1;
	if (!out || out_size < 2 * sizeof(uint32_t)) {
		pf__fail(EINVAL, "stats buffer is NULL or too small for its size and version");
		return -1;
	}
	pf_shared_stats_t s;
	memset(&s, 0, sizeof(s));
	s.size = sizeof(s);
	s.version = PF_SHARED_STATS_VERSION;
	snapshot(local->header, &s);
	memcpy(out, &s, out_size < sizeof(s) ? out_size : sizeof(s));
	return 0;
}
