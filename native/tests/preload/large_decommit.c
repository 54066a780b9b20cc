// SPDX-License-Identifier: GPL-2.0-only
/*
 * Large blocks (chunk runs) freed while the OS refuses to take their memory
 * back (run with PYFRAG_FAULT_DECOMMIT=1:T under the preload): the chunks
 * must stay usable and go back once the OS accepts again, not stay claimed
 * for ever. Allocates and frees 6 MiB blocks, then asks pyfrag (found with
 * dlsym: this program is not linked against it) to trim, and prints the
 * committed bytes left, "committed MiB N", and how many decommits the fault
 * injection refused, "decommit failures N" (-1 without fault injection).
 */
#include <dlfcn.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

int main(void)
{
	for (int round = 0; round < 40; round++) {
		char *p = malloc(6u << 20);
		if (!p)
			return 2;
		memset(p, round, 6u << 20);
		free(p);
	}
	size_t (*trim)(void) = (size_t (*)(void))dlsym(RTLD_DEFAULT, "pf_trim");
	int (*stats_get)(void *, size_t) = (int (*)(void *, size_t))dlsym(RTLD_DEFAULT, "pf_stats_get");
	const char *(*field)(size_t) = (const char *(*)(size_t))dlsym(RTLD_DEFAULT, "pf_stats_field_name");
	if (!trim || !stats_get || !field)
		return 3; /* not preloaded */
	trim();
	uint64_t stats[64] = { 0 };
	if (stats_get(stats, sizeof(stats)) != 0)
		return 4;
	for (size_t i = 0; field(i); i++) {
		if (strcmp(field(i), "committed_bytes") == 0) /* after size and version: 8 bytes */
			printf("committed MiB %llu\n", (unsigned long long)(stats[1 + i] >> 20));
	}
	const char *(*site_name)(int) = (const char *(*)(int))dlsym(RTLD_DEFAULT, "pf_debug_fault_name");
	int (*fault_get)(int, uint64_t *, uint64_t *) =
		(int (*)(int, uint64_t *, uint64_t *))dlsym(RTLD_DEFAULT, "pf_debug_fault_get");
	long long refused = -1;
	for (int site = 0; site_name && fault_get && site_name(site); site++) {
		uint64_t calls = 0, failed = 0;
		if (strcmp(site_name(site), "decommit") == 0 && fault_get(site, &calls, &failed) == 0)
			refused = (long long)failed;
	}
	printf("decommit failures %lld\n", refused);
	return 0;
}
