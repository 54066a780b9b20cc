// SPDX-License-Identifier: GPL-2.0-only
/*
 * fork() while other threads allocate and free: the allocator's locks must
 * not be inherited held. Four threads churn malloc/realloc/free of every
 * size class; the main thread forks 200 times. Each child allocates, frees,
 * starts a thread of its own, and either exits or execs /bin/sh -c 'exit 7'.
 * The parent checks every child's status. Prints "forks ok". A deadlock
 * shows as a timeout in the test that runs this.
 */
#include <pthread.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/wait.h>
#include <unistd.h>

enum { CHURNERS = 4, FORKS = 200 };
static atomic_int stop;

static void *churn(void *arg)
{
	size_t seed = (size_t)arg;
	void *held[64] = { 0 };
	while (!atomic_load(&stop)) {
		size_t i = (seed = seed * 6364136223846793005u + 1442695040888963407u) >> 58;
		size_t n = (seed >> 20) % 5 == 0 ? (seed >> 24) % 200000 : (seed >> 24) % 3000;
		if ((seed >> 40) % 97 == 0)
			n = 3u << 20;
		if (held[i] && (seed >> 30) % 2)
			held[i] = realloc(held[i], n + 1);
		else {
			free(held[i]);
			held[i] = malloc(n + 1);
		}
		memset(held[i], 1, n + 1 < 64 ? n + 1 : 64);
	}
	for (int i = 0; i < 64; i++)
		free(held[i]);
	return NULL;
}

static void *child_thread(void *arg)
{
	void *p = malloc(1000);
	memset(p, 2, 1000);
	free(p);
	return arg;
}

static void child(int round)
{
	void *p[100];
	for (int i = 0; i < 100; i++)
		p[i] = malloc((size_t)(i * 97 + 1));
	for (int i = 0; i < 100; i++)
		free(p[i]);
	pthread_t t;
	if (pthread_create(&t, NULL, child_thread, NULL) != 0 || pthread_join(t, NULL) != 0)
		_exit(3);
	if (round % 4 == 0) {
		execl("/bin/sh", "sh", "-c", "exit 7", (char *)NULL);
		_exit(4);
	}
	exit(0); /* a normal exit: atexit handlers, destructors, stdio */
}

int main(void)
{
	pthread_t t[CHURNERS];
	for (size_t i = 0; i < CHURNERS; i++)
		pthread_create(&t[i], NULL, churn, (void *)(i + 1));
	int bad = 0;
	for (int round = 0; round < FORKS; round++) {
		pid_t pid = fork();
		if (pid < 0) {
			perror("fork");
			return 1;
		}
		if (pid == 0)
			child(round);
		int status;
		if (waitpid(pid, &status, 0) != pid || !WIFEXITED(status) ||
		    WEXITSTATUS(status) != (round % 4 == 0 ? 7 : 0)) {
			fprintf(stderr, "child %d: status 0x%x\n", round, status);
			bad++;
		}
	}
	atomic_store(&stop, 1);
	for (size_t i = 0; i < CHURNERS; i++)
		pthread_join(t[i], NULL);
	if (bad)
		return 1;
	puts("forks ok");
	return 0;
}
