/* SPDX-License-Identifier: MIT */
/*
 * kmm/kmalloc.h - general-purpose allocation by size.
 *
 * Sizes up to KMM_KMALLOC_MAX_CACHE_SIZE come from size-class slab caches
 * ("kmalloc-64", ...); larger sizes up to a max-order block come straight
 * from the buddy allocator (whole pages, the unused tail pages given back);
 * anything larger is mapped from the OS on its own.
 *
 * Guarantees: every result is aligned to 16 bytes (8 for sizes <= 8); a
 * power-of-two size is aligned to that size (up to the page size, and to the
 * page for larger sizes).  kmm_ksize(p) >= the size asked for.
 */
#ifndef KMM_KMALLOC_H
#define KMM_KMALLOC_H

#include <stddef.h>

#ifdef __cplusplus
extern "C" {
#endif

/* Largest size served by a slab cache. */
#define KMM_KMALLOC_MAX_CACHE_SIZE (64ul * 1024)

/*
 * kmm_kmalloc(0) returns KMM_ZERO_SIZE_PTR, as the kernel's kmalloc(0)
 * returns ZERO_SIZE_PTR: not NULL (so it is not mistaken for a failure), but
 * not memory either; any access faults.  kfree() and ksize() accept it.
 */
#define KMM_ZERO_SIZE_PTR ((void *)16)
#define KMM_ZERO_OR_NULL_PTR(x) ((unsigned long)(x) <= (unsigned long)KMM_ZERO_SIZE_PTR)

/*
 * Allocate @size bytes.  Returns NULL with errno ENOMEM when out of memory
 * or the size is absurd (above PTRDIFF_MAX), EINVAL for unknown flags.
 */
void *kmm_kmalloc(size_t size, unsigned flags);
void *kmm_kzalloc(size_t size, unsigned flags);
void *kmm_kcalloc(size_t n, size_t size, unsigned flags);
/*
 * Resize: krealloc(NULL, n) is kmalloc(n); krealloc(p, 0) frees p and
 * returns the zero-size pointer.  On failure p is left untouched.
 */
void *kmm_krealloc(void *p, size_t size, unsigned flags);
/* Free; NULL and the zero-size pointer are ignored; foreign pointers abort. */
void kmm_kfree(const void *p);
/* Usable size of a kmalloc'd block (0 for NULL and the zero-size pointer). */
size_t kmm_ksize(const void *p);

/* The size class kmm_kmalloc(size) would use (the slot size), or 0 if above slabs. */
size_t kmm_kmalloc_size_class(size_t size);
/*
 * Check every invariant of malloc's mid-size heap (the blocks malloc serves
 * above 8 KiB up to 64 KiB): 0, or -1 with errno EINVAL after a report on
 * stderr naming what is broken.
 */
int kmm_mid_validate(void);

#ifdef __cplusplus
}
#endif
#endif /* KMM_KMALLOC_H */
