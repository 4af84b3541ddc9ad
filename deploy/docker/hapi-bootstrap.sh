#!/usr/bin/env bash
# hapi-bootstrap: prepares a fresh repository volume for serving, idempotently.
#   1. seeds the models shipped in the image into the repository (atomic rename,
#      never over an existing model);
#   2. waits for hapi-optimizer;
#   3. registers every device profile found in $HAPI_DEVICE_PROFILES (--overwrite);
#   4. for every registered profile's device without a variant, runs a variant job
#      for $HAPI_SLA_ARGS and waits for it.
# hapi-server --device=<name> then picks the newest variant of its device up.
# Used by docker-compose.yml (service `bootstrap`) and deploy/k8s (Job
# hapi-bootstrap); tests/deploy/monitoring_test.py runs it against real processes.
#
# Environment (defaults in brackets):
#   HAPI_REPOSITORY       repository root [/var/lib/hapi/repository]
#   HAPI_MODEL_SEED       directory of models to seed [/opt/hapi/models]
#   HAPI_OPTIMIZER        optimizer address [optimizer:50052]
#   HAPI_DEVICE_PROFILES  directory of *.pbtxt device profiles [/etc/hapi/devices]
#   HAPI_MODEL            model the variants are built for [fmnist-resnet]
#   HAPI_SLA_ARGS         SLA flags of `hapi-client variants create`
#                         [--objective=min-latency --max-drop=0.5 --statistic=mean]
#   HAPI_TOKEN_FILE       operator token file, when the optimizer requires one []
#   HAPI_CLIENT           hapi-client binary [hapi-client]
#   HAPI_WAIT_SECONDS     how long to wait for the optimizer [120]
set -euo pipefail

REPOSITORY=${HAPI_REPOSITORY:-/var/lib/hapi/repository}
SEED=${HAPI_MODEL_SEED:-/opt/hapi/models}
OPTIMIZER=${HAPI_OPTIMIZER:-optimizer:50052}
PROFILES=${HAPI_DEVICE_PROFILES:-/etc/hapi/devices}
MODEL=${HAPI_MODEL:-fmnist-resnet}
SLA_ARGS=${HAPI_SLA_ARGS:---objective=min-latency --max-drop=0.5 --statistic=mean}
CLIENT=${HAPI_CLIENT:-hapi-client}
WAIT_SECONDS=${HAPI_WAIT_SECONDS:-120}

log() { printf 'hapi-bootstrap: %s\n' "$*"; }
client=("$CLIENT" "--target=$OPTIMIZER")
if [[ -n ${HAPI_TOKEN_FILE:-} ]]; then client+=("--token_file=$HAPI_TOKEN_FILE"); fi

# 1. Models. A model directory is complete once it is renamed into models/.
mkdir -p "$REPOSITORY/models"
if [[ -d $SEED ]]; then
  for dir in "$SEED"/*/; do
    [[ -f $dir/manifest.pbtxt ]] || continue
    name=$(basename "$dir")
    if [[ -f $REPOSITORY/models/$name/manifest.pbtxt ]]; then
      log "model $name already in $REPOSITORY"
      continue
    fi
    staging="$REPOSITORY/.tmp-seed-$name-$$"
    rm -rf "$staging"
    cp -R "$dir" "$staging"
    sync "$staging" 2>/dev/null || sync
    mv -T "$staging" "$REPOSITORY/models/$name"
    log "seeded model $name into $REPOSITORY/models"
  done
fi

# 2. Optimizer.
deadline=$((SECONDS + WAIT_SECONDS))
until "${client[@]}" --timeout=3 devices list >/dev/null 2>&1; do
  if ((SECONDS >= deadline)); then
    log "optimizer at $OPTIMIZER did not answer within ${WAIT_SECONDS}s"
    "${client[@]}" --timeout=3 devices list  # print the error
    exit 1
  fi
  sleep 1
done
log "optimizer at $OPTIMIZER is up"

# 3. and 4. Devices and their variants.
shopt -s nullglob
profiles=("$PROFILES"/*.pbtxt)
if ((${#profiles[@]} == 0)); then
  log "no device profiles in $PROFILES; nothing to build"
  exit 0
fi
for profile in "${profiles[@]}"; do
  device=$(sed -n 's/^name: *"\(.*\)"$/\1/p' "$profile" | head -n 1)
  if [[ -z $device ]]; then
    log "$profile: no 'name:' line, not a hapi.v1.DeviceProfile text proto"
    exit 1
  fi
  "${client[@]}" devices register --overwrite "$profile"
  existing=$("${client[@]}" variants list --device="$device")
  if [[ -n $existing ]]; then
    log "device $device already has a variant; not rebuilding:"
    printf '%s\n' "$existing"
    continue
  fi
  log "building a variant of $MODEL for $device: $SLA_ARGS"
  # shellcheck disable=SC2086  # SLA_ARGS is a list of flags
  "${client[@]}" variants create --model="$MODEL" --device="$device" $SLA_ARGS --watch
done
