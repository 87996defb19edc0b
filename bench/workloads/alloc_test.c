// SPDX-License-Identifier: MIT
/*
 * alloc_test.c - random-size churn with a bounded live set, in the style of
 * the alloc-test benchmark: each thread keeps an array of slots and, at every
 * step, frees the object in a random slot and puts a new one of a random size
 * in its place.  Sizes are log-uniform over 8 B..64 KiB (as many 8..15 B
 * objects as 32..64 KiB ones), so the live set mixes small-object caches and
 * larger blocks, and its size stays near slots * mean size.
 *
 * A new object is written at its start, at its end and once in every page, as
 * a program filling the buffer would fault it in.
 *
 *   bench-alloc-test [-t THREADS] [-n OPS] [-k SLOTS] [-m MIN] [-M MAX] [-S SEED]
 *
 * -n is the total number of replacements and -k the total number of slots,
 * both split over the threads.  Prints one line with a checksum of the tags freed.
 */
#define _GNU_SOURCE
#include "common.h"

#define PROG "bench-alloc-test"

struct slot {
	void *p;
	size_t size;
	uint64_t tag;
};

struct worker {
	long ops;
	long nslots;
	size_t min, max;
	uint64_t rng;
	uint64_t sum;
	char pad[64];
};

static void put(struct slot *s, uint64_t *rng, size_t min, size_t max)
{
	s->size = rng_logsize(rng, min, max);
	s->tag = rng_next(rng);
	s->p = bench_malloc(PROG, s->size);
	tag_write(s->p, s->size, s->tag);
	if (s->size > BENCH_PAGE)
		touch_pages(s->p, BENCH_PAGE, s->size - 1);
}

static void *work(void *arg)
{
	struct worker *w = arg;
	struct slot *slots = bench_malloc(PROG, sizeof(*slots) * (size_t)w->nslots);
	uint64_t sum = 0;
	long i;

	for (i = 0; i < w->nslots; i++)
		put(&slots[i], &w->rng, w->min, w->max);
	for (i = 0; i < w->ops; i++) {
		struct slot *s = &slots[rng_below(&w->rng, (uint64_t)w->nslots)];

		sum += tag_check(PROG, s->p, s->size, s->tag);
		free(s->p);
		put(s, &w->rng, w->min, w->max);
	}
	for (i = 0; i < w->nslots; i++) {
		sum += tag_check(PROG, slots[i].p, slots[i].size, slots[i].tag);
		free(slots[i].p);
	}
	free(slots);
	w->sum = sum;
	return NULL;
}

int main(int argc, char **argv)
{
	int threads = 1, opt, t;
	long ops = 1500000, slots = 4096, min = 8, max = 65536;
	uint64_t seed = 1, sum = 0;
	struct worker *workers;

	while ((opt = getopt(argc, argv, "t:n:k:m:M:S:")) != -1) {
		switch (opt) {
		case 't': threads = (int)bench_parse_long(PROG, 't', optarg, 1, 256); break;
		case 'n': ops = bench_parse_long(PROG, 'n', optarg, 0, 1L << 40); break;
		case 'k': slots = bench_parse_long(PROG, 'k', optarg, 1, 1L << 26); break;
		case 'm': min = bench_parse_long(PROG, 'm', optarg, 8, 1L << 30); break;
		case 'M': max = bench_parse_long(PROG, 'M', optarg, 8, 1L << 30); break;
		case 'S': seed = (uint64_t)bench_parse_long(PROG, 'S', optarg, 0, 1L << 62); break;
		default:
			fprintf(stderr, "usage: %s [-t THREADS] [-n OPS] [-k SLOTS] [-m MIN] [-M MAX] [-S SEED]\n",
				PROG);
			return 2;
		}
	}
	if (max < min)
		bench_die(PROG, "-M must be at least -m");
	if (slots < threads)
		slots = threads;

	workers = bench_malloc(PROG, sizeof(*workers) * (size_t)threads);
	for (t = 0; t < threads; t++) {
		memset(&workers[t], 0, sizeof(workers[t]));
		workers[t].ops = ops / threads;
		workers[t].nslots = slots / threads;
		workers[t].min = (size_t)min;
		workers[t].max = (size_t)max;
		workers[t].rng = rng_seed(seed, (uint64_t)t, 0, 4);
	}
	bench_run_threads(PROG, threads, work, workers, sizeof(*workers));
	for (t = 0; t < threads; t++)
		sum += workers[t].sum;
	free(workers);
	printf("alloc-test threads=%d ops=%ld slots=%ld sizes=%ld..%ld seed=%llu checksum=%016llx\n",
	       threads, ops, slots, min, max, (unsigned long long)seed, (unsigned long long)sum);
	return 0;
}
