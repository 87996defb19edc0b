// SPDX-License-Identifier: MIT
/*
 * pair.c - the allocator's fast path: a loop of malloc(S), write one byte,
 * free, repeated N times in one thread.  Every iteration frees the block it
 * just allocated, so a good allocator serves it from a per-thread cache and
 * the loop measures nothing but the malloc and free fast paths.
 *
 *   bench-pair [-s SIZE] [-n ITERATIONS]
 *
 * Prints one line: the size, the iterations and the loop's own wall time per
 * pair (CLOCK_MONOTONIC around the loop only).  bench/fastpath.sh
 * runs it under callgrind with two iteration counts and takes the difference,
 * so start-up and the timing calls cancel out of the instruction count.
 */
#define _GNU_SOURCE
#include <time.h>

#include "common.h"

#define PROG "bench-pair"

static double now_ns(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (double)ts.tv_sec * 1e9 + (double)ts.tv_nsec;
}

int main(int argc, char **argv)
{
	long size = 64, iterations = 10000000, i;
	double t0, t1;
	int opt;

	while ((opt = getopt(argc, argv, "s:n:")) != -1) {
		switch (opt) {
		case 's': size = bench_parse_long(PROG, 's', optarg, 1, 1L << 30); break;
		case 'n': iterations = bench_parse_long(PROG, 'n', optarg, 1, 1L << 40); break;
		default:
			fprintf(stderr, "usage: %s [-s SIZE] [-n ITERATIONS]\n", PROG);
			return 2;
		}
	}

	t0 = now_ns();
	for (i = 0; i < iterations; i++) {
		char *p = malloc((size_t)size);

		if (!p)
			bench_oom(PROG, (size_t)size);
		/* One write, and keep the compiler from eliding the pair. */
		*(volatile char *)p = (char)i;
		__asm__ volatile("" : : "r"(p) : "memory");
		free(p);
	}
	t1 = now_ns();
	printf("pair size=%ld iterations=%ld ns_per_pair=%.2f\n", size, iterations,
	       (t1 - t0) / (double)iterations);
	return 0;
}
