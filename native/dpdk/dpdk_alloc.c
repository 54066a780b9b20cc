// SPDX-License-Identifier: GPL-2.0-only
/*
 * Mbufs with pyfrag buffers (pyfrag_dpdk.h): the header pool, single and bulk
 * allocation, the free callback, the per-lcore flush and the copy-out of
 * packets held long. Public API of libpyfrag only.
 */
#include <errno.h>

#include <rte_eal.h>
#include <rte_errno.h>
#include <rte_mbuf.h>

#include "pyfrag_dpdk.h"

/* The thread's default cache, looked up once per thread. Initial-exec TLS (8 bytes of the
 * static TLS block: this library is linked into DPDK programs, not dlopened by Python):
 * one load, where the default model's __tls_get_addr cost 22 instructions per packet. */
static __thread pf_cache_t *thread_cache __attribute__((tls_model("initial-exec")));
/* EAL's IOVA mode, once EAL has chosen one (it does not change after): 1 VA, 2 PA. */
static int iova_mode_cached;

static rte_iova_t buffer_iova(void *frag, uint32_t len)
{
	int mode = __atomic_load_n(&iova_mode_cached, __ATOMIC_RELAXED);
	if (__builtin_expect(mode == 0, 0)) {
		enum rte_iova_mode eal = rte_eal_iova_mode();
		mode = eal == RTE_IOVA_VA ? 1 : eal == RTE_IOVA_PA ? 2 : 0;
		__atomic_store_n(&iova_mode_cached, mode, __ATOMIC_RELAXED);
	}
	return mode == 1 ? (rte_iova_t)(uintptr_t)frag : pf_dpdk_iova(frag, len);
}

struct rte_mempool *pf_dpdk_pool_create(const char *name, unsigned n, unsigned cache_size,
					int socket_id)
{
	struct rte_mempool *pool = rte_pktmbuf_pool_create(name, n, cache_size, 0, 0, socket_id);
	if (pool == NULL)
		errno = rte_errno;
	return pool;
}

/*
 * opaque is the fragment's size. Nothing of the allocating thread is read here
 * (see the header): only the freeing thread's own cache, for the case where it
 * is also the owner and the fragment lies in its current page (a burst on one
 * lcore): that free is the inline one, no call and no atomic operation.
 */
void pf_dpdk_free_cb(void *addr, void *opaque)
{
#ifdef PF_HAVE_THREAD_ID
	const pf_cache_fast_t *own = (const pf_cache_fast_t *)thread_cache;
	if (own != NULL && own->owner == pf_thread_id() && (uintptr_t)addr - own->va < own->offset) {
		pf_cache_free_inline(thread_cache, addr, (size_t)(uintptr_t)opaque);
		return;
	}
#else
	(void)opaque;
#endif
	pf_free(addr);
}

int pf_dpdk_is_pyfrag(const struct rte_mbuf *m)
{
	return m != NULL && RTE_MBUF_HAS_EXTBUF(m) && m->shinfo != NULL &&
	       m->shinfo->free_cb == pf_dpdk_free_cb;
}

/* Lay a fragment out for size bytes and attach it to m: headroom, data, shared info. */
static void attach(struct rte_mbuf *m, void *frag, uint32_t size)
{
	uint32_t frag_size = pf_dpdk_frag_size(size), buf_len = frag_size - PF_DPDK_SHINFO_SIZE;
	struct rte_mbuf_ext_shared_info *shinfo =
		(struct rte_mbuf_ext_shared_info *)((char *)frag + buf_len);
	shinfo->free_cb = pf_dpdk_free_cb;
	shinfo->fcb_opaque = (void *)(uintptr_t)frag_size; /* for the owner's inline free */
	rte_mbuf_ext_refcnt_set(shinfo, 1);
	rte_pktmbuf_attach_extbuf(m, frag, buffer_iova(frag, buf_len), (uint16_t)buf_len, shinfo);
	rte_pktmbuf_reset_headroom(m);
}

static int size_ok(uint32_t size)
{
	if (size == 0) {
		errno = EINVAL;
		return 0;
	}
	if (size > PF_DPDK_MAX_SIZE) {
		errno = E2BIG;
		return 0;
	}
	return 1;
}

static void *frag_alloc(uint32_t size)
{
	if (__builtin_expect(thread_cache == NULL, 0)) {
		thread_cache = pf_thread_cache();
		if (thread_cache == NULL)
			return NULL;
	}
	return pf_cache_alloc_align_inline(thread_cache, pf_dpdk_frag_size(size), PF_DPDK_FRAG_ALIGN);
}

struct rte_mbuf *pf_dpdk_alloc(struct rte_mempool *pool, uint32_t size)
{
	if (pool == NULL) {
		errno = EINVAL;
		return NULL;
	}
	if (!size_ok(size))
		return NULL;
	struct rte_mbuf *m = rte_pktmbuf_alloc(pool);
	if (m == NULL) {
		errno = ENOMEM;
		return NULL;
	}
	void *frag = frag_alloc(size);
	if (frag == NULL) {
		int saved = errno;
		rte_pktmbuf_free(m);
		errno = saved;
		return NULL;
	}
	attach(m, frag, size);
	return m;
}

struct rte_mbuf *pf_dpdk_alloc_shared(struct rte_mempool *pool, pf_shared_t *arena, uint32_t size)
{
	if (pool == NULL || arena == NULL) {
		errno = EINVAL;
		return NULL;
	}
	if (!size_ok(size))
		return NULL;
	struct rte_mbuf *m = rte_pktmbuf_alloc(pool);
	if (m == NULL) {
		errno = ENOMEM;
		return NULL;
	}
	void *frag = pf_shared_alloc_align(arena, pf_dpdk_frag_size(size), PF_DPDK_FRAG_ALIGN);
	if (frag == NULL) {
		int saved = errno;
		rte_pktmbuf_free(m);
		errno = saved;
		return NULL;
	}
	attach(m, frag, size);
	return m;
}

int pf_dpdk_alloc_bulk(struct rte_mempool *pool, struct rte_mbuf **mbufs, const uint32_t *sizes,
		       unsigned n)
{
	if (pool == NULL || (n > 0 && (mbufs == NULL || sizes == NULL))) {
		errno = EINVAL;
		return -1;
	}
	for (unsigned i = 0; i < n; i++)
		if (!size_ok(sizes[i]))
			return -1;
	if (rte_pktmbuf_alloc_bulk(pool, mbufs, n) != 0) {
		errno = ENOMEM;
		return -1;
	}
	for (unsigned i = 0; i < n; i++) {
		void *frag = frag_alloc(sizes[i]);
		if (frag == NULL) { /* all or nothing: the attached ones free their fragments */
			int saved = errno;
			rte_pktmbuf_free_bulk(mbufs, n);
			errno = saved;
			return -1;
		}
		attach(mbufs[i], frag, sizes[i]);
	}
	return 0;
}

void pf_dpdk_lcore_flush(pf_shared_t *const *arenas, unsigned n_arenas)
{
	for (unsigned i = 0; arenas != NULL && i < n_arenas; i++)
		pf_shared_thread_flush(arenas[i]);
	pf_thread_flush();
}

struct rte_mbuf *pf_dpdk_copy_out(struct rte_mbuf *m, struct rte_mempool *pool)
{
	if (m == NULL || pool == NULL) {
		errno = EINVAL;
		return NULL;
	}
	const struct rte_mbuf *seg = m;
	while (seg != NULL && !pf_dpdk_is_pyfrag(seg))
		seg = seg->next;
	if (seg == NULL) /* no segment holds a frag page */
		return m;
	struct rte_mbuf *copy = rte_pktmbuf_copy(m, pool, 0, UINT32_MAX);
	if (copy == NULL) {
		errno = ENOMEM;
		return NULL;
	}
	rte_pktmbuf_free(m);
	return copy;
}
