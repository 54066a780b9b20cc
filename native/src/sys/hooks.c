/* SPDX-License-Identifier: GPL-2.0-only */
/*
 * Hook lists (sys.h): how a lower layer calls into the layers above without
 * knowing them. A layer owns a list, the layers above add to it once, the
 * owner runs it. Lists are short and never shrink, so running one is a load
 * of the count and the calls, safe from any thread.
 */
#include "sys/sys.h"

#include <errno.h>

int pf__hooks_add(struct pf_hooks *hooks, void (*fn)(void *arg))
{
	int ret = 0;
	pthread_mutex_lock(&hooks->lock);
	unsigned n = atomic_load_explicit(&hooks->count, memory_order_relaxed);
	bool known = false;
	for (unsigned i = 0; i < n; i++)
		known |= hooks->fn[i] == fn;
	if (!known && n < PF_HOOKS_MAX) {
		hooks->fn[n] = fn;
		atomic_store_explicit(&hooks->count, n + 1, memory_order_release);
	} else if (!known) {
		pf__fail(ENOSPC, "too many hooks on one list");
		ret = -1;
	}
	pthread_mutex_unlock(&hooks->lock);
	return ret;
}

void pf__hooks_run(struct pf_hooks *hooks, void *arg)
{
	unsigned n = atomic_load_explicit(&hooks->count, memory_order_acquire);
	for (unsigned i = 0; i < n; i++)
		hooks->fn[i](arg);
}
