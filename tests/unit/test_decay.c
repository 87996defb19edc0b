/* SPDX-License-Identifier: MIT */
/*
 * test_decay.c - memory goes back to the OS: the decay list decommits free
 * blocks once their delay has passed, kmm_trim() does it at once and
 * releases wholly free sections, brk-grown sections shrink the break, and
 * the tunables parse (or warn about) their environment variables.
 *
 * No test waits for time to pass: a delay of 0 ms makes decay immediate, a
 * delay of an hour makes it never happen within the test.
 */
#include <time.h>

#include "common.h"

/* Resident set of this process, in pages. */
static unsigned long rss_pages(void) { return (unsigned long)(rss_bytes() / KMM_PAGE_SIZE); }

static unsigned long zone_resident(void)
{
	struct kmm_zone_stats z;
	kmm_zone_stats(&z);
	return z.resident_pages;
}

#define NBLOCKS 64
#define ORDER 8 /* 1 MiB blocks: 64 MiB in all */
#define BLOCK_PAGES (1ul << ORDER)

static void alloc_touch(void **blocks)
{
	for (int i = 0; i < NBLOCKS; i++) {
		blocks[i] = kmm_alloc_pages(KMM_GFP_KERNEL, ORDER);
		CHECK(blocks[i] != NULL, "alloc order %d: %s", ORDER, strerror(errno));
		memset(blocks[i], 0x5a, BLOCK_PAGES * KMM_PAGE_SIZE);
	}
}

static void free_all(void **blocks)
{
	for (int i = 0; i < NBLOCKS; i++)
		kmm_free_pages(blocks[i], ORDER);
}

/* With a delay of an hour nothing is decommitted until kmm_trim(). */
static void test_trim(void)
{
	void *blocks[NBLOCKS];
	CHECK(kmm_tune_set(KMM_TUNE_DECAY_MS, 3600 * 1000) == 0, "set decay");
	kmm_trim();
	unsigned long rss0 = rss_pages(), res0 = zone_resident();
	alloc_touch(blocks);
	unsigned long rss1 = rss_pages(), res1 = zone_resident();
	CHECK(res1 >= res0 + NBLOCKS * BLOCK_PAGES, "resident %lu -> %lu", res0, res1);
	CHECK(rss1 >= rss0 + NBLOCKS * BLOCK_PAGES * 9 / 10, "RSS %lu -> %lu pages", rss0, rss1);
	free_all(blocks);
	unsigned long res2 = zone_resident();
	CHECK(res2 == res1, "nothing decays within an hour's delay: %lu -> %lu", res1, res2);
	CHECK(kmm_buddy_validate() == 0, "validate");

	struct kmm_zone_stats before, after;
	kmm_zone_stats(&before);
	unsigned long given = kmm_trim();
	kmm_zone_stats(&after);
	unsigned long rss3 = rss_pages();
	CHECK(given >= NBLOCKS * BLOCK_PAGES, "kmm_trim gave back %lu pages", given);
	CHECK(after.resident_pages + given == before.resident_pages, "resident %lu - %lu != %lu",
	      before.resident_pages, given, after.resident_pages);
	CHECK(after.sections_released >= before.sections_released + NBLOCKS * BLOCK_PAGES / 1024,
	      "sections released %lu -> %lu", before.sections_released, after.sections_released);
	CHECK(rss3 + NBLOCKS * BLOCK_PAGES * 9 / 10 <= rss1, "RSS %lu -> %lu pages after trim", rss1,
	      rss3);
	CHECK(kmm_buddy_validate() == 0, "validate after trim");
	printf("  trim: RSS %lu -> %lu -> %lu pages, kmm_trim gave back %lu\n", rss0, rss1, rss3,
	       given);
}

/*
 * The resident cap (KMM_TUNE_DIRTY_SHIFT): 32 MiB of 64 KiB blocks, every
 * other one freed, leaves 16 MiB of holes that 128 KiB blocks cannot use
 * (their buddies stay allocated).  Shrinking keeps the holes resident;
 * taking 16 MiB of 128 KiB blocks brings the busy frames back to their peak
 * and, without the cap, the resident ones 16 MiB above it.  With the cap
 * the takes decommit holes as they pass it.  Runs first: the peak is the
 * whole process's, and the other tests' 64 MiB would put the cap above
 * anything this test reaches.
 */
#define CAP_SMALL 512 /* order-4 blocks: 32 MiB */
#define CAP_BIG (CAP_SMALL / 4) /* order-5 blocks: 16 MiB */

/*
 * One round; returns how far the resident frames grew over the big takes,
 * and in *@res_out and *@cap_out the resident frames after them and the cap
 * (with the default shift when @shift is 0).
 */
static long cap_round(long shift, unsigned long *res_out, unsigned long *cap_out)
{
	static void *small[CAP_SMALL], *big[CAP_BIG];
	struct kmm_zone_stats s0, s1, s2;
	CHECK(kmm_tune_set(KMM_TUNE_DIRTY_SHIFT, shift) == 0, "set dirty shift %ld", shift);
	for (int i = 0; i < CAP_SMALL; i++) {
		small[i] = kmm_alloc_pages(KMM_GFP_KERNEL, 4);
		CHECK(small[i] != NULL, "order 4: %s", strerror(errno));
		memset(small[i], 0x33, 16 * KMM_PAGE_SIZE);
	}
	kmm_zone_stats(&s0);
	for (int i = 0; i < CAP_SMALL; i += 2)
		kmm_free_pages(small[i], 4);
	kmm_zone_stats(&s1);
	CHECK(s1.resident_pages == s0.resident_pages,
	      "a shrinking heap keeps its dirty frames (resident %lu -> %lu)", s0.resident_pages,
	      s1.resident_pages);
	for (int i = 0; i < CAP_BIG; i++) {
		big[i] = kmm_alloc_pages(KMM_GFP_KERNEL, 5);
		CHECK(big[i] != NULL, "order 5: %s", strerror(errno));
		memset(big[i], 0x44, 32 * KMM_PAGE_SIZE);
	}
	kmm_zone_stats(&s2);
	unsigned long slack = s2.peak_busy_pages >> (shift ? shift : 3);
	*cap_out = s2.peak_busy_pages + (slack > 1024 ? slack : 1024);
	*res_out = s2.resident_pages;
	CHECK(kmm_buddy_validate() == 0, "validate after the big takes");
	for (int i = 1; i < CAP_SMALL; i += 2)
		kmm_free_pages(small[i], 4);
	for (int i = 0; i < CAP_BIG; i++)
		kmm_free_pages(big[i], 5);
	kmm_trim();
	return (long)s2.resident_pages - (long)s1.resident_pages;
}

static void test_resident_cap(void)
{
	CHECK(kmm_tune_set(KMM_TUNE_DECAY_MS, 3600 * 1000) == 0, "set decay");
	kmm_trim();
	unsigned long res_off, res_on, cap_off, cap;
	long grew_off = cap_round(0, &res_off, &cap_off);
	CHECK(grew_off >= (long)(CAP_BIG * 32), "no cap: resident grew by %ld, not all %d", grew_off,
	      CAP_BIG * 32);
	CHECK(res_off > cap_off, "no cap: resident %lu stayed under %lu", res_off, cap_off);
	long grew_on = cap_round(3, &res_on, &cap);
	CHECK(res_on <= cap, "resident %lu above the cap %lu", res_on, cap);
	CHECK(grew_on + 1024 <= grew_off, "the cap decommitted too little: resident grew by %ld, %ld without",
	      grew_on, grew_off);
	printf("  resident cap: 16 MiB of takes past 16 MiB of holes grew resident by %ld pages "
	       "without the cap, %ld with it (resident %lu, cap %lu)\n",
	       grew_off, grew_on, res_on, cap);
	CHECK(kmm_tune_set(KMM_TUNE_DECAY_MS, 1000) == 0, "restore decay");
}

/* With a delay of 0 ms a freed block is decommitted by the free itself. */
/*
 * kmm_trim() gives back wholly free sections that were never touched too:
 * they hold no resident frame, so no decay queues them, yet their address
 * space (or the break) is held for nothing.
 */
static void test_trim_cold_sections(void)
{
	struct kmm_zone_stats z0, z1, z2;
	kmm_trim();
	kmm_zone_stats(&z0);
	/* Two max-order blocks more than the zone has free: it grows by two sections. */
	void *p[64];
	unsigned n = 0;
	for (; n < ARRAY_SIZE(p); n++) {
		kmm_zone_stats(&z1);
		if (z1.sections_added >= z0.sections_added + 2)
			break;
		p[n] = kmm_alloc_pages(KMM_GFP_KERNEL, KMM_MAX_ORDER - 1);
		CHECK(p[n] != NULL, "max-order block %u: %s", n, strerror(errno));
	}
	CHECK(z1.sections_added >= z0.sections_added + 2, "the zone did not grow by two sections");
	while (n > 0) /* never written: no frame of theirs is resident */
		kmm_free_pages(p[--n], KMM_MAX_ORDER - 1);
	kmm_trim();
	kmm_zone_stats(&z2);
	CHECK(z2.nr_sections <= z0.nr_sections,
	      "kmm_trim() kept %lu sections (%lu before the untouched blocks)", z2.nr_sections,
	      z0.nr_sections);
	CHECK(z2.sections_released >= z0.sections_released + 2, "%lu sections released, %lu before",
	      z2.sections_released, z0.sections_released);
	CHECK(kmm_buddy_validate() == 0, "validate");
	printf("  trim: untouched free sections go back too (%lu -> %lu -> %lu sections)\n",
	       z0.nr_sections, z1.nr_sections, z2.nr_sections);
}

static void test_decay_zero(void)
{
	void *blocks[NBLOCKS];
	CHECK(kmm_tune_set(KMM_TUNE_DECAY_MS, 0) == 0, "set decay 0");
	kmm_trim();
	unsigned long rss0 = rss_pages();
	alloc_touch(blocks);
	unsigned long rss1 = rss_pages(), res1 = zone_resident();
	free_all(blocks);
	unsigned long rss2 = rss_pages(), res2 = zone_resident();
	CHECK(res2 + NBLOCKS * BLOCK_PAGES <= res1, "decay 0: resident %lu -> %lu", res1, res2);
	CHECK(rss2 + NBLOCKS * BLOCK_PAGES * 9 / 10 <= rss1, "decay 0: RSS %lu -> %lu", rss1, rss2);
	CHECK(kmm_buddy_validate() == 0, "validate");
	printf("  decay 0 ms: RSS %lu -> %lu -> %lu pages without kmm_trim\n", rss0, rss1, rss2);

	/* A decommitted block comes back zeroed and usable. */
	char *p = kmm_alloc_pages(KMM_GFP_KERNEL | KMM_GFP_ZERO, ORDER);
	CHECK(p != NULL, "realloc after decay");
	CHECK(is_zero(p, BLOCK_PAGES * KMM_PAGE_SIZE), "decommitted block not zero");
	memset(p, 1, BLOCK_PAGES * KMM_PAGE_SIZE);
	kmm_free_pages(p, ORDER);
	CHECK(kmm_tune_set(KMM_TUNE_DECAY_MS, 1000) == 0, "restore decay");
}

/*
 * Huge blocks (mappings of their own) follow the delay too: with 0 ms a
 * freed one is not kept for reuse but unmapped by the free.
 */
static void test_huge_decay_zero(void)
{
	enum { HUGE = 16 << 20 };
	CHECK(kmm_tune_set(KMM_TUNE_DECAY_MS, 0) == 0, "set decay 0");
	kmm_trim();
	struct kmm_heap_stats h0, h1, h2;
	kmm_heap_stats(&h0);
	char *p = kmm_kmalloc(HUGE, KMM_GFP_KERNEL);
	CHECK(p != NULL, "kmalloc 16 MiB");
	memset(p, 0x5a, HUGE);
	kmm_heap_stats(&h1);
	kmm_kfree(p);
	kmm_heap_stats(&h2);
	CHECK(h1.resident_bytes >= h0.resident_bytes + HUGE, "huge block resident %llu -> %llu",
	      h0.resident_bytes, h1.resident_bytes);
	CHECK(h2.resident_bytes + HUGE <= h1.resident_bytes,
	      "decay 0: a freed huge block kept (resident %llu -> %llu)", h1.resident_bytes,
	      h2.resident_bytes);
	printf("  decay 0 ms: a freed huge block is unmapped at once (resident %.1f -> %.1f MiB)\n",
	       h1.resident_bytes / 1048576.0, h2.resident_bytes / 1048576.0);
	CHECK(kmm_tune_set(KMM_TUNE_DECAY_MS, 1000) == 0, "restore decay");
}

/* kmalloc'd memory of every kind returns too. */
static void test_kmalloc_return(void)
{
	enum { N = 2000 };
	static void *p[N];
	kmm_trim();
	unsigned long res0 = zone_resident();
	for (int i = 0; i < N; i++) {
		size_t sz = (size_t)16 << (i % 13); /* 16 B .. 64 KiB */
		p[i] = kmm_kmalloc(sz, KMM_GFP_KERNEL);
		CHECK(p[i] != NULL, "kmalloc %zu", sz);
		memset(p[i], 0x33, sz);
	}
	unsigned long res1 = zone_resident();
	for (int i = 0; i < N; i++)
		kmm_kfree(p[i]);
	kmm_trim();
	unsigned long res2 = zone_resident();
	CHECK(res1 > res0 + 4096, "kmalloc grew resident %lu -> %lu", res0, res1);
	/* What stays: kmm's own metadata and what min_partial keeps, far below the peak. */
	CHECK(res2 <= res0 + 256, "after trim resident %lu (start %lu, peak %lu)", res2, res0, res1);
	CHECK(kmm_buddy_validate() == 0 && kmm_slab_validate(NULL) == 0, "validate");
	printf("  kmalloc: resident %lu -> %lu -> %lu pages\n", res0, res1, res2);
}

/* brk mode: sections come from the break, and the top one goes back by shrinking it. */
static void brk_child(void *arg)
{
	(void)arg;
	if (kmm_tune_set(KMM_TUNE_USE_BRK, 1) != 0)
		_exit(2);
	char *lo = sbrk(0);
	char *p = kmm_alloc_pages(KMM_GFP_KERNEL, 10);
	char *hi = sbrk(0);
	if (!p)
		_exit(3);
	if (!(p >= lo && p + (KMM_PAGE_SIZE << 10) <= hi))
		_exit(4); /* not from the break */
	memset(p, 7, KMM_PAGE_SIZE << 10);
	kmm_free_pages(p, 10);
	kmm_trim();
	if ((char *)sbrk(0) >= hi)
		_exit(5); /* the top section did not go back */
	if (kmm_buddy_validate() != 0)
		_exit(6);
	_exit(0);
}

static void test_brk(void)
{
	int st;
	char how[96];
	char *err = run_in_child(brk_child, NULL, &st);
	CHECK(WIFEXITED(st) && WEXITSTATUS(st) == 0, "brk child %s; stderr: %s",
	      describe_status(st, how, sizeof(how)), err);
	free(err);
	printf("  brk: sections grown from the break and given back by shrinking it\n");
}

/* A malformed tunable warns once and keeps the default; a good one is taken. */
static char *self_exe;
static void env_child(void *arg)
{
	const char *which = arg;
	setenv("KMM_DECAY_MS", which, 1);
	setenv("KMM_PCP_HIGH", "32", 1);
	execl(self_exe, self_exe, "--env-child", (char *)NULL);
	_exit(127);
}

static int env_child_main(void)
{
	void *p = kmm_kmalloc(100, KMM_GFP_KERNEL);
	if (!p)
		return 3;
	kmm_kfree(p);
	fprintf(stderr, "decay=%ld pcp_high=%ld background=%ld\n", kmm_tune_get(KMM_TUNE_DECAY_MS),
		kmm_tune_get(KMM_TUNE_PCP_HIGH), kmm_tune_get(KMM_TUNE_BACKGROUND));
	return 0;
}

static void test_env(void)
{
	int st;
	char how[96];
	char *err = run_in_child(env_child, "12abc", &st);
	CHECK(WIFEXITED(st) && WEXITSTATUS(st) == 0, "env child %s: %s",
	      describe_status(st, how, sizeof(how)), err);
	CHECK(strstr(err, "kmm:") && strstr(err, "KMM_DECAY_MS") && strstr(err, "12abc"),
	      "no warning for a malformed value: %s", err);
	CHECK(strstr(err, "decay=1000 pcp_high=32 background=1"),
	      "defaults kept (background on), good value taken: %s", err);
	free(err);
	err = run_in_child(env_child, "250", &st);
	CHECK(WIFEXITED(st) && WEXITSTATUS(st) == 0, "env child: %s", err);
	CHECK(!strstr(err, "ignoring") && strstr(err, "decay=250 pcp_high=32 background=1"),
	      "good values: %s", err);
	free(err);

	CHECK(kmm_tune_set(KMM_TUNE_DECAY_MS, -1) == -1 && errno == EINVAL, "negative decay");
	CHECK(kmm_tune_set(KMM_TUNE_USE_BRK, 2) == -1 && errno == EINVAL, "brk 2");
	CHECK(kmm_tune_set((enum kmm_tunable)99, 1) == -1 && errno == EINVAL, "unknown tunable");
	CHECK(kmm_tune_get((enum kmm_tunable)99) == -1 && errno == EINVAL, "unknown tunable get");
	printf("  tunables: malformed KMM_DECAY_MS warned about, defaults kept\n");
}

/*
 * The background thread: an idle process gets its memory back without any
 * further call into kmm.  This waits for a timed event, so it polls the
 * figure with a deadline (20x the decay delay) instead of trusting one sleep.
 */
static void test_background(void)
{
	enum { N = 24 }; /* 24 x 4 MiB: past the 64 MiB at which the thread starts */
	void *blocks[N];
	CHECK(kmm_tune_set(KMM_TUNE_BACKGROUND, 1) == 0, "background on (test_init turns it off)");
	CHECK(kmm_tune_set(KMM_TUNE_DECAY_MS, 100) == 0, "set decay 100");
	kmm_trim();
	for (int i = 0; i < N; i++) {
		blocks[i] = kmm_alloc_pages(KMM_GFP_KERNEL, 10);
		CHECK(blocks[i] != NULL, "alloc 4 MiB");
		memset(blocks[i], 0x77, KMM_PAGE_SIZE << 10);
	}
	unsigned long res1 = zone_resident(), rss1 = rss_pages();
	for (int i = 0; i < N; i++)
		kmm_free_pages(blocks[i], 10);
	/* No kmm call from here on but reading the figures. */
	unsigned long res2 = zone_resident();
	int waited_ms = 0;
	while (res2 + N * 1024 > res1 + 64 && waited_ms < 2000) {
		struct timespec ts = {0, 10 * 1000000};
		nanosleep(&ts, NULL);
		waited_ms += 10;
		res2 = zone_resident();
	}
	unsigned long rss2 = rss_pages();
	CHECK(res2 + N * 1024 <= res1 + 64, "background decay: resident %lu -> %lu after %d ms", res1,
	      res2, waited_ms);
	CHECK(rss2 + N * 1024 / 2 <= rss1, "background decay: RSS %lu -> %lu", rss1, rss2);
	printf("  background: resident %lu -> %lu pages within %d ms (decay 100 ms), RSS %lu -> %lu\n",
	       res1, res2, waited_ms, rss1, rss2);
	CHECK(kmm_tune_set(KMM_TUNE_DECAY_MS, 1000) == 0, "restore decay");
}

int main(int argc, char **argv)
{
	if (argc > 1 && strcmp(argv[1], "--env-child") == 0)
		return env_child_main();
	self_exe = argv[0];
	test_init("test_decay", 0x6465636179303031ull);
	test_resident_cap();
	test_env();
	test_brk();
	test_trim();
	test_trim_cold_sections();
	test_decay_zero();
	test_huge_decay_zero();
	test_kmalloc_return();
	test_background();
	return test_finish();
}
