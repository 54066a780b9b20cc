/* SPDX-License-Identifier: GPL-2.0-only */
/*
 * A shared arena's file and mapping: naming, backing, permissions, the
 * same address in every process, and the layout check at attach.
 *
 * - The file is "<directory>/pyfrag.<name>". Without a directory: the first
 *   hugetlbfs mount of 2 MiB pages for hugetlb, /dev/shm for shmem. (A
 *   memfd_create file is the same shmem memory but has no name another
 *   process can open, hence /dev/shm; its transparent hugepages follow the
 *   tmpfs mount's huge= option, where a memfd's follow shmem_enabled.)
 * - Creation is O_EXCL with the asked mode set by fchmod (umask does not
 *   narrow or widen it). All memory is allocated at creation: hugetlb pages
 *   are reserved by the first mmap, shmem pages are populated
 *   (MADV_POPULATE_WRITE, else fallocate), so a full pool or a full /dev/shm
 *   is an ENOMEM now rather than a SIGBUS later.
 * - The address comes from a hash of the name, in a range programs do not
 *   use (32..48 TiB; TSan builds: 256..512 GiB), trying the next slot when one is taken here;
 *   attachers map at exactly that address (MAP_FIXED_NOREPLACE) or fail.
 * - The header's magic is stored last (release), so an attacher either sees
 *   a complete arena or EAGAIN.
 */
#include "shared/shared.h"

#include <errno.h>
#include <fcntl.h>
#include <stdarg.h>
#include <stdio.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>

#ifndef MAP_FIXED_NOREPLACE
#define MAP_FIXED_NOREPLACE 0x100000
#endif
#ifndef MADV_POPULATE_WRITE
#define MADV_POPULATE_WRITE 23
#endif

#if defined(__SANITIZE_THREAD__)
/* ThreadSanitizer lets programs map only a few ranges: its low one, 256..512 GiB here */
#define BASE_FIRST 0x4000000000ull
#define BASE_SLOT (1ull << 30)
#else
#define BASE_FIRST 0x200000000000ull /* 32 TiB */
#define BASE_SLOT (64ull << 30)
#endif
#define BASE_SLOTS 256u
#define BASE_TRIES 16u

static PF_TLS char message[256]; /* pf__fail keeps a pointer: one sentence per thread */

/* errno = err and a formatted sentence (%m is strerror(err)); returns -1. */
__attribute__((format(printf, 2, 3))) static int fail(int err, const char *fmt, ...)
{
	va_list ap;
	va_start(ap, fmt);
	errno = err;
	vsnprintf(message, sizeof(message), fmt, ap);
	va_end(ap);
	pf__fail(err, message);
	return -1;
}

/* ---- names and places ------------------------------------------------------- */

static bool valid_name(const char *name)
{
	size_t n = 0;
	if (!name || name[0] == '\0' || name[0] == '.')
		return false;
	for (; name[n]; n++) {
		char c = name[n];
		bool ok = (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') ||
			  c == '.' || c == '_' || c == '-';
		if (!ok || n >= PF_SHARED_NAME_MAX)
			return false;
	}
	return true;
}

/* Read a small text file whole (no stdio: this also runs in programs under the preload). */
static ssize_t read_text(const char *path, char *buf, size_t size)
{
	int fd = open(path, O_RDONLY | O_CLOEXEC);
	if (fd < 0)
		return -1;
	size_t used = 0;
	while (used + 1 < size) {
		ssize_t n = read(fd, buf + used, size - 1 - used);
		if (n < 0 && errno == EINTR)
			continue;
		if (n <= 0)
			break;
		used += (size_t)n;
	}
	close(fd);
	buf[used] = '\0';
	return (ssize_t)used;
}

/*
 * Walk /proc/self/mounts: with index >= 0, the index-th hugetlbfs mount of
 * 2 MiB pages; with path, the mount that holds path (the last, longest
 * match). Its directory, type and options into the out buffers; false if none.
 */
struct mount_entry {
	char dir[200], type[32], opts[256];
};

static bool find_mount(int index, const char *path, struct mount_entry *out)
{
	static char mounts[32768]; /* under pf__shared_lock */
	if (read_text("/proc/self/mounts", mounts, sizeof(mounts)) <= 0)
		return false;
	int seen = 0;
	size_t best = 0;
	bool found = false;
	for (char *line = mounts; *line;) {
		char *end = strchr(line, '\n');
		if (end)
			*end = '\0';
		char dev[64];
		struct mount_entry e;
		if (sscanf(line, "%63s %199s %31s %255s", dev, e.dir, e.type, e.opts) == 4) {
			size_t n = strlen(e.dir);
			if (path) {
				bool holds = strncmp(path, e.dir, n) == 0 &&
					     (path[n] == '/' || path[n] == '\0' || n == 1);
				if (holds && n >= best) {
					best = n;
					*out = e;
					found = true;
				}
			} else if (strcmp(e.type, "hugetlbfs") == 0 &&
				   (!strstr(e.opts, "pagesize=") || strstr(e.opts, "pagesize=2M")) &&
				   seen++ == index) {
				*out = e;
				return true;
			}
		}
		if (!end)
			break;
		line = end + 1;
	}
	return found;
}

static bool hugetlbfs_mount(unsigned index, char *out, size_t out_size)
{
	struct mount_entry e;
	if (!find_mount((int)index, NULL, &e))
		return false;
	snprintf(out, out_size, "%s", e.dir);
	return true;
}

static bool is_hugetlbfs(const char *directory)
{
	struct mount_entry e;
	return find_mount(-1, directory, &e) && strcmp(e.type, "hugetlbfs") == 0;
}

/*
 * Will a file in directory get transparent hugepages when its mapping asks
 * (MADV_HUGEPAGE)? For a tmpfs mount that is its huge= option (shmem_enabled
 * governs only the kernel's internal mount: memfd, SysV shm), unless
 * shmem_enabled forces or denies it for every mount.
 */
static bool thp_allowed(const char *directory)
{
	char text[128];
	if (read_text("/sys/kernel/mm/transparent_hugepage/shmem_enabled", text, sizeof(text)) > 0) {
		if (strstr(text, "[deny]"))
			return false;
		if (strstr(text, "[force]"))
			return true;
	}
	struct mount_entry e;
	return find_mount(-1, directory, &e) && strcmp(e.type, "tmpfs") == 0 &&
	       (strstr(e.opts, "huge=always") || strstr(e.opts, "huge=within_size") ||
		strstr(e.opts, "huge=advise"));
}

static int make_path(char *out, size_t size, const char *directory, const char *name)
{
	int n = snprintf(out, size, "%s/pyfrag.%s", directory, name);
	if (n < 0 || (size_t)n >= size)
		return fail(ENAMETOOLONG, "directory %s is too long for a shared arena path", directory);
	return 0;
}

/* ---- layout ------------------------------------------------------------------- */

static uint64_t round_up(uint64_t x, uint64_t to)
{
	return (x + to - 1) / to * to;
}

static void layout(struct pf_shared_header *h, uint64_t data_bytes)
{
	h->version = PF_SHARED_LAYOUT_VERSION;
	h->header_size = sizeof(struct pf_shared_header);
	h->page_meta_size = sizeof(struct pf_page);
	h->slot_size = sizeof(struct pf_shared_slot);
	h->mutex_size = sizeof(pthread_mutex_t);
	h->max_procs = PF_SHARED_MAX_PROCS;
	h->max_caches = PF_SHARED_MAX_CACHES;
	h->data_pages = (uint32_t)(data_bytes >> PF_PAGE_SHIFT);
	h->reserve_pages = PF_SHARED_RESERVE_PAGES;
	h->slots_offset = PF_PAGE_SIZE;
	h->meta_offset = round_up(h->slots_offset + (uint64_t)h->max_caches * h->slot_size, 64);
	h->data_offset = round_up(h->meta_offset + (uint64_t)h->data_pages * h->page_meta_size,
				  PF_CHUNK_SIZE);
	h->map_bytes = h->data_offset + data_bytes;
}

static uint64_t name_hash(const char *name)
{
	uint64_t hash = 0xcbf29ce484222325ull; /* FNV-1a */
	for (; *name; name++)
		hash = (hash ^ (unsigned char)*name) * 0x100000001b3ull;
	return hash;
}

/* Map the file at exactly base, or fail without touching what is there. */
static void *map_at(int fd, uint64_t base, uint64_t bytes)
{
	return pf__os.map_shared((void *)base, bytes, PROT_READ | PROT_WRITE, fd);
}

/* ---- create ------------------------------------------------------------------- */

static void init_header(struct pf_shared_header *h, const struct pf_shared_header *shape,
			const char *name, int backing)
{
	memcpy(h, shape, sizeof(*h));
	h->backing = (uint32_t)backing;
	h->base = (uint64_t)(uintptr_t)h;
	snprintf(h->name, sizeof(h->name), "%s", name);
	pthread_mutexattr_t attr;
	pthread_mutexattr_init(&attr);
	pthread_mutexattr_setpshared(&attr, PTHREAD_PROCESS_SHARED);
	pthread_mutexattr_setrobust(&attr, PTHREAD_MUTEX_ROBUST);
	pthread_mutex_init(&h->lock, &attr);
	pthread_mutexattr_destroy(&attr);
	pf__shared_zone_init(h);
}

/* Map a new file of this backing at a free slot address and allocate its memory. */
static void *map_new(int fd, const char *name, uint64_t bytes, int backing)
{
	void *p = NULL;
	uint64_t first = name_hash(name) % BASE_SLOTS;
	for (unsigned try = 0; try < BASE_TRIES && !p; try++) {
		p = map_at(fd, BASE_FIRST + ((first + try) % BASE_SLOTS) * BASE_SLOT, bytes);
		if (!p && errno != EEXIST)
			return NULL; /* hugetlb: ENOMEM when the pool is short */
	}
	if (!p) {
		errno = EADDRINUSE;
		return NULL;
	}
	if (backing == PF_SHARED_BACKING_HUGETLB)
		return p; /* the pages are reserved for the file already */
	(void)pf__os.advise(p, bytes, backing == PF_SHARED_BACKING_THP ? MADV_HUGEPAGE : MADV_NOHUGEPAGE);
	if (pf__os.advise(p, bytes, MADV_POPULATE_WRITE) != 0) {
		int err = errno;
		/* kernels before 5.14 lack it: fallocate allocates the same pages, without THP */
		if (err != EINVAL || posix_fallocate(fd, 0, (off_t)bytes) != 0) {
			pf__os_unmap(p, bytes);
			errno = err == EINVAL ? ENOMEM : err;
			return NULL;
		}
	}
	return p;
}

/* Create the file in directory with this backing; 0, or -1 with errno (the file is gone again). */
static int create_in(struct pf_shared *local, const char *directory, const char *name,
		     const struct pf_shared_header *shape, unsigned mode, int backing)
{
	if (make_path(local->path, sizeof(local->path), directory, name) != 0)
		return -1;
	int fd = open(local->path, O_RDWR | O_CREAT | O_EXCL | O_CLOEXEC, mode);
	if (fd < 0)
		return -1;
	struct stat st;
	void *p = NULL;
	int err = 0;
	if (fchmod(fd, mode) != 0 || ftruncate(fd, (off_t)shape->map_bytes) != 0 || fstat(fd, &st) != 0)
		err = errno;
	else if (!(p = map_new(fd, name, shape->map_bytes, backing)))
		err = errno;
	if (err) {
		close(fd);
		unlink(local->path);
		errno = err;
		return -1;
	}
	local->fd = fd; /* kept: its lock tells the others this process is alive */
	local->header = p;
	local->map_bytes = shape->map_bytes;
	local->dev = (uint64_t)st.st_dev;
	local->ino = (uint64_t)st.st_ino;
	init_header(local->header, shape, name, backing);
	atomic_store_explicit(&local->header->magic, PF_SHARED_MAGIC, memory_order_release);
	return 0;
}

int pf__shared_map_create(struct pf_shared *local, const char *name, size_t size, unsigned mode,
			  int backing, const char *directory)
{
	local->fd = -1;
	if (!valid_name(name))
		return fail(EINVAL, "shared arena name '%s': 1-48 letters, digits, '.', '_' or '-', not "
			    "starting with '.'", name ? name : "(null)");
	if (size == 0)
		size = PF_SHARED_DEFAULT_SIZE;
	if (size > PF_SHARED_MAX_SIZE)
		return fail(EINVAL, "shared arena size %zu is above the largest, %llu bytes", size,
			    PF_SHARED_MAX_SIZE);
	if (mode == 0)
		mode = 0600;
	if (mode & ~0777u)
		return fail(EINVAL, "mode %o has bits beyond the permission bits (0777)", mode);
	if (backing < PF_SHARED_BACKING_AUTO || backing > PF_SHARED_BACKING_4K)
		return fail(EINVAL, "backing %d is not one of 0 auto, 1 hugetlb, 2 thp, 3 4k", backing);
	struct pf_shared_header shape;
	memset(&shape, 0, sizeof(shape));
	layout(&shape, round_up(size, PF_CHUNK_SIZE));

	char dir[200];
	bool want_hugetlb = backing == PF_SHARED_BACKING_HUGETLB || backing == PF_SHARED_BACKING_AUTO;
	bool have_hugetlbfs = directory ? is_hugetlbfs(directory) : hugetlbfs_mount(0, dir, sizeof(dir));
	if (backing == PF_SHARED_BACKING_HUGETLB && !have_hugetlbfs)
		return fail(ENOMEM, "no hugetlbfs mount of 2 MiB pages for a hugetlb arena%s%s "
			    "(mount -t hugetlbfs -o pagesize=2M nodev /dev/hugepages)",
			    directory ? " at " : "", directory ? directory : "");
	if (want_hugetlb && have_hugetlbfs) {
		if (create_in(local, directory ? directory : dir, name, &shape, mode,
			      PF_SHARED_BACKING_HUGETLB) == 0)
			return 0;
		if (backing == PF_SHARED_BACKING_HUGETLB || errno != ENOMEM || directory)
			return fail(errno, "cannot create the hugetlb arena %s: %m%s", local->path,
				    errno == ENOMEM ? " (too few free hugetlb pages)" : "");
		/* auto: the pool is short; shmem next */
	} else if (have_hugetlbfs && directory) {
		return fail(EINVAL, "%s is a hugetlbfs mount: only a hugetlb arena can go there",
			    directory);
	}
	const char *shm_dir = directory ? directory : "/dev/shm";
	bool thp = thp_allowed(shm_dir);
	if (backing == PF_SHARED_BACKING_THP && !thp)
		return fail(ENOTSUP, "files in %s get no transparent hugepages (for tmpfs: mount -o "
			    "remount,huge=advise %s)", shm_dir, shm_dir);
	if (backing == PF_SHARED_BACKING_AUTO)
		backing = thp ? PF_SHARED_BACKING_THP : PF_SHARED_BACKING_4K;
	if (create_in(local, shm_dir, name, &shape, mode, backing) != 0)
		return fail(errno, "cannot create the shared arena %s: %m", local->path);
	return 0;
}

/* ---- attach ------------------------------------------------------------------- */

/* Open the arena's file: in directory, or on each hugetlbfs mount, then in /dev/shm. */
static int open_existing(struct pf_shared *local, const char *name, const char *directory)
{
	char dir[200];
	for (unsigned i = 0; !directory; i++) {
		if (!hugetlbfs_mount(i, dir, sizeof(dir)))
			break;
		if (make_path(local->path, sizeof(local->path), dir, name) != 0)
			return -1;
		int fd = open(local->path, O_RDWR | O_CLOEXEC);
		if (fd >= 0 || errno != ENOENT)
			return fd;
	}
	if (make_path(local->path, sizeof(local->path), directory ? directory : "/dev/shm", name) != 0)
		return -1;
	return open(local->path, O_RDWR | O_CLOEXEC);
}

/* Is the header one this library can share? 0, or -1 with errno and the sentence. */
static int check_header(const struct pf_shared_header *h, const char *path, uint64_t file_size)
{
	uint64_t magic = atomic_load_explicit(&h->magic, memory_order_acquire);
	if (magic == 0)
		return fail(EAGAIN, "shared arena %s is still being created", path);
	if (magic != PF_SHARED_MAGIC)
		return fail(EPROTO, "%s is not a pyfrag shared arena", path);
	if (h->version != PF_SHARED_LAYOUT_VERSION)
		return fail(EPROTO, "shared arena %s has layout version %u; this library (pyfrag %s) "
			    "reads version %u", path, h->version, PF_VERSION_STRING, PF_SHARED_LAYOUT_VERSION);
	struct pf_shared_header ours;
	memset(&ours, 0, sizeof(ours));
	layout(&ours, (uint64_t)h->data_pages << PF_PAGE_SHIFT);
#define PF_SAME_(field)                                                                      \
	if (h->field != ours.field)                                                          \
		return fail(EPROTO, "shared arena %s: incompatible layout: " #field " is %llu there, " \
			    "%llu in this library", path, (unsigned long long)h->field,                 \
			    (unsigned long long)ours.field);
	PF_SAME_(header_size)
	PF_SAME_(page_meta_size)
	PF_SAME_(slot_size)
	PF_SAME_(mutex_size)
	PF_SAME_(max_procs)
	PF_SAME_(max_caches)
	PF_SAME_(reserve_pages)
	PF_SAME_(slots_offset)
	PF_SAME_(meta_offset)
	PF_SAME_(data_offset)
	PF_SAME_(map_bytes)
#undef PF_SAME_
	if (h->map_bytes > file_size)
		return fail(EPROTO, "shared arena %s is shorter (%llu bytes) than its layout (%llu)", path,
			    (unsigned long long)file_size, (unsigned long long)h->map_bytes);
	if (h->base % PF_CHUNK_SIZE || h->base < BASE_FIRST / 2)
		return fail(EPROTO, "shared arena %s: base address %#llx is not one pyfrag picks", path,
			    (unsigned long long)h->base);
	return 0;
}

/* Map the first 2 MiB anywhere, read-only, to read and check the header. */
static int read_header(int fd, const char *path, uint64_t file_size, struct pf_shared_header *out)
{
	if (file_size < PF_CHUNK_SIZE)
		return fail(EPROTO, "%s is too small to be a pyfrag shared arena", path);
	void *p = pf__os.map_shared(NULL, PF_CHUNK_SIZE, PROT_READ, fd);
	if (!p)
		return fail(errno, "cannot map %s: %m", path);
	memcpy(out, p, sizeof(*out));
	pf__os_unmap(p, PF_CHUNK_SIZE);
	return check_header(out, path, file_size);
}

/* An attach of an arena this process has attached already: its local entry, else NULL. */
static struct pf_shared *attached_already(uint64_t dev, uint64_t ino)
{
	for (unsigned i = 0; i < PF_SHARED_LOCAL_MAX; i++) {
		struct pf_shared *other = &pf__shared_table[i];
		if (other->header && other->dev == dev && other->ino == ino)
			return other;
	}
	return NULL;
}

int pf__shared_map_attach(struct pf_shared *local, const char *name, const char *directory)
{
	local->fd = -1;
	if (!valid_name(name))
		return fail(EINVAL, "shared arena name '%s': 1-48 letters, digits, '.', '_' or '-', not "
			    "starting with '.'", name ? name : "(null)");
	int fd = open_existing(local, name, directory);
	if (fd < 0)
		return fail(errno, "cannot open the shared arena %s: %m", local->path);
	struct stat st;
	struct pf_shared_header shape;
	int ret = -1;
	if (fstat(fd, &st) != 0)
		fail(errno, "cannot stat %s: %m", local->path);
	else if (!S_ISREG(st.st_mode))
		fail(EPROTO, "%s is not a regular file", local->path);
	else if (attached_already((uint64_t)st.st_dev, (uint64_t)st.st_ino))
		fail(EALREADY, "%s is attached in this process already", local->path);
	else if (read_header(fd, local->path, (uint64_t)st.st_size, &shape) == 0) {
		local->header = map_at(fd, shape.base, shape.map_bytes);
		local->map_bytes = shape.map_bytes;
		if (!local->header)
			fail(errno == EEXIST ? EADDRINUSE : errno,
			     "cannot map the shared arena %s at %#llx, where every process maps it: %s",
			     local->path, (unsigned long long)shape.base,
			     errno == EEXIST ? "this process uses part of that range" : strerror(errno));
		else
			ret = 0;
	}
	int err = errno;
	if (ret == 0)
		local->fd = fd; /* kept: its lock tells the others this process is alive */
	else
		close(fd);
	local->dev = (uint64_t)st.st_dev;
	local->ino = (uint64_t)st.st_ino;
	errno = err;
	return ret;
}

struct pf_shared *pf__shared_find_attached(const char *name, const char *directory)
{
	struct pf_shared probe;
	if (!valid_name(name))
		return NULL;
	int fd = open_existing(&probe, name, directory);
	if (fd < 0)
		return NULL;
	struct stat st;
	int ret = fstat(fd, &st);
	close(fd);
	return ret == 0 ? attached_already((uint64_t)st.st_dev, (uint64_t)st.st_ino) : NULL;
}

void pf__shared_unmap(struct pf_shared *local)
{
	pf__os_unmap(local->header, local->map_bytes); /* the length this process mapped, not the header's */
	local->header = NULL;
	if (local->fd >= 0)
		close(local->fd);
	local->fd = -1;
}

int pf__shared_remove(const char *name, const char *directory)
{
	if (!valid_name(name))
		return fail(EINVAL, "shared arena name '%s': 1-48 letters, digits, '.', '_' or '-', not "
			    "starting with '.'", name ? name : "(null)");
	struct pf_shared probe;
	int fd = open_existing(&probe, name, directory);
	if (fd < 0 && errno != EACCES)
		return fail(errno, "cannot remove the shared arena %s: %m", probe.path);
	if (fd >= 0)
		close(fd);
	if (unlink(probe.path) != 0)
		return fail(errno, "cannot remove the shared arena %s: %m", probe.path);
	return 0;
}
