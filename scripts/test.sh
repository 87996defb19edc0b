#!/usr/bin/env bash
# test.sh - kmm's whole test suite (what .ci/run runs).
#
#   build/release  gcc, -Werror, benchmarks on: every test, the demo, a quick
#                  benchmark run, install + pkg-config and find_package consumers
#   build/clang    clang, -Werror: must build warning-free (tests not run)
#   build/asan     ASan+UBSan, KMM_DEBUG: tests labelled 'single', KMM_TEST_SCALE=1
#   build/tsan     clang TSan, KMM_DEBUG: tests labelled 'threaded', KMM_TEST_SCALE=2
#
# Each step is counted; a tree that fails to build fails the steps that need
# it.  The last line is "test.sh: N passed, M failed"; the exit status is 0
# only when nothing failed.
set -euo pipefail

root=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
cd "$root"
jobs=$(nproc)
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT

passed=0
failed=0
failures=()
declare -A broken=() # build trees that did not build

if ! bash scripts/setup.sh; then
	echo "test.sh: setup.sh failed"
	echo "test.sh: 0 passed, 1 failed"
	exit 1
fi

# step NAME TREE CMD [ARGS...]: run CMD and count it; TREE is the build tree
# the step needs ("-" for none).  Functions run as CMD do not get set -e, so
# they chain their commands with && or return on the first failure.
step()
{
	local name=$1 tree=$2
	shift 2
	echo
	echo "==> $name"
	if [ "$tree" != - ] && [ -n "${broken[$tree]:-}" ]; then
		echo "<== FAILED: $name (skipped: $tree did not build)"
		failed=$((failed + 1))
		failures+=("$name")
		return 0
	fi
	if "$@"; then
		echo "<== ok: $name"
		passed=$((passed + 1))
	else
		echo "<== FAILED: $name"
		failed=$((failed + 1))
		failures+=("$name")
	fi
}

# build TREE CC CXX [CMAKE ARGS...]: configure and build TREE; mark it broken on failure.
build()
{
	local tree=$1 cc=$2 cxx=$3
	shift 3
	if CC=$cc CXX=$cxx cmake -S . -B "$tree" "$@" && cmake --build "$tree" -j"$jobs"; then
		return 0
	fi
	broken[$tree]=1
	return 1
}

# A program that uses every layer a little, for the install checks.
write_consumer()
{
	cat >"$1/consumer.c" <<'EOF'
#include <stdio.h>
#include <string.h>
#include <kmm.h>

int main(void)
{
	struct kmm_cache *c = kmm_cache_create("consumer", 48, 0, 0, NULL);
	void *obj = c ? kmm_cache_alloc(c, KMM_GFP_KERNEL) : NULL;
	char *s = kmm_kmalloc(32, KMM_GFP_KERNEL);
	void *page = kmm_alloc_pages(KMM_GFP_KERNEL, 2);

	if (!obj || !s || !page) {
		fprintf(stderr, "consumer: allocation failed\n");
		return 1;
	}
	strcpy(s, KMM_VERSION_STRING);
	memset(page, 0, 4 * KMM_PAGE_SIZE);
	printf("consumer: kmm %s works\n", s);
	kmm_free_pages(page, 2);
	kmm_kfree(s);
	kmm_cache_free(c, obj);
	kmm_cache_destroy(c);
	return 0;
}
EOF
}

install_prefix=$tmp/prefix

check_install()
{
	rm -rf "$install_prefix"
	cmake --install build/release --prefix "$install_prefix" || return 1
	local f
	for f in include/kmm.h include/kmm/page.h; do
		[ -f "$install_prefix/$f" ] || { echo "missing $install_prefix/$f"; return 1; }
	done
}

# The installed kmm.pc names the prefix given at configure time, so the
# temporary prefix is passed to pkg-config with --define-variable.
check_pkg_config()
{
	local pc dir="$tmp/pc-consumer" flags
	pc=$(find "$install_prefix" -name kmm.pc -print -quit)
	[ -n "$pc" ] || { echo "no kmm.pc under $install_prefix"; return 1; }
	mkdir -p "$dir" && write_consumer "$dir" || return 1
	flags=$(PKG_CONFIG_PATH=$(dirname "$pc") \
		pkg-config --define-variable=prefix="$install_prefix" --cflags --libs kmm) || return 1
	echo "pkg-config --cflags --libs kmm: $flags"
	# shellcheck disable=SC2086 # flags are words
	cc "$dir/consumer.c" $flags -o "$dir/consumer" || return 1
	LD_LIBRARY_PATH=$(dirname "$(dirname "$pc")") "$dir/consumer"
}

check_find_package()
{
	local dir="$tmp/cmake-consumer" libdir
	mkdir -p "$dir" && write_consumer "$dir" || return 1
	cat >"$dir/CMakeLists.txt" <<'EOF'
cmake_minimum_required(VERSION 3.20)
project(kmm_consumer C)
find_package(kmm 0.1 REQUIRED)
add_executable(consumer consumer.c)
target_link_libraries(consumer PRIVATE kmm::kmm)
add_executable(consumer_static consumer.c)
target_link_libraries(consumer_static PRIVATE kmm::kmm_static)
EOF
	cmake -S "$dir" -B "$dir/build" -DCMAKE_PREFIX_PATH="$install_prefix" &&
		cmake --build "$dir/build" || return 1
	libdir=$(dirname "$(find "$install_prefix" -name 'libkmm.so*' -print -quit)")
	LD_LIBRARY_PATH=$libdir "$dir/build/consumer" && "$dir/build/consumer_static"
}

# ---- release (gcc): everything ----
step "build release (gcc -Werror)" - build build/release gcc g++ \
	-DCMAKE_BUILD_TYPE=RelWithDebInfo -DKMM_BUILD_BENCH=ON -DCMAKE_C_FLAGS=-Werror
step "ctest release (all tests)" build/release \
	ctest --test-dir build/release --output-on-failure -j2 --no-tests=error
step "kmm-demo" build/release build/release/kmm-demo
step "kmm-bench --quick" build/release build/release/bench/kmm-bench --quick
step "cmake --install" build/release check_install
step "consumer via pkg-config" build/release check_pkg_config
step "consumer via find_package(kmm)" build/release check_find_package

# ---- clang: warning-free ----
step "build clang (-Werror)" - build build/clang clang clang++ \
	-DCMAKE_BUILD_TYPE=RelWithDebInfo -DKMM_BUILD_BENCH=ON -DCMAKE_C_FLAGS=-Werror

# ---- ASan+UBSan: single-threaded tests ----
step "build asan" - build build/asan gcc g++ \
	-DKMM_SANITIZE=address -DKMM_DEBUG=ON -DKMM_BUILD_BENCH=OFF
step "ctest asan (-L single)" build/asan \
	env KMM_TEST_SCALE=1 ASAN_OPTIONS=detect_leaks=0 \
	UBSAN_OPTIONS=halt_on_error=1:print_stacktrace=1 \
	ctest --test-dir build/asan -L single --output-on-failure -j2 --no-tests=error

# ---- TSan (clang): threaded tests ----
step "build tsan (clang)" - build build/tsan clang clang++ \
	-DKMM_SANITIZE=thread -DKMM_DEBUG=ON -DKMM_BUILD_BENCH=OFF
step "ctest tsan (-L threaded)" build/tsan \
	env KMM_TEST_SCALE=2 TSAN_OPTIONS=halt_on_error=1 \
	ctest --test-dir build/tsan -L threaded --output-on-failure --no-tests=error

echo
if [ "$failed" -gt 0 ]; then
	echo "test.sh: failed steps:"
	printf '  %s\n' "${failures[@]}"
fi
echo "test.sh: $passed passed, $failed failed"
[ "$failed" -eq 0 ]
