#!/usr/bin/env bash
# The main job, from a fresh Debian 12 machine to a served, measured
# early-exit variant:
#   install -> build -> default model (trained only if absent) -> its int8
#   ranges and calibration tables (only if absent) -> profile this machine in
#   fp32 and int8 -> optimizer -> register device -> variant for the default
#   SLA (exits, thresholds and precision chosen together) -> server -> the
#   test split through the client -> report, with the speedup over the fp32
#   full network measured in the same run.
# Environment overrides: REPOSITORY, MODEL, DEVICE, SLA_ARGS, PORT_BASE, COUNT.
set -euo pipefail
cd "$(dirname "$0")/.."
REPOSITORY=${REPOSITORY:-repository}
MODEL=${MODEL:-fmnist-resnet}
DEVICE=${DEVICE:-this-machine}
# Default SLA: the fastest design at most 0.5 accuracy points below the full network.
SLA_ARGS=${SLA_ARGS:---objective=min-latency --max-drop=0.5 --statistic=mean}
PORT_BASE=${PORT_BASE:-50050}
COUNT=${COUNT:-10000}
OPT_PORT=$((PORT_BASE + 2)); SRV_PORT=$((PORT_BASE + 1))
OPT_METRICS=$((PORT_BASE + 12)); SRV_METRICS=$((PORT_BASE + 11))
RUN=var/main-$(date +%Y%m%d-%H%M%S)
BIN=build
CLIENT="$BIN/client/hapi-client"

step() { printf '\n== %s\n' "$*"; }
pids=()
cleanup() {
  for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; done
  for p in "${pids[@]}"; do wait "$p" 2>/dev/null || true; done
}
trap cleanup EXIT
wait_ready() {  # wait_ready <what> <command...>
  local what=$1; shift
  for _ in $(seq 1 100); do
    if "$@" >/dev/null 2>&1; then return 0; fi
    sleep 0.2
  done
  echo "main: $what did not come up; see $RUN/*.log" >&2
  exit 1
}

start=$(date +%s)
step "install dependencies"
bash scripts/install-deps.sh
step "build"
bash scripts/build.sh hapi-train hapi-quantize hapi-profile hapi-optimizer hapi-server hapi-client
mkdir -p "$RUN"

step "model $MODEL (trained only when the repository lacks it)"
"$BIN/model/hapi-train" --repository="$REPOSITORY" --model="$MODEL" | tee "$RUN/model-report.md"

step "int8 ranges and calibration tables of $MODEL (computed only when the model lacks them)"
if ! grep -q '^int8_validation_calibration:' "$REPOSITORY/models/$MODEL/manifest.pbtxt"; then
  "$BIN/model/hapi-quantize" --repository="$REPOSITORY" --model="$MODEL" | tee "$RUN/int8.txt"
fi

step "profile this machine as device '$DEVICE' (fp32 and int8)"
"$BIN/model/hapi-profile" --repository="$REPOSITORY" --model="$MODEL" --device="$DEVICE" \
  --threads=1 --out="$RUN/$DEVICE.profile.pbtxt" --description="measured by scripts/main.sh"

step "optimizer on 127.0.0.1:$OPT_PORT"
"$BIN/optimizer/hapi-optimizer" --repository="$REPOSITORY" --listen="127.0.0.1:$OPT_PORT" \
  --metrics_address="127.0.0.1:$OPT_METRICS" > "$RUN/optimizer.log" 2>&1 &
pids+=($!)
OPT=(--target="127.0.0.1:$OPT_PORT")
wait_ready optimizer "$CLIENT" "${OPT[@]}" devices list
"$CLIENT" "${OPT[@]}" devices register --overwrite "$RUN/$DEVICE.profile.pbtxt"

step "variant for the SLA: $SLA_ARGS"
# shellcheck disable=SC2086
"$CLIENT" "${OPT[@]}" variants create --model="$MODEL" --device="$DEVICE" $SLA_ARGS --watch \
  | tee "$RUN/job.txt"
VARIANT=$(awk '/^variant /{print $2}' "$RUN/job.txt" | tail -1)
"$CLIENT" "${OPT[@]}" variants get "$VARIANT" > "$RUN/variant.pbtxt"
cp "$REPOSITORY/variants/$VARIANT"/pareto* "$RUN/" 2>/dev/null || true

serve_and_bench() {  # serve_and_bench <name> [server flags...]
  local name=$1; shift
  "$BIN/server/hapi-server" --repository="$REPOSITORY" --variant="$VARIANT" \
    --listen="127.0.0.1:$SRV_PORT" --metrics_address="127.0.0.1:$SRV_METRICS" \
    --intra_op_threads=1 "$@" > "$RUN/server-$name.log" 2>&1 &
  local pid=$!
  pids+=($pid)
  wait_ready server "$CLIENT" --target="127.0.0.1:$SRV_PORT" status
  "$CLIENT" --target="127.0.0.1:$SRV_PORT" bench --count="$COUNT" --concurrency=1 \
    --json="$RUN/bench-$name.json" --no_progress | tee "$RUN/bench-$name.txt"
  if [[ $name == early-exit ]]; then
    curl -s "127.0.0.1:$SRV_METRICS/metrics" > "$RUN/metrics-$name.txt" || true
  fi
  kill "$pid"; wait "$pid" || true
}
step "server with variant $VARIANT: the test split, one request at a time"
serve_and_bench early-exit
step "the same server serving the fp32 full network (final exit only), for comparison"
serve_and_bench full --full_network --precision=fp32

step "report"
python3 - "$RUN" "$VARIANT" "$(( $(date +%s) - start ))" <<'PY'
import json, re, sys
run, variant, seconds = sys.argv[1], sys.argv[2], int(sys.argv[3])
ee = json.load(open(f"{run}/bench-early-exit.json"))
full = json.load(open(f"{run}/bench-full.json"))
text = open(f"{run}/variant.pbtxt").read()
exits = re.findall(r"^enabled_exits: (\d+)", text, re.M)
precision = (re.findall(r"^precision: (\w+)", text, re.M) or ["FP32"])[0].lower()
total = sum(ee["exits"].values())
dist = ", ".join(f"exit {k}: {100*v/total:.1f}%" for k, v in sorted(ee["exits"].items(), key=lambda kv: int(kv[0])))
mean_ee, mean_full = ee["latency_ms"]["mean"], full["latency_ms"]["mean"]
print(f"variant            {variant} ({precision}, enabled exits {', '.join(exits) or 'none'})")
for c in re.findall(r"^precision_candidates \{(.*?)^\}", text, re.M | re.S):
    name = (re.findall(r"precision: (\w+)", c) or ["FP32"])[0].lower()
    mean = re.findall(r"mean_ms: ([0-9.e-]+)", c)
    acc = re.findall(r"predicted_accuracy: ([0-9.e-]+)", c)
    if mean and acc:
        print(f"  {name:5} candidate  validation {100*float(acc[0]):.2f}%, predicted mean {float(mean[0]):.3f} ms")
    else:
        note = (re.findall(r'note: "(.*)"', c) or ["no design"])[0]
        print(f"  {name:5} candidate  {note}")
print(f"test accuracy      early-exit {100*ee['accuracy']:.2f}%   full network {100*full['accuracy']:.2f}%")
print(f"exit distribution  {dist}")
print(f"latency (client)   early-exit p50 {ee['latency_ms']['p50']:.3f} ms, p99 {ee['latency_ms']['p99']:.3f} ms; "
      f"full network p50 {full['latency_ms']['p50']:.3f} ms, p99 {full['latency_ms']['p99']:.3f} ms")
print(f"mean latency       early-exit {mean_ee:.3f} ms, full network {mean_full:.3f} ms (client-side): "
      f"speedup {mean_full/mean_ee:.2f}x")
print(f"front              {run}/pareto.svg (both precisions and their combined front)")
print(f"metrics            {run}/metrics-early-exit.txt (live at /metrics while serving); logs in {run}/")
print(f"main job took      {seconds} s")
PY
