// SPDX-License-Identifier: GPL-2.0-only
/*
 * A shared arena as DPDK external memory (pyfrag_dpdk.h): the whole mapping
 * (allocated at creation, at the same address in every process) registered
 * with rte_extmem_register by the primary, attached by secondaries, and
 * DMA-mapped for every ethdev whose bus supports it.
 */
#include <errno.h>
#include <stdlib.h>

#include <rte_dev.h>
#include <rte_eal.h>
#include <rte_errno.h>
#include <rte_ethdev.h>
#include <rte_memory.h>

#include "pyfrag_dpdk.h"

#define HUGE_PAGE_SIZE (2u * 1024u * 1024u)

struct mapping {
	void *base;
	size_t len;
	size_t page_size;
};

static int arena_mapping(const pf_shared_t *arena, struct mapping *out)
{
	pf_shared_stats_t stats;
	if (arena == NULL) {
		errno = EINVAL;
		return -1;
	}
	if (pf_shared_stats(arena, &stats, sizeof(stats)) != 0)
		return -1;
	out->base = (void *)(uintptr_t)stats.base;
	out->len = stats.map_bytes;
	out->page_size = stats.backing == PF_SHARED_BACKING_HUGETLB ? HUGE_PAGE_SIZE : PF_PAGE_SIZE;
	return 0;
}

/* PA mode: each page's physical address (pagemap; root only). NULL in VA mode or on failure. */
static rte_iova_t *physical_addresses(const struct mapping *map, unsigned *n_pages)
{
	*n_pages = (unsigned)(map->len / map->page_size);
	if (rte_eal_iova_mode() != RTE_IOVA_PA)
		return NULL;
	rte_iova_t *iova = calloc(*n_pages, sizeof(*iova));
	for (unsigned i = 0; iova != NULL && i < *n_pages; i++)
		iova[i] = rte_mem_virt2phy((char *)map->base + (size_t)i * map->page_size);
	return iova;
}

/* rte_dev_dma_map (map) or unmap on every ethdev; vdevs' buses have none (ENOTSUP). */
static int dma_each_device(const struct mapping *map, int map_it)
{
	int mapped = 0;
	uint16_t port;
	RTE_ETH_FOREACH_DEV(port) {
		struct rte_eth_dev_info info;
		if (rte_eth_dev_info_get(port, &info) != 0 || info.device == NULL)
			continue;
		uint64_t iova = (uint64_t)pf_dpdk_iova(map->base, 1);
		int rc = map_it ? rte_dev_dma_map(info.device, map->base, iova, map->len)
				: rte_dev_dma_unmap(info.device, map->base, iova, map->len);
		if (rc == 0)
			mapped++;
		else if (rte_errno != ENOTSUP && rc != -ENOTSUP) {
			errno = rte_errno ? rte_errno : -rc;
			return -1;
		}
	}
	return mapped;
}

int pf_dpdk_shared_register(pf_shared_t *arena)
{
	struct mapping map;
	if (arena_mapping(arena, &map) != 0)
		return -1;
	int rc;
	if (rte_eal_process_type() == RTE_PROC_PRIMARY) {
		unsigned n_pages;
		rte_iova_t *iova = physical_addresses(&map, &n_pages);
		rc = rte_extmem_register(map.base, map.len, iova, iova ? n_pages : 0, map.page_size);
		free(iova);
	} else {
		rc = rte_extmem_attach(map.base, map.len);
	}
	if (rc != 0) {
		errno = rte_errno;
		return -1;
	}
	int mapped = dma_each_device(&map, 1);
	if (mapped < 0) {
		int saved = errno;
		pf_dpdk_shared_unregister(arena);
		errno = saved;
	}
	return mapped;
}

int pf_dpdk_shared_unregister(pf_shared_t *arena)
{
	struct mapping map;
	if (arena_mapping(arena, &map) != 0)
		return -1;
	dma_each_device(&map, 0);
	int rc = rte_eal_process_type() == RTE_PROC_PRIMARY ? rte_extmem_unregister(map.base, map.len)
							   : rte_extmem_detach(map.base, map.len);
	if (rc != 0) {
		errno = rte_errno;
		return -1;
	}
	return 0;
}
