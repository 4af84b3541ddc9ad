#!/usr/bin/env bash
# The test command: installs what is missing, checks formatting, builds (with
# -Werror), checks the lock annotations with clang's thread-safety analysis,
# and runs the whole suite.
set -euo pipefail
cd "$(dirname "$0")/.."
bash scripts/install-deps.sh
bash scripts/check-format.sh
bash scripts/build.sh
bash scripts/check-thread-safety.sh
cd "${BUILD_DIR:-build}"
ctest --output-on-failure --timeout 900 -j "${CTEST_JOBS:-1}"
