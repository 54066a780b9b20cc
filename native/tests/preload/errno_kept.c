/*
 * errno after successful allocations, whoever serves them: every call here
 * must leave errno alone when it succeeds (glibc does). Run with
 * PYFRAG_FAULT_META=1, pyfrag cannot initialise, so every request goes to
 * libc and init is retried every 256th call: that retry's failure must not
 * leak ENOMEM into a call that succeeded. Prints "ok N" or the first call
 * that changed errno.
 */
#include <errno.h>
#include <malloc.h>
#include <stdio.h>
#include <stdlib.h>

int main(void)
{
	int calls = 0;
	for (int i = 0; i < 3000; i++) {
		void *p = NULL;
		const char *name;
		errno = 0;
		switch (i % 6) {
		case 0: name = "malloc"; p = malloc(100 + (size_t)i); break;
		case 1: name = "calloc"; p = calloc(3, 100 + (size_t)i); break;
		case 2: name = "realloc"; p = realloc(NULL, 100 + (size_t)i); break;
		case 3: name = "memalign"; p = memalign(64, 100 + (size_t)i); break;
		case 4: name = "aligned_alloc"; p = aligned_alloc(256, 512); break;
		default: name = "valloc"; p = valloc(100); break;
		}
		if (!p) {
			printf("%s failed at call %d\n", name, i);
			return 1;
		}
		if (errno != 0) {
			printf("%s succeeded but set errno %d at call %d\n", name, errno, i);
			return 1;
		}
		errno = 0;
		p = realloc(p, 5000 + (size_t)i);
		if (!p || errno != 0) {
			printf("realloc to grow: %p errno %d at call %d\n", p, errno, i);
			return 1;
		}
		free(p);
		calls += 2;
	}
	printf("ok %d\n", calls);
	return 0;
}
