// SPDX-License-Identifier: GPL-2.0-only
/*
 * The IOVA of a pyfrag buffer (pyfrag_dpdk.h): the address itself when EAL
 * runs IOVA-as-VA, else the memseg DPDK keeps for it (its own memory, or a
 * shared arena registered as external memory), when the bytes lie in one.
 */
#include <errno.h>

#include <rte_eal.h>
#include <rte_memory.h>

#include "pyfrag_dpdk.h"

rte_iova_t pf_dpdk_iova(const void *addr, size_t len)
{
	if (rte_eal_iova_mode() == RTE_IOVA_VA)
		return (rte_iova_t)(uintptr_t)addr;
	const struct rte_memseg *seg = rte_mem_virt2memseg(addr, NULL);
	uintptr_t start = (uintptr_t)addr;
	if (seg == NULL || seg->iova == RTE_BAD_IOVA || len == 0 ||
	    start + len > (uintptr_t)seg->addr + seg->len) {
		errno = ENOENT;
		return RTE_BAD_IOVA;
	}
	return seg->iova + (start - (uintptr_t)seg->addr);
}
