#!/usr/bin/env python3
# SPDX-License-Identifier: MIT
"""run_suite.py - kmm against glibc, jemalloc, tcmalloc and mimalloc.

Every workload runs under every allocator, chosen with LD_PRELOAD, in turn
(A B C D E, A B C D E, ...) for several repetitions, so that a drift of the
machine's speed touches all allocators alike.  Each run's wall time and peak
RSS (ru_maxrss from wait4) are recorded; the table gives medians and each
allocator's ratio to the best peer (the best of glibc, jemalloc, tcmalloc and
mimalloc for that workload), and the geometric means of those ratios.

Workloads (bench/workloads/*.c, built as build/release/bench/bench-*):
  larson, xmalloc, cache-scratch, cache-thrash, alloc-test, mstress,
  sh6bench, large                 at 1, 2, 4 and 8 threads
and real programs, single runs of a fixed job:
  python   /usr/bin/python3 (PYTHONMALLOC=malloc) on bench/programs/py_alloc.py
  sqlite   sqlite3 :memory: on a generated SQL script
  redis    redis-server on 127.0.0.1 (a free port) under the allocator,
           driven by redis-benchmark (not preloaded); time is the client's,
           RSS the server's
  gcc      gcc -O2 -c on a generated C file (cc1 inherits LD_PRELOAD)

Outputs: the tables on stdout, bench/results/results.csv (one row per run),
bench/results/summary.md (the tables, machine and versions),
bench/results/ratios.svg (kmm's ratios to the best peer, per workload).
Standard library only; installs nothing (scripts/bench.sh does that).
"""
import argparse
import csv
import datetime
import hashlib
import math
import os
import random
import shutil
import signal
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time

ROOT = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))
LIBDIR = "/usr/lib/x86_64-linux-gnu"
TIME = "/usr/bin/time"
PEERS = ["glibc", "jemalloc", "tcmalloc", "mimalloc"]
ALLOCATORS = PEERS + ["kmm"]
# The library LD_PRELOAD names for each peer, and the Debian package that has it.
# glibc's own libc.so.6 is preloaded too: a no-op for most programs, but
# redis-server links libjemalloc.so.2, and only a preloaded libc makes it use
# glibc's malloc (the preload comes before the program's own libraries).
PEER_LIBS = {
    "glibc": (LIBDIR + "/libc.so.6", "libc6"),
    "jemalloc": (LIBDIR + "/libjemalloc.so.2", "libjemalloc2"),
    "tcmalloc": (LIBDIR + "/libtcmalloc_minimal.so.4", "libtcmalloc-minimal4"),
    "mimalloc": (LIBDIR + "/libmimalloc.so.2", "libmimalloc2.0"),
}

# name, binary, arguments for the full run, arguments for --quick
SYNTHETIC = [
    ("larson", "bench-larson", ["-n", "10000000"], ["-n", "2000000"]),
    ("xmalloc", "bench-xmalloc", ["-n", "10000000"], ["-n", "2000000"]),
    ("cache-scratch", "bench-cache", ["-m", "scratch", "-n", "200000"],
     ["-m", "scratch", "-n", "40000"]),
    ("cache-thrash", "bench-cache", ["-m", "thrash", "-n", "200000"],
     ["-m", "thrash", "-n", "40000"]),
    ("alloc-test", "bench-alloc-test", ["-n", "1500000"], ["-n", "300000"]),
    ("mstress", "bench-mstress", ["-c", "40"], ["-c", "8"]),
    ("sh6bench", "bench-sh6bench", ["-n", "20000000"], ["-n", "4000000"]),
    ("large", "bench-large", ["-n", "250"], ["-n", "50"]),
]
# name, {full, quick} job size
PROGRAMS = [
    ("python", {"full": 1.0, "quick": 0.25}),
    ("sqlite", {"full": 1.0, "quick": 0.25}),
    ("redis", {"full": 100000, "quick": 20000}),
    ("gcc", {"full": 1.0, "quick": 0.25}),
]
PROGRAM_TOOLS = {
    "python": ["/usr/bin/python3"],
    "sqlite": ["sqlite3"],
    "redis": ["redis-server", "redis-benchmark"],
    "gcc": ["gcc"],
}


def log(msg):
    print(msg, file=sys.stderr, flush=True)


# ---------------------------------------------------------------- running


class Run:
    """One measured run: ok, wall seconds, peak RSS in KiB, output digest, status."""

    def __init__(self, ok, wall, rss, digest, status, detail=""):
        self.ok, self.wall, self.rss = ok, wall, rss
        self.digest, self.status, self.detail = digest, status, detail


def describe_status(status):
    if os.WIFSIGNALED(status):
        sig = os.WTERMSIG(status)
        try:
            name = signal.Signals(sig).name
        except ValueError:
            name = str(sig)
        return "killed by " + name
    return "exit %d" % os.WEXITSTATUS(status)


def kill_group(pid):
    try:
        os.killpg(pid, signal.SIGKILL)
    except ProcessLookupError:
        pass


def tail(data, lines=8):
    text = data.decode("utf-8", "replace").rstrip().splitlines()
    return "\n".join(text[-lines:])


def measured(argv, child_env, base_env, timeout, stdin_path=None, cwd=None):
    """Run argv to completion: wall time from start to reap, peak RSS of the program.

    The peak RSS comes from /usr/bin/time (wait4 in a small process): a child
    that Python forks (or vforks) itself is charged, at exec, the high-water
    mark of the Python process it was forked from, so its ru_maxrss would
    never be below Python's own.  The variables of @child_env (LD_PRELOAD, ...)
    are given to the program through env(1), not to time.
    """
    fd, rss_path = tempfile.mkstemp(prefix="rss-", dir=cwd)
    os.close(fd)
    wrapped = ([TIME, "-f", "%M", "-o", rss_path, "env"]
               + ["%s=%s" % kv for kv in sorted(child_env.items())] + list(argv))
    with tempfile.TemporaryFile() as out, tempfile.TemporaryFile() as err:
        stdin = open(stdin_path, "rb") if stdin_path else subprocess.DEVNULL
        timed_out = []
        try:
            t0 = time.perf_counter()
            proc = subprocess.Popen(wrapped, env=base_env, stdin=stdin, stdout=out, stderr=err,
                                    cwd=cwd, start_new_session=True)
            timer = threading.Timer(timeout, lambda: (timed_out.append(1), kill_group(proc.pid)))
            timer.start()
            _, status, _ = os.wait4(proc.pid, 0)
            wall = time.perf_counter() - t0
            timer.cancel()
            proc.returncode = os.waitstatus_to_exitcode(status)
        finally:
            if stdin_path:
                stdin.close()
        out.seek(0)
        err.seek(0)
        stdout, stderr = out.read(), err.read()
    try:
        with open(rss_path) as f:
            report = f.read().strip().splitlines()
    finally:
        os.unlink(rss_path)
    rss = int(report[-1]) if report and report[-1].strip().isdigit() else 0
    if timed_out:
        return Run(False, wall, rss, None, "timeout after %ds" % timeout, tail(stderr))
    if status != 0:
        # time(1) writes "Command terminated by signal N" or "... non-zero status N".
        why = next((l.strip() for l in report if l.startswith("Command ")), describe_status(status))
        return Run(False, wall, rss, None, why, tail(stderr))
    return Run(True, wall, rss, hashlib.sha1(stdout).hexdigest()[:12], "ok", tail(stdout, 1))


def vm_hwm_kb(pid):
    """The peak RSS so far of a running process (VmHWM), in KiB."""
    try:
        with open("/proc/%d/status" % pid) as f:
            for line in f:
                if line.startswith("VmHWM:"):
                    return int(line.split()[1])
    except OSError:
        pass
    return 0


def free_port():
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def redis_ready(port, deadline):
    while time.monotonic() < deadline:
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=0.5) as s:
                s.sendall(b"PING\r\n")
                if s.recv(64).startswith(b"+PONG"):
                    return True
        except OSError:
            pass
        time.sleep(0.02)
    return False


def run_redis(env, plain_env, requests, timeout, workdir):
    """Start redis-server under the allocator, run redis-benchmark against it, stop it."""
    port = free_port()
    errpath = os.path.join(workdir, "redis.log")
    with open(errpath, "wb") as errf:
        server = subprocess.Popen(
            ["redis-server", "--port", str(port), "--bind", "127.0.0.1", "--save", "",
             "--appendonly", "no", "--daemonize", "no", "--dir", workdir,
             "--loglevel", "warning"],
            env=env, stdin=subprocess.DEVNULL, stdout=errf, stderr=errf, start_new_session=True)
    killer = threading.Timer(timeout + 15, kill_group, [server.pid])
    killer.start()
    try:
        if not redis_ready(port, time.monotonic() + 10):
            kill_group(server.pid)
            _, status, _ = os.wait4(server.pid, 0)
            server.returncode = os.waitstatus_to_exitcode(status)
            with open(errpath, "rb") as f:
                return Run(False, 0.0, 0, None,
                           "server did not start (%s)" % describe_status(status), tail(f.read()))
        t0 = time.perf_counter()
        try:
            bench = subprocess.run(
                ["redis-benchmark", "-h", "127.0.0.1", "-p", str(port), "-q", "-n", str(requests),
                 "-r", "100000", "-P", "16", "-t", "set,get,lpush,lpop"],
                env=plain_env, stdin=subprocess.DEVNULL, capture_output=True, timeout=timeout)
            wall = time.perf_counter() - t0
            bench_ok = bench.returncode == 0
            bench_out = bench.stdout + bench.stderr
        except subprocess.TimeoutExpired:
            wall, bench_ok, bench_out = time.perf_counter() - t0, False, b"redis-benchmark timed out"
        # The server's own high-water mark (ru_maxrss would include the
        # Python process it was forked from: see measured()).
        rss = vm_hwm_kb(server.pid)
        if not bench_ok:  # give a crashing server time to finish its crash report
            try:
                server.wait(timeout=5)
            except subprocess.TimeoutExpired:
                pass
        alive = server.poll() is None
        if alive:
            os.kill(server.pid, signal.SIGTERM)
            try:
                server.wait(timeout=15)
            except subprocess.TimeoutExpired:
                kill_group(server.pid)
                server.wait()
        status = server.returncode  # negative: killed by that signal
    finally:
        killer.cancel()
    with open(errpath, "rb") as f:
        server_log = tail(f.read())
    if not alive:
        how = "killed by %s" % signal.Signals(-status).name if status < 0 else "exit %d" % status
        return Run(False, wall, rss, None, "server died during the benchmark (%s)" % how,
                   server_log + "\n" + tail(bench_out, 4))
    if not bench_ok:
        return Run(False, wall, rss, None, "redis-benchmark failed",
                   tail(bench_out) + "\n" + server_log)
    if status != 0:
        return Run(False, wall, rss, None, "server shutdown: exit code %d" % status, server_log)
    # The request rates vary run to run: no output digest for redis.
    return Run(True, wall, rss, None, "ok", tail(bench_out, 4))


# ---------------------------------------------------------------- generated inputs


def write_sql(path, scale):
    """A SQL script: two tables filled with multi-row INSERTs, indexes, joins,
    grouping, sorting, updates, deletes, a recursive CTE, string aggregation."""
    rnd = random.Random(12345)
    users = int(25000 * scale)
    orders = int(100000 * scale)
    cities = ["Lyon", "Oslo", "Quito", "Pune", "Perth", "Cork", "Lima", "Kobe", "Graz", "Tartu"]
    items = ["item%03d" % i for i in range(300)]
    syll = ["ka", "lo", "mi", "nu", "pe", "ra", "so", "ti", "vu", "ze"]
    with open(path, "w") as f:
        f.write("PRAGMA cache_size=-65536;\n")
        f.write("CREATE TABLE users(id INTEGER PRIMARY KEY, name TEXT, email TEXT, city TEXT,"
                " score REAL, bio TEXT);\n")
        f.write("CREATE TABLE orders(id INTEGER PRIMARY KEY, user_id INTEGER, item TEXT,"
                " qty INTEGER, price REAL, note TEXT);\n")
        f.write("BEGIN;\n")
        for start in range(0, users, 200):
            rows = []
            for i in range(start, min(users, start + 200)):
                name = "".join(rnd.choice(syll) for _ in range(rnd.randint(2, 5)))
                bio = " ".join(rnd.choice(syll) * rnd.randint(1, 4) for _ in range(rnd.randint(3, 20)))
                rows.append("(%d,'%s','%s%d@example.org','%s',%.3f,'%s')" % (
                    i + 1, name, name, i, rnd.choice(cities), rnd.random() * 1000, bio))
            f.write("INSERT INTO users VALUES %s;\n" % ",".join(rows))
        for start in range(0, orders, 200):
            rows = []
            for i in range(start, min(orders, start + 200)):
                rows.append("(%d,%d,'%s',%d,%.2f,'%s')" % (
                    i + 1, rnd.randint(1, users), rnd.choice(items), rnd.randint(1, 12),
                    rnd.random() * 200, "n" * rnd.randint(0, 60)))
            f.write("INSERT INTO orders VALUES %s;\n" % ",".join(rows))
        f.write("COMMIT;\n")
        f.write("""CREATE INDEX orders_user ON orders(user_id);
CREATE INDEX users_city ON users(city, score);
CREATE INDEX orders_item ON orders(item, qty);
SELECT city, count(*), round(avg(score), 3) FROM users GROUP BY city ORDER BY city;
SELECT u.city, count(*), round(sum(o.qty * o.price), 2)
  FROM users u JOIN orders o ON o.user_id = u.id GROUP BY u.city ORDER BY 1;
SELECT item, count(*) AS c, sum(qty) FROM orders GROUP BY item ORDER BY c DESC, item LIMIT 10;
SELECT name, email FROM users ORDER BY bio, name LIMIT 5;
SELECT count(DISTINCT name), max(length(bio)) FROM users;
SELECT user_id, count(*) AS n FROM orders GROUP BY user_id ORDER BY n DESC, user_id LIMIT 5;
UPDATE orders SET price = price * 1.1, note = note || 'u' WHERE qty > 6;
UPDATE users SET bio = upper(bio) WHERE score < 300;
DELETE FROM orders WHERE id %% 3 = 0;
SELECT count(*), round(sum(price), 2) FROM orders;
CREATE TABLE baskets AS SELECT user_id, group_concat(item, ' ') AS items, count(*) AS n
  FROM orders GROUP BY user_id;
SELECT count(*), sum(length(items)), max(n) FROM baskets;
WITH RECURSIVE cnt(x) AS (SELECT 1 UNION ALL SELECT x + 1 FROM cnt WHERE x < %d)
  SELECT count(*), sum(length(printf('%%08d-%%s', x, hex(x * x)))) FROM cnt;
SELECT city, group_concat(name, ',') IS NOT NULL, count(*) FROM
  (SELECT city, name FROM users ORDER BY name) GROUP BY city ORDER BY city;
DROP TABLE baskets;
DELETE FROM users WHERE id %% 2 = 0;
SELECT count(*) FROM users;
""" % int(100000 * scale))


def write_c(path, scale):
    """A large C file: a big initialised table (work for the front end) and many
    functions with loops, switches, structs and an inline helper (the optimiser)."""
    nfunc = max(10, int(120 * scale))
    ntab = max(1000, int(40000 * scale))
    out = ["/* generated by bench/run_suite.py for the gcc workload */",
           "#include <string.h>",
           "struct rec { int a, b; double c; char name[16]; struct rec *next; };",
           "static inline int mix(int x, int y) { return (x * 31) ^ (y >> 3); }",
           "const struct { int id; const char *name; double w; } table[] = {",
           ",\n".join('\t{ %d, "entry%d", %d.25 }' % (i, i * 7919 % 100003, i % 97)
                      for i in range(ntab)),
           "};"]
    for k in range(nfunc):
        cases = "\n".join(
            "\t\tcase %d: acc += r->b * %d + mix(acc, %d); break;" % (c, c + k % 7 + 1, c * k)
            for c in range(4))
        out.append("""
int func%(k)d(struct rec *r, int n, char *buf)
{
	int acc = %(k)d;
	while (r && n-- > 0) {
		switch ((r->a + n) %% 5) {
%(cases)s
		default: acc -= n;
		}
		if (r->c > %(k)d.5)
			acc ^= mix(r->a, %(k)d);
		if (r->next && r->next->a == acc)
			memcpy(buf, r->name, sizeof(r->name));
		r = r->next;
	}
	return acc;
}""" % {"k": k, "cases": cases})
    out.append("")
    with open(path, "w") as f:
        f.write("\n".join(out))


# ---------------------------------------------------------------- the suite


class Job:
    """What to run for one workload at one thread count."""

    def __init__(self, workload, threads, kind, argv=None, stdin=None, extra_env=None,
                 size=None, digest_file=None, repro=None):
        self.workload, self.threads, self.kind = workload, threads, kind
        self.repro = repro
        self.argv, self.stdin, self.extra_env = argv, stdin, extra_env or {}
        self.size, self.digest_file = size, digest_file


def alloc_env(base, lib):
    env = dict(base)
    env.pop("LD_PRELOAD", None)
    if lib:
        env["LD_PRELOAD"] = lib
    return env


def run_job(job, lib, base_env, timeout, workdir):
    child_env = dict(job.extra_env)
    if lib:
        child_env["LD_PRELOAD"] = lib
    if job.kind == "redis":
        env = dict(base_env)
        env.update(child_env)
        return run_redis(env, base_env, job.size, timeout, workdir)
    r = measured(job.argv, child_env, base_env, timeout, stdin_path=job.stdin, cwd=workdir)
    if r.ok and job.digest_file:
        with open(job.digest_file, "rb") as f:
            r.digest = hashlib.sha1(f.read()).hexdigest()[:12]
    return r


def build_jobs(args, bindir, workdir, mode):
    jobs = []
    for name, binary, full, quick in SYNTHETIC:
        if args.only and name not in args.only:
            continue
        for t in args.threads:
            argv = [os.path.join(bindir, binary), "-t", str(t)] + (quick if mode == "quick" else full)
            jobs.append(Job(name, t, "synthetic", argv))
    for name, sizes in PROGRAMS:
        if args.only and name not in args.only:
            continue
        missing = [t for t in PROGRAM_TOOLS[name] if not shutil.which(t)]
        if missing:
            log("run_suite: skipping %s: %s not found (scripts/bench.sh installs it)"
                % (name, ", ".join(missing)))
            continue
        size = sizes[mode]
        if name == "python":
            argv = ["/usr/bin/python3", os.path.join(ROOT, "bench", "programs", "py_alloc.py"),
                    str(size)]
            jobs.append(Job(name, 1, "program", argv,
                            extra_env={"PYTHONMALLOC": "malloc", "PYTHONHASHSEED": "0",
                                       "PYTHONDONTWRITEBYTECODE": "1"}))
        elif name == "sqlite":
            sql = os.path.join(workdir, "workload.sql")
            write_sql(sql, size)
            jobs.append(Job(name, 1, "program", ["sqlite3", ":memory:"], stdin=sql))
        elif name == "redis":
            jobs.append(Job(name, 1, "redis", size=size,
                            repro="redis-server --port 6399 --save '' --appendonly no & sleep 1; "
                                  "redis-benchmark -p 6399 -q -n %d -r 100000 -P 16 "
                                  "-t set,get,lpush,lpop" % size))
        elif name == "gcc":
            src = os.path.join(workdir, "big.c")
            obj = os.path.join(workdir, "big.o")
            write_c(src, size)
            jobs.append(Job(name, 1, "program", ["gcc", "-O2", "-c", src, "-o", obj],
                            digest_file=obj))
    return jobs


def median(xs):
    return statistics.median(xs) if xs else None


def geomean(xs):
    xs = [x for x in xs if x and x > 0]
    return math.exp(sum(math.log(x) for x in xs) / len(xs)) if xs else None


def spread(xs):
    """(max - min) / median: how far one allocator's runs of a row lie apart."""
    m = median(xs)
    return (max(xs) - min(xs)) / m if m else 0.0


def summarize(jobs, allocs, results):
    """rows: (workload, threads, {alloc: (median wall, median rss, wall spread, rss spread)}),
    plus the best peers."""
    rows = []
    for job in jobs:
        med = {}
        for a in allocs:
            runs = [r for r in results.get((job.workload, job.threads, a), []) if r.ok]
            if runs:
                walls, rsss = [r.wall for r in runs], [r.rss for r in runs]
                med[a] = (median(walls), median(rsss), spread(walls), spread(rsss))
        peers = [a for a in PEERS if a in med]
        best_t = min((med[a][0], a) for a in peers) if peers else None
        best_r = min((med[a][1], a) for a in peers) if peers else None
        rows.append((job.workload, job.threads, med, best_t, best_r))
    return rows


def fmt_ratio(x):
    return "%.2f" % x if x is not None else "-"


def tables(rows, allocs):
    """The tables as lists of cells: time, RSS, and kmm against the best peer."""
    out = {}
    for key, idx, fmt in (("time", 0, lambda v: "%.3f" % v), ("rss", 1, lambda v: "%.1f" % (v / 1024.0))):
        header = ["workload", "thr"] + allocs
        body = []
        ratios = {a: [] for a in allocs}
        for wl, t, med, best_t, best_r in rows:
            best = best_t if idx == 0 else best_r
            line = [wl, str(t)]
            for a in allocs:
                if a not in med:
                    line.append("failed")
                    continue
                v = med[a][idx]
                if best:
                    ratio = v / best[0] if best[0] > 0 else None
                    ratios[a].append(ratio)
                    line.append("%s (%s)" % (fmt(v), fmt_ratio(ratio)))
                else:
                    line.append(fmt(v))
            body.append(line)
        gm = ["geomean of ratios", ""] + [fmt_ratio(geomean(ratios[a])) for a in allocs]
        out[key] = (header, body, gm)
    if "kmm" in allocs:
        # The spreads say which rows a rerun may move: (max - min) / median of kmm's runs.
        header = ["workload", "thr", "kmm time", "best peer", "time ratio", "kmm RSS MiB",
                  "best peer", "RSS ratio", "kmm spread time/RSS"]
        body, tr, rr = [], [], []
        for wl, t, med, best_t, best_r in rows:
            if "kmm" not in med or not best_t:
                body.append([wl, str(t), "failed" if "kmm" not in med else "-", "-", "-", "-", "-", "-",
                             "-"])
                continue
            kt, kr, ks_t, ks_r = med["kmm"]
            rt = kt / best_t[0] if best_t[0] > 0 else None
            rs = kr / best_r[0] if best_r[0] > 0 else None
            tr.append(rt)
            rr.append(rs)
            body.append([wl, str(t), "%.3f" % kt, "%.3f %s" % (best_t[0], best_t[1]), fmt_ratio(rt),
                         "%.1f" % (kr / 1024.0), "%.1f %s" % (best_r[0] / 1024.0, best_r[1]),
                         fmt_ratio(rs), "%.0f%% / %.0f%%" % (100 * ks_t, 100 * ks_r)])
        gm = ["geomean", "", "", "", fmt_ratio(geomean(tr)), "", "", fmt_ratio(geomean(rr)), ""]
        out["kmm"] = (header, body, gm)
    return out


def text_table(header, body, foot):
    rows = [header] + body + ([foot] if foot else [])
    widths = [max(len(r[i]) for r in rows) for i in range(len(header))]

    def line(r):
        return "  ".join(c.ljust(widths[i]) if i == 0 else c.rjust(widths[i]) for i, c in enumerate(r))
    sep = "-" * len(line(header))
    lines = [line(header), sep] + [line(r) for r in body]
    if foot:
        lines += [sep, line(foot)]
    return "\n".join(lines)


def md_table(header, body, foot):
    lines = ["| " + " | ".join(header) + " |", "|" + "|".join("---" for _ in header) + "|"]
    lines += ["| " + " | ".join(r) + " |" for r in body]
    if foot:
        lines.append("| " + " | ".join("**%s**" % c if c else "" for c in foot) + " |")
    return "\n".join(lines)


# ---------------------------------------------------------------- chart


def svg_chart(rows, path, title):
    """Horizontal bars of kmm's time and RSS ratios to the best peer, on a log2 axis."""
    data = []
    for wl, t, med, best_t, best_r in rows:
        if "kmm" in med and best_t and best_r:
            label = wl if wl in dict((p[0], 1) for p in PROGRAMS) else "%s t%d" % (wl, t)
            data.append((label, med["kmm"][0] / best_t[0], med["kmm"][1] / best_r[0]))
    if not data:
        return False
    data.append(("geomean", geomean([d[1] for d in data]), geomean([d[2] for d in data])))
    # The axis: log2 of the ratios, symmetric, from 1/4..4 up to 1/16..16.
    span = max(abs(math.log2(r)) for d in data for r in d[1:] if r and r > 0)
    hi = float(min(4, max(2, math.ceil(span))))
    lo = -hi
    left, width, row_h, top = 150, 600, 26, 70
    height = top + row_h * len(data) + 50

    def x(ratio):
        v = max(lo, min(hi, math.log2(ratio))) if ratio > 0 else lo
        return left + (v - lo) / (hi - lo) * width

    s = ['<svg xmlns="http://www.w3.org/2000/svg" width="%d" height="%d" font-family="sans-serif" '
         'font-size="12">' % (left + width + 90, height),
         '<rect width="100%" height="100%" fill="white"/>',
         '<text x="%d" y="22" font-size="15" font-weight="bold">%s</text>' % (left, esc(title)),
         '<rect x="%d" y="34" width="12" height="10" fill="#3b6fb6"/>'
         '<text x="%d" y="43">wall time</text>' % (left, left + 16),
         '<rect x="%d" y="34" width="12" height="10" fill="#e08a2e"/>'
         '<text x="%d" y="43">peak RSS</text>' % (left + 100, left + 116),
         '<text x="%d" y="43" fill="#555">ratio kmm / best peer (log scale; left of 1 is better)'
         '</text>' % (left + 200)]
    for k in range(int(lo), int(hi) + 1):
        gx = left + (k - lo) / (hi - lo) * width
        s.append('<line x1="%.1f" y1="%d" x2="%.1f" y2="%d" stroke="%s" stroke-width="%s"/>' % (
            gx, top - 8, gx, top + row_h * len(data), "#333" if k == 0 else "#ddd",
            "1.5" if k == 0 else "1"))
        lab = ("%g" % (2.0 ** k)) if k >= 0 else "1/%d" % (2 ** -k)
        s.append('<text x="%.1f" y="%d" text-anchor="middle" fill="#555">%s</text>' % (
            gx, top + row_h * len(data) + 16, lab))
    for i, (label, rt, rr) in enumerate(data):
        y = top + i * row_h
        bold = ' font-weight="bold"' if label == "geomean" else ""
        s.append('<text x="%d" y="%d" text-anchor="end"%s>%s</text>' % (left - 8, y + 15, bold, esc(label)))
        for j, (ratio, colour) in enumerate(((rt, "#3b6fb6"), (rr, "#e08a2e"))):
            x0, x1 = x(1.0), x(ratio)
            by = y + 3 + j * 10
            s.append('<rect x="%.1f" y="%d" width="%.1f" height="9" fill="%s"/>' % (
                min(x0, x1), by, max(abs(x1 - x0), 1.0), colour))
            clipped = ratio > 2 ** hi or ratio < 2 ** lo
            tx = max(x0, x1) + 4 if ratio >= 1 else min(x0, x1) - 4
            s.append('<text x="%.1f" y="%d" font-size="9" text-anchor="%s">%.2f%s</text>' % (
                tx, by + 8, "start" if ratio >= 1 else "end", ratio, " (off scale)" if clipped else ""))
    s.append("</svg>")
    with open(path, "w") as f:
        f.write("\n".join(s) + "\n")
    return True


def esc(text):
    return text.replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;")


# ---------------------------------------------------------------- machine and versions


def machine_info():
    cpu, mem = "unknown", "unknown"
    try:
        with open("/proc/cpuinfo") as f:
            for line in f:
                if line.startswith("model name"):
                    cpu = line.split(":", 1)[1].strip()
                    break
        with open("/proc/meminfo") as f:
            for line in f:
                if line.startswith("MemTotal:"):
                    mem = "%.1f GiB" % (int(line.split()[1]) / 1048576.0)
                    break
    except OSError:
        pass
    return {"nproc": str(os.cpu_count()), "cpu": cpu, "memory": mem,
            "kernel": os.uname().release}


def kmm_version():
    version = "unknown"
    try:
        with open(os.path.join(ROOT, "CMakeLists.txt")) as f:
            for line in f:
                if line.startswith("project(kmm VERSION"):
                    version = line.split()[2]
                    break
        head_path = os.path.join(ROOT, ".git", "HEAD")
        with open(head_path) as f:
            head = f.read().strip()
        commit = head
        if head.startswith("ref: "):
            ref = head[5:]
            ref_path = os.path.join(ROOT, ".git", ref)
            commit = None
            if os.path.exists(ref_path):
                with open(ref_path) as f:
                    commit = f.read().strip()
            else:
                with open(os.path.join(ROOT, ".git", "packed-refs")) as f:
                    for line in f:
                        if line.strip().endswith(" " + ref):
                            commit = line.split()[0]
        if commit:
            version += " (commit %s)" % commit[:12]
    except OSError:
        pass
    return version


def package_versions():
    pkgs = ["libc6", "libjemalloc2", "libtcmalloc-minimal4", "libmimalloc2.0", "python3",
            "sqlite3", "redis-server", "gcc"]
    out = {}
    for p in pkgs:
        try:
            v = subprocess.run(["dpkg-query", "-W", "-f", "${Version}", p], capture_output=True,
                               text=True, timeout=20).stdout.strip()
        except (OSError, subprocess.TimeoutExpired):
            v = ""
        out[p] = v or "not installed"
    return out


# ---------------------------------------------------------------- main


def parse_args():
    names = [w[0] for w in SYNTHETIC] + [p[0] for p in PROGRAMS]
    ap = argparse.ArgumentParser(
        description="kmm against glibc, jemalloc, tcmalloc and mimalloc (LD_PRELOAD), interleaved.",
        epilog="workloads: " + ", ".join(names))
    ap.add_argument("--quick", action="store_true",
                    help="short mode (1-2 minutes): 3 repetitions, threads 1 and 2, smaller jobs")
    ap.add_argument("--reps", type=int, help="repetitions of each allocator (default 5; --quick 3)")
    ap.add_argument("--threads", help="thread counts, comma-separated (default 1,2,4,8; --quick 1,2)")
    ap.add_argument("--only", help="workloads to run, comma-separated")
    ap.add_argument("--allocators", default=",".join(ALLOCATORS),
                    help="allocators, comma-separated (default %(default)s)")
    ap.add_argument("--kmm", default=os.path.join(ROOT, "build", "release", "libkmm.so"),
                    help="kmm's shared library (default %(default)s)")
    ap.add_argument("--bindir", default=os.path.join(ROOT, "build", "release", "bench"),
                    help="where the bench-* workload programs are (default %(default)s)")
    ap.add_argument("--out", default=os.path.join(ROOT, "bench", "results"),
                    help="directory for results.csv, summary.md, ratios.svg (default %(default)s)")
    ap.add_argument("--timeout", type=int, default=300, help="seconds one run may take (default 300)")
    args = ap.parse_args()

    args.reps = args.reps or (3 if args.quick else 5)
    if args.reps < 1:
        ap.error("--reps must be at least 1")
    try:
        args.threads = [int(t) for t in (args.threads or ("1,2" if args.quick else "1,2,4,8")).split(",")]
    except ValueError:
        ap.error("--threads wants numbers, e.g. 1,2,4")
    if any(t < 1 or t > 256 for t in args.threads):
        ap.error("--threads: each count must be in 1..256")
    args.allocators = [a.strip() for a in args.allocators.split(",") if a.strip()]
    bad = [a for a in args.allocators if a not in ALLOCATORS]
    if bad or not args.allocators:
        ap.error("--allocators: unknown %s (choose from %s)" % (",".join(bad), ",".join(ALLOCATORS)))
    args.allocators = [a for a in ALLOCATORS if a in args.allocators]  # canonical order
    if args.only:
        args.only = [w.strip() for w in args.only.split(",") if w.strip()]
        bad = [w for w in args.only if w not in names]
        if bad:
            ap.error("--only: unknown workload %s (choose from %s)" % (",".join(bad), ", ".join(names)))
    return args


def check_prerequisites(args):
    libs, problems = {}, []
    for a in args.allocators:
        if a == "kmm":
            path = os.path.abspath(args.kmm)
            if not os.path.exists(path):
                problems.append("kmm: %s not found (build it: cmake -S . -B build/release && "
                                "cmake --build build/release -j)" % path)
            libs[a] = path
        else:
            path, pkg = PEER_LIBS[a]
            if not os.path.exists(path):
                problems.append("%s: %s not found (Debian package %s; scripts/bench.sh installs it)"
                                % (a, path, pkg))
            libs[a] = path
    if not os.access(TIME, os.X_OK):
        problems.append("%s not found (Debian package time; scripts/bench.sh installs it)" % TIME)
    wanted = {b for n, b, _, _ in SYNTHETIC if not args.only or n in args.only}
    for b in sorted(wanted):
        if not os.access(os.path.join(args.bindir, b), os.X_OK):
            problems.append("workload %s not built in %s (cmake --build build/release -j)" % (b, args.bindir))
    if problems:
        for p in problems:
            log("run_suite: " + p)
        sys.exit(2)
    # Each library must really be loaded by a preloaded process.
    for a, lib in libs.items():
        r = subprocess.run(["cat", "/proc/self/maps"], env=alloc_env(os.environ, lib),
                           capture_output=True, text=True)
        if r.returncode != 0 or os.path.basename(os.path.realpath(lib)) not in r.stdout:
            log("run_suite: %s: LD_PRELOAD=%s does not load (%s)" % (a, lib, r.stderr.strip()))
            sys.exit(2)
    return libs


def main():
    args = parse_args()
    libs = check_prerequisites(args)
    mode = "quick" if args.quick else "full"
    os.makedirs(args.out, exist_ok=True)
    workdir = tempfile.mkdtemp(prefix="kmm-bench-")
    base_env = dict(os.environ)
    for var in list(base_env):
        if var.startswith("KMM_") or var.startswith("MALLOC_") or var.startswith("MIMALLOC_") \
                or var.startswith("TCMALLOC_") or var in ("LD_PRELOAD", "JE_MALLOC_CONF", "MALLOC_CONF"):
            del base_env[var]
    command = "bench/run_suite.py " + " ".join(sys.argv[1:])
    started = datetime.datetime.now()
    try:
        jobs = build_jobs(args, args.bindir, workdir, mode)
        if not jobs:
            log("run_suite: nothing to run")
            return 2
        log("run_suite: %d workload configurations x %d allocators x %d repetitions (%s mode)"
            % (len(jobs), len(args.allocators), args.reps, mode))
        results, failures, notes = {}, [], []
        csv_rows = []
        for job in jobs:
            t_job = time.monotonic()
            for rep in range(1, args.reps + 1):
                for a in args.allocators:
                    r = run_job(job, libs[a], base_env, args.timeout, workdir)
                    results.setdefault((job.workload, job.threads, a), []).append(r)
                    if r.ok:
                        csv_rows.append([job.workload, job.threads, a, rep, "%.4f" % r.wall, r.rss])
                    else:
                        failures.append((job, a, rep, r))
                        log("  FAILED %s t=%d %s rep %d: %s" % (job.workload, job.threads, a, rep, r.status))
            # Every run of a deterministic job must print the same thing.
            digests = {}
            for a in args.allocators:
                for r in results.get((job.workload, job.threads, a), []):
                    if r.ok and r.digest:
                        digests.setdefault(r.digest, set()).add(a)
            if len(digests) > 1:
                notes.append("%s t=%d: output differs between runs: %s" % (
                    job.workload, job.threads,
                    "; ".join("%s by %s" % (d, ",".join(sorted(s))) for d, s in digests.items())))
                log("  NOTE " + notes[-1])
            meds = []
            for a in args.allocators:
                runs = [r for r in results.get((job.workload, job.threads, a), []) if r.ok]
                if runs:
                    meds.append("%s %.3fs %.0fMiB" % (a, median([r.wall for r in runs]),
                                                      median([r.rss for r in runs]) / 1024.0))
                else:
                    meds.append("%s failed" % a)
            log("%-13s t=%d  %s  (%.0fs)" % (job.workload, job.threads, " | ".join(meds),
                                             time.monotonic() - t_job))
    finally:
        shutil.rmtree(workdir, ignore_errors=True)
    finished = datetime.datetime.now()

    rows = summarize(jobs, args.allocators, results)
    tabs = tables(rows, args.allocators)
    peers_used = [a for a in PEERS if a in args.allocators]
    best_note = "best peer = the best of %s for that workload" % "/".join(peers_used) if peers_used \
        else "no peer selected: no ratios"

    csv_path = os.path.join(args.out, "results.csv")
    with open(csv_path, "w", newline="") as f:
        w = csv.writer(f)
        w.writerow(["workload", "threads", "allocator", "rep", "wall_s", "peak_rss_kb"])
        w.writerows(csv_rows)

    svg_path = os.path.join(args.out, "ratios.svg")
    have_svg = svg_chart(rows, svg_path, "kmm / best peer, %s run, %s" % (mode, started.strftime("%Y-%m-%d")))

    print()
    print("Median wall time in seconds (ratio to the best peer); %s" % best_note)
    print(text_table(*tabs["time"]))
    print()
    print("Median peak RSS in MiB (ratio to the best peer)")
    print(text_table(*tabs["rss"]))
    if "kmm" in tabs:
        print()
        print("kmm against the best peer (medians; ratio < 1: kmm is better; spread: (max - min) / median of kmm's runs)")
        print(text_table(*tabs["kmm"]))
    print()
    if failures:
        print("FAILED runs: %d" % len(failures))
        for job, a, rep, r in failures:
            argv = job.argv or [job.repro]
            env = "LD_PRELOAD=%s " % libs[a] + " ".join("%s=%s" % kv for kv in job.extra_env.items())
            print("  %s t=%d %s rep %d: %s" % (job.workload, job.threads, a, rep, r.status))
            print("    reproduce: %s %s%s" % (env.strip(), " ".join(argv),
                                               " < " + job.stdin if job.stdin else ""))
            for line in (r.detail or "").splitlines():
                print("    | " + line)
    for n in notes:
        print("NOTE: " + n)
    print("wrote %s%s" % (csv_path, ", " + svg_path if have_svg else ""))

    info = machine_info()
    versions = package_versions()
    md = os.path.join(args.out, "summary.md")
    with open(md, "w") as f:
        f.write("# kmm allocator benchmark (%s mode)\n\n" % mode)
        f.write("- command: `%s`\n" % command.strip())
        f.write("- started %s, took %.1f minutes\n" % (started.strftime("%Y-%m-%d %H:%M"),
                                                      (finished - started).total_seconds() / 60))
        f.write("- repetitions: %d per allocator, interleaved; threads: %s\n" % (
            args.reps, ",".join(map(str, args.threads))))
        f.write("- machine: %s CPUs (nproc), %s, %s memory, Linux %s\n" % (
            info["nproc"], info["cpu"], info["memory"], info["kernel"]))
        f.write("- kmm %s (%s)\n" % (kmm_version(), libs.get("kmm", "not run")))
        f.write("- packages: %s\n\n" % ", ".join("%s %s" % kv for kv in versions.items()))
        f.write("Median wall time in seconds (ratio to the best peer); %s.\n\n" % best_note)
        f.write(md_table(*tabs["time"]) + "\n\n")
        f.write("Median peak RSS in MiB (ratio to the best peer).\n\n")
        f.write(md_table(*tabs["rss"]) + "\n\n")
        if "kmm" in tabs:
            f.write("kmm against the best peer (ratio < 1: kmm is better; spread: (max - min) / median "
                    "of kmm's runs, how far a rerun may move the row).\n\n")
            f.write(md_table(*tabs["kmm"]) + "\n\n")
        if failures:
            f.write("Failed runs: %d\n\n" % len(failures))
            for job, a, rep, r in failures:
                f.write("- %s t=%d %s rep %d: %s\n" % (job.workload, job.threads, a, rep, r.status))
        for n in notes:
            f.write("- NOTE: %s\n" % n)
    print("wrote %s" % md)
    return 1 if failures else 0


if __name__ == "__main__":
    sys.exit(main())
