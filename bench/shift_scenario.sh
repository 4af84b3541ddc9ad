#!/usr/bin/env bash
# The live accuracy monitor and closed loop against a distribution shift
# (docs/live-monitor.md, "Shift scenario").
#
#   scenario (default): hapi-optimizer and hapi-server (--loop=repair
#     --optimizer=...) on free loopback ports over a scratch copy of the
#     repository; CLEAN test images, then SHIFTED shifted ones through
#     `hapi-client bench --timeline`; a plot (bench/plot_shift.gp) and the
#     requests until detection, until the repaired variant serves, and the live
#     disagreement before and after.
#   cost: the monitor's throughput cost: ROUNDS rounds, each a bench at
#     --concurrency=8 against a server with --monitor_fraction=0 and one with
#     the server's default, in alternating order; medians and their ratio.
#
# Usage: bash bench/shift_scenario.sh [scenario|cost]
# Needs a built tree (hapi-optimizer, hapi-server, hapi-client), the model in
# $REPOSITORY/models/$MODEL (scripts/main.sh trains it when absent), python3 and,
# for the plot, gnuplot. Everything it writes is under $OUT.
set -euo pipefail
cd "$(dirname "$0")/.."
MODE=${1:-scenario}
case $MODE in scenario | cost) ;; *)
  echo "usage: bash bench/shift_scenario.sh [scenario|cost]" >&2
  exit 2
  ;;
esac

# --- knobs ----------------------------------------------------------------
BIN=${BIN:-build}
SERVER=${SERVER:-$BIN/server/hapi-server}
OPTIMIZER=${OPTIMIZER:-$BIN/optimizer/hapi-optimizer}
CLIENT=${CLIENT:-$BIN/client/hapi-client}
PROFILER=${PROFILER:-$BIN/model/hapi-profile}
REPOSITORY=${REPOSITORY:-repository} # read only: the run works on a copy of the model
MODEL=${MODEL:-fmnist-resnet}
# A device profile file, or "measure" (hapi-profile, about a minute).
PROFILE=${PROFILE:-docs/this-machine.profile.pbtxt}
SLA_ARGS=${SLA_ARGS:---objective=min-latency --max-drop=0.5 --statistic=mean}
DATA_DIR=${DATA_DIR:-} # empty: hapi-client's default Fashion-MNIST directory
# The shift: none|noise|contrast|blur|rotate and its level (noise sigma of the
# full scale, contrast factor, blur radius in pixels, degrees).
SHIFT=${SHIFT:-noise}
LEVEL=${LEVEL:-0.2}
BLUR=${BLUR:-gaussian}
CLEAN=${CLEAN:-5000}     # requests before the shift
SHIFTED=${SHIFTED:-20000} # requests after it
# Open loop at RATE requests/s, so that requests map to time and the monitor's
# CPU share is the same throughout; RATE=0: closed loop at CONCURRENCY.
RATE=${RATE:-500}
CONCURRENCY=${CONCURRENCY:-4}
TIMELINE_EVERY=${TIMELINE_EVERY:-100}
# The server's monitor and loop. The defaults sample more than the server's
# own (0.02 of 2000) so that a run of a minute fills windows.
MONITOR_FRACTION=${MONITOR_FRACTION:-0.1}
MONITOR_WINDOW=${MONITOR_WINDOW:-500}
MONITOR_CONFIDENCE=${MONITOR_CONFIDENCE:-0.9}
MONITOR_CPU_SHARE=${MONITOR_CPU_SHARE:-0.1}
DRIFT_WINDOW=${DRIFT_WINDOW:-1000}
DRIFT_ALPHA=${DRIFT_ALPHA:-0.001}
LOOP=${LOOP:-repair}
LOOP_MIN_SAMPLES=${LOOP_MIN_SAMPLES:-300}
LOOP_COOLDOWN_S=${LOOP_COOLDOWN_S:-20}
SERVER_ARGS=${SERVER_ARGS:-} # more hapi-server flags, both modes
# cost mode
ROUNDS=${ROUNDS:-3}
COST_DURATION=${COST_DURATION:-10}
COST_CONCURRENCY=${COST_CONCURRENCY:-8}
PLOT_FORMAT=${PLOT_FORMAT:-svg} # svg or png
OUT=${OUT:-var/shift-$MODE-$(date +%Y%m%d-%H%M%S)}

die() {
  echo "shift_scenario: $*" >&2
  exit 1
}
note() { printf '\n== %s\n' "$*"; }

for b in "$SERVER" "$OPTIMIZER" "$CLIENT"; do
  [[ -x $b ]] || die "$b is not built (bash scripts/build.sh hapi-optimizer hapi-server hapi-client, or set BIN)"
done
command -v python3 >/dev/null || die "needs python3"
[[ -f $REPOSITORY/models/$MODEL/manifest.pbtxt ]] ||
  die "no model at $REPOSITORY/models/$MODEL (scripts/main.sh trains it; or set REPOSITORY/MODEL)"
if [[ $PROFILE != measure && ! -f $PROFILE ]]; then
  die "no device profile $PROFILE (set PROFILE to a file, or PROFILE=measure)"
fi
if [[ $MODE == scenario ]] && ! command -v gnuplot >/dev/null; then
  echo "shift_scenario: gnuplot not found: no plot (apt-get install gnuplot-nox)" >&2
fi

mkdir -p "$OUT"
OUT=$(cd "$OUT" && pwd)
REPO=$OUT/repository
CLIENT_ARGS=()
[[ -n $DATA_DIR ]] && CLIENT_ARGS+=(--data_dir="$DATA_DIR")

pids=()
cleanup() {
  for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; done
  for p in "${pids[@]}"; do wait "$p" 2>/dev/null || true; done
}
trap cleanup EXIT

free_port() {
  python3 -c 'import socket; s = socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])'
}

# wait_ready <pid> <log> <what> <command...>: until the command succeeds; dies
# with the log's tail when the process exits first or after 20 s.
wait_ready() {
  local pid=$1 log=$2 what=$3
  shift 3
  for _ in $(seq 1 100); do
    if ! kill -0 "$pid" 2>/dev/null; then
      if grep -q "Unknown command line flag" "$log"; then
        die "$what refuses a flag: $(grep -m1 "Unknown command line flag" "$log") -- this script needs a hapi-server with the live monitor (docs/live-monitor.md); log: $log"
      fi
      echo "--- $log" >&2
      tail -20 "$log" >&2
      die "$what exited during start-up (log above: $log)"
    fi
    if "$@" >/dev/null 2>&1; then return 0; fi
    sleep 0.2
  done
  die "$what did not come up in 20 s; see $log"
}

# The flags this script gives hapi-server must all be known to it: said
# clearly here rather than as a server that will not start.
check_server_flags() {
  local help missing=()
  help=$("$SERVER" --helpfull 2>&1 || true)
  for flag in "$@"; do
    grep -q -- "--$flag " <<<"$help" || missing+=("--$flag")
  done
  if ((${#missing[@]} > 0)); then
    die "$SERVER does not know ${missing[*]}: this script needs a hapi-server with the live monitor, drift detector and loop (docs/live-monitor.md)"
  fi
}

OPT_PORT=""
# The optimizer over a scratch repository holding a copy of the model, the
# device registered, and one variant for SLA_ARGS: sets VARIANT.
prepare() {
  note "scratch repository $REPO (a copy of $REPOSITORY/models/$MODEL)"
  mkdir -p "$REPO/models"
  cp -r "$REPOSITORY/models/$MODEL" "$REPO/models/"
  local profile=$PROFILE
  if [[ $PROFILE == measure ]]; then
    [[ -x $PROFILER ]] || die "$PROFILER is not built (PROFILE=measure needs it)"
    "$PROFILER" --repository="$REPO" --model="$MODEL" --device=this-machine --threads=1 \
      --out="$OUT/device.profile.pbtxt" --description="measured by bench/shift_scenario.sh"
    profile=$OUT/device.profile.pbtxt
  fi
  DEVICE=$(awk -F'"' '/^name:/{print $2; exit}' "$profile")
  [[ -n $DEVICE ]] || die "$profile names no device"

  OPT_PORT=$(free_port)
  note "hapi-optimizer on 127.0.0.1:$OPT_PORT"
  "$OPTIMIZER" --repository="$REPO" --listen="127.0.0.1:$OPT_PORT" --metrics_address= \
    >"$OUT/optimizer.log" 2>&1 &
  local pid=$!
  pids+=("$pid")
  OPT=(--target="127.0.0.1:$OPT_PORT")
  wait_ready "$pid" "$OUT/optimizer.log" hapi-optimizer "$CLIENT" "${OPT[@]}" devices list
  "$CLIENT" "${OPT[@]}" devices register --overwrite "$profile"

  note "variant of $MODEL on $DEVICE for: $SLA_ARGS"
  # shellcheck disable=SC2086
  "$CLIENT" "${OPT[@]}" variants create --model="$MODEL" --device="$DEVICE" $SLA_ARGS --watch \
    | tee "$OUT/job.txt"
  VARIANT=$(awk '/^variant /{print $2}' "$OUT/job.txt" | tail -1)
  [[ -n $VARIANT ]] || die "the optimizer made no variant (see $OUT/job.txt, $OUT/optimizer.log)"
}

SRV_PID=""
SRV_PORT=""
# serve <name> [hapi-server flags...]: on a free port, until ready.
serve() {
  local name=$1
  shift
  SRV_PORT=$(free_port)
  # shellcheck disable=SC2086
  "$SERVER" --repository="$REPO" --variant="$VARIANT" --listen="127.0.0.1:$SRV_PORT" \
    --metrics_address= --intra_op_threads=1 "$@" $SERVER_ARGS >"$OUT/server-$name.log" 2>&1 &
  SRV_PID=$!
  pids+=("$SRV_PID")
  # health: SERVING only once the variant is loaded and warm (status answers before).
  wait_ready "$SRV_PID" "$OUT/server-$name.log" hapi-server \
    "$CLIENT" --target="127.0.0.1:$SRV_PORT" health
}
stop_server() {
  kill "$SRV_PID" 2>/dev/null || true
  wait "$SRV_PID" 2>/dev/null || true
  SRV_PID=""
}

# --- scenario -------------------------------------------------------------
scenario() {
  check_server_flags monitor_fraction monitor_window monitor_confidence monitor_cpu_share \
    drift_window drift_alpha loop optimizer loop_min_samples loop_cooldown_s
  prepare
  note "hapi-server with $VARIANT, --loop=$LOOP"
  serve scenario --monitor_fraction="$MONITOR_FRACTION" --monitor_window="$MONITOR_WINDOW" \
    --monitor_confidence="$MONITOR_CONFIDENCE" --monitor_cpu_share="$MONITOR_CPU_SHARE" \
    --drift_window="$DRIFT_WINDOW" --drift_alpha="$DRIFT_ALPHA" --loop="$LOOP" \
    --optimizer="127.0.0.1:$OPT_PORT" --loop_min_samples="$LOOP_MIN_SAMPLES" \
    --loop_cooldown_s="$LOOP_COOLDOWN_S"
  local srv=(--target="127.0.0.1:$SRV_PORT")
  "$CLIENT" "${srv[@]}" status >"$OUT/status-before.txt"
  grep -q "^live monitor" "$OUT/status-before.txt" ||
    die "the server reports no live monitor with --monitor_fraction=$MONITOR_FRACTION (see $OUT/status-before.txt)"

  local load=(--concurrency="$CONCURRENCY")
  if [[ $RATE != 0 ]]; then load=(--rate="$RATE"); fi
  note "$CLEAN clean then $SHIFTED shifted requests ($SHIFT $LEVEL), ${load[*]}"
  "$CLIENT" "${srv[@]}" "${CLIENT_ARGS[@]}" bench --count=$((CLEAN + SHIFTED)) "${load[@]}" \
    --shift="$SHIFT" --shift_level="$LEVEL" --blur="$BLUR" --shift_after="$CLEAN" \
    --timeline="$OUT/timeline.csv" --timeline_every="$TIMELINE_EVERY" \
    --json="$OUT/bench.json" --no_progress | tee "$OUT/bench.txt"
  "$CLIENT" "${srv[@]}" status >"$OUT/status-after.txt"
  sed -n '/^live monitor/,$p' "$OUT/status-after.txt"

  note "summary"
  # The bound counts once its window holds what the loop needs to act (or is
  # full): before that it is wide, and above a tight limit by construction.
  local min_window=$((LOOP_MIN_SAMPLES < MONITOR_WINDOW ? LOOP_MIN_SAMPLES : MONITOR_WINDOW))
  python3 - "$OUT" "$CLEAN" "$min_window" <<'PY' | tee "$OUT/summary.txt"
import csv, json, sys
out, clean, min_window = sys.argv[1], int(sys.argv[2]), int(sys.argv[3])
rows = list(csv.DictReader(open(f"{out}/timeline.csv")))
if not rows:
    sys.exit("timeline.csv has no rows")
def num(row, key):
    v = row[key]
    return float(v) if v != "" else None
limit = next((num(r, "max_disagreement") for r in rows if r["max_disagreement"] != ""), None)
before = [r for r in rows if r["shifted"] == "0"]
after = [r for r in rows if r["shifted"] == "1"]
start_variant = rows[0]["variant"]
shift_variant = before[-1]["variant"] if before else start_variant
def first(rs, test):
    return next((r for r in rs if test(r)), None)
breach = lambda r: (limit is not None and limit >= 0 and num(r, "disagreement_upper") is not None
                    and int(r["window_samples"] or 0) >= min_window
                    and num(r, "disagreement_upper") > limit)
drift = lambda r: r["drift_detected"] == "1"
det_drift, det_bound = first(after, drift), first(after, breach)
# A bound already above the limit at the shift detects nothing.
breached_at_shift = bool(before) and breach(before[-1])
detected = first(after, lambda r: drift(r) or (breach(r) and not breached_at_shift))
swap = first(after, lambda r: r["variant"] not in ("", shift_variant))
false_alarms = sum(1 for r in before if drift(r) or breach(r))  # polls that flagged either
swaps, last = [], start_variant
for r in rows:
    if r["variant"] and r["variant"] != last:
        swaps.append((int(r["requests_sent"]), last, r["variant"]))
        last = r["variant"]
def after_shift(r):
    return "never" if r is None else f"{int(r['requests_sent']) - clean} requests after the shift"
def rate(r):
    if r is None or r["disagreement_rate"] == "":
        return "-"
    return (f"{100 * num(r, 'disagreement_rate'):.2f}% (upper bound {100 * num(r, 'disagreement_upper'):.2f}%, "
            f"{r['window_samples']} samples, variant {r['variant']})")
limit_text = "none (the SLA bounds no accuracy)" if limit is None or limit < 0 else f"{100 * limit:.2f}%"
print(f"variant at the start      {start_variant}; disagreement limit {limit_text}")
print(f"shift                     after {clean} requests")
print(f"false alarms before it    {false_alarms} of {len(before)} polls")
print(f"detection                 {after_shift(detected)} (drift test: {after_shift(det_drift)}; "
      f"bound above the limit with {min_window}+ samples: "
      + ("already at the shift" if breached_at_shift else after_shift(det_bound)) + ")")
print(f"repaired variant serves   {after_shift(swap)}" + (f" ({swap['variant']})" if swap else ""))
for x, a, b in swaps:
    print(f"  swap at {x} requests: {a} -> {b}")
unrepaired = [r for r in after if swap is None or int(r["requests_sent"]) < int(swap["requests_sent"])]
print(f"live disagreement, clean  {rate(before[-1] if before else None)}")
print(f"  shifted, before repair  {rate(unrepaired[-1] if unrepaired else None)}")
print(f"  at the end              {rate(after[-1] if after else None)}")
bench = json.load(open(f"{out}/bench.json"))
if "shift" in bench:
    s = bench["shift"]
    acc = lambda v: "-" if v is None else f"{100 * v:.2f}%"
    print(f"client accuracy           clean {acc(s['clean_accuracy'])}, shifted {acc(s['shifted_accuracy'])}")
with open(f"{out}/events.txt", "w") as f:
    f.write(f"swaps='{' '.join(str(x) for x, _, _ in swaps)}'\n")
    f.write(f"detect={int(detected['requests_sent']) if detected else -1}\n")
    f.write(f"sla={limit if limit is not None else -1}\n")
PY

  if command -v gnuplot >/dev/null; then
    local sla=-1 detect=-1 swaps=""
    # shellcheck disable=SC1091
    source "$OUT/events.txt"
    local plot="$OUT/shift.$PLOT_FORMAT"
    gnuplot -e "timeline='$OUT/timeline.csv'; out='$plot'; format='$PLOT_FORMAT'; shift_at=$CLEAN; sla=$sla; detect=$detect; swaps='$swaps'; title_text='$SHIFT $LEVEL after $CLEAN requests'" \
      bench/plot_shift.gp
    echo "plot                      $plot"
  fi
  echo "everything                $OUT/"
}

# --- cost -----------------------------------------------------------------
cost() {
  check_server_flags monitor_fraction
  prepare
  local order
  for round in $(seq 1 "$ROUNDS"); do
    # Alternating order, so that a drift of the machine's speed during the
    # run does not favour one setting.
    if ((round % 2 == 1)); then order="off on"; else order="on off"; fi
    for setting in $order; do
      note "round $round: monitor $setting"
      if [[ $setting == off ]]; then
        serve "cost-$round-$setting" --monitor_fraction=0
      else
        serve "cost-$round-$setting"
      fi
      "$CLIENT" --target="127.0.0.1:$SRV_PORT" status >"$OUT/status-$round-$setting.txt"
      "$CLIENT" --target="127.0.0.1:$SRV_PORT" "${CLIENT_ARGS[@]}" bench \
        --concurrency="$COST_CONCURRENCY" --duration="$COST_DURATION" --no_progress \
        --json="$OUT/cost-$round-$setting.json" | tee "$OUT/cost-$round-$setting.txt"
      stop_server
    done
  done
  grep -q "^live monitor" "$OUT/status-1-on.txt" ||
    echo "shift_scenario: warning: the default server reports no live monitor (is it on by default?)" >&2

  note "summary"
  python3 - "$OUT" "$ROUNDS" <<'PY' | tee "$OUT/summary.txt"
import json, re, statistics, sys
out, rounds = sys.argv[1], int(sys.argv[2])
runs = {s: [json.load(open(f"{out}/cost-{r}-{s}.json")) for r in range(1, rounds + 1)] for s in ("off", "on")}
fraction = re.search(r"fraction ([0-9.eE+-]+)", open(f"{out}/status-1-on.txt").read())
print("| monitor | rounds | throughput req/s (median) | each round | p50 ms | p99 ms |")
print("|---|---|---|---|---|---|")
med = {}
for s, js in runs.items():
    tp = [j["throughput_rps"] for j in js]
    med[s] = statistics.median(tp)
    p50 = statistics.median(j["latency_ms"]["p50"] for j in js)
    p99 = statistics.median(j["latency_ms"]["p99"] for j in js)
    name = "off (--monitor_fraction=0)" if s == "off" else f"default (fraction {fraction.group(1) if fraction else '?'})"
    print(f"| {name} | {len(js)} | {med[s]:.1f} | {', '.join(f'{t:.0f}' for t in tp)} | {p50:.3f} | {p99:.3f} |")
print(f"\nthroughput with the monitor / without: {med['on'] / med['off']:.3f} "
      f"(cost {100 * (1 - med['on'] / med['off']):+.1f}% of throughput; medians of {rounds} rounds)")
PY
  echo "everything in $OUT/"
}

"$MODE"
