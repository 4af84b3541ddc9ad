#!/usr/bin/env bash
# A fuzz target's ctest short run: <runs> executions starting from its seed
# corpus. libFuzzer writes new inputs into the first corpus directory it is
# given, so that is an emptied scratch directory and the seeds come second,
# only read. Crash reproducers go to the scratch directory too.
#
# Usage: run_short.sh <fuzz binary> <seed dir> <scratch dir> <runs>
set -euo pipefail
binary=$1 seeds=$2 scratch=$3 runs=$4
rm -rf "$scratch"
mkdir -p "$scratch/corpus"
exec "$binary" -runs="$runs" -seed=1 -timeout=25 -print_final_stats=1 \
  -artifact_prefix="$scratch/" "$scratch/corpus" "$seeds"
