#!/usr/bin/env bash
# Configures and builds HAPI Serve into ./build (Release, Ninja, ccache).
# Usage: scripts/build.sh [ninja targets...]
set -euo pipefail
cd "$(dirname "$0")/.."
BUILD_DIR=${BUILD_DIR:-build}
JOBS=${JOBS:-$(nproc)}
# ccache: hash paths relative to the checkout, so another clone (CI) hits the cache.
export CCACHE_BASEDIR="$PWD"
export CCACHE_NOHASHDIR=1
if [[ ! -f "$BUILD_DIR/build.ninja" ]]; then
  cmake -S . -B "$BUILD_DIR" -G Ninja -DCMAKE_BUILD_TYPE=Release
fi
ninja -C "$BUILD_DIR" -j "$JOBS" "$@"
