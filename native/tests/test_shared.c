/* SPDX-License-Identifier: GPL-2.0-only */
/*
 * Shared arenas (pyfrag_shared.h) across real processes: fragments freed in
 * another process, the same address after exec, a process dying with
 * fragments and caches (reaping) or holding the allocator lock (recovery),
 * another layout version, permissions, and every refusal.
 *
 * Run with an argument, the program is the "other process" of a test:
 *   test_shared attach NAME   attach by name, print the base address, free
 *                             the offsets read from stdin, detach.
 */
#include "probe.h"
#include "pyfrag_debug.h"
#include "pyfrag_shared.h"
#include "shared/shared.h" /* the header's map_bytes, for the unmap test */

#include <errno.h>
#include <fcntl.h>
#include <pthread.h>
#include <stdbool.h>
#include <stdlib.h>
#include <signal.h>
#include <stdint.h>
#include <stdio.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <unistd.h>

#define ARENA_BYTES (4u << 20)
static char name[64];
static const char *self_path;

static void new_name(const char *what)
{
	snprintf(name, sizeof(name), "ctest-%s-%d", what, (int)getpid());
}

static pf_shared_stats_t sstats(pf_shared_t *a)
{
	pf_shared_stats_t s;
	memset(&s, 0, sizeof(s));
	CHECK_EQ(pf_shared_stats(a, &s, sizeof(s)), 0);
	return s;
}

static pf_shared_t *create_4k(void)
{
	pf_shared_t *a = pf_shared_create(name, ARENA_BYTES, 0, PF_SHARED_BACKING_4K, NULL);
	if (!a)
		fprintf(stderr, "create %s: %s\n", name, pf_last_error_message());
	CHECK(a != NULL);
	return a;
}

static void destroy(pf_shared_t *a)
{
	CHECK_EQ(pf_shared_detach(a), 0);
	CHECK_EQ(pf_shared_unlink(name, NULL), 0);
}

/* The accounting every quiet arena keeps: free + in use + reserve == total. */
static void check_accounting(pf_shared_t *a)
{
	pf_shared_stats_t s = sstats(a);
	CHECK_EQ(s.pages_free + s.pages_in_use + s.reserve_free_pages, s.pages_total);
}

static int wait_child(pid_t pid)
{
	int status = 0;
	CHECK(waitpid(pid, &status, 0) == pid);
	return status;
}

/* ---- tests ----------------------------------------------------------------------- */

static void test_create_and_layout(void)
{
	new_name("layout");
	pf_shared_t *a = create_4k();
	if (!a)
		return;
	pf_shared_stats_t s = sstats(a);
	CHECK_EQ(s.layout_version, PF_SHARED_LAYOUT_VERSION);
	CHECK_EQ(s.backing, PF_SHARED_BACKING_4K);
	CHECK_EQ(s.data_bytes, ARENA_BYTES);
	CHECK_EQ(s.pages_total, ARENA_BYTES / PF_PAGE_SIZE);
	CHECK_EQ(s.reserve_free_pages, 16);
	CHECK_EQ(s.pages_in_use, 0);
	CHECK_EQ(s.processes, 1);
	CHECK_EQ(s.attaches, 1);
	CHECK_EQ(s.base % PF_CHUNK_SIZE, 0);
	struct stat st;
	CHECK_EQ(stat(pf_shared_path(a), &st), 0);
	CHECK_EQ(st.st_mode & 0777, 0600);
	CHECK_EQ((uint64_t)st.st_size, s.map_bytes);
	CHECK(strstr(pf_shared_path(a), "/dev/shm/pyfrag.ctest-layout-") != NULL);

	/* a fragment: inside the frag pages, offset and address agree, page accounting as page_frag */
	char *p = pf_shared_alloc(a, 1500);
	CHECK(p != NULL);
	memset(p, 0xab, 1500);
	uint64_t off = pf_shared_offset(a, p);
	CHECK(off != UINT64_MAX);
	CHECK(pf_shared_address(a, off) == p);
	pf_page_info_t pi = page_info(p);
	CHECK_EQ(pi.size, PF_FRAG_PAGE_SIZE);
	CHECK_EQ(pi.refcount, PF_FRAG_PAGE_SIZE + 1); /* the cache's bias + one fragment */
	s = sstats(a);
	CHECK_EQ(s.allocs, 1);
	CHECK_EQ(s.refills, 1);
	CHECK_EQ(s.caches, 1);
	CHECK_EQ(s.pages_in_use, 8);
	CHECK_EQ(pf_free(p), 0); /* pf_free knows shared fragments too */
	s = sstats(a);
	CHECK_EQ(s.frees, 1);
	pf_shared_thread_flush(a); /* drains: the frag page goes back */
	s = sstats(a);
	CHECK_EQ(s.pages_in_use, 0);
	CHECK_EQ(s.caches, 0);
	check_accounting(a);
	destroy(a);
}

static void test_cross_process_free(void)
{
	new_name("cross");
	pf_shared_t *a = create_4k();
	if (!a)
		return;
	enum { N = 2000 };
	static uint64_t offsets[N];
	for (int i = 0; i < N; i++) {
		char *p = pf_shared_alloc(a, 64 + (size_t)i % 1400);
		CHECK(p != NULL);
		if (!p)
			return;
		memset(p, i & 0xff, 64);
		offsets[i] = pf_shared_offset(a, p);
	}
	pf_shared_stats_t before = sstats(a);
	CHECK_EQ(before.allocs, N);
	int to_child[2];
	CHECK_EQ(pipe(to_child), 0);
	/* the child is another program: exec'd, it attaches by name and must map at the same base */
	pid_t pid = fork();
	if (pid == 0) {
		dup2(to_child[0], 0);
		close(to_child[1]);
		execl(self_path, self_path, "attach", name, (char *)NULL);
		_exit(127);
	}
	close(to_child[0]);
	CHECK_EQ(write(to_child[1], offsets, sizeof(offsets)), (ssize_t)sizeof(offsets));
	close(to_child[1]);
	int status = wait_child(pid);
	CHECK(WIFEXITED(status) && WEXITSTATUS(status) == 0);
	pf_shared_stats_t after = sstats(a);
	CHECK_EQ(after.frees, N);
	CHECK_EQ(after.invalid_frees, 0);
	CHECK_EQ(after.attaches, 2);
	CHECK_EQ(after.detaches, 1);
	CHECK_EQ(after.processes, 1);
	/* every fragment is back: only our cache's current page is still in use */
	CHECK_EQ(after.pages_in_use, 8);
	pf_shared_thread_flush(a);
	CHECK_EQ(sstats(a).pages_in_use, 0);
	check_accounting(a);
	destroy(a);
}

/* The "attach" role: attach, check the base matches, free what stdin names. */
static int attach_role(const char *arena_name)
{
	pf_shared_t *a = pf_shared_attach(arena_name, NULL);
	if (!a) {
		fprintf(stderr, "attach: %s\n", pf_last_error_message());
		return 2;
	}
	pf_shared_stats_t s = sstats(a);
	uint64_t off;
	int bad = 0;
	while (read(0, &off, sizeof(off)) == (ssize_t)sizeof(off)) {
		char *p = pf_shared_address(a, off);
		if (!p || (uint64_t)(uintptr_t)p != s.base + off || pf_shared_free(a, p) != 0)
			bad++;
	}
	if (pf_shared_detach(a) != 0)
		bad++;
	return bad ? 3 : 0;
}

static void test_fork_child_gets_own_caches(void)
{
	new_name("fork");
	pf_shared_t *a = create_4k();
	if (!a)
		return;
	char *mine = pf_shared_alloc(a, 100);
	CHECK(mine != NULL);
	pid_t pid = fork();
	if (pid == 0) {
		/* the parent's cache is not ours: a new slot, a new page */
		char *p = pf_shared_alloc(a, 100);
		int ok = p && pf_page_query(p, &(pf_page_info_t){ 0 }) == 0 &&
			 (uintptr_t)p / PF_FRAG_PAGE_SIZE != (uintptr_t)mine / PF_FRAG_PAGE_SIZE &&
			 pf_shared_free(a, mine) == 0 && pf_shared_free(a, p) == 0 && sstats(a).caches == 2;
		pf_shared_detach(a);
		_exit(ok ? 0 : 1);
	}
	int status = wait_child(pid);
	CHECK(WIFEXITED(status) && WEXITSTATUS(status) == 0);
	pf_shared_stats_t s = sstats(a);
	CHECK_EQ(s.caches, 1);
	CHECK_EQ(s.frees, 2);
	pf_shared_thread_flush(a);
	CHECK_EQ(sstats(a).pages_in_use, 0);
	destroy(a);
}

/*
 * A process dies holding fragments and a cache: another reaps it. The dead
 * cache's bias goes back, so its page returns once the fragments it sent us
 * are freed; the fragments it kept stay lost, pinning their page.
 */
static void test_dead_process_reaped(void)
{
	new_name("dead");
	pf_shared_t *a = create_4k();
	if (!a)
		return;
	int from_child[2], to_child[2];
	CHECK_EQ(pipe(from_child), 0);
	CHECK_EQ(pipe(to_child), 0);
	pid_t pid = fork();
	if (pid == 0) {
		close(from_child[0]);
		close(to_child[1]);
		for (int i = 0; i < 10; i++) { /* 10 sent: its first page, full */
			char *p = pf_shared_alloc(a, 3200);
			uint64_t off = pf_shared_offset(a, p);
			if (write(from_child[1], &off, sizeof(off)) != (ssize_t)sizeof(off))
				_exit(1);
		}
		for (int i = 0; i < 40; i++) /* kept: 8 per page, 5 pages, the last its current one */
			pf_shared_alloc(a, 4000);
		char go;
		if (read(to_child[0], &go, 1) != 1) /* alive until the parent has tried to reap it */
			_exit(1);
		raise(SIGKILL);
	}
	close(from_child[1]);
	close(to_child[0]);
	uint64_t offs[10];
	int n = 0;
	while (n < 10 && read(from_child[0], &offs[n], sizeof(offs[n])) == (ssize_t)sizeof(offs[n]))
		n++;
	CHECK_EQ(n, 10);
	CHECK_EQ(pf_shared_reap(a), 0); /* alive: its liveness lock is held */
	CHECK_EQ(write(to_child[1], "k", 1), 1);
	int status = wait_child(pid);
	CHECK(WIFSIGNALED(status) && WTERMSIG(status) == SIGKILL);
	pf_shared_stats_t s = sstats(a);
	CHECK_EQ(s.processes, 2);
	CHECK_EQ(s.caches, 1);
	CHECK_EQ(pf_shared_reap(a), 1);
	CHECK_EQ(pf_shared_reap(a), 0);
	s = sstats(a);
	CHECK_EQ(s.processes, 1);
	CHECK_EQ(s.caches, 0);
	CHECK_EQ(s.reaped_processes, 1);
	CHECK_EQ(s.reaped_caches, 1);
	CHECK_EQ(s.lost_pages, 0);
	uint64_t in_use_before_frees = s.pages_in_use;
	for (int i = 0; i < n; i++)
		CHECK_EQ(pf_shared_free(a, pf_shared_address(a, offs[i])), 0);
	s = sstats(a);
	/* the first page (abandoned, every fragment now back) and nothing else came back */
	CHECK_EQ(in_use_before_frees - s.pages_in_use, 8);
	/* lost: the pages holding the 40 kept 4000-byte fragments (8 per page) */
	CHECK_EQ(s.pages_in_use, 5 * 8);
	check_accounting(a);
	destroy(a);
}

static void test_dead_lock_holder(void)
{
	new_name("lock");
	pf_shared_t *a = create_4k();
	if (!a)
		return;
	pid_t pid = fork();
	if (pid == 0) {
		pf_debug_shared_hold_lock(a);
		_exit(0); /* dies holding the allocator lock */
	}
	int status = wait_child(pid);
	CHECK(WIFEXITED(status) && WEXITSTATUS(status) == 0);
	void *p = pf_shared_alloc(a, 500); /* takes the lock: EOWNERDEAD, rebuild */
	CHECK(p != NULL);
	pf_shared_stats_t s = sstats(a);
	CHECK_EQ(s.lock_recoveries, 1);
	CHECK_EQ(s.pages_in_use, 8);
	check_accounting(a);
	CHECK_EQ(pf_shared_free(a, p), 0);
	pf_shared_thread_flush(a);
	s = sstats(a);
	CHECK_EQ(s.pages_in_use, 0);
	CHECK_EQ(s.pages_free, s.pages_total - 16);
	destroy(a);
}

static void test_other_version_refused(void)
{
	new_name("version");
	pf_shared_t *a = create_4k();
	if (!a)
		return;
	char path[300];
	snprintf(path, sizeof(path), "%s", pf_shared_path(a));
	CHECK_EQ(pf_shared_detach(a), 0); /* gone from this process: attach must read the file */
	int fd = open(path, O_RDWR);
	CHECK(fd >= 0);
	uint32_t version = 99, real = PF_SHARED_LAYOUT_VERSION;
	CHECK_EQ(pwrite(fd, &version, sizeof(version), 8), (ssize_t)sizeof(version));
	errno = 0;
	CHECK(pf_shared_attach(name, NULL) == NULL);
	CHECK_EQ(errno, EPROTO);
	CHECK(strstr(pf_last_error_message(), "layout version 99") != NULL);
	char reads[32];
	snprintf(reads, sizeof(reads), "reads version %u", real);
	CHECK(strstr(pf_last_error_message(), reads) != NULL);
	uint64_t magic = 0x1234;
	CHECK_EQ(pwrite(fd, &real, sizeof(real), 8), (ssize_t)sizeof(real));
	uint64_t good;
	CHECK_EQ(pread(fd, &good, sizeof(good), 0), (ssize_t)sizeof(good));
	CHECK_EQ(pwrite(fd, &magic, sizeof(magic), 0), (ssize_t)sizeof(magic));
	CHECK(pf_shared_attach(name, NULL) == NULL);
	CHECK_EQ(errno, EPROTO);
	CHECK(strstr(pf_last_error_message(), "not a pyfrag shared arena") != NULL);
	CHECK_EQ(pwrite(fd, &good, sizeof(good), 0), (ssize_t)sizeof(good));
	close(fd);
	a = pf_shared_attach(name, NULL); /* restored: attaches again */
	CHECK(a != NULL);
	if (a)
		destroy(a);
}

/* Detach unmaps what this process mapped, whatever another process wrote into the header. */
static void test_detach_ignores_a_rewritten_size(void)
{
	new_name("unmap");
	pf_shared_t *a = create_4k();
	if (!a)
		return;
	pf_shared_stats_t s = sstats(a);
	struct pf_shared_header *h = (struct pf_shared_header *)(uintptr_t)s.base;
	uint64_t mapped = s.map_bytes;
	CHECK_EQ(h->map_bytes, mapped);
	char *after = (char *)h + mapped;
	void *neighbour = mmap(after, 4096, PROT_READ | PROT_WRITE,
			       MAP_PRIVATE | MAP_ANONYMOUS | MAP_FIXED_NOREPLACE, -1, 0);
	CHECK(neighbour == after);
	h->map_bytes = mapped + (64u << 20); /* as a hostile or broken peer could */
	CHECK_EQ(pf_shared_detach(a), 0);
	unsigned char resident;
	CHECK_EQ(mincore(after, 4096, &resident), 0); /* still mapped */
	munmap(neighbour, 4096);
	CHECK_EQ(pf_shared_unlink(name, NULL), 0);
}

static void test_permissions(void)
{
	new_name("perm");
	mode_t old = umask(077);
	pf_shared_t *a = pf_shared_create(name, ARENA_BYTES, 0640, PF_SHARED_BACKING_4K, NULL);
	umask(old);
	CHECK(a != NULL);
	if (!a)
		return;
	struct stat st;
	CHECK_EQ(stat(pf_shared_path(a), &st), 0);
	CHECK_EQ(st.st_mode & 0777, 0640); /* the asked mode, whatever the umask */
	CHECK_EQ(chmod(pf_shared_path(a), 0600), 0);
	if (geteuid() == 0) {
		pid_t pid = fork();
		if (pid == 0) {
			if (setgid(65534) != 0 || setuid(65534) != 0)
				_exit(2);
			pf_shared_t *b = pf_shared_attach(name, NULL);
			_exit(b == NULL && errno == EACCES ? 0 : 1);
		}
		int status = wait_child(pid);
		CHECK(WIFEXITED(status) && WEXITSTATUS(status) == 0);
	} else {
		printf("# not root: another user's refusal is not tried\n");
	}
	destroy(a);
}

static void test_refusals(void)
{
	const char *bad_names[] = { "", ".hidden", "a/b", "sp ace",
				    "0123456789012345678901234567890123456789012345678", NULL };
	for (int i = 0; bad_names[i]; i++) {
		errno = 0;
		CHECK(pf_shared_create(bad_names[i], 0, 0, 0, NULL) == NULL);
		CHECK_EQ(errno, EINVAL);
		errno = 0;
		CHECK(pf_shared_attach(bad_names[i], NULL) == NULL);
		CHECK_EQ(errno, EINVAL);
	}
	CHECK(pf_shared_create(NULL, 0, 0, 0, NULL) == NULL);
	CHECK_EQ(errno, EINVAL);
	new_name("refuse");
	CHECK(pf_shared_create(name, (size_t)1 << 50, 0, 0, NULL) == NULL);
	CHECK_EQ(errno, EINVAL);
	CHECK(pf_shared_create(name, 0, 01777, 0, NULL) == NULL);
	CHECK_EQ(errno, EINVAL);
	CHECK(pf_shared_create(name, 0, 0, 7, NULL) == NULL);
	CHECK_EQ(errno, EINVAL);
	CHECK(pf_shared_attach(name, NULL) == NULL);
	CHECK_EQ(errno, ENOENT);
	CHECK_EQ(pf_shared_unlink(name, NULL), -1);
	CHECK_EQ(errno, ENOENT);

	pf_shared_t *a = create_4k();
	if (!a)
		return;
	CHECK(pf_shared_create(name, ARENA_BYTES, 0, PF_SHARED_BACKING_4K, NULL) == NULL);
	CHECK_EQ(errno, EEXIST);
	pf_shared_t *again = pf_shared_attach(name, NULL); /* counted: the same handle */
	CHECK(again == a);
	CHECK_EQ(pf_shared_detach(again), 0);
	CHECK_EQ(sstats(a).processes, 1);

	int local;
	CHECK_EQ(pf_shared_free(a, &local), -1);
	CHECK_EQ(errno, EINVAL);
	CHECK_EQ(pf_shared_offset(a, &local), UINT64_MAX);
	CHECK(pf_shared_address(a, 0) == NULL);
	CHECK(pf_shared_address(a, sstats(a).map_bytes) == NULL);
	CHECK(pf_shared_alloc(a, 0) == NULL);
	CHECK_EQ(errno, EINVAL);
	CHECK(pf_shared_alloc(a, PF_FRAG_PAGE_SIZE + 1) == NULL);
	CHECK_EQ(errno, E2BIG);
	CHECK(pf_shared_alloc_align(a, 64, 3) == NULL);
	CHECK_EQ(errno, EINVAL);
	char *p = pf_shared_alloc(a, 64);
	CHECK_EQ(pf_shared_free(a, p), 0);
	CHECK_EQ(pf_shared_free(a, p), -1); /* every reference of the cache's page is back */
	CHECK_EQ(errno, EINVAL);
	CHECK_EQ(pf_shared_free(a, p + 128), -1); /* past what the page handed out */
	CHECK(sstats(a).invalid_frees >= 3);
	CHECK(pf_shared_alloc(NULL, 64) == NULL);
	CHECK_EQ(errno, EINVAL);
	CHECK_EQ(pf_shared_stats(a, NULL, 0), -1);
	pf_shared_stats_t s;
	CHECK_EQ(pf_shared_stats(a, &s, 7), -1);
	destroy(a);
	/* a detached handle is refused, not followed */
	CHECK(pf_shared_alloc(a, 64) == NULL);
	CHECK_EQ(errno, EINVAL);
	CHECK_EQ(pf_shared_detach(a), -1);
	CHECK(pf_shared_path(a) == NULL);
	CHECK(pf_shared_alloc((pf_shared_t *)&local, 64) == NULL);
}

/* Up to the last page: the reserve, then ENOMEM; everything comes back. */
static void test_exhaustion(void)
{
	new_name("full");
	pf_shared_t *a = create_4k();
	if (!a)
		return;
	enum { MAX = 4096 };
	static void *held[MAX];
	int n = 0;
	while (n < MAX && (held[n] = pf_shared_alloc(a, 4096)) != NULL)
		n++;
	CHECK_EQ(errno, ENOMEM);
	pf_shared_stats_t s = sstats(a);
	CHECK_EQ(n, ARENA_BYTES / PF_PAGE_SIZE); /* every page, the reserve's 16 included */
	CHECK_EQ(s.reserve_pages, 16);
	CHECK_EQ(s.pages_free, 0);
	CHECK(s.alloc_failures >= 1);
	for (int i = 0; i < n; i++)
		CHECK_EQ(pf_shared_free(a, held[i]), 0);
	pf_shared_thread_flush(a);
	s = sstats(a);
	CHECK_EQ(s.pages_in_use, 0);
	CHECK_EQ(s.reserve_free_pages, 16);
	CHECK_EQ(s.reserve_returns, 16);
	check_accounting(a);
	destroy(a);
}

static pf_shared_t *thread_arena;
static void *thread_body(void *unused)
{
	(void)unused;
	for (int i = 0; i < 10000; i++) {
		void *p = pf_shared_alloc(thread_arena, 1 + (size_t)i % 2000);
		if (!p || pf_free(p) != 0)
			return (void *)1;
	}
	return NULL;
}

static void test_threads_each_get_a_cache(void)
{
	new_name("threads");
	pf_shared_t *a = thread_arena = create_4k();
	if (!a)
		return;
	pthread_t th[4];
	for (int i = 0; i < 4; i++)
		CHECK_EQ(pthread_create(&th[i], NULL, thread_body, NULL), 0);
	for (int i = 0; i < 4; i++) {
		void *ret;
		CHECK_EQ(pthread_join(th[i], &ret), 0);
		CHECK(ret == NULL);
	}
	pf_shared_stats_t s = sstats(a);
	CHECK_EQ(s.allocs, 40000);
	CHECK_EQ(s.frees, 40000);
	CHECK_EQ(s.caches, 0); /* each thread's cache went back at its exit */
	CHECK_EQ(s.pages_in_use, 0);
	destroy(a);
}

/* kB of one smaps field of the mapping starting at base (-1 if not found). */
static long smaps_kb(uint64_t base, const char *field)
{
	FILE *f = fopen("/proc/self/smaps", "r");
	if (!f)
		return -1;
	char line[512];
	bool in = false;
	long kb = -1;
	size_t flen = strlen(field);
	while (fgets(line, sizeof(line), f)) {
		unsigned long long start, end;
		if (sscanf(line, "%llx-%llx ", &start, &end) == 2 && strchr(line, '-') < strchr(line, ' ')) {
			in = start == base;
			continue;
		}
		if (in && strncmp(line, field, flen) == 0 && line[flen] == ':') {
			kb = strtol(line + flen + 1, NULL, 10);
			break;
		}
	}
	fclose(f);
	return kb;
}

/* THP backing where shmem may take transparent hugepages (CI sets shmem_enabled=advise). */
static void test_thp_backing(void)
{
	new_name("thp");
	pf_shared_t *a = pf_shared_create(name, ARENA_BYTES, 0, PF_SHARED_BACKING_THP, NULL);
	if (!a) {
		printf("# THP arena not possible here: %s\n", pf_last_error_message());
		CHECK(errno == ENOTSUP);
		return;
	}
	pf_shared_stats_t s = sstats(a);
	CHECK_EQ(s.backing, PF_SHARED_BACKING_THP);
	/* populated at creation with hugepages: the whole mapping is PMD-mapped */
	CHECK_EQ(smaps_kb(s.base, "ShmemPmdMapped") + (smaps_kb(s.base, "FilePmdMapped") > 0
							      ? smaps_kb(s.base, "FilePmdMapped") : 0),
		 (long)(s.map_bytes / 1024));
	destroy(a);
}

/* Hugetlb backing when there is a hugetlbfs mount and pool pages (CI has both). */
static void test_hugetlb_backing(void)
{
	new_name("huge");
	pf_shared_t *a = pf_shared_create(name, 2u << 20, 0, PF_SHARED_BACKING_HUGETLB, NULL);
	if (!a) {
		printf("# hugetlb arena not possible here: %s\n", pf_last_error_message());
		CHECK(errno == ENOMEM);
		return;
	}
	pf_shared_stats_t s = sstats(a);
	CHECK_EQ(s.backing, PF_SHARED_BACKING_HUGETLB);
	char *p = pf_shared_alloc(a, 32768);
	CHECK(p != NULL);
	if (p)
		memset(p, 1, 32768);
	/* the header's and the touched frag page's hugepages */
	CHECK_EQ(smaps_kb(s.base, "Shared_Hugetlb") + smaps_kb(s.base, "Private_Hugetlb"), 4096);
	CHECK_EQ(pf_shared_free(a, p), 0);
	destroy(a);
}

int main(int argc, char **argv)
{
	self_path = argv[0];
	if (argc == 3 && strcmp(argv[1], "attach") == 0)
		return attach_role(argv[2]);
	RUN(test_create_and_layout);
	RUN(test_cross_process_free);
	RUN(test_fork_child_gets_own_caches);
	RUN(test_dead_process_reaped);
	RUN(test_dead_lock_holder);
	RUN(test_other_version_refused);
	RUN(test_detach_ignores_a_rewritten_size);
	RUN(test_permissions);
	RUN(test_refusals);
	RUN(test_exhaustion);
	RUN(test_threads_each_get_a_cache);
	RUN(test_thp_backing);
	RUN(test_hugetlb_backing);
	return check_summary();
}
