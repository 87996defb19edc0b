/* SPDX-License-Identifier: MIT */
/*
 * thread.h - per-thread life cycle.  Each layer keeps its per-thread state
 * in TLS of its own; init.c owns the one pthread key whose destructor runs
 * the layers' exit hooks in order (slab first: flushing slabs frees pages
 * into the pcp lists, which are drained last).
 */
#ifndef KMM_THREAD_H
#define KMM_THREAD_H

/* Arm the exit hook for the calling thread.  Cheap after the first call. */
void thread_register(void);

#endif /* KMM_THREAD_H */
