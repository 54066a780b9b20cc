// SPDX-License-Identifier: GPL-2.0-only
/*
 * blocks4100: many blocks just above 4 KiB, a program of `pyfrag bench
 * --workload programs` (an allocator that rounds 4,100 bytes up to 8 KiB
 * doubles this program's memory).
 *
 * Allocates COUNT blocks of 4,100 bytes and writes every byte, frees every
 * other one, allocates COUNT/2 again, then checks every live block and frees
 * all. Prints "blocks4100 allocated <n> bad <wrong blocks> sum <sum of the
 * block numbers written>". Usage: blocks4100 [COUNT]; exit 1 out of memory.
 */
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define BLOCK 4100

static unsigned char *make(long number)
{
	unsigned char *b = malloc(BLOCK);

	if (!b) {
		perror("blocks4100: malloc");
		exit(1);
	}
	memset(b, (int)(number & 0xff), BLOCK);
	memcpy(b, &number, sizeof(number));
	return b;
}

static int is_wrong(const unsigned char *b, long number)
{
	long stored;

	memcpy(&stored, b, sizeof(stored));
	if (stored != number)
		return 1;
	for (size_t i = sizeof(number); i < BLOCK; i++)
		if (b[i] != (unsigned char)(number & 0xff))
			return 1;
	return 0;
}

int main(int argc, char **argv)
{
	long count = argc > 1 ? atol(argv[1]) : 100000;

	if (count < 2) {
		fprintf(stderr, "usage: blocks4100 [COUNT] (COUNT >= 2)\n");
		return 2;
	}
	unsigned char **blocks = calloc((size_t)count, sizeof(*blocks));
	long *numbers = calloc((size_t)count, sizeof(*numbers));

	if (!blocks || !numbers) {
		perror("blocks4100: calloc");
		return 1;
	}
	long made = 0, bad = 0, sum = 0;

	for (long i = 0; i < count; i++) {
		numbers[i] = made;
		blocks[i] = make(made++);
	}
	for (long i = 1; i < count; i += 2)
		free(blocks[i]);
	for (long i = 1; i < count; i += 2) {
		numbers[i] = made;
		blocks[i] = make(made++);
	}
	for (long i = 0; i < count; i++) {
		bad += is_wrong(blocks[i], numbers[i]);
		sum += numbers[i];
		free(blocks[i]);
	}
	free(blocks);
	free(numbers);
	printf("blocks4100 allocated %ld bad %ld sum %ld\n", made, bad, sum);
	return 0;
}
