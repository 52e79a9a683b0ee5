#!/usr/bin/env python3
"""Writes docs/BENCHMARKS.md from the results of scripts/bench (a directory of shoal-bench
JSON summaries and text figures). Usage: bench-report.py RESULTS_DIR DURATION CLIENTS"""

import csv
import datetime
import json
import os
import statistics
import sys

results, duration, clients = sys.argv[1], sys.argv[2], sys.argv[3]


def summary(name):
    path = os.path.join(results, name + ".json")
    if not os.path.exists(path):
        return None
    with open(path) as file:
        return json.load(file)


def lines(name):
    path = os.path.join(results, name)
    if not os.path.exists(path):
        return []
    with open(path) as file:
        return [line.split() for line in file if line.strip()]


def fmt_ops(value):
    return f"{value:,.0f}"


def ratio(numerator, denominator):
    if not numerator or not denominator:
        return "–"
    return f"{numerator / denominator:.2f}×"


def verdict(ok):
    return "**met**" if ok else "**not met**"


out = []
say = out.append
say("# Benchmarks")
say("")
say("Written by `scripts/bench` (do not edit by hand; notes at the end come from")
say("`docs/bench-notes.md`). One run, one machine (2 cores, shared and noisy): compare the")
say("ratios within this run rather than absolute figures across runs.")
say("")
say(f"Run: {datetime.date.today().isoformat()}, {clients} clients, {duration} s per scenario,")
knobs = " ".join(f"{name}={value}" for name, value in sorted(os.environ.items()) if name.startswith("BENCH_") and name != "BENCH_OUT")
say("release builds, every server on 127.0.0.1. Reproduce with:")
say("")
say("```sh")
say(f"{knobs + ' ' if knobs else ''}scripts/bench")
say("```")
say("")

redis_bench = {}
path = os.path.join(results, "redis-benchmark.csv")
if os.path.exists(path):
    with open(path) as file:
        for row in csv.DictReader(file):
            redis_bench[row["test"]] = row

say("## Sessions: shoal cluster vs shoal in Redis mode vs etcd")
say("")
say("shoal cluster: 3 nodes, writes committed by a Raft majority and fsynced, linearizable")
say("reads on every node. Redis mode: 3 shoal nodes on one redis-server (AOF, fsync every")
say("second). etcd: 3 members (fsync on every commit) through the HTTP JSON gateway,")
say("same keys (`session:<32 hex>`) and values (the 256-byte session data JSON). Requests go")
say("round robin over the three nodes, as a load balancer would.")
say("")
say("| scenario | shoal cluster ops/s (p50 / p99 ms) | Redis mode ops/s (p50 / p99 ms) | etcd ops/s (p50 / p99 ms) | cluster ÷ Redis mode | cluster ÷ etcd |")
say("|---|---|---|---|---|---|")
ratios = {}
for scenario in ["sessions-write", "sessions-read", "sessions-mixed"]:
    cells = []
    values = {}
    for system in ["cluster", "redis", "etcd"]:
        s = summary(f"{system}-{scenario}")
        if s is None:
            cells.append("–")
            continue
        values[system] = s["throughput"]
        errors = f", {s['errors']} errors" if s["errors"] else ""
        cells.append(f"{fmt_ops(s['throughput'])} ({s['p50_ms']:.1f} / {s['p99_ms']:.1f}){errors}")
    ratios[scenario] = (values.get("cluster"), values.get("redis"), values.get("etcd"))
    say(f"| {scenario} | {cells[0]} | {cells[1]} | {cells[2]} | "
        f"{ratio(values.get('cluster'), values.get('redis'))} | {ratio(values.get('cluster'), values.get('etcd'))} |")
say("")
if redis_bench:
    set_rps = float(redis_bench.get("SET", {}).get("rps", 0) or 0)
    get_rps = float(redis_bench.get("GET", {}).get("rps", 0) or 0)
    say(f"The ceiling of the classic setup, `redis-benchmark -c {clients} -d 256 -t set,get` straight")
    say(f"at redis-server (no HTTP, no backend): SET {fmt_ops(set_rps)}/s, GET {fmt_ops(get_rps)}/s.")
    write, read = ratios["sessions-write"][0], ratios["sessions-read"][0]
    say(f"shoal cluster over HTTP reaches {ratio(write, set_rps)} of SET and {ratio(read, get_rps)} of GET.")
    say("")

say("## Searches and SSE")
say("")
say("| scenario | shoal cluster | Redis mode | cluster ÷ Redis mode |")
say("|---|---|---|---|")
for scenario, unit in [("sse-latency", "p50 / p99 ms"), ("searches", "searches/s, p50 ms")]:
    c, r = summary(f"cluster-{scenario}"), summary(f"redis-{scenario}")
    if scenario == "sse-latency":
        cell = lambda s: "–" if s is None else f"{s['p50_ms']:.2f} / {s['p99_ms']:.2f} ms ({s['ops']:,} events, {s['errors']} errors)"
        rat = ratio(r and r["p99_ms"], c and c["p99_ms"]) + " (p99, Redis ÷ cluster)" if c and r else "–"
    else:
        cell = lambda s: "–" if s is None else f"{s['throughput']:.1f}/s, p50 {s['p50_ms']:.0f} ms ({s['errors']} errors)"
        rat = ratio(c and c["throughput"], r and r["throughput"])
    say(f"| {scenario} ({unit}) | {cell(c)} | {cell(r)} | {rat} |")
say("")
say("sse-latency: a tracker on node 1, 4 subscribers on nodes 2 and 3, 1,000 events/s stamped")
say("with their send time. searches: 8 clients, each running a 2-UF, 31-day `sample` search")
say("with `?wait=true` (pages every 5 ms), round robin over the nodes.")
say("")

say("## Memory, space, reports, failover, catch-up")
say("")
targets = []
memory = lines("memory.txt")
idle = [(row[1], int(row[3])) for row in memory if row[2] == "idle_rss_kib"]
if idle:
    say("| node | idle RSS |")
    say("|---|---|")
    for name, kib in idle:
        say(f"| {name} | {kib / 1024:.1f} MiB |")
    say("")
    cluster_idle = max(kib for name, kib in idle if name.startswith("node-")) / 1024
    targets.append(("idle RSS per cluster node ≤ 30 MB", f"{cluster_idle:.1f} MiB (largest)", cluster_idle <= 30))
sse = [row for row in memory if len(row) > 2 and row[2] == "sse_connections"]
conn = summary("cluster-sse-connections")
if sse:
    peak = int(sse[0][5]) / 1024
    held = conn["ops"] if conn else 0
    errors = conn["errors"] if conn else "?"
    say(f"Holding SSE connections: node-1 of the cluster (streams of one tracker) with")
    before = int(sse[0][7]) / 1024 if len(sse[0]) > 7 else None
    grown = f" ({before:.1f} MiB just before they opened, so {peak - before:.1f} MiB for the streams)" if before else ""
    say(f"{held:,} of {sse[0][3]} streams open ({errors} failed): peak RSS {peak:.1f} MiB{grown}"
        + (f"; time to the snapshot event p50 {conn['p50_ms']:.1f} ms, p99 {conn['p99_ms']:.1f} ms." if conn else "."))
    say("")
    targets.append(("10,000 SSE connections ≤ 150 MB RSS", f"{peak:.1f} MiB with {held:,} open", peak <= 150 and held >= 10000))
space = lines("space.txt")
churn = summary("cluster-churn")
if space:
    live = int(float(space[0][4]))
    # A live session: its id and key prefix, the record (data JSON + version, TTL, times)
    # and its expiry-index entry.
    record_bytes = 32 + 2 + 256 + 16 + 40 + 32
    live_bytes = max(live * record_bytes, 1)
    say(f"Space after {churn['ops']:,} session creates with a 30 s TTL ({churn['throughput']:,.0f}/s):" if churn else "Space after TTL churn:")
    say("")
    say("| node | data dir (disk used) | live sessions | live data (≈ 378 B each) | data dir ÷ live data |")
    say("|---|---|---|---|---|")
    worst = 0
    for row in space:
        size = int(row[2])
        amplification = size / live_bytes
        worst = max(worst, amplification)
        say(f"| {row[0]} | {size / 1048576:.1f} MiB | {live:,} | {live_bytes / 1048576:.1f} MiB | {amplification:.1f}× |")
    say("")
    targets.append(("data dir ≤ 4× live data", f"{worst:.1f}×", worst <= 4))
report = lines("report.txt")
if report:
    text = " ".join(report[0])
    say(f"Report: `{text}`")
    say("")
    ms = float(text.split(" ms")[0].split()[-1])
    peak = float(text.split("peak RSS ")[1].split(" MiB")[0])
    added = float(text.split("added at most ")[1].split(" MiB")[0])
    targets.append(("100,000-row report ≤ 2 s and ≤ 64 MB", f"{ms:.0f} ms, +{added:.1f} MiB over the rows ({peak:.1f} MiB peak)", ms <= 2000 and added <= 64))
failover = [int(row[4]) for row in lines("failover.txt")]
if failover:
    median = statistics.median(failover)
    say(f"Failover (default timings: heartbeat 50 ms, election timeout 300–600 ms), SIGKILL of the")
    say(f"leader to the next acknowledged write on a survivor, {len(failover)} runs: "
        + ", ".join(f"{ms} ms" for ms in failover) + f"; **median {median:.0f} ms**.")
    say("")
    targets.append(("failover ≤ 1.5 s (median)", f"{median:.0f} ms", median <= 1500))
catchup = lines("catchup.txt")
if catchup:
    row = catchup[0]
    say(f"Catch-up: a fourth node joins a cluster holding {int(row[2]):,} sessions (applied index {row[6]})")
    say(f"and has applied everything after {int(row[4]):,} ms (snapshot install); its RSS then {int(row[8]) / 1024:.1f} MiB.")
    say("")

write, read = ratios["sessions-write"][0], ratios["sessions-read"][0]
redis_write, redis_read, etcd_write = ratios["sessions-write"][1], ratios["sessions-read"][1], ratios["sessions-write"][2]
if write and redis_write:
    targets.insert(0, ("session writes ≥ 0.5× Redis mode", ratio(write, redis_write), write >= 0.5 * redis_write))
if read and redis_read:
    targets.insert(0, ("session reads ≥ 1.0× Redis mode", ratio(read, redis_read), read >= redis_read))
if write and etcd_write:
    targets.insert(2, ("session writes ≥ 1.0× etcd", ratio(write, etcd_write), write >= etcd_write))
c = summary("cluster-sse-latency")
if c:
    targets.insert(3, ("cross-node SSE p99 < 10 ms at 1,000 events/s", f"{c['p99_ms']:.2f} ms", c["p99_ms"] < 10))

say("## Targets")
say("")
say("| target | this run | |")
say("|---|---|---|")
for name, value, ok in targets:
    say(f"| {name} | {value} | {verdict(ok)} |")
say("")

notes = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "docs", "bench-notes.md")
if os.path.exists(notes):
    with open(notes) as file:
        say(file.read().rstrip())
        say("")
print("\n".join(out))
