#!/usr/bin/python3
"""Per-request LibTorch operator table from a Chrome trace of LibTorch's profiler.

Usage: hapi-bench-ort-reference --loop_seconds=5 --torch_trace=T.json [--exits=...]
       bench/ort/op_table.py T.json --requests N [--markdown]

N is the number of requests the loop ran (its JSON line says). Per op: calls per
request x the median time of one call. Self time of an op is its duration minus that of the ops it called (nesting by time on one
thread). The profiler adds a few microseconds to every op, so absolute times
are inflated by about calls x that; compare ops with each other.
"""

import argparse
import collections
import json
import statistics


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("trace")
    ap.add_argument("--requests", type=int, required=True)
    ap.add_argument("--markdown", action="store_true")
    ap.add_argument("--top", type=int, default=25)
    a = ap.parse_args()

    text = open(a.trace).read().rstrip().rstrip(",")
    if not text.endswith("]"):
        text += "]"
    events = [e for e in json.loads(text) if e.get("ph") == "X"]
    by_tid = collections.defaultdict(list)
    for e in events:
        by_tid[e.get("tid")].append(e)
    calls = collections.Counter()
    total = collections.Counter()
    self_t = collections.Counter()
    top_level = 0.0
    self_each = collections.defaultdict(list)
    total_each = collections.defaultdict(list)
    for evs in by_tid.values():
        evs.sort(key=lambda e: (e["ts"], -e["dur"]))
        stack = []  # [end, name, child_time]
        for e in evs:
            start, dur, name = e["ts"], e["dur"], e["name"]
            while stack and stack[-1][0] <= start:
                end, n, child = stack.pop()
            if stack:
                stack[-1][2] += dur
            else:
                top_level += dur
            calls[name] += 1
            total[name] += dur
            stack.append([start + dur, name, 0.0])
            # self time is settled when the op is popped; keep a reference
            e["_frame"] = stack[-1]
        for e in evs:
            self_each[e["name"]].append(e["dur"] - e["_frame"][2])
            total_each[e["name"]].append(e["dur"])
    n = a.requests
    # Medians per call, times calls: on a shared machine one preempted call
    # can take 100x its usual time, and means follow it.
    for k in calls:
        self_t[k] = calls[k] * statistics.median(self_each[k])
        total[k] = calls[k] * statistics.median(total_each[k])
    rows = sorted(self_t, key=lambda k: -self_t[k])[: a.top]
    all_self = sum(self_t.values())
    if a.markdown:
        print(f"{n} requests; per request: calls, total and self time in microseconds (profiler on).\n")
        print("| op | calls/request | total us/request | self us/request | self share |")
        print("|---|---|---|---|---|")
        for k in rows:
            print(f"| {k} | {calls[k]/n:.1f} | {total[k]/n:.1f} | {self_t[k]/n:.1f} | {100*self_t[k]/all_self:.1f}% |")
        print(f"| all ops | {sum(calls.values())/n:.1f} | | {all_self/n:.1f} | 100% |")
    else:
        print(f"{'op':40s} {'calls':>6s} {'total_us':>9s} {'self_us':>9s} {'share':>6s}")
        for k in rows:
            print(f"{k:40s} {calls[k]/n:6.1f} {total[k]/n:9.1f} {self_t[k]/n:9.1f} {100*self_t[k]/all_self:5.1f}%")
        print(f"{'all ops (top level)':40s} {sum(calls.values())/n:6.1f} {top_level/n:9.1f} {all_self/n:9.1f}")


if __name__ == "__main__":
    main()
