// SPDX-License-Identifier: GPL-2.0-only
/*
 * `pyfrag bench --workload dpdk` (pyfrag/tools/bench_dpdk.py): packet buffers
 * for DPDK four ways, in one process, interleaved:
 *   mempool     rte_pktmbuf_alloc from a pool with data room (2048; 9216 for jumbo)
 *   pyfrag      pf_dpdk_alloc: a data-room-0 mbuf + a pyfrag fragment as extbuf
 *   rte_malloc  the same mbuf + an rte_malloc buffer as extbuf (rte_free callback)
 *   glibc       the same mbuf + a malloc buffer as extbuf (free callback)
 * Cases: imix (64/576/1500 at 7:4:1) and jumbo (9000 bytes), each as burst
 * (one lcore: 32 allocated, touched, freed) and pipeline (main lcore allocates
 * and touches -> SPSC rte_ring -> worker lcore reads one byte and frees).
 * Every case runs once untimed first (page faults of fresh pool memory).
 * Memory per packet in flight: 4096 packets held; the mbuf's mempool element
 * plus what the buffers took (pyfrag: pages in use; rte_malloc: the heap's
 * allocated bytes; glibc: mallinfo2's uordblks), over 4096.
 *
 *   bench_dpdk EAL-ARGS -- PACKETS [VARIANT [CASE]]
 *
 * VARIANT and CASE run only those (for valgrind --tool=callgrind
 * --toggle-collect=burst_ns: instructions per packet, which noise does not move).
 *
 * Prints "result dpdk <case> <variant> ns_per_op <ns per packet> bytes_per_pkt <b>".
 */
#include <malloc.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include <rte_eal.h>
#include <rte_errno.h>
#include <rte_launch.h>
#include <rte_lcore.h>
#include <rte_malloc.h>
#include <rte_ring.h>

#include "pyfrag_dpdk.h"

#define BURST 32u
#define HELD 4096u
#define POOL_SIZE 16383u
#define JUMBO 9000u
#define JUMBO_ROOM (9216u + RTE_PKTMBUF_HEADROOM)

enum variant { MEMPOOL, PYFRAG, RTE_MALLOC, GLIBC, VARIANTS };
static const char *const variant_names[VARIANTS] = {"mempool", "pyfrag", "rte_malloc", "glibc"};

static struct rte_mempool *headers, *room2048, *room9216;
static struct rte_ring *ring;

static double now_ns(void)
{
	struct timespec ts;
	clock_gettime(CLOCK_MONOTONIC, &ts);
	return ts.tv_sec * 1e9 + ts.tv_nsec;
}

static uint32_t packet_size(int jumbo, unsigned long i)
{
	unsigned r = (unsigned)(i % 12);
	return jumbo ? JUMBO : r < 7 ? 64 : r < 11 ? 576 : 1500;
}

/* ---- the extbuf peers: a buffer from rte_malloc or glibc, shared info in its tail ---- */

static void rte_free_cb(void *addr, void *opaque)
{
	(void)opaque;
	rte_free(addr);
}

static void glibc_free_cb(void *addr, void *opaque)
{
	(void)opaque;
	free(addr);
}

static struct rte_mbuf *extbuf_alloc(enum variant v, uint32_t size)
{
	struct rte_mbuf *m = rte_pktmbuf_alloc(headers);
	if (m == NULL)
		return NULL;
	uint32_t total = pf_dpdk_frag_size(size), buf_len = total - PF_DPDK_SHINFO_SIZE;
	void *buf = v == RTE_MALLOC ? rte_malloc(NULL, total, 64) : aligned_alloc(64, (total + 63) & ~63u);
	if (buf == NULL) {
		rte_pktmbuf_free(m);
		return NULL;
	}
	struct rte_mbuf_ext_shared_info *shinfo = (void *)((char *)buf + buf_len);
	shinfo->free_cb = v == RTE_MALLOC ? rte_free_cb : glibc_free_cb;
	shinfo->fcb_opaque = NULL;
	rte_mbuf_ext_refcnt_set(shinfo, 1);
	rte_pktmbuf_attach_extbuf(m, buf, (rte_iova_t)(uintptr_t)buf, (uint16_t)buf_len, shinfo);
	rte_pktmbuf_reset_headroom(m);
	return m;
}

/* n packets of the variant, touched (first and last 8 bytes written); 0 or -1. */
static int alloc_burst(enum variant v, int jumbo, unsigned long seq, struct rte_mbuf **m, unsigned n)
{
	uint32_t sizes[BURST];
	for (unsigned i = 0; i < n; i++)
		sizes[i] = packet_size(jumbo, seq + i);
	if (v == MEMPOOL) {
		if (rte_pktmbuf_alloc_bulk(jumbo ? room9216 : room2048, m, n) != 0)
			return -1;
	} else if (v == PYFRAG) {
		if (pf_dpdk_alloc_bulk(headers, m, sizes, n) != 0)
			return -1;
	} else {
		for (unsigned i = 0; i < n; i++)
			if ((m[i] = extbuf_alloc(v, sizes[i])) == NULL) {
				rte_pktmbuf_free_bulk(m, i);
				return -1;
			}
	}
	for (unsigned i = 0; i < n; i++) {
		char *data = rte_pktmbuf_append(m[i], (uint16_t)sizes[i]);
		memcpy(data, &seq, 8);
		memcpy(data + sizes[i] - 8, &seq, 8);
	}
	return 0;
}

/* ---- burst: one lcore --------------------------------------------------------- */

static unsigned long whole_bursts(unsigned long packets)
{
	return (packets + BURST - 1) / BURST * BURST;
}

static double burst_ns(enum variant v, int jumbo, unsigned long packets)
{
	packets = whole_bursts(packets);
	struct rte_mbuf *m[BURST];
	double start = now_ns();
	for (unsigned long seq = 0; seq < packets; seq += BURST) {
		if (alloc_burst(v, jumbo, seq, m, BURST) != 0) {
			fprintf(stderr, "bench_dpdk: %s: allocation failed\n", variant_names[v]);
			exit(1);
		}
		rte_pktmbuf_free_bulk(m, BURST);
	}
	return (now_ns() - start) / (double)packets;
}

/* ---- pipeline: main lcore -> ring -> worker lcore ---------------------------- */

struct consumer {
	unsigned long packets;
	unsigned long sum; /* what the bytes read add up to, so the reads stay */
};

static int consume(void *arg)
{
	struct consumer *c = arg;
	unsigned long got = 0, sum = 0;
	while (got < c->packets) {
		struct rte_mbuf *m[BURST];
		unsigned n = rte_ring_sc_dequeue_burst(ring, (void **)m, BURST, NULL);
		for (unsigned i = 0; i < n; i++)
			sum += *rte_pktmbuf_mtod(m[i], unsigned char *);
		rte_pktmbuf_free_bulk(m, n);
		got += n;
	}
	pf_dpdk_lcore_flush(NULL, 0);
	__atomic_store_n(&c->sum, sum, __ATOMIC_RELEASE);
	return 0;
}

static double pipeline_ns(enum variant v, int jumbo, unsigned long packets, unsigned worker)
{
	static struct consumer c;
	packets = whole_bursts(packets);
	c.packets = packets;
	struct rte_mbuf *m[BURST];
	double start = now_ns();
	rte_eal_remote_launch(consume, &c, worker);
	for (unsigned long seq = 0; seq < packets; seq += BURST) {
		while (alloc_burst(v, jumbo, seq, m, BURST) != 0)
			rte_pause(); /* every buffer is in flight: wait for the consumer */
		unsigned queued = 0;
		while (queued < BURST)
			queued += rte_ring_sp_enqueue_burst(ring, (void **)m + queued, BURST - queued, NULL);
	}
	rte_eal_wait_lcore(worker);
	return (now_ns() - start) / (double)packets;
}

/* ---- memory per packet in flight ---------------------------------------------- */

static size_t element_size(const struct rte_mempool *pool)
{
	return pool->header_size + pool->elt_size + pool->trailer_size;
}

static size_t buffer_bytes(enum variant v)
{
	if (v == PYFRAG) {
		pf_stats_t s;
		pf_stats_get(&s, sizeof(s));
		return s.pages_in_use * PF_PAGE_SIZE;
	}
	if (v == RTE_MALLOC) {
		struct rte_malloc_socket_stats s;
		rte_malloc_get_socket_stats((int)rte_socket_id(), &s);
		return s.heap_allocsz_bytes;
	}
	return mallinfo2().uordblks;
}

static double bytes_per_packet(enum variant v, int jumbo)
{
	static struct rte_mbuf *held[HELD];
	if (v == MEMPOOL)
		return (double)element_size(jumbo ? room9216 : room2048);
	pf_dpdk_lcore_flush(NULL, 0);
	size_t before = buffer_bytes(v);
	for (unsigned i = 0; i < HELD; i += BURST)
		if (alloc_burst(v, jumbo, i, held + i, BURST) != 0) {
			fprintf(stderr, "bench_dpdk: %s: cannot hold %u packets\n", variant_names[v], HELD);
			exit(1);
		}
	size_t after = buffer_bytes(v);
	rte_pktmbuf_free_bulk(held, HELD);
	pf_dpdk_lcore_flush(NULL, 0);
	return (double)element_size(headers) + (double)(after - before) / HELD;
}

int main(int argc, char **argv)
{
	int used = rte_eal_init(argc, argv);
	if (used < 0) {
		fprintf(stderr, "bench_dpdk: rte_eal_init: %s\n", rte_strerror(rte_errno));
		return 2;
	}
	char *end = NULL;
	unsigned long packets = used + 1 < argc ? strtoul(argv[used + 1], &end, 10) : 0;
	unsigned worker = rte_get_next_lcore(-1, 1, 0);
	if (packets == 0 || *end != '\0' || worker >= RTE_MAX_LCORE) {
		fprintf(stderr, "usage: bench_dpdk EAL-ARGS(-l 0-1 ...) -- PACKETS\n");
		return 2;
	}
	const char *only_variant = used + 2 < argc ? argv[used + 2] : NULL;
	const char *only_case = used + 3 < argc ? argv[used + 3] : NULL;
	packets = (packets + 4 * BURST - 1) / (4 * BURST) * (4 * BURST); /* jumbo runs a quarter */
	int socket = (int)rte_socket_id();
	headers = pf_dpdk_pool_create("bench_headers", POOL_SIZE, 256, socket);
	room2048 = rte_pktmbuf_pool_create("bench_2048", POOL_SIZE, 256, 0, RTE_MBUF_DEFAULT_BUF_SIZE, socket);
	room9216 = rte_pktmbuf_pool_create("bench_9216", HELD + 1024, 256, 0, JUMBO_ROOM, socket);
	ring = rte_ring_create("bench_ring", 1024, socket, RING_F_SP_ENQ | RING_F_SC_DEQ);
	if (headers == NULL || room2048 == NULL || room9216 == NULL || ring == NULL) {
		fprintf(stderr, "bench_dpdk: set-up: %s (give EAL more memory: -m)\n", rte_strerror(rte_errno));
		return 2;
	}
	for (int jumbo = 0; jumbo < 2; jumbo++) {
		double bytes[VARIANTS];
		for (int v = 0; v < VARIANTS; v++)
			bytes[v] = bytes_per_packet((enum variant)v, jumbo);
		for (int pipeline = 0; pipeline < 2; pipeline++) {
			const char *name = jumbo ? (pipeline ? "jumbo-pipeline" : "jumbo-burst")
						 : (pipeline ? "imix-pipeline" : "imix-burst");
			unsigned long n = jumbo ? packets / 4 : packets;
			if (only_case != NULL && strcmp(only_case, name) != 0)
				continue;
			for (int v = 0; v < VARIANTS; v++) { /* warm-up: fault in what each one uses */
				if (only_variant != NULL && strcmp(only_variant, variant_names[v]) != 0)
					continue;
				if (pipeline)
					pipeline_ns((enum variant)v, jumbo, n / 2, worker);
				else
					burst_ns((enum variant)v, jumbo, n / 2);
			}
			for (int v = 0; v < VARIANTS; v++) {
				if (only_variant != NULL && strcmp(only_variant, variant_names[v]) != 0)
					continue;
				double ns = pipeline ? pipeline_ns((enum variant)v, jumbo, n, worker)
						     : burst_ns((enum variant)v, jumbo, n);
				pf_dpdk_lcore_flush(NULL, 0);
				printf("result dpdk %s %s ns_per_op %.2f bytes_per_pkt %.0f\n", name,
				       variant_names[v], ns, bytes[v]);
				fflush(stdout);
			}
		}
	}
	pf_stats_t s;
	pf_stats_get(&s, sizeof(s));
	int ok = s.allocs == s.frees && rte_mempool_avail_count(headers) == POOL_SIZE;
	if (!ok)
		fprintf(stderr, "bench_dpdk: not every buffer came back (allocs %llu frees %llu)\n",
			(unsigned long long)s.allocs, (unsigned long long)s.frees);
	rte_eal_cleanup();
	return ok ? 0 : 1;
}
