// SPDX-License-Identifier: GPL-2.0-only
/*
 * pyfrag_dpdk.h against real DPDK: run with EAL arguments, e.g.
 *   test_dpdk --no-huge --no-pci --no-shconf -l 0-1 --vdev net_null0
 * (tests/test_dpdk.py runs it on net_null, net_ring and net_pcap). Checks the
 * buffer layout and the refusals, bulk all-or-nothing, clones, frees on a
 * worker lcore, TX through the vdev (net_ring: the packets come back on RX
 * with their bytes; net_pcap: "tx <n> <bytes>" lines for the file check),
 * copy-out, IOVA, a shared arena as external memory, and at the end that
 * every fragment and every mbuf came back. Prints ok/not ok and
 * "N passed, N failed".
 */
#include <errno.h>
#include <stdio.h>
#include <string.h>
#include <unistd.h>

#include <rte_eal.h>
#include <rte_ethdev.h>
#include <rte_launch.h>
#include <rte_lcore.h>
#include <rte_memory.h>
#include <rte_ring.h>

#include "../../tests/check.h"
#include "pyfrag_dpdk.h"

#define POOL_SIZE 1023u
static struct rte_mempool *headers; /* data room 0: for pyfrag buffers */
static struct rte_mempool *plain;   /* an ordinary 2048-room pool: copy-out, RX */

static pf_stats_t stats_now(void)
{
	pf_stats_t s;
	pf_stats_get(&s, sizeof(s));
	return s;
}

static void fill(struct rte_mbuf *m, uint32_t size, unsigned seed)
{
	char *data = rte_pktmbuf_append(m, (uint16_t)size);
	for (uint32_t i = 0; data != NULL && i < size; i++)
		data[i] = (char)(seed + i * 7u);
}

static int same_bytes(const struct rte_mbuf *m, uint32_t size, unsigned seed)
{
	const char *data = rte_pktmbuf_mtod(m, const char *);
	if (rte_pktmbuf_pkt_len(m) != size)
		return 0;
	for (uint32_t i = 0; i < size; i++)
		if (data[i] != (char)(seed + i * 7u))
			return 0;
	return 1;
}

static void test_layout(void)
{
	static const uint32_t sizes[] = {1, 60, 64, 576, 1500, 9000, PF_DPDK_MAX_SIZE};
	for (unsigned i = 0; i < sizeof(sizes) / sizeof(sizes[0]); i++) {
		struct rte_mbuf *m = pf_dpdk_alloc(headers, sizes[i]);
		CHECK(m != NULL);
		if (m == NULL)
			continue;
		pf_page_info_t page;
		CHECK(pf_dpdk_is_pyfrag(m));
		CHECK(pf_page_query(m->buf_addr, &page) == 0 && (page.flags & PF_PAGE_IN_USE));
		CHECK_EQ(m->data_off, RTE_PKTMBUF_HEADROOM);
		CHECK_EQ((uintptr_t)rte_pktmbuf_mtod(m, char *) % PF_DPDK_FRAG_ALIGN, 0);
		CHECK(rte_pktmbuf_tailroom(m) >= sizes[i]);
		CHECK_EQ((char *)m->shinfo - (char *)m->buf_addr, m->buf_len);
		CHECK_EQ(m->buf_len + PF_DPDK_SHINFO_SIZE, pf_dpdk_frag_size(sizes[i]));
		CHECK_EQ(m->buf_iova, (rte_iova_t)(uintptr_t)m->buf_addr); /* IOVA-as-VA here */
		fill(m, sizes[i], i);
		CHECK(same_bytes(m, sizes[i], i));
		uint64_t frees = stats_now().frees;
		rte_pktmbuf_free(m);
		CHECK_EQ(stats_now().frees, frees + 1);
	}
	errno = 0;
	CHECK(pf_dpdk_alloc(headers, 0) == NULL && errno == EINVAL);
	errno = 0;
	CHECK(pf_dpdk_alloc(headers, PF_DPDK_MAX_SIZE + 1) == NULL && errno == E2BIG);
	errno = 0;
	CHECK(pf_dpdk_alloc(NULL, 64) == NULL && errno == EINVAL);
	CHECK(PF_DPDK_MAX_SIZE + RTE_PKTMBUF_HEADROOM <= UINT16_MAX); /* buf_len is 16 bits */
}

static void test_bulk(void)
{
	uint32_t sizes[32];
	struct rte_mbuf *m[32];
	for (unsigned i = 0; i < 32; i++)
		sizes[i] = (i % 12) < 7 ? 64 : (i % 12) < 11 ? 576 : 1500; /* imix 7:4:1 */
	CHECK(pf_dpdk_alloc_bulk(headers, m, sizes, 32) == 0);
	for (unsigned i = 0; i < 32; i++)
		CHECK(rte_pktmbuf_tailroom(m[i]) >= sizes[i]);
	rte_pktmbuf_free_bulk(m, 32);

	/* all or nothing: a pool with 8 mbufs cannot give 16, and nothing stays out */
	struct rte_mempool *small = pf_dpdk_pool_create("pf_test_small", 8, 0, (int)rte_socket_id());
	CHECK(small != NULL);
	pf_stats_t before = stats_now();
	errno = 0;
	CHECK(pf_dpdk_alloc_bulk(small, m, sizes, 16) == -1 && errno == ENOMEM);
	CHECK_EQ(rte_mempool_avail_count(small), 8);
	sizes[3] = PF_DPDK_MAX_SIZE + 1;
	errno = 0;
	CHECK(pf_dpdk_alloc_bulk(small, m, sizes, 4) == -1 && errno == E2BIG);
	pf_stats_t after = stats_now();
	CHECK_EQ(after.allocs - before.allocs, after.frees - before.frees);
	rte_mempool_free(small);
}

static void test_clone(void)
{
	struct rte_mbuf *m = pf_dpdk_alloc(headers, 1000);
	fill(m, 1000, 3);
	struct rte_mbuf *c1 = rte_pktmbuf_clone(m, headers), *c2 = rte_pktmbuf_clone(m, headers);
	CHECK(c1 != NULL && c2 != NULL);
	CHECK(pf_dpdk_is_pyfrag(c1) && c1->buf_addr == m->buf_addr);
	CHECK_EQ(rte_mbuf_ext_refcnt_read(m->shinfo), 3);
	uint64_t frees = stats_now().frees;
	rte_pktmbuf_free(m);
	rte_pktmbuf_free(c1);
	CHECK_EQ(stats_now().frees, frees); /* c2 still holds the fragment */
	CHECK(same_bytes(c2, 1000, 3));
	rte_pktmbuf_free(c2);
	CHECK_EQ(stats_now().frees, frees + 1);
}

/* ---- a worker lcore frees what the main lcore allocated -------------------- */

#define CROSS_PACKETS 20000u
static struct rte_ring *to_worker;
static unsigned worker_freed; /* atomic: EAL's lcore wait is not instrumented */

static int worker_free_loop(void *arg)
{
	(void)arg;
	unsigned freed = 0;
	while (freed < CROSS_PACKETS) {
		struct rte_mbuf *burst[32];
		unsigned n = rte_ring_dequeue_burst(to_worker, (void **)burst, 32, NULL);
		for (unsigned i = 0; i < n; i++)
			CHECK(same_bytes(burst[i], rte_pktmbuf_pkt_len(burst[i]), freed + i));
		rte_pktmbuf_free_bulk(burst, n);
		freed += n;
	}
	pf_dpdk_lcore_flush(NULL, 0); /* EAL workers never exit: give back by hand */
	__atomic_store_n(&worker_freed, freed, __ATOMIC_RELEASE);
	return 0;
}

static void test_worker_frees(void)
{
	unsigned worker = rte_get_next_lcore(-1, 1, 0);
	if (worker >= RTE_MAX_LCORE) {
		fprintf(stderr, "no worker lcore (run with -l 0-1)\n");
		CHECK(worker < RTE_MAX_LCORE);
		return;
	}
	to_worker = rte_ring_create("pf_test_ring", 512, (int)rte_socket_id(),
				    RING_F_SP_ENQ | RING_F_SC_DEQ);
	CHECK(to_worker != NULL);
	pf_dpdk_lcore_flush(NULL, 0);
	pf_stats_t before = stats_now();
	CHECK(rte_eal_remote_launch(worker_free_loop, NULL, worker) == 0);
	for (unsigned sent = 0; sent < CROSS_PACKETS; sent++) {
		uint32_t size = 64 + (sent * 37u) % 1437u;
		struct rte_mbuf *m = pf_dpdk_alloc(headers, size);
		CHECK(m != NULL);
		fill(m, size, sent);
		while (rte_ring_enqueue(to_worker, m) != 0)
			rte_pause();
	}
	CHECK(rte_eal_wait_lcore(worker) == 0);
	CHECK_EQ(__atomic_load_n(&worker_freed, __ATOMIC_ACQUIRE), CROSS_PACKETS);
	pf_dpdk_lcore_flush(NULL, 0);
	pf_stats_t after = stats_now();
	CHECK_EQ(after.allocs - before.allocs, CROSS_PACKETS);
	CHECK_EQ(after.frees - before.frees, CROSS_PACKETS);
	CHECK_EQ(after.pages_in_use, before.pages_in_use);
	rte_ring_free(to_worker);
}

/* ---- TX through the vdev --------------------------------------------------- */

#define TX_PACKETS 3000u

static int port_start(uint16_t port)
{
	struct rte_eth_conf conf;
	memset(&conf, 0, sizeof(conf));
	if (rte_eth_dev_configure(port, 1, 1, &conf) != 0)
		return -1;
	if (rte_eth_rx_queue_setup(port, 0, 256, rte_eth_dev_socket_id(port), NULL, plain) != 0)
		return -1;
	if (rte_eth_tx_queue_setup(port, 0, 256, rte_eth_dev_socket_id(port), NULL) != 0)
		return -1;
	return rte_eth_dev_start(port);
}

static void test_tx(void)
{
	uint16_t port = 0;
	struct rte_eth_dev_info info;
	CHECK(rte_eth_dev_count_avail() >= 1);
	CHECK(rte_eth_dev_info_get(port, &info) == 0);
	CHECK(port_start(port) == 0);
	int loops_back = strcmp(info.driver_name, "net_ring") == 0;
	pf_stats_t before = stats_now();
	unsigned sent = 0, received = 0, cloned = 0;
	uint64_t bytes = 0;
	while (sent < TX_PACKETS) {
		struct rte_mbuf *burst[32];
		unsigned n = 0;
		for (; n < 16 && sent + n < TX_PACKETS; n++) {
			uint32_t size = (sent + n) % 12 < 7 ? 64 : (sent + n) % 12 < 11 ? 576 : 1500;
			burst[n] = pf_dpdk_alloc(headers, size);
			fill(burst[n], size, sent + n);
		}
		unsigned originals = n;
		for (unsigned i = 0; i < originals; i += 4) { /* every 4th packet goes out twice */
			burst[n] = rte_pktmbuf_clone(burst[i], headers);
			CHECK(burst[n] != NULL);
			n++;
			cloned++;
		}
		for (unsigned i = 0; i < n; i++)
			bytes += rte_pktmbuf_pkt_len(burst[i]);
		unsigned done = 0;
		while (done < n)
			done += rte_eth_tx_burst(port, 0, burst + done, (uint16_t)(n - done));
		sent += originals;
		while (loops_back) { /* net_ring: what went out comes back in, same bytes */
			struct rte_mbuf *rx[32];
			unsigned got = rte_eth_rx_burst(port, 0, rx, 32);
			if (got == 0)
				break;
			for (unsigned i = 0; i < got; i++)
				CHECK(pf_dpdk_is_pyfrag(rx[i]));
			rte_pktmbuf_free_bulk(rx, got);
			received += got;
		}
	}
	if (loops_back)
		CHECK_EQ(received, sent + cloned);
	printf("tx %u %llu\n", sent + cloned, (unsigned long long)bytes);
	CHECK(rte_eth_dev_stop(port) == 0);
	CHECK(rte_eth_dev_close(port) == 0); /* net_pcap writes its file out here */
	pf_stats_t after = stats_now();
	CHECK_EQ(after.allocs - before.allocs, TX_PACKETS);
	CHECK_EQ(after.frees - before.frees, TX_PACKETS);
}

static void test_copy_out(void)
{
	struct rte_mbuf *m = pf_dpdk_alloc(headers, 700);
	fill(m, 700, 9);
	struct rte_mbuf *clone = rte_pktmbuf_clone(m, headers);
	uint64_t frees = stats_now().frees;
	struct rte_mbuf *held = pf_dpdk_copy_out(clone, plain);
	CHECK(held != NULL && held != clone && !pf_dpdk_is_pyfrag(held) && !RTE_MBUF_HAS_EXTBUF(held));
	CHECK(same_bytes(held, 700, 9));
	rte_pktmbuf_free(m);
	CHECK_EQ(stats_now().frees, frees + 1); /* the held copy does not pin the frag page */
	CHECK(pf_dpdk_copy_out(held, plain) == held); /* not pyfrag's: as it is */
	rte_pktmbuf_free(held);
	errno = 0;
	CHECK(pf_dpdk_copy_out(NULL, plain) == NULL && errno == EINVAL);
}

static void test_iova(void)
{
	void *frag = pf_alloc(100);
	CHECK(rte_eal_iova_mode() == RTE_IOVA_VA); /* --no-huge without devices */
	CHECK_EQ(pf_dpdk_iova(frag, 100), (rte_iova_t)(uintptr_t)frag);
	pf_free(frag);
}

static void test_shared_arena(void)
{
	char name[PF_SHARED_NAME_MAX];
	snprintf(name, sizeof(name), "pf_dpdk_test.%d", (int)getpid());
	pf_shared_t *arena = pf_shared_create(name, 4u << 20, 0, PF_SHARED_BACKING_4K, NULL);
	CHECK(arena != NULL);
	if (arena == NULL)
		return;
	pf_shared_stats_t s;
	pf_shared_stats(arena, &s, sizeof(s));
	CHECK_EQ(pf_dpdk_shared_register(arena), 0); /* vdevs have no DMA map: 0 devices */
	struct rte_mbuf *m = pf_dpdk_alloc_shared(headers, arena, 1500);
	CHECK(m != NULL);
	if (m != NULL) {
		const struct rte_memseg_list *msl = rte_mem_virt2memseg_list(m->buf_addr);
		CHECK(msl != NULL && msl->external); /* DPDK knows the arena's pages now */
		CHECK(rte_mem_virt2memseg(m->buf_addr, NULL) != NULL);
		CHECK(pf_shared_offset(arena, m->buf_addr) != UINT64_MAX);
		fill(m, 1500, 5);
		struct rte_mbuf *c = rte_pktmbuf_clone(m, headers);
		rte_pktmbuf_free(m);
		CHECK(same_bytes(c, 1500, 5));
		rte_pktmbuf_free(c);
	}
	pf_shared_t *both[] = {arena};
	pf_dpdk_lcore_flush(both, 1);
	pf_shared_stats_t end;
	pf_shared_stats(arena, &end, sizeof(end));
	CHECK_EQ(end.allocs, end.frees);
	CHECK_EQ(pf_dpdk_shared_unregister(arena), 0);
	CHECK(rte_mem_virt2memseg_list((void *)(uintptr_t)s.base) == NULL);
	errno = 0;
	CHECK(pf_dpdk_shared_register(NULL) == -1 && errno == EINVAL);
	CHECK(pf_shared_detach(arena) == 0);
	CHECK(pf_shared_unlink(name, NULL) == 0);
}

static void test_everything_back(void)
{
	pf_dpdk_lcore_flush(NULL, 0);
	pf_stats_t s = stats_now();
	CHECK_EQ(s.allocs, s.frees);
	CHECK_EQ(rte_mempool_avail_count(headers), POOL_SIZE);
	CHECK_EQ(rte_mempool_avail_count(plain), POOL_SIZE);
}

int main(int argc, char **argv)
{
	if (rte_eal_init(argc, argv) < 0) {
		fprintf(stderr, "rte_eal_init failed: %s\n", rte_strerror(rte_errno));
		return 2;
	}
	headers = pf_dpdk_pool_create("pf_test_headers", POOL_SIZE, 32, (int)rte_socket_id());
	plain = rte_pktmbuf_pool_create("pf_test_plain", POOL_SIZE, 32, 0,
					RTE_MBUF_DEFAULT_BUF_SIZE, (int)rte_socket_id());
	if (headers == NULL || plain == NULL) {
		fprintf(stderr, "mempool: %s\n", rte_strerror(rte_errno));
		return 2;
	}
	RUN(test_layout);
	RUN(test_bulk);
	RUN(test_clone);
	RUN(test_worker_frees);
	RUN(test_tx);
	RUN(test_copy_out);
	RUN(test_iova);
	RUN(test_shared_arena);
	RUN(test_everything_back);
	rte_mempool_free(headers);
	rte_mempool_free(plain);
	rte_eal_cleanup();
	return check_summary();
}
