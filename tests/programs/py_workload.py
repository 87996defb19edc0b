#!/usr/bin/env python3
# SPDX-License-Identifier: MIT
"""py_workload.py - an allocation-heavy Python workload for run_programs.sh.

Run with PYTHONMALLOC=malloc so that every Python object is a malloc() call
(pymalloc off), once under glibc and once under LD_PRELOAD=libkmm.so.  The
output is deterministic - checksums of what each section built - so the two
runs must print the same lines.  Nothing here depends on str hashing order
(PYTHONHASHSEED): whatever is checksummed is sorted first.

Sections:
  dicts    large dicts with string and tuple keys: insert, update, delete, rebuild
  strings  join/split/replace/format, utf-8 encode/decode, growing str/bytearray
  json     dumps/loads round trips of a large nested structure
  churn    list and set churn: append/pop/insert, set add/discard and set algebra
  threads  worker threads in a ring: each builds objects and hands them to the
           next, which checks and frees them (objects freed by another thread)
  big      blocks beyond the small size classes: large lists, bytes, strings
"""
import hashlib
import json
import queue
import random
import sys
import threading
import zlib

SCALE = int(sys.argv[1]) if len(sys.argv) > 1 else 1


def digest(obj):
    """sha256 (first 16 hex digits) of a canonical JSON form of obj."""
    data = json.dumps(obj, sort_keys=True, separators=(",", ":")).encode()
    return hashlib.sha256(data).hexdigest()[:16]


def report(name, *values):
    print(name, *values, flush=True)


def section_dicts(rng):
    n = 200_000 // SCALE
    d = {}
    for i in range(n):
        d["key-%d-%x" % (i, rng.getrandbits(24))] = i * 7
    total = sum(d.values())
    # delete every third key, update the rest
    for i, k in enumerate(sorted(d)):
        if i % 3 == 0:
            del d[k]
        else:
            d[k] += 1
    # tuple keys and nested dicts
    t = {(i % 97, str(i)): {"v": i, "sq": i * i} for i in range(n // 2)}
    for k in list(t)[::5]:
        t.pop(k)
    merged = {**{k: v for k, v in d.items() if v % 2}, **{"t%d" % i: i for i in range(1000)}}
    crc = 0
    for k in sorted(d):
        crc = zlib.crc32(("%s=%d;" % (k, d[k])).encode(), crc)
    tsum = sum(v["sq"] for v in t.values()) % (1 << 61)
    report("dicts", len(d), total, crc, len(t), tsum, len(merged))


def section_strings(rng):
    words = ["".join(chr(rng.randrange(97, 123)) for _ in range(rng.randrange(1, 12)))
             for _ in range(50_000 // SCALE)]
    text = " ".join(words)
    parts = text.split(" ")
    assert parts == words
    up = text.upper().replace("A", "\u00e4").replace("E", "\u20ac").replace("O", "\U0001f600")
    enc = up.encode("utf-8")
    dec = enc.decode("utf-8")
    assert dec == up
    lines = ["{:>8}|{:<12}|{:08.3f}|{!r}".format(i, w, i / 7, w[::-1])
             for i, w in enumerate(words)]
    blob = "\n".join(lines)
    acc = ""
    ba = bytearray()
    for i in range(20_000 // SCALE):
        acc += words[i % len(words)]           # realloc-style growth
        ba += words[i % len(words)].encode()
        if len(acc) > 4096:
            acc = acc[len(acc) // 2:]
    report("strings", len(text), zlib.crc32(enc), len(blob), zlib.crc32(blob.encode()),
           len(acc), zlib.crc32(bytes(ba)))


def make_record(rng, i):
    return {
        "id": i,
        "name": "user-%06d" % i,
        "tags": ["t%d" % rng.randrange(50) for _ in range(rng.randrange(0, 8))],
        "score": round(rng.random() * 1000, 3),
        "active": rng.random() < 0.5,
        "nested": {"a": [rng.randrange(1000) for _ in range(5)],
                   "b": {"c": "x" * rng.randrange(0, 40), "d": None}},
    }


def section_json(rng):
    data = {"records": [make_record(rng, i) for i in range(15_000 // SCALE)],
            "meta": {"version": 3, "unicode": "caf\u00e9 \u4e2d\u6587 \U0001f680"}}
    sums = []
    for rnd in range(3):
        s = json.dumps(data, sort_keys=True)
        back = json.loads(s)
        assert back == data
        sums.append(hashlib.sha256(s.encode()).hexdigest()[:12])
        # mutate for the next round
        for r in back["records"][rnd::7]:
            r["tags"].append("round%d" % rnd)
        data = back
    # indent= takes the pure-Python encoder: once, on part of the data
    s2 = json.dumps(data["records"][:5000], indent=2, sort_keys=True, ensure_ascii=False)
    sums.append(hashlib.sha256(s2.encode()).hexdigest()[:12])
    report("json", len(data["records"]), *sums)


def section_churn(rng):
    lst = []
    s = set()
    ops = 250_000 // SCALE
    for i in range(ops):
        op = rng.randrange(10)
        if op < 4:
            lst.append(("item", i, str(i)))
        elif op < 6 and lst:
            lst.pop(rng.randrange(len(lst)) if rng.random() < 0.1 else -1)
        elif op < 7:
            lst.insert(rng.randrange(len(lst) + 1) if lst else 0, [i] * (i % 5))
        elif op < 9:
            s.add("s%d" % rng.randrange(ops // 4))
        else:
            s.discard("s%d" % rng.randrange(ops // 4))
    a = {x for x in s if x.endswith(("1", "3"))}
    b = {"s%d" % i for i in range(0, ops // 4, 3)}
    algebra = (len(a | b), len(a & b), len(a - b), len(a ^ b))
    report("churn", len(lst), digest([repr(x) for x in lst[:2000]]), len(s),
           digest(sorted(s)[:5000]), *algebra)


def worker(idx, nthreads, inbox, outbox, per_thread, results):
    """Build per_thread batches for the next worker; check the previous one's."""
    rng = random.Random(1000 + idx)
    received = 0
    crc = 0
    sent = 0
    while sent < per_thread or received < per_thread:
        if sent < per_thread:
            batch = {"from": idx, "seq": sent,
                     "items": [{"k": "w%d-%d-%d" % (idx, sent, j),
                                "v": [rng.randrange(1 << 20) for _ in range(rng.randrange(1, 16))],
                                "s": "z" * rng.randrange(0, 200)}
                               for j in range(rng.randrange(20, 60))]}
            outbox.put(batch)
            sent += 1
        try:
            got = inbox.get(timeout=0.001 if sent < per_thread else 30)
        except queue.Empty:
            continue
        assert got["from"] == (idx - 1) % nthreads and got["seq"] == received
        crc = zlib.crc32(json.dumps(got, sort_keys=True).encode(), crc)
        received += 1
        del got
    results[idx] = (received, crc)


def section_threads():
    nthreads = 6
    per_thread = 400 // SCALE
    # unbounded: a put never blocks, so the ring cannot deadlock
    queues = [queue.Queue() for _ in range(nthreads)]
    results = [None] * nthreads
    # worker i sends to queue (i+1), receives from queue i
    threads = [threading.Thread(target=worker,
                                args=(i, nthreads, queues[i], queues[(i + 1) % nthreads],
                                      per_thread, results))
               for i in range(nthreads)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert all(r is not None for r in results), results
    # a shared dict under a lock: per-thread counters, deterministic totals
    shared = {}
    lock = threading.Lock()

    def bump(idx):
        for i in range(20_000 // SCALE):
            key = "k%d" % (i % 101)
            with lock:
                shared[key] = shared.get(key, 0) + idx + 1

    ts = [threading.Thread(target=bump, args=(i,)) for i in range(4)]
    for t in ts:
        t.start()
    for t in ts:
        t.join()
    report("threads", *("%d:%08x" % r for r in results), sum(shared.values()), len(shared))


def section_big(rng):
    big_list = list(range(2_000_000 // SCALE))
    big_bytes = bytes(rng.getrandbits(8) for _ in range(200_000)) * (20 // SCALE or 1)
    big_str = "abcdefghij" * (1_000_000 // SCALE)
    chunks = [bytearray(rng.randrange(30_000, 300_000)) for _ in range(200 // SCALE)]
    for c in chunks:
        c[0] = 1
        c[-1] = 2
    total_chunks = sum(len(c) for c in chunks)
    grown = []
    for i in range(100 // SCALE):
        grown.append(b"x" * (i * 10_000))
    report("big", sum(big_list), zlib.crc32(big_bytes), len(big_str), big_str.count("j"),
           total_chunks, sum(len(g) for g in grown))


def main():
    rng = random.Random(42)
    section_dicts(rng)
    section_strings(rng)
    section_json(rng)
    section_churn(rng)
    section_threads()
    section_big(rng)
    report("done")


if __name__ == "__main__":
    main()
