/* SPDX-License-Identifier: MIT */
/*
 * os_linux.c - the OS layer on Linux: the only file that makes system calls.
 *
 * Address space comes from mmap (the default) or, when KMM_TUNE_USE_BRK is
 * set, from brk, as glibc grows its heap by brk and maps big blocks: here the
 * zone's sections come from brk and huge blocks are always mapped.  The brk
 * heap is ours only when nobody else moves the break; if the break moved
 * under us (a foreign sbrk) we stop using brk and fall back to mmap.
 *
 * Every function that obtains memory passes os_may_fail() first so tests
 * can inject ENOMEM (see kmm/debug.h).
 */
#define _GNU_SOURCE
#include <errno.h>
#include <fcntl.h>
#include <signal.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <linux/futex.h>
#include <linux/membarrier.h>
#include <sys/mman.h>
#include <sys/resource.h>
#include <sys/syscall.h>
#include <time.h>
#include <unistd.h>

#include "internal.h"
#include "os.h"

/* ---- fault injection ---- */

/* Successful memory-obtaining calls still allowed; -1: no injection. */
static long os_fail_budget = -1;
static unsigned long os_failed;

KMM_EXPORT void kmm_os_fail_after(long after)
{
	__atomic_store_n(&os_fail_budget, after < 0 ? 0 : after, __ATOMIC_SEQ_CST);
}

KMM_EXPORT void kmm_os_fail_reset(void) { __atomic_store_n(&os_fail_budget, -1, __ATOMIC_SEQ_CST); }

KMM_EXPORT unsigned long kmm_os_failed_calls(void)
{
	return __atomic_load_n(&os_failed, __ATOMIC_RELAXED);
}

/* True if this call must fail (errno is then ENOMEM). */
static bool os_may_fail(void)
{
	long b = __atomic_load_n(&os_fail_budget, __ATOMIC_RELAXED);
	while (b >= 0) {
		if (b == 0) {
			__atomic_fetch_add(&os_failed, 1, __ATOMIC_RELAXED);
			errno = ENOMEM;
			return true;
		}
		if (__atomic_compare_exchange_n(&os_fail_budget, &b, b - 1, false, __ATOMIC_RELAXED,
						__ATOMIC_RELAXED))
			return false;
	}
	return false;
}

/* ---- mmap ---- */

static void *os_mmap(void *hint, size_t size)
{
	void *p = mmap(hint, size, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS | MAP_NORESERVE,
		       -1, 0);
	if (p == MAP_FAILED) {
		errno = ENOMEM;
		return NULL;
	}
	return p;
}

void *os_reserve_readonly(size_t size)
{
	if (os_may_fail())
		return NULL;
	/* A private mapping that is not writable is not charged to the commit limit. */
	void *p = mmap(NULL, size, PROT_READ, MAP_PRIVATE | MAP_ANONYMOUS | MAP_NORESERVE, -1, 0);
	if (p == MAP_FAILED) {
		errno = ENOMEM;
		return NULL;
	}
	return p;
}

int os_make_writable(void *addr, size_t size)
{
	if (os_may_fail())
		return -1;
	if (mprotect(addr, size, PROT_READ | PROT_WRITE) != 0) {
		errno = ENOMEM;
		return -1;
	}
	return 0;
}

void *os_map_aligned(size_t size, size_t align)
{
	if (os_may_fail())
		return NULL;
	if (size == 0 || size > ((size_t)1 << 46) || align > ((size_t)1 << 40)) {
		errno = ENOMEM;
		return NULL;
	}
	void *p = os_mmap(NULL, size);
	if (!p || ((uintptr_t)p & (align - 1)) == 0)
		return p;
	/* Misaligned: map size + align and trim both ends. */
	munmap(p, size);
	size_t span = size + align;
	char *q = os_mmap(NULL, span);
	if (!q)
		return NULL;
	char *start = (char *)ALIGN_UP((uintptr_t)q, align);
	if (start > q)
		munmap(q, (size_t)(start - q));
	char *end = start + size;
	if (q + span > end)
		munmap(end, (size_t)(q + span - end));
	return start;
}

void os_unmap(void *addr, size_t size)
{
	if (munmap(addr, size) != 0)
		kmm_fatal("os_unmap", "munmap(%p, %zu) failed: %s", addr, size, strerror(errno));
}

void os_decommit(void *addr, size_t size)
{
	/* MADV_DONTNEED on private anonymous memory: zero-filled on next touch. */
	(void)madvise(addr, size, MADV_DONTNEED);
}

big_text int os_remap_inplace(void *addr, size_t old_size, size_t new_size)
{
	if (new_size > old_size && os_may_fail())
		return -1;
	if (mremap(addr, old_size, new_size, 0) == MAP_FAILED) {
		errno = ENOMEM;
		return -1;
	}
	return 0;
}

big_text int os_move_pages(void *src, size_t len, void *dst, size_t chunk)
{
	/*
	 * Chunk by chunk, always: before Linux 6.17 one mremap cannot span
	 * mappings, and one path on every kernel is one path tested.  Aligned
	 * 2 MiB chunks move whole page tables; a call costs about a microsecond.
	 * No injected failure: a move back after a partial move must not fail.
	 */
	for (size_t off = 0; off < len; off += chunk) {
		size_t n = MIN(chunk, len - off);
		if (mremap((char *)src + off, n, n, MREMAP_MAYMOVE | MREMAP_FIXED, (char *)dst + off) ==
		    MAP_FAILED) {
			errno = ENOMEM;
			return -1;
		}
	}
	return 0;
}

void os_deadline_ms(struct timespec *ts, long ms)
{
	clock_gettime(CLOCK_MONOTONIC, ts);
	ts->tv_sec += ms / 1000;
	ts->tv_nsec += (ms % 1000) * 1000000;
	if (ts->tv_nsec >= 1000000000) {
		ts->tv_sec++;
		ts->tv_nsec -= 1000000000;
	}
}

long os_nr_cpus(void)
{
	long n = sysconf(_SC_NPROCESSORS_ONLN);
	return n > 0 ? n : 1;
}

/* Process-private futexes: the locks live in the process's own memory. */
void os_futex_wait(int *addr, int val)
{
	syscall(SYS_futex, addr, FUTEX_WAIT_PRIVATE, val, NULL, NULL, 0);
}

void os_futex_wake(int *addr, int n)
{
	syscall(SYS_futex, addr, FUTEX_WAKE_PRIVATE, n, NULL, NULL, 0);
}

/*
 * The process-private expedited barrier: registered once, it makes every
 * thread of the process that is running execute a full memory barrier
 * before it returns (an IPI to the CPUs they run on; a thread that is not
 * running passed one when it was switched out).
 */
bool os_membarrier_register(void)
{
	return syscall(SYS_membarrier, MEMBARRIER_CMD_REGISTER_PRIVATE_EXPEDITED, 0, 0) == 0;
}

void os_membarrier(void)
{
	if (syscall(SYS_membarrier, MEMBARRIER_CMD_PRIVATE_EXPEDITED, 0, 0) != 0)
		kmm_fatal("os_membarrier", "membarrier failed after it was registered: %s",
			  strerror(errno));
}

static inline void cpu_relax(void)
{
#if defined(__x86_64__) || defined(__i386__)
	__builtin_ia32_pause();
#elif defined(__aarch64__)
	__asm__ volatile("yield");
#endif
}

/* kmm_flock()'s slow path (internal.h): spin a little, then sleep in the kernel. */
void kmm_flock_slow(kmm_flock_t *l)
{
	for (int i = 0; i < 64; i++) {
		int free_state = 0;
		if (__atomic_load_n(&l->state, __ATOMIC_RELAXED) == 0 &&
		    __atomic_compare_exchange_n(&l->state, &free_state, 1, false, __ATOMIC_ACQUIRE,
						__ATOMIC_RELAXED))
			return;
		cpu_relax();
	}
	/* Mark it contended; whoever releases a 2 wakes a sleeper. */
	while (__atomic_exchange_n(&l->state, 2, __ATOMIC_ACQUIRE) != 0)
		os_futex_wait(&l->state, 2);
}

void kmm_funlock_wake(kmm_flock_t *l) { os_futex_wake(&l->state, 1); }

long os_peak_rss_kb(void)
{
	struct rusage ru;
	if (getrusage(RUSAGE_SELF, &ru) != 0)
		return -1;
	return ru.ru_maxrss;
}

/* ---- brk ----
 * brk_lock guards the brk state.  Lock order: taken inside a zone lock, never
 * the other way round.
 */
static kmm_lock_t brk_lock = KMM_LOCK_INIT;
static char *brk_top;      /* end of our brk heap; NULL until first use */
static bool brk_broken;    /* the break moved under us: use mmap only */
static char *brk_lo;       /* lowest address we obtained by brk */

static void *os_brk_section(size_t size)
{
	void *res = NULL;
	kmm_lock(&brk_lock);
	if (brk_broken)
		goto out;
	char *cur = sbrk(0);
	if (cur == (char *)-1 || (brk_top && cur != brk_top)) {
		brk_broken = brk_top != NULL; /* someone else moved it */
		if (cur == (char *)-1)
			brk_broken = true;
		if (brk_broken)
			goto out;
	}
	char *start = (char *)ALIGN_UP((uintptr_t)cur, size);
	size_t grow = (size_t)(start - cur) + size;
	if (sbrk((intptr_t)grow) != cur) {
		brk_broken = true; /* can't grow (or raced): stay on mmap from now on */
		goto out;
	}
	brk_top = start + size;
	if (!brk_lo)
		brk_lo = start;
	res = start;
out:
	kmm_unlock(&brk_lock);
	return res;
}

void *os_section_alloc(size_t size)
{
	if (kmm_tunable(KMM_TUNE_USE_BRK)) {
		if (os_may_fail())
			return NULL;
		void *p = os_brk_section(size);
		if (p)
			return p;
		/* Fall through to mmap, which makes its own fault check. */
	}
	return os_map_aligned(size, size);
}

bool os_section_free(void *addr, size_t size)
{
	char *p = addr;
	kmm_lock(&brk_lock);
	bool in_brk = brk_lo && p >= brk_lo && p < brk_top;
	if (in_brk) {
		bool released = false;
		if (p + size == brk_top && sbrk(0) == brk_top && sbrk(-(intptr_t)size) != (void *)-1) {
			brk_top = p;
			released = true;
		}
		kmm_unlock(&brk_lock);
		if (!released)
			os_decommit(addr, size);
		return released;
	}
	kmm_unlock(&brk_lock);
	os_unmap(addr, size);
	return true;
}

rare void os_fork_prepare(void) { kmm_lock(&brk_lock); }
rare void os_fork_parent(void) { kmm_unlock(&brk_lock); }
rare void os_fork_child(void) { kmm_lock_init(&brk_lock); }

/* ---- reporting, time ---- */

int os_dup_stderr(void) { return fcntl(STDERR_FILENO, F_DUPFD_CLOEXEC, 3); }

FILE *os_fdopen_write(int fd) { return fdopen(fd, "w"); }

void os_write_stderr(const char *buf, size_t len)
{
	while (len > 0) {
		ssize_t n = write(STDERR_FILENO, buf, len);
		if (n < 0 && errno == EINTR)
			continue;
		if (n <= 0)
			return;
		buf += n;
		len -= (size_t)n;
	}
}

void os_abort(void)
{
	abort();
}

static rare void kmm_vreport(const char *prefix, const char *fmt, va_list ap)
{
	char buf[512];
	int n = snprintf(buf, sizeof(buf), "%s", prefix);
	n += vsnprintf(buf + n, sizeof(buf) - (size_t)n - 1, fmt, ap);
	if (n > (int)sizeof(buf) - 2)
		n = (int)sizeof(buf) - 2;
	buf[n++] = '\n';
	os_write_stderr(buf, (size_t)n);
}

rare void kmm_fatal(const char *func, const char *fmt, ...)
{
	char prefix[96];
	snprintf(prefix, sizeof(prefix), "kmm: %s(): ", func);
	va_list ap;
	va_start(ap, fmt);
	kmm_vreport(prefix, fmt, ap);
	va_end(ap);
	os_abort();
}

rare void kmm_warn(const char *fmt, ...)
{
	va_list ap;
	va_start(ap, fmt);
	kmm_vreport("kmm: ", fmt, ap);
	va_end(ap);
}

uint64_t kmm_now_ms(void)
{
	struct timespec ts;
	clock_gettime(CLOCK_MONOTONIC_COARSE, &ts);
	return (uint64_t)ts.tv_sec * 1000u + (uint64_t)ts.tv_nsec / 1000000u;
}
