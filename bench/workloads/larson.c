// SPDX-License-Identifier: MIT
/*
 * larson.c - a server simulation in the style of Larson and Krishnan's
 * benchmark: worker threads keep an array of live objects and replace random
 * ones (free the old object, allocate one of a random size in 16..1024 B), and
 * arrays outlive the threads that filled them.
 *
 * The run is divided into generations.  In each generation T fresh threads
 * start; thread i takes array (i + g) mod T, which the previous generation's
 * thread i + 1 worked on, so (with T > 1) nearly every free is of an object
 * another, by now finished, thread allocated, and every thread's exit leaves
 * its caches behind, as in a server that retires worker threads.
 *
 *   bench-larson [-t THREADS] [-n OPS] [-g GENERATIONS] [-k SLOTS] [-S SEED]
 *
 * -n is the total number of replacements (split over threads and
 * generations), -k the total number of live objects (split over the arrays).
 * Prints one line: the parameters and a checksum of every tag freed.
 */
#define _GNU_SOURCE
#include "common.h"

#define PROG "bench-larson"
#define MIN_SIZE 16
#define MAX_SIZE 1024

struct slot {
	void *p;
	uint32_t size;
	uint64_t tag;
};

struct array {
	struct slot *slots;
	long nslots;
};

struct worker {
	struct array *arrays;
	int threads;
	int index;
	int gen;
	long ops;
	uint64_t seed;
	uint64_t sum; /* tags freed by this thread */
	char pad[64];
};

static void *work(void *arg)
{
	struct worker *w = arg;
	int a = (w->index + w->gen) % w->threads;
	struct array *arr = &w->arrays[a];
	uint64_t rng = rng_seed(w->seed, (uint64_t)a, (uint64_t)w->gen, 1);
	uint64_t sum = 0;
	long i;

	/* The first generation fills its array. */
	if (w->gen == 0) {
		for (i = 0; i < arr->nslots; i++) {
			struct slot *s = &arr->slots[i];

			s->size = (uint32_t)rng_range(&rng, MIN_SIZE, MAX_SIZE);
			s->tag = rng_next(&rng);
			s->p = bench_malloc(PROG, s->size);
			tag_write(s->p, s->size, s->tag);
		}
	}
	for (i = 0; i < w->ops; i++) {
		struct slot *s = &arr->slots[rng_below(&rng, (uint64_t)arr->nslots)];

		sum += tag_check(PROG, s->p, s->size, s->tag);
		free(s->p);
		s->size = (uint32_t)rng_range(&rng, MIN_SIZE, MAX_SIZE);
		s->tag = rng_next(&rng);
		s->p = bench_malloc(PROG, s->size);
		tag_write(s->p, s->size, s->tag);
	}
	w->sum = sum;
	return NULL;
}

int main(int argc, char **argv)
{
	int threads = 1, gens = 10, opt, g, t;
	long ops = 10000000, slots = 8000, i;
	uint64_t seed = 1, sum = 0;
	struct array *arrays;
	struct worker *workers;

	while ((opt = getopt(argc, argv, "t:n:g:k:S:")) != -1) {
		switch (opt) {
		case 't': threads = (int)bench_parse_long(PROG, 't', optarg, 1, 256); break;
		case 'n': ops = bench_parse_long(PROG, 'n', optarg, 1, 1L << 40); break;
		case 'g': gens = (int)bench_parse_long(PROG, 'g', optarg, 1, 100000); break;
		case 'k': slots = bench_parse_long(PROG, 'k', optarg, 1, 1L << 26); break;
		case 'S': seed = (uint64_t)bench_parse_long(PROG, 'S', optarg, 0, 1L << 62); break;
		default:
			fprintf(stderr, "usage: %s [-t THREADS] [-n OPS] [-g GENERATIONS] [-k SLOTS] [-S SEED]\n",
				PROG);
			return 2;
		}
	}
	if (slots < threads)
		slots = threads;

	arrays = bench_malloc(PROG, sizeof(*arrays) * (size_t)threads);
	workers = bench_malloc(PROG, sizeof(*workers) * (size_t)threads);
	for (t = 0; t < threads; t++) {
		arrays[t].nslots = slots / threads;
		arrays[t].slots = bench_malloc(PROG, sizeof(struct slot) * (size_t)arrays[t].nslots);
	}
	for (g = 0; g < gens; g++) {
		for (t = 0; t < threads; t++) {
			long share = ops / gens / threads;

			memset(&workers[t], 0, sizeof(workers[t]));
			workers[t].arrays = arrays;
			workers[t].threads = threads;
			workers[t].index = t;
			workers[t].gen = g;
			workers[t].seed = seed;
			/* The remainder goes to the last generation's threads. */
			if (g == gens - 1)
				share = (ops - (ops / gens / threads) * threads * (gens - 1)) / threads;
			workers[t].ops = share;
		}
		bench_run_threads(PROG, threads, work, workers, sizeof(*workers));
		for (t = 0; t < threads; t++)
			sum += workers[t].sum;
	}
	/* The main thread frees what is left: again someone else's objects. */
	for (t = 0; t < threads; t++) {
		for (i = 0; i < arrays[t].nslots; i++) {
			struct slot *s = &arrays[t].slots[i];

			sum += tag_check(PROG, s->p, s->size, s->tag);
			free(s->p);
		}
		free(arrays[t].slots);
	}
	free(arrays);
	free(workers);
	printf("larson threads=%d ops=%ld generations=%d slots=%ld seed=%llu checksum=%016llx\n",
	       threads, ops, gens, slots, (unsigned long long)seed, (unsigned long long)sum);
	return 0;
}
