/* SPDX-License-Identifier: MIT */
/*
 * kmm/stats.h - the heap's figures, and the report KMM_STATS=1 prints at exit.
 */
#ifndef KMM_STATS_H
#define KMM_STATS_H

#include <stdio.h>

#ifdef __cplusplus
extern "C" {
#endif

struct kmm_heap_stats {
	unsigned long long zone_bytes;        /* bytes in the zone's sections (mapped) */
	unsigned long long peak_zone_bytes;   /* the most zone_bytes ever were */
	unsigned long long free_bytes;        /* free in the buddy lists and pcp lists */
	unsigned long free_blocks;            /* free buddy blocks */
	unsigned long long in_use_bytes;      /* slab slots in use + page runs + huge blocks */
	unsigned long long peak_in_use_bytes; /* tracked only with KMM_STATS=1, else 0 */
	unsigned long long large_bytes;       /* kmalloc page runs (64 KiB .. 4 MiB) */
	unsigned long large_blocks;
	unsigned long long huge_bytes;        /* blocks mapped on their own (> 4 MiB) */
	unsigned long huge_blocks;
	unsigned long long metadata_bytes;    /* page descriptors, pagemap, zone tables */
	/*
	 * What kmm keeps resident: zone frames not decommitted since they were
	 * last handed out, huge blocks and the freed ones kept for reuse,
	 * metadata.  An upper bound of the RSS kmm causes (frames never touched
	 * after allocation count too).
	 */
	unsigned long long resident_bytes;
	long peak_rss_kb;                     /* the process's peak RSS (getrusage) */
	/* malloc's mid-size heap (blocks of 8 KiB .. 64 KiB, fitted to 16 bytes) */
	unsigned long long mid_bytes;         /* blocks in use, their headers included */
	unsigned long mid_blocks;
	unsigned long long mid_arena_bytes;   /* its arenas (zone blocks of 256 KiB) */
};

void kmm_heap_stats(struct kmm_heap_stats *out);

/*
 * The full report: buddyinfo and slabinfo in the kernel's formats, bytes in
 * use (current and peak), peak RSS, and allocations per size class (with
 * KMM_STATS=1; counts are 0 otherwise).  KMM_STATS=1 prints it to stderr at
 * exit.
 */
void kmm_stats_print(FILE *out);

#ifdef __cplusplus
}
#endif
#endif /* KMM_STATS_H */
