/* SPDX-License-Identifier: GPL-2.0-only */
/*
 * pyfrag for DPDK (libpyfrag_dpdk.so, beside libpyfrag.so; built only where
 * `pkg-config libdpdk` finds DPDK): packet buffers of any size from page_frag,
 * attached to mbufs as external buffers, as the kernel hands page_frag
 * fragments to skbs.
 *
 * - An mbuf comes from a "header pool" (pf_dpdk_pool_create: data room 0,
 *   so an element is the 128-byte mbuf alone) and gets one fragment of
 *   RTE_PKTMBUF_HEADROOM + size bytes from the calling thread's pyfrag cache,
 *   with the rte_mbuf_ext_shared_info in the fragment's tail. The mbuf's
 *   data starts after the headroom, 64-byte aligned, with data_len 0: the
 *   caller appends (rte_pktmbuf_append) up to size bytes.
 * - Clones (rte_pktmbuf_clone) share the fragment; DPDK calls
 *   pf_dpdk_free_cb on the lcore that drops the last reference, which gives
 *   the fragment back (any thread may). It never reads the allocating
 *   thread's cache (that line is the producer's: reading it from the
 *   consumer cost 17 ns per packet in a pipeline), only the freeing
 *   thread's own: a burst freed on the lcore that allocated it is the
 *   inline owner free, anything else pf_free().
 * - EAL worker lcores never exit, so pyfrag's thread-exit give-back never
 *   runs on them: each lcore function calls pf_dpdk_lcore_flush() before it
 *   returns (and the main lcore before rte_eal_cleanup), or the pages its
 *   frees batched and its page lists stay counted as in use.
 * - A packet that will be held long (a reassembly queue, a retransmit list)
 *   pins its whole 32 KiB frag page: pf_dpdk_copy_out moves it into an
 *   ordinary mempool mbuf first.
 * - buf_len is 16 bits and a fragment at most PF_FRAG_PAGE_SIZE: sizes above
 *   PF_DPDK_MAX_SIZE are refused (E2BIG); bigger packets are chains.
 *
 * Errors: NULL or -1 with errno (ENOMEM: no mbuf or no fragment; E2BIG: too
 * big; EINVAL: bad arguments; others from DPDK's rte_errno). Nothing aborts.
 */
#ifndef PYFRAG_DPDK_H
#define PYFRAG_DPDK_H

#include <rte_mbuf.h>

#include "pyfrag_shared.h"

#ifdef __cplusplus
extern "C" {
#endif

/* The layout of one fragment: headroom, data (padded to 8), shared info. */
#define PF_DPDK_SHINFO_SIZE ((uint32_t)sizeof(struct rte_mbuf_ext_shared_info))
#define PF_DPDK_MAX_SIZE \
	((PF_FRAG_PAGE_SIZE - RTE_PKTMBUF_HEADROOM - PF_DPDK_SHINFO_SIZE) & ~7u)
#define PF_DPDK_FRAG_ALIGN 64u /* RTE_CACHE_LINE_SIZE on the machines DPDK supports */

/* The fragment bytes a packet of size bytes takes (what pf_dpdk_alloc asks pyfrag for). */
static inline uint32_t pf_dpdk_frag_size(uint32_t size)
{
	return ((RTE_PKTMBUF_HEADROOM + size + 7u) & ~7u) + PF_DPDK_SHINFO_SIZE;
}

/* A pool of n mbufs with no data room (the headers pf_dpdk_alloc attaches fragments to). */
PF_API struct rte_mempool *pf_dpdk_pool_create(const char *name, unsigned n, unsigned cache_size,
					       int socket_id);

/* An mbuf from pool with a pyfrag buffer for size bytes (1..PF_DPDK_MAX_SIZE). */
PF_API struct rte_mbuf *pf_dpdk_alloc(struct rte_mempool *pool, uint32_t size);
/* The same from a shared arena (pyfrag_shared.h) instead of the thread's private cache. */
PF_API struct rte_mbuf *pf_dpdk_alloc_shared(struct rte_mempool *pool, pf_shared_t *arena,
					     uint32_t size);
/* n mbufs, mbufs[i] with room for sizes[i] bytes; all or nothing: 0, or -1 with errno. */
PF_API int pf_dpdk_alloc_bulk(struct rte_mempool *pool, struct rte_mbuf **mbufs,
			      const uint32_t *sizes, unsigned n);

/* The rte_mbuf_extbuf_free_callback_t of every buffer above (opaque: the fragment's size):
 * the inline owner free when the calling thread's own cache holds the page, else pf_free(addr). */
PF_API void pf_dpdk_free_cb(void *addr, void *opaque);
/* 1 if m's buffer is a pyfrag fragment attached by this library (clones included). */
PF_API int pf_dpdk_is_pyfrag(const struct rte_mbuf *m);

/* End of an lcore function: apply the thread's batched frees, give back its frag page and
 * page lists (pf_thread_flush), and the same for each arena in arenas[0..n_arenas). */
PF_API void pf_dpdk_lcore_flush(pf_shared_t *const *arenas, unsigned n_arenas);

/*
 * The IOVA of len bytes at addr: addr itself in IOVA-as-VA mode; in PA mode
 * the memseg lookup (memory DPDK knows: its own, or a shared arena registered
 * below), when the bytes lie in one memseg; else RTE_BAD_IOVA with errno
 * ENOENT (a private-arena fragment in PA mode: register a shared arena).
 */
PF_API rte_iova_t pf_dpdk_iova(const void *addr, size_t len);

/*
 * A packet to hold long: a copy of m (all segments) in an mbuf of pool (an
 * ordinary pool with data room), and m freed. An mbuf whose buffer is not
 * pyfrag's is returned as it is. NULL/ENOMEM with m untouched when pool is empty.
 */
PF_API struct rte_mbuf *pf_dpdk_copy_out(struct rte_mbuf *m, struct rte_mempool *pool);

/*
 * Make a shared arena's mapping DPDK external memory: rte_extmem_register in
 * the primary (with each page's physical address in PA mode), rte_extmem_attach
 * in a secondary, then rte_dev_dma_map for every ethdev whose bus maps DMA
 * (vdevs do not: they are skipped). Returns the devices mapped, or -1 with errno.
 */
PF_API int pf_dpdk_shared_register(pf_shared_t *arena);
/* Undo it (dma unmap, then unregister in the primary / detach in a secondary). */
PF_API int pf_dpdk_shared_unregister(pf_shared_t *arena);

#ifdef __cplusplus
}
#endif
#endif /* PYFRAG_DPDK_H */
