/* SPDX-License-Identifier: MIT */
/*
 * options.c - tunables: one table, each read once from the environment.
 *
 * An unknown or malformed value gets a one-line warning and the default.
 */
#include <errno.h>
#include <stdlib.h>

#include "internal.h"

struct tunable_desc {
	const char *env;   /* environment variable */
	long def, min, max; /* default and accepted range */
};

static const struct tunable_desc tunable_table[KMM_TUNE_NR] = {
	[KMM_TUNE_DECAY_MS] = {"KMM_DECAY_MS", 1000, 0, 3600 * 1000},
	[KMM_TUNE_USE_BRK] = {"KMM_USE_BRK", 0, 0, 1},
	[KMM_TUNE_PCP_HIGH] = {"KMM_PCP_HIGH", 64, 0, 4096},
	[KMM_TUNE_MIN_PARTIAL] = {"KMM_MIN_PARTIAL", 2, 0, 1024},
	[KMM_TUNE_STATS] = {"KMM_STATS", 0, 0, 1},
	[KMM_TUNE_BACKGROUND] = {"KMM_BACKGROUND", 1, 0, 1},
	[KMM_TUNE_MAG_BYTES] = {"KMM_MAG_BYTES", 65536, 0, 1 << 20},
	[KMM_TUNE_DIRTY_SHIFT] = {"KMM_DIRTY_SHIFT", 3, 0, 16},
};

long kmm_tunables[KMM_TUNE_NR] = {
	[KMM_TUNE_DECAY_MS] = 1000,
	[KMM_TUNE_USE_BRK] = 0,
	[KMM_TUNE_PCP_HIGH] = 64,
	[KMM_TUNE_MIN_PARTIAL] = 2,
	[KMM_TUNE_STATS] = 0,
	[KMM_TUNE_BACKGROUND] = 1,
	[KMM_TUNE_MAG_BYTES] = 65536,
	[KMM_TUNE_DIRTY_SHIFT] = 3,
};

void options_init(void)
{
	for (int t = 0; t < KMM_TUNE_NR; t++) {
		const struct tunable_desc *d = &tunable_table[t];
		__atomic_store_n(&kmm_tunables[t], d->def, __ATOMIC_RELAXED);
		const char *s = getenv(d->env);
		if (!s)
			continue;
		char *end;
		errno = 0;
		long v = strtol(s, &end, 10);
		if (errno || end == s || *end != '\0' || v < d->min || v > d->max) {
			kmm_warn("ignoring %s=\"%s\": expected an integer in [%ld, %ld]; using %ld",
				 d->env, s, d->min, d->max, d->def);
			continue;
		}
		__atomic_store_n(&kmm_tunables[t], v, __ATOMIC_RELAXED);
	}
}

KMM_EXPORT int kmm_tune_set(enum kmm_tunable t, long value)
{
	if ((unsigned)t >= KMM_TUNE_NR || value < tunable_table[t].min ||
	    value > tunable_table[t].max) {
		errno = EINVAL;
		return -1;
	}
	kmm_ensure_init();
	__atomic_store_n(&kmm_tunables[t], value, __ATOMIC_RELAXED);
	return 0;
}

KMM_EXPORT long kmm_tune_get(enum kmm_tunable t)
{
	if ((unsigned)t >= KMM_TUNE_NR) {
		errno = EINVAL;
		return -1;
	}
	kmm_ensure_init();
	return __atomic_load_n(&kmm_tunables[t], __ATOMIC_RELAXED);
}
