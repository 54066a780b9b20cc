/* SPDX-License-Identifier: GPL-2.0-only */
/*
 * Layer 6, shared arenas (pyfrag_shared.h): one named file mapped at the same
 * address in every process, with its own buddy zone, process table and
 * cache slots; page_frag runs over it as the shared page source. Includes
 * only thread/thread.h (and the public pyfrag_shared.h).
 *
 * What a shared arena's mapping holds, byte for byte, is the contract
 * between every process attached to it, checked field by field at attach
 * (PF_SHARED_LAYOUT_VERSION, the sizes below).
 *
 *   base + 0             struct pf_shared_header (identity, lock, buddy zone,
 *                        counters, process table, ring names)
 *   base + slots_offset  struct pf_shared_slot[max_caches]: the caches
 *   base + meta_offset   struct pf_page[data_pages]: page metadata
 *   base + data_offset   data_pages 4 KiB pages (2 MiB aligned); the last
 *                        reserve_pages of them are the emergency reserve
 *
 * Pointers stored in the mapping (the zone's page array, a cache's page and
 * frag address) point into the mapping, valid in every process because
 * every process maps it at base.
 */
#ifndef PF_SHARED_H
#define PF_SHARED_H

#include "thread/thread.h"
#include "pyfrag_shared.h"

#define PF_SHARED_MAGIC 0x4853474152465950ull /* "PYFRAGSH" in memory */
#define PF_SHARED_MAX_PROCS 64
#define PF_SHARED_MAX_CACHES 256
#define PF_SHARED_RESERVE_PAGES 16
#define PF_SHARED_MAX_SIZE (256ull << 30)

enum pf_slot_state {
	PF_SLOT_FREE = 0,
	PF_SLOT_CLAIMING, /* being filled in by its new owner */
	PF_SLOT_LIVE,
	PF_SLOT_REAPING, /* a reaper is draining what a dead process left */
};

/*
 * Counters in the header: page_frag's own (enum pf_counter values up to
 * PF_CTR_ALLOC_FAILURES, counted by page_frag.c for shared caches) first,
 * then the shared arena's.
 */
enum pf_shared_counter {
	PF_SCTR_ATTACHES = PF_CTR_ALLOC_FAILURES + 1,
	PF_SCTR_DETACHES,
	PF_SCTR_REAPED_PROCESSES,
	PF_SCTR_REAPED_CACHES,
	PF_SCTR_LOST_PAGES,
	PF_SCTR_LOCK_RECOVERIES,
	PF_SCTR_RETIRED_ALLOCS, /* allocs of caches given back */
	PF_SCTR_RETIRED_FREES,  /* frees counted by slots and processes gone */
	PF_SCTR_COUNT
};

/*
 * A live process holds an open-file-description lock on byte
 * PF_SHARED_LIVENESS_LOCK + its slot index of the arena's file (beyond its
 * end: no data is locked). The kernel drops it when the process dies, in
 * whatever pid namespace either process lives, and a reused pid cannot
 * inherit it: the lock, not the pid, says who is alive.
 */
#define PF_SHARED_LIVENESS_LOCK (1ull << 46)

struct pf_shared_proc {
	_Atomic uint32_t state; /* enum pf_slot_state */
	int32_t pid;            /* in the attacher's pid namespace; for people, not for liveness */
	_Atomic uint64_t frees; /* frees by this process's threads that have no cache here */
};

struct pf_shared_slot {
	struct pf_cache cache;  /* the page_frag cache itself, so a reaper can drain it */
	_Atomic uint32_t state; /* enum pf_slot_state */
	uint32_t proc;          /* owner's index in the process table */
	_Atomic uint32_t busy;  /* the owner is moving the cache's page: a reaper leaves it */
	uint32_t unused;
	pf_local_counter frees; /* frees made by this cache's thread */
} __attribute__((aligned(64)));

/* A named ring (shared_ring.c): where its control block is, from the arena's base. */
struct pf_shared_ring_name {
	uint64_t offset; /* 0: entry unused; written under the header lock */
	char name[PF_SHARED_NAME_MAX + 1];
};

struct pf_shared_header {
	/* identity, checked at attach */
	_Atomic uint64_t magic; /* PF_SHARED_MAGIC once ready */
	uint32_t version;       /* PF_SHARED_LAYOUT_VERSION: keep it at offset 8 */
	uint32_t header_size;
	uint32_t page_meta_size;
	uint32_t slot_size;
	uint32_t mutex_size;
	uint32_t max_procs;
	uint32_t max_caches;
	uint32_t data_pages;
	uint32_t reserve_pages;
	uint32_t backing; /* PF_SHARED_BACKING_* */
	uint64_t base;
	uint64_t map_bytes;
	uint64_t slots_offset;
	uint64_t meta_offset;
	uint64_t data_offset;
	char name[PF_SHARED_NAME_MAX + 1];
	/* the page allocator, under lock (robust and process-shared) */
	pthread_mutex_t lock;
	struct pf_zone zone;
	_Atomic uint64_t counters[PF_SCTR_COUNT];
	struct pf_shared_proc procs[PF_SHARED_MAX_PROCS];
	struct pf_shared_ring_name rings[PF_SHARED_RINGS_MAX]; /* under lock */
};

_Static_assert(offsetof(struct pf_shared_header, version) == 8, "tools find the version at offset 8");
_Static_assert(sizeof(struct pf_shared_header) <= PF_PAGE_SIZE, "the header fits its page");

static inline struct pf_shared_slot *pf__shared_slots(const struct pf_shared_header *h)
{
	return (struct pf_shared_slot *)((uintptr_t)h + h->slots_offset);
}
static inline struct pf_page *pf__shared_meta(const struct pf_shared_header *h)
{
	return (struct pf_page *)((uintptr_t)h + h->meta_offset);
}
static inline uintptr_t pf__shared_data(const struct pf_shared_header *h)
{
	return (uintptr_t)h + h->data_offset;
}
static inline void pf__shared_count(struct pf_shared_header *h, unsigned counter, uint64_t n)
{
	atomic_fetch_add_explicit(&h->counters[counter], n, memory_order_relaxed);
}

/* ---- the process-local side: one entry per attached arena (shared.c) -------- */

struct pf_shared {
	struct pf_shared_header *header; /* NULL: entry unused */
	uint32_t refs;   /* attaches in this process */
	uint32_t index;  /* in the local table, and in pf_thread.shared_cache */
	uint32_t gen;    /* changes when the entry is reused or after fork */
	uint32_t proc;   /* our process slot, PF_NIL until taken */
	int fd;          /* the arena's file, open while attached (the liveness lock) */
	uint64_t map_bytes; /* what this process mapped: the header is writable by every process */
	uint64_t dev, ino;
	char path[256];
};

PF_INTERNAL extern struct pf_shared pf__shared_table[PF_SHARED_LOCAL_MAX];
PF_INTERNAL extern pthread_mutex_t pf__shared_lock; /* the local table, attach and detach */

/* shared.c: the local entry of a handle, or NULL/EINVAL if it is not an attached arena's */
PF_INTERNAL struct pf_shared *pf__shared_checked(const pf_shared_t *arena);

/* shared_map.c: the file and the mapping */
/* Create, size, back and map the file; fill in the header. 0 or -1 with errno and message. */
PF_INTERNAL int pf__shared_map_create(struct pf_shared *local, const char *name, size_t size,
				      unsigned mode, int backing, const char *directory);
/* Open, check and map an existing arena. 0 or -1 with errno and message. */
PF_INTERNAL int pf__shared_map_attach(struct pf_shared *local, const char *name,
				      const char *directory);
PF_INTERNAL void pf__shared_unmap(struct pf_shared *local);
/* This process's entry for the arena of that name, if it is attached here; else NULL. */
PF_INTERNAL struct pf_shared *pf__shared_find_attached(const char *name, const char *directory);
PF_INTERNAL int pf__shared_remove(const char *name, const char *directory);

/* shared_pages.c: the lock and the page allocator */
PF_INTERNAL void pf__shared_lock_header(struct pf_shared_header *h);
PF_INTERNAL void pf__shared_unlock_header(struct pf_shared_header *h);
PF_INTERNAL void pf__shared_zone_init(struct pf_shared_header *h);
/* The local entry whose page metadata holds page, or NULL. */
PF_INTERNAL struct pf_shared *pf__shared_of_page(const struct pf_page *page);
/* Head page of the in-use block holding addr (inside h's frag pages), or NULL. */
PF_INTERNAL struct pf_page *pf__shared_head_page(const struct pf_shared_header *h, const void *addr);
/* The local entry whose frag pages hold addr, or NULL. */
PF_INTERNAL struct pf_shared *pf__shared_of_address(const void *addr);

/* shared_procs.c: the process table, cache slots, reaping */
PF_INTERNAL int pf__shared_proc_enter(struct pf_shared *local); /* 0 or -1/ENOSPC */
PF_INTERNAL void pf__shared_proc_leave(struct pf_shared *local);
/* A cache for the calling thread: 0 or -1/ENOSPC. */
PF_INTERNAL struct pf_cache *pf__shared_cache_claim(struct pf_shared *local, struct pf_thread *t);
/* Drain one live slot's cache and free the slot (its owner, or a reaper); false if someone else did. */
PF_INTERNAL bool pf__shared_slot_release(struct pf_shared_header *h, struct pf_shared_slot *slot);
PF_INTERNAL size_t pf__shared_reap(struct pf_shared *local);
/* Is the process in slot proc of the table alive? (its liveness lock; true when unsure) */
PF_INTERNAL bool pf__shared_proc_alive(const struct pf_shared *local, uint32_t proc);
/* Frees made by a thread: counted in its cache slot, else in the process slot. */
PF_INTERNAL void pf__shared_count_free(struct pf_shared *local, struct pf_thread *t);

/* ---- what the layers above call ------------------------------------------------ */

/* Shared arenas attached in this process now (a relaxed read keeps pf_free's miss path cheap). */
PF_INTERNAL extern _Atomic uint32_t pf__shared_attached;
/*
 * pf_shared_create and pf_shared_attach once the library is initialised
 * (the API's entry points initialise, then call these).
 */
PF_INTERNAL pf_shared_t *pf__shared_create(const char *name, size_t size, unsigned mode,
					   int backing, const char *directory);
PF_INTERNAL pf_shared_t *pf__shared_attach(const char *name, const char *directory);
/* pf_free() of an address outside the private arena: 0, or -1/EINVAL. */
PF_INTERNAL int pf__shared_free_address(void *addr);
PF_INTERNAL int pf__shared_page_query(const void *addr, pf_page_info_t *out);
/* In a fork child: the parent's process slots and caches are not ours. */
PF_INTERNAL void pf__shared_after_fork(void);

/* ---- between this layer's files ----------------------------------------------------- */

/* The page source shared caches refill from (shared_pages.c). */
PF_INTERNAL extern const struct pf_page_source pf__shared_source;
/* Count one page_frag event (PF_CTR_*) that has a shared counter. */
PF_INTERNAL void pf__shared_frag_count(struct pf_shared_header *h, enum pf_counter c);
/* A page's header if it belongs to an attached shared arena, else NULL. */
PF_INTERNAL struct pf_shared_header *pf__shared_header_of_page(const struct pf_page *page);
/* Thread give-back hook (thread.h): give back the thread's (a struct pf_thread *) shared caches. */
PF_INTERNAL void pf__shared_thread_release(void *thread);

#endif /* PF_SHARED_H */
