/* SPDX-License-Identifier: MIT */
/*
 * test_bench_sizes.c - the benchmark suite's size generator draws what its
 * workloads document: log-uniform over [lo, hi], every power-of-two band
 * about as often as the next, and no band that holds a single size (until
 * 592b974 a power-of-two hi made one: 1 block in 14 of alloc-test's was
 * exactly 64 KiB, 1 in 10 of large's exactly 32 MiB).
 */
#include "common.h"

/* The suite's generator, under names that do not clash with this directory's. */
#define rng_next bench_rng_next
#define rng_seed bench_rng_seed
#define rng_below bench_rng_below
#define rng_range bench_rng_range
#include "../../bench/workloads/common.h"

#define DRAWS 1400000

static void check_range(size_t lo, size_t hi)
{
	unsigned long bands[64] = {0}, at_hi = 0;
	unsigned blo = bench_log2(lo), bhi = bench_log2(hi - 1);
	uint64_t rng = bench_rng_seed(test_seed, lo, hi, 0);
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
	test_init("test_bench_sizes", 0x73697a6573303031ull);
	check_range(8, 65536);            /* alloc-test */
	check_range(65536, 32u << 20);    /* large */
	check_range(16, 1000);            /* a hi that is no power of two */
	return test_finish();
}
