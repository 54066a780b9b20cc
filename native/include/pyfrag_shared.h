/* SPDX-License-Identifier: GPL-2.0-only */
/*
 * pyfrag shared arenas: one page_frag memory pool shared by several processes
 * (a DPDK-style primary and its secondaries), fragments allocated in one
 * process and freed in another.
 *
 * - An arena is a file named "pyfrag.<name>": on a hugetlbfs mount (2 MiB
 *   pages from the hugetlb pool) when there is one and the pool has room,
 *   else in /dev/shm (shmem, the memory memfd_create gives, but with a name
 *   other processes can open), advised for transparent hugepages where the
 *   system allows it for shmem, else on 4 KiB pages. All of it is allocated
 *   when it is created, so no process ever meets SIGBUS later.
 * - Every process maps it at the same address (recorded in the file), so a
 *   pointer means the same thing everywhere; offsets (pf_shared_offset) are
 *   what to send between processes, as they also survive a re-creation.
 * - The page metadata, the page allocator (behind a robust, process-shared
 *   lock) and every cache live inside the mapping. Each thread of each
 *   process gets its own page_frag cache per arena on its first allocation.
 *   A free from any thread of any process is the same atomic decrement of
 *   the page's refcount as in a private arena; pf_free() also accepts shared
 *   fragments.
 * - A process holds a lock on the arena's file while attached, which the
 *   kernel drops when it dies (in any pid namespace; a process that closes
 *   every descriptor it does not know of, as some daemons do at start, loses
 *   it too: attach after that). A process that dies while attached is reaped
 *   by the others (at attach,
 *   when memory or cache slots run out, and by pf_shared_reap): its caches are
 *   drained like the kernel's page_frag_cache_drain, so the frag pages they
 *   held go back as soon as every fragment other processes hold is freed.
 *   Fragments the dead process itself still held are lost with it (as mbufs
 *   are when a DPDK secondary dies): their pages stay in use until the arena
 *   is destroyed. A process dying while it holds the allocator lock is
 *   recovered by the next locker, which rebuilds the free lists from the page
 *   metadata (at most the one block that process was moving is lost).
 * - The file is created with mode 0600 unless another mode is asked for;
 *   attaching needs read and write permission on it. Attaching to an arena
 *   of another layout version, or one this library's build cannot share
 *   (page metadata, cache or lock sizes), fails with EPROTO and a sentence.
 *
 * Errors: NULL or -1 with errno, and pf_last_error_message() (pyfrag.h).
 */
#ifndef PYFRAG_SHARED_H
#define PYFRAG_SHARED_H

#include "pyfrag.h"

#ifdef __cplusplus
extern "C" {
#endif

#define PF_SHARED_LAYOUT_VERSION 4 /* 4: named rings in the header (3: a cache names its page source by id) */
#define PF_SHARED_DEFAULT_SIZE (32u * 1024u * 1024u)
#define PF_SHARED_NAME_MAX 48 /* letters, digits, '.', '_', '-'; not starting with '.' */

/* Backing: what create asks for, and what pf_shared_stats reports. */
#define PF_SHARED_BACKING_AUTO 0    /* hugetlb, else shmem with THP, else shmem */
#define PF_SHARED_BACKING_HUGETLB 1 /* a file on a hugetlbfs mount */
#define PF_SHARED_BACKING_THP 2     /* a file in /dev/shm advised MADV_HUGEPAGE */
#define PF_SHARED_BACKING_4K 3      /* a file in /dev/shm, 4 KiB pages */

typedef struct pf_shared pf_shared_t;

/*
 * Create the arena name with size bytes of frag pages (rounded up to 2 MiB;
 * 0 means PF_SHARED_DEFAULT_SIZE) and attach to it. mode: the file's
 * permission bits (0 means 0600; umask does not apply). directory: where the
 * file goes, or NULL for the default (the first 2 MiB hugetlbfs mount for
 * hugetlb, /dev/shm otherwise). NULL with errno: EINVAL (bad name, size,
 * mode or backing), EEXIST (the name exists), ENOMEM (no memory of the kind
 * asked for), EACCES, EADDRINUSE (no free address range), others from open.
 */
PF_API pf_shared_t *pf_shared_create(const char *name, size_t size, unsigned mode, int backing,
				     const char *directory);
/*
 * Attach to an existing arena (directory as for create; NULL looks on every
 * hugetlbfs mount, then in /dev/shm). Attaching twice in one process returns
 * the same handle, counted: each attach wants its detach. NULL with errno:
 * ENOENT, EACCES, EPROTO (another layout or version), EADDRINUSE (its address
 * range is taken in this process), EAGAIN (still being created).
 */
PF_API pf_shared_t *pf_shared_attach(const char *name, const char *directory);
/*
 * Drop one attach. The last one drains this process's caches (fragments
 * handed out stay valid for the other processes), leaves the process table
 * and unmaps: no thread of this process may use the arena or its fragments
 * after that. The arena itself lives on while any process has it mapped.
 */
PF_API int pf_shared_detach(pf_shared_t *arena);
/* Remove the name (like shm_unlink): attached processes keep their mapping. */
PF_API int pf_shared_unlink(const char *name, const char *directory);

/* A fragment from the calling thread's cache for this arena; as pf_cache_alloc(_align). */
PF_API void *pf_shared_alloc(pf_shared_t *arena, size_t fragsz);
PF_API void *pf_shared_alloc_align(pf_shared_t *arena, size_t fragsz, size_t align);
/* n fragments into out[0..n) with one call: all of them, or -1 with errno and none (pf_cache_free_bulk(NULL, ...) frees many). */
PF_API int pf_shared_alloc_bulk(pf_shared_t *arena, size_t fragsz, size_t n, void **out);
/* pf_recv_burst (pyfrag.h) into fragments of this arena: hand them to another process. */
PF_API int pf_shared_recv_burst(pf_shared_t *arena, int fd, size_t size, unsigned n, int flags,
				void **frags, uint32_t *lens, void *names, uint32_t *namelens);
/* Free the fragment containing addr, whichever process allocated it. -1/EINVAL if it is not one. */
PF_API int pf_shared_free(pf_shared_t *arena, void *addr);

/* The offset of addr from the arena's base, or UINT64_MAX/EINVAL if addr is outside its frag pages. */
PF_API uint64_t pf_shared_offset(const pf_shared_t *arena, const void *addr);
/* The address of an offset, or NULL/EINVAL if it is outside the arena's frag pages. */
PF_API void *pf_shared_address(const pf_shared_t *arena, uint64_t offset);

/* Reap the processes that died attached (see above). Returns how many. */
PF_API size_t pf_shared_reap(pf_shared_t *arena);
/* Give the calling thread's cache for this arena back (runs by itself at thread exit). */
PF_API void pf_shared_thread_flush(pf_shared_t *arena);
/* The backing file's path. */
PF_API const char *pf_shared_path(const pf_shared_t *arena);

#define PF_SHARED_STATS_VERSION 1

/* ---- rings: fragments handed between processes ---------------------------------- */

/*
 * A bounded single-producer single-consumer ring of fragments, inside the
 * arena: its control block is a fragment of the arena, its name one of
 * PF_SHARED_RINGS_MAX entries in the arena's header, so any attached process
 * finds it by name. An entry is a fragment of that arena and its length;
 * what crosses is the fragment itself (no copy): a put hands the fragment
 * over, the get's caller owns it and frees it (pf_shared_free).
 *
 * One producer and one consumer at a time, each a thread of some process:
 * the first put (get) makes the calling process the producer (consumer);
 * another process's put (get) is refused (EBUSY) while that one is alive,
 * and takes the role over once it died. The entries a dead process left in
 * the ring stay there for the next consumer (nothing is lost; fragments
 * never got are accounted as allocated, like any fragment a dead process
 * held). A ring lives as long as the arena.
 */
#define PF_SHARED_RINGS_MAX 8          /* named rings per arena */
#define PF_SHARED_RING_MAX_SLOTS 2048u /* capacity is a power of two, 2..this */

typedef struct pf_shared_ring pf_shared_ring_t;

/* Make a ring of capacity entries named name. NULL with errno: EINVAL, EEXIST, ENOSPC (no name left), ENOMEM. */
PF_API pf_shared_ring_t *pf_shared_ring_create(pf_shared_t *arena, const char *name,
					       uint32_t capacity);
/* The ring named name. NULL with errno: ENOENT, EINVAL. */
PF_API pf_shared_ring_t *pf_shared_ring_attach(pf_shared_t *arena, const char *name);
/* Its capacity, and how many entries it holds now (a snapshot), or -1/EINVAL. */
PF_API int pf_shared_ring_capacity(pf_shared_t *arena, pf_shared_ring_t *ring);
PF_API int pf_shared_ring_count(pf_shared_t *arena, pf_shared_ring_t *ring);

/*
 * Put frags[0..n) (lens[i] bytes each, 1..32768; fragments of this arena) in
 * order, as many as fit: how many went (0 when full), or -1 with errno
 * (EINVAL: not a fragment of this arena, bad length; EBUSY: another live
 * process is the producer). Never blocks.
 */
PF_API int pf_shared_ring_put(pf_shared_t *arena, pf_shared_ring_t *ring, void *const *frags,
			      const uint32_t *lens, unsigned n);
/* Take up to n entries: how many (0 when empty), or -1 with errno (EBUSY: another consumer). Never blocks. */
PF_API int pf_shared_ring_get(pf_shared_t *arena, pf_shared_ring_t *ring, void **frags,
			      uint32_t *lens, unsigned n);
/*
 * Wait until a put (for_put) or a get could make progress, at most
 * timeout_ns (< 0: no limit). 0 when it could, or -1 with errno: ETIMEDOUT,
 * EPIPE (the process on the other side died, and a get finds the ring empty
 * or a put finds it full). It polls the ring for up to 20 us first (a
 * running peer is quicker than a futex wakeup), yielding the CPU between
 * polls, then sleeps on a futex.
 */
PF_API int pf_shared_ring_wait(pf_shared_t *arena, pf_shared_ring_t *ring, int for_put,
			       int64_t timeout_ns);

/* X(name, doc): one row per field, as PF_STATS_FIELDS. */
#define PF_SHARED_STATS_FIELDS(X)                                                            \
	X(layout_version, "layout version of the arena (PF_SHARED_LAYOUT_VERSION)")           \
	X(backing, "1 hugetlb, 2 shmem advised for THP, 3 shmem on 4 KiB pages")             \
	X(base, "address the arena is mapped at, in every process")                          \
	X(map_bytes, "bytes mapped: the control region and the frag pages")                  \
	X(data_bytes, "bytes of frag pages")                                                  \
	X(pages_total, "4 KiB pages for frag pages, the reserve included")                   \
	X(pages_free, "pages free in the page allocator")                                    \
	X(pages_in_use, "pages handed out: caches' frag pages and pages pinned by fragments") \
	X(reserve_free_pages, "emergency reserve pages available")                           \
	X(processes, "processes attached now")                                               \
	X(caches, "per-thread caches in use now, all processes")                             \
	X(allocs, "fragments handed out, all processes")                                     \
	X(frees, "fragments freed, all processes")                                           \
	X(refills, "frag pages taken from the page allocator")                               \
	X(recycles, "frag pages reused in place")                                            \
	X(abandons, "frag pages left to their outstanding fragments")                        \
	X(order0_fallbacks, "refills that fell back to a 4 KiB page")                        \
	X(reserve_pages, "refills served from the emergency reserve")                        \
	X(reserve_returns, "reserve pages given back")                                       \
	X(drains, "cache drains (thread exit, detach, reaping)")                             \
	X(invalid_frees, "frees refused: not a fragment, or one freed already")              \
	X(alloc_failures, "allocations refused for lack of memory")                          \
	X(attaches, "attaches since creation (the creator's included)")                      \
	X(detaches, "detaches since creation")                                               \
	X(reaped_processes, "dead processes reaped")                                         \
	X(reaped_caches, "caches of dead processes drained")                                 \
	X(lost_pages, "pages a dead process's cache held that could not be given back")      \
	X(lock_recoveries, "times the allocator lock was taken over from a dead process")

typedef struct pf_shared_stats {
	uint32_t size;    /* sizeof(pf_shared_stats_t) in the library */
	uint32_t version; /* PF_SHARED_STATS_VERSION */
#define PF_SHARED_STATS_MEMBER_(name, doc) uint64_t name;
	PF_SHARED_STATS_FIELDS(PF_SHARED_STATS_MEMBER_)
#undef PF_SHARED_STATS_MEMBER_
} pf_shared_stats_t;

/* Snapshot into out (at most out_size bytes). -1/EINVAL for a bad arena or a buffer too small. */
PF_API int pf_shared_stats(const pf_shared_t *arena, pf_shared_stats_t *out, size_t out_size);
PF_API size_t pf_shared_stats_field_count(void);
PF_API const char *pf_shared_stats_field_name(size_t index);
PF_API const char *pf_shared_stats_field_doc(size_t index);

#ifdef __cplusplus
}
#endif
#endif /* PYFRAG_SHARED_H */
