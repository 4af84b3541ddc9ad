#!/usr/bin/env bash
# Server benchmark: the early-exit variant vs the same server serving the full
# network, at batch 1 (one client) and under concurrent load with batching off
# and on. Needs a built tree and a variant in the repository (scripts/main.sh
# makes one). Prints a markdown table.
# Usage: bench/server_bench.sh VARIANT [COUNT] [DURATION_S]
set -euo pipefail
cd "$(dirname "$0")/.."
VARIANT=${1:?usage: bench/server_bench.sh VARIANT [COUNT] [DURATION_S]}
COUNT=${2:-10000}
DURATION=${3:-15}
REPOSITORY=${REPOSITORY:-repository}
PORT=${PORT:-50071}
BIN=build
OUT=var/server-bench-$(date +%Y%m%d-%H%M%S)
mkdir -p "$OUT"
pid=""
trap '[[ -n $pid ]] && kill $pid 2>/dev/null; wait 2>/dev/null || true' EXIT

serve() {  # serve <log> [flags...]
  local log=$1; shift
  "$BIN/server/hapi-server" --repository="$REPOSITORY" --variant="$VARIANT" \
    --listen="127.0.0.1:$PORT" --metrics_address= --intra_op_threads=1 "$@" > "$OUT/$log.log" 2>&1 &
  pid=$!
  for _ in $(seq 1 100); do
    "$BIN/client/hapi-client" --target="127.0.0.1:$PORT" status >/dev/null 2>&1 && return 0
    sleep 0.2
  done
  echo "server did not start; see $OUT/$log.log" >&2; exit 1
}
stop() { kill "$pid"; wait "$pid" || true; pid=""; }
bench() {  # bench <name> [client flags...]
  local name=$1; shift
  "$BIN/client/hapi-client" --target="127.0.0.1:$PORT" bench --no_progress --json="$OUT/$name.json" "$@" \
    > "$OUT/$name.txt"
}

serve early-b1;  bench early-b1 --count="$COUNT" --concurrency=1; stop
serve full-b1 --full_network; bench full-b1 --count="$COUNT" --concurrency=1; stop
# The same with every request handed to a batch worker thread and back.
serve early-b1-handoff --run_inline=false; bench early-b1-handoff --count="$COUNT" --concurrency=1; stop
serve full-b1-handoff --full_network --run_inline=false; bench full-b1-handoff --count="$COUNT" --concurrency=1; stop
for c in 8 32; do
  serve early-c$c-nobatch --max_batch=1 --workers=2; bench early-c$c-nobatch --duration="$DURATION" --concurrency=$c; stop
  serve early-c$c-batch --max_batch=32 --max_wait_ms=0 --workers=2; bench early-c$c-batch --duration="$DURATION" --concurrency=$c; stop
  serve full-c$c-nobatch --full_network --max_batch=1 --workers=2; bench full-c$c-nobatch --duration="$DURATION" --concurrency=$c; stop
  serve full-c$c-batch --full_network --max_batch=32 --max_wait_ms=0 --workers=2; bench full-c$c-batch --duration="$DURATION" --concurrency=$c; stop
  # Batching that holds a partial batch for up to 2 ms.
  serve early-c$c-batch-wait2 --max_batch=32 --max_wait_ms=2 --workers=2; bench early-c$c-batch-wait2 --duration="$DURATION" --concurrency=$c; stop
done

python3 - "$OUT" <<'PY'
import json, sys, glob, os
out = sys.argv[1]
rows = []
for name in ["early-b1", "full-b1", "early-b1-handoff", "full-b1-handoff", "early-c8-nobatch", "early-c8-batch", "full-c8-nobatch", "full-c8-batch",
             "early-c8-batch-wait2", "early-c32-nobatch", "early-c32-batch", "full-c32-nobatch",
             "full-c32-batch", "early-c32-batch-wait2"]:
    j = json.load(open(f"{out}/{name}.json"))
    rows.append((name, j))
print("| run | requests | throughput req/s | mean ms | p50 ms | p99 ms | server-side mean ms | accuracy |")
print("|---|---|---|---|---|---|---|---|")
for name, j in rows:
    acc = f"{100*j['accuracy']:.2f}%" if j["accuracy"] is not None else "-"
    lat = j["latency_ms"]
    print(f"| {name} | {j['requests']} | {j['throughput_rps']:.1f} | {lat['mean']:.3f} | {lat['p50']:.3f} | "
          f"{lat['p99']:.3f} | {j['server_ms']['mean']:.3f} | {acc} |")
for suffix, what in (("", "on the gRPC thread"), ("-handoff", "handed to a worker thread")):
    e = json.load(open(f"{out}/early-b1{suffix}.json"))
    f = json.load(open(f"{out}/full-b1{suffix}.json"))
    me, mf = e["latency_ms"]["mean"], f["latency_ms"]["mean"]
    print(f"\nbatch 1, one client, {what}: early-exit mean {me:.3f} ms vs full network {mf:.3f} ms -> "
          f"{mf/me:.2f}x; accuracy {100*e['accuracy']:.2f}% vs {100*f['accuracy']:.2f}%")
for c in (8, 32):
    for kind in ("early", "full"):
        nb = json.load(open(f"{out}/{kind}-c{c}-nobatch.json"))["throughput_rps"]
        b = json.load(open(f"{out}/{kind}-c{c}-batch.json"))["throughput_rps"]
        print(f"{c} clients, {kind}: batching {b:.0f} req/s vs off {nb:.0f} req/s -> {b/nb:.2f}x")
    w = json.load(open(f"{out}/early-c{c}-batch-wait2.json"))["throughput_rps"]
    nb = json.load(open(f"{out}/early-c{c}-nobatch.json"))["throughput_rps"]
    print(f"{c} clients, early, batching with a 2 ms wait: {w:.0f} req/s -> {w/nb:.2f}x of off")
print(f"\nraw results in {out}/")
PY
