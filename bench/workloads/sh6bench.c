// SPDX-License-Identifier: MIT
/*
 * sh6bench.c - fixed-size small-object churn at very high rates, in the style
 * of the sh6bench and sh8bench tests.
 *
 * Each thread works in rounds.  A round takes one size from a fixed list of
 * small sizes (8..128 B), allocates a batch of objects of that size, and
 * frees them in one of three orders: last-in first-out, first-in first-out,
 * or every other object and then the rest.  Every eighth round (with more
 * than one thread) the batch is not freed by its thread but passed to the
 * next thread's mailbox, and that thread frees it, as sh8bench adds
 * cross-thread frees to sh6bench.
 *
 * A mailbox holds at most MAILBOX_MAX parcels; a thread whose next thread's
 * mailbox is full frees its batch itself.  Unbounded, the backlog grew with
 * the time the receiver spent descheduled times the sender's speed, so that
 * peak RSS measured the machine's scheduling (it moved 2-3x between runs of
 * one allocator, and the faster an allocator, the more it piled up) rather
 * than how an allocator reuses memory freed by other threads.
 *
 *   bench-sh6bench [-t THREADS] [-n OBJECTS] [-b BATCH] [-S SEED]
 *
 * -n is the total number of objects allocated (split over the threads).
 * Prints one line with a checksum of the tags freed.
 */
#define _GNU_SOURCE
#include <stdatomic.h>

#include "common.h"

#define PROG "bench-sh6bench"
#define REMOTE_EVERY 8
#define MAILBOX_MAX 4

static const size_t sizes[] = { 16, 24, 32, 48, 64, 96, 128, 8, 40, 80 };
#define NSIZES (sizeof(sizes) / sizeof(sizes[0]))

/* A batch on its way to another thread. */
struct parcel {
	struct parcel *next;
	size_t size;
	int n;
	void *obj[];
};

struct worker {
	_Atomic(struct parcel *) mailbox; /* parcels other threads sent here */
	atomic_int pending;		  /* parcels in it (at most MAILBOX_MAX) */
	struct worker *next;		  /* where this thread sends its parcels */
	pthread_barrier_t *barrier;
	long objects;
	int batch;
	int threads;
	uint64_t rng;
	uint64_t sum;
	char pad[64];
};

static uint64_t free_one(void *p, size_t size)
{
	uint64_t tag;

	memcpy(&tag, p, sizeof(tag));
	tag_check(PROG, p, size, tag);
	free(p);
	return tag;
}

/* Free every parcel in @w's mailbox. */
static uint64_t empty_mailbox(struct worker *w)
{
	struct parcel *p = atomic_exchange_explicit(&w->mailbox, NULL, memory_order_acquire);
	uint64_t sum = 0;
	int taken = 0;

	while (p) {
		struct parcel *next = p->next;
		int i;

		for (i = 0; i < p->n; i++)
			sum += free_one(p->obj[i], p->size);
		free(p);
		p = next;
		taken++;
	}
	atomic_fetch_sub_explicit(&w->pending, taken, memory_order_relaxed);
	return sum;
}

/* The sender has reserved a place in pending already, so pending never goes below zero. */
static void parcel_send(struct worker *to, struct parcel *p)
{
	struct parcel *head = atomic_load_explicit(&to->mailbox, memory_order_relaxed);

	do
		p->next = head;
	while (!atomic_compare_exchange_weak_explicit(&to->mailbox, &head, p, memory_order_release,
						      memory_order_relaxed));
}

static void *work(void *arg)
{
	struct worker *w = arg;
	void **obj = bench_malloc(PROG, sizeof(void *) * (size_t)w->batch);
	uint64_t sum = 0;
	long left = w->objects, round = 0;

	while (left > 0) {
		int n = left < w->batch ? (int)left : w->batch, i;
		size_t size = sizes[round % NSIZES];
		int remote = w->threads > 1 && round % REMOTE_EVERY == REMOTE_EVERY - 1;

		/* Reserve a place in the next thread's mailbox, or free this batch here. */
		if (remote && atomic_fetch_add_explicit(&w->next->pending, 1, memory_order_relaxed) >=
				      MAILBOX_MAX) {
			atomic_fetch_sub_explicit(&w->next->pending, 1, memory_order_relaxed);
			remote = 0;
		}

		left -= n;
		for (i = 0; i < n; i++) {
			obj[i] = bench_malloc(PROG, size);
			tag_write(obj[i], size, rng_next(&w->rng));
		}
		if (remote) {
			struct parcel *p = bench_malloc(PROG, sizeof(*p) + sizeof(void *) * (size_t)n);

			p->size = size;
			p->n = n;
			memcpy(p->obj, obj, sizeof(void *) * (size_t)n);
			parcel_send(w->next, p);
		} else {
			switch (round % 3) {
			case 0: /* LIFO */
				for (i = n - 1; i >= 0; i--)
					sum += free_one(obj[i], size);
				break;
			case 1: /* FIFO */
				for (i = 0; i < n; i++)
					sum += free_one(obj[i], size);
				break;
			default: /* even ones, then odd ones */
				for (i = 0; i < n; i += 2)
					sum += free_one(obj[i], size);
				for (i = 1; i < n; i += 2)
					sum += free_one(obj[i], size);
				break;
			}
		}
		if (round % REMOTE_EVERY == 0)
			sum += empty_mailbox(w);
		round++;
	}
	/* Wait until every parcel has been sent, then free what came here. */
	pthread_barrier_wait(w->barrier);
	sum += empty_mailbox(w);
	free(obj);
	w->sum = sum;
	return NULL;
}

int main(int argc, char **argv)
{
	int threads = 1, batch = 1000, opt, t;
	long objects = 20000000;
	uint64_t seed = 1, sum = 0;
	pthread_barrier_t barrier;
	struct worker *workers;

	while ((opt = getopt(argc, argv, "t:n:b:S:")) != -1) {
		switch (opt) {
		case 't': threads = (int)bench_parse_long(PROG, 't', optarg, 1, 256); break;
		case 'n': objects = bench_parse_long(PROG, 'n', optarg, 1, 1L << 40); break;
		case 'b': batch = (int)bench_parse_long(PROG, 'b', optarg, 1, 1 << 24); break;
		case 'S': seed = (uint64_t)bench_parse_long(PROG, 'S', optarg, 0, 1L << 62); break;
		default:
			fprintf(stderr, "usage: %s [-t THREADS] [-n OBJECTS] [-b BATCH] [-S SEED]\n", PROG);
			return 2;
		}
	}

	pthread_barrier_init(&barrier, NULL, (unsigned)threads);
	workers = bench_malloc(PROG, sizeof(*workers) * (size_t)threads);
	for (t = 0; t < threads; t++) {
		memset(&workers[t], 0, sizeof(workers[t]));
		atomic_init(&workers[t].mailbox, NULL);
		atomic_init(&workers[t].pending, 0);
		workers[t].next = &workers[(t + 1) % threads];
		workers[t].barrier = &barrier;
		workers[t].objects = objects / threads;
		workers[t].batch = batch;
		workers[t].threads = threads;
		workers[t].rng = rng_seed(seed, (uint64_t)t, 0, 6);
	}
	bench_run_threads(PROG, threads, work, workers, sizeof(*workers));
	for (t = 0; t < threads; t++)
		sum += workers[t].sum;
	pthread_barrier_destroy(&barrier);
	free(workers);
	printf("sh6bench threads=%d objects=%ld batch=%d seed=%llu checksum=%016llx\n", threads,
	       objects, batch, (unsigned long long)seed, (unsigned long long)sum);
	return 0;
}
