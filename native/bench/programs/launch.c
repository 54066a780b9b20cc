// SPDX-License-Identifier: GPL-2.0-only
/*
 * launch: runs one program and says how much memory and time it took, for
 * `pyfrag bench --workload programs` (pyfrag/tools/bench_programs.py).
 *
 * Usage: launch RESULT_FILE PRELOAD PROGRAM [ARG]...
 *   PRELOAD is the LD_PRELOAD value for PROGRAM ("" for none); launch itself
 *   never runs under it, so the allocator measured is only the program's.
 * Writes "maxrss_kib <K> wall_ns <N> status <S>" to RESULT_FILE, where K is
 * wait4's ru_maxrss of the child (the largest resident set of the child and
 * the descendants it waited for, as /usr/bin/time %M), N the wall time from
 * fork to reaping, S the exit code (128 + N when signal N killed it).
 * launch is small on purpose: a child inherits its parent's resident pages at
 * fork, and they count towards the child's peak (Python's would: tens of MB).
 * Exit: 0 when RESULT_FILE was written (whatever the program did), 2 usage,
 * 1 when the program could not be started or waited for (message on stderr).
 */
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

static long long now_ns(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (long long)ts.tv_sec * 1000000000LL + ts.tv_nsec;
}

static void start_child(const char *preload, char **argv)
{
	if (preload[0] ? setenv("LD_PRELOAD", preload, 1) : unsetenv("LD_PRELOAD")) {
		perror("launch: LD_PRELOAD");
		_exit(127);
	}
	execvp(argv[0], argv);
	fprintf(stderr, "launch: cannot run %s: %s\n", argv[0], strerror(errno));
	_exit(127);
}

int main(int argc, char **argv)
{
	if (argc < 4) {
		fprintf(stderr, "usage: launch RESULT_FILE PRELOAD PROGRAM [ARG]...\n");
		return 2;
	}
	long long started = now_ns();
	pid_t pid = fork();

	if (pid < 0) {
		perror("launch: fork");
		return 1;
	}
	if (pid == 0)
		start_child(argv[2], argv + 3);

	int status;
	struct rusage usage;
	pid_t got;

	do
		got = wait4(pid, &status, 0, &usage);
	while (got < 0 && errno == EINTR);
	long long wall = now_ns() - started;

	if (got < 0) {
		perror("launch: wait4");
		return 1;
	}
	int code = WIFEXITED(status) ? WEXITSTATUS(status) : 128 + WTERMSIG(status);
	FILE *out = fopen(argv[1], "w");

	if (!out || fprintf(out, "maxrss_kib %ld wall_ns %lld status %d\n", usage.ru_maxrss, wall,
			    code) < 0 || fclose(out)) {
		fprintf(stderr, "launch: cannot write %s: %s\n", argv[1], strerror(errno));
		return 1;
	}
	return 0;
}
