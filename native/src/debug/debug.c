/* SPDX-License-Identifier: GPL-2.0-only */
/*
 * Fault injection (pyfrag_debug.h): wrappers around the OS table (pf__os)
 * that fail chosen calls with ENOMEM, for tests of what the layers above do
 * when the kernel refuses.
 *
 * Contract:
 * - Nothing is wrapped until a site is first armed (by a call or by a
 *   PYFRAG_FAULT_* variable at load time); from then on the wrappers stay
 *   in the table and cost one relaxed atomic load per OS call when disarmed.
 * - The table is swapped once, holding pf__shared_lock, pf__init_lock,
 *   pf__meta_lock and pf__page_lock (the fork handlers' order): every reader
 *   of pf__os holds one of them, so no call sees a half-written table.
 * - A failed call does nothing but set errno: the OS is never asked.
 */
#include "api/api.h"
#include "pyfrag_debug.h"

#include <errno.h>

struct fault {
	_Atomic uint64_t every; /* 0: disarmed */
	_Atomic int64_t left;   /* failures still to inject; negative: no cap */
	_Atomic uint64_t calls;
	_Atomic uint64_t failures;
};

static struct fault faults[PF_FAULT_SITES];
static struct pf_os_ops real; /* the table as os.c made it */
static bool installed;        /* under all four locks */

static const char *const site_names[PF_FAULT_SITES] = {
	"reserve", "commit", "decommit", "madvise", "meta", "shared",
};

/* Count a call at site; true if this one must fail. */
static bool inject(enum pf_fault_site site)
{
	struct fault *f = &faults[site];
	uint64_t every = atomic_load_explicit(&f->every, memory_order_relaxed);
	if (PF_LIKELY(every == 0))
		return false;
	uint64_t n = atomic_fetch_add_explicit(&f->calls, 1, memory_order_relaxed) + 1;
	if (n % every)
		return false;
	int64_t left = atomic_load_explicit(&f->left, memory_order_relaxed);
	while (left > 0 && !atomic_compare_exchange_weak(&f->left, &left, left - 1))
		;
	if (left == 0)
		return false;
	atomic_fetch_add_explicit(&f->failures, 1, memory_order_relaxed);
	errno = ENOMEM;
	return true;
}

static void *fault_reserve(size_t size, size_t align)
{
	return inject(PF_FAULT_RESERVE) ? NULL : real.reserve(size, align);
}

static int fault_commit(void *addr, size_t size, enum pf_backing backing)
{
	return inject(PF_FAULT_COMMIT) ? -1 : real.commit(addr, size, backing);
}

static int fault_decommit(void *addr, size_t size)
{
	return inject(PF_FAULT_DECOMMIT) ? -1 : real.decommit(addr, size);
}

static int fault_advise(void *addr, size_t size, int advice)
{
	return inject(PF_FAULT_MADVISE) ? -1 : real.advise(addr, size, advice);
}

static void *fault_map_meta(size_t size)
{
	return inject(PF_FAULT_META) ? NULL : real.map_meta(size);
}

static void *fault_map_shared(void *addr, size_t size, int prot, int fd)
{
	return inject(PF_FAULT_SHARED) ? NULL : real.map_shared(addr, size, prot, fd);
}

static void install(void)
{
	pthread_mutex_lock(&pf__shared_lock);
	pthread_mutex_lock(&pf__init_lock);
	pthread_mutex_lock(&pf__meta_lock);
	pthread_mutex_lock(&pf__page_lock);
	if (!installed) {
		real = pf__os;
		pf__os.reserve = fault_reserve;
		pf__os.commit = fault_commit;
		pf__os.decommit = fault_decommit;
		pf__os.advise = fault_advise;
		pf__os.map_meta = fault_map_meta;
		pf__os.map_shared = fault_map_shared;
		installed = true; /* unmap stays the real one: nothing to learn from a refused munmap */
	}
	pthread_mutex_unlock(&pf__page_lock);
	pthread_mutex_unlock(&pf__meta_lock);
	pthread_mutex_unlock(&pf__init_lock);
	pthread_mutex_unlock(&pf__shared_lock);
}

static bool valid_site(int site)
{
	if (site >= 0 && site < PF_FAULT_SITES)
		return true;
	pf__fail(EINVAL, "unknown fault site (see enum pf_fault_site in pyfrag_debug.h)");
	return false;
}

int pf_debug_fault_set(int site, uint64_t every, int64_t times)
{
	if (!valid_site(site))
		return -1;
	struct fault *f = &faults[site];
	if (every)
		install();
	atomic_store(&f->every, 0); /* quiet while the rest changes */
	atomic_store(&f->calls, 0);
	atomic_store(&f->failures, 0);
	atomic_store(&f->left, times);
	atomic_store(&f->every, every);
	return 0;
}

int pf_debug_fail_commit(uint64_t every)
{
	return pf_debug_fault_set(PF_FAULT_COMMIT, every, -1);
}

int pf_debug_fault_get(int site, uint64_t *calls, uint64_t *failures)
{
	if (!valid_site(site))
		return -1;
	if (calls)
		*calls = atomic_load(&faults[site].calls);
	if (failures)
		*failures = atomic_load(&faults[site].failures);
	return 0;
}

const char *pf_debug_fault_name(int site)
{
	return site >= 0 && site < PF_FAULT_SITES ? site_names[site] : NULL;
}

/* ---- PYFRAG_FAULT_<SITE>=N[:T] at load time ------------------------------------ */

static const char *parse_u64(const char *text, uint64_t *out)
{
	if (*text < '0' || *text > '9')
		return NULL;
	uint64_t value = 0;
	for (; *text >= '0' && *text <= '9'; text++) {
		if (value > (UINT64_MAX - 9) / 10)
			return NULL;
		value = value * 10 + (uint64_t)(*text - '0');
	}
	*out = value;
	return text;
}

__attribute__((constructor)) static void fault_env(void)
{
	static const char *const vars[PF_FAULT_SITES] = {
		"PYFRAG_FAULT_RESERVE", "PYFRAG_FAULT_COMMIT", "PYFRAG_FAULT_DECOMMIT",
		"PYFRAG_FAULT_MADVISE", "PYFRAG_FAULT_META", "PYFRAG_FAULT_SHARED",
	};
	for (int site = 0; site < PF_FAULT_SITES; site++) {
		const char *text = pf__env_value(vars[site]);
		uint64_t every = 0, times = 0;
		if (!text || !(text = parse_u64(text, &every)))
			continue;
		if (*text == ':' && (text = parse_u64(text + 1, &times)) && times <= INT64_MAX && !*text)
			pf_debug_fault_set(site, every, (int64_t)times);
		else if (text && !*text)
			pf_debug_fault_set(site, every, -1);
	}
}

/* ---- shared arenas --------------------------------------------------------------- */

int pf_debug_shared_hold_lock(struct pf_shared *arena)
{
	if (!arena || pf_shared_stats(arena, &(pf_shared_stats_t){ 0 }, sizeof(uint64_t)) != 0) {
		pf__fail(EINVAL, "not an attached shared arena");
		return -1;
	}
	pf__shared_lock_header(arena->header);
	return 0;
}
