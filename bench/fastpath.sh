#!/usr/bin/env bash
# fastpath.sh - the malloc/free fast path of kmm and its peers, in nanoseconds and instructions.
#
# Runs bench-pair (a loop of malloc(S); write one byte; free) under each allocator (LD_PRELOAD)
# for S = 16, 64, 256, 1024 and 8192 bytes, and prints two tables:
#   ns/pair      the loop's own wall time per pair (CLOCK_MONOTONIC around the loop), the median
#                of REPS runs of 10 million pairs, the allocators interleaved;
#   instr/pair   instructions per pair counted by valgrind --tool=callgrind: the difference
#                between a run of 200000 and one of 100000 pairs, divided by 100000, so that
#                start-up, the loader and the timing calls cancel out.
#
#   bench/fastpath.sh [--kmm PATH] [--bindir DIR] [--reps N] [--allocators a,b,...] [--no-callgrind]
#
# Needs the release build (cmake -S . -B build/release && cmake --build build/release -j), the
# peers (libjemalloc2 libtcmalloc-minimal4 libmimalloc2.0) and valgrind: scripts/bench.sh
# installs them.
set -euo pipefail

root=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
libdir=/usr/lib/x86_64-linux-gnu
kmm=$root/build/release/libkmm.so
bindir=$root/build/release/bench
reps=5
allocators=glibc,jemalloc,tcmalloc,mimalloc,kmm
callgrind=1
sizes=(16 64 256 1024 8192)
wall_iters=10000000
cg_small=100000
cg_large=200000

usage()
{
	sed -n '2,17p' "${BASH_SOURCE[0]}" | sed 's/^# \{0,1\}//'
	exit "${1:-0}"
}

while [ $# -gt 0 ]; do
	case $1 in
	--kmm) kmm=$2; shift 2 ;;
	--bindir) bindir=$2; shift 2 ;;
	--reps) reps=$2; shift 2 ;;
	--allocators) allocators=$2; shift 2 ;;
	--no-callgrind) callgrind=0; shift ;;
	-h | --help) usage 0 ;;
	*) echo "fastpath.sh: unknown argument $1" >&2; usage 2 >&2 ;;
	esac
done
[[ $reps =~ ^[1-9][0-9]*$ ]] || { echo "fastpath.sh: --reps wants a positive number" >&2; exit 2; }

pair=$bindir/bench-pair
[ -x "$pair" ] || { echo "fastpath.sh: $pair not built (cmake --build build/release -j)" >&2; exit 2; }

# allocator -> library to preload (glibc: its own libc, a no-op that keeps the runs alike)
declare -A lib=(
	[glibc]=$libdir/libc.so.6
	[jemalloc]=$libdir/libjemalloc.so.2
	[tcmalloc]=$libdir/libtcmalloc_minimal.so.4
	[mimalloc]=$libdir/libmimalloc.so.2
	[kmm]=$kmm
)
IFS=, read -r -a allocs <<<"$allocators"
for a in "${allocs[@]}"; do
	[ -n "${lib[$a]:-}" ] || { echo "fastpath.sh: unknown allocator $a" >&2; exit 2; }
	[ -e "${lib[$a]}" ] || { echo "fastpath.sh: $a: ${lib[$a]} not found (scripts/bench.sh installs the peers)" >&2; exit 2; }
done
if [ "$callgrind" = 1 ] && ! command -v valgrind >/dev/null; then
	echo "fastpath.sh: valgrind not found (apt-get install valgrind, or --no-callgrind)" >&2
	exit 2
fi

tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT

# ns/pair: REPS rounds, each running every allocator once per size.
declare -A ns=()
for ((r = 0; r < reps; r++)); do
	for s in "${sizes[@]}"; do
		for a in "${allocs[@]}"; do
			out=$(env LD_PRELOAD="${lib[$a]}" "$pair" -s "$s" -n "$wall_iters")
			v=$(sed -n 's/.*ns_per_pair=\([0-9.]*\).*/\1/p' <<<"$out")
			[ -n "$v" ] || { echo "fastpath.sh: $a size $s: bench-pair printed '$out'" >&2; exit 1; }
			ns[$a,$s]+="$v "
		done
	done
done

# Instructions counted by callgrind for N pairs ("Collected : N" on valgrind's stderr).
# LD_PRELOAD is set on valgrind itself, which passes it on to the program it runs.
count_ir()
{
	local a=$1 s=$2 n=$3 log=$tmp/cg.log
	LD_PRELOAD="${lib[$a]}" valgrind --tool=callgrind --callgrind-out-file="$tmp/cg.out" \
		"$pair" -s "$s" -n "$n" >/dev/null 2>"$log" || {
		echo "fastpath.sh: callgrind run failed ($a, size $s):" >&2
		tail -5 "$log" >&2
		return 1
	}
	sed -n 's/.*Collected : *\([0-9]*\).*/\1/p' "$log"
}

declare -A ir=()
if [ "$callgrind" = 1 ]; then
	for s in "${sizes[@]}"; do
		for a in "${allocs[@]}"; do
			small=$(count_ir "$a" "$s" "$cg_small") || { ir[$a,$s]=failed; continue; }
			large=$(count_ir "$a" "$s" "$cg_large") || { ir[$a,$s]=failed; continue; }
			ir[$a,$s]=$(awk -v l="$large" -v sm="$small" -v d=$((cg_large - cg_small)) \
				'BEGIN { printf "%.1f", (l - sm) / d }')
		done
	done
fi

median()
{
	tr ' ' '\n' | grep -v '^$' | sort -g | awk '{ v[NR] = $1 } END {
		if (NR % 2) printf "%.1f", v[(NR + 1) / 2]; else printf "%.1f", (v[NR / 2] + v[NR / 2 + 1]) / 2 }'
}

table()
{
	local title=$1 kind=$2 a s v
	echo "$title"
	printf '%-10s' "allocator"
	for s in "${sizes[@]}"; do printf '%10s' "$s B"; done
	echo
	for a in "${allocs[@]}"; do
		printf '%-10s' "$a"
		for s in "${sizes[@]}"; do
			if [ "$kind" = ns ]; then v=$(median <<<"${ns[$a,$s]}"); else v=${ir[$a,$s]}; fi
			printf '%10s' "$v"
		done
		echo
	done
	echo
}

echo "fast path: malloc(S) + write 1 byte + free, one thread"
echo "($(nproc) CPUs, $(sed -n 's/^model name[^:]*: //p' /proc/cpuinfo | head -1); kmm: $kmm)"
echo
table "ns per pair (median of $reps runs of $wall_iters pairs, wall clock)" ns
if [ "$callgrind" = 1 ]; then
	table "instructions per pair (callgrind: ($cg_large pairs - $cg_small pairs) / $((cg_large - cg_small)))" ir
fi
