#!/usr/bin/env python3
# SPDX-License-Identifier: MIT
"""py_alloc.py - an allocation-heavy Python program for the allocator suite.

Run with PYTHONMALLOC=malloc, so that every object Python creates goes through
malloc/free (not pymalloc's arenas) and the allocator chosen by LD_PRELOAD
serves all of it.  The work is fixed (SCALE times a set of passes) and the
last line printed is a checksum that depends only on SCALE:

    PYTHONMALLOC=malloc python3 py_alloc.py [SCALE]

The passes are the shapes a real Python program's heap goes through: records
(dicts) built and grouped, JSON round trips, strings split and joined, trees
of small objects built and dropped, and sorting.
"""
import json
import sys
import zlib


class Node:
    def __init__(self, left, right, value):
        self.left = left
        self.right = right
        self.value = value


class Point:
    __slots__ = ("x", "y", "label")

    def __init__(self, x, y, label):
        self.x = x
        self.y = y
        self.label = label


def make_tree(depth, value):
    if depth == 0:
        return Node(None, None, value)
    return Node(make_tree(depth - 1, 2 * value), make_tree(depth - 1, 2 * value + 1), value)


def check_tree(node):
    total = 0
    stack = [node]
    while stack:
        n = stack.pop()
        total += n.value & 0xFF
        if n.left is not None:
            stack.append(n.left)
            stack.append(n.right)
    return total


def records(n, seed):
    """n dicts, grouped and summarised; everything is dropped at the end."""
    rows = []
    x = seed
    for i in range(n):
        x = (x * 1103515245 + 12345) & 0x7FFFFFFF
        rows.append({
            "id": i,
            "name": "user%d" % (x % 100000),
            "city": ("Lyon", "Oslo", "Quito", "Pune", "Perth")[x % 5],
            "tags": ["t%d" % (x >> k & 31) for k in range(x % 6)],
            "score": (x % 10007) / 7.0,
        })
    groups = {}
    for r in rows:
        groups.setdefault(r["city"], []).append(r)
    total = 0
    for city, members in sorted(groups.items()):
        members.sort(key=lambda r: (r["score"], r["id"]))
        total += len(city) * len(members) + members[0]["id"] + members[-1]["id"]
        total += sum(len(r["tags"]) for r in members)
    return total


def json_round_trips(n, seed):
    total = 0
    for k in range(n):
        doc = {
            "k": k,
            "items": [{"i": i, "s": "x" * ((i * 7 + k + seed) % 40), "f": i / 3} for i in range(50)],
            "meta": {"a": list(range(k % 30)), "b": "text %d" % k},
        }
        text = json.dumps(doc, sort_keys=True)
        back = json.loads(text)
        total += len(text) + len(back["items"]) + len(back["meta"]["a"])
    return total


def strings(n):
    words = ["alpha", "beta", "gamma", "delta", "epsilon", "zeta", "eta", "theta"]
    total = 0
    for k in range(n):
        line = " ".join(words[(k + i) % len(words)] * (1 + (i + k) % 3) for i in range(40))
        parts = line.split(" ")
        joined = ",".join(p.upper() for p in parts if len(p) > 4)
        total += len(joined) + len(line.replace("a", "AA"))
        total += zlib.crc32(joined.encode()) & 0xFF
    return total


def trees(rounds, depth):
    total = 0
    keep = [make_tree(depth, 1)]  # a long-lived tree, as in binary-trees
    for r in range(rounds):
        t = make_tree(depth - (r % 4), r)
        total += check_tree(t)
        if r % 8 == 0:
            keep.append(t)
    total += sum(check_tree(t) for t in keep)
    return total


def points(n):
    pts = [Point(i % 1000, (i * 37) % 1009, "p%d" % (i % 777)) for i in range(n)]
    pts.sort(key=lambda p: (p.y, p.x, p.label))
    buckets = {}
    for p in pts:
        buckets.setdefault(p.label, []).append((p.x, p.y))
    total = 0
    for label in sorted(buckets):
        total += len(buckets[label]) * len(label) + buckets[label][0][0]
    s1 = {(p.x, p.y) for p in pts}
    s2 = {(p.y % 1000, p.x % 1009) for p in pts}
    return total + len(s1 & s2) + len(s1 | s2)


def main():
    scale = float(sys.argv[1]) if len(sys.argv) > 1 else 1.0
    checksum = 0
    checksum += records(int(40000 * scale), 1)
    checksum += json_round_trips(int(1500 * scale), 2)
    checksum += strings(int(6000 * scale))
    checksum += trees(max(1, int(16 * scale)), 14)
    checksum += points(int(50000 * scale))
    print("py_alloc scale=%g checksum=%d" % (scale, checksum))


if __name__ == "__main__":
    main()
