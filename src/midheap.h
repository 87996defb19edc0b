/* SPDX-License-Identifier: MIT */
/*
 * midheap.h - malloc's heap for mid sizes: blocks of MID_MIN_SIZE+1 ..
 * MID_MAX_SIZE bytes carved to the byte (16-byte granules) from 256 KiB
 * arenas, freed blocks merged with free neighbours at once.  See midheap.c.
 */
#ifndef KMM_MIDHEAP_H
#define KMM_MIDHEAP_H

#include "internal.h"

struct page;

/*
 * malloc-family requests of more than MID_MIN_SIZE and at most MID_MAX_SIZE
 * bytes, at the default alignment, come here; kmm_kmalloc() keeps its size
 * classes (the kernel's interface), and so do aligned requests.
 */
#define MID_MIN_SIZE 8192
#define MID_MAX_SIZE KMM_KMALLOC_MAX_CACHE_SIZE
/*
 * The buddy order of an arena: 256 KiB, a pageblock (three of the largest
 * blocks fit).  1 MiB arenas held 5-10% more at the peak: each heap's last,
 * partly used arena and its kept empty one are slack (BENCHMARKS, session 13).
 */
#define MID_ARENA_ORDER 6

/* A block of at least @size bytes, or NULL with errno ENOMEM; KMM_GFP_ZERO honoured. */
void *mid_alloc(size_t size, unsigned gfp);
/*
 * The operations on a block @p of the arena whose head frame is @head
 * (PG_head | PG_mid).  Each checks @p first and aborts naming @fn for a
 * pointer that is not a live block of the arena (into a block, freed).
 */
void mid_free(struct page *head, void *p, const char *fn);
size_t mid_usable_size(struct page *head, const void *p, const char *fn);
/* Resize in place to hold @size (<= MID_MAX_SIZE) bytes: true, or false (unchanged). */
bool mid_resize(struct page *head, void *p, size_t size, const char *fn);

struct mid_totals {
	unsigned long long in_use_bytes; /* blocks handed out, headers included */
	unsigned long long arena_bytes;  /* arenas held (from the buddy allocator) */
	unsigned long blocks;
	unsigned long arenas;
};
void mid_totals(struct mid_totals *t);
/*
 * Give empty arenas back to the buddy allocator and decommit the free
 * chunks' whole pages in the others; returns the bytes decommitted in place.
 */
size_t mid_trim(void);

/*
 * Heaps are biased to their first thread (midheap.c, heap_lock()); false
 * where os_membarrier() is not to be had, or under ThreadSanitizer.  And the
 * biases revoked so far (for tests).
 */
bool mid_bias_enabled(void);
unsigned long mid_bias_revokes(void);

void mid_init(void);
void mid_fork_prepare(void);
void mid_fork_parent(void);
void mid_fork_child(void);

#endif /* KMM_MIDHEAP_H */
