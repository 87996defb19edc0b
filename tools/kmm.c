/* SPDX-License-Identifier: MIT */
/*
 * kmm - run a program under the kmm allocator.
 *
 *   kmm run [--stats] [--lib PATH] -- CMD [ARGS...]
 *
 * Runs CMD with LD_PRELOAD set to libkmm.so, so that every malloc, free and
 * operator new of the program goes to kmm.  --stats sets KMM_STATS=1: at
 * exit the program prints kmm's report (buddyinfo, slabinfo, bytes in use,
 * peak RSS, allocations per size class) to stderr.
 *
 * libkmm.so is looked for, in order: --lib PATH, $KMM_LIB, next to this
 * executable (build tree), ../lib/ and ../lib/<multiarch>/ relative to it
 * (installed tree).
 */
#define _GNU_SOURCE
#include <errno.h>
#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#ifndef KMM_LIB_NAME
#define KMM_LIB_NAME "libkmm.so"
#endif
#ifndef KMM_LIBDIR_REL
#define KMM_LIBDIR_REL "../lib"
#endif

static void usage(FILE *out)
{
	fprintf(out, "usage: kmm run [--stats] [--lib PATH] -- CMD [ARGS...]\n"
		     "Runs CMD with the kmm allocator (LD_PRELOAD=libkmm.so).\n"
		     "  --stats     print kmm's heap report to stderr when CMD exits (KMM_STATS=1)\n"
		     "  --lib PATH  use this libkmm.so\n");
}

static int readable(const char *p) { return access(p, R_OK) == 0; }

/* Find libkmm.so; returns a malloc'd absolute path or NULL. */
static char *find_lib(const char *explicit_path)
{
	char buf[PATH_MAX];
	if (explicit_path)
		return realpath(explicit_path, NULL);
	const char *env = getenv("KMM_LIB");
	if (env && readable(env))
		return realpath(env, NULL);
	ssize_t n = readlink("/proc/self/exe", buf, sizeof(buf) - 1);
	if (n <= 0)
		return NULL;
	buf[n] = '\0';
	char *slash = strrchr(buf, '/');
	if (!slash)
		return NULL;
	*slash = '\0';
	const char *candidates[] = {"/" KMM_LIB_NAME, "/" KMM_LIBDIR_REL "/" KMM_LIB_NAME,
				    "/../lib/" KMM_LIB_NAME, "/../lib/x86_64-linux-gnu/" KMM_LIB_NAME,
				    "/../lib64/" KMM_LIB_NAME};
	for (size_t i = 0; i < sizeof(candidates) / sizeof(candidates[0]); i++) {
		char path[PATH_MAX + 64];
		snprintf(path, sizeof(path), "%s%s", buf, candidates[i]);
		if (readable(path))
			return realpath(path, NULL);
	}
	return NULL;
}

int main(int argc, char **argv)
{
	if (argc < 2 || strcmp(argv[1], "-h") == 0 || strcmp(argv[1], "--help") == 0) {
		usage(argc < 2 ? stderr : stdout);
		return argc < 2 ? 2 : 0;
	}
	if (strcmp(argv[1], "run") != 0) {
		fprintf(stderr, "kmm: unknown command '%s'\n", argv[1]);
		usage(stderr);
		return 2;
	}
	int stats = 0, i = 2;
	const char *lib_arg = NULL;
	for (; i < argc; i++) {
		if (strcmp(argv[i], "--") == 0) {
			i++;
			break;
		} else if (strcmp(argv[i], "--stats") == 0) {
			stats = 1;
		} else if (strcmp(argv[i], "--lib") == 0 && i + 1 < argc) {
			lib_arg = argv[++i];
		} else if (argv[i][0] == '-') {
			fprintf(stderr, "kmm: unknown option '%s'\n", argv[i]);
			usage(stderr);
			return 2;
		} else {
			break; /* the command, without "--" */
		}
	}
	if (i >= argc) {
		fprintf(stderr, "kmm: no command to run\n");
		usage(stderr);
		return 2;
	}
	char *lib = find_lib(lib_arg);
	if (!lib) {
		fprintf(stderr, "kmm: cannot find %s (use --lib PATH or KMM_LIB)\n", KMM_LIB_NAME);
		return 127;
	}
	/* Keep whatever else was preloaded, after kmm. */
	const char *old = getenv("LD_PRELOAD");
	size_t len = strlen(lib) + (old ? strlen(old) + 1 : 0) + 1;
	char *preload = malloc(len);
	if (!preload)
		return 127;
	snprintf(preload, len, "%s%s%s", lib, old && *old ? ":" : "", old ? old : "");
	setenv("LD_PRELOAD", preload, 1);
	if (stats)
		setenv("KMM_STATS", "1", 1);
	execvp(argv[i], &argv[i]);
	fprintf(stderr, "kmm: cannot run %s: %s\n", argv[i], strerror(errno));
	return errno == ENOENT ? 127 : 126;
}
