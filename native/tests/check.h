/* SPDX-License-Identifier: GPL-2.0-only */
/*
 * A minimal harness for pyfrag's C tests: CHECK(cond) reports the file, line
 * and expression and counts a failure; RUN(test) runs one test function and
 * prints "ok name" or "not ok name"; check_summary() prints the closing line
 * "N passed, N failed" and returns the exit code. pytest runs every test
 * program and asserts on that exit code and output.
 */
#ifndef PF_CHECK_H
#define PF_CHECK_H

#include <stdio.h>
#include <stdlib.h>

static int check_failures_in_test;
static int check_passed, check_failed;

#define CHECK(cond)                                                                   \
	do {                                                                          \
		if (!(cond)) {                                                        \
			fprintf(stderr, "%s:%d: CHECK failed: %s\n", __FILE__, __LINE__, #cond); \
			check_failures_in_test++;                                     \
		}                                                                     \
	} while (0)

#define CHECK_EQ(a, b)                                                                \
	do {                                                                          \
		long long check_a_ = (long long)(a), check_b_ = (long long)(b);      \
		if (check_a_ != check_b_) {                                           \
			fprintf(stderr, "%s:%d: CHECK_EQ failed: %s == %s (%lld != %lld)\n", \
				__FILE__, __LINE__, #a, #b, check_a_, check_b_);      \
			check_failures_in_test++;                                     \
		}                                                                     \
	} while (0)

#define RUN(test)                                                                     \
	do {                                                                          \
		check_failures_in_test = 0;                                           \
		test();                                                               \
		if (check_failures_in_test) {                                         \
			check_failed++;                                               \
			printf("not ok %s\n", #test);                                 \
		} else {                                                              \
			check_passed++;                                               \
			printf("ok %s\n", #test);                                     \
		}                                                                     \
		fflush(stdout);                                                       \
	} while (0)

static inline int check_summary(void)
{
	printf("%d passed, %d failed\n", check_passed, check_failed);
	return check_failed ? 1 : 0;
}

#endif
