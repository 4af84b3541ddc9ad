#!/usr/bin/env bash
# The main job (scripts/main.sh) for an architecture this project did not
# design, fed 3x32x32 RGB through an image folder (docs/onnx-import.md,
# "Foreign architectures"):
#   image folder -> train + export ONNX with PyTorch's reference logits
#   (cached) -> hapi-import --train_exits (exits, calibration; cached) ->
#   check the imported graph against PyTorch's logits (hapi-check-reference:
#   1,000 test images, max |diff| <= 1e-3, 100% top-1 agreement, else the job
#   fails) -> int8 ranges and calibration tables (hapi-quantize; cached with
#   the model) -> profile this machine in fp32 and int8 -> optimizer ->
#   variant for the default SLA (HAPI search, and exhaustive for the gap) ->
#   server -> the folder's test split through the client -> report.
# MODEL=default checks the project's own default model instead, re-imported
# from its ONNX export (bench/ort/export.py, run if var/ort/fmnist-resnet.onnx
# is absent): hapi-import into $WORK/repository-default, then
# hapi-check-reference against the exporter's PyTorch logits for the first
# 1,000 Fashion-MNIST test images (foreign-models.py default-reference), and
# stops there.
# MODEL=resnet18|mobilenetv2|vgg (default vgg). Uses the binaries in $BIN
# (default build/: scripts/build.sh hapi-import hapi-check-reference
# hapi-quantize hapi-profile hapi-optimizer hapi-server hapi-client) and Debian's
# python3-torch / python3-torchvision / python3-pil.
# Caching: the ONNX file is kept with its reference (<onnx>.reference.json)
# and weights (<model>.pt). A cached file without a reference gets one from
# the weights (foreign-models.py reference); without the weights either, it
# is deleted and the model retrained. The imported model is rebuilt whenever
# its model.onnx is not the cached file.
# Environment overrides: BIN, MODEL, WORK, REPOSITORY, DEVICE, SLA_ARGS, PORT_BASE,
# COUNT, TRAIN_THREADS (PyTorch training, 2), THREADS (exit training, 1), OPT_ARGS (extra hapi-optimizer
# flags, e.g. --certify_fraction=0 to select on the whole validation split,
# uncertified).
set -euo pipefail
cd "$(dirname "$0")/.."
MODEL=${MODEL:-vgg}
WORK=${WORK:-var/foreign}
REPOSITORY=${REPOSITORY:-$WORK/repository}
DEVICE=${DEVICE:-this-machine-$MODEL}
SLA_ARGS=${SLA_ARGS:---objective=min-latency --max-drop=0.5 --statistic=mean}
PORT_BASE=${PORT_BASE:-50150}
COUNT=${COUNT:-2000}
TRAIN_THREADS=${TRAIN_THREADS:-2}
THREADS=${THREADS:-1}
OPT_ARGS=${OPT_ARGS:-}
NAME=foreign-$MODEL
FOLDER=$WORK/fmnist-rgb32
ONNX=$WORK/onnx/$MODEL.onnx
OPT_PORT=$((PORT_BASE + 2)); SRV_PORT=$((PORT_BASE + 1))
OPT_METRICS=$((PORT_BASE + 12)); SRV_METRICS=$((PORT_BASE + 11))
RUN=$WORK/runs/$MODEL-$(date +%Y%m%d-%H%M%S)
BIN=${BIN:-build}
CLIENT="$BIN/client/hapi-client"
PY=/usr/bin/python3
need() {  # need <binary under $BIN>...
  for b in "$@"; do
    [[ -x $BIN/$b ]] || { echo "foreign-models: missing $BIN/$b (BUILD_DIR=$BIN bash scripts/build.sh $(basename "$b"))" >&2; exit 1; }
  done
}

step() { printf '\n== %s\n' "$*"; }

if [[ $MODEL == default ]]; then
  need model/hapi-import model/hapi-check-reference
  DEFAULT_ONNX=var/ort/fmnist-resnet.onnx
  mkdir -p "$RUN" var/ort
  step "the default model's ONNX export ($DEFAULT_ONNX, only when absent)"
  if [[ ! -f $DEFAULT_ONNX || ! -f $DEFAULT_ONNX.torch-logits.bin ]]; then
    $PY bench/ort/export.py --model_dir=repository/models/fmnist-resnet --out="$DEFAULT_ONNX"
  fi
  step "the exporter's reference logits, first 1,000 test images"
  $PY scripts/foreign-models.py default-reference --onnx "$DEFAULT_ONNX" \
    --images "$WORK/fmnist-test1k"
  step "hapi-import $DEFAULT_ONNX"
  rm -rf "$WORK/repository-default/models/fmnist-resnet-onnx"
  mkdir -p "$WORK/repository-default/models"
  "$BIN/model/hapi-import" --onnx="$DEFAULT_ONNX" \
    --out="$WORK/repository-default/models/fmnist-resnet-onnx" 2> "$RUN/import.log"
  step "the re-imported graph against the exporter's logits"
  "$BIN/model/hapi-check-reference" --model_dir="$WORK/repository-default/models/fmnist-resnet-onnx" \
    --reference="$DEFAULT_ONNX.reference.json" --json="$RUN/check-reference.json" \
    2> "$RUN/check-reference.log" | tee "$RUN/check-reference.txt"
  exit 0
fi

need model/hapi-import model/hapi-check-reference model/hapi-quantize model/hapi-profile \
  optimizer/hapi-optimizer server/hapi-server client/hapi-client

# Per model: how it is trained (a subset, one epoch; see docs/onnx-import.md)
# and which cut points become exits.
case $MODEL in
  vgg)         TRAIN_ARGS=(--epochs 1); IMPORT_ARGS=(--train_limit=10000) ;;
  mobilenetv2) TRAIN_ARGS=(--epochs 1)
               IMPORT_ARGS=(--train_limit=10000 --min_exit_spacing_macs=800000) ;;
  resnet18)    TRAIN_ARGS=(--limit 4000 --epochs 1 --max_seconds 400)
               # Its heads' cached features take ~1 MB a sample: train them on a
               # folder whose train/ is the first 3,000 images (all classes;
               # --train_limit would take the first class folders), val/ and
               # test/ the same images as the main folder's.
               EXIT_FOLDER=$WORK/fmnist-rgb32-train3k; IMPORT_ARGS=() ;;
  *) echo "foreign-models: MODEL must be resnet18, mobilenetv2, vgg or default" >&2; exit 2 ;;
esac

EXIT_FOLDER=${EXIT_FOLDER:-$FOLDER}

pids=()
cleanup() {
  for p in "${pids[@]}"; do kill "$p" 2>/dev/null || true; done
  for p in "${pids[@]}"; do wait "$p" 2>/dev/null || true; done
}
trap cleanup EXIT
wait_ready() {  # wait_ready <what> <command...>
  local what=$1; shift
  for _ in $(seq 1 150); do
    if "$@" >/dev/null 2>&1; then return 0; fi
    sleep 0.2
  done
  echo "foreign-models: $what did not come up; see $RUN/*.log" >&2
  exit 1
}

served_input_spec() { "$CLIENT" --target="127.0.0.1:$SRV_PORT" status 2>/dev/null | grep -q channels; }

start=$(date +%s)
mkdir -p "$RUN" "$WORK/onnx"
step "image folder $FOLDER (written only when absent)"
[[ -d $FOLDER ]] || $PY scripts/foreign-models.py folder --out "$FOLDER"
if [[ $EXIT_FOLDER != "$FOLDER" && ! -d $EXIT_FOLDER ]]; then
  $PY scripts/foreign-models.py folder --out "$EXIT_FOLDER" --train 3000
fi

step "train and export $MODEL (only when $ONNX is absent)"
REFERENCE=$ONNX.reference.json
WEIGHTS=$WORK/onnx/$MODEL.pt
if [[ -f $ONNX && ! -f $REFERENCE ]]; then
  if [[ -f $WEIGHTS ]]; then
    echo "$REFERENCE is missing: computing it from $WEIGHTS"
    $PY scripts/foreign-models.py reference --model "$MODEL" --folder "$FOLDER" --out "$ONNX" \
      --threads "$TRAIN_THREADS"
  else
    echo "$ONNX has neither a reference nor its weights ($WEIGHTS): retraining"
    rm -f "$ONNX"
  fi
fi
if [[ ! -f $ONNX ]]; then
  $PY scripts/foreign-models.py train --model "$MODEL" --folder "$FOLDER" --out "$ONNX" \
    --threads "$TRAIN_THREADS" "${TRAIN_ARGS[@]}" | tee "$WORK/onnx/$MODEL.train.log"
fi
cat "$ONNX.train.json"

step "import, exit heads and calibration for $NAME (only when the model is absent or not of $ONNX)"
if [[ ! -f $REPOSITORY/models/$NAME/report.md ]] ||
   ! cmp -s "$ONNX" "$REPOSITORY/models/$NAME/model.onnx"; then
  rm -rf "$REPOSITORY/models/$NAME"
  mkdir -p "$REPOSITORY/models"
  "$BIN/model/hapi-import" --onnx="$ONNX" --out="$REPOSITORY/models/$NAME" --train_exits \
    --image_folder="$EXIT_FOLDER" --threads="$THREADS" ${IMPORT_ARGS[@]+"${IMPORT_ARGS[@]}"} 2> "$RUN/import.log" \
    | tee "$RUN/model-report.md"
fi
cp "$REPOSITORY/models/$NAME/report.md" "$RUN/model-report.md"

step "the imported graph against PyTorch's logits ($REFERENCE)"
# Fails the job (set -e, pipefail) when they differ by more than 1e-3 or the
# top-1 classes disagree on any image.
"$BIN/model/hapi-check-reference" --model_dir="$REPOSITORY/models/$NAME" \
  --reference="$REFERENCE" --json="$RUN/check-reference.json" 2> "$RUN/check-reference.log" \
  | tee "$RUN/check-reference.txt"

step "int8 ranges and calibration tables of $NAME (only when the model has none)"
if ! grep -q '^int8_validation_calibration:' "$REPOSITORY/models/$NAME/manifest.pbtxt"; then
  "$BIN/model/hapi-quantize" --repository="$REPOSITORY" --model="$NAME" \
    --image_folder="$EXIT_FOLDER" --progress=false 2> "$RUN/quantize.log" | tee "$RUN/int8.txt"
fi

step "profile this machine as device '$DEVICE' (fp32 and int8)"
"$BIN/model/hapi-profile" --repository="$REPOSITORY" --model="$NAME" --device="$DEVICE" \
  --threads=1 --out="$RUN/$DEVICE.profile.pbtxt" --description="measured by scripts/foreign-models.sh"

step "optimizer on 127.0.0.1:$OPT_PORT $OPT_ARGS"
# shellcheck disable=SC2086
"$BIN/optimizer/hapi-optimizer" --repository="$REPOSITORY" --listen="127.0.0.1:$OPT_PORT" \
  --metrics_address="127.0.0.1:$OPT_METRICS" $OPT_ARGS > "$RUN/optimizer.log" 2>&1 &
pids+=($!)
OPT=(--target="127.0.0.1:$OPT_PORT")
wait_ready optimizer "$CLIENT" "${OPT[@]}" devices list
"$CLIENT" "${OPT[@]}" devices register --overwrite "$RUN/$DEVICE.profile.pbtxt"

step "variant for the SLA: $SLA_ARGS (HAPI search, then exhaustive for comparison)"
# shellcheck disable=SC2086
"$CLIENT" "${OPT[@]}" variants create --model="$NAME" --device="$DEVICE" $SLA_ARGS --watch \
  | tee "$RUN/job.txt"
VARIANT=$(awk '/^variant /{print $2}' "$RUN/job.txt" | tail -1)
"$CLIENT" "${OPT[@]}" variants get "$VARIANT" > "$RUN/variant.pbtxt"
# shellcheck disable=SC2086
"$CLIENT" "${OPT[@]}" variants create --model="$NAME" --device="$DEVICE" $SLA_ARGS \
  --algorithm=exhaustive --watch | tee "$RUN/job-exhaustive.txt"
EXHAUSTIVE=$(awk '/^variant /{print $2}' "$RUN/job-exhaustive.txt" | tail -1)
"$CLIENT" "${OPT[@]}" variants get "$EXHAUSTIVE" > "$RUN/variant-exhaustive.pbtxt"

serve_and_bench() {  # serve_and_bench <name> [server flags...]
  local name=$1; shift
  "$BIN/server/hapi-server" --repository="$REPOSITORY" --variant="$VARIANT" \
    --listen="127.0.0.1:$SRV_PORT" --metrics_address="127.0.0.1:$SRV_METRICS" \
    --intra_op_threads=1 "$@" > "$RUN/server-$name.log" 2>&1 &
  local pid=$!
  pids+=("$pid")
  # Ready once the status names the model's input spec (before the variant is
  # loaded the status has none, and the client would assume 1x28x28).
  wait_ready server served_input_spec
  "$CLIENT" --target="127.0.0.1:$SRV_PORT" bench --image_folder="$FOLDER" --split=test \
    --images="$COUNT" --count="$COUNT" --concurrency=1 \
    --json="$RUN/bench-$name.json" --no_progress | tee "$RUN/bench-$name.txt"
  kill "$pid"; wait "$pid" || true
}
step "server with variant $VARIANT: the image folder's test split, one request at a time"
serve_and_bench early-exit
step "the same server serving the fp32 full network (final exit only), for comparison"
serve_and_bench full --full_network --precision=fp32

step "report"
$PY scripts/foreign-models.py report --run "$RUN" --variant "$VARIANT" \
  --seconds "$(( $(date +%s) - start ))" --model_dir "$REPOSITORY/models/$NAME" | tee "$RUN/report.txt"
