/* SPDX-License-Identifier: GPL-2.0-only */
/*
 * OS layer: the only place that calls mmap, munmap and madvise.
 *
 * reserve()  maps PROT_NONE address space, aligned, with no memory behind it.
 * commit()   puts memory of the asked backing over part of a reservation:
 *            hugetlb (MAP_HUGETLB, 2 MiB pages from the pool, reserved at
 *            mmap time so a fault never SIGBUSes), THP (anonymous memory
 *            advised MADV_HUGEPAGE) or 4 KiB (advised MADV_NOHUGEPAGE so a
 *            system in THP "always" mode does not promote it). Returns 0 or
 *            -1 with errno; the range is still reserved after a failure.
 * decommit() puts the reservation back, freeing the memory.
 * advise()   madvise, for commit's THP and 4 KiB hints.
 * map_meta() maps pyfrag's own metadata (read-write, zero, lazily backed).
 * map_shared() maps a shared arena's file (MAP_SHARED), at exactly addr or
 *            nowhere (never over an existing mapping), or anywhere for NULL.
 * unmap()    munmap.
 * They sit in a table (pf__os) so tests can inject failures (debug.c).
 * pf__os_space_left() says how much address space RLIMIT_AS still allows
 *            (the limit less /proc/self/statm's size), so the arena can size
 *            its regions to it; every mapping counts, PROT_NONE ones too.
 */
#include "sys/sys.h"

#include <errno.h>
#include <fcntl.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/resource.h>
#include <unistd.h>

#ifndef MAP_HUGETLB
#define MAP_HUGETLB 0x40000
#endif
#ifndef MAP_FIXED_NOREPLACE
#define MAP_FIXED_NOREPLACE 0x100000
#endif
#ifndef MAP_HUGE_SHIFT
#define MAP_HUGE_SHIFT 26
#endif
#define PF_MAP_HUGE_2MB (21 << MAP_HUGE_SHIFT)

static void *os_reserve(size_t size, size_t align)
{
	size_t padded = size + align;
	char *raw = mmap(NULL, padded, PROT_NONE, MAP_PRIVATE | MAP_ANONYMOUS | MAP_NORESERVE, -1, 0);
	if (raw == MAP_FAILED)
		return NULL;
	uintptr_t start = ((uintptr_t)raw + align - 1) & ~(uintptr_t)(align - 1);
	size_t head = start - (uintptr_t)raw;
	if (head)
		munmap(raw, head);
	size_t tail = padded - head - size;
	if (tail)
		munmap((char *)start + size, tail);
	return (void *)start;
}

/*
 * A failed MAP_FIXED may or may not have dropped the old reservation,
 * depending on the kernel. Re-reserve without replacing anything: if the
 * range is still ours EEXIST is the expected answer.
 */
static void os_rereserve(void *addr, size_t size)
{
	void *p = mmap(addr, size, PROT_NONE,
		       MAP_PRIVATE | MAP_ANONYMOUS | MAP_NORESERVE | MAP_FIXED_NOREPLACE, -1, 0);
	if (p != MAP_FAILED && p != addr)
		munmap(p, size); /* old kernel ignoring NOREPLACE: do not keep a stray mapping */
}

static int os_commit(void *addr, size_t size, enum pf_backing backing)
{
	int flags = MAP_PRIVATE | MAP_ANONYMOUS | MAP_FIXED;
	if (backing == PF_BACKING_HUGETLB)
		flags |= MAP_HUGETLB | PF_MAP_HUGE_2MB;
	void *p = mmap(addr, size, PROT_READ | PROT_WRITE, flags, -1, 0);
	if (p == MAP_FAILED) {
		int err = errno;
		os_rereserve(addr, size);
		errno = err;
		return -1;
	}
	if (backing == PF_BACKING_THP && pf__os.advise(addr, size, MADV_HUGEPAGE) != 0) {
		int err = errno;
		mmap(addr, size, PROT_NONE, MAP_PRIVATE | MAP_ANONYMOUS | MAP_FIXED | MAP_NORESERVE, -1, 0);
		errno = err;
		return -1;
	}
	if (backing == PF_BACKING_4K)
		(void)pf__os.advise(addr, size, MADV_NOHUGEPAGE); /* only fails where THP is absent */
	return 0;
}

static int os_decommit(void *addr, size_t size)
{
	void *p = mmap(addr, size, PROT_NONE, MAP_PRIVATE | MAP_ANONYMOUS | MAP_FIXED | MAP_NORESERVE,
		       -1, 0);
	return p == MAP_FAILED ? -1 : 0;
}

static int os_advise(void *addr, size_t size, int advice)
{
	return madvise(addr, size, advice);
}

static void *os_map_meta(size_t size)
{
	void *p = mmap(NULL, size, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS | MAP_NORESERVE,
		       -1, 0);
	return p == MAP_FAILED ? NULL : p;
}

static void *os_map_shared(void *addr, size_t size, int prot, int fd)
{
	void *p = mmap(addr, size, prot, MAP_SHARED | (addr ? MAP_FIXED_NOREPLACE : 0), fd, 0);
	if (p == MAP_FAILED)
		return NULL;
	if (addr && p != addr) { /* a kernel without MAP_FIXED_NOREPLACE took it as a hint */
		munmap(p, size);
		errno = EEXIST;
		return NULL;
	}
	return p;
}

static int os_unmap(void *addr, size_t size)
{
	return munmap(addr, size);
}

struct pf_os_ops pf__os = {
	.reserve = os_reserve,
	.commit = os_commit,
	.decommit = os_decommit,
	.advise = os_advise,
	.map_meta = os_map_meta,
	.map_shared = os_map_shared,
	.unmap = os_unmap,
};

void *pf__os_map_meta(size_t size)
{
	return pf__os.map_meta(size);
}

void pf__os_unmap(void *addr, size_t size)
{
	(void)pf__os.unmap(addr, size);
}

size_t pf__os_space_limit(void)
{
	struct rlimit lim;
	if (getrlimit(RLIMIT_AS, &lim) != 0 || lim.rlim_cur == RLIM_INFINITY || lim.rlim_cur > SIZE_MAX)
		return SIZE_MAX;
	return (size_t)lim.rlim_cur;
}

/* The process's mapped bytes (statm's first field), or 0 if /proc cannot say. */
static size_t mapped_bytes(void)
{
	char buf[64];
	int fd = open("/proc/self/statm", O_RDONLY | O_CLOEXEC);
	if (fd < 0)
		return 0;
	ssize_t n = read(fd, buf, sizeof(buf) - 1);
	close(fd);
	size_t pages = 0;
	for (ssize_t i = 0; i < n && buf[i] >= '0' && buf[i] <= '9'; i++)
		pages = pages * 10 + (size_t)(buf[i] - '0');
	return pages * (size_t)sysconf(_SC_PAGESIZE);
}

size_t pf__os_space_left(void)
{
	size_t limit = pf__os_space_limit();
	if (limit == SIZE_MAX)
		return SIZE_MAX;
	int saved = errno;
	size_t used = mapped_bytes();
	errno = saved;
	return used < limit ? limit - used : 0;
}

/*
 * fork and hugetlb (arena.c says why): a MAP_PRIVATE hugetlb page written
 * after fork needs a fresh hugepage for the copy, and where the pool has
 * none the kernel unmaps the page from the child.
 *
 * pf__os_fork_detach (prepare handler, parent): copy the chunk into fresh
 * anonymous memory (*copy; NULL if the chunk was never touched: hugetlb pages
 * are all or nothing, so the first 4 KiB tell) and mark the chunk
 * MADV_DONTFORK so the child does not map it. 0, or -1 with nothing changed.
 */
static bool hugetlb_touched(void *addr)
{
	unsigned char resident = 0;
	return mincore(addr, PF_PAGE_SIZE, &resident) != 0 || (resident & 1);
}

int pf__os_fork_detach(void *addr, size_t size, void **copy)
{
	int saved = errno;
	*copy = NULL;
	if (hugetlb_touched(addr)) {
		void *p = mmap(NULL, size, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS, -1, 0);
		if (p == MAP_FAILED) {
			errno = saved;
			return -1;
		}
		(void)madvise(p, size, MADV_HUGEPAGE);
		memcpy(p, addr, size);
		*copy = p;
	}
	if (madvise(addr, size, MADV_DONTFORK) != 0) {
		if (*copy)
			munmap(*copy, size);
		*copy = NULL;
		errno = saved;
		return -1;
	}
	errno = saved;
	return 0;
}

/* Parent, after fork (or its failure): the chunk is inherited again; the copy goes. */
void pf__os_fork_reattach(void *addr, size_t size, void *copy)
{
	int saved = errno;
	(void)madvise(addr, size, MADV_DOFORK);
	if (copy)
		munmap(copy, size);
	errno = saved;
}

/* Child: the copy (or fresh memory for a chunk never touched) where the chunk was. 0 or -1. */
int pf__os_fork_place(void *addr, size_t size, void *copy)
{
	int flags = MAP_PRIVATE | MAP_ANONYMOUS | MAP_FIXED;
	if (copy && mremap(copy, size, size, MREMAP_MAYMOVE | MREMAP_FIXED, addr) != MAP_FAILED)
		return 0;
	if (mmap(addr, size, PROT_READ | PROT_WRITE, flags, -1, 0) == MAP_FAILED)
		return -1;
	(void)madvise(addr, size, MADV_HUGEPAGE);
	if (copy) {
		memcpy(addr, copy, size);
		munmap(copy, size);
	}
	return 0;
}

/*
 * A hugetlb chunk the parent could not detach was inherited: the child
 * trades it for anonymous memory holding the same bytes before it runs on
 * (racing the parent's other threads: see above). Reading does not copy; a
 * chunk the parent never touched has no page to read and is just replaced.
 */
int pf__os_unshare_hugetlb(void *addr, size_t size)
{
	bool touched = hugetlb_touched(addr);
	int flags = MAP_PRIVATE | MAP_ANONYMOUS;
	if (!touched) {
		if (mmap(addr, size, PROT_READ | PROT_WRITE, flags | MAP_FIXED, -1, 0) == MAP_FAILED)
			return -1;
		(void)madvise(addr, size, MADV_HUGEPAGE);
		return 0;
	}
	void *copy = mmap(NULL, size, PROT_READ | PROT_WRITE, flags, -1, 0);
	if (copy == MAP_FAILED)
		return -1;
	(void)madvise(copy, size, MADV_HUGEPAGE);
	memcpy(copy, addr, size);
	if (mremap(copy, size, size, MREMAP_MAYMOVE | MREMAP_FIXED, addr) == MAP_FAILED) {
		munmap(copy, size);
		return -1;
	}
	return 0;
}
