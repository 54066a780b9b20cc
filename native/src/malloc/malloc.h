/* SPDX-License-Identifier: GPL-2.0-only */
/*
 * Layer 7, the malloc front: malloc-family semantics over the layers below
 * (page_frag for small blocks, page runs, chunk runs), the exported libc
 * names for LD_PRELOAD, the decision whether this process's malloc is ours,
 * fork handlers and the exit summary. Includes only api/api.h.
 */
#ifndef PF_MALLOC_H
#define PF_MALLOC_H

#include "api/api.h"

/* malloc-family semantics (glibc's errno and overflow rules); preload.c exports them. */
PF_INTERNAL void *pf__malloc(size_t size);
PF_INTERNAL void *pf__calloc(size_t n, size_t size);
PF_INTERNAL void *pf__realloc(void *ptr, size_t size);
PF_INTERNAL void *pf__reallocarray(void *ptr, size_t n, size_t size);
PF_INTERNAL void pf__free(void *ptr);
PF_INTERNAL int pf__posix_memalign(void **out, size_t align, size_t size);
PF_INTERNAL void *pf__memalign(size_t align, size_t size);
PF_INTERNAL void *pf__aligned_alloc(size_t align, size_t size);
PF_INTERNAL void *pf__valloc(size_t size);
PF_INTERNAL void *pf__pvalloc(size_t size);
PF_INTERNAL size_t pf__malloc_usable_size(void *ptr);
/* malloc_usable_size of the other allocator (glibc's, or a sanitizer runtime's). */
PF_INTERNAL size_t pf__other_usable_size(void *ptr);

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
