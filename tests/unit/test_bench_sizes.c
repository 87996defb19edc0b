/* SPDX-License-Identifier: MIT */
/*
 * test_bench_sizes.c - the benchmark suite's size generator draws what its
 * workloads document: log-uniform over [lo, hi], every power-of-two band
 * about as often as the next, and no band that holds a single size (until
 * 592b974 a power-of-two hi made one: 1 block in 14 of alloc-test's was
 * exactly 64 KiB, 1 in 10 of large's exactly 32 MiB).
 */
#include "../../bench/workloads/common.h"

/* tests/common.h names its generator as the suite does: this test counts its own checks. */
static unsigned long checks, failed;
#define CHECK(cond, ...)                                                                          \
	do {                                                                                      \
		checks++;                                                                         \
		if (!(cond)) {                                                                    \
			failed++;                                                                 \
			fprintf(stderr, "%s:%d: CHECK(%s) failed: ", __FILE__, __LINE__, #cond);  \
			fprintf(stderr, __VA_ARGS__);                                             \
			fputc('\n', stderr);                                                      \
		}                                                                                 \
	} while (0)

#define DRAWS 1400000

static void check_range(size_t lo, size_t hi)
{
	unsigned long bands[64] = {0}, at_hi = 0;
	unsigned blo = bench_log2(lo), bhi = bench_log2(hi - 1);
	uint64_t rng = rng_seed(1, lo, hi, 0);
	for (long i = 0; i < DRAWS; i++) {
		size_t v = rng_logsize(&rng, lo, hi);
		CHECK(v >= lo && v <= hi, "rng_logsize(%zu, %zu) gave %zu", lo, hi, v);
		bands[bench_log2(v)]++;
		at_hi += v == hi;
	}
	unsigned nb = bhi - blo + 1;
	double want = (double)DRAWS / nb;
	for (unsigned b = blo; b <= bhi; b++)
		CHECK(bands[b] > want * 0.95 && bands[b] < want * 1.05,
		      "%zu..%zu: band 2^%u drawn %lu times, %.0f expected", lo, hi, b, bands[b], want);
	/* Above the last band only hi itself, when it is a power of two. */
	CHECK(bands[bhi + 1] == ((hi & (hi - 1)) == 0 ? at_hi : 0), "%zu..%zu: a draw above the last band",
	      lo, hi);
	/* hi itself is one size of the top band's 2^bhi: far below 1% of the draws. */
	CHECK(at_hi < DRAWS / 1000, "%zu..%zu: %lu draws of exactly %zu", lo, hi, at_hi, hi);
	printf("test_bench_sizes: %zu..%zu: %u bands, %lu draws of %zu\n", lo, hi, nb, at_hi, hi);
}

int main(void)
{
	check_range(8, 65536);            /* alloc-test */
	check_range(65536, 32u << 20);    /* large */
	check_range(16, 1000);            /* a hi that is no power of two */
	printf("test_bench_sizes: %lu checks, %lu failed\n", checks, failed);
	return failed ? 1 : 0;
}
