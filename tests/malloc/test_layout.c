/* SPDX-License-Identifier: MIT */
/*
 * test_layout.c - libkmm.so's mappings (cmake/kmm-layout.ld): code a running
 * program seldom executes (the functions marked rare in src/internal.h) and
 * the unwind tables are mappings of their own, so that the kernel's
 * fault-around, which maps the cached pages around a faulting address up to
 * the mapping's bounds, does not make them resident with malloc's code.
 *
 * Linked with the shared library (so malloc is libkmm.so's).  After mallocs
 * and frees of every kind, the mapping that holds kmm_buddy_validate() has
 * no resident page and is not the one that holds malloc(); nor has the
 * mapping of the unwind tables.  Calling kmm_buddy_validate() then makes
 * its mapping resident, which shows that the measure can see a page.
 */
#define _GNU_SOURCE
#include <dlfcn.h>
#include <link.h>
#include <stdbool.h>

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

/* libkmm.so's PT_GNU_EH_FRAME address, found by the object that holds @sym. */
struct eh_find {
	uintptr_t sym, eh;
};

static int find_eh(struct dl_phdr_info *info, size_t size, void *arg)
{
	struct eh_find *f = arg;
	uintptr_t eh = 0;
	bool holds = false;

	(void)size;
	for (int i = 0; i < info->dlpi_phnum; i++) {
		const ElfW(Phdr) *ph = &info->dlpi_phdr[i];
		uintptr_t lo = info->dlpi_addr + ph->p_vaddr;

		if (ph->p_type == PT_LOAD && f->sym >= lo && f->sym < lo + ph->p_memsz)
			holds = true;
		if (ph->p_type == PT_GNU_EH_FRAME)
			eh = lo;
	}
	if (!holds)
		return 0;
	f->eh = eh;
	return 1;
}

/* Allocation of every kind, so that each fast and slow path has run. */
static void churn(void)
{
	static const size_t sizes[] = { 8, 24, 100, 1000, 5000, 20000, 60000, 300000, 5 << 20 };
	void *p[ARRAY_SIZE(sizes)][8];

	for (int round = 0; round < 4; round++) {
		for (size_t i = 0; i < ARRAY_SIZE(sizes); i++)
			for (int j = 0; j < 8; j++) {
				p[i][j] = malloc(sizes[i]);
				CHECK(p[i][j] != NULL, "malloc(%zu)", sizes[i]);
				memset(p[i][j], j, sizes[i] < 4096 ? sizes[i] : 4096);
			}
		for (size_t i = 0; i < ARRAY_SIZE(sizes); i++)
			for (int j = 0; j < 8; j++) {
				void *q = realloc(p[i][j], sizes[i] + 16);
				CHECK(q != NULL, "realloc(%zu)", sizes[i] + 16);
				free(q);
			}
	}
}

int main(void)
{
	test_init("test_layout", 1);
	churn();

	uintptr_t hot = (uintptr_t)dlsym(RTLD_DEFAULT, "malloc");
	uintptr_t rare = (uintptr_t)&kmm_buddy_validate;
	Dl_info a, b;
	CHECK(dladdr((void *)hot, &a) && dladdr((void *)rare, &b), "dladdr");
	CHECK(a.dli_fbase == b.dli_fbase, "malloc (%s) is not libkmm.so's (%s)", a.dli_fname,
	      b.dli_fname);

	struct vma vh = vma_of(hot), vr = vma_of(rare);
	CHECK(vh.lo != vr.lo, "kmm_buddy_validate shares malloc's mapping %#lx-%#lx",
	      (unsigned long)vh.lo, (unsigned long)vh.hi);
	CHECK(vh.rss_kb > 0, "malloc's mapping is not resident");
	CHECK(vr.rss_kb == 0, "the rare code's mapping %#lx-%#lx has %ld KiB resident",
	      (unsigned long)vr.lo, (unsigned long)vr.hi, vr.rss_kb);

	struct eh_find eh = { hot, 0 };
	CHECK(dl_iterate_phdr(find_eh, &eh) == 1 && eh.eh != 0, "libkmm.so's PT_GNU_EH_FRAME");
	struct vma ve = vma_of(eh.eh);
	CHECK(ve.lo != vh.lo && ve.lo != vr.lo, "the unwind tables share a code mapping");
	CHECK(ve.rss_kb == 0, "the unwind tables' mapping %#lx-%#lx has %ld KiB resident",
	      (unsigned long)ve.lo, (unsigned long)ve.hi, ve.rss_kb);

	/* The measure sees a page: running a rare function faults its mapping in. */
	CHECK(kmm_buddy_validate() == 0, "kmm_buddy_validate");
	CHECK(vma_of(rare).rss_kb > 0, "kmm_buddy_validate ran, its mapping still not resident");
	return test_finish();
}
