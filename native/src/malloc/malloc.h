/* SPDX-License-Identifier: GPL-2.0-only */
/*
 * Layer 8, the malloc front: malloc-family semantics over the layers below
 * (page_frag for small blocks, page runs, chunk runs), the exported libc
 * names for LD_PRELOAD, the decision whether this process's malloc is ours,
 * fork handlers and the exit summary. Includes only api/api.h.
 */
#ifndef PF_MALLOC_H
#define PF_MALLOC_H

#include "api/api.h"

/*
 * malloc-family semantics (glibc's errno and overflow rules); preload.c
 * exports them. site: the caller's return address (the adaptive route
 * learns per call site); 0 when there is none worth naming.
 */
PF_INTERNAL void *pf__malloc(size_t size, uintptr_t site);
PF_INTERNAL void *pf__calloc(size_t n, size_t size, uintptr_t site);
PF_INTERNAL void *pf__realloc(void *ptr, size_t size, uintptr_t site);
PF_INTERNAL void *pf__reallocarray(void *ptr, size_t n, size_t size, uintptr_t site);
PF_INTERNAL void pf__free(void *ptr);
PF_INTERNAL int pf__posix_memalign(void **out, size_t align, size_t size, uintptr_t site);
PF_INTERNAL void *pf__memalign(size_t align, size_t size, uintptr_t site);
PF_INTERNAL void *pf__aligned_alloc(size_t align, size_t size, uintptr_t site);
PF_INTERNAL void *pf__valloc(size_t size);
PF_INTERNAL void *pf__pvalloc(size_t size);
PF_INTERNAL size_t pf__malloc_usable_size(void *ptr);
/* malloc_usable_size of the other allocator (glibc's, or a sanitizer runtime's). */
PF_INTERNAL size_t pf__other_usable_size(void *ptr);

/* ---- the small blocks' header (page_frag route) ------------------------------ */

#define PF_HDR 16u
#define PF_MAGIC_LIVE 0x6d66704bu         /* "Kpfm" */
#define PF_MAGIC_LIVE_CHECKED 0x6d66434bu /* "KCfm": live, made in check mode */
#define PF_MAGIC_FREED 0x6672656bu

struct pf_mhdr {
	uint32_t size;   /* fragment bytes: lead + usable */
	uint16_t lead;   /* fragment start to user pointer: 16, or the alignment */
	uint16_t slack;  /* usable bytes past the request (check mode: tail canary) */
	uint32_t canary; /* check mode: keyed by address, verified; otherwise the call site's slot */
	uint32_t magic;  /* live_magic() or PF_MAGIC_FREED, right before the user's bytes */
};
_Static_assert(sizeof(struct pf_mhdr) == PF_HDR, "malloc header is 16 bytes");

/* ---- the adaptive route (route.c) ------------------------------------------------ */

#define PF_SITE_BITS 12
#define PF_SITES (1u << PF_SITE_BITS)

/* Per call site and size class: nonzero sends it to the compact route. */
PF_INTERNAL extern _Atomic uint8_t pf__site_compact[PF_SITES];
/* Too much is pinned now: every small request takes the compact route. */
PF_INTERNAL extern _Atomic bool pf__pin_over;

/* The slot of a call site (return address) and size class: one multiply. */
static inline uint32_t pf__site_slot(uintptr_t site, unsigned cls)
{
	uint64_t x = ((uint64_t)site ^ ((uint64_t)cls << 57)) * 0x9e3779b97f4a7c15ull;
	return (uint32_t)(x >> (64 - PF_SITE_BITS));
}
/* The thread's spare frag page was let go with fill bytes handed out: watch it if it is pinned. */
PF_INTERNAL void pf__route_watch(struct pf_thread *t, struct pf_page *page, uint32_t fill);
/* The thread's malloc front refills (or the compact route takes a page): look at what is due. */
PF_INTERNAL void pf__route_tick(struct pf_thread *t);
/* Thread give-back hook (thread.h): look at every page the thread still watches. */
PF_INTERNAL void pf__route_thread_gone(void *thread);
/* Re-read the pinning cap (the compact route's slow path, where frag refills are rare). */
PF_INTERNAL void pf__route_check_cap(void);


/*
 * The other allocator: glibc's, under its __libc_* names, or in a sanitizer
 * build the runtime's (its exported __interceptor_* entry points). preload.c
 * hands it calls before pyfrag's malloc is decided on; malloc.c what pyfrag
 * cannot serve (degraded mode).
 */
#if defined(__SANITIZE_ADDRESS__) || defined(__SANITIZE_THREAD__)
#define PF_SANITIZED 1
#define PF_OTHER(name) __interceptor_##name
#else
#define PF_OTHER(name) __libc_##name
#endif
extern void *PF_OTHER(malloc)(size_t size);
extern void *PF_OTHER(calloc)(size_t n, size_t size);
extern void *PF_OTHER(realloc)(void *ptr, size_t size);
extern void PF_OTHER(free)(void *ptr);
extern void *PF_OTHER(memalign)(size_t align, size_t size);
extern void *PF_OTHER(valloc)(size_t size);
extern void *PF_OTHER(pvalloc)(size_t size);

#endif /* PF_MALLOC_H */
