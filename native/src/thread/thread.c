/* SPDX-License-Identifier: GPL-2.0-only */
/*
 * Per-thread state: the thread's default cache, its page lists and its free
 * counters, made on the thread's first pyfrag call and found through one
 * initial-exec TLS pointer. At thread exit (a pthread key destructor) the
 * cache is drained, the page lists go back to the buddy allocator and the
 * counters are folded into the retired totals, so short-lived threads leave
 * nothing behind; the layers above give back their own per-thread things in
 * hooks run there. Also the registry of live caches and threads that stats
 * walks (under pf__meta_lock), and the private page source: page_frag's
 * caches refill from the page allocator through the calling thread's page
 * lists, and a page freed goes onto the freeing thread's.
 *
 * A thread that has been torn down never gets a state again: glibc frees
 * some of its own thread-local buffers after every key destructor has run
 * (__libc_thread_freeres), and a state made for such a free would have no
 * destructor left to give it back. pf__thread() returns NULL there, and every
 * caller already has a path without a state (an eager page-reference drop,
 * the global buddy lists, a page run for a small malloc).
 */
#include "thread/thread.h"

#include <errno.h>

PF_TLS struct pf_thread *pf__self;
/* set by the teardown: this thread's destructor has run, make no state for it again */
static PF_TLS bool torn_down;

struct pf_cache *pf__live_caches;
struct pf_thread *pf__live_threads;
uint64_t pf__live_cache_count, pf__live_thread_count;

static struct pf_pool thread_pool = { .object_size = sizeof(struct pf_thread) };
static pthread_key_t exit_key;

void pf__cache_register(struct pf_cache *cache)
{
	cache->prev_live = NULL;
	cache->next_live = pf__live_caches;
	if (pf__live_caches)
		pf__live_caches->prev_live = cache;
	pf__live_caches = cache;
	pf__live_cache_count++;
}

void pf__cache_unregister(struct pf_cache *cache)
{
	if (cache->prev_live)
		cache->prev_live->next_live = cache->next_live;
	else
		pf__live_caches = cache->next_live;
	if (cache->next_live)
		cache->next_live->prev_live = cache->prev_live;
	pf__live_cache_count--;
	pf__count(PF_CTR_RETIRED_ALLOCS, atomic_load_explicit(&cache->allocs, memory_order_relaxed));
	pf__count(PF_CTR_RETIRED_BIAS_FREES,
		  atomic_load_explicit(&cache->bias_frees, memory_order_relaxed));
}

static void on_thread_exit(void *unused)
{
	(void)unused;
	pf__thread_teardown();
}

/* ---- the private page source: the page allocator through this thread's lists ---- */

static struct pf_pcp *my_pcp(void)
{
	struct pf_thread *self = pf__self;
	return self ? &self->pcp : NULL;
}

static struct pf_page *private_alloc(void *arg, unsigned order, unsigned gfp)
{
	(void)arg;
	return pf__pages_alloc(my_pcp(), order, gfp);
}

static uintptr_t private_address(void *arg, const struct pf_page *page)
{
	(void)arg;
	return (uintptr_t)pf__page_address(page);
}

static void private_release(struct pf_page *head)
{
	pf__pages_free(my_pcp(), head);
}

static void private_count(void *arg, const struct pf_page *page, enum pf_counter c)
{
	(void)arg;
	(void)page;
	pf__count(c, 1);
}

static const struct pf_page_source private_source = {
	.alloc = private_alloc,
	.address = private_address,
	.release = private_release,
	.count = private_count,
};

/* ---- give-back hooks ----------------------------------------------------------- */

static struct pf_hooks give_back_hooks = PF_HOOKS_INIT;

int pf__thread_on_give_back(void (*hook)(void *thread))
{
	return pf__hooks_add(&give_back_hooks, hook);
}

int pf__thread_init(void)
{
	int err = pthread_key_create(&exit_key, on_thread_exit);
	if (err) {
		errno = err;
		return -1;
	}
	pf__frag_set_source(PF_SOURCE_PRIVATE, &private_source);
	pf__slab_init();
	return 0;
}

struct pf_thread *pf__thread_setup(void)
{
	if (PF_UNLIKELY(torn_down))
		return pf__fail(ESRCH, "this thread has exited: pyfrag keeps no state for it");
	pthread_mutex_lock(&pf__meta_lock);
	struct pf_thread *t = pf__pool_get(&thread_pool);
	if (t) {
		pf__frag_cache_init(&t->cache, PF_SOURCE_PRIVATE, NULL);
		pf__frag_cache_init(&t->spare, PF_SOURCE_PRIVATE, NULL);
		for (int slot = 0; slot < PF_PCP_ORDERS; slot++)
			t->pcp.head[slot] = PF_NIL;
		pf__slab_heap_init(&t->slab, &t->pcp);
		pf__cache_register(&t->cache);
		t->next_live = pf__live_threads;
		if (pf__live_threads)
			pf__live_threads->prev_live = t;
		pf__live_threads = t;
		pf__live_thread_count++;
	}
	pthread_mutex_unlock(&pf__meta_lock);
	if (!t)
		return pf__fail(ENOMEM, "no memory for this thread's pyfrag state");
	pf__self = t;
	pthread_setspecific(exit_key, t);
	return t;
}

/*
 * Take a thread state off the registry, keeping its counts (caller holds
 * pf__meta_lock). reuse: its memory may serve another thread; not so for a
 * state fork left behind, whose slab pages still name it as their owner.
 */
static void thread_unregister(struct pf_thread *t, bool reuse)
{
	pf__cache_unregister(&t->cache);
	if (t->prev_live)
		t->prev_live->next_live = t->next_live;
	else
		pf__live_threads = t->next_live;
	if (t->next_live)
		t->next_live->prev_live = t->prev_live;
	pf__live_thread_count--;
	pf__count(PF_CTR_RETIRED_FREES, atomic_load_explicit(&t->frees, memory_order_relaxed));
	pf__count(PF_CTR_RETIRED_MALLOC_SMALL,
		  atomic_load_explicit(&t->malloc_small, memory_order_relaxed));
	pf__count(PF_CTR_RETIRED_MALLOC_MEDIUM,
		  atomic_load_explicit(&t->malloc_medium, memory_order_relaxed));
	if (reuse)
		pf__pool_put(&thread_pool, t);
}

void pf__thread_give_back(struct pf_thread *t)
{
	pf__frag_put_flush(&t->put);
	pf__frag_drain(&t->cache);
	pf__frag_drain(&t->spare);
	pf__hooks_run(&give_back_hooks, t);
	pf__pcp_flush(&t->pcp);
}

void pf__thread_teardown(void)
{
	struct pf_thread *t = pf__self;
	torn_down = true;
	if (!t)
		return;
	pf__thread_give_back(t);
	pf__slab_heap_abandon(&t->slab);
	pf__pcp_flush(&t->pcp); /* what the abandon gave back */
	pf__self = NULL;
	pthread_mutex_lock(&pf__meta_lock);
	thread_unregister(t, true);
	pthread_mutex_unlock(&pf__meta_lock);
}

/*
 * In a fork child only the forking thread exists. The others' states are
 * taken off the registry but not drained: fork may have caught one in the
 * middle of its lock-free fast path, so its cache and page lists cannot be
 * trusted; their pages (one frag page and the page lists per thread, their
 * slab pages) stay out of use in the child, and so do the states themselves.
 */
void pf__thread_forget_others(void)
{
	pthread_mutex_lock(&pf__meta_lock);
	struct pf_thread *t = pf__live_threads;
	while (t) {
		struct pf_thread *next = t->next_live;
		if (t != pf__self)
			thread_unregister(t, false);
		t = next;
	}
	pthread_mutex_unlock(&pf__meta_lock);
}
