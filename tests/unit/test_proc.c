/* SPDX-License-Identifier: MIT */
/*
 * test_proc.c - the /proc-style reports: kmm_buddyinfo(), kmm_pagetypeinfo()
 * and kmm_slabinfo().
 *
 * Each line is parsed, printed again with the kernel's own format string
 * and compared byte for byte, so any deviation from the kernel's layout
 * fails.  The figures must equal kmm_zone_stats() and kmm_cache_stats()
 * taken with nothing else running.
 *
 *   /proc/buddyinfo:  "Node %d, zone %8s " then "%6lu " per order, then "\n".
 *   /proc/pagetypeinfo: "Page block order: %d", "Pages per block:  %lu", a
 *                     blank line, "%-43s " "Free pages count per migrate type
 *                     at order" then "%6d " per order, per type "Node %4d,
 *                     zone %8s, type %12s " then "%6lu " per order; a blank
 *                     line, "%-23s" "Number of blocks type " then "%12s "
 *                     per type, "Node %d, zone %8s " then "%12lu " per type.
 *                     kmm adds a third table in the first one's layout: the
 *                     free pages per type and order still resident.
 *   /proc/slabinfo:   "slabinfo - version: 2.1", the "# name ..." header,
 *                     then per cache
 *                     "%-17s %6lu %6lu %6u %4u %4d : tunables %4u %4u %4u
 *                      : slabdata %6lu %6lu %6lu\n" (one line).
 */
#include "common.h"

#define SLABINFO_HEADER1 "slabinfo - version: 2.1"
#define SLABINFO_HEADER2                                                                         \
	"# name            <active_objs> <num_objs> <objsize> <objperslab> <pagesperslab> : "     \
	"tunables <limit> <batchcount> <sharedfactor> : slabdata <active_slabs> <num_slabs> "     \
	"<sharedavail>"

/* Run @print into a memory buffer; returns the text (malloc'd). */
static char *capture(void (*print)(FILE *))
{
	char *buf = NULL;
	size_t len = 0;
	FILE *f = open_memstream(&buf, &len);

	CHECK(f != NULL, "open_memstream: %s", strerror(errno));
	print(f);
	CHECK(fclose(f) == 0, "fclose: %s", strerror(errno));
	CHECK(buf != NULL, "no output");
	return buf;
}

/* Split @text into lines in place; returns the count.  Every line must end in '\n'. */
static size_t split_lines(char *text, char **lines, size_t max)
{
	size_t n = 0;
	char *s = text;

	while (*s) {
		char *nl = strchr(s, '\n');
		CHECK(nl != NULL, "last line not terminated by a newline: \"%s\"", s);
		CHECK(n < max, "more than %zu lines", max);
		*nl = '\0';
		lines[n++] = s;
		s = nl + 1;
	}
	return n;
}

/* ---- buddyinfo ---- */

struct buddy_line {
	int node;
	char zone[32];
	unsigned long nr[KMM_MAX_ORDER];
};

/* Parse one line and check it is exactly what the kernel's format prints. */
static void parse_buddy_line(const char *line, struct buddy_line *out)
{
	char again[512];
	const char *s;
	char *end;
	int pos = 0, len;

	CHECK(sscanf(line, "Node %d, zone %31s%n", &out->node, out->zone, &pos) == 2 && pos > 0,
	      "buddyinfo line does not start \"Node N, zone NAME\": \"%s\"", line);
	s = line + pos;
	for (unsigned k = 0; k < KMM_MAX_ORDER; k++) {
		errno = 0;
		out->nr[k] = strtoul(s, &end, 10);
		CHECK(end != s && errno == 0, "buddyinfo line lacks the count of order %u: \"%s\"", k, line);
		s = end;
	}
	CHECK(*s == ' ' && s[1] == '\0', "buddyinfo line has trailing text \"%s\": \"%s\"", s, line);

	len = snprintf(again, sizeof(again), "Node %d, zone %8s ", out->node, out->zone);
	for (unsigned k = 0; k < KMM_MAX_ORDER; k++)
		len += snprintf(again + len, sizeof(again) - (size_t)len, "%6lu ", out->nr[k]);
	CHECK(strcmp(again, line) == 0, "buddyinfo line is not in the kernel's format:\n got  \"%s\"\n want \"%s\"",
	      line, again);
}

static void test_buddyinfo(struct rng *r)
{
	struct kmm_zone_stats before, after;
	struct buddy_line bl;
	void *held[64];
	unsigned held_order[64];
	char *text, *lines[64];
	size_t n;
	int found = 0;

	/* Leave the free lists uneven so that several orders have counts. */
	for (size_t i = 0; i < ARRAY_SIZE(held); i++) {
		held_order[i] = (unsigned)rng_below(r, KMM_MAX_ORDER);
		held[i] = kmm_alloc_pages(KMM_GFP_KERNEL, held_order[i]);
		CHECK(held[i] != NULL, "order-%u allocation failed: %s", held_order[i], strerror(errno));
	}
	for (size_t i = 0; i < ARRAY_SIZE(held); i += 2)
		kmm_free_pages(held[i], held_order[i]);
	kmm_drain_local();

	kmm_zone_stats(&before);
	text = capture(kmm_buddyinfo);
	kmm_zone_stats(&after);
	CHECK(memcmp(before.nr_free, after.nr_free, sizeof(before.nr_free)) == 0,
	      "the zone changed while nothing ran");
	n = split_lines(text, lines, ARRAY_SIZE(lines));
	CHECK(n >= 1, "kmm_buddyinfo() printed nothing");
	for (size_t i = 0; i < n; i++) {
		parse_buddy_line(lines[i], &bl);
		CHECK(bl.node >= 0, "negative node %d", bl.node);
		if (strcmp(bl.zone, "Normal") == 0) {
			found++;
			for (unsigned k = 0; k < KMM_MAX_ORDER; k++)
				CHECK(bl.nr[k] == before.nr_free[k],
				      "buddyinfo says %lu free blocks of order %u, kmm_zone_stats() %lu",
				      bl.nr[k], k, before.nr_free[k]);
		}
	}
	CHECK(found == 1, "%d lines for zone Normal in:\n%s", found, text);
	free(text);

	for (size_t i = 1; i < ARRAY_SIZE(held); i += 2)
		kmm_free_pages(held[i], held_order[i]);
}

/* ---- pagetypeinfo ---- */

#define NR_KINDS 3
static const char *const kind_names[NR_KINDS] = {"Small", "Large", "Kindless"};

/* Check @line is the header "%-43s " @title then "%6d " per order. */
static void check_order_header(const char *line, const char *title)
{
	char want[512];
	int len = snprintf(want, sizeof(want), "%-43s ", title);
	for (unsigned k = 0; k < KMM_MAX_ORDER; k++)
		len += snprintf(want + len, sizeof(want) - (size_t)len, "%6u ", k);
	CHECK(strcmp(line, want) == 0, "pagetypeinfo header:\n got  \"%s\"\n want \"%s\"", line, want);
}

/* Parse "Node %4d, zone %8s, type %12s " and a count per order; exact format. */
static void parse_type_line(const char *line, const char *kind, unsigned long *nr)
{
	char zone[32], type[32], again[512];
	int node, pos = 0;
	CHECK(sscanf(line, "Node %d, zone %31s type %31s%n", &node, zone, type, &pos) == 3 && pos > 0,
	      "pagetypeinfo line does not parse: \"%s\"", line);
	CHECK(strcmp(zone, "Normal,") == 0 && strcmp(type, kind) == 0,
	      "pagetypeinfo line is not zone Normal, type %s: \"%s\"", kind, line);
	const char *s = line + pos;
	for (unsigned k = 0; k < KMM_MAX_ORDER; k++) {
		char *end;
		errno = 0;
		nr[k] = strtoul(s, &end, 10);
		CHECK(end != s && errno == 0, "pagetypeinfo line lacks order %u: \"%s\"", k, line);
		s = end;
	}
	int len = snprintf(again, sizeof(again), "Node %4d, zone %8s, type %12s ", node, "Normal", kind);
	for (unsigned k = 0; k < KMM_MAX_ORDER; k++)
		len += snprintf(again + len, sizeof(again) - (size_t)len, "%6lu ", nr[k]);
	CHECK(strcmp(again, line) == 0, "pagetypeinfo line:\n got  \"%s\"\n want \"%s\"", line, again);
}

struct pagetype_report {
	unsigned long free[NR_KINDS][KMM_MAX_ORDER];
	unsigned long resident[NR_KINDS][KMM_MAX_ORDER];
	unsigned long blocks[NR_KINDS];
};

static void parse_pagetypeinfo(struct pagetype_report *r)
{
	char *text = capture(kmm_pagetypeinfo), *lines[64], want[512];
	size_t n = split_lines(text, lines, ARRAY_SIZE(lines));
	unsigned long per_block;
	int order, len, pos = 0;

	CHECK(n == 15, "pagetypeinfo has %zu lines, expected 15:\n%s", n, text);
	CHECK(sscanf(lines[0], "Page block order: %d", &order) == 1 && order > 0 && order < KMM_MAX_ORDER,
	      "pagetypeinfo line 1: \"%s\"", lines[0]);
	CHECK(sscanf(lines[1], "Pages per block:  %lu", &per_block) == 1 && per_block == 1ul << order,
	      "pagetypeinfo line 2: \"%s\"", lines[1]);
	CHECK(lines[2][0] == '\0' && lines[7][0] == '\0' && lines[10][0] == '\0', "blank lines missing");
	check_order_header(lines[3], "Free pages count per migrate type at order");
	for (unsigned t = 0; t < NR_KINDS; t++)
		parse_type_line(lines[4 + t], kind_names[t], r->free[t]);
	len = snprintf(want, sizeof(want), "%-23s", "Number of blocks type ");
	for (unsigned t = 0; t < NR_KINDS; t++)
		len += snprintf(want + len, sizeof(want) - (size_t)len, "%12s ", kind_names[t]);
	CHECK(strcmp(lines[8], want) == 0, "block count header:\n got  \"%s\"\n want \"%s\"", lines[8], want);
	CHECK(sscanf(lines[9], "Node 0, zone   Normal %lu %lu %lu%n", &r->blocks[0], &r->blocks[1],
	             &r->blocks[2], &pos) == 3 && pos > 0,
	      "block count line: \"%s\"", lines[9]);
	len = snprintf(want, sizeof(want), "Node %d, zone %8s ", 0, "Normal");
	for (unsigned t = 0; t < NR_KINDS; t++)
		len += snprintf(want + len, sizeof(want) - (size_t)len, "%12lu ", r->blocks[t]);
	CHECK(strcmp(lines[9], want) == 0, "block count line:\n got  \"%s\"\n want \"%s\"", lines[9], want);
	check_order_header(lines[11], "Resident free pages per migrate type at order");
	for (unsigned t = 0; t < NR_KINDS; t++)
		parse_type_line(lines[12 + t], kind_names[t], r->resident[t]);
	free(text);
}

static void test_pagetypeinfo(struct rng *r)
{
	struct kmm_zone_stats zs;
	struct pagetype_report rep;
	void *held[64];
	unsigned held_order[64];

	for (size_t i = 0; i < ARRAY_SIZE(held); i++) {
		held_order[i] = (unsigned)rng_below(r, KMM_MAX_ORDER);
		held[i] = kmm_alloc_pages(KMM_GFP_KERNEL, held_order[i]);
		CHECK(held[i] != NULL, "order-%u allocation failed: %s", held_order[i], strerror(errno));
		/* Touch every page, so that the freed half is resident until trimmed. */
		memset(held[i], 0x5a, (size_t)4096 << held_order[i]);
	}
	for (size_t i = 0; i < ARRAY_SIZE(held); i += 2)
		kmm_free_pages(held[i], held_order[i]);
	kmm_drain_local();

	parse_pagetypeinfo(&rep);
	kmm_zone_stats(&zs);
	unsigned long blocks = 0, free_pages = 0, resident = 0;
	for (unsigned t = 0; t < NR_KINDS; t++)
		blocks += rep.blocks[t];
	CHECK(blocks * 64 == zs.managed_pages, "%lu pageblocks of 64 pages in a zone of %lu pages", blocks,
	      zs.managed_pages);
	for (unsigned k = 0; k < KMM_MAX_ORDER; k++) {
		unsigned long sum = 0;
		for (unsigned t = 0; t < NR_KINDS; t++) {
			sum += rep.free[t][k];
			free_pages += rep.free[t][k] << k;
			resident += rep.resident[t][k];
			CHECK(rep.resident[t][k] <= rep.free[t][k] << k,
			      "%s order %u: %lu resident pages in %lu free blocks", kind_names[t], k,
			      rep.resident[t][k], rep.free[t][k]);
		}
		CHECK(sum == zs.nr_free[k], "pagetypeinfo: %lu free blocks of order %u, kmm_zone_stats() %lu",
		      sum, k, zs.nr_free[k]);
	}
	CHECK(free_pages == zs.free_pages, "pagetypeinfo: %lu free pages, kmm_zone_stats() %lu", free_pages,
	      zs.free_pages);
	/* Every other block was written and freed: its pages are free and still resident. */
	CHECK(resident > 0, "no resident free pages after freeing written blocks");
	CHECK(resident <= zs.resident_pages, "%lu resident free pages, %lu resident in all", resident,
	      zs.resident_pages);
	/* Whole free pageblocks have no kind. */
	for (unsigned k = 6; k < KMM_MAX_ORDER; k++)
		CHECK(rep.free[0][k] == 0 && rep.free[1][k] == 0, "a free block of order %u has a kind", k);

	/* kmm_trim() decommits every free block of 64 KiB (order 4) and up. */
	kmm_trim();
	parse_pagetypeinfo(&rep);
	for (unsigned t = 0; t < NR_KINDS; t++)
		for (unsigned k = 4; k < KMM_MAX_ORDER; k++)
			CHECK(rep.resident[t][k] == 0, "%s order %u: %lu pages resident after kmm_trim()",
			      kind_names[t], k, rep.resident[t][k]);

	for (size_t i = 1; i < ARRAY_SIZE(held); i += 2)
		kmm_free_pages(held[i], held_order[i]);
}

/* ---- slabinfo ---- */

struct slab_line {
	char name[128];
	unsigned long active_objs, num_objs;
	unsigned objsize, objperslab;
	int pagesperslab;
	unsigned limit, batchcount, sharedfactor;
	unsigned long active_slabs, num_slabs, sharedavail;
};

static void parse_slab_line(const char *line, struct slab_line *o)
{
	char again[512];
	int pos = 0, len;

	CHECK(sscanf(line, "%127s %lu %lu %u %u %d : tunables %u %u %u : slabdata %lu %lu %lu%n",
	             o->name, &o->active_objs, &o->num_objs, &o->objsize, &o->objperslab,
	             &o->pagesperslab, &o->limit, &o->batchcount, &o->sharedfactor, &o->active_slabs,
	             &o->num_slabs, &o->sharedavail, &pos) == 12 &&
	              pos > 0,
	      "slabinfo line does not parse: \"%s\"", line);
	len = snprintf(again, sizeof(again),
	               "%-17s %6lu %6lu %6u %4u %4d : tunables %4u %4u %4u : slabdata %6lu %6lu %6lu",
	               o->name, o->active_objs, o->num_objs, o->objsize, o->objperslab,
	               o->pagesperslab, o->limit, o->batchcount, o->sharedfactor, o->active_slabs,
	               o->num_slabs, o->sharedavail);
	CHECK(len > 0 && (size_t)len < sizeof(again), "slabinfo line too long: \"%s\"", line);
	CHECK(strcmp(again, line) == 0, "slabinfo line is not in the kernel's format:\n got  \"%s\"\n want \"%s\"",
	      line, again);
	CHECK(o->limit == 0 && o->batchcount == 0 && o->sharedfactor == 0,
	      "%s: tunables %u %u %u, expected 0 0 0 (SLUB)", o->name, o->limit, o->batchcount,
	      o->sharedfactor);
	CHECK(o->sharedavail == 0, "%s: sharedavail %lu, expected 0", o->name, o->sharedavail);
	CHECK(o->active_objs <= o->num_objs && o->active_slabs <= o->num_slabs,
	      "%s: active figures above totals", o->name);
	CHECK(o->num_objs == o->num_slabs * o->objperslab, "%s: %lu objects in %lu slabs of %u",
	      o->name, o->num_objs, o->num_slabs, o->objperslab);
}

/* Parse the whole report; returns the number of cache lines, stored in @out. */
static size_t parse_slabinfo(char *text, struct slab_line *out, size_t max)
{
	char *lines[1024];
	size_t n = split_lines(text, lines, ARRAY_SIZE(lines));

	CHECK(n >= 2, "slabinfo has %zu lines", n);
	CHECK(strcmp(lines[0], SLABINFO_HEADER1) == 0, "slabinfo first line: \"%s\"", lines[0]);
	CHECK(strcmp(lines[1], SLABINFO_HEADER2) == 0, "slabinfo second line:\n got  \"%s\"\n want \"%s\"",
	      lines[1], SLABINFO_HEADER2);
	CHECK(n - 2 <= max, "too many caches");
	for (size_t i = 2; i < n; i++)
		parse_slab_line(lines[i], &out[i - 2]);
	return n - 2;
}

static const struct slab_line *find_cache(const struct slab_line *l, size_t n, const char *name)
{
	const struct slab_line *found = NULL;
	for (size_t i = 0; i < n; i++)
		if (strcmp(l[i].name, name) == 0) {
			CHECK(found == NULL, "two slabinfo lines for %s", name);
			found = &l[i];
		}
	return found;
}

/*
 * The kmalloc cache of slot size @size, named as the kernel names them:
 * "kmalloc-96", "kmalloc-512", and "kmalloc-1k", "kmalloc-8k" for multiples
 * of 1024 ("kmalloc-1024" is accepted too).
 */
static const struct slab_line *find_kmalloc_cache(const struct slab_line *l, size_t n, size_t size)
{
	char name[64];
	const struct slab_line *found;

	snprintf(name, sizeof(name), "kmalloc-%zu", size);
	found = find_cache(l, n, name);
	if (!found && size % 1024 == 0) {
		snprintf(name, sizeof(name), "kmalloc-%zuk", size / 1024);
		found = find_cache(l, n, name);
	}
	return found;
}

static int stats_equal(const struct kmm_cache_stats *a, const struct kmm_cache_stats *b)
{
	return a->name && b->name && strcmp(a->name, b->name) == 0 &&
	       a->object_size == b->object_size && a->size == b->size &&
	       a->align == b->align && a->objects_per_slab == b->objects_per_slab &&
	       a->pages_per_slab == b->pages_per_slab && a->active_objs == b->active_objs &&
	       a->num_objs == b->num_objs && a->num_slabs == b->num_slabs &&
	       a->active_slabs == b->active_slabs;
}

static void test_slabinfo(void)
{
	static struct slab_line lines[1024];
	struct kmm_cache_stats before, after;
	struct kmm_cache *c;
	const struct slab_line *l;
	void *objs[150], *k64, *k1000;
	char *text;
	size_t n;

	c = kmm_cache_create("test_proc_cache", 120, 0, 0, NULL);
	CHECK(c != NULL, "kmm_cache_create failed: %s", strerror(errno));
	for (size_t i = 0; i < ARRAY_SIZE(objs); i++) {
		objs[i] = kmm_cache_alloc(c, KMM_GFP_KERNEL);
		CHECK(objs[i] != NULL, "allocation failed: %s", strerror(errno));
	}
	/* Free some, so the cache has partial slabs. */
	for (size_t i = 0; i < ARRAY_SIZE(objs); i += 3)
		kmm_cache_free(c, objs[i]);
	/* kmalloc caches exist once used. */
	k64 = kmm_kmalloc(64, KMM_GFP_KERNEL);
	k1000 = kmm_kmalloc(1000, KMM_GFP_KERNEL);
	CHECK(k64 && k1000, "kmalloc failed");

	kmm_cache_stats(c, &before);
	text = capture(kmm_slabinfo);
	kmm_cache_stats(c, &after);
	CHECK(stats_equal(&before, &after), "the cache changed while nothing ran");
	n = parse_slabinfo(text, lines, ARRAY_SIZE(lines));

	l = find_cache(lines, n, "test_proc_cache");
	CHECK(l != NULL, "no slabinfo line for test_proc_cache");
	CHECK(l->active_objs == before.active_objs, "active_objs: slabinfo %lu, stats %lu",
	      l->active_objs, before.active_objs);
	CHECK(l->num_objs == before.num_objs, "num_objs: slabinfo %lu, stats %lu", l->num_objs,
	      before.num_objs);
	CHECK(l->objsize == before.size, "objsize: slabinfo %u, stats size %zu", l->objsize,
	      before.size);
	CHECK(l->objperslab == before.objects_per_slab, "objperslab: slabinfo %u, stats %u",
	      l->objperslab, before.objects_per_slab);
	CHECK(l->pagesperslab == (int)before.pages_per_slab, "pagesperslab: slabinfo %d, stats %u",
	      l->pagesperslab, before.pages_per_slab);
	CHECK(l->active_slabs == before.active_slabs, "active_slabs: slabinfo %lu, stats %lu",
	      l->active_slabs, before.active_slabs);
	CHECK(l->num_slabs == before.num_slabs, "num_slabs: slabinfo %lu, stats %lu", l->num_slabs,
	      before.num_slabs);
	CHECK(l->active_objs >= ARRAY_SIZE(objs) - (ARRAY_SIZE(objs) + 2) / 3,
	      "active_objs %lu below the objects in use", l->active_objs);

	CHECK(find_kmalloc_cache(lines, n, kmm_kmalloc_size_class(64)) != NULL,
	      "no slabinfo line for the kmalloc cache of 64-byte requests (kmalloc-%zu)",
	      kmm_kmalloc_size_class(64));
	l = find_kmalloc_cache(lines, n, kmm_kmalloc_size_class(1000));
	CHECK(l != NULL, "no slabinfo line for the kmalloc cache of 1000-byte requests (kmalloc-%zu)",
	      kmm_kmalloc_size_class(1000));
	CHECK(l->objsize >= kmm_kmalloc_size_class(1000), "%s: objsize %u below its class %zu", l->name,
	      l->objsize, kmm_kmalloc_size_class(1000));
	free(text);

	/* A destroyed cache leaves the report. */
	for (size_t i = 0; i < ARRAY_SIZE(objs); i++)
		if (i % 3)
			kmm_cache_free(c, objs[i]);
	kmm_cache_destroy(c);
	text = capture(kmm_slabinfo);
	n = parse_slabinfo(text, lines, ARRAY_SIZE(lines));
	CHECK(find_cache(lines, n, "test_proc_cache") == NULL, "test_proc_cache is listed after destroy");
	free(text);
	kmm_kfree(k64);
	kmm_kfree(k1000);
}

int main(void)
{
	struct rng r;

	rng_seed(&r, test_init("test_proc", 0x70726f6366733031ull));
	test_buddyinfo(&r);
	test_pagetypeinfo(&r);
	test_slabinfo();
	CHECK(kmm_buddy_validate() == 0, "kmm_buddy_validate() failed at the end");
	CHECK(kmm_slab_validate(NULL) == 0, "kmm_slab_validate(NULL) failed at the end");
	return test_finish();
}
