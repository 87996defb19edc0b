#!/usr/bin/env bash
# SPDX-License-Identifier: MIT
#
# test_static.sh - kmm in fully static programs.
#
#   test_static.sh CC CXX LIBKMM_A INCLUDE_DIR SRC_DIR WORK_DIR
#
# Builds static_prog.c with CC and static_prog.cc with CXX, both -static
# and linked with LIBKMM_A (libkmm.a) and -lpthread, checks that they are
# static executables, and runs them with KMM_STATS=1: each must print its
# "ok" line and exit 0, and its stderr must hold kmm's report ("kmm ...
# statistics" and "slabinfo - version: 2.1"), which only kmm's malloc
# prints.  Nothing is skipped: without the C library's static archive
# (libc.a, from libc6-dev) or libstdc++.a the test fails and says so.
set -u

if [ $# -ne 6 ]; then
	echo "usage: $0 CC CXX LIBKMM_A INCLUDE_DIR SRC_DIR WORK_DIR" >&2
	exit 2
fi
cc=$1 cxx=$2 libkmm=$3 inc=$4 src=$5 work=$6
checks=0
fail()
{
	echo "test_static: FAILED: $*"
	exit 1
}
pass() { checks=$((checks + 1)); }

mkdir -p "$work" || fail "cannot create $work"
[ -f "$libkmm" ] || fail "no static library at $libkmm (build the kmm_static target)"
pass

# The static archives a -static link needs.
for tool in "$cc:libc.a:libc6-dev" "$cxx:libstdc++.a:libstdc++-<version>-dev (g++)"; do
	IFS=: read -r compiler archive pkg <<<"$tool"
	found=$("$compiler" -print-file-name="$archive")
	if [ "$found" = "$archive" ] || [ ! -f "$found" ]; then
		fail "$compiler cannot find $archive: static linking is impossible; install $pkg"
	fi
	echo "test_static: $compiler uses $found"
	pass
done

# build LANG COMPILER SOURCE OUTPUT
build()
{
	local compiler=$2 source=$3 out=$4 log="$work/$(basename "$4").build.log"
	if ! "$compiler" -static -O2 -g -Wall -Wextra -I"$inc" "$source" "$libkmm" -lpthread \
		-o "$out" >"$log" 2>&1; then
		cat "$log"
		fail "$1: cannot link $source statically with $libkmm"
	fi
	if grep -q . "$log"; then
		cat "$log"
		fail "$1: the static build of $source printed warnings"
	fi
	pass
	# A static executable has no program interpreter and no dynamic section.
	if ! command -v readelf >/dev/null 2>&1; then
		fail "readelf (binutils) is needed to check that $out is static"
	fi
	if readelf -l "$out" | grep -q 'INTERP\|DYNAMIC'; then
		readelf -l "$out" | grep 'INTERP\|DYNAMIC'
		fail "$1: $out is not a static executable"
	fi
	pass
	# kmm's malloc, not the C library's, is the one linked in.
	if ! nm "$out" | grep -q ' T kmm_heap_stats$'; then
		fail "$1: $out does not contain kmm"
	fi
	pass
}

# run LANG PROGRAM OKLINE
run()
{
	local name=$1 prog=$2 okline=$3 rc
	KMM_STATS=1 "$prog" >"$work/$name.out" 2>"$work/$name.err"
	rc=$?
	if [ "$rc" -ne 0 ]; then
		echo "--- stdout:"; cat "$work/$name.out"
		echo "--- stderr:"; cat "$work/$name.err"
		fail "$name: $prog exited with status $rc"
	fi
	pass
	grep -qx "$okline" "$work/$name.out" || { cat "$work/$name.out"; fail "$name: no \"$okline\""; }
	pass
	for want in "kmm" "slabinfo - version: 2.1" "-- /proc/buddyinfo --" "bytes in use"; do
		if ! grep -qF -- "$want" "$work/$name.err"; then
			echo "--- stderr:"; cat "$work/$name.err"
			fail "$name: with KMM_STATS=1 its stderr lacks \"$want\" (is kmm its malloc?)"
		fi
		pass
	done
	# Without KMM_STATS the report stays off.
	"$prog" >/dev/null 2>"$work/$name.quiet" || fail "$name: failed without KMM_STATS"
	if grep -qF "slabinfo" "$work/$name.quiet"; then
		fail "$name: the report was printed without KMM_STATS=1"
	fi
	pass
}

build C "$cc" "$src/static_prog.c" "$work/static_prog"
run static_prog "$work/static_prog" "static_prog: ok"
build C++ "$cxx" "$src/static_prog.cc" "$work/static_prog_cxx"
run static_prog_cxx "$work/static_prog_cxx" "static_prog_cxx: ok"

echo "test_static: $checks checks passed"
exit 0
