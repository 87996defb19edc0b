#!/usr/bin/env bash
# demo.sh - install what is needed, build kmm (release) and run the demo, which
# drives every layer and prints the heap as /proc/buddyinfo and /proc/slabinfo.
set -euo pipefail

root=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
cd "$root"

bash scripts/setup.sh
cmake -S . -B build/release -DCMAKE_BUILD_TYPE=RelWithDebInfo -DKMM_BUILD_BENCH=ON
cmake --build build/release -j"$(nproc)"
echo
exec build/release/kmm-demo
