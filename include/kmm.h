/* SPDX-License-Identifier: MIT */
/*
 * kmm.h - the Linux kernel's memory-management stack in user space.
 *
 * One include for everything:
 *   kmm/gfp.h      allocation flags
 *   kmm/page.h     page allocator (buddy), buddyinfo
 *   kmm/slab.h     object caches, slabinfo
 *   kmm/kmalloc.h  kmalloc and friends
 *   kmm/mempool.h  memory pools
 *   kmm/debug.h    fault injection and tunables
 *   kmm/stats.h    heap figures and the KMM_STATS report
 */
#ifndef KMM_H
#define KMM_H

#define KMM_VERSION_MAJOR 0
#define KMM_VERSION_MINOR 1
#define KMM_VERSION_PATCH 0
#define KMM_VERSION_STRING "0.1.0"

#include <kmm/gfp.h>
#include <kmm/page.h>
#include <kmm/slab.h>
#include <kmm/kmalloc.h>
#include <kmm/mempool.h>
#include <kmm/debug.h>
#include <kmm/stats.h>

#endif /* KMM_H */
