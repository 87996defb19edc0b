/* SPDX-License-Identifier: MIT */
/*
 * kmm/gfp.h - allocation flags ("get free pages" flags, as in the kernel).
 *
 * The primitives come first; the composites callers normally use are built
 * only from primitives, so that every composite's meaning can be read off
 * its definition.
 *
 *   KMM_GFP_DIRECT_OS  the allocator may call the OS layer (mmap, brk) to
 *                      grow a zone.  Without it only memory that kmm already
 *                      holds is used.  (The kernel's "direct reclaim".)
 *   KMM_GFP_WAIT       the caller may sleep: a mempool allocation with this
 *                      flag waits for an element to be freed rather than
 *                      returning NULL.
 *   KMM_GFP_HIGH       the caller may dip into the zone's emergency reserve
 *                      (below the min watermark).
 *   KMM_GFP_ZERO       the memory is returned zero-filled.
 *   KMM_GFP_NOFAIL_WARN (reserved)
 */
#ifndef KMM_GFP_H
#define KMM_GFP_H

#define KMM_GFP_DIRECT_OS 0x01u
#define KMM_GFP_WAIT      0x02u
#define KMM_GFP_HIGH      0x04u
#define KMM_GFP_ZERO      0x08u

/* May block and may call the OS: the default for ordinary code. */
#define KMM_GFP_KERNEL (KMM_GFP_DIRECT_OS | KMM_GFP_WAIT)
/* Never blocks, never calls the OS; fails rather than eat the reserve. */
#define KMM_GFP_NOWAIT 0u
/* Never blocks, never calls the OS, may use the emergency reserve. */
#define KMM_GFP_ATOMIC KMM_GFP_HIGH

/* Every flag kmm knows; anything else is rejected with EINVAL. */
#define KMM_GFP_VALID_MASK (KMM_GFP_DIRECT_OS | KMM_GFP_WAIT | KMM_GFP_HIGH | KMM_GFP_ZERO)

#endif /* KMM_GFP_H */
