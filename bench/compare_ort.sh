#!/usr/bin/env bash
# The same network through this project and through ONNX Runtime (issue 17),
# side by side on one machine: short runs alternated ROUNDS times, medians and
# per-round ratios.
#   executor alone    hapi-bench-ort-reference --time (EarlyExitExecutor::Run,
#                     batch 1, 1 intra-op thread) vs ORT session.run (Node,
#                     CPU EP, batch 1, 1 intra-op thread)
#   end to end gRPC   hapi-server --full_network vs bench/ort/server.js (grpc-js
#                     around ORT), both driven by the same
#                     `hapi-client bench --concurrency=1` (hapi.v1 Classify,
#                     raw uint8 28x28); with VARIANT_DIR also hapi-server
#                     serving that early-exit variant
# Before timing it exports the model (bench/ort/export.py, if absent) and
# checks the ONNX graph against PyTorch and the project's executor on the test
# split; it stops if they disagree.
#
# Usage: bench/compare_ort.sh
# Environment: BIN (build tree, default build), ROUNDS (3), SAMPLES (test
#   images per executor/ORT run, 2000), COUNT (gRPC requests per run, 2000),
#   MODEL (fmnist-resnet), REPOSITORY (repository), VARIANT_DIR (a variant
#   directory of MODEL, e.g. the main job's, for the early-exit server row),
#   DEVICE_DIR (a device profile directory for hapi-server; default: the
#   variant's, else one of MODEL in REPOSITORY),
#   PORT_BASE (50090), OUT (var/compare-ort-<time>), IMPORT (the hapi-import
#   binary for the round trip, default $BIN/model/hapi-import; skipped if absent).
# Needs: the build targets hapi-server hapi-client hapi-bench-ort-reference
#   (hapi-import for the round trip), node and npm (the npm registry, once),
#   /usr/bin/python3 with python3-torch and python3-onnx.
set -euo pipefail
cd "$(dirname "$0")/.."
BIN=${BIN:-build}
ROUNDS=${ROUNDS:-3}
SAMPLES=${SAMPLES:-2000}
COUNT=${COUNT:-2000}
MODEL=${MODEL:-fmnist-resnet}
REPOSITORY=${REPOSITORY:-repository}
VARIANT_DIR=${VARIANT_DIR:-}
PORT_BASE=${PORT_BASE:-50090}
OUT=${OUT:-var/compare-ort-$(date +%Y%m%d-%H%M%S)}
HAPI_PORT=$((PORT_BASE + 1)); ORT_PORT=$((PORT_BASE + 2)); METRICS_PORT=$((PORT_BASE + 11))
ONNX=var/ort/$MODEL.onnx
mkdir -p "$OUT" var/ort

for b in server/hapi-server client/hapi-client bench/hapi-bench-ort-reference; do
  [[ -x $BIN/$b ]] || { echo "missing $BIN/$b: BUILD_DIR=$BIN bash scripts/build.sh hapi-server hapi-client hapi-bench-ort-reference" >&2; exit 1; }
done

pid=""
trap '[[ -n $pid ]] && kill $pid 2>/dev/null; wait 2>/dev/null || true' EXIT

# --- ONNX Runtime and the exported model -----------------------------------
if [[ ! -d bench/ort/node_modules/onnxruntime-node ]]; then
  # The CPU build of ORT ships inside the package; skip its optional CUDA download.
  (cd bench/ort && ONNXRUNTIME_NODE_INSTALL=skip npm ci --no-audit --no-fund)
fi
if [[ ! -f $ONNX || ! -f $ONNX.input.bin ]]; then
  /usr/bin/python3 bench/ort/export.py --model_dir="$REPOSITORY/models/$MODEL" --out="$ONNX"
fi

# --- The scratch repository: the model, a device profile, a full-network
# variant, and the variant given. hapi-server loads a variant's device profile:
# VARIANT_DIR's own (from its repository), else DEVICE_DIR, else the first
# profile of MODEL in REPOSITORY.
SCRATCH=$OUT/repository
mkdir -p "$SCRATCH/models" "$SCRATCH/devices" "$SCRATCH/variants/ort-compare-full"
ln -sfn "$(realpath "$REPOSITORY/models/$MODEL")" "$SCRATCH/models/$MODEL"
device_of() { sed -n 's/^device: "\(.*\)"$/\1/p' "$1/variant.pbtxt"; }
DEVICE_DIR=${DEVICE_DIR:-}
if [[ -z $DEVICE_DIR && -n $VARIANT_DIR ]]; then
  DEVICE_DIR=$(dirname "$(dirname "$(realpath "$VARIANT_DIR")")")/devices/$(device_of "$VARIANT_DIR")
fi
if [[ -z $DEVICE_DIR ]]; then
  for p in "$REPOSITORY"/devices/*/profile.pbtxt; do
    if [[ -f $p ]] && grep -q "^model: \"$MODEL\"" "$p"; then DEVICE_DIR=$(dirname "$p"); break; fi
  done
fi
if [[ -z $DEVICE_DIR || ! -f $DEVICE_DIR/profile.pbtxt ]]; then
  echo "no device profile of $MODEL: set DEVICE_DIR or VARIANT_DIR, or run hapi-profile (scripts/main.sh does)" >&2
  exit 1
fi
DEVICE=$(basename "$DEVICE_DIR")
cp -r "$DEVICE_DIR" "$SCRATCH/devices/$DEVICE"
# hapi-server needs a variant; --full_network strips its exits anyway.
cat > "$SCRATCH/variants/ort-compare-full/variant.pbtxt" <<EOF
id: "ort-compare-full"
model: "$MODEL"
device: "$DEVICE"
exit_policy: "max_softmax"
EOF
EARLY=""
if [[ -n $VARIANT_DIR ]]; then
  EARLY=$(basename "$VARIANT_DIR")
  cp -r "$VARIANT_DIR" "$SCRATCH/variants/$EARLY"
fi

# --- Check: PyTorch vs ORT logits, the project's executor vs ORT, and the
# ONNX file imported back into the project (hapi-import) vs ORT.
echo "== checks on the test split" >&2
"$BIN/bench/hapi-bench-ort-reference" --repository="$SCRATCH" --model="$MODEL" \
  --probs_out="$OUT/hapi-probs.bin" 2>>"$OUT/checks.log"
node bench/ort/ort_bench.js check "$ONNX" --hapi_probs="$OUT/hapi-probs.bin" | tee "$OUT/check.json"
# Not fatal: the timing below does not depend on it.
IMPORT=${IMPORT:-$BIN/model/hapi-import}
if [[ -x $IMPORT ]] &&
   "$IMPORT" --onnx="$ONNX" --out="$SCRATCH/models/$MODEL-onnx" >>"$OUT/checks.log" 2>&1 &&
   "$BIN/bench/hapi-bench-ort-reference" --repository="$SCRATCH" --model="$MODEL-onnx" \
     --probs_out="$OUT/imported-probs.bin" 2>>"$OUT/checks.log"; then
  node bench/ort/ort_bench.js check "$ONNX" --hapi_probs="$OUT/imported-probs.bin" \
    | tee "$OUT/check-imported.json" || true
else
  echo "hapi-import round trip skipped or failed (see $OUT/checks.log)" >&2
fi

# --- Timing ----------------------------------------------------------------
wait_ready() {  # wait_ready <port> <log> <client command>: health for hapi-server (SERVING
  # once the variant is loaded and warm), status for the ORT server (ready once it listens)
  for _ in $(seq 1 150); do
    "$BIN/client/hapi-client" --target="127.0.0.1:$1" "$3" >/dev/null 2>&1 && return 0
    kill -0 "$pid" 2>/dev/null || break
    sleep 0.2
  done
  echo "server on $1 did not start; see $2" >&2; exit 1
}
stop() { kill "$pid"; wait "$pid" 2>/dev/null || true; pid=""; }
client_bench() {  # client_bench <port> <name>
  "$BIN/client/hapi-client" --target="127.0.0.1:$1" bench --count="$COUNT" --concurrency=1 \
    --no_progress --json="$OUT/$2.json" > "$OUT/$2.txt"
}
serve_hapi() {  # serve_hapi <name> <variant> [flags...]
  local name=$1 variant=$2; shift 2
  "$BIN/server/hapi-server" --repository="$SCRATCH" --variant="$variant" \
    --listen="127.0.0.1:$HAPI_PORT" --metrics_address="127.0.0.1:$METRICS_PORT" \
    --intra_op_threads=1 "$@" > "$OUT/$name.log" 2>&1 &
  pid=$!
  wait_ready "$HAPI_PORT" "$OUT/$name.log" health
}
serve_ort() {  # serve_ort <name>
  node bench/ort/server.js "$ONNX" --listen="127.0.0.1:$ORT_PORT" > "$OUT/$1.log" 2>&1 &
  pid=$!
  wait_ready "$ORT_PORT" "$OUT/$1.log" status
}

# With a variant, the executor also times its design (exits, thresholds).
DESIGN=()
if [[ -n $EARLY ]]; then
  list() { sed -n "s/^$1: \(.*\)$/\1/p" "$SCRATCH/variants/$EARLY/variant.pbtxt" | paste -sd, -; }
  DESIGN=(--exits="$(list enabled_exits)" --thresholds="$(list thresholds)")
fi
executor() {
  "$BIN/bench/hapi-bench-ort-reference" --repository="$SCRATCH" --model="$MODEL" --time \
    --samples="$SAMPLES" "${DESIGN[@]}" > "$OUT/executor-r$1.json" 2>>"$OUT/checks.log"
}
session() { node bench/ort/ort_bench.js time "$ONNX" --samples="$SAMPLES" > "$OUT/ort-run-r$1.json"; }
grpc_hapi() { serve_hapi "hapi-full-r$1" ort-compare-full --full_network; client_bench "$HAPI_PORT" "hapi-full-r$1"; stop; }
grpc_ort() { serve_ort "ort-grpc-r$1"; client_bench "$ORT_PORT" "ort-grpc-r$1"; stop; }
grpc_early() { serve_hapi "hapi-early-r$1" "$EARLY"; client_bench "$HAPI_PORT" "hapi-early-r$1"; stop; }

for r in $(seq 1 "$ROUNDS"); do
  echo "== round $r/$ROUNDS" >&2
  # Odd rounds start with the project, even rounds with ORT: a drift in the
  # machine's load does not always favour the same side.
  if (( r % 2 )); then
    executor "$r"; session "$r"; grpc_hapi "$r"; grpc_ort "$r"
  else
    session "$r"; executor "$r"; grpc_ort "$r"; grpc_hapi "$r"
  fi
  [[ -n $EARLY ]] && grpc_early "$r"
done

/usr/bin/python3 - "$OUT" "$ROUNDS" "$EARLY" "$SAMPLES" "$COUNT" <<'PY'
import json, statistics, sys
out, rounds, early, samples, count = sys.argv[1], int(sys.argv[2]), sys.argv[3], sys.argv[4], sys.argv[5]
R = range(1, rounds + 1)
def load(name, r):
    return json.load(open(f"{out}/{name}-r{r}.json"))
def exe(r):  # the full-network line of the executor's output
    for line in open(f"{out}/executor-r{r}.json"):
        j = json.loads(line)
        if j.get("design") == "full":
            return j
def fmt(v): return "/".join(f"{x:.3f}" for x in v)
rows = []
def row(what, vals, base=None):
    med = statistics.median(vals)
    rows.append((what, vals, med))
ex_mean = [exe(r)["mean_ms"] for r in R]; ex_p50 = [exe(r)["p50_ms"] for r in R]
ort_mean = [load("ort-run", r)["mean_ms"] for r in R]; ort_p50 = [load("ort-run", r)["p50_ms"] for r in R]
g = lambda n, k, s="latency_ms": [load(n, r)[s][k] for r in R]
hf_mean, hf_p50, hf_srv = g("hapi-full", "mean"), g("hapi-full", "p50"), g("hapi-full", "mean", "server_ms")
of_mean, of_p50, of_srv = g("ort-grpc", "mean"), g("ort-grpc", "p50"), g("ort-grpc", "mean", "server_ms")
check = json.load(open(f"{out}/check.json"))
print(f"Checks (10,000 test images): ORT vs PyTorch max |logit diff| {check['ort_vs_torch_max_abs_logit_diff']:.2e}, "
      f"top-1 agreement {100*check['ort_vs_torch_top1_agreement']:.2f}%; ORT vs hapi executor max |prob diff| "
      f"{check['ort_vs_hapi_max_abs_prob_diff']:.2e}, top-1 agreement {100*check['ort_vs_hapi_top1_agreement']:.2f}%; "
      f"accuracy ORT {100*check['ort_accuracy']:.2f}%, hapi {100*check['hapi_accuracy']:.2f}%")
try:
    ci = json.load(open(f"{out}/check-imported.json"))
    print(f"hapi-import round trip: imported graph vs ORT max |prob diff| {ci['ort_vs_hapi_max_abs_prob_diff']:.2e}, "
          f"top-1 agreement {100*ci['ort_vs_hapi_top1_agreement']:.2f}%")
except FileNotFoundError:
    pass
print()
print(f"{rounds} alternating rounds; per round: {samples} test images through the executor and ORT, "
      f"{count} gRPC requests per server (batch 1, 1 client, 1 intra-op thread). Values per round r1/r2/..., then the median.\n")
print("| measurement | hapi (per round) | ORT (per round) | hapi median | ORT median | ORT/hapi per round | median ratio |")
print("|---|---|---|---|---|---|---|")
def line(what, h, o):
    ratios = [b / a for a, b in zip(h, o)]
    print(f"| {what} | {fmt(h)} | {fmt(o)} | {statistics.median(h):.3f} | {statistics.median(o):.3f} | "
          f"{'/'.join(f'{x:.2f}' for x in ratios)} | {statistics.median(ratios):.2f}x |")
line("executor vs session.run, mean ms", ex_mean, ort_mean)
line("executor vs session.run, p50 ms", ex_p50, ort_p50)
line("gRPC end to end (client), mean ms", hf_mean, of_mean)
line("gRPC end to end (client), p50 ms", hf_p50, of_p50)
line("gRPC, server-side mean ms", hf_srv, of_srv)
line("gRPC, server-side p50 ms", g("hapi-full", "p50", "server_ms"), g("ort-grpc", "p50", "server_ms"))
print("\n(ratio > 1: hapi faster. The issue's bar: >= 1.5x executor, >= 1.3x end to end.)")
if early:
    def exe_early(r):
        for l in open(f"{out}/executor-r{r}.json"):
            j = json.loads(l)
            if j.get("design") != "full":
                return j
    xm = [exe_early(r)["mean_ms"] for r in R]
    print(f"\nexecutor, early-exit design of {early}: mean {fmt(xm)} ms (median {statistics.median(xm):.3f}); "
          f"vs ORT session.run (full network) per round {'/'.join(f'{o/e:.2f}' for e, o in zip(xm, ort_mean))}x")
    em, ep = g("hapi-early", "mean"), g("hapi-early", "p50")
    acc = [load("hapi-early", r)["accuracy"] for r in R]
    print(f"\nhapi-server, early-exit variant {early}: client mean {fmt(em)} ms (median {statistics.median(em):.3f}), "
          f"p50 {fmt(ep)}; vs ORT full network per round {'/'.join(f'{o/e:.2f}' for e, o in zip(em, of_mean))}x; "
          f"accuracy {100*statistics.median(acc):.2f}%")
spread = lambda v: (max(v) - min(v)) / statistics.median(v)
print(f"\nNoise: spread (max-min)/median of the means: executor {100*spread(ex_mean):.0f}%, ORT run {100*spread(ort_mean):.0f}%, "
      f"hapi gRPC {100*spread(hf_mean):.0f}%, ORT gRPC {100*spread(of_mean):.0f}%")
print(f"raw results in {out}/")
PY
