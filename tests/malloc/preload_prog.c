/* SPDX-License-Identifier: MIT */
/*
 * preload_prog.c - a program that is NOT linked with kmm, run by
 * test_preload.sh with LD_PRELOAD=libkmm.so and through `kmm run`.  It
 * allocates everywhere a real program does:
 *   - in constructors, before main, including threads started by a
 *     constructor that allocate and free while main starts;
 *   - in a dlopen()ed shared object (constructor, returned blocks freed
 *     here, blocks allocated here freed there, destructor at dlclose);
 *   - across threads (allocated in one, freed in another);
 *   - in destructors, after main returns.
 *
 *   preload_prog MODE DSO
 *
 * MODE "kmm": kmm must be this process's malloc (its kmm_heap_stats symbol
 * is found and moves with malloc); MODE "libc": kmm must be absent.
 * Prints "preload_prog: ok" on success; a failure prints a message and exits 1.
 */
#define _GNU_SOURCE
#include <dlfcn.h>
#include <malloc.h>
#include <pthread.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <kmm/stats.h> /* the struct only: nothing of kmm is linked in */

#define FAIL_IF(cond, ...)                                                                       \
	do {                                                                                     \
		if (cond) {                                                                      \
			fprintf(stderr, "preload_prog: " __VA_ARGS__);                           \
			fprintf(stderr, "\n");                                                   \
			_exit(1);                                                                \
		}                                                                                \
	} while (0)

#define CTOR_THREADS 4

static pthread_t ctor_threads[CTOR_THREADS];
static int ctor_threads_started;
static char *ctor_block;

static void *churn(void *arg)
{
	uintptr_t id = (uintptr_t)arg;
	void *keep[128] = {0};
	for (unsigned i = 0; i < 30000; i++) {
		unsigned k = (unsigned)(i * 13 + id) % 128;
		size_t size = 1 + (i * 2654435761u + id * 97) % (i % 200 == 0 ? 300000 : 3000);
		if (i % 5000 == 4999)
			size = 5u << 20; /* a huge block now and then */
		free(keep[k]);
		keep[k] = i % 3 ? malloc(size) : calloc(1, size);
		if (!keep[k])
			return (void *)1;
		memset(keep[k], (int)id, size < 4096 ? size : 4096);
		if (i % 7 == 0) {
			char *r = realloc(keep[k], size * 2 + 1);
			if (!r || r[0] != (char)id)
				return (void *)1;
			keep[k] = r;
		}
	}
	for (unsigned k = 0; k < 128; k++)
		free(keep[k]);
	return NULL;
}

/* Before main: allocate, and start threads that run while main starts. */
__attribute__((constructor)) static void early(void)
{
	ctor_block = strdup("allocated by a constructor");
	FAIL_IF(!ctor_block, "strdup in a constructor failed");
	for (uintptr_t i = 0; i < CTOR_THREADS; i++)
		FAIL_IF(pthread_create(&ctor_threads[i], NULL, churn, (void *)(i + 1)) != 0,
			"pthread_create in a constructor failed");
	ctor_threads_started = 1;
}

/* After main: allocate and free, and free what the constructor kept. */
__attribute__((destructor)) static void late(void)
{
	char *p = malloc(1000), *q = malloc(200000);
	FAIL_IF(!p || !q, "malloc in a destructor failed");
	memset(p, 1, 1000);
	memset(q, 2, 200000);
	free(q);
	free(p);
	FAIL_IF(strcmp(ctor_block, "allocated by a constructor") != 0,
		"the constructor's block changed");
	free(ctor_block);
	fprintf(stderr, "preload_prog: destructor done\n");
}

/* Cross-thread: blocks allocated by one thread, freed by another. */
#define HANDOFF 20000
static void *handoff[HANDOFF];

static void *producer(void *arg)
{
	(void)arg;
	for (int i = 0; i < HANDOFF; i++) {
		handoff[i] = malloc((size_t)(i % 500 + 16));
		if (!handoff[i])
			return (void *)1;
		memset(handoff[i], i & 0xff, 16);
	}
	return NULL;
}

static void *consumer(void *arg)
{
	(void)arg;
	for (int i = 0; i < HANDOFF; i++) {
		if (((unsigned char *)handoff[i])[15] != (i & 0xff))
			return (void *)1;
		free(handoff[i]);
	}
	return NULL;
}

/*
 * kmm's bytes in use, through kmm_heap_stats() looked up at run time: only
 * libkmm defines it, and this program is not linked with kmm.  -1: absent.
 */
static long long kmm_in_use(void)
{
	struct kmm_heap_stats h;
	void (*fn)(struct kmm_heap_stats *) =
		(void (*)(struct kmm_heap_stats *))(uintptr_t)dlsym(RTLD_DEFAULT, "kmm_heap_stats");
	if (!fn)
		return -1;
	fn(&h);
	return (long long)h.in_use_bytes;
}

int main(int argc, char **argv)
{
	FAIL_IF(argc != 3, "usage: preload_prog kmm|libc DSO");
	int want_kmm = strcmp(argv[1], "kmm") == 0;
	FAIL_IF(!want_kmm && strcmp(argv[1], "libc") != 0, "bad mode %s", argv[1]);

	/*
	 * The constructor's threads, started before main and running until
	 * now: joined before kmm's figures are read, which they would move.
	 */
	FAIL_IF(!ctor_threads_started, "the constructor did not run before main");
	for (int i = 0; i < CTOR_THREADS; i++) {
		void *rc;
		pthread_join(ctor_threads[i], &rc);
		FAIL_IF(rc != NULL, "constructor thread %d failed", i);
	}

	/* Is kmm the allocator? */
	long long before = kmm_in_use();
	if (want_kmm) {
		FAIL_IF(before < 0, "kmm_heap_stats not found: libkmm.so is not loaded");
		char *big = malloc(2u << 20);
		__asm__ volatile("" : "+r"(big) : : "memory"); /* no elision of the pair */
		FAIL_IF(!big, "malloc(2 MiB) failed");
		memset(big, 3, 2u << 20);
		FAIL_IF(kmm_in_use() < before + (2 << 20), "malloc(2 MiB) did not come from kmm");
		free(big);
	} else {
		FAIL_IF(before >= 0, "kmm is loaded but should not be");
	}

	/* Cross-thread frees. */
	pthread_t prod, cons;
	void *rc1, *rc2;
	FAIL_IF(pthread_create(&prod, NULL, producer, NULL) != 0, "pthread_create");
	pthread_join(prod, &rc1);
	FAIL_IF(rc1 != NULL, "producer failed");
	FAIL_IF(pthread_create(&cons, NULL, consumer, NULL) != 0, "pthread_create");
	pthread_join(cons, &rc2);
	FAIL_IF(rc2 != NULL, "consumer failed");

	/* A shared object loaded at run time. */
	void *dso = dlopen(argv[2], RTLD_NOW | RTLD_LOCAL);
	FAIL_IF(!dso, "dlopen(%s): %s", argv[2], dlerror());
	int (*ctor_ok)(void) = (int (*)(void))(uintptr_t)dlsym(dso, "dso_ctor_ok");
	char *(*make_string)(int) = (char *(*)(int))(uintptr_t)dlsym(dso, "dso_make_string");
	void *(*make_block)(size_t, int) = (void *(*)(size_t, int))(uintptr_t)dlsym(dso, "dso_make_block");
	void (*dso_free)(void *) = (void (*)(void *))(uintptr_t)dlsym(dso, "dso_free");
	FAIL_IF(!ctor_ok || !make_string || !make_block || !dso_free, "dlsym: %s", dlerror());
	FAIL_IF(!ctor_ok(), "the dso's constructor block is not intact");
	for (int i = 0; i < 1000; i++) {
		char *s = make_string(i), want[64];
		snprintf(want, sizeof(want), "from the dso: %d", i);
		FAIL_IF(!s || strcmp(s, want) != 0, "dso_make_string(%d)", i);
		FAIL_IF(malloc_usable_size(s) < strlen(want) + 1, "malloc_usable_size of a dso block");
		s = realloc(s, 5000); /* resized here, allocated there */
		FAIL_IF(!s || strcmp(s, want) != 0, "realloc of a dso block");
		free(s);
	}
	static const size_t sizes[] = {1, 100, 5000, 40000, 1u << 20, 6u << 20};
	for (size_t i = 0; i < sizeof(sizes) / sizeof(sizes[0]); i++) {
		unsigned char *b = make_block(sizes[i], 0x5c);
		FAIL_IF(!b || b[sizes[i] - 1] != 0x5c, "dso_make_block(%zu)", sizes[i]);
		free(b);
		b = malloc(sizes[i]);
		FAIL_IF(!b, "malloc(%zu)", sizes[i]);
		dso_free(b); /* allocated here, freed there */
	}
	FAIL_IF(dlclose(dso) != 0, "dlclose: %s", dlerror());

	printf("preload_prog: ok (%s)\n", argv[1]);
	fflush(stdout);
	return 0;
}
