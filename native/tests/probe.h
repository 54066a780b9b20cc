/* SPDX-License-Identifier: GPL-2.0-only */
/*
 * Shorthands the C tests use to look at the library: a stats snapshot, a
 * cache's state, a page's state (failing the test if the query fails).
 */
#ifndef PF_PROBE_H
#define PF_PROBE_H

#include "check.h"
#include "pyfrag.h"

#include <string.h>

static inline pf_stats_t stats(void)
{
	pf_stats_t s;
	pf_stats_get(&s, sizeof(s));
	return s;
}

static inline pf_cache_info_t cache_info(pf_cache_t *c)
{
	pf_cache_info_t info;
	memset(&info, 0, sizeof(info));
	CHECK_EQ(pf_cache_query(c, &info), 0);
	return info;
}

static inline pf_page_info_t page_info(const void *addr)
{
	pf_page_info_t info;
	memset(&info, 0, sizeof(info));
	CHECK_EQ(pf_page_query(addr, &info), 0);
	return info;
}

#endif
