// SPDX-License-Identifier: MIT
/*
 * xmalloc.c - producer/consumer allocation in the style of the xmalloc test:
 * half of the threads only allocate (sizes 8..512 B) and hand the objects, in
 * batches, to queues; the other half only take batches and free them.  Every
 * free is therefore of an object another thread allocated, and the
 * allocating threads never get their memory back through their own frees.
 *
 * With T threads, ceil(T/2) producers feed floor(T/2) consumers (producer i
 * feeds consumer i mod C).  With one thread there is no one to hand objects
 * to: the thread allocates a batch, then frees it, in turn (the baseline).
 *
 *   bench-xmalloc [-t THREADS] [-n OBJECTS] [-b BATCH] [-S SEED]
 *
 * -n is the total number of objects allocated (split over the producers).
 * Prints one line: the parameters and a checksum of every tag freed.
 */
#define _GNU_SOURCE
#include "common.h"

#define PROG "bench-xmalloc"
#define MIN_SIZE 8
#define MAX_SIZE 512
#define QUEUE_CAP 16 /* batches a queue holds before its producers wait */

struct batch {
	int n;
	void *obj[];
};

struct queue {
	pthread_mutex_t lock;
	pthread_cond_t not_empty, not_full;
	struct batch *ring[QUEUE_CAP];
	int head, count;
	int producers; /* still running */
	char pad[64];
};

struct producer {
	struct queue *q;
	long objects;
	int batch;
	uint64_t rng;
	char pad[64];
};

struct consumer {
	struct queue *q;
	uint64_t sum;
	char pad[64];
};

/* Size and tag of an object derive from the tag itself, so a consumer can check it. */
static size_t size_of_tag(uint64_t tag)
{
	return MIN_SIZE + (size_t)((tag >> 20) % (MAX_SIZE - MIN_SIZE + 1));
}

static struct batch *make_batch(int n, uint64_t *rng)
{
	struct batch *b = bench_malloc(PROG, sizeof(*b) + sizeof(void *) * (size_t)n);
	int i;

	b->n = n;
	for (i = 0; i < n; i++) {
		uint64_t tag = rng_next(rng);
		size_t size = size_of_tag(tag);

		b->obj[i] = bench_malloc(PROG, size);
		tag_write(b->obj[i], size, tag);
	}
	return b;
}

static uint64_t free_batch(struct batch *b)
{
	uint64_t sum = 0, tag;
	int i;

	for (i = 0; i < b->n; i++) {
		memcpy(&tag, b->obj[i], sizeof(tag));
		sum += tag_check(PROG, b->obj[i], size_of_tag(tag), tag);
		free(b->obj[i]);
	}
	free(b);
	return sum;
}

static void *produce(void *arg)
{
	struct producer *p = arg;
	struct queue *q = p->q;
	long left = p->objects;

	while (left > 0) {
		int n = left < p->batch ? (int)left : p->batch;
		struct batch *b = make_batch(n, &p->rng);

		left -= n;
		pthread_mutex_lock(&q->lock);
		while (q->count == QUEUE_CAP)
			pthread_cond_wait(&q->not_full, &q->lock);
		q->ring[(q->head + q->count) % QUEUE_CAP] = b;
		q->count++;
		pthread_cond_signal(&q->not_empty);
		pthread_mutex_unlock(&q->lock);
	}
	pthread_mutex_lock(&q->lock);
	q->producers--;
	pthread_cond_broadcast(&q->not_empty);
	pthread_mutex_unlock(&q->lock);
	return NULL;
}

static void *consume(void *arg)
{
	struct consumer *c = arg;
	struct queue *q = c->q;

	for (;;) {
		struct batch *b;

		pthread_mutex_lock(&q->lock);
		while (q->count == 0 && q->producers > 0)
			pthread_cond_wait(&q->not_empty, &q->lock);
		if (q->count == 0) {
			pthread_mutex_unlock(&q->lock);
			break;
		}
		b = q->ring[q->head];
		q->head = (q->head + 1) % QUEUE_CAP;
		q->count--;
		pthread_cond_signal(&q->not_full);
		pthread_mutex_unlock(&q->lock);
		c->sum += free_batch(b);
	}
	return NULL;
}

struct role {
	int is_producer;
	struct producer *p;
	struct consumer *c;
};

static void *run_role(void *arg)
{
	struct role *r = arg;

	return r->is_producer ? produce(r->p) : consume(r->c);
}

int main(int argc, char **argv)
{
	int threads = 1, batch = 256, opt, i, nprod, ncons;
	long objects = 10000000;
	uint64_t seed = 1, sum = 0;

	while ((opt = getopt(argc, argv, "t:n:b:S:")) != -1) {
		switch (opt) {
		case 't': threads = (int)bench_parse_long(PROG, 't', optarg, 1, 256); break;
		case 'n': objects = bench_parse_long(PROG, 'n', optarg, 1, 1L << 40); break;
		case 'b': batch = (int)bench_parse_long(PROG, 'b', optarg, 1, 1 << 20); break;
		case 'S': seed = (uint64_t)bench_parse_long(PROG, 'S', optarg, 0, 1L << 62); break;
		default:
			fprintf(stderr, "usage: %s [-t THREADS] [-n OBJECTS] [-b BATCH] [-S SEED]\n", PROG);
			return 2;
		}
	}

	if (threads == 1) {
		/* No one to hand batches to: allocate a batch, free it, repeat. */
		uint64_t rng = rng_seed(seed, 0, 0, 2);
		long left = objects;

		nprod = ncons = 1;
		while (left > 0) {
			int n = left < batch ? (int)left : batch;

			left -= n;
			sum += free_batch(make_batch(n, &rng));
		}
	} else {
		struct queue *queues;
		struct producer *prods;
		struct consumer *conss;
		struct role *roles;

		nprod = (threads + 1) / 2;
		ncons = threads / 2;
		queues = bench_malloc(PROG, sizeof(*queues) * (size_t)ncons);
		prods = bench_malloc(PROG, sizeof(*prods) * (size_t)nprod);
		conss = bench_malloc(PROG, sizeof(*conss) * (size_t)ncons);
		roles = bench_malloc(PROG, sizeof(*roles) * (size_t)threads);
		for (i = 0; i < ncons; i++) {
			memset(&queues[i], 0, sizeof(queues[i]));
			pthread_mutex_init(&queues[i].lock, NULL);
			pthread_cond_init(&queues[i].not_empty, NULL);
			pthread_cond_init(&queues[i].not_full, NULL);
			conss[i].q = &queues[i];
			conss[i].sum = 0;
		}
		for (i = 0; i < nprod; i++) {
			prods[i].q = &queues[i % ncons];
			prods[i].q->producers++;
			prods[i].batch = batch;
			prods[i].objects = objects / nprod + (i < objects % nprod ? 1 : 0);
			prods[i].rng = rng_seed(seed, (uint64_t)i, 0, 2);
		}
		/* Interleave the roles: producer, consumer, producer, ... */
		for (i = 0; i < threads; i++) {
			roles[i].is_producer = (i % 2 == 0);
			roles[i].p = &prods[i / 2];
			roles[i].c = &conss[i / 2];
		}
		bench_run_threads(PROG, threads, run_role, roles, sizeof(*roles));
		for (i = 0; i < ncons; i++) {
			sum += conss[i].sum;
			pthread_mutex_destroy(&queues[i].lock);
			pthread_cond_destroy(&queues[i].not_empty);
			pthread_cond_destroy(&queues[i].not_full);
		}
		free(roles);
		free(conss);
		free(prods);
		free(queues);
	}
	printf("xmalloc threads=%d producers=%d consumers=%d objects=%ld batch=%d seed=%llu checksum=%016llx\n",
	       threads, nprod, ncons, objects, batch, (unsigned long long)seed,
	       (unsigned long long)sum);
	return 0;
}
