/* SPDX-License-Identifier: GPL-2.0-only */
/*
 * preload: libc's allocation names, so that `LD_PRELOAD=libpyfrag.so program`
 * puts every allocation of an unmodified program on pyfrag. The only symbols
 * of the library with default visibility besides the C API.
 *
 * - Only a preloaded library takes over: on the first call the names decide,
 *   once, whether LD_PRELOAD names a libpyfrag. If it does, each name is a
 *   tail call into malloc.c, which initialises pyfrag on that first call,
 *   whenever it comes (the dynamic loader and libc call malloc before any
 *   constructor runs): options are read from environ by hand, the thread
 *   state lives behind one initial-exec TLS pointer and comes from pools.c's
 *   pools, and nothing on the way calls dlsym, getenv or stdio. If it does
 *   not (a program linked against libpyfrag.so for the C API), every name
 *   forwards to glibc's own allocator (__libc_malloc and friends), so such a
 *   program keeps glibc's malloc and its pointers stay glibc's. (A test
 *   program that frees a block another allocator made does that on glibc
 *   too: the forwarding is only for programs that never preload us.)
 * - Thread exit is thread.c's pthread key destructor: the cache is drained and
 *   the page lists go back.
 * - fork: the handlers hold pf__shared_lock, pf__init_lock,
 *   pf__slab_abandoned_lock, pf__meta_lock and pf__page_lock across fork(), so the child never inherits one held by
 *   a thread that does not exist there; the child re-arms them, forgets the
 *   other threads' states, and takes its own place in shared arenas. They are registered by the constructor, not on the allocation
 *   path (pthread_atfork may allocate).
 * - When the library is dlopen'ed (ctypes, RTLD_LOCAL) these names are not in
 *   the global scope and are never called: the process keeps its own malloc.
 *   `preloaded` (for the exit summary) checks both where the process's malloc
 *   resolves and the decision above.
 * - PYFRAG_STATS=1: a summary on stderr at exit, from the preloaded copy.
 */
#include "malloc/malloc.h"

#include <dlfcn.h>
#include <errno.h>
#include <fcntl.h>
#include <malloc.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

/*
 * A sanitizer build of the library is instrumented, and instrumented code
 * cannot run before the sanitizer runtime is up (its shadow memory is not
 * mapped yet), yet the runtime's own start calls malloc. So in such a build
 * the names hand everything to the runtime's allocator (its exported
 * __interceptor_* entry points) until this library's constructor has run
 * (the runtime is one of its dependencies, so it is up by then), and are not
 * instrumented themselves. malloc.c recognises the runtime's blocks later.
 * Elsewhere the other allocator is glibc's, under its __libc_* names.
 */
#ifdef PF_SANITIZED
#define PF_UNINSTRUMENTED __attribute__((no_sanitize("address"), no_sanitize("thread")))
static _Atomic bool runtime_up;
#else
#define PF_UNINSTRUMENTED
#endif

#define PF_EXPORT __attribute__((visibility("default"))) PF_UNINSTRUMENTED

void cfree(void *ptr);
void free_sized(void *ptr, size_t size);
void free_aligned_sized(void *ptr, size_t align, size_t size);


/* ---- whose malloc ----------------------------------------------------------------- */

enum { MODE_UNDECIDED, MODE_PYFRAG, MODE_LIBC };
static _Atomic int mode;

/* Does this LD_PRELOAD list (space or colon separated) name a libpyfrag? */
static bool names_pyfrag(const char *list)
{
	while (list && *list) {
		size_t len = strcspn(list, " :");
		const char *base = list;
		for (const char *p = list; p < list + len; p++)
			if (*p == '/')
				base = p + 1;
		if ((size_t)(list + len - base) >= 9 && strncmp(base, "libpyfrag", 9) == 0)
			return true;
		list += len;
		list += strspn(list, " :");
	}
	return false;
}

static __attribute__((noinline)) bool decide(void)
{
	extern char **environ;
	/* environ is set before the first malloc in practice; if not, assume a preload */
	int want = !environ || names_pyfrag(pf__env_value("LD_PRELOAD")) ? MODE_PYFRAG : MODE_LIBC;
	int expected = MODE_UNDECIDED;
	atomic_compare_exchange_strong(&mode, &expected, want);
	return atomic_load(&mode) == MODE_PYFRAG;
}

static inline PF_UNINSTRUMENTED bool ours(void)
{
	int m = atomic_load_explicit(&mode, memory_order_relaxed);
	if (PF_LIKELY(m == MODE_PYFRAG))
		return true;
#ifdef PF_SANITIZED
	if (!atomic_load_explicit(&runtime_up, memory_order_acquire))
		return false;
#endif
	return m == MODE_UNDECIDED && decide();
}

/* ---- the names ------------------------------------------------------------------------ */

/* The call site the adaptive route learns from: whoever called the exported name. */
#define PF_CALLER ((uintptr_t)__builtin_return_address(0))

PF_EXPORT void *malloc(size_t size)
{
	return ours() ? pf__malloc(size, PF_CALLER) : PF_OTHER(malloc)(size);
}

PF_EXPORT void free(void *ptr)
{
	if (ours())
		pf__free(ptr);
	else
		PF_OTHER(free)(ptr);
}

PF_EXPORT void *calloc(size_t n, size_t size)
{
	return ours() ? pf__calloc(n, size, PF_CALLER) : PF_OTHER(calloc)(n, size);
}

PF_EXPORT void *realloc(void *ptr, size_t size)
{
	return ours() ? pf__realloc(ptr, size, PF_CALLER) : PF_OTHER(realloc)(ptr, size);
}

PF_EXPORT void *reallocarray(void *ptr, size_t n, size_t size)
{
	if (ours())
		return pf__reallocarray(ptr, n, size, PF_CALLER);
	size_t total;
	if (__builtin_mul_overflow(n, size, &total)) {
		errno = ENOMEM;
		return NULL;
	}
	return PF_OTHER(realloc)(ptr, total);
}

PF_EXPORT void cfree(void *ptr)
{
	free(ptr);
}

/* C23; glibc 2.39 has them: programs built against it call these. */
PF_EXPORT void free_sized(void *ptr, size_t size)
{
	(void)size;
	free(ptr);
}

PF_EXPORT void free_aligned_sized(void *ptr, size_t align, size_t size)
{
	(void)align;
	(void)size;
	free(ptr);
}

PF_EXPORT int posix_memalign(void **out, size_t align, size_t size)
{
	if (ours())
		return pf__posix_memalign(out, align, size, PF_CALLER);
	if (align % sizeof(void *) != 0 || align == 0 || (align & (align - 1)) != 0)
		return EINVAL;
	int saved = errno;
	void *ptr = PF_OTHER(memalign)(align, size);
	errno = saved;
	if (!ptr)
		return ENOMEM;
	*out = ptr;
	return 0;
}

PF_EXPORT void *aligned_alloc(size_t align, size_t size)
{
	return ours() ? pf__aligned_alloc(align, size, PF_CALLER) : PF_OTHER(memalign)(align, size);
}

PF_EXPORT void *memalign(size_t align, size_t size)
{
	return ours() ? pf__memalign(align, size, PF_CALLER) : PF_OTHER(memalign)(align, size);
}

PF_EXPORT void *valloc(size_t size)
{
	return ours() ? pf__valloc(size) : PF_OTHER(valloc)(size);
}

PF_EXPORT void *pvalloc(size_t size)
{
	return ours() ? pf__pvalloc(size) : PF_OTHER(pvalloc)(size);
}

PF_EXPORT size_t malloc_usable_size(void *ptr)
{
	if (ours())
		return pf__malloc_usable_size(ptr);
#ifdef PF_SANITIZED
	extern size_t __interceptor_malloc_usable_size(void *ptr);
	return __interceptor_malloc_usable_size(ptr); /* uninstrumented: may run before the runtime */
#else
	return pf__other_usable_size(ptr);
#endif
}

/* ---- C++'s operator new and delete ------------------------------------------------ */

/*
 * Exported so that the adaptive route sees the caller of new, not
 * libstdc++'s operator new (one call site for a whole program). What only
 * C++ can do stays with libstdc++: when pyfrag has no memory (or is not this
 * process's malloc), the call goes on to the next definition, libstdc++'s,
 * which calls malloc again and then runs the new-handler or throws
 * std::bad_alloc (or returns NULL, for the nothrow forms), as the standard
 * says. Found once with dlsym, off the allocation path.
 */
/* The next definition of one operator new, found once (its arguments: size, then align or the nothrow tag). */
static __attribute__((noinline, cold)) void *next_new(const char *name, void *_Atomic *cached)
{
	void *fn = atomic_load_explicit(cached, memory_order_acquire);
	if (!fn) {
		fn = dlsym(RTLD_NEXT, name);
		if (!fn) {
			const char *pieces[] = { "pyfrag: operator new failed and there is no ", name,
						 " after pyfrag's (no libstdc++?) to throw std::bad_alloc\n",
						 NULL };
			pf__write_all(2, pieces);
			abort();
		}
		atomic_store_explicit(cached, fn, memory_order_release);
	}
	return fn;
}

/* params: the C++ parameter list; call: pyfrag's allocation; args: the same list, to pass on */
#define PF_NEW(name, params, call, args)                                                      \
	PF_EXPORT void *name params                                                             \
	{                                                                                       \
		static void *_Atomic next;                                                      \
		if (ours()) {                                                                   \
			void *ptr = call;                                                       \
			if (PF_LIKELY(ptr != NULL))                                             \
				return ptr;                                                     \
		}                                                                               \
		return ((void *(*)params)next_new(#name, &next))args;                           \
	}
#define PF_NEW_PLAIN(name) PF_NEW(name, (size_t size), pf__malloc(size, PF_CALLER), (size))
#define PF_NEW_NOTHROW(name)                                                                  \
	PF_NEW(name, (size_t size, const void *nothrow), pf__malloc(size, PF_CALLER), (size, nothrow))
#define PF_NEW_ALIGNED(name)                                                                  \
	PF_NEW(name, (size_t size, size_t align), pf__memalign(align, size, PF_CALLER), (size, align))
#define PF_NEW_ALIGNED_NOTHROW(name)                                                          \
	PF_NEW(name, (size_t size, size_t align, const void *nothrow),                          \
	       pf__memalign(align, size, PF_CALLER), (size, align, nothrow))

PF_NEW_PLAIN(_Znwm)                                   /* new(size_t) */
PF_NEW_PLAIN(_Znam)                                   /* new[](size_t) */
PF_NEW_NOTHROW(_ZnwmRKSt9nothrow_t)                   /* new(size_t, nothrow_t) */
PF_NEW_NOTHROW(_ZnamRKSt9nothrow_t)                   /* new[](size_t, nothrow_t) */
PF_NEW_ALIGNED(_ZnwmSt11align_val_t)                  /* new(size_t, align_val_t) */
PF_NEW_ALIGNED(_ZnamSt11align_val_t)                  /* new[](size_t, align_val_t) */
PF_NEW_ALIGNED_NOTHROW(_ZnwmSt11align_val_tRKSt9nothrow_t) /* new(size_t, align_val_t, nothrow_t) */
PF_NEW_ALIGNED_NOTHROW(_ZnamSt11align_val_tRKSt9nothrow_t) /* new[](size_t, align_val_t, nothrow_t) */

/*
 * Every delete is free: sizes and alignments are known from the block. The
 * forms with more parameters (size, alignment, nothrow tag) take them in
 * registers the callee may ignore, so one shape serves all.
 */
#define PF_DELETE(name) \
	PF_EXPORT void name(void *ptr) { free(ptr); }
PF_DELETE(_ZdlPv)                               /* delete(void *) */
PF_DELETE(_ZdaPv)                               /* delete[](void *) */
PF_DELETE(_ZdlPvm)                              /* delete(void *, size_t) */
PF_DELETE(_ZdaPvm)                              /* delete[](void *, size_t) */
PF_DELETE(_ZdlPvRKSt9nothrow_t)                 /* delete(void *, nothrow_t) */
PF_DELETE(_ZdaPvRKSt9nothrow_t)                 /* delete[](void *, nothrow_t) */
PF_DELETE(_ZdlPvSt11align_val_t)                /* delete(void *, align_val_t) */
PF_DELETE(_ZdaPvSt11align_val_t)                /* delete[](void *, align_val_t) */
PF_DELETE(_ZdlPvmSt11align_val_t)               /* delete(void *, size_t, align_val_t) */
PF_DELETE(_ZdaPvmSt11align_val_t)               /* delete[](void *, size_t, align_val_t) */
PF_DELETE(_ZdlPvSt11align_val_tRKSt9nothrow_t)  /* delete(void *, align_val_t, nothrow_t) */
PF_DELETE(_ZdaPvSt11align_val_tRKSt9nothrow_t)  /* delete[](void *, align_val_t, nothrow_t) */

/* ---- preloaded or dlopen'ed ----------------------------------------------------- */

/*
 * Our own malloc, reached without the GOT: the process's malloc is ours iff
 * they match. A non-PIE executable that takes malloc's address (Debian's
 * /usr/bin/python3.11) makes its own PLT entry malloc's canonical address, so
 * the GOT gives that stub (dlsym too). Then a call through it tells: a block
 * from pyfrag's arena, or one pyfrag handed to libc (degraded mode), means
 * the calls reach this copy.
 */
extern void *pf__own_malloc(size_t size) __attribute__((alias("malloc"), visibility("hidden"),
	malloc, alloc_size(1), nothrow, leaf));

static bool preloaded;

static bool process_malloc_is_ours(void)
{
	/* a volatile read keeps the compiler from folding the GOT load into a constant */
	void *(*volatile process_malloc)(size_t) = malloc;
	if (process_malloc == pf__own_malloc)
		return true;
	void (*volatile process_free)(void *) = free;
	uint64_t before = atomic_load_explicit(&pf__counters[PF_CTR_LIBC_ALLOCS], memory_order_relaxed);
	void *probe = process_malloc(1);
	bool ours_now = probe && (pf__in_arena(probe) ||
				  atomic_load_explicit(&pf__counters[PF_CTR_LIBC_ALLOCS],
						       memory_order_relaxed) != before);
	process_free(probe);
	return ours_now;
}
static int stats_fd = -1; /* a copy of stderr: programs such as coreutils close fd 2 at exit */

/* ---- fork ------------------------------------------------------------------------------ */

/*
 * With hugetlb chunks (see arena.c, pf__arena_fork_prepare): the prepare
 * handler copies them into memory the child inherits and keeps them out of
 * the child, which puts the copies in place. A chunk that could not be
 * copied is inherited and the child copies it before the parent may write
 * to it: the parent waits for the child to close the write end of this
 * pipe, or for EOF if fork failed.
 */
static bool fork_hugetlb;
static int fork_sync[2] = { -1, -1 };

static void fork_prepare(void)
{
	int saved = errno;
	pthread_mutex_lock(&pf__shared_lock);
	pthread_mutex_lock(&pf__init_lock);
	pthread_mutex_lock(&pf__slab_abandoned_lock);
	pthread_mutex_lock(&pf__meta_lock);
	pthread_mutex_lock(&pf__page_lock);
	fork_hugetlb = atomic_load(&pf__ready) == 1 && pf__arena_has_hugetlb();
	if (fork_hugetlb) {
		pf__arena_fork_prepare();
		if (pipe2(fork_sync, O_CLOEXEC) != 0)
			fork_sync[0] = fork_sync[1] = -1;
	}
	errno = saved;
}

static void fork_parent(void)
{
	int saved = errno;
	if (fork_hugetlb)
		pf__arena_fork_parent();
	if (fork_sync[0] >= 0) {
		char byte;
		close(fork_sync[1]);
		while (read(fork_sync[0], &byte, 1) < 0 && errno == EINTR)
			;
		close(fork_sync[0]);
		fork_sync[0] = fork_sync[1] = -1;
	}
	fork_hugetlb = false;
	pthread_mutex_unlock(&pf__page_lock);
	pthread_mutex_unlock(&pf__meta_lock);
	pthread_mutex_unlock(&pf__slab_abandoned_lock);
	pthread_mutex_unlock(&pf__init_lock);
	pthread_mutex_unlock(&pf__shared_lock);
	errno = saved;
}

static void fork_child(void)
{
	int saved = errno;
	pthread_mutex_init(&pf__page_lock, NULL);
	pthread_mutex_init(&pf__meta_lock, NULL);
	pthread_mutex_init(&pf__slab_abandoned_lock, NULL);
	pthread_mutex_init(&pf__init_lock, NULL);
	if (fork_hugetlb) {
		if (fork_sync[0] >= 0)
			close(fork_sync[0]);
		pf__arena_fork_child();
		if (fork_sync[1] >= 0)
			close(fork_sync[1]);
		fork_sync[0] = fork_sync[1] = -1;
		fork_hugetlb = false;
	}
	if (atomic_load(&pf__ready) == 1)
		pf__thread_forget_others();
	pf__shared_after_fork();
	errno = saved;
}

/* ---- constructor and exit ---------------------------------------------------------- */

__attribute__((constructor)) static void preload_init(void)
{
	int saved = errno;
#ifdef PF_SANITIZED
	atomic_store_explicit(&runtime_up, true, memory_order_release);
#endif
	preloaded = ours() && process_malloc_is_ours();
	(void)pthread_atfork(fork_prepare, fork_parent, fork_child);
	pf__options_load();
	if (preloaded && PF_OPT(stats))
		stats_fd = fcntl(2, F_DUPFD_CLOEXEC, 100);
	errno = saved;
}

__attribute__((destructor)) static void preload_fini(void)
{
	if (!preloaded)
		return;
	if (PF_OPT(stats))
		pf__stats_print(stats_fd >= 0 ? stats_fd : 2);
}
