// SPDX-License-Identifier: MIT
/*
 * cache.c - false sharing between threads' small objects, in the two shapes
 * of Hoard's cache-thrash and cache-scratch tests.
 *
 *   thrash   (active false sharing) each thread repeatedly allocates a small
 *            object, writes every byte of it many times, and frees it.  An
 *            allocator that gives objects in one cache line to different
 *            threads makes the threads' writes fight over that line.
 *   scratch  (passive false sharing) at the start of each phase one thread
 *            allocates T small objects one after the other (so they are
 *            likely to share cache lines) and hands object i to thread i,
 *            which frees it and then works as in thrash.  An allocator that
 *            gives the freed object back to the thread that freed it
 *            spreads one cache line over several threads.
 *
 * The run has four phases, with objects of 8, 16, 32 and 64 bytes.  In each
 * phase a thread does its share of the iterations; an iteration writes
 * @BYTES bytes into its object (size-byte passes over it).
 *
 *   bench-cache -m thrash|scratch [-t THREADS] [-n ITERATIONS] [-w BYTES] [-S SEED]
 *
 * -n is the total number of allocate+write+free iterations per phase (split
 * over the threads).  Prints one line with a checksum of the objects' contents.
 */
#define _GNU_SOURCE
#include "common.h"

#define PROG "bench-cache"
#define NPHASES 4

static const size_t phase_size[NPHASES] = { 8, 16, 32, 64 };

struct shared {
	pthread_barrier_t barrier;
	int scratch;
	int threads;
	long iterations; /* per thread per phase */
	long bytes;	 /* bytes written per iteration */
	void **handoff;	 /* scratch: object i for thread i */
	uint64_t seed;
};

struct worker {
	struct shared *sh;
	int index;
	uint64_t sum;
	char pad[64];
};

/* Write @bytes bytes into the @size-byte object: repeated passes over it. */
static uint64_t hammer(unsigned char *obj, size_t size, long bytes, unsigned char start)
{
	volatile unsigned char *v = obj;
	long passes = bytes / (long)size, k;
	uint64_t sum = 0;
	size_t j;

	for (j = 0; j < size; j++)
		v[j] = (unsigned char)(start + j);
	for (k = 0; k < passes; k++)
		for (j = 0; j < size; j++)
			v[j] = (unsigned char)(v[j] + 1);
	for (j = 0; j < size; j++)
		sum += v[j];
	return sum;
}

static void *work(void *arg)
{
	struct worker *w = arg;
	struct shared *sh = w->sh;
	uint64_t rng = rng_seed(sh->seed, (uint64_t)w->index, 0, 3);
	int ph;
	long i;

	for (ph = 0; ph < NPHASES; ph++) {
		size_t size = phase_size[ph];

		if (sh->scratch) {
			pthread_barrier_wait(&sh->barrier);
			if (w->index == 0) {
				int t;

				for (t = 0; t < sh->threads; t++)
					sh->handoff[t] = bench_malloc(PROG, size);
			}
			pthread_barrier_wait(&sh->barrier);
			/* Thread 0 allocated it; this thread frees it. */
			w->sum += hammer(sh->handoff[w->index], size, (long)size, 0);
			free(sh->handoff[w->index]);
		}
		for (i = 0; i < sh->iterations; i++) {
			unsigned char *obj = bench_malloc(PROG, size);

			w->sum += hammer(obj, size, sh->bytes, (unsigned char)rng_next(&rng));
			free(obj);
		}
	}
	return NULL;
}

int main(int argc, char **argv)
{
	const char *mode = NULL;
	int threads = 1, opt, t;
	long iterations = 200000, bytes = 1024;
	uint64_t seed = 1, sum = 0;
	struct shared sh;
	struct worker *workers;

	while ((opt = getopt(argc, argv, "m:t:n:w:S:")) != -1) {
		switch (opt) {
		case 'm': mode = optarg; break;
		case 't': threads = (int)bench_parse_long(PROG, 't', optarg, 1, 256); break;
		case 'n': iterations = bench_parse_long(PROG, 'n', optarg, 1, 1L << 40); break;
		case 'w': bytes = bench_parse_long(PROG, 'w', optarg, 64, 1L << 30); break;
		case 'S': seed = (uint64_t)bench_parse_long(PROG, 'S', optarg, 0, 1L << 62); break;
		default: mode = "?"; break;
		}
	}
	if (!mode || (strcmp(mode, "thrash") != 0 && strcmp(mode, "scratch") != 0)) {
		fprintf(stderr, "usage: %s -m thrash|scratch [-t THREADS] [-n ITERATIONS] [-w BYTES] [-S SEED]\n",
			PROG);
		return 2;
	}

	memset(&sh, 0, sizeof(sh));
	sh.scratch = strcmp(mode, "scratch") == 0;
	sh.threads = threads;
	sh.iterations = iterations / threads;
	sh.bytes = bytes;
	sh.seed = seed;
	sh.handoff = bench_malloc(PROG, sizeof(void *) * (size_t)threads);
	pthread_barrier_init(&sh.barrier, NULL, (unsigned)threads);
	workers = bench_malloc(PROG, sizeof(*workers) * (size_t)threads);
	for (t = 0; t < threads; t++) {
		memset(&workers[t], 0, sizeof(workers[t]));
		workers[t].sh = &sh;
		workers[t].index = t;
	}
	bench_run_threads(PROG, threads, work, workers, sizeof(*workers));
	for (t = 0; t < threads; t++)
		sum += workers[t].sum;
	pthread_barrier_destroy(&sh.barrier);
	free(workers);
	free(sh.handoff);
	printf("cache-%s threads=%d iterations=%ld bytes=%ld seed=%llu checksum=%016llx\n", mode,
	       threads, iterations, bytes, (unsigned long long)seed, (unsigned long long)sum);
	return 0;
}
