// SPDX-License-Identifier: GPL-2.0-only
/*
 * A non-PIE program that takes malloc's address (as Debian's python3.11
 * does). The linker then makes the program's own PLT entry malloc's
 * canonical address, and every library's GOT sees that stub rather than the
 * definition calls reach. Under LD_PRELOAD=libpyfrag.so PYFRAG_STATS=1 the
 * exit summary must still appear: pyfrag must know it is the process's
 * malloc. Built with -no-pie (native/SConscript). Prints "ok".
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

void *(*volatile chosen_malloc)(size_t);
void (*volatile chosen_free)(void *);

int main(void)
{
	chosen_malloc = malloc; /* in code, not an initializer: an absolute address in the text */
	chosen_free = free;
	char *p = chosen_malloc(100);
	if (!p)
		return 1;
	memset(p, 1, 100);
	chosen_free(p);
	puts("ok");
	return 0;
}
