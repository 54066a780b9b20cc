// SPDX-License-Identifier: GPL-2.0-only
/*
 * A DPDK pipeline whose packet buffers are pyfrag fragments (pyfrag_dpdk.h):
 * the main lcore generates imix packets (64/576/1500 at 7:4:1) into mbufs
 * with pyfrag buffers, clones every 8th (both go out), and hands them
 * through an rte_ring to a worker lcore, which checks each packet's bytes
 * and transmits on port 0 (a vdev: net_null, net_ring or net_pcap; on
 * net_ring what goes out comes back in and is freed after RX). Bounded by
 * --packets and --seconds. At the end both lcores flush (EAL workers never
 * exit) and it checks that every fragment came back (pyfrag's stats) and
 * every mbuf is back in its pool; exit 0 only then.
 *
 *   dpdk_pipeline --no-huge --no-pci --no-shconf -l 0-1 --vdev net_null0 \
 *       -- --packets 200000 --seconds 10 [--leak N]
 *
 * --leak N keeps N packets back on purpose (what pyfrag stress --workload dpdk
 * must catch). Prints "name value" lines, then "all back" or what is missing.
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <rte_cycles.h>
#include <rte_eal.h>
#include <rte_errno.h>
#include <rte_ethdev.h>
#include <rte_launch.h>
#include <rte_lcore.h>
#include <rte_ring.h>

#include "pyfrag_dpdk.h"

#define POOL_SIZE 8191u
#define BURST 32u
#define CLONE_EVERY 8u
#define MAX_LEAK 64u

struct pipeline {
	struct rte_ring *ring;
	struct rte_mempool *headers;
	unsigned long packets, seconds, leak;
	/* written by the worker, read by main after the wait (atomics: EAL's wait is opaque) */
	unsigned long transmitted, received, corrupt;
	unsigned done; /* main: nothing more will come */
	int loops_back; /* net_ring: TX comes back on RX (net_null's RX makes packets of its own) */
	struct rte_mbuf *leaked[MAX_LEAK];
};

static uint32_t imix_size(unsigned long i)
{
	unsigned r = (unsigned)(i % 12);
	return r < 7 ? 64 : r < 11 ? 576 : 1500;
}

/* Each packet carries its number in its first 8 bytes and a pattern after. */
static void stamp(struct rte_mbuf *m, unsigned long seq, uint32_t size)
{
	unsigned char *data = rte_pktmbuf_mtod(m, unsigned char *);
	rte_pktmbuf_append(m, (uint16_t)size);
	memcpy(data, &seq, sizeof(seq));
	for (uint32_t i = sizeof(seq); i < size; i++)
		data[i] = (unsigned char)(seq + i);
}

static int intact(const struct rte_mbuf *m)
{
	const unsigned char *data = rte_pktmbuf_mtod(m, const unsigned char *);
	unsigned long seq;
	memcpy(&seq, data, sizeof(seq));
	if (rte_pktmbuf_pkt_len(m) != imix_size(seq))
		return 0;
	for (uint32_t i = sizeof(seq); i < rte_pktmbuf_pkt_len(m); i++)
		if (data[i] != (unsigned char)(seq + i))
			return 0;
	return 1;
}

static void drain_rx(struct pipeline *p, uint16_t port)
{
	struct rte_mbuf *rx[BURST];
	unsigned n;
	while (p->loops_back && (n = rte_eth_rx_burst(port, 0, rx, BURST)) > 0) {
		for (unsigned i = 0; i < n; i++)
			if (!intact(rx[i]))
				p->corrupt++;
		rte_pktmbuf_free_bulk(rx, n);
		p->received += n;
	}
}

static int worker(void *arg)
{
	struct pipeline *p = arg;
	unsigned long transmitted = 0;
	for (;;) {
		struct rte_mbuf *burst[BURST];
		unsigned n = rte_ring_dequeue_burst(p->ring, (void **)burst, BURST, NULL);
		if (n == 0) {
			if (__atomic_load_n(&p->done, __ATOMIC_ACQUIRE) && rte_ring_empty(p->ring))
				break;
			drain_rx(p, 0);
			continue;
		}
		for (unsigned i = 0; i < n; i++)
			if (!intact(burst[i]))
				p->corrupt++;
		unsigned sent = 0;
		while (sent < n) {
			sent += rte_eth_tx_burst(0, 0, burst + sent, (uint16_t)(n - sent));
			drain_rx(p, 0);
		}
		transmitted += n;
	}
	drain_rx(p, 0);
	pf_dpdk_lcore_flush(NULL, 0); /* the worker never exits: give its pages back now */
	__atomic_store_n(&p->transmitted, transmitted, __ATOMIC_RELEASE);
	return 0;
}

static void generate(struct pipeline *p)
{
	uint64_t stop = rte_get_timer_cycles() + p->seconds * rte_get_timer_hz();
	unsigned long seq = 0;
	while (seq < p->packets && rte_get_timer_cycles() < stop) {
		struct rte_mbuf *burst[BURST + BURST / CLONE_EVERY];
		uint32_t sizes[BURST];
		unsigned n = 0;
		for (; n < BURST && seq + n < p->packets; n++)
			sizes[n] = imix_size(seq + n);
		if (pf_dpdk_alloc_bulk(p->headers, burst, sizes, n) != 0) {
			rte_pause(); /* the pool is out: the worker is behind */
			continue;
		}
		unsigned total = n;
		for (unsigned i = 0; i < n; i++) {
			stamp(burst[i], seq + i, sizes[i]);
			if ((seq + i) % CLONE_EVERY == 0) {
				struct rte_mbuf *clone = rte_pktmbuf_clone(burst[i], p->headers);
				if (clone != NULL)
					burst[total++] = clone;
			}
		}
		for (unsigned i = 0; i < total && p->leak > 0; i++) { /* --leak: keep some back */
			if (burst[i]->refcnt == 1 && !RTE_MBUF_CLONED(burst[i])) {
				p->leaked[--p->leak] = burst[i];
				burst[i] = burst[--total];
			}
		}
		unsigned queued = 0;
		while (queued < total)
			queued += rte_ring_enqueue_burst(p->ring, (void **)burst + queued, total - queued, NULL);
		seq += n;
	}
	p->packets = seq;
	__atomic_store_n(&p->done, 1, __ATOMIC_RELEASE);
}

static int port_start(struct rte_mempool *rx_pool)
{
	struct rte_eth_conf conf;
	memset(&conf, 0, sizeof(conf));
	if (rte_eth_dev_count_avail() < 1 || rte_eth_dev_configure(0, 1, 1, &conf) != 0 ||
	    rte_eth_rx_queue_setup(0, 0, 1024, rte_eth_dev_socket_id(0), NULL, rx_pool) != 0 ||
	    rte_eth_tx_queue_setup(0, 0, 1024, rte_eth_dev_socket_id(0), NULL) != 0)
		return -1;
	return rte_eth_dev_start(0);
}

static int parse(struct pipeline *p, int argc, char **argv)
{
	for (int i = 0; i < argc; i++) {
		unsigned long *field = !strcmp(argv[i], "--packets") ? &p->packets
				       : !strcmp(argv[i], "--seconds") ? &p->seconds
				       : !strcmp(argv[i], "--leak") ? &p->leak : NULL;
		char *end;
		if (field == NULL || i + 1 >= argc) {
			fprintf(stderr, "usage: dpdk_pipeline EAL-ARGS -- [--packets N] [--seconds S] [--leak N]\n");
			return -1;
		}
		*field = strtoul(argv[++i], &end, 10);
		if (*end != '\0' || (field == &p->leak && *field > MAX_LEAK)) {
			fprintf(stderr, "dpdk_pipeline: bad value %s for %s\n", argv[i], argv[i - 1]);
			return -1;
		}
	}
	return 0;
}

int main(int argc, char **argv)
{
	static struct pipeline p = {.packets = 100000, .seconds = 10};
	int used = rte_eal_init(argc, argv);
	if (used < 0) {
		fprintf(stderr, "rte_eal_init: %s\n", rte_strerror(rte_errno));
		return 2;
	}
	if (parse(&p, argc - used - 1, argv + used + 1) != 0)
		return 2;
	unsigned lcore = rte_get_next_lcore(-1, 1, 0);
	p.headers = pf_dpdk_pool_create("pipeline_headers", POOL_SIZE, 256, (int)rte_socket_id());
	struct rte_mempool *rx_pool = rte_pktmbuf_pool_create(
		"pipeline_rx", 1023, 32, 0, RTE_MBUF_DEFAULT_BUF_SIZE, (int)rte_socket_id());
	p.ring = rte_ring_create("pipeline", 1024, (int)rte_socket_id(), RING_F_SP_ENQ | RING_F_SC_DEQ);
	if (lcore >= RTE_MAX_LCORE || p.headers == NULL || rx_pool == NULL || p.ring == NULL ||
	    port_start(rx_pool) != 0) {
		fprintf(stderr, "dpdk_pipeline: set-up failed (a worker lcore: -l 0-1; a vdev: "
				"--vdev net_null0): %s\n", rte_strerror(rte_errno));
		return 2;
	}
	struct rte_eth_dev_info info;
	p.loops_back = rte_eth_dev_info_get(0, &info) == 0 && !strcmp(info.driver_name, "net_ring");
	pf_stats_t before;
	pf_stats_get(&before, sizeof(before));
	rte_eal_remote_launch(worker, &p, lcore);
	generate(&p);
	rte_eal_wait_lcore(lcore);
	unsigned long transmitted = __atomic_load_n(&p.transmitted, __ATOMIC_ACQUIRE);
	rte_eth_dev_stop(0);
	rte_eth_dev_close(0);
	pf_dpdk_lcore_flush(NULL, 0);
	pf_trim(); /* empty chunks beyond PYFRAG_RETAIN go back to the OS */

	pf_stats_t after;
	pf_stats_get(&after, sizeof(after));
	unsigned long fragments_out = (unsigned long)((after.allocs - before.allocs) -
						      (after.frees - before.frees));
	unsigned mbufs_out = POOL_SIZE - rte_mempool_avail_count(p.headers);
	printf("packets %lu\n", p.packets);
	printf("transmitted %lu\n", transmitted);
	printf("received %lu\n", p.received);
	printf("corrupt %lu\n", p.corrupt);
	printf("fragments_allocated %llu\n", (unsigned long long)(after.allocs - before.allocs));
	printf("fragments_out %lu\n", fragments_out);
	printf("mbufs_out %u\n", mbufs_out);
	printf("pages_in_use %llu\n", (unsigned long long)after.pages_in_use);
	printf("committed_bytes %llu\n", (unsigned long long)after.committed_bytes);
	printf("peak_committed_bytes %llu\n", (unsigned long long)after.peak_committed_bytes);
	printf("retain_chunks %lld\n", pf_option_get("PYFRAG_RETAIN"));
	int ok = fragments_out == 0 && mbufs_out == 0 && p.corrupt == 0 && after.pages_in_use == 0;
	printf("%s\n", ok ? "all back" : "NOT all back");
	rte_mempool_free(p.headers);
	rte_mempool_free(rx_pool);
	rte_ring_free(p.ring);
	rte_eal_cleanup();
	return ok ? 0 : 1;
}
