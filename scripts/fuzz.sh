#!/usr/bin/env bash
# Fuzzing campaigns for HAPI Serve's libFuzzer targets (tests/fuzz/,
# docs/fuzzing.md): configures and builds build-fuzz (clang, ASan + UBSan,
# HAPI_FUZZ=ON) when needed, then runs each target for the given time at the
# lowest CPU priority. The corpus grows outside the repository, in
# build-fuzz/fuzz-corpus/<target>/, seeded from tests/fuzz/corpus/<target>/
# (only read); crash, leak, timeout and OOM inputs go to
# build-fuzz/fuzz-artifacts/<target>/. Prints the executions, libFuzzer's
# final coverage (cov: edges, ft: features), the corpus size and the
# findings of each run, and appends them to build-fuzz/fuzz-results.tsv.
#
# Usage:
#   scripts/fuzz.sh [target|all] [seconds]   all targets one after another by
#                                            default, 60 s each
#   scripts/fuzz.sh seeds                    rewrites the generated seeds in
#                                            tests/fuzz/corpus/ (make_seeds.cc);
#                                            reproducers added by hand stay
#   scripts/fuzz.sh list                     the targets
#
# Environment: BUILD_DIR (build-fuzz), JOBS (ninja jobs, 1), NO_BUILD=1 (run
# the binaries as they are, e.g. while the tree is being edited), FUZZ_ARGS
# (more libFuzzer flags, e.g. "-jobs=2 -workers=2" or "-dict=...").
# Exit status: 1 when a run found something (see the artifacts directory).
set -euo pipefail
cd "$(dirname "$0")/.."
BUILD_DIR=${BUILD_DIR:-build-fuzz}
JOBS=${JOBS:-1}
export CCACHE_BASEDIR="$PWD"
export CCACHE_NOHASHDIR=1
TARGETS=(fuzz_image_decoder fuzz_classify_request fuzz_idx_loader fuzz_calibration_table
  fuzz_text_protos fuzz_onnx_import)

build() {  # targets...
  if [[ -n "${NO_BUILD:-}" ]]; then return; fi
  if [[ ! -f "$BUILD_DIR/build.ninja" ]]; then
    cmake -S . -B "$BUILD_DIR" -G Ninja -DCMAKE_BUILD_TYPE=RelWithDebInfo \
      -DCMAKE_C_COMPILER=clang -DCMAKE_CXX_COMPILER=clang++ \
      -DHAPI_WITH_TORCH=OFF -DHAPI_BUILD_BENCH=OFF \
      -DHAPI_SANITIZE=address,undefined -DHAPI_FUZZ=ON
  fi
  ninja -C "$BUILD_DIR" -j "$JOBS" "$@"
}

run() {  # target seconds
  local target=$1 seconds=$2
  local corpus="$BUILD_DIR/fuzz-corpus/$target" artifacts="$BUILD_DIR/fuzz-artifacts/$target"
  local log
  log="$BUILD_DIR/fuzz-logs/$target-$(date +%Y%m%d-%H%M%S).log"
  mkdir -p "$corpus" "$artifacts" "$(dirname "$log")"
  echo "== $target: ${seconds}s, corpus $corpus, log $log"
  local status=0
  # shellcheck disable=SC2086  # FUZZ_ARGS is a list of flags
  nice -n 19 "$BUILD_DIR/tests/fuzz/$target" -max_total_time="$seconds" -timeout=25 \
    -rss_limit_mb=2048 -print_final_stats=1 -artifact_prefix="$artifacts/" ${FUZZ_ARGS:-} \
    "$corpus" "tests/fuzz/corpus/$target" >"$log" 2>&1 || status=$?
  # The last status line: "#<execs> DONE cov: <edges> ft: <features> corp: <n>/<size> ...".
  local last execs cov ft files findings
  last=$(grep -E '^#[0-9]+.*cov: ' "$log" | tail -n 1 || true)
  execs=$(grep -m1 -oP 'stat::number_of_executed_units: \K[0-9]+' "$log" ||
    sed -nE 's/^#([0-9]+).*/\1/p' <<<"$last")
  cov=$(grep -oP 'cov: \K[0-9]+' <<<"$last" || echo "?")
  ft=$(grep -oP 'ft: \K[0-9]+' <<<"$last" || echo "?")
  files=$(find "$corpus" -type f | wc -l)
  findings=$(find "$artifacts" -type f \( -name 'crash-*' -o -name 'leak-*' -o -name 'timeout-*' \
    -o -name 'oom-*' \) | wc -l)
  printf '%s: %s s, %s executions, cov %s, ft %s, corpus %s files (%s), findings %s%s\n' \
    "$target" "$seconds" "${execs:-?}" "$cov" "$ft" "$files" "$(du -sh "$corpus" | cut -f1)" \
    "$findings" "$( ((status == 0)) || echo ", exit status $status")"
  printf '%s\t%s\t%s\t%s\t%s\t%s\t%s\t%s\n' "$(date -u +%FT%TZ)" "$target" "$seconds" \
    "${execs:-?}" "$cov" "$ft" "$files" "$findings" >>"$BUILD_DIR/fuzz-results.tsv"
  ((status == 0 && findings == 0))
}

case "${1:-all}" in
  list)
    printf '%s\n' "${TARGETS[@]}"
    ;;
  seeds)
    build fuzz_seeds
    "$BUILD_DIR/tests/fuzz/fuzz_seeds" tests/fuzz/corpus
    find tests/fuzz/corpus -type f | sort
    ;;
  all)
    build "${TARGETS[@]}"
    failed=0
    for t in "${TARGETS[@]}"; do run "$t" "${2:-60}" || failed=1; done
    exit "$failed"
    ;;
  fuzz_*)
    [[ " ${TARGETS[*]} " == *" $1 "* ]] || {
      echo "unknown target $1 (scripts/fuzz.sh list)" >&2
      exit 2
    }
    build "$1"
    run "$1" "${2:-60}"
    ;;
  *)
    echo "usage: $0 [target|all|seeds|list] [seconds]" >&2
    exit 2
    ;;
esac
