#!/usr/bin/env python3
"""Helper of collect.sh: turns benchmark output into docs/plots/*.json.

  aggregate.py parse-cluster RATE REP < rtm-cluster-bench output   -> one JSON line
  aggregate.py tag KEY JSON_VALUE [KEY JSON_VALUE..] < one JSON line -> it, with those keys set
  aggregate.py build KIND RAW.jsonl OUT.json --date D --commit C --machine M --runs N --deadline-hit 0|1

KIND is idle (rows of the workshop's loadgen), cluster (lines of
parse-cluster) or inproc (rtm-inproc's JSON lines). The command of each plot
comes from IDLE_CMD, CLUSTER_CMD or INPROC_CMD in the environment.

Every output file has the same shape, read by tools/plots (rtm-plots):
{plot, date, commit, machine, command, runs_per_point, complete, notes,
 series: [{key, name, unit, points: [{x, median, runs: [..], command, details: [..]}]}]}
"""
import argparse
import json
import os
import re
import statistics
import sys


def median(values):
    return statistics.median(values) if values else None


def point(x, runs, command, details):
    return {
        "x": x,
        "median": median(runs),
        "runs": runs,
        "command": command,
        "details": details,
    }


def parse_cluster(rate, rep):
    text = sys.stdin.read()
    row = {"rate": int(rate), "rep": int(rep)}
    m = re.search(r"deliveries received (\d+) in .*? = (\d+) deliveries/s", text)
    if not m:
        sys.exit(1)
    row["received"] = int(m.group(1))
    row["deliveries_per_s"] = int(m.group(2))
    m = re.search(r"publishes sent (\d+) \((\d+)/s\)", text)
    if m:
        row["sent"] = int(m.group(1))
        row["publishes_per_s"] = int(m.group(2))
    m = re.search(r"latency p50 ([\d.]+) ms p90 ([\d.]+) ms p99 ([\d.]+) ms max ([\d.]+) ms", text)
    if m:
        row.update(p50_ms=float(m.group(1)), p90_ms=float(m.group(2)),
                   p99_ms=float(m.group(3)), max_ms=float(m.group(4)))
    m = re.search(r"lost (\d+)", text)
    if m:
        row["lost"] = int(m.group(1))
    m = re.search(r"cpu: this process ([\d.]+) s.*load average (.*)$", text, re.M)
    if m:
        row["cpu_s"] = float(m.group(1))
        row["load_average"] = m.group(2).strip()
    print(json.dumps(row))


def rows(path):
    out = []
    if os.path.exists(path):
        with open(path) as f:
            for line in f:
                line = line.strip()
                if line.startswith("{"):
                    out.append(json.loads(line))
    return out


def build_idle(raw):
    names = {
        "project": "RTM (rtm-fixture --runtime tokio)",
        "tungstenite-rtm": "hand-written tokio-tungstenite (tungstenite-rtm)",
    }
    cmd = os.environ.get("IDLE_CMD", "")
    series = []
    for key in ["project", "tungstenite-rtm"]:
        by_n = {}
        for r in raw:
            if r.get("workload") != "idle" or r.get("server") != key or r.get("bytes_per_conn") is None:
                continue
            by_n.setdefault(r["connections"], []).append(r)
        points = []
        for n in sorted(by_n):
            rs = by_n[n]
            details = [
                {k: r.get(k) for k in ["run_id", "connected", "connect_errors", "dropped", "still_open_at_end",
                                       "connect_s", "rss_before_kb", "rss_after_connect_kb", "rss_end_kb",
                                       "hwm_end_kb", "bytes_per_conn", "cpu_idle_pct", "steal_pct"]}
                for r in rs
            ]
            points.append(point(n, [float(r["bytes_per_conn"]) for r in rs], cmd.replace("=N ", f"={n} "), details))
        series.append({"key": key, "name": names[key], "unit": "bytes per connection", "points": points})
    return cmd, series, [
        "bytes_per_conn = (server VmRSS at the end of the hold - VmRSS before connecting) / connections, "
        "as the workshop's loadgen `idle` workload measures it (server on CPU 0, loadgen on CPU 1, "
        "each server started fresh per run).",
        "At most 19,500 connections: the hard limit on open files (ulimit -Hn) is 20,000 for every "
        "process on this machine and cannot be raised from inside it (not even by root: no CAP_SYS_RESOURCE), "
        "so the server, which needs one descriptor per connection, cannot hold 30k or 100k.",
    ]


def build_cluster(raw):
    cmd = os.environ.get("CLUSTER_CMD", "")
    by_rate = {}
    for r in raw:
        by_rate.setdefault(r["rate"], []).append(r)
    series = []
    for key, name, field in [
        ("p50", "p50 latency", "p50_ms"),
        ("p99", "p99 latency", "p99_ms"),
        ("delivered", "deliveries/s received", "deliveries_per_s"),
    ]:
        points = []
        for rate in sorted(by_rate):
            rs = [r for r in by_rate[rate] if field in r]
            if rate == 0 and key != "delivered":
                continue
            points.append(point(rate, [float(r[field]) for r in rs],
                                cmd.replace("--rate R", f"--rate {rate}"), rs if key == "p99" or rate == 0 else []))
        unit = "deliveries/s" if key == "delivered" else "ms"
        series.append({"key": key, "name": name, "unit": unit, "points": points})
    return cmd, series, [
        "x = offered publishes/s (open loop, paced); x = 0 in the 'delivered' series is the closed loop "
        "(--rate 0, at most 4096 undelivered): the capacity of the day.",
        "Both servers, the 100 receiving clients, the publisher and redis-server share the 2 cores.",
        "Latency from the publish on server 1 to the event read by the client of server 2 (one clock).",
    ]


def build_inproc(raw):
    cmd = os.environ.get("INPROC_CMD", "")
    series = []
    for key, name, field in [
        ("calls", "calls/s (64 connections x 8 in flight)", "calls_per_s"),
        ("emit", "Emit deliveries/s (2,000 connections, 2 emitters)", "deliveries_per_s"),
    ]:
        by_t = {}
        for r in raw:
            if r.get("workload", "").lower() == key and field in r:
                by_t.setdefault(r["threads"], []).append(r)
        parts = [c.strip() for c in cmd.split(";")]
        wl_cmd = next((c for c in parts if f" {key} " in c), cmd)
        points = [
            point(t, [float(r[field]) for r in by_t[t]], wl_cmd.replace("--threads T", f"--threads {t}"), by_t[t])
            for t in sorted(by_t)
        ]
        series.append({"key": key, "name": name, "unit": "per second", "points": points})
    return cmd, series, [
        "One process, no sockets: every connection is an in-memory pipe into the driver, and the clients are "
        "tasks of the same tokio runtime, so they take CPU from the server's workers.",
        "The machine has 2 cores: 3 and 4 worker threads oversubscribe them.",
    ]


def build(args):
    raw = rows(args.raw)
    cmd, series, notes = {"idle": build_idle, "cluster": build_cluster, "inproc": build_inproc}[args.kind](raw)
    plot = {"idle": "idle-memory", "cluster": "cluster-latency", "inproc": "inproc-scaling"}[args.kind]
    counts = [len(p["runs"]) for s in series for p in s["points"]]
    complete = bool(counts) and min(counts) >= args.runs and args.deadline_hit == 0
    idle = sorted(r["idle_before_pct"] for r in raw if isinstance(r.get("idle_before_pct"), (int, float)) and r["idle_before_pct"] >= 0)
    if idle:
        notes.append(
            f"Machine-wide CPU idle in the second before each run: median {median(idle):.0f} %, "
            f"from {idle[0]} to {idle[-1]} % (the script waited up to QUIET_WAIT s for QUIET_IDLE %)."
        )
    foreign = sorted(r["foreign_cpu_pct"] for r in raw if isinstance(r.get("foreign_cpu_pct"), (int, float)))
    if foreign:
        notes.append(
            f"CPU used by other processes during each run (foreign_cpu_pct, % of one core; 200 = both cores): "
            f"median {median(foreign):.0f} %, from {foreign[0]} to {foreign[-1]} %."
        )
    notes.append(
        "Measured on a shared 2-core VM while another engineer built and tested in the same checkout: "
        "absolute figures vary from day to day; compare the series within one run."
    )
    doc = {
        "plot": plot,
        "date": args.date,
        "commit": args.commit,
        "machine": args.machine,
        "command": cmd,
        "runs_per_point": args.runs,
        "complete": complete,
        "notes": notes,
        "series": series,
    }
    with open(args.out, "w") as f:
        json.dump(doc, f, indent=1)
        f.write("\n")
    print(f"aggregate: wrote {args.out} ({sum(len(s['points']) for s in series)} points)", file=sys.stderr)


def main():
    if len(sys.argv) == 4 and sys.argv[1] == "parse-cluster":
        parse_cluster(sys.argv[2], sys.argv[3])
        return
    if len(sys.argv) >= 4 and len(sys.argv) % 2 == 0 and sys.argv[1] == "tag":
        text = sys.stdin.read().strip()
        if not text:
            sys.exit(1)
        row = json.loads(text)
        for key, value in zip(sys.argv[2::2], sys.argv[3::2]):
            row[key] = json.loads(value)
        print(json.dumps(row))
        return
    ap = argparse.ArgumentParser()
    ap.add_argument("mode", choices=["build"])
    ap.add_argument("kind", choices=["idle", "cluster", "inproc"])
    ap.add_argument("raw")
    ap.add_argument("out")
    ap.add_argument("--date", required=True)
    ap.add_argument("--commit", required=True)
    ap.add_argument("--machine", required=True)
    ap.add_argument("--runs", type=int, required=True)
    ap.add_argument("--deadline-hit", type=int, default=0)
    build(ap.parse_args())


if __name__ == "__main__":
    main()
