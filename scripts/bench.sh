#!/usr/bin/env bash
# bench.sh - kmm against glibc, jemalloc, tcmalloc and mimalloc: the one command.
#
# Installs what is missing (the peers from Debian packages, the real programs the suite runs,
# valgrind for bench/fastpath.sh), builds kmm's release tree with the workloads, and runs
# bench/run_suite.py with this script's arguments:
#
#   scripts/bench.sh            # the full suite (about 10 minutes on 2 cores)
#   scripts/bench.sh --quick    # 1-2 minutes
#   scripts/bench.sh --only larson,redis --reps 7 --allocators glibc,mimalloc,kmm
#
# Results: the tables on stdout, bench/results/{results.csv,summary.md,ratios.svg}.
# Runs apt-get as root, or through sudo when the caller is not root; a rerun on a ready machine
# installs nothing (and needs no network).
set -euo pipefail

root=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
cd "$root"

pkgs=(libjemalloc2 libtcmalloc-minimal4 libmimalloc2.0 redis-server redis-tools sqlite3 python3
	gcc time valgrind cmake make g++)
missing=()
for p in "${pkgs[@]}"; do
	dpkg-query -W -f '${Status}' "$p" 2>/dev/null | grep -q 'ok installed' || missing+=("$p")
done

if [ "${#missing[@]}" -gt 0 ]; then
	if [ "$(id -u)" -eq 0 ]; then
		sudo=()
	elif command -v sudo >/dev/null 2>&1; then
		sudo=(sudo)
	else
		echo "bench.sh: missing ${missing[*]}, and not root nor sudo available to install them" >&2
		exit 1
	fi
	echo "bench.sh: installing ${missing[*]}"
	${sudo[@]+"${sudo[@]}"} apt-get update
	# The redis-server package starts a system service where systemd runs; the suite starts its
	# own servers on free ports, so that one is not used.
	${sudo[@]+"${sudo[@]}"} env DEBIAN_FRONTEND=noninteractive apt-get install -y \
		--no-install-recommends "${missing[@]}"
fi

echo "bench.sh: building kmm (build/release)"
log=$(mktemp)
trap 'rm -f "$log"' EXIT
if ! { cmake -S . -B build/release && cmake --build build/release -j"$(nproc)"; } >"$log" 2>&1; then
	tail -40 "$log" >&2
	echo "bench.sh: the build failed" >&2
	exit 1
fi
rm -f "$log"

exec /usr/bin/python3 bench/run_suite.py "$@"
