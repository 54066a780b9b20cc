/*
 * fork while another thread writes: the child must see every byte the parent
 * had. With the hugetlb pool dry, a parent's write to a MAP_PRIVATE hugetlb
 * page after fork cannot get a page for the copy and the kernel unmaps the
 * page from the child instead; pyfrag's fork handlers used to let the child
 * inherit its hugetlb chunks and copy them after fork while the parent's
 * other threads kept writing, so children read zeroes (or got SIGBUS).
 *
 * hugetlb_fork BLOCKS ROUNDS: BLOCKS 1 MiB blocks (two per 2 MiB chunk; more
 * than the pool holds, so it runs dry), filled with their index; a thread
 * rewrites one byte of each in turn (the same value: only the copy-on-write
 * matters) while the main thread forks ROUNDS children that check them all.
 * Prints "bad children: N".
 */
#include <pthread.h>
#include <stdatomic.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <unistd.h>

#define BLOCK (1u << 20)

static unsigned char **blocks;
static int nblocks;
static atomic_bool stop;

static void *writer(void *arg)
{
	(void)arg;
	for (unsigned k = 0; !atomic_load_explicit(&stop, memory_order_relaxed); k++) {
		unsigned i = k % (unsigned)nblocks;
		((volatile unsigned char *)blocks[i])[(k * 4096u) % BLOCK] = (unsigned char)i;
	}
	return NULL;
}

int main(int argc, char **argv)
{
	nblocks = argc > 1 ? atoi(argv[1]) : 96;
	int rounds = argc > 2 ? atoi(argv[2]) : 20;
	blocks = malloc(sizeof(*blocks) * (size_t)nblocks);
	for (int i = 0; i < nblocks; i++) {
		blocks[i] = malloc(BLOCK);
		if (!blocks[i]) {
			printf("malloc failed\n");
			return 1;
		}
		memset(blocks[i], i, BLOCK);
	}
	pthread_t thread;
	pthread_create(&thread, NULL, writer, NULL);
	int bad = 0;
	for (int r = 0; r < rounds; r++) {
		pid_t pid = fork();
		if (pid < 0) {
			perror("fork");
			return 1;
		}
		if (pid == 0) {
			for (int i = 0; i < nblocks; i++)
				for (size_t j = 0; j < BLOCK; j += 4096)
					if (blocks[i][j] != (unsigned char)i)
						_exit(1);
			_exit(0);
		}
		int status;
		waitpid(pid, &status, 0);
		if (!WIFEXITED(status) || WEXITSTATUS(status) != 0)
			bad++;
	}
	atomic_store(&stop, true);
	pthread_join(thread, NULL);
	printf("bad children: %d\n", bad);
	return bad != 0;
}
