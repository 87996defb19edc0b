/* SPDX-License-Identifier: MIT */
/*
 * via_kmalloc.h - run a malloc-level test on kmm's kmalloc API instead of the
 * malloc override.  Sanitizer runtimes own malloc in their builds, so there
 * the malloc tests are built against kmm_core with these names mapped onto
 * kmalloc: the same workload, the same kmm layers underneath, now checked for
 * races by TSan.  Include it after every other header.
 */
#ifndef KMM_TESTS_VIA_KMALLOC_H
#define KMM_TESTS_VIA_KMALLOC_H

#include <kmm.h>

#include <errno.h>

/* kmalloc aligns power-of-two sizes to their size: round up to one. */
static inline int via_kmalloc_memalign(void **out, size_t align, size_t size)
{
	size_t n = size > align ? size : align;
	if (n & (n - 1))
		n = (size_t)1 << (64 - __builtin_clzl(n));
	void *p = kmm_kmalloc(n, KMM_GFP_KERNEL);
	if (!p)
		return ENOMEM;
	*out = p;
	return 0;
}

#define malloc(n) kmm_kmalloc((n), KMM_GFP_KERNEL)
#define calloc(n, s) kmm_kcalloc((n), (s), KMM_GFP_KERNEL)
#define posix_memalign(out, align, size) via_kmalloc_memalign((out), (align), (size))
#define free(p) kmm_kfree(p)
#define realloc(p, n) kmm_krealloc((p), (n), KMM_GFP_KERNEL)
#define malloc_usable_size(p) kmm_ksize(p)

#endif
