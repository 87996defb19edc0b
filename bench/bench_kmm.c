// SPDX-License-Identifier: MIT
/*
 * bench_kmm.c - kmm against glibc on small objects and page blocks.
 *
 * Workloads, each run once with kmm and once with glibc:
 *
 *   kmalloc  kmm_kmalloc+kmm_kfree against malloc+free, sizes 16..1024 B,
 *            in 1 and 2 threads (each thread its own loop), two patterns:
 *              pair      allocate one object, free it, repeat (LIFO reuse)
 *              batchN    allocate N objects, then free them in the same order
 *   pages    kmm_alloc_pages+kmm_free_pages against aligned_alloc+free of the
 *            same size and alignment, orders 0..4, one thread, same patterns.
 *
 * Every block is written once (one byte) so that neither allocator can skip
 * work the caller would cause.  Each measurement is calibrated to last about
 * target_ms, warmed up, repeated and reported as the median repetition.  A
 * 2-thread figure is the mean of the two threads' own ns per operation.
 */
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include <kmm.h>

#define MAX_REPS	15
#define MAX_THREADS	2
#define KMALLOC_BATCH	1000
#define PAGES_BATCH	64
#define PAGES_MAX_ORDER 4

struct options {
	double target_ns; /* wanted length of one repetition */
	int reps;
};
static struct options opt = { .target_ns = 40e6, .reps = 9 };

struct work;
typedef void (*loop_fn)(const struct work *w, long rounds, void **slots);

/* One workload: @rounds of @fn perform rounds * batch alloc+free pairs. */
struct work {
	size_t size;	/* bytes per block */
	unsigned order; /* page workloads: order of the block */
	int batch;	/* blocks live at once: 1 for the pair pattern */
	loop_fn fn;
};

struct run {
	const struct work *w;
	long rounds;
	pthread_barrier_t *start;
	pthread_t tid;
	double ns_per_op[MAX_REPS];
};

static double now_ns(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_MONOTONIC, &ts);
	return ts.tv_sec * 1e9 + ts.tv_nsec;
}

static void oom(const char *who)
{
	fprintf(stderr, "kmm-bench: %s returned NULL\n", who);
	exit(1);
}

/* Write the block and hide it from the optimizer, so no alloc+free pair is elided. */
static inline void touch(void *p)
{
	*(volatile char *)p = 1;
	__asm__ volatile("" : : "r"(p) : "memory");
}

static void kmm_pair(const struct work *w, long rounds, void **slots)
{
	(void)slots;
	for (long i = 0; i < rounds; i++) {
		void *p = kmm_kmalloc(w->size, KMM_GFP_KERNEL);

		if (!p)
			oom("kmm_kmalloc");
		touch(p);
		kmm_kfree(p);
	}
}

static void glibc_pair(const struct work *w, long rounds, void **slots)
{
	(void)slots;
	for (long i = 0; i < rounds; i++) {
		void *p = malloc(w->size);

		if (!p)
			oom("malloc");
		touch(p);
		free(p);
	}
}

static void kmm_batch(const struct work *w, long rounds, void **slots)
{
	for (long r = 0; r < rounds; r++) {
		for (int i = 0; i < w->batch; i++) {
			slots[i] = kmm_kmalloc(w->size, KMM_GFP_KERNEL);
			if (!slots[i])
				oom("kmm_kmalloc");
			touch(slots[i]);
		}
		for (int i = 0; i < w->batch; i++)
			kmm_kfree(slots[i]);
	}
}

static void glibc_batch(const struct work *w, long rounds, void **slots)
{
	for (long r = 0; r < rounds; r++) {
		for (int i = 0; i < w->batch; i++) {
			slots[i] = malloc(w->size);
			if (!slots[i])
				oom("malloc");
			touch(slots[i]);
		}
		for (int i = 0; i < w->batch; i++)
			free(slots[i]);
	}
}

static void kmm_pages_pair(const struct work *w, long rounds, void **slots)
{
	(void)slots;
	for (long i = 0; i < rounds; i++) {
		void *p = kmm_alloc_pages(KMM_GFP_KERNEL, w->order);

		if (!p)
			oom("kmm_alloc_pages");
		touch(p);
		kmm_free_pages(p, w->order);
	}
}

static void glibc_pages_pair(const struct work *w, long rounds, void **slots)
{
	(void)slots;
	for (long i = 0; i < rounds; i++) {
		void *p = aligned_alloc(w->size, w->size);

		if (!p)
			oom("aligned_alloc");
		touch(p);
		free(p);
	}
}

static void kmm_pages_batch(const struct work *w, long rounds, void **slots)
{
	for (long r = 0; r < rounds; r++) {
		for (int i = 0; i < w->batch; i++) {
			slots[i] = kmm_alloc_pages(KMM_GFP_KERNEL, w->order);
			if (!slots[i])
				oom("kmm_alloc_pages");
			touch(slots[i]);
		}
		for (int i = 0; i < w->batch; i++)
			kmm_free_pages(slots[i], w->order);
	}
}

static void glibc_pages_batch(const struct work *w, long rounds, void **slots)
{
	for (long r = 0; r < rounds; r++) {
		for (int i = 0; i < w->batch; i++) {
			slots[i] = aligned_alloc(w->size, w->size);
			if (!slots[i])
				oom("aligned_alloc");
			touch(slots[i]);
		}
		for (int i = 0; i < w->batch; i++)
			free(slots[i]);
	}
}

static void **new_slots(int n)
{
	void **slots = calloc(n, sizeof(*slots));

	if (!slots)
		oom("calloc");
	return slots;
}

/* Rounds of @w that take about opt.target_ns in the calling thread. */
static long calibrate(const struct work *w)
{
	void **slots = new_slots(w->batch);
	long rounds = 1;
	double t;

	for (;;) {
		double t0 = now_ns();

		w->fn(w, rounds, slots);
		t = now_ns() - t0;
		if (t >= opt.target_ns / 8)
			break;
		rounds *= 2;
	}
	free(slots);
	rounds = (long)(rounds * opt.target_ns / t);
	return rounds > 0 ? rounds : 1;
}

static void *worker(void *arg)
{
	struct run *r = arg;
	void **slots = new_slots(r->w->batch);

	r->w->fn(r->w, r->rounds / 4 + 1, slots); /* warm-up: this thread's caches, page faults */
	for (int rep = 0; rep < opt.reps; rep++) {
		double t0;

		pthread_barrier_wait(r->start);
		t0 = now_ns();
		r->w->fn(r->w, r->rounds, slots);
		r->ns_per_op[rep] = (now_ns() - t0) / ((double)r->rounds * r->w->batch);
	}
	free(slots);
	return NULL;
}

static int cmp_double(const void *a, const void *b)
{
	double x = *(const double *)a, y = *(const double *)b;

	return (x > y) - (x < y);
}

/* Median over the repetitions of the threads' mean ns per alloc+free pair. */
static double measure(const struct work *w, int nthreads)
{
	struct run runs[MAX_THREADS];
	double per_rep[MAX_REPS];
	pthread_barrier_t start;
	long rounds = calibrate(w);

	pthread_barrier_init(&start, NULL, nthreads);
	for (int t = 0; t < nthreads; t++) {
		runs[t] = (struct run){ .w = w, .rounds = rounds, .start = &start };
		if (pthread_create(&runs[t].tid, NULL, worker, &runs[t]) != 0) {
			fprintf(stderr, "kmm-bench: pthread_create failed\n");
			exit(1);
		}
	}
	for (int t = 0; t < nthreads; t++)
		pthread_join(runs[t].tid, NULL);
	pthread_barrier_destroy(&start);

	for (int rep = 0; rep < opt.reps; rep++) {
		per_rep[rep] = 0;
		for (int t = 0; t < nthreads; t++)
			per_rep[rep] += runs[t].ns_per_op[rep] / nthreads;
	}
	qsort(per_rep, opt.reps, sizeof(per_rep[0]), cmp_double);
	return per_rep[opt.reps / 2];
}

static void bench_kmalloc(void)
{
	static const size_t sizes[] = { 16, 64, 256, 1024 };

	printf("kmm_kmalloc+kmm_kfree vs glibc malloc+free: ns per alloc+free pair, per thread\n");
	printf("%6s  %-10s %3s %10s %10s %10s\n", "size", "pattern", "thr", "kmm ns", "glibc ns",
	       "kmm/glibc");
	for (int threads = 1; threads <= MAX_THREADS; threads++) {
		for (size_t i = 0; i < sizeof(sizes) / sizeof(sizes[0]); i++) {
			for (int batched = 0; batched <= 1; batched++) {
				struct work k = { .size = sizes[i],
						  .batch = batched ? KMALLOC_BATCH : 1,
						  .fn = batched ? kmm_batch : kmm_pair };
				struct work g = k;
				double kns, gns;
				char pattern[16];

				g.fn = batched ? glibc_batch : glibc_pair;
				kns = measure(&k, threads);
				gns = measure(&g, threads);
				if (batched)
					snprintf(pattern, sizeof(pattern), "batch%d",
						 KMALLOC_BATCH);
				else
					snprintf(pattern, sizeof(pattern), "pair");
				printf("%6zu  %-10s %3d %10.1f %10.1f %10.2f\n", sizes[i], pattern,
				       threads, kns, gns, kns / gns);
				fflush(stdout);
			}
		}
	}
}

static void bench_pages(void)
{
	printf("\nkmm_alloc_pages+kmm_free_pages vs glibc aligned_alloc+free, one thread:"
	       " million pages per second\n");
	printf("%5s %7s  %-8s %14s %14s %10s\n", "order", "bytes", "pattern", "kmm Mpages/s",
	       "glibc Mpages/s", "kmm/glibc");
	for (unsigned order = 0; order <= PAGES_MAX_ORDER; order++) {
		for (int batched = 0; batched <= 1; batched++) {
			struct work k = { .size = KMM_PAGE_SIZE << order,
					  .order = order,
					  .batch = batched ? PAGES_BATCH : 1,
					  .fn = batched ? kmm_pages_batch : kmm_pages_pair };
			struct work g = k;
			double kns, gns, pages = (double)(1u << order);
			char pattern[16];

			g.fn = batched ? glibc_pages_batch : glibc_pages_pair;
			kns = measure(&k, 1);
			gns = measure(&g, 1);
			if (batched)
				snprintf(pattern, sizeof(pattern), "batch%d", PAGES_BATCH);
			else
				snprintf(pattern, sizeof(pattern), "pair");
			printf("%5u %7zu  %-8s %14.2f %14.2f %10.2f\n", order, k.size, pattern,
			       pages * 1e3 / kns, pages * 1e3 / gns, kns / gns);
			fflush(stdout);
		}
	}
}

static void usage(FILE *f)
{
	fprintf(f,
		"usage: kmm-bench [--quick]\n"
		"  --quick  a short run (a few seconds) instead of the default (under a minute)\n");
}

int main(int argc, char **argv)
{
	for (int i = 1; i < argc; i++) {
		if (strcmp(argv[i], "--quick") == 0) {
			opt.target_ns = 10e6;
			opt.reps = 5;
		} else if (strcmp(argv[i], "--help") == 0 || strcmp(argv[i], "-h") == 0) {
			usage(stdout);
			return 0;
		} else {
			usage(stderr);
			return 2;
		}
	}

	printf("kmm-bench (kmm %s): %ld CPUs online, median of %d repetitions of ~%.0f ms each\n",
	       KMM_VERSION_STRING, sysconf(_SC_NPROCESSORS_ONLN), opt.reps, opt.target_ns / 1e6);
	printf("kmm/glibc is kmm's time over glibc's: below 1.00 kmm is faster.\n\n");
	bench_kmalloc();
	bench_pages();
	return 0;
}
