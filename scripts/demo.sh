#!/usr/bin/env bash
# demo.sh - the main job: install what is needed, build kmm (release), then
#   1. run a real program (python3 building and serialising a large object
#      graph) under kmm with `kmm run --stats`, which prints its heap at exit:
#      buddyinfo and slabinfo in the kernel's formats, bytes in use, peak RSS,
#      allocations per size class;
#   2. run kmm-demo, which drives every layer's own API (pages, caches,
#      kmalloc, mempool) and prints the heap the same way.
set -euo pipefail

root=$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)
cd "$root"

bash scripts/setup.sh
cmake -S . -B build/release -DCMAKE_BUILD_TYPE=RelWithDebInfo -DKMM_BUILD_BENCH=ON
cmake --build build/release -j"$(nproc)" --target kmm kmm-cli kmm-demo

echo
echo "=== python3 under kmm: kmm run --stats -- python3 ... ==="
PYTHONMALLOC=malloc build/release/kmm run --stats -- /usr/bin/python3 -c '
import json, threading
data = {f"key{i}": {"id": i, "tags": [str(j) for j in range(i % 17)], "name": "x" * (i % 300)}
        for i in range(200000)}
text = json.dumps(data)
def work(n):
    return sum(len(json.loads(json.dumps(data[f"key{k}"]))) for k in range(n, 200000, 8))
threads = [threading.Thread(target=work, args=(n,)) for n in range(4)]
[t.start() for t in threads]; [t.join() for t in threads]
print(f"python3 under kmm: {len(data)} objects, {len(text) >> 20} MiB of JSON")
'
echo
echo "=== kmm-demo: every layer through kmm's own API ==="
exec build/release/kmm-demo
