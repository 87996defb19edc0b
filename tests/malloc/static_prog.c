/* SPDX-License-Identifier: MIT */
/*
 * static_prog.c - a C program linked with -static against libkmm.a
 * (test_static.sh): kmm must replace the C library's malloc entirely, for
 * the program and for the C library's own allocations, with threads too.
 * Prints "static_prog: ok" and exits 0; any failure exits 1 with a message.
 */
#define _GNU_SOURCE
#include <malloc.h>
#include <pthread.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <kmm.h>

#define FAIL_IF(cond, ...)                                                                       \
	do {                                                                                     \
		if (cond) {                                                                      \
			fprintf(stderr, "static_prog: " __VA_ARGS__);                            \
			fprintf(stderr, "\n");                                                   \
			exit(1);                                                                 \
		}                                                                                \
	} while (0)

static unsigned long long in_use(void)
{
	struct kmm_heap_stats h;
	kmm_heap_stats(&h);
	return h.in_use_bytes;
}

static void *worker(void *arg)
{
	uintptr_t id = (uintptr_t)arg;
	void *keep[64] = {0};
	for (unsigned i = 0; i < 20000; i++) {
		unsigned k = (unsigned)(i * 7 + id) % 64;
		size_t size = 1 + (i * 2654435761u + id) % (i % 100 == 0 ? 200000 : 2000);
		free(keep[k]);
		keep[k] = malloc(size);
		if (!keep[k])
			return (void *)1;
		memset(keep[k], (int)id, size);
	}
	for (unsigned k = 0; k < 64; k++)
		free(keep[k]);
	return NULL;
}

int main(void)
{
	/* The program's own calls. */
	unsigned long long before = in_use();
	char *big = malloc(1 << 20);
	FAIL_IF(!big, "malloc(1 MiB) failed");
	__asm__ volatile("" : : "r"(big) : "memory"); /* no elision of the pair */
	memset(big, 1, 1 << 20);
	FAIL_IF(in_use() < before + (1 << 20), "malloc(1 MiB) did not come from kmm");
	FAIL_IF(malloc_usable_size(big) < (1 << 20), "malloc_usable_size");
	big = realloc(big, 3 << 20);
	FAIL_IF(!big || big[(1 << 20) - 1] != 1, "realloc lost the contents");
	free(big);
	void *al = aligned_alloc(4096, 100);
	FAIL_IF(!al || (uintptr_t)al % 4096, "aligned_alloc");
	free(al);
	char *z = calloc(1000, 10);
	FAIL_IF(!z || z[9999] != 0, "calloc");
	free(z);

	/* The C library's own allocations: kmm checks every pointer it is given. */
	char *s = strdup("static kmm");
	FAIL_IF(!s || malloc_usable_size(s) < 11, "strdup");
	free(s);
	char *fmt = NULL;
	FAIL_IF(asprintf(&fmt, "%0*d", 50000, 1) != 50000 || malloc_usable_size(fmt) < 50001,
		"asprintf");
	free(fmt);
	FILE *f = tmpfile();
	FAIL_IF(!f, "tmpfile");
	fprintf(f, "buffered by a stdio buffer from malloc\n");
	fclose(f);

	/* Threads: their start-up (TLS, stacks' bookkeeping) and their allocations. */
	pthread_t t[4];
	for (uintptr_t i = 0; i < 4; i++)
		FAIL_IF(pthread_create(&t[i], NULL, worker, (void *)i) != 0, "pthread_create");
	for (int i = 0; i < 4; i++) {
		void *rc;
		pthread_join(t[i], &rc);
		FAIL_IF(rc != NULL, "worker %d failed", i);
	}
	printf("static_prog: ok\n");
	return 0;
}
