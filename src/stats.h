/* SPDX-License-Identifier: MIT */
/*
 * stats.h - optional allocation statistics (KMM_STATS=1).  When off, the
 * malloc paths pay one predictable branch on stats_enabled.
 */
#ifndef KMM_STATS_INTERNAL_H
#define KMM_STATS_INTERNAL_H

#include "internal.h"

extern KMM_HIDDEN bool stats_enabled;
/* Count a block just handed out / about to be freed (checked pointer). */
void stats_alloc(void *p);
void stats_free(void *p, const char *fn);
void stats_write_stderr(const char *buf, size_t len);
void stats_init(void);

#endif /* KMM_STATS_INTERNAL_H */
