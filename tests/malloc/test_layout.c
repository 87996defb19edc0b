/* SPDX-License-Identifier: MIT */
/*
 * test_layout.c - libkmm.so's mappings (cmake/kmm-layout.ld): code a running
 * program seldom executes (the functions marked rare in src/internal.h), the
 * code of blocks of 8 KiB and more (big_text) and the unwind tables are
 * mappings of their own, so that the kernel's fault-around, which maps the
 * cached pages around a faulting address up to the mapping's bounds, does
 * not make them resident with malloc's code.
 *
 * Linked with the shared library (so malloc is libkmm.so's).  After blocks
 * below 8 KiB of every call (malloc, calloc, realloc, free) and decay
 * passes that give their pages back, only malloc's code mapping is resident: the big blocks' code
 * (big_text), the rare code and the unwind tables are not.  Blocks of 8 KiB and more then fault in
 * the big blocks' code, and kmm_buddy_validate() the rare code's, which
 * shows that the measure sees pages.
 */
#define _GNU_SOURCE
#include <dlfcn.h>
#include <link.h>
#include <stdbool.h>
#include <time.h>

#include "common.h"

/* The mapping that holds @addr and its Rss in KiB, from /proc/self/smaps. */
struct vma {
	uintptr_t lo, hi;
	long rss_kb;
};

static struct vma vma_of(uintptr_t addr)
{
	struct vma v = { 0, 0, -1 };
	FILE *f = fopen("/proc/self/smaps", "r");
	char line[512];
	bool in = false;

	CHECK(f != NULL, "open /proc/self/smaps: %s", strerror(errno));
	while (fgets(line, sizeof(line), f)) {
		unsigned long lo, hi;
		long kb;

		if (sscanf(line, "%lx-%lx ", &lo, &hi) == 2) { /* a mapping's first line */
			if (in)
				break;
			in = addr >= lo && addr < hi;
			if (in) {
				v.lo = lo;
				v.hi = hi;
			}
		} else if (in && sscanf(line, "Rss: %ld kB", &kb) == 1) {
			v.rss_kb = kb;
		}
	}
	fclose(f);
	CHECK(v.lo != 0 && v.rss_kb >= 0, "no mapping with Rss holds %#lx", (unsigned long)addr);
	return v;
}

/* libkmm.so's executable segments (in address order) and its PT_GNU_EH_FRAME, by @sym. */
struct segments {
	uintptr_t sym;
	uintptr_t exec[4];
	int nexec;
	uintptr_t eh;
};

static int find_segments(struct dl_phdr_info *info, size_t size, void *arg)
{
	struct segments *f = arg;
	bool holds = false;

	(void)size;
	for (int i = 0; i < info->dlpi_phnum; i++) {
		const ElfW(Phdr) *ph = &info->dlpi_phdr[i];
		uintptr_t lo = info->dlpi_addr + ph->p_vaddr;

		if (ph->p_type == PT_LOAD && f->sym >= lo && f->sym < lo + ph->p_memsz)
			holds = true;
	}
	if (!holds)
		return 0;
	for (int i = 0; i < info->dlpi_phnum; i++) {
		const ElfW(Phdr) *ph = &info->dlpi_phdr[i];
		uintptr_t lo = info->dlpi_addr + ph->p_vaddr;

		if (ph->p_type == PT_LOAD && (ph->p_flags & PF_X) && f->nexec < 4)
			f->exec[f->nexec++] = lo;
		if (ph->p_type == PT_GNU_EH_FRAME)
			f->eh = lo;
	}
	return 1;
}

/* Allocations of @n sizes of every call, each freed again. */
static void churn(const size_t *sizes, size_t n)
{
	void *p[16][8];

	CHECK(n <= 16, "at most 16 sizes");
	for (int round = 0; round < 4; round++) {
		for (size_t i = 0; i < n; i++)
			for (int j = 0; j < 8; j++) {
				p[i][j] = j % 2 ? malloc(sizes[i]) : calloc(1, sizes[i]);
				CHECK(p[i][j] != NULL, "malloc(%zu)", sizes[i]);
				memset(p[i][j], j, sizes[i] < 4096 ? sizes[i] : 4096);
			}
		for (size_t i = 0; i < n; i++)
			for (int j = 0; j < 8; j++) {
				void *q = realloc(p[i][j], sizes[i] + 16);
				CHECK(q != NULL, "realloc(%zu)", sizes[i] + 16);
				free(q);
			}
	}
}

static long rss_at(uintptr_t addr)
{
	return vma_of(addr).rss_kb;
}

/*
 * The library's own settings come from KMM_* variables, and a malformed one
 * makes it warn (rare code) at start-up: run again without them, so that
 * what this test measures does not depend on the caller's environment.
 * KMM_TEST_* are the tests' own and stay.
 */
static void without_kmm_environment(char **argv)
{
	extern char **environ;
	size_t n = 0, kept = 0;
	bool any = false;

	for (n = 0; environ[n]; n++)
		any |= strncmp(environ[n], "KMM_", 4) == 0 &&
		       strncmp(environ[n], "KMM_TEST_", 9) != 0;
	if (!any)
		return;
	char **env = calloc(n + 1, sizeof(*env));
	CHECK(env != NULL, "calloc");
	for (size_t i = 0; i < n; i++)
		if (strncmp(environ[i], "KMM_", 4) != 0 || strncmp(environ[i], "KMM_TEST_", 9) == 0)
			env[kept++] = environ[i];
	execve("/proc/self/exe", argv, env);
	CHECK(false, "execve(/proc/self/exe): %s", strerror(errno));
}

static uint64_t now_ms(void)
{
	struct timespec ts;
	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (uint64_t)ts.tv_sec * 1000 + (uint64_t)ts.tv_nsec / 1000000;
}

/*
 * Pages freed by small blocks go back to the OS through the decay pass,
 * which every program that frees pages runs: it must not be big blocks'
 * code.  Slabs of 64-byte objects (4 MiB of them) are emptied and drained
 * to the zone, where they merge into blocks the decay list holds; with a
 * 4 ms delay, small churn (whose pcp drains look at the clock) then runs
 * decay passes until the process's resident pages fall by 1 MiB.  The delay goes back
 * to an hour after: no pass becomes due while the test looks.
 */
#define DECAY_BLOCKS 65536
static void *decay_block[DECAY_BLOCKS]; /* not malloc'ed: 512 KiB would be a big block */

static void decay_small(void)
{
	void **p = decay_block;

	CHECK(kmm_tune_set(KMM_TUNE_DECAY_MS, 4) == 0, "kmm_tune_set(KMM_DECAY_MS, 4)");
	for (int i = 0; i < DECAY_BLOCKS; i++) {
		p[i] = malloc(64);
		CHECK(p[i] != NULL, "malloc(64)");
		memset(p[i], i, 64);
	}
	for (int i = 0; i < DECAY_BLOCKS; i++)
		free(p[i]);
	kmm_drain_local();
	unsigned long long before = rss_bytes(), now;
	uint64_t start = now_ms();
	do {
		for (int i = 0; i < 4096; i++)
			p[i] = malloc(64);
		for (int i = 0; i < 4096; i++)
			free(p[i]);
		kmm_drain_local();
		now = rss_bytes();
	} while (now + (1u << 20) > before && now_ms() - start < 5000);
	CHECK(now + (1u << 20) <= before,
	      "no decay pass gave 1 MiB back in 5 s (RSS %llu -> %llu KiB)", before >> 10,
	      now >> 10);
	CHECK(kmm_tune_set(KMM_TUNE_DECAY_MS, 3600 * 1000) == 0, "kmm_tune_set(KMM_DECAY_MS)");
}

int main(int argc, char **argv)
{
	static const size_t small[] = { 8, 24, 100, 1000, 3000, 4000 };
	static const size_t big[] = { 9000, 20000, 60000, 300000, 5 << 20 };

	(void)argc;
	without_kmm_environment(argv);
	test_init("test_layout", 1);
	churn(small, ARRAY_SIZE(small));
	decay_small();

	uintptr_t hot = (uintptr_t)dlsym(RTLD_DEFAULT, "malloc");
	uintptr_t rare = (uintptr_t)&kmm_buddy_validate;
	Dl_info a, b;
	CHECK(dladdr((void *)hot, &a) && dladdr((void *)rare, &b), "dladdr");
	CHECK(a.dli_fbase == b.dli_fbase, "malloc (%s) is not libkmm.so's (%s)", a.dli_fname,
	      b.dli_fname);

	/* Three code mappings: malloc's, the big blocks', the rare code's. */
	struct segments seg = { .sym = hot };
	CHECK(dl_iterate_phdr(find_segments, &seg) == 1, "libkmm.so's program headers");
	CHECK(seg.nexec == 3, "libkmm.so has %d executable segments, not 3", seg.nexec);
	uintptr_t vh = vma_of(hot).lo, vr = vma_of(rare).lo, vb = 0;
	for (int i = 0; i < seg.nexec; i++) {
		uintptr_t lo = vma_of(seg.exec[i]).lo;
		if (lo != vh && lo != vr)
			vb = seg.exec[i];
	}
	CHECK(vh != vr && vb != 0,
	      "malloc's, the big blocks' and the rare code's mappings are not three");
	CHECK(seg.eh != 0, "libkmm.so's PT_GNU_EH_FRAME");
	uintptr_t ve = vma_of(seg.eh).lo;
	CHECK(ve != vh && ve != vr && ve != vma_of(vb).lo,
	      "the unwind tables share a code mapping");

	/* Small blocks of every call: only malloc's mapping is resident. */
	CHECK(rss_at(hot) > 0, "malloc's mapping is not resident");
	CHECK(rss_at(vb) == 0, "small blocks faulted in the big blocks' code: %ld KiB", rss_at(vb));
	CHECK(rss_at(rare) == 0, "the rare code's mapping has %ld KiB resident", rss_at(rare));
	CHECK(rss_at(ve) == 0, "the unwind tables' mapping has %ld KiB resident", rss_at(ve));

	/* Blocks of 8 KiB and more run the big blocks' code; the rare code still sleeps. */
	churn(big, ARRAY_SIZE(big));
	CHECK(rss_at(vb) > 0, "blocks of 9 KiB .. 5 MiB, and the big blocks' code not resident");
	CHECK(rss_at(rare) == 0, "the rare code's mapping has %ld KiB resident", rss_at(rare));
	CHECK(rss_at(ve) == 0, "the unwind tables' mapping has %ld KiB resident", rss_at(ve));

	/* Running a rare function faults its mapping in. */
	CHECK(kmm_buddy_validate() == 0, "kmm_buddy_validate");
	CHECK(rss_at(rare) > 0, "kmm_buddy_validate ran, its mapping still not resident");
	return test_finish();
}
