// SPDX-License-Identifier: MIT
/*
 * mstress.c - a heap that grows and shrinks in phases, with realloc, in the
 * style of the mstress and rptest benchmarks.
 *
 * Each thread keeps an array of slots.  A cycle has two phases:
 *   grow    each step takes a random slot: an empty one gets a new object of
 *           16..256 B, a full one is realloc'ed to 1.5-3x its size (at most
 *           256 KiB) and the new part is written, page by page, until the
 *           thread's live bytes reach HIGH / THREADS;
 *   shrink  each step takes a random slot: half the time its object is freed,
 *           otherwise it is realloc'ed down to a quarter..half of its size,
 *           until the live bytes are down to LOW / THREADS.
 * So the live heap climbs from LOW to HIGH and falls back, cycle after
 * cycle, and realloc both moves and resizes in place.  Between cycles the
 * threads pass half of their slots on to the next thread (the way mstress
 * hands objects over), so the next cycle frees and reallocs objects another
 * thread allocated.
 *
 * Every realloc checks that the object's tag survived the move.
 *
 *   bench-mstress [-t THREADS] [-c CYCLES] [-k SLOTS] [-H HIGH_MIB] [-L LOW_MIB] [-S SEED]
 *
 * -k is the total number of slots (split over the threads).  The steps are
 * drawn from each thread's own seeded generator, so the work is the same in
 * every run with the same seed and thread count.  Prints one line with a
 * checksum of the tags freed.
 */
#define _GNU_SOURCE
#include "common.h"

#define PROG "bench-mstress"
#define MIN_NEW 16
#define MAX_NEW 256
#define MAX_SIZE (256u << 10)
#define MIN_SIZE 16

struct slot {
	void *p;
	size_t size;
	uint64_t tag;
};

struct shared {
	pthread_barrier_t barrier;
	struct slot **arrays; /* arrays[t]: thread t's slots */
	long nslots;	      /* per thread */
	size_t high, low;     /* per thread: live bytes where a phase ends */
	int threads;
	int cycles;
	uint64_t seed;
};

struct worker {
	struct shared *sh;
	int index;
	uint64_t sum;
	uint64_t reallocs;
	char pad[64];
};

static void new_object(struct slot *s, uint64_t *rng)
{
	s->size = rng_range(rng, MIN_NEW, MAX_NEW);
	s->tag = rng_next(rng);
	s->p = bench_malloc(PROG, s->size);
	tag_write(s->p, s->size, s->tag);
}

/* Resize @s to @size, check that the tag moved with it and rewrite the end. */
static void resize(struct slot *s, size_t size)
{
	size_t old = s->size;
	unsigned char *p = bench_realloc(PROG, s->p, size);

	tag_check(PROG, p, sizeof(uint64_t), s->tag);
	s->p = p;
	s->size = size;
	if (size > old) /* the program fills what it asked for */
		touch_pages(p, old, size - 1);
	tag_write(p, size, s->tag);
}

static void *work(void *arg)
{
	struct worker *w = arg;
	struct shared *sh = w->sh;
	int c;

	for (c = 0; c < sh->cycles; c++) {
		struct slot *slots = sh->arrays[w->index];
		uint64_t rng = rng_seed(sh->seed, (uint64_t)w->index, (uint64_t)c, 5);
		size_t live = 0;
		long i;

		for (i = 0; i < sh->nslots; i++)
			live += slots[i].p ? slots[i].size : 0;
		while (live < sh->high) { /* grow */
			struct slot *s = &slots[rng_below(&rng, (uint64_t)sh->nslots)];
			size_t size;

			if (!s->p) {
				new_object(s, &rng);
				live += s->size;
				continue;
			}
			size = s->size + s->size / 2 + rng_range(&rng, 0, s->size + s->size / 2);
			if (size > MAX_SIZE)
				size = MAX_SIZE;
			live += size - s->size;
			resize(s, size);
			w->reallocs++;
		}
		while (live > sh->low) { /* shrink */
			struct slot *s = &slots[rng_below(&rng, (uint64_t)sh->nslots)];
			size_t size;

			if (!s->p)
				continue;
			if (rng_below(&rng, 2) == 0) {
				w->sum += tag_check(PROG, s->p, s->size, s->tag);
				free(s->p);
				s->p = NULL;
				live -= s->size;
				continue;
			}
			size = rng_range(&rng, s->size / 4, s->size / 2);
			if (size < MIN_SIZE)
				size = MIN_SIZE;
			live -= s->size - size;
			resize(s, size);
			w->reallocs++;
		}
		/*
		 * Hand over: thread 0 rotates the first halves of the arrays
		 * while the others wait, so thread t gets thread t + 1's.
		 */
		pthread_barrier_wait(&sh->barrier);
		if (w->index == 0 && sh->threads > 1) {
			long half = sh->nslots / 2, j;
			int t;

			for (j = 0; j < half; j++) {
				struct slot first = sh->arrays[0][j];

				for (t = 0; t + 1 < sh->threads; t++)
					sh->arrays[t][j] = sh->arrays[t + 1][j];
				sh->arrays[sh->threads - 1][j] = first;
			}
		}
		pthread_barrier_wait(&sh->barrier);
	}
	return NULL;
}

int main(int argc, char **argv)
{
	int threads = 1, cycles = 40, opt, t;
	long slots = 4096, high_mib = 64, low_mib = 8, i;
	uint64_t seed = 1, sum = 0, reallocs = 0;
	struct shared sh;
	struct worker *workers;

	while ((opt = getopt(argc, argv, "t:c:k:H:L:S:")) != -1) {
		switch (opt) {
		case 't': threads = (int)bench_parse_long(PROG, 't', optarg, 1, 256); break;
		case 'c': cycles = (int)bench_parse_long(PROG, 'c', optarg, 1, 1 << 24); break;
		case 'k': slots = bench_parse_long(PROG, 'k', optarg, 2, 1L << 26); break;
		case 'H': high_mib = bench_parse_long(PROG, 'H', optarg, 1, 1L << 20); break;
		case 'L': low_mib = bench_parse_long(PROG, 'L', optarg, 0, 1L << 20); break;
		case 'S': seed = (uint64_t)bench_parse_long(PROG, 'S', optarg, 0, 1L << 62); break;
		default:
			fprintf(stderr, "usage: %s [-t THREADS] [-c CYCLES] [-k SLOTS] [-H MIB] [-L MIB] [-S SEED]\n",
				PROG);
			return 2;
		}
	}
	if (slots < 2L * threads)
		slots = 2L * threads;
	if (low_mib >= high_mib)
		bench_die(PROG, "-L must be below -H");
	/* The grow phase must be able to reach its target with half the slots at the cap. */
	if ((uint64_t)high_mib << 20 > (uint64_t)(slots / threads) * threads * (MAX_SIZE / 2))
		bench_die(PROG, "-H is too large for -k slots of at most 256 KiB");

	memset(&sh, 0, sizeof(sh));
	sh.threads = threads;
	sh.cycles = cycles;
	sh.nslots = slots / threads;
	sh.high = ((size_t)high_mib << 20) / (size_t)threads;
	sh.low = ((size_t)low_mib << 20) / (size_t)threads;
	sh.seed = seed;
	pthread_barrier_init(&sh.barrier, NULL, (unsigned)threads);
	sh.arrays = bench_malloc(PROG, sizeof(*sh.arrays) * (size_t)threads);
	for (t = 0; t < threads; t++) {
		sh.arrays[t] = bench_malloc(PROG, sizeof(struct slot) * (size_t)sh.nslots);
		memset(sh.arrays[t], 0, sizeof(struct slot) * (size_t)sh.nslots);
	}
	workers = bench_malloc(PROG, sizeof(*workers) * (size_t)threads);
	for (t = 0; t < threads; t++) {
		memset(&workers[t], 0, sizeof(workers[t]));
		workers[t].sh = &sh;
		workers[t].index = t;
	}
	bench_run_threads(PROG, threads, work, workers, sizeof(*workers));
	for (t = 0; t < threads; t++) {
		sum += workers[t].sum;
		reallocs += workers[t].reallocs;
		for (i = 0; i < sh.nslots; i++) {
			struct slot *s = &sh.arrays[t][i];

			if (s->p) {
				sum += tag_check(PROG, s->p, s->size, s->tag);
				free(s->p);
			}
		}
		free(sh.arrays[t]);
	}
	free(sh.arrays);
	free(workers);
	pthread_barrier_destroy(&sh.barrier);
	printf("mstress threads=%d cycles=%d slots=%ld live=%ld..%ldMiB reallocs=%llu seed=%llu checksum=%016llx\n",
	       threads, cycles, slots, low_mib, high_mib, (unsigned long long)reallocs,
	       (unsigned long long)seed, (unsigned long long)sum);
	return 0;
}
