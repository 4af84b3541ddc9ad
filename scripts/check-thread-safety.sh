#!/usr/bin/env bash
# Builds the torch-free part of HAPI Serve with clang, whose -Wthread-safety
# checks every ABSL_GUARDED_BY / ABSL_EXCLUSIVE_LOCKS_REQUIRED annotation
# (-Werror makes a violation fail the build). LibTorch code is left out: the
# server and optimizer libraries know models only through the model seam.
set -euo pipefail
cd "$(dirname "$0")/.."
BUILD_DIR=${TSA_BUILD_DIR:-build-tsa}
JOBS=${JOBS:-$(nproc)}
export CCACHE_BASEDIR="$PWD"
export CCACHE_NOHASHDIR=1
if [[ ! -f "$BUILD_DIR/build.ninja" ]]; then
  cmake -S . -B "$BUILD_DIR" -G Ninja -DCMAKE_BUILD_TYPE=Release \
    -DCMAKE_C_COMPILER=clang -DCMAKE_CXX_COMPILER=clang++ \
    -DHAPI_WITH_TORCH=OFF -DHAPI_BUILD_BENCH=OFF -DHAPI_WERROR=ON
fi
ninja -C "$BUILD_DIR" -j "$JOBS" hapi_core hapi_fake_model hapi_rpc hapi_server hapi_optimizer \
  hapi_client hapi-optimizer hapi-client
echo "thread-safety analysis: clean"
