// SPDX-License-Identifier: MIT
/*
 * large.c - large blocks: 64 KiB..32 MiB (log-uniform), allocated and filled
 * with memset, resized with realloc, freed.  What it measures is how an
 * allocator gets big blocks from the OS and gives them back: an allocator
 * that keeps freed blocks mapped saves the page faults of the next memset
 * (and shows a larger RSS), one that unmaps at once pays them each time;
 * realloc can grow in place, remap, or copy.
 *
 * Each thread keeps a few slots.  A step takes a random slot:
 *   empty       allocate a new block and memset all of it;
 *   50%         free the block and allocate a new one (memset);
 *   30%         realloc to a new random size, memset the part that is new;
 *   20%         free the block and leave the slot empty.
 * Before a block is freed or after it is resized, its first and last bytes
 * and one byte in the middle are checked against the fill.
 *
 *   bench-large [-t THREADS] [-n STEPS] [-k SLOTS] [-m MIN] [-M MAX] [-S SEED]
 *
 * -n is the total number of steps and -k the total number of slots, both
 * split over the threads.  Prints one line with a checksum of sizes and fills.
 */
#define _GNU_SOURCE
#include "common.h"

#define PROG "bench-large"

struct slot {
	unsigned char *p;
	size_t size;
	unsigned char fill;
};

struct worker {
	long steps;
	long nslots;
	size_t min, max;
	uint64_t rng;
	uint64_t sum;
	char pad[64];
};

static void check(const struct slot *s, size_t upto)
{
	size_t mid = upto / 2;

	if (s->p[0] != s->fill || s->p[mid] != s->fill || s->p[upto - 1] != s->fill)
		bench_corrupt(PROG, s->p, s->fill, s->p[0] ^ s->p[mid] ^ s->p[upto - 1]);
}

static void fill_new(struct slot *s, uint64_t *rng, const struct worker *w)
{
	s->size = rng_logsize(rng, w->min, w->max);
	s->fill = (unsigned char)(1 + rng_below(rng, 255));
	s->p = bench_malloc(PROG, s->size);
	memset(s->p, s->fill, s->size);
}

static void *work(void *arg)
{
	struct worker *w = arg;
	struct slot *slots = bench_malloc(PROG, sizeof(*slots) * (size_t)w->nslots);
	uint64_t sum = 0;
	long i;

	memset(slots, 0, sizeof(*slots) * (size_t)w->nslots);
	for (i = 0; i < w->steps; i++) {
		struct slot *s = &slots[rng_below(&w->rng, (uint64_t)w->nslots)];
		unsigned r = (unsigned)rng_below(&w->rng, 10);

		if (!s->p) {
			fill_new(s, &w->rng, w);
		} else if (r < 5) {
			check(s, s->size);
			free(s->p);
			fill_new(s, &w->rng, w);
		} else if (r < 8) {
			size_t size = rng_logsize(&w->rng, w->min, w->max);
			size_t keep = size < s->size ? size : s->size;

			s->p = bench_realloc(PROG, s->p, size);
			check(s, keep);
			if (size > s->size)
				memset(s->p + s->size, s->fill, size - s->size);
			s->size = size;
		} else {
			check(s, s->size);
			free(s->p);
			s->p = NULL;
		}
		sum += s->size + s->fill;
	}
	for (i = 0; i < w->nslots; i++) {
		if (slots[i].p) {
			check(&slots[i], slots[i].size);
			free(slots[i].p);
		}
	}
	free(slots);
	w->sum = sum;
	return NULL;
}

int main(int argc, char **argv)
{
	int threads = 1, opt, t;
	long steps = 250, slots = 16, min = 64L << 10, max = 32L << 20;
	uint64_t seed = 1, sum = 0;
	struct worker *workers;

	while ((opt = getopt(argc, argv, "t:n:k:m:M:S:")) != -1) {
		switch (opt) {
		case 't': threads = (int)bench_parse_long(PROG, 't', optarg, 1, 256); break;
		case 'n': steps = bench_parse_long(PROG, 'n', optarg, 0, 1L << 40); break;
		case 'k': slots = bench_parse_long(PROG, 'k', optarg, 1, 1L << 20); break;
		case 'm': min = bench_parse_long(PROG, 'm', optarg, 16, 1L << 40); break;
		case 'M': max = bench_parse_long(PROG, 'M', optarg, 16, 1L << 40); break;
		case 'S': seed = (uint64_t)bench_parse_long(PROG, 'S', optarg, 0, 1L << 62); break;
		default:
			fprintf(stderr, "usage: %s [-t THREADS] [-n STEPS] [-k SLOTS] [-m MIN] [-M MAX] [-S SEED]\n",
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
		workers[t].steps = steps / threads;
		workers[t].nslots = slots / threads;
		workers[t].min = (size_t)min;
		workers[t].max = (size_t)max;
		workers[t].rng = rng_seed(seed, (uint64_t)t, 0, 7);
	}
	bench_run_threads(PROG, threads, work, workers, sizeof(*workers));
	for (t = 0; t < threads; t++)
		sum += workers[t].sum;
	free(workers);
	printf("large threads=%d steps=%ld slots=%ld sizes=%ld..%ld seed=%llu checksum=%016llx\n",
	       threads, steps, slots, min, max, (unsigned long long)seed, (unsigned long long)sum);
	return 0;
}
