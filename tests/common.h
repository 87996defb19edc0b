/* SPDX-License-Identifier: MIT */
/*
 * common.h - what every kmm test shares.
 *
 *   CHECK(cond, fmt, ...)   count a check; on failure print file:line, the
 *                           condition, the message and the seed, exit 1.
 *   struct rng              xorshift64*, seeded from KMM_TEST_SEED or the
 *                           test's default seed, so every run can be replayed.
 *   test_scale()            divisor from KMM_TEST_SCALE (default 1) that
 *                           sanitizer runs use to shrink iteration counts;
 *                           test_scaled(n, min) applies it with a floor.
 *   run_in_child()          fork, capture the child's stderr, report how it died.
 *   expect_abort()          assert that a function dies by SIGABRT and that
 *                           its report contains a given text (detector tests).
 *   stderr_capture_*()      capture this process's own stderr for a while.
 *   fill_pattern()/check_pattern()   per-allocation byte patterns.
 *   pages_in_use()          managed - free - pcp pages after kmm_drain_local().
 *
 * Tests use only <kmm.h>, libc and pthreads.  Everything here is static so
 * that each test is one translation unit of its own.  It compiles as C++
 * too (for malloc/test_cxx.cc), hence the casts from void *.
 */
#ifndef KMM_TESTS_COMMON_H
#define KMM_TESTS_COMMON_H

#include <errno.h>
#include <fcntl.h>
#include <inttypes.h>
#include <signal.h>
#include <stdarg.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <sys/types.h>
#include <sys/wait.h>
#include <unistd.h>

#include <kmm.h>

#define TEST_UNUSED __attribute__((unused))
#define ARRAY_SIZE(a) (sizeof(a) / sizeof((a)[0]))

/* ---- checks ---- */

static const char *test_name TEST_UNUSED = "test";
static uint64_t test_seed TEST_UNUSED;
/* Checks passed by this thread since its last test_thread_done(). */
static __thread unsigned long test_local_checks TEST_UNUSED;
/* Checks passed by threads that have called test_thread_done(). */
static unsigned long test_total_checks TEST_UNUSED;

__attribute__((noreturn, format(printf, 4, 5), cold)) static void
test_fail(const char *file, int line, const char *cond, const char *fmt, ...)
{
	va_list ap;

	fflush(stdout);
	fprintf(stderr, "%s:%d: CHECK(%s) failed: ", file, line, cond);
	va_start(ap, fmt);
	vfprintf(stderr, fmt, ap);
	va_end(ap);
	fprintf(stderr, "\n%s: FAILED (seed 0x%016" PRIx64 "; rerun with KMM_TEST_SEED=0x%016" PRIx64
	                ")\n",
	        test_name, test_seed, test_seed);
	fflush(NULL);
	/* _exit: other threads may still be inside kmm; run no exit handlers. */
	_exit(1);
}

#define CHECK(cond, ...)                                                                         \
	do {                                                                                     \
		if (__builtin_expect(!(cond), 0))                                                \
			test_fail(__FILE__, __LINE__, #cond, __VA_ARGS__);                       \
		test_local_checks++;                                                             \
	} while (0)

/* A worker thread calls this before it returns so its checks are counted. */
static inline void test_thread_done(void)
{
	__atomic_fetch_add(&test_total_checks, test_local_checks, __ATOMIC_RELAXED);
	test_local_checks = 0;
}

/* ---- reproducible randomness: xorshift64* ---- */

struct rng {
	uint64_t s; /* never 0 */
};

/* The splitmix64 finalizer: a bijection that scatters every input bit. */
static inline uint64_t mix64(uint64_t x)
{
	x += 0x9e3779b97f4a7c15ull;
	x = (x ^ (x >> 30)) * 0xbf58476d1ce4e5b9ull;
	x = (x ^ (x >> 27)) * 0x94d049bb133111ebull;
	return x ^ (x >> 31);
}

static inline void rng_seed(struct rng *r, uint64_t seed)
{
	r->s = mix64(seed);
	if (r->s == 0)
		r->s = 0x2545f4914f6cdd1dull;
}

static inline uint64_t rng_next(struct rng *r)
{
	uint64_t x = r->s;
	x ^= x >> 12;
	x ^= x << 25;
	x ^= x >> 27;
	r->s = x;
	return x * 0x2545f4914f6cdd1dull;
}

/* Uniform in [0, n); 0 when n is 0. */
static inline uint64_t rng_below(struct rng *r, uint64_t n)
{
	return n ? rng_next(r) % n : 0;
}

/* Uniform in [lo, hi]. */
static inline uint64_t rng_range(struct rng *r, uint64_t lo, uint64_t hi)
{
	return lo + rng_below(r, hi - lo + 1);
}

/* True with probability num/den. */
static inline int rng_chance(struct rng *r, uint64_t num, uint64_t den)
{
	return rng_below(r, den) < num;
}

/* Log-uniform in [lo, hi] (lo >= 1): small sizes as likely per octave as big ones. */
static inline size_t rng_log_size(struct rng *r, size_t lo, size_t hi)
{
	unsigned lo_bit = 63u - (unsigned)__builtin_clzll(lo);
	unsigned hi_bit = 63u - (unsigned)__builtin_clzll(hi);
	unsigned bit = (unsigned)rng_range(r, lo_bit, hi_bit);
	size_t base = (size_t)1 << bit;
	size_t v = base + (size_t)rng_below(r, base);
	if (v < lo)
		v = lo;
	if (v > hi)
		v = hi;
	return v;
}

/* ---- scale and seed ---- */

static inline unsigned long test_scale(void)
{
	static unsigned long scale;
	if (!scale) {
		const char *s = getenv("KMM_TEST_SCALE");
		unsigned long v = s ? strtoul(s, NULL, 0) : 1;
		scale = v ? v : 1;
	}
	return scale;
}

/* n divided by the scale, never below @min. */
static inline unsigned long test_scaled(unsigned long n, unsigned long min)
{
	unsigned long v = n / test_scale();
	return v < min ? min : v;
}

/*
 * Name the test, pick the seed (KMM_TEST_SEED overrides @default_seed) and
 * print both, so a failing run can be replayed.
 */
static inline uint64_t test_init(const char *name, uint64_t default_seed)
{
	const char *s = getenv("KMM_TEST_SEED");

	test_name = name;
	test_seed = s && *s ? strtoull(s, NULL, 0) : default_seed;
	/*
	 * No background decay thread: while it decommits a block, the block is
	 * neither free nor in use, and tests compare exact page counts.  The
	 * tests of the thread itself turn it back on.
	 */
	kmm_tune_set(KMM_TUNE_BACKGROUND, 0);
	setvbuf(stdout, NULL, _IOLBF, 0);
	printf("%s: seed 0x%016" PRIx64 " (KMM_TEST_SEED overrides), scale %lu (KMM_TEST_SCALE)\n",
	       name, test_seed, test_scale());
	return test_seed;
}

/* Print the summary line; main() returns its value. */
static inline int test_finish(void)
{
	unsigned long n = __atomic_load_n(&test_total_checks, __ATOMIC_RELAXED) + test_local_checks;
	printf("%s: %lu checks passed\n", test_name, n);
	fflush(stdout);
	return 0;
}

/* ---- byte patterns ---- */

/* Fill @n bytes at @p with a pattern that depends on @seed and the offset. */
static inline void fill_pattern(void *p, size_t n, uint64_t seed)
{
	unsigned char *b = (unsigned char *)p;
	size_t i = 0;
	for (; i + 8 <= n; i += 8) {
		uint64_t v = seed ^ ((i + 1) * 0x9e3779b97f4a7c15ull);
		memcpy(b + i, &v, 8);
	}
	if (i < n) {
		uint64_t v = seed ^ ((i + 1) * 0x9e3779b97f4a7c15ull);
		memcpy(b + i, &v, n - i);
	}
}

/* Offset of the first byte that does not match fill_pattern(), or -1. */
static inline long check_pattern(const void *p, size_t n, uint64_t seed)
{
	const unsigned char *b = (const unsigned char *)p;
	size_t i = 0;
	for (; i + 8 <= n; i += 8) {
		uint64_t v = seed ^ ((i + 1) * 0x9e3779b97f4a7c15ull), got;
		memcpy(&got, b + i, 8);
		if (got != v)
			return (long)i;
	}
	if (i < n) {
		uint64_t v = seed ^ ((i + 1) * 0x9e3779b97f4a7c15ull);
		if (memcmp(b + i, &v, n - i) != 0)
			return (long)i;
	}
	return -1;
}

/* True when @n bytes at @p are all zero. */
static inline int is_zero(const void *p, size_t n)
{
	const unsigned char *b = (const unsigned char *)p;
	for (size_t i = 0; i < n; i++)
		if (b[i])
			return 0;
	return 1;
}

/* ---- the process's figures ---- */

/* The process's resident set in bytes (/proc/self/statm, field 2). */
static inline unsigned long long rss_bytes(void)
{
	unsigned long size = 0, resident = 0;
	FILE *f = fopen("/proc/self/statm", "r");
	CHECK(f != NULL, "open /proc/self/statm: %s", strerror(errno));
	CHECK(fscanf(f, "%lu %lu", &size, &resident) == 2, "parse /proc/self/statm");
	fclose(f);
	return (unsigned long long)resident * (unsigned long long)sysconf(_SC_PAGESIZE);
}

/* ---- kmm figures ---- */

/* Pages the zone holds that are neither free nor on a pcp list. */
static inline unsigned long pages_in_use(void)
{
	struct kmm_zone_stats z;
	kmm_drain_local();
	kmm_zone_stats(&z);
	return z.managed_pages - z.free_pages - z.pcp_pages;
}

/* ---- text ---- */

static inline int isalnum_ascii(char c)
{
	return (c >= '0' && c <= '9') || (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z');
}

/*
 * True when @text holds @n as a whole decimal number: not part of a longer
 * number, a hex address or a word ("37" matches "has 37 objects", not
 * "0x7f37a0" or "137").
 */
static inline int contains_number(const char *text, unsigned long n)
{
	char num[32];
	size_t len = (size_t)snprintf(num, sizeof(num), "%lu", n);
	for (const char *s = strstr(text, num); s; s = strstr(s + 1, num)) {
		int before_ok = s == text || !(isalnum_ascii(s[-1]));
		int after_ok = !isalnum_ascii(s[len]);
		if (before_ok && after_ok)
			return 1;
	}
	return 0;
}

/* ---- child processes: the detectors abort, so they are run in a fork ---- */

/*
 * Run @fn(@arg) in a forked child whose stderr goes to a pipe.  Returns the
 * child's stderr (malloc'd, NUL-terminated) and stores its wait status in
 * *@wstatus.  The child exits 0 when @fn returns; it gets no core dump and
 * is killed by SIGALRM after 120 s so that a hang fails instead of blocking.
 */
static inline char *run_in_child(void (*fn)(void *), void *arg, int *wstatus)
{
	int fds[2];
	pid_t pid;
	char *buf;
	size_t len = 0, cap = 4096;

	fflush(NULL);
	CHECK(pipe(fds) == 0, "pipe: %s", strerror(errno));
	pid = fork();
	CHECK(pid >= 0, "fork: %s", strerror(errno));
	if (pid == 0) {
		struct rlimit no_core = {0, 0};
		close(fds[0]);
		if (dup2(fds[1], STDERR_FILENO) < 0)
			_exit(126);
		close(fds[1]);
		setrlimit(RLIMIT_CORE, &no_core);
		alarm(120);
		fn(arg);
		fflush(NULL);
		_exit(0);
	}
	close(fds[1]);
	buf = (char *)malloc(cap);
	CHECK(buf != NULL, "out of memory");
	for (;;) {
		ssize_t n;
		if (cap - len < 1024) {
			cap *= 2;
			buf = (char *)realloc(buf, cap);
			CHECK(buf != NULL, "out of memory");
		}
		n = read(fds[0], buf + len, cap - len - 1);
		if (n < 0 && errno == EINTR)
			continue;
		if (n <= 0)
			break;
		len += (size_t)n;
	}
	buf[len] = '\0';
	close(fds[0]);
	while (waitpid(pid, wstatus, 0) < 0)
		CHECK(errno == EINTR, "waitpid: %s", strerror(errno));
	return buf;
}

/* How a child ended, in words, for failure messages. */
static inline const char *describe_status(int st, char *buf, size_t n)
{
	if (WIFEXITED(st))
		snprintf(buf, n, "exited with status %d", WEXITSTATUS(st));
	else if (WIFSIGNALED(st))
		snprintf(buf, n, "killed by signal %d (%s)", WTERMSIG(st), strsignal(WTERMSIG(st)));
	else
		snprintf(buf, n, "ended with wait status 0x%x", st);
	return buf;
}

/*
 * Run @fn(@arg) in a child and assert that it dies by SIGABRT and that its
 * stderr contains @substring.  Returns the child's stderr (valid until the
 * next call) so that the caller can check more of it.
 */
static inline const char *expect_abort(void (*fn)(void *), void *arg, const char *substring)
{
	static char *last;
	char how[96];
	int st = 0;

	free(last);
	last = run_in_child(fn, arg, &st);
	CHECK(WIFSIGNALED(st) && WTERMSIG(st) == SIGABRT,
	      "expected the child to abort, but it %s; its stderr:\n%s",
	      describe_status(st, how, sizeof(how)), last);
	CHECK(strstr(last, substring) != NULL, "the child's report lacks \"%s\"; its stderr:\n%s",
	      substring, last);
	return last;
}

/* ---- this process's own stderr, captured into a temporary file ---- */

struct stderr_capture {
	int saved_fd;
	FILE *file;
};

static inline void stderr_capture_begin(struct stderr_capture *c)
{
	fflush(stderr);
	c->file = tmpfile();
	CHECK(c->file != NULL, "tmpfile: %s", strerror(errno));
	c->saved_fd = dup(STDERR_FILENO);
	CHECK(c->saved_fd >= 0, "dup: %s", strerror(errno));
	CHECK(dup2(fileno(c->file), STDERR_FILENO) >= 0, "dup2: %s", strerror(errno));
}

/* Restore stderr; returns what was written meanwhile (malloc'd, NUL-terminated). */
static inline char *stderr_capture_end(struct stderr_capture *c)
{
	long n;
	char *text;

	fflush(stderr);
	CHECK(dup2(c->saved_fd, STDERR_FILENO) >= 0, "dup2: %s", strerror(errno));
	close(c->saved_fd);
	fseek(c->file, 0, SEEK_END);
	n = ftell(c->file);
	CHECK(n >= 0, "ftell: %s", strerror(errno));
	rewind(c->file);
	text = (char *)malloc((size_t)n + 1);
	CHECK(text != NULL, "out of memory");
	text[fread(text, 1, (size_t)n, c->file)] = '\0';
	fclose(c->file);
	return text;
}

#endif /* KMM_TESTS_COMMON_H */
