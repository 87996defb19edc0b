/* SPDX-License-Identifier: MIT */
/*
 * preload_dso.c - a shared object that preload_prog dlopen()s: its
 * constructor allocates, its functions hand out malloc'd memory for the
 * program to free, its destructor frees what the constructor kept.  It is
 * linked with nothing but the C library: under LD_PRELOAD its malloc is
 * kmm's like everyone else's.
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define EXPORT __attribute__((visibility("default")))

static char *ctor_block;
static size_t ctor_size;

__attribute__((constructor)) static void dso_init(void)
{
	ctor_size = 100000;
	ctor_block = malloc(ctor_size);
	if (ctor_block) {
		memset(ctor_block, 0x42, ctor_size);
		ctor_block[ctor_size - 1] = '\0';
	}
	/* Some churn, small and big. */
	for (int i = 0; i < 1000; i++)
		free(malloc((size_t)(i * 37 % 5000 + 1)));
	free(malloc(6u << 20));
}

__attribute__((destructor)) static void dso_fini(void)
{
	free(ctor_block);
	ctor_block = NULL;
}

/* The block the constructor allocated is intact: 1, else 0. */
EXPORT int dso_ctor_ok(void)
{
	if (!ctor_block)
		return 0;
	for (size_t i = 0; i + 1 < ctor_size; i++)
		if (ctor_block[i] != 0x42)
			return 0;
	return 1;
}

/* A malloc'd string the caller frees. */
EXPORT char *dso_make_string(int n)
{
	char *s = malloc(64);
	if (s)
		snprintf(s, 64, "from the dso: %d", n);
	return s;
}

/* A malloc'd block of @size bytes filled with @byte, for the caller to free. */
EXPORT void *dso_make_block(size_t size, int byte)
{
	void *p = malloc(size);
	if (p)
		memset(p, byte, size);
	return p;
}

/* Frees what the caller allocated. */
EXPORT void dso_free(void *p) { free(p); }
