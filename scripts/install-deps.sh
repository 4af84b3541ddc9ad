#!/usr/bin/env bash
# Installs every Debian 12 package HAPI Serve needs to build, test and run.
# Idempotent: when everything is present it only runs one dpkg query.
set -euo pipefail

PACKAGES=(
  # toolchain
  build-essential cmake ninja-build ccache pkg-config git
  # checks: formatting, clang's thread-safety analysis
  clang clang-format libclang-rt-14-dev
  # RPC, serialisation, base libraries
  libgrpc++-dev protobuf-compiler-grpc libprotobuf-dev protobuf-compiler
  libabsl-dev libgoogle-glog-dev libgflags-dev libcli11-dev
  # model library; ONNX import (parser, checker, shape inference); the direct
  # oneDNN inference path (the same oneDNN LibTorch links)
  libtorch-dev libonnx-dev libdnnl-dev
  # metrics, state, images
  prometheus-cpp-dev libsqlite3-dev libstb-dev zlib1g-dev
  # image decoding (PNG, JPEG): libraries fuzzed upstream
  libpng-dev libjpeg62-turbo-dev
  # tests and benchmarks
  libgtest-dev libgmock-dev libbenchmark-dev
  # tools used by tests, benchmarks and docs
  prometheus gnuplot-nox python3-yaml curl openssl
  # the independent Open Inference Protocol client in the tests
  python3-grpcio python3-grpc-tools
  # data
  dataset-fashion-mnist
)

missing=()
for p in "${PACKAGES[@]}"; do
  if ! dpkg-query -W -f='${Status}' "$p" 2>/dev/null | grep -q "install ok installed"; then
    missing+=("$p")
  fi
done

if ((${#missing[@]} == 0)); then
  echo "install-deps: all ${#PACKAGES[@]} packages present"
  exit 0
fi

echo "install-deps: installing ${#missing[@]} packages: ${missing[*]}"
SUDO=""
if [[ $(id -u) -ne 0 ]]; then SUDO="sudo"; fi
export DEBIAN_FRONTEND=noninteractive
$SUDO apt-get update -qq
$SUDO apt-get install -y -qq --no-install-recommends "${missing[@]}"
echo "install-deps: done"
