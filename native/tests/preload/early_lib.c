// SPDX-License-Identifier: GPL-2.0-only
/*
 * A library preloaded after pyfrag (LD_PRELOAD="libpyfrag.so early_lib.so"):
 * the dynamic loader runs its constructor before pyfrag's, so these calls
 * reach pyfrag's malloc before any pyfrag constructor has run.
 */
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

char *early_block;

__attribute__((constructor)) static void early(void)
{
	void *a = malloc(100), *b = calloc(10, 10), *c = NULL;
	if (posix_memalign(&c, 4096, 5000) != 0)
		_exit(90);
	a = realloc(a, 100000);
	memset(a, 1, 100000);
	free(b);
	free(c);
	free(a);
	early_block = strdup("allocated before the constructors");
	if (!early_block)
		_exit(91);
}
