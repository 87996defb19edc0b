// SPDX-License-Identifier: MIT
/*
 * common.h - helpers shared by the allocator workloads in bench/workloads/.
 *
 * Every workload is a plain C program that calls malloc/free/realloc; the
 * allocator under test is whatever the dynamic linker binds those names to
 * (LD_PRELOAD=libkmm.so, libjemalloc.so.2, ... or glibc's own).  The helpers
 * here are deliberately allocator-free: option parsing, a small seeded random
 * number generator, object tagging and verification, thread start-up.
 *
 * Conventions for every workload:
 *   - the amount of work is fixed by the options (not by a time budget), and
 *     the total is divided between the threads, so wall time is comparable
 *     between allocators and thread counts;
 *   - each thread draws from its own generator, seeded from -S and its own
 *     index (never from the clock), so the one line printed on stdout is the
 *     same for a given seed and thread count whatever the allocator;
 *   - every object carries a 64-bit tag in its first 8 bytes (and, when it is
 *     larger, the tag's low byte in its last byte), checked when it is freed, so an
 *     allocator that hands out overlapping or corrupted blocks is caught:
 *     the program prints "CORRUPT ..." on stderr and exits with status 3.
 */
#ifndef KMM_BENCH_COMMON_H
#define KMM_BENCH_COMMON_H

#include <errno.h>
#include <pthread.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#define BENCH_PAGE 4096u

/* ---- errors ---- */

static inline void bench_die(const char *prog, const char *what)
{
	fprintf(stderr, "%s: %s\n", prog, what);
	exit(2);
}

static inline void bench_oom(const char *prog, size_t size)
{
	fprintf(stderr, "%s: allocation of %zu bytes failed\n", prog, size);
	exit(2);
}

/* A corrupted object: the allocator broke a block's contents. */
static inline void bench_corrupt(const char *prog, const void *p, uint64_t want, uint64_t got)
{
	fprintf(stderr, "CORRUPT %s: object %p holds %016llx, expected %016llx\n", prog, p,
		(unsigned long long)got, (unsigned long long)want);
	exit(3);
}

/* ---- options ---- */

/* Parse a decimal option value in [lo, hi] or exit with a message. */
static inline long bench_parse_long(const char *prog, char opt, const char *s, long lo, long hi)
{
	char *end;
	long v;

	errno = 0;
	v = strtol(s, &end, 10);
	if (errno || end == s || *end != '\0' || v < lo || v > hi) {
		fprintf(stderr, "%s: -%c wants an integer in %ld..%ld, not '%s'\n", prog, opt, lo,
			hi, s);
		exit(2);
	}
	return v;
}

/* ---- random numbers: splitmix64, one state per thread ---- */

static inline uint64_t rng_next(uint64_t *state)
{
	uint64_t z = (*state += 0x9E3779B97F4A7C15ull);

	z = (z ^ (z >> 30)) * 0xBF58476D1CE4E5B9ull;
	z = (z ^ (z >> 27)) * 0x94D049BB133111EBull;
	return z ^ (z >> 31);
}

/* A seed for stream (a, b, c) of the run seeded with @seed. */
static inline uint64_t rng_seed(uint64_t seed, uint64_t a, uint64_t b, uint64_t c)
{
	uint64_t s = seed ^ 0x6A09E667F3BCC909ull;

	s = rng_next(&s) ^ (a * 0xD1B54A32D192ED03ull);
	s = rng_next(&s) ^ (b * 0xAEF17502108EF2D9ull);
	s = rng_next(&s) ^ (c * 0xDB4F0B9175AE2165ull);
	return rng_next(&s);
}

/* Uniform in [0, n), n > 0. */
static inline uint64_t rng_below(uint64_t *state, uint64_t n)
{
	return (uint64_t)(((unsigned __int128)rng_next(state) * n) >> 64);
}

/* Uniform in [lo, hi]. */
static inline size_t rng_range(uint64_t *state, size_t lo, size_t hi)
{
	return lo + (size_t)rng_below(state, (uint64_t)(hi - lo) + 1);
}

static inline unsigned bench_log2(size_t v)
{
	unsigned l = 0;

	while (v >>= 1)
		l++;
	return l;
}

/*
 * Log-uniform in [lo, hi]: a power-of-two band is chosen uniformly, then a
 * size uniformly inside it, so small sizes are as frequent as a real heap
 * makes them while large ones still come up.  The bands are those that
 * [lo, hi] overlaps by more than one size: for a power-of-two hi, the band
 * [hi, 2 hi) holds only hi itself (until session 12 it was drawn as often
 * as any other, so 1 block in 14 of alloc-test's was exactly 64 KiB and 1
 * in 10 of large's exactly 32 MiB).
 */
static inline size_t rng_logsize(uint64_t *state, size_t lo, size_t hi)
{
	unsigned blo = bench_log2(lo), bhi = bench_log2(hi > lo ? hi - 1 : hi);
	unsigned b = blo + (unsigned)rng_below(state, bhi - blo + 1);
	size_t from = (size_t)1 << b, to = (from << 1) - 1;

	if (from < lo)
		from = lo;
	if (to > hi)
		to = hi;
	return rng_range(state, from, to);
}

/* ---- object tags ---- */

/* Write @tag into the first 8 bytes and (size > 8) its low byte into the last one. */
static inline void tag_write(void *p, size_t size, uint64_t tag)
{
	memcpy(p, &tag, sizeof(tag));
	if (size > sizeof(tag))
		((unsigned char *)p)[size - 1] = (unsigned char)tag;
}

/* Check the tag written by tag_write (size >= 8) and return it. */
static inline uint64_t tag_check(const char *prog, const void *p, size_t size, uint64_t want)
{
	uint64_t got;

	memcpy(&got, p, sizeof(got));
	if (got != want)
		bench_corrupt(prog, p, want, got);
	if (size > sizeof(got) && ((const unsigned char *)p)[size - 1] != (unsigned char)want)
		bench_corrupt(prog, p, want & 0xff, ((const unsigned char *)p)[size - 1]);
	return got;
}

/* Write one byte in every page of [p + from, p + to), as a program filling a buffer would fault it in. */
static inline void touch_pages(void *p, size_t from, size_t to)
{
	volatile unsigned char *c = p;
	size_t off;

	for (off = from; off < to; off += BENCH_PAGE)
		c[off] = (unsigned char)off;
}

static inline void *bench_malloc(const char *prog, size_t size)
{
	void *p = malloc(size);

	if (!p)
		bench_oom(prog, size);
	return p;
}

static inline void *bench_realloc(const char *prog, void *old, size_t size)
{
	void *p = realloc(old, size);

	if (!p)
		bench_oom(prog, size);
	return p;
}

/* ---- threads ---- */

/*
 * Run fn(arg + i * stride) in @n threads and wait for all of them.
 * A thread that cannot be started is fatal: the work would not be fixed.
 */
static inline void bench_run_threads(const char *prog, int n, void *(*fn)(void *), void *arg,
				     size_t stride)
{
	pthread_t tid[256];
	int i;

	if (n < 1 || n > 256)
		bench_die(prog, "thread count out of range");
	for (i = 0; i < n; i++)
		if (pthread_create(&tid[i], NULL, fn, (char *)arg + (size_t)i * stride))
			bench_die(prog, "pthread_create failed");
	for (i = 0; i < n; i++)
		pthread_join(tid[i], NULL);
}

#endif /* KMM_BENCH_COMMON_H */
