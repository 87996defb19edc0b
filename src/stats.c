/* SPDX-License-Identifier: MIT */
/*
 * stats.c - heap figures (kmm_heap_stats), the KMM_STATS report, and the
 * counters behind it.
 *
 * With KMM_STATS=1 every malloc-family call counts its block in global
 * relaxed atomics: bytes in use (and their peak, kept with a CAS-max) and
 * allocations per size class.  That costs an atomic or two per call, which
 * is why it is off by default; kmm_heap_stats() works either way from the
 * layers' own counters.
 */
#include <string.h>

#include "kmalloc.h"
#include "os.h"
#include "page_alloc.h"
#include "slab.h"
#include "stats.h"

bool stats_enabled;

/* Per class: kmalloc classes, then page runs, huge blocks and the mid heap's blocks. */
#define STAT_LARGE NR_KMALLOC_CLASSES
#define STAT_HUGE (NR_KMALLOC_CLASSES + 1)
#define STAT_MID (NR_KMALLOC_CLASSES + 2)
#define NR_STAT_CLASSES (NR_KMALLOC_CLASSES + 3)
static unsigned long long stat_allocs[NR_STAT_CLASSES];
static unsigned long long bytes_in_use, peak_bytes_in_use;

static unsigned stat_class(void *p, size_t *bytes, const char *fn)
{
	*bytes = ksize_checked(p, fn);
	struct page *page = virt_to_page(p);
	if (!page)
		return STAT_HUGE;
	struct page *head = compound_head(page);
	if (page_flags(head) & PG_slab) {
		unsigned id = head->slab_cache->id;
		*bytes = head->slab_cache->size;
		return id < NR_KMALLOC_CLASSES ? id : STAT_LARGE;
	}
	return page_flags(head) & PG_mid ? STAT_MID : STAT_LARGE;
}

void stats_alloc(void *p)
{
	size_t bytes;
	unsigned c = stat_class(p, &bytes, "malloc");
	__atomic_fetch_add(&stat_allocs[c], 1, __ATOMIC_RELAXED);
	unsigned long long now = __atomic_add_fetch(&bytes_in_use, bytes, __ATOMIC_RELAXED);
	unsigned long long peak = __atomic_load_n(&peak_bytes_in_use, __ATOMIC_RELAXED);
	while (now > peak && !__atomic_compare_exchange_n(&peak_bytes_in_use, &peak, now, true,
							   __ATOMIC_RELAXED, __ATOMIC_RELAXED))
		;
}

void stats_free(void *p, const char *fn)
{
	size_t bytes;
	stat_class(p, &bytes, fn);
	__atomic_fetch_sub(&bytes_in_use, bytes, __ATOMIC_RELAXED);
}

void stats_write_stderr(const char *buf, size_t len) { os_write_stderr(buf, len); }

KMM_EXPORT rare void kmm_heap_stats(struct kmm_heap_stats *h)
{
	kmm_ensure_init();
	struct kmm_zone_stats z;
	struct kmalloc_totals t;
	memset(h, 0, sizeof(*h));
	kmm_zone_stats(&z);
	kmalloc_totals(&t);
	h->zone_bytes = (unsigned long long)z.managed_pages * KMM_PAGE_SIZE;
	h->peak_zone_bytes = (unsigned long long)zone_peak_pages() * KMM_PAGE_SIZE;
	h->free_bytes = (unsigned long long)(z.free_pages + z.pcp_pages) * KMM_PAGE_SIZE;
	for (unsigned o = 0; o < KMM_MAX_ORDER; o++)
		h->free_blocks += z.nr_free[o];
	h->large_bytes = t.large_bytes;
	h->large_blocks = t.large_blocks;
	h->huge_bytes = t.huge_bytes;
	h->huge_blocks = t.huge_blocks;
	h->in_use_bytes = slab_bytes_in_use() + t.mid_bytes + t.large_bytes + t.huge_bytes;
	h->mid_bytes = t.mid_bytes;
	h->mid_blocks = t.mid_blocks;
	h->mid_arena_bytes = t.mid_arena_bytes;
	h->peak_in_use_bytes = __atomic_load_n(&peak_bytes_in_use, __ATOMIC_RELAXED);
	h->metadata_bytes = zone_metadata_bytes() + pagemap_bytes();
	h->resident_bytes = (unsigned long long)z.resident_pages * KMM_PAGE_SIZE + t.huge_mapped +
			    h->metadata_bytes;
	h->peak_rss_kb = os_peak_rss_kb();
}

static double mib(unsigned long long b) { return (double)b / (1024.0 * 1024.0); }

KMM_EXPORT rare void kmm_stats_print(FILE *out)
{
	struct kmm_heap_stats h;
	kmm_heap_stats(&h);
	fprintf(out, "kmm %s statistics\n", KMM_VERSION_STRING);
	fprintf(out, "-- /proc/buddyinfo --\n");
	kmm_buddyinfo(out);
	fprintf(out, "-- /proc/pagetypeinfo --\n");
	kmm_pagetypeinfo(out);
	fprintf(out, "-- /proc/slabinfo --\n");
	kmm_slabinfo(out);
	fprintf(out, "-- heap --\n");
	if (stats_enabled) {
		unsigned long long now = __atomic_load_n(&bytes_in_use, __ATOMIC_RELAXED);
		fprintf(out, "malloc bytes in use      %14llu (%.1f MiB)\n", now, mib(now));
		fprintf(out, "peak malloc bytes in use %14llu (%.1f MiB)\n", h.peak_in_use_bytes,
			mib(h.peak_in_use_bytes));
	}
	/* The layers' view: slots of slabs held by threads count as in use (as SLUB's). */
	fprintf(out, "bytes held (slabs, runs, huge) %8llu (%.1f MiB)\n", h.in_use_bytes,
		mib(h.in_use_bytes));
	fprintf(out, "zone bytes               %14llu (%.1f MiB), peak %.1f MiB\n", h.zone_bytes,
		mib(h.zone_bytes), mib(h.peak_zone_bytes));
	fprintf(out, "mid heap                 %14llu bytes in %lu blocks, arenas %.1f MiB\n",
		h.mid_bytes, h.mid_blocks, mib(h.mid_arena_bytes));
	fprintf(out, "page runs                %14llu bytes in %lu blocks\n", h.large_bytes, h.large_blocks);
	fprintf(out, "huge blocks              %14llu bytes in %lu blocks\n", h.huge_bytes, h.huge_blocks);
	fprintf(out, "metadata                 %14llu bytes\n", h.metadata_bytes);
	fprintf(out, "resident (kmm)           %14llu (%.1f MiB)\n", h.resident_bytes, mib(h.resident_bytes));
	fprintf(out, "peak RSS (process)       %14ld KiB\n", h.peak_rss_kb);
	fprintf(out, "-- allocations per size class --\n");
	for (unsigned i = 0; i < NR_STAT_CLASSES; i++) {
		unsigned long long n = __atomic_load_n(&stat_allocs[i], __ATOMIC_RELAXED);
		if (!n)
			continue;
		if (i < NR_KMALLOC_CLASSES)
			fprintf(out, "%-17s %14llu\n", kmalloc_cache(i)->name, n);
		else
			fprintf(out, "%-17s %14llu\n",
				i == STAT_LARGE ? "page-runs" : i == STAT_MID ? "mid-heap" : "huge", n);
	}
}

/*
 * KMM_STATS=1: the report at exit, to the stderr the program started with.
 * Many programs (coreutils among them) close stderr in an atexit handler,
 * which runs before this destructor, so the descriptor is duplicated when
 * statistics are switched on.
 */
static int stats_fd = -1;

__attribute__((destructor)) static void stats_at_exit(void)
{
	if (!stats_enabled || stats_fd < 0)
		return;
	FILE *out = os_fdopen_write(stats_fd);
	if (!out)
		return;
	kmm_stats_print(out);
	fclose(out);
}

void stats_init(void)
{
	stats_enabled = kmm_tunable(KMM_TUNE_STATS) != 0;
	if (stats_enabled)
		stats_fd = os_dup_stderr();
}
