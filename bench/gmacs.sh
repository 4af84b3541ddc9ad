#!/usr/bin/env bash
# GMAC/s on the imported graphs (docs/performance.md): hapi-bench-gmacs over
# the native residual network, the same network exported to ONNX and
# imported, and the foreign architectures, at batch 1, one intra-op thread,
# direct path vs LibTorch in alternating rounds. Builds nothing.
#
# Usage: bench/gmacs.sh [extra hapi-bench-gmacs flags]
# Environment: BIN (build tree, default build), REPO (repository), MODEL
#   (fmnist-resnet), THREADS (1), ROUNDS (3), MEASURE_SECONDS (2, per
#   measurement), OUT (var/gmacs-<time>).
# Models, each if present: $REPO/models/$MODEL, var/direct/repo/models/fmnist-onnx,
#   var/foreign/repository/models/* (imported ResNet-18, MobileNetV2, VGG-style).
# Needs: the build target hapi-bench-gmacs.
set -euo pipefail
cd "$(dirname "$0")/.."
BIN=${BIN:-build}
REPO=${REPO:-repository}
MODEL=${MODEL:-fmnist-resnet}
THREADS=${THREADS:-1}
ROUNDS=${ROUNDS:-3}
SECONDS_PER=${MEASURE_SECONDS:-2}
OUT=${OUT:-var/gmacs-$(date +%Y%m%d-%H%M%S)}
EXE=$BIN/bench/hapi-bench-gmacs
[[ -x $EXE ]] || { echo "missing $EXE: BUILD_DIR=$BIN bash scripts/build.sh hapi-bench-gmacs" >&2; exit 1; }

models=()
[[ -f $REPO/models/$MODEL/manifest.pbtxt ]] && models+=("$REPO/models/$MODEL")
[[ -f var/direct/repo/models/fmnist-onnx/manifest.pbtxt ]] && models+=(var/direct/repo/models/fmnist-onnx)
for d in var/foreign/repository/models/*/; do
  [[ -f $d/manifest.pbtxt ]] && models+=("${d%/}")
done
((${#models[@]})) || { echo "no model directories found" >&2; exit 1; }

mkdir -p "$OUT"
list=$(IFS=,; echo "${models[*]}")
{
  echo "date: $(date -u +%Y-%m-%dT%H:%M:%SZ)"
  echo "commit: $(git rev-parse --short HEAD 2>/dev/null || echo unknown)"
  echo "cpu: $(grep -m1 'model name' /proc/cpuinfo | cut -d: -f2-)"
  echo "load: $(cut -d' ' -f1-3 /proc/loadavg)"
  echo "command: $EXE --models=$list --threads=$THREADS --rounds=$ROUNDS --seconds=$SECONDS_PER $*"
} > "$OUT/run.txt"
cat "$OUT/run.txt"
"$EXE" --models="$list" --threads="$THREADS" --rounds="$ROUNDS" --seconds="$SECONDS_PER" "$@" \
  > "$OUT/out.txt" 2> "$OUT/log.txt"
grep '^{' "$OUT/out.txt" > "$OUT/results.jsonl"
grep -v '^{' "$OUT/out.txt" > "$OUT/table.md"
echo "load after: $(cut -d' ' -f1-3 /proc/loadavg)" >> "$OUT/run.txt"
cat "$OUT/table.md"
# A model whose lowering failed says so when it loads (model/torch_model.cc,
# model/imported_model.cc); the residual network has no accessor to ask.
if grep -q "runs on LibTorch" "$OUT/log.txt"; then
  echo; echo "direct path NOT in use for:"; grep "runs on LibTorch" "$OUT/log.txt"
else
  echo; echo "no model logged 'runs on LibTorch' (lowering succeeded for every direct=true load)"
fi
echo
echo "written to $OUT (run.txt, results.jsonl, table.md, log.txt)"
