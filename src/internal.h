/* SPDX-License-Identifier: MIT */
/*
 * internal.h - what every layer of kmm shares: compiler helpers, the
 * intrusive list, locks, assertion tiers and the fatal-error reporter.
 *
 * Naming: public symbols start with kmm_; internal ones that cross files
 * start with kmm__ is avoided (reserved-looking); they use the layer's word
 * instead (zone_, slab_, os_, ...) and are hidden by -fvisibility=hidden.
 *
 * Assertion tiers:
 *   KMM_CHECK(cond, ...)  always on: cheap hardening checks on user input
 *                         (invalid frees, double frees).  Reports and aborts.
 *   KMM_ASSERT(cond)      debug builds only (KMM_DEBUG): internal invariants.
 *   *_validate()          whole-structure validators, called by tests.
 */
#ifndef KMM_INTERNAL_H
#define KMM_INTERNAL_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <pthread.h>

#include <kmm.h>

#define KMM_EXPORT __attribute__((visibility("default")))
/* On extern declarations of internal data: reached directly, not through the GOT. */
#define KMM_HIDDEN __attribute__((visibility("hidden")))
/*
 * For large zero-initialised arrays touched a little at a time (bitmaps,
 * the mid heaps): GCC's x86-64 large-data bss, which the linker places after
 * all of .bss, so that the small variables every process touches share a
 * few pages instead of lying between the arrays' pages (cache-thrash at 1
 * thread: 10 pages of data and bss resident -> 8).  Clang would give the
 * section file contents (PROGBITS), so elsewhere they stay in .bss.
 */
#if defined(__x86_64__) && defined(__GNUC__) && !defined(__clang__)
#define KMM_SPARSE_BSS __attribute__((section(".lbss")))
#else
#define KMM_SPARSE_BSS
#endif
#define likely(x) __builtin_expect(!!(x), 1)
#define unlikely(x) __builtin_expect(!!(x), 0)
#define noinline __attribute__((noinline))
#define always_inline inline __attribute__((always_inline))
#define cold __attribute__((cold))
/*
 * rare: code a running program seldom or never executes - validators,
 * report printers, statistics, fork handlers, error reports.  Cold, and in
 * a section of its own that libkmm.so's link (cmake/kmm-layout.ld) gives a
 * mapping of its own: on a fault in a file mapping the kernel maps up to
 * 64 KiB of its cached pages around the address (fault-around), so in the
 * one mapping with malloc and free these pages were resident in every
 * process that preloads kmm.  A program that forks (a shell, make) runs the
 * fork handlers and pays as before.  Linked statically, the section is an
 * orphan that the linker places after .text.
 */
#define rare __attribute__((__cold__, __noinline__, __section__("kmm_text_rare")))
/*
 * big_text: the code of blocks of 8 KiB and more - the mid heap, page runs
 * (also what an alignment above 4 KiB takes), huge blocks, the background
 * decay thread.  Hot where it runs, so not cold; in a mapping of its own
 * for the reason of rare: a program whose blocks are all small (many
 * short-lived C tools) never faults it in, and libkmm.so's always-resident
 * code is 9 pages, not 11.  A C++ program has libstdc++'s emergency
 * exception pool (about 70 KiB), so it has this mapping too.  The decay
 * pass itself stays in .text: every program that frees pages runs it.
 */
#define big_text __attribute__((__section__("kmm_text_big")))

#define KMM_CACHELINE 64
#define ALIGN_UP(x, a) (((x) + ((a) - 1)) & ~((__typeof__(x))(a) - 1))
#define ALIGN_DOWN(x, a) ((x) & ~((__typeof__(x))(a) - 1))
#define IS_POW2(x) ((x) != 0 && ((x) & ((x) - 1)) == 0)
#define ARRAY_SIZE(a) (sizeof(a) / sizeof((a)[0]))
#define container_of(p, type, member) ((type *)((char *)(p) - offsetof(type, member)))
#define MIN(a, b) ((a) < (b) ? (a) : (b))
#define MAX(a, b) ((a) > (b) ? (a) : (b))

#ifdef KMM_DEBUG
#define KMM_DEBUG_ENABLED 1
#else
#define KMM_DEBUG_ENABLED 0
#endif

/* ---- fatal errors: name kmm, the function and the address, then abort ---- */
rare __attribute__((noreturn, format(printf, 2, 3))) void kmm_fatal(const char *func,
                                                                      const char *fmt, ...);
/* A warning on stderr that does not abort. */
rare __attribute__((format(printf, 1, 2))) void kmm_warn(const char *fmt, ...);

#define KMM_CHECK(cond, func, ...)                                                               \
	do {                                                                                     \
		if (unlikely(!(cond)))                                                           \
			kmm_fatal(func, __VA_ARGS__);                                            \
	} while (0)

#define KMM_ASSERT(cond)                                                                         \
	do {                                                                                     \
		if (KMM_DEBUG_ENABLED && unlikely(!(cond)))                                      \
			kmm_fatal(__func__, "assertion '%s' failed at %s:%d", #cond, __FILE__,   \
				  __LINE__);                                                     \
	} while (0)

/* ---- doubly linked intrusive list (the kernel's list_head) ---- */
struct list_head {
	struct list_head *next, *prev;
};

static inline void list_init(struct list_head *h) { h->next = h->prev = h; }
static inline bool list_empty(const struct list_head *h) { return h->next == h; }
static inline void list_insert(struct list_head *n, struct list_head *prev,
			       struct list_head *next)
{
	next->prev = n;
	n->next = next;
	n->prev = prev;
	prev->next = n;
}
static inline void list_add(struct list_head *n, struct list_head *h) { list_insert(n, h, h->next); }
static inline void list_add_tail(struct list_head *n, struct list_head *h)
{
	list_insert(n, h->prev, h);
}
static inline void list_del(struct list_head *n)
{
	n->prev->next = n->next;
	n->next->prev = n->prev;
	n->next = n->prev = NULL;
}
#define list_entry(p, type, member) container_of(p, type, member)
#define list_first_entry(h, type, member) list_entry((h)->next, type, member)
#define list_for_each(pos, h) for (pos = (h)->next; pos != (h); pos = pos->next)
#define list_for_each_safe(pos, tmp, h)                                                         \
	for (pos = (h)->next, tmp = pos->next; pos != (h); pos = tmp, tmp = pos->next)

/* ---- locks ----
 * A mutex per zone and per cache; pthread mutexes so that waiting threads
 * sleep instead of spinning on a 2-core machine, and so that fork handlers
 * can take them all.
 */
typedef pthread_mutex_t kmm_lock_t;
#define KMM_LOCK_INIT PTHREAD_MUTEX_INITIALIZER
static inline void kmm_lock_init(kmm_lock_t *l) { pthread_mutex_init(l, NULL); }
static inline void kmm_lock(kmm_lock_t *l) { pthread_mutex_lock(l); }
static inline void kmm_unlock(kmm_lock_t *l) { pthread_mutex_unlock(l); }

/*
 * A lighter lock for short sections taken on every call of a path (the mid
 * heap's): one compare-and-swap to take it, one exchange to release it, a
 * futex wait (os_futex_wait(), after a short spin) only when it is held.
 * 0: free; 1: held; 2: held, and someone may be waiting.  A pthread mutex
 * costs 50-60 instructions a lock and unlock pair more on that path.
 */
typedef struct {
	int state;
} kmm_flock_t;
#define KMM_FLOCK_INIT {0}
void kmm_flock_slow(kmm_flock_t *l);
static inline void kmm_flock_init(kmm_flock_t *l) { __atomic_store_n(&l->state, 0, __ATOMIC_RELAXED); }
static inline void kmm_flock(kmm_flock_t *l)
{
	int free_state = 0;
	if (__builtin_expect(!__atomic_compare_exchange_n(&l->state, &free_state, 1, false,
							  __ATOMIC_ACQUIRE, __ATOMIC_RELAXED), 0))
		kmm_flock_slow(l);
}
void kmm_funlock_wake(kmm_flock_t *l);
static inline void kmm_funlock(kmm_flock_t *l)
{
	if (__builtin_expect(__atomic_exchange_n(&l->state, 0, __ATOMIC_RELEASE) == 2, 0))
		kmm_funlock_wake(l);
}

/* ---- misc ---- */
static inline unsigned ilog2_ul(unsigned long x) { return 63u - (unsigned)__builtin_clzl(x); }
/* Smallest order whose block holds @bytes. */
static inline unsigned order_for_bytes(size_t bytes)
{
	size_t pages = (bytes + KMM_PAGE_SIZE - 1) >> KMM_PAGE_SHIFT;
	return pages <= 1 ? 0 : ilog2_ul(pages - 1) + 1;
}

/* Monotonic milliseconds (coarse clock, vDSO: no system call). */
uint64_t kmm_now_ms(void);

/* One-time initialisation of every layer; cheap after the first call. */
void kmm_init(void);
extern KMM_HIDDEN int kmm_initialized;
static always_inline void kmm_ensure_init(void)
{
	if (unlikely(!__atomic_load_n(&kmm_initialized, __ATOMIC_ACQUIRE)))
		kmm_init();
}

/* Tunables (options.c); read without locks, written rarely. */
extern KMM_HIDDEN long kmm_tunables[KMM_TUNE_NR];
static inline long kmm_tunable(enum kmm_tunable t)
{
	return __atomic_load_n(&kmm_tunables[t], __ATOMIC_RELAXED);
}
void options_init(void);

#endif /* KMM_INTERNAL_H */
