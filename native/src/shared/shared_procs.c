/* SPDX-License-Identifier: GPL-2.0-only */
/*
 * Who uses a shared arena: its process table and its cache slots, both in
 * the mapping, and the reaping of processes that died attached.
 *
 * - A process takes a slot in the table at attach and holds the slot's
 *   liveness lock (an open-file-description lock on the arena's file, see
 *   shared.h) until its last detach; the kernel releases it when the
 *   process dies, so death is seen the same from any pid namespace and a
 *   reused pid cannot pass for the dead process. Each thread takes a cache slot on its first allocation and
 *   gives it back at thread exit, pf_shared_thread_flush or detach. Slots are
 *   claimed with a compare-and-swap (FREE -> CLAIMING -> LIVE), and released
 *   the same way (LIVE -> REAPING -> FREE), so exactly one releaser drains a
 *   cache, without a lock. A slot whose claimer died between CLAIMING and LIVE
 *   stays unusable (a window of a few stores).
 * - Reaping: a live slot whose liveness lock nobody holds is taken
 *   LIVE -> REAPING by one reaper, which drains
 *   every cache that process left, as page_frag_cache_drain does: the bias
 *   the cache still owned goes back, so the frag page returns as soon as the
 *   fragments others hold are freed. A cache whose owner died inside
 *   page_frag's slow path (busy) is left alone, its page counted lost:
 *   draining it could give a reference back twice. Fragments the dead
 *   process held itself are lost with it.
 */
#include "shared/shared.h"

#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

/* ---- liveness ------------------------------------------------------------------ */

static int liveness_lock(int fd, uint32_t slot, short type, int cmd, struct flock *out)
{
	struct flock lock = { .l_type = type, .l_whence = SEEK_SET,
			      .l_start = (off_t)(PF_SHARED_LIVENESS_LOCK + slot), .l_len = 1 };
	int ret = fcntl(fd, cmd, &lock);
	if (out)
		*out = lock;
	return ret;
}

/* Does some process hold slot's liveness lock? (Not this file description: ours never asks.) */
static bool process_alive(int fd, uint32_t slot)
{
	struct flock lock;
	if (liveness_lock(fd, slot, F_WRLCK, F_OFD_GETLK, &lock) != 0)
		return true; /* cannot tell: never reap on a guess */
	return lock.l_type != F_UNLCK;
}

bool pf__shared_proc_alive(const struct pf_shared *local, uint32_t proc)
{
	return proc == local->proc || process_alive(local->fd, proc);
}

/* ---- process table ------------------------------------------------------------- */

int pf__shared_proc_enter(struct pf_shared *local)
{
	struct pf_shared_header *h = local->header;
	if (local->fd < 0) {
		pf__fail(EBADF, "this process lost the shared arena's file (fork without /proc?)");
		return -1;
	}
	for (int round = 0; round < 2; round++) {
		for (uint32_t i = 0; i < PF_SHARED_MAX_PROCS; i++) {
			struct pf_shared_proc *proc = &h->procs[i];
			uint32_t expect = PF_SLOT_FREE;
			if (!atomic_compare_exchange_strong(&proc->state, &expect, PF_SLOT_CLAIMING))
				continue;
			if (liveness_lock(local->fd, i, F_WRLCK, F_OFD_SETLK, NULL) != 0) {
				/* held: a process the slot was taken from while alive; leave it be */
				atomic_store_explicit(&proc->state, PF_SLOT_FREE, memory_order_release);
				continue;
			}
			proc->pid = (int32_t)getpid();
			atomic_store_explicit(&proc->frees, 0, memory_order_relaxed);
			atomic_store_explicit(&proc->state, PF_SLOT_LIVE, memory_order_release);
			local->proc = i;
			return 0;
		}
		if (pf__shared_reap(local) == 0)
			break;
	}
	pf__fail(ENOSPC, "the shared arena's process table is full (64 processes attached)");
	return -1;
}

/* Drain and free every cache slot of process proc (it is us, leaving, or dead). */
static uint64_t release_caches_of(struct pf_shared_header *h, uint32_t proc)
{
	uint64_t released = 0;
	struct pf_shared_slot *slots = pf__shared_slots(h);
	for (uint32_t i = 0; i < PF_SHARED_MAX_CACHES; i++) {
		struct pf_shared_slot *slot = &slots[i];
		if (atomic_load_explicit(&slot->state, memory_order_acquire) != PF_SLOT_LIVE ||
		    slot->proc != proc)
			continue;
		released += pf__shared_slot_release(h, slot);
	}
	return released;
}

void pf__shared_proc_leave(struct pf_shared *local)
{
	struct pf_shared_header *h = local->header;
	if (local->proc == PF_NIL)
		return;
	struct pf_shared_proc *proc = &h->procs[local->proc];
	release_caches_of(h, local->proc);
	pf__shared_count(h, PF_SCTR_RETIRED_FREES,
			 atomic_load_explicit(&proc->frees, memory_order_relaxed));
	atomic_store_explicit(&proc->state, PF_SLOT_FREE, memory_order_release);
	(void)liveness_lock(local->fd, local->proc, F_UNLCK, F_OFD_SETLK, NULL);
	local->proc = PF_NIL;
}

/* ---- cache slots --------------------------------------------------------------- */

struct pf_cache *pf__shared_cache_claim(struct pf_shared *local, struct pf_thread *t)
{
	struct pf_shared_header *h = local->header;
	if (local->proc == PF_NIL && pf__shared_proc_enter(local) != 0)
		return NULL;
	struct pf_shared_slot *slots = pf__shared_slots(h);
	for (int round = 0; round < 2; round++) {
		for (uint32_t i = 0; i < PF_SHARED_MAX_CACHES; i++) {
			struct pf_shared_slot *slot = &slots[i];
			uint32_t expect = PF_SLOT_FREE;
			if (!atomic_compare_exchange_strong(&slot->state, &expect, PF_SLOT_CLAIMING))
				continue;
			slot->proc = local->proc;
			atomic_store_explicit(&slot->busy, 0, memory_order_relaxed);
			atomic_store_explicit(&slot->frees, 0, memory_order_relaxed);
			pf__frag_cache_init(&slot->cache, PF_SOURCE_SHARED, h);
			atomic_store_explicit(&slot->cache.allocs, 0, memory_order_relaxed);
			atomic_store_explicit(&slot->cache.bias_frees, 0, memory_order_relaxed);
			atomic_store_explicit(&slot->state, PF_SLOT_LIVE, memory_order_release);
			t->shared_cache[local->index] = &slot->cache;
			t->shared_gen[local->index] = local->gen;
			return &slot->cache;
		}
		if (pf__shared_reap(local) == 0)
			break;
	}
	return pf__fail(ENOSPC, "the shared arena's cache table is full (256 threads have a cache)");
}

bool pf__shared_slot_release(struct pf_shared_header *h, struct pf_shared_slot *slot)
{
	uint32_t expect = PF_SLOT_LIVE;
	if (!atomic_compare_exchange_strong(&slot->state, &expect, PF_SLOT_REAPING))
		return false; /* released already, by its owner or a reaper */
	if (atomic_load_explicit(&slot->busy, memory_order_acquire)) {
		/* died inside the slow path: the page's references are in an unknown state */
		if (slot->cache.page)
			pf__shared_count(h, PF_SCTR_LOST_PAGES, 1u << slot->cache.page->order);
	} else {
		pf__frag_drain(&slot->cache);
	}
	pf__shared_count(h, PF_SCTR_RETIRED_ALLOCS,
			 atomic_load_explicit(&slot->cache.allocs, memory_order_relaxed));
	pf__shared_count(h, PF_SCTR_RETIRED_FREES,
			 atomic_load_explicit(&slot->frees, memory_order_relaxed));
	pf__frag_forget_page(&slot->cache);
	atomic_store_explicit(&slot->state, PF_SLOT_FREE, memory_order_release);
	return true;
}

void pf__shared_count_free(struct pf_shared *local, struct pf_thread *t)
{
	struct pf_cache *cache = t ? t->shared_cache[local->index] : NULL;
	if (cache && t->shared_gen[local->index] == local->gen) {
		pf__local_inc(&((struct pf_shared_slot *)cache)->frees);
		return;
	}
	if (local->proc != PF_NIL)
		atomic_fetch_add_explicit(&local->header->procs[local->proc].frees, 1,
					  memory_order_relaxed);
	else
		pf__shared_count(local->header, PF_SCTR_RETIRED_FREES, 1);
}

/* ---- reaping ------------------------------------------------------------------- */

size_t pf__shared_reap(struct pf_shared *local)
{
	struct pf_shared_header *h = local->header;
	size_t reaped = 0;
	for (uint32_t i = 0; i < PF_SHARED_MAX_PROCS; i++) {
		struct pf_shared_proc *proc = &h->procs[i];
		if (i == local->proc ||
		    atomic_load_explicit(&proc->state, memory_order_acquire) != PF_SLOT_LIVE ||
		    process_alive(local->fd, i))
			continue;
		uint32_t expect = PF_SLOT_LIVE;
		if (!atomic_compare_exchange_strong(&proc->state, &expect, PF_SLOT_REAPING))
			continue; /* another reaper has it */
		pf__shared_count(h, PF_SCTR_REAPED_CACHES, release_caches_of(h, i));
		pf__shared_count(h, PF_SCTR_RETIRED_FREES,
				 atomic_load_explicit(&proc->frees, memory_order_relaxed));
		atomic_store_explicit(&proc->state, PF_SLOT_FREE, memory_order_release);
		reaped++;
	}
	if (reaped)
		pf__shared_count(h, PF_SCTR_REAPED_PROCESSES, reaped);
	return reaped;
}
