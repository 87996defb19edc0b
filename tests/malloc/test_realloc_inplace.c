/* SPDX-License-Identifier: MIT */
/*
 * test_realloc_inplace.c - realloc without copying:
 *   - a page run (64 KiB .. 4 MiB) grows in place when the frames after it
 *     are free, and shrinks in place, giving its tail back;
 *   - a huge block (> 4 MiB) is moved by mremap: its pages are not copied,
 *     which shows in the peak RSS of a fresh child (a copy would need the old
 *     and the new block resident at once).
 */
#include <malloc.h>
#include <sys/resource.h>

#include "common.h"

/* Keep the compiler from reasoning about the pointers across realloc. */
static void *opaque(void *p)
{
	__asm__ volatile("" : "+r"(p));
	return p;
}

static void test_page_run(void)
{
	/* 80 KiB: a 128 KiB block whose last 48 KiB go straight back to the zone. */
	char *p = opaque(malloc(80 << 10));
	CHECK(p != NULL, "malloc(80 KiB)");
	uintptr_t at = (uintptr_t)p; /* the address, compared after each realloc */
	fill_pattern(p, 80 << 10, 1);
	char *q = opaque(realloc(p, 120 << 10));
	CHECK((uintptr_t)q == at, "realloc 80 -> 120 KiB moved the block (%#lx -> %p)",
	      (unsigned long)at, (void *)q);
	CHECK(check_pattern(q, 80 << 10, 1) < 0, "contents kept");
	CHECK(malloc_usable_size(q) >= (120 << 10), "usable size after growing");
	memset(q + (80 << 10), 0x5a, 40 << 10);
	char *r = opaque(realloc(q, 72 << 10));
	CHECK((uintptr_t)r == at, "shrinking a page run moved it (%#lx -> %p)", (unsigned long)at,
	      (void *)r);
	CHECK(malloc_usable_size(r) < (80 << 10), "shrinking gave the tail back: usable %zu",
	      malloc_usable_size(r));
	CHECK(check_pattern(r, 72 << 10, 1) < 0, "contents kept after shrinking");

	/* The freed tail is usable again: the block can grow back in place. */
	char *s = opaque(realloc(r, 128 << 10));
	CHECK((uintptr_t)s == at, "growing back in place (%#lx -> %p)", (unsigned long)at, (void *)s);
	free(s);
	printf("  page run: 80 -> 120 -> 72 -> 128 KiB at one address\n");
}

static void huge_child(void *arg)
{
	(void)arg;
	const size_t from = 256ul << 20, to = 512ul << 20;
	char *p = opaque(malloc(from));
	if (!p)
		_exit(2);
	memset(p, 0x33, from);
	char *q = opaque(realloc(p, to));
	if (!q)
		_exit(3);
	for (size_t i = 0; i < from; i += 4096)
		if (q[i] != 0x33)
			_exit(4);
	struct rusage ru;
	getrusage(RUSAGE_SELF, &ru);
	/* Copying would have had 512 MiB resident; moving keeps it near 256 MiB. */
	long peak_mib = ru.ru_maxrss / 1024;
	fprintf(stderr, "peak=%ld\n", peak_mib);
	free(q);
	_exit(peak_mib < 256 + 96 ? 0 : 5);
}

static void test_huge(void)
{
	int st;
	char how[96];
	char *err = run_in_child(huge_child, NULL, &st);
	CHECK(WIFEXITED(st) && WEXITSTATUS(st) == 0,
	      "huge realloc 256 -> 512 MiB: child %s (status 5: it was copied); %s",
	      describe_status(st, how, sizeof(how)), err);
	printf("  huge block: 256 -> 512 MiB by mremap, %s", err);
	free(err);
}

int main(void)
{
	test_init("test_realloc_inplace", 1);
	kmm_trim();
	test_page_run();
	test_huge();
	return test_finish();
}
