// SPDX-License-Identifier: GPL-2.0-only
/*
 * One large block, written to (run under an address-space limit, with and
 * without the preload): `big_alloc MiB` mallocs that many MiB, writes every
 * page, reads them back, checks malloc_usable_size and a shrinking realloc, frees, and
 * prints "ok MiB"; a NULL from malloc prints "NULL errno N" and exits 1.
 * Under `ulimit -v 4000000` a 2.5 GiB block must succeed as it does on
 * glibc: pyfrag's arena is not a fixed reservation any more.
 */
#include <errno.h>
#include <malloc.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

int main(int argc, char **argv)
{
	size_t mib = argc > 1 ? strtoul(argv[1], NULL, 10) : 2560;
	size_t size = mib << 20;
	unsigned char *p = malloc(size);
	if (!p) {
		printf("NULL errno %d\n", errno);
		return 1;
	}
	for (size_t i = 0; i < size; i += 4096)
		p[i] = (unsigned char)(i >> 12);
	for (size_t i = 0; i < size; i += 4096)
		if (p[i] != (unsigned char)(i >> 12)) {
			printf("bad byte at %zu\n", i);
			return 2;
		}
	if (malloc_usable_size(p) < size) {
		printf("usable size %zu < %zu\n", malloc_usable_size(p), size);
		return 3;
	}
	unsigned char *q = realloc(p, size - (1u << 20));
	if (!q || q[4096] != 1) {
		printf("realloc %s\n", q ? "lost the bytes" : "failed");
		return 4;
	}
	free(q);
	printf("ok %zu\n", mib);
	return 0;
}
