/* SPDX-License-Identifier: GPL-2.0-only */
/*
 * Who uses a shared arena: its process table and its cache slots, both in
 * the mapping, and the reaping of processes that died attached.
 *
 * - A process takes a slot in the table at attach (pid and start time, so a
 *   reused pid is not mistaken for the dead one) and gives it back at its
 *   last detach. Each thread takes a cache slot on its first allocation and
 *   gives it back at thread exit, pf_shared_thread_flush or detach. Slots are
 *   claimed with a compare-and-swap (FREE -> CLAIMING -> LIVE), and released
 *   the same way (LIVE -> REAPING -> FREE), so exactly one releaser drains a
 *   cache, without a lock. A slot whose claimer died between CLAIMING and LIVE
 *   stays unusable (a window of a few stores).
 * - Reaping: a process slot whose process is gone (no such pid, a zombie, or
 *   another start time) is taken FREE -> REAPING by one reaper, which drains
 *   every cache that process left, as page_frag_cache_drain does: the bias
 *   the cache still owned goes back, so the frag page returns as soon as the
 *   fragments others hold are freed. A cache whose owner died inside
 *   page_frag's slow path (busy) is left alone, its page counted lost:
 *   draining it could give a reference back twice. Fragments the dead
 *   process held itself are lost with it.
 */
#include "shared_layout.h"

#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

/* ---- liveness ------------------------------------------------------------------ */

/*
 * Field 22 of /proc/<pid>/stat (start time, clock ticks after boot), and its
 * state letter; 0 if there is no such process. The name in field 2 may hold
 * spaces and parentheses, so parsing starts after its last ')'.
 */
static uint64_t start_time(int32_t pid, char *state)
{
	char path[40], text[1024];
	snprintf(path, sizeof(path), "/proc/%d/stat", (int)pid);
	int fd = open(path, O_RDONLY | O_CLOEXEC);
	if (fd < 0)
		return 0;
	ssize_t n = read(fd, text, sizeof(text) - 1);
	close(fd);
	if (n <= 0)
		return 0;
	text[n] = '\0';
	char *p = strrchr(text, ')');
	if (!p || p[1] != ' ')
		return 0;
	p += 2;
	*state = *p;
	for (int field = 3; field < 22 && p; field++) {
		p = strchr(p, ' ');
		if (p)
			p++;
	}
	return p ? strtoull(p, NULL, 10) : 0;
}

static bool process_alive(int32_t pid, uint64_t started)
{
	char state = '?';
	uint64_t now = start_time(pid, &state);
	return now != 0 && now == started && state != 'Z' && state != 'X';
}

/* ---- process table ------------------------------------------------------------- */

int pf__shared_proc_enter(struct pf_shared *local)
{
	struct pf_shared_header *h = local->header;
	char state;
	int32_t pid = (int32_t)getpid();
	uint64_t started = start_time(pid, &state);
	for (int round = 0; round < 2; round++) {
		for (uint32_t i = 0; i < PF_SHARED_MAX_PROCS; i++) {
			struct pf_shared_proc *proc = &h->procs[i];
			uint32_t expect = PF_SLOT_FREE;
			if (!atomic_compare_exchange_strong(&proc->state, &expect, PF_SLOT_CLAIMING))
				continue;
			proc->pid = pid;
			proc->start_time = started;
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
			pf__frag_cache_init(&slot->cache);
			atomic_store_explicit(&slot->cache.allocs, 0, memory_order_relaxed);
			atomic_store_explicit(&slot->cache.bias_frees, 0, memory_order_relaxed);
			slot->cache.shared = h;
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

void pf__shared_busy(struct pf_cache *cache, bool busy)
{
	struct pf_shared_slot *slot = (struct pf_shared_slot *)cache; /* the cache is its first member */
	atomic_store_explicit(&slot->busy, busy, memory_order_release);
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
		    process_alive(proc->pid, proc->start_time))
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
