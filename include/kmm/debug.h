/* SPDX-License-Identifier: MIT */
/*
 * kmm/debug.h - hooks for tests and tools: OS fault injection and tunables.
 */
#ifndef KMM_DEBUG_H
#define KMM_DEBUG_H

#ifdef __cplusplus
extern "C" {
#endif

/*
 * Make the OS layer fail: after @after more successful calls that would
 * obtain memory (map, grow brk), every such call fails with ENOMEM until
 * kmm_os_fail_reset().  kmm_os_fail_after(0) fails from the next call on.
 */
void kmm_os_fail_after(long after);
void kmm_os_fail_reset(void);
/* Number of OS calls that were made to fail so far. */
unsigned long kmm_os_failed_calls(void);

/*
 * Tunables.  Each is also read once from the environment at start-up
 * (KMM_DECAY_MS, KMM_USE_BRK, KMM_PCP_HIGH, KMM_MIN_PARTIAL,
 * KMM_STATS, KMM_BACKGROUND, KMM_MAG_BYTES).
 */
enum kmm_tunable {
	KMM_TUNE_DECAY_MS,   /* ms a free block stays committed before decommit (default 1000) */
	KMM_TUNE_USE_BRK,    /* 1: grow the heap with brk first, mmap when it can't (default 0) */
	KMM_TUNE_PCP_HIGH,   /* pages a thread's pcp list holds before draining a batch (default 64) */
	KMM_TUNE_MIN_PARTIAL,/* empty slabs a cache with a constructor keeps on its node (default 2) */
	KMM_TUNE_STATS,      /* 1: count allocations, print the report at exit (default 0) */
	KMM_TUNE_BACKGROUND, /* 1: a background thread decays free memory once the heap
	                        passes 64 MiB, so RSS falls even when the program is idle (default 1) */
	KMM_TUNE_MAG_BYTES,  /* bytes of objects free() keeps per thread and size class for reuse
	                        (the magazine; 0: none; read at start-up; default 65536) */
	KMM_TUNE_DIRTY_SHIFT,/* the zone's resident pages may exceed the most pages ever in use
	                        by 1/2^shift of them (at least 4 MiB) before free blocks are
	                        decommitted ahead of their delay; 0: no such cap (default 3) */
	KMM_TUNE_NR
};
int kmm_tune_set(enum kmm_tunable t, long value); /* 0, or -1 with errno EINVAL */
long kmm_tune_get(enum kmm_tunable t);

#ifdef __cplusplus
}
#endif
#endif /* KMM_DEBUG_H */
