#!/usr/bin/python3
"""Per-request table of oneDNN primitives from an ONEDNN_VERBOSE=2 log (oneDNN 2.6).

Usage: ONEDNN_VERBOSE=2 ONEDNN_VERBOSE_TIMESTAMP=1 <process> 2> log
       bench/ort/onednn_verbose.py log [--skip 50] [--markdown]

A request starts at the stem convolution (input channels 1: the first conv of
every request of the default model; --first_ic to change). The first --skip
requests (warm-up, cache misses) are left out. For each primitive (kind,
implementation, shape) it prints calls per request and the mean time per
request of executing it and of creating it (a primitive-cache hit still costs a
descriptor, a hash and a lookup per call). With timestamps it also prints the
time per request between the first and the last primitive that oneDNN did not
account for: LibTorch dispatch, allocation, elementwise ops and verbose
printing itself (so an upper bound).
"""

import argparse
import collections
import re
import statistics


def layer_name(kind, impl, desc, problem):
    if kind == "convolution":
        m = re.match(r"mb(\d+)_ic(\d+)oc(\d+)_ih(\d+)oh(\d+)kh(\d+)sh(\d+)", problem)
        if m:
            mb, ic, oc, ih, oh, kh, sh = m.groups()
            return f"conv {kh}x{kh}/{sh} {ic}->{oc} @{ih}->{oh}"
    if kind == "reorder":
        src = re.search(r"src_f32::blocked:(\w+)", desc)
        dst = re.search(r"dst_f32::blocked:(\w+)", desc)
        what = "weights" if len(problem.split("x")) == 4 and re.match(r"^[A-Z]", dst.group(1) if dst else "") else "data"
        return f"reorder {what} {problem} {src.group(1) if src else '?'}->{dst.group(1) if dst else '?'}"
    return f"{kind} {problem}"


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("log")
    ap.add_argument("--skip", type=int, default=50)
    ap.add_argument("--first_ic", default="1")
    ap.add_argument("--markdown", action="store_true")
    a = ap.parse_args()

    requests = []  # each: list of (ts, op, name, ms)
    cur = None
    for line in open(a.log, errors="replace"):
        if not line.startswith("onednn_verbose,"):
            continue
        f = line.rstrip("\n").split(",")
        # With timestamps: onednn_verbose,ts,op,engine,kind,impl,prop,desc,attr,aux,problem,ms
        if len(f) < 12 or not (f[2] == "exec" or f[2].startswith("create")):
            continue
        ts, op, kind, impl, desc, problem, ms = float(f[1]), f[2], f[4], f[5], f[7], f[10], float(f[11])
        name = layer_name(kind, impl, desc, problem)
        if op == "create:cache_hit" or op == "create:cache_miss" or op == "create":
            # The creation of the stem's primitives opens a request.
            if kind == "convolution" and f"_ic{a.first_ic}oc" in problem and (cur is None or cur["stem_seen"]):
                cur = {"events": [], "stem_seen": False}
                requests.append(cur)
        if cur is None:
            continue
        if kind == "convolution" and f"_ic{a.first_ic}oc" in problem and op == "exec":
            cur["stem_seen"] = True
        cur["events"].append((ts, "exec" if op == "exec" else "create", name, ms, impl))

    steady = requests[a.skip:]
    n = len(steady)
    if n == 0:
        raise SystemExit(f"{a.log}: fewer than {a.skip} requests found")
    calls = collections.Counter()
    exec_ms = collections.Counter()  # per request: calls x median time of one call
    create_ms = collections.Counter()
    exec_each = collections.defaultdict(list)
    create_each = collections.defaultdict(list)
    impls = {}
    spans, accounted = [], []
    for r in steady:
        ev = r["events"]
        for ts, op, name, ms, impl in ev:
            impls[name] = impl
            if op == "exec":
                calls[name] += 1
                exec_each[name].append(ms)
            else:
                create_each[name].append(ms)
        execs = [e for e in ev if e[1] == "exec"]
        if execs:
            first, last = ev[0], ev[-1]
            spans.append(last[0] + last[3] - first[0])
            accounted.append(sum(e[3] for e in ev))  # the span's own calls (means)

    # Medians per call, not means: on a shared machine a preempted call can
    # take 100x its usual time.
    for k in calls:
        exec_ms[k] = calls[k] * statistics.median(exec_each[k])
        create_ms[k] = len(create_each[k]) * statistics.median(create_each[k]) if create_each[k] else 0
    rows = sorted(calls, key=lambda k: -(exec_ms[k] + create_ms[k]))
    tot_exec = sum(exec_ms.values()) / n
    tot_create = sum(create_ms.values()) / n
    if a.markdown:
        print(f"{n} requests (after {a.skip} skipped). Times per request, ms: calls per request x the median time of one call.\n")
        print("| primitive | impl | calls/request | exec ms/request | create (cache hit) ms/request |")
        print("|---|---|---|---|---|")
        for k in rows:
            print(f"| {k} | {impls[k]} | {calls[k]/n:.2f} | {exec_ms[k]/n:.4f} | {create_ms[k]/n:.4f} |")
        print(f"| **all oneDNN** | | {sum(calls.values())/n:.1f} | **{tot_exec:.4f}** | **{tot_create:.4f}** |")
    else:
        print(f"{n} requests after {a.skip} skipped; per request:")
        print(f"{'primitive':46s} {'impl':24s} {'calls':>6s} {'exec_ms':>9s} {'create_ms':>9s}")
        for k in rows:
            print(f"{k:46s} {impls[k]:24s} {calls[k]/n:6.2f} {exec_ms[k]/n:9.4f} {create_ms[k]/n:9.4f}")
        print(f"{'all oneDNN':46s} {'':24s} {sum(calls.values())/n:6.1f} {tot_exec:9.4f} {tot_create:9.4f}")
    if spans:
        conv_exec = sum(v for k, v in exec_ms.items() if k.startswith("conv")) / n
        reorder_exec = sum(v for k, v in exec_ms.items() if k.startswith("reorder")) / n
        gap = [s - acc for s, acc in zip(spans, accounted)]
        print(f"\nconvolutions exec {conv_exec:.4f} ms, reorders exec {reorder_exec:.4f} ms, primitive creation "
              f"(cache hits) {tot_create:.4f} ms per request")
        print(f"first-to-last primitive span: median {statistics.median(spans):.4f} ms; not in oneDNN (median): "
              f"{statistics.median(gap):.4f} ms (LibTorch dispatch, allocations, elementwise ops, verbose printing)")


if __name__ == "__main__":
    main()
