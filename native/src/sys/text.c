/* SPDX-License-Identifier: GPL-2.0-only */
/*
 * Text without stdio or malloc: decimal and hex digits into a caller's
 * buffer, and a list of pieces written to a file descriptor with as few
 * write(2) calls as fit (the exit summary, the malloc front's abort
 * messages, the arena's warnings). Safe in any state the process is in.
 */
#include "sys/sys.h"

#include <errno.h>
#include <string.h>
#include <unistd.h>

char *pf__format_u64(char *end, uint64_t v, unsigned base)
{
	*end = 0;
	do {
		*--end = "0123456789abcdef"[v % base];
		v /= base;
	} while (v);
	return end;
}

static void write_bytes(int fd, const char *p, size_t left)
{
	while (left) {
		ssize_t n = write(fd, p, left);
		if (n < 0 && errno == EINTR)
			continue;
		if (n <= 0)
			return;
		p += n;
		left -= (size_t)n;
	}
}

/* Joined in one buffer first: one write(2) keeps it whole next to other processes' output. */
void pf__write_all(int fd, const char *const *pieces)
{
	int saved = errno;
	char buf[4096];
	size_t used = 0;
	for (; *pieces; pieces++) {
		size_t len = strlen(*pieces);
		if (used + len > sizeof(buf)) {
			write_bytes(fd, buf, used);
			used = 0;
		}
		if (len > sizeof(buf))
			write_bytes(fd, *pieces, len);
		else {
			memcpy(buf + used, *pieces, len);
			used += len;
		}
	}
	write_bytes(fd, buf, used);
	errno = saved;
}
